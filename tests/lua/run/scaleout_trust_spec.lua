-- scaleout_trust_spec.lua: issue 19 (Trust III) on ragops.testing's fakes and
-- pure functions: the budget's admission of one more request (overshoot
-- under one batch, whatever is in flight), a run's totals rebased on what it
-- committed, and a work unit's parts counted per attempt.

require "tests.lua.c_stubs"
local run_context = require "ragops.run.context"
local embed = require "ragops.run.stages.embed"
local plan = require "ragops.plan"
local testing = require "ragops.testing"
local workunits = require "ragops.run.workunits"

local function make_plan(size, in_flight)
  return plan.new {
    name = "orcamento", batch = { size = size, in_flight = in_flight },
    sources = { plan.source "item" {
      sql = "select id, text from items", key = "id",
      document = function(row) return { content = row.text } end } },
  }
end

-- 40 texts of 6 words (44 bytes: bytes/4 estimates 11 tokens, the provider
-- bills 6 per text).
local function rows(n)
  local out = {}
  for i = 1, n do out[i] = { id = i, text = ("palavra um dois tres quatro numero %08d"):format(i) } end
  return out
end

local function per_word(texts)
  local n = 0
  for _, t in ipairs(texts) do for _ in t:gmatch("%S+") do n = n + 1 end end
  return n
end

describe("orçamento: admissão de um pedido", function()
  -- spent, reserved, est, upper, limit -> verdict
  local cases = {
    { 0, 0, 10, 40, 100, "ok" },      -- alone, fits at its estimate
    { 95, 0, 10, 40, 100, "stop" },   -- alone, its estimate passes the budget
    { 91, 0, 9, 40, 100, "ok" },      -- alone: only the estimate must fit
    { 20, 40, 10, 40, 100, "ok" },    -- others in flight: fits at the upper bounds
    { 30, 40, 10, 40, 100, "wait" },  -- others in flight, upper bounds do not fit: wait for them
    { 95, 40, 10, 40, 100, "stop" },  -- nothing can make room: stop now
  }
  for _, c in ipairs(cases) do
    it(("gasto %d, reservado %d, estimativa %d, teto %d, limite %d: %s"):format(unpack(c)), function()
      assert.are.equal(c[6], embed.admission(c[1], c[2], c[3], c[4], c[5]))
    end)
  end
end)

describe("orçamento de um processo com vários lotes em voo", function()
  it("para a menos de um lote do orçamento com in_flight 8 (os pedidos em voo contam)", function()
    -- US$ 1000 per 1M tokens: a batch of 4 texts costs 24 tokens = US$ 0.024.
    local r = testing.run(make_plan(4, 8), {
      sources = { item = rows(400) }, price_per_1m_tokens = 1000, budget_usd = 0.5,
      embedder = { tokens = per_word, latency_ms = 50 } })
    assert.are.equal(3, r.stats.aborted.code, r.stats.aborted and r.stats.aborted.reason)
    local billed = 0
    for _, call in ipairs(r.embedder.calls) do
      if call.ok then billed = billed + per_word(call.texts) end
    end
    local spent, batch = billed * 1000 / 1e6, 24 * 1000 / 1e6
    assert.is_true(spent <= 0.5 + batch, ("gasto US$ %.4f, orçamento 0,5 + um lote %.4f"):format(spent, batch))
    assert.is_true(spent >= 0.5 - 2 * 44 * 1000 / 1e6, ("parou cedo demais: US$ %.4f"):format(spent))
    assert.is_true(r.embedder.peak > 1, "os lotes deveriam ir em paralelo antes do fim do orçamento")
  end)

  it("sem orçamento nada é reservado nem esperado", function()
    local r = testing.run(make_plan(4, 8), { sources = { item = rows(40) }, embedder = { tokens = per_word } })
    assert.is_nil(r.stats.aborted)
    assert.are.equal(40, r.stats.embedded)
    assert.is_nil(r.env.budget_local)
  end)
end)

describe("totais a partir do que foi gravado", function()
  it("rebase: o gravado no banco mais o que não é unidade (remoções, gasto descartado)", function()
    local stats = { per_entity_type = {
      verse = { processed = 70, succeeded = 70, deleted = 3, tokens = 900, requests = 12 } } }
    -- Booked: 70 rows of units this process accounted; the 3 deletions and
    -- 100 tokens of a dropped unit are beyond them.
    local booked = { per_entity_type = { verse = { processed = 70, succeeded = 70, tokens = 800, requests = 10 } } }
    -- The database has one unit more than this process saw commit (a signal).
    local committed = { verse = { processed = 74, succeeded = 74, tokens = 850, requests = 11 } }
    run_context.rebase(stats, booked, committed)
    assert.are.equal(74, stats.processed)
    assert.are.equal(3, stats.deleted)
    assert.are.equal(950, stats.tokens)
    assert.are.equal(13, stats.requests)
    assert.are.equal(74, stats.per_entity_type.verse.succeeded)
  end)

  it("rebase: um tipo só no banco (gravado por um processo anterior) entra nos totais", function()
    local stats = { per_entity_type = {} }
    run_context.rebase(stats, { per_entity_type = {} }, { fortune = { processed = 5, failed = 1 } })
    assert.are.equal(5, stats.processed)
    assert.are.equal(1, stats.failed)
    assert.are.equal(1, stats.per_entity_type.fortune.failed)
  end)

  it("o contexto separa as unidades contabilizadas do resto (booked)", function()
    local r = testing.run(make_plan(2, 1), { sources = { item = rows(6) }, embedder = { tokens = per_word } })
    assert.are.equal(6, r.stats.booked.per_entity_type.item.processed)
    assert.is_nil(rawget(r.stats, "booked"), "booked não deve ir para os relatórios")
  end)
end)

describe("partes de uma unidade de trabalho", function()
  it("soma as partes gravadas, todas ou só as de uma tentativa", function()
    local parts = {
      { attempt = 1, stats = { processed = 4, embedded = 4, tokens = 24 } },
      { attempt = 1, stats = { processed = 4, embedded = 4, tokens = 20 } },
      { attempt = 2, stats = { processed = 4, skipped = 4 } },
    }
    local all = workunits.parts_stats(parts, "verse")
    assert.are.equal(12, all.processed)
    assert.are.equal(12, all.per_entity_type.verse.processed)
    local first = workunits.parts_stats(parts, "verse", 1)
    assert.are.equal(8, first.processed)
    assert.are.equal(44, first.tokens)
    assert.are.equal(0, first.skipped)
  end)
end)
