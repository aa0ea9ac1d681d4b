-- reindex_spec.lua: plans/reindex.lua through ragops.testing, with filter
-- params exactly as `ragops reindex --entity-type/--entity-id/--since/--until`
-- pass them (no database, no provider).
local testing = require "ragops.testing"

local here = debug.getinfo(1, "S").source:sub(2):match("^(.*)/[^/]*$") or "."
local PLAN = here .. "/../../plans/reindex.lua"

local function sources()
  return {
    verse = {
      { id = 1, book = "Gen", chapter = 1, verse = 1, updated_at = "2024-01-10", text = "In the beginning." },
      { id = 2, book = "Gen", chapter = 1, verse = 2, updated_at = "2024-03-05", text = "And the earth was void." },
      { id = 3, book = "Gen", chapter = 1, verse = 3, updated_at = "2024-03-20", text = "Let there be light." },
      { id = 4, book = "Gen", chapter = 1, verse = 4, updated_at = "2024-04-01", text = "And God saw the light." },
    },
    fortune = {
      { id = 1, text = "Quem ri por último ri melhor.", updated_at = "2024-03-10" },
    },
  }
end

-- Entity ids touched by the runs' writes, per type.
local function written(result)
  local out = {}
  for _, w in ipairs(result.store.writes) do
    for _, d in ipairs(w.docs or {}) do out[#out + 1] = w.entity_type .. ":" .. d.entity_id end
  end
  table.sort(out)
  return out
end

describe("plans/reindex.lua", function()
  it("reaproveita as fontes do backfill", function()
    local r = testing.run(PLAN, { sources = sources() })
    assert.are.equal("reindex", r.plan.name)
    assert.are.same({ "verse", "fortune" }, { r.plan.sources[1].entity_type, r.plan.sources[2].entity_type })
    assert.are.equal(5, r.stats.succeeded)
  end)

  it("--entity-type verse --entity-id 3 toca só essa entidade", function()
    local base = testing.run(PLAN, { sources = sources() })
    local before = #base.store.writes
    local r = testing.run(PLAN, { store = base.store, params = { entity_type = "verse", entity_id = "3", mode = "overwrite" } })
    assert.are.equal(1, r.stats.processed)
    assert.are.equal(1, r.stats.embedded)
    local after = {}
    for i = before + 1, #r.store.writes do
      for _, d in ipairs(r.store.writes[i].docs or {}) do after[#after + 1] = r.store.writes[i].entity_type .. ":" .. d.entity_id end
    end
    assert.are.same({ "verse:3" }, after)
  end)

  it("intervalo de datas: since inclusivo, until exclusivo", function()
    local r = testing.run(PLAN, { sources = sources(),
      params = { entity_type = "verse", since = "2024-03-05", ["until"] = "2024-04-01" } })
    assert.are.equal(2, r.stats.processed)
    assert.are.same({ "verse:2", "verse:3" }, written(r))
  end)

  it("tipo de entidade deixa o outro tipo sem leitura nem escrita", function()
    local r = testing.run(PLAN, { sources = sources(), params = { entity_type = "fortune" } })
    assert.are.same({ "fortune:1" }, written(r))
    assert.is_nil(r.stats.per_entity_type.verse)
  end)

  it("sem --overwrite, o que não mudou é ignorado; com --overwrite, reembeda", function()
    local base = testing.run(PLAN, { sources = sources() })
    local calls = #base.embedder.calls
    local again = testing.run(PLAN, { store = base.store, params = { entity_type = "verse" } })
    assert.are.equal(4, again.stats.skipped)
    assert.are.equal(0, #again.embedder.calls)
    local forced = testing.run(PLAN, { store = base.store, params = { entity_type = "verse", mode = "overwrite" } })
    assert.are.equal(4, forced.stats.embedded)
    assert.is_true(calls > 0)
  end)

  it("filtros inválidos viram erro em pt-BR antes de rodar", function()
    assert.has_error(function() testing.run(PLAN, { sources = sources(), params = { entity_type = "livro" } }) end)
    local ok, err = pcall(testing.run, PLAN, { sources = sources(), params = { entity_id = "3" } })
    assert.is_false(ok)
    assert.matches("exige %-%-entity%-type", err)
    ok, err = pcall(testing.run, PLAN, { sources = sources(), params = { entity_type = "verse", since = "2024-13-01" } })
    assert.is_false(ok)
    assert.matches("mês inválido", err)
  end)
end)
