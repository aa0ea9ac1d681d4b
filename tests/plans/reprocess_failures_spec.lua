-- reprocess_failures_spec.lua: plans/reprocess_failures.lua through
-- ragops.testing: the dead letters of a first run are written and resolved
-- by the reprocessing run, which `ragops failures retry` scopes by entity.
local testing = require "ragops.testing"

local here = debug.getinfo(1, "S").source:sub(2):match("^(.*)/[^/]*$") or "."
local BACKFILL = here .. "/../../plans/backfill.lua"
local PLAN = here .. "/../../plans/reprocess_failures.lua"

local function sources()
  local verses = {}
  for i = 1, 12 do
    verses[i] = { id = i, book = "Gen", chapter = 1, verse = i, updated_at = "2024-01-01",
                  text = (i == 5 or i == 9) and ("texto REJEITADO " .. i) or ("texto bom " .. i) }
  end
  return { verse = verses, fortune = {} }
end

local function reject_marked(texts)
  for _, t in ipairs(texts) do
    if t:find("REJEITADO", 1, true) then
      return { status = 400, class = "permanent", message = "entrada rejeitada" }
    end
  end
end

describe("plans/reprocess_failures.lua", function()
  it("usa lotes pequenos e as fontes do backfill", function()
    local r = testing.run(PLAN, { sources = sources() })
    assert.are.equal("reprocess_failures", r.plan.name)
    assert.are.equal(16, r.plan.batch.size)
    assert.are.same({ "verse", "fortune" }, { r.plan.sources[1].entity_type, r.plan.sources[2].entity_type })
  end)

  it("resolve as falhas das entidades que agora passam, mantendo o histórico", function()
    local first = testing.run(BACKFILL, { sources = sources(), embedder = { fail = reject_marked } })
    assert.are.equal(2, first.stats.failed)
    assert.are.equal(10, first.stats.succeeded)
    -- Bisection isolated the two bad texts: only they are dead letters.
    assert.is_not_nil(first.store.open_dead_letters.verse["5"])
    assert.is_not_nil(first.store.open_dead_letters.verse["9"])

    local retry = testing.run(PLAN, { store = first.store, run_id = 2,
      params = { entity_type = "verse", entity_id = "5,9" } })
    assert.are.equal(2, retry.stats.processed)
    assert.are.equal(2, retry.stats.succeeded)
    assert.are.equal(0, retry.stats.failed)
    assert.is_nil(next(retry.store.open_dead_letters.verse))
    assert.are.equal(2, #retry.store.resolved)
    assert.are.equal(2, retry.store.resolved[1].resolved_run_id)
    assert.is_not_nil(retry:document("verse", 5, 0))
  end)

  it("o que continua falhando fica em aberto, com mais tentativas", function()
    local first = testing.run(BACKFILL, { sources = sources(), embedder = { fail = reject_marked } })
    local retry = testing.run(PLAN, { store = first.store, run_id = 2, embedder = { fail = reject_marked },
      params = { entity_type = "verse", entity_id = "5,9" } })
    assert.are.equal(2, retry.stats.failed)
    assert.is_not_nil(retry.store.open_dead_letters.verse["5"])
  end)
end)
