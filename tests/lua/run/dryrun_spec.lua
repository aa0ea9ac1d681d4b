-- dryrun_spec.lua: the estimate arithmetic of --dry-run (pure functions):
-- extrapolation of sampled sources, cost, duration under limits.
require "tests.lua.c_stubs"

local dryrun = require "ragops.run.dryrun"

local function cfg(over)
  local c = {
    provider = { model = "text-embedding-3-small", expected_latency_ms = 500,
                 price_per_1m_tokens = { ["text-embedding-3-small"] = 0.02 },
                 rate_limits = { max_concurrency = 8 } },
  }
  for k, v in pairs(over or {}) do c.provider[k] = v end
  return c
end
local plan = { batch = { size = 64, in_flight = 4 } }

local function stats(per_type)
  return { per_entity_type = per_type }
end

describe("ragops.run.dryrun", function()
  it("estima tokens como bytes/4 arredondado para cima", function()
    assert.are.equal(1, dryrun.estimate_tokens("abc"))
    assert.are.equal(2, dryrun.estimate_tokens("abcde"))
    local e = dryrun.estimator(8)
    local b = e:embed({ "abcd", "abcdefgh" })
    assert.are.equal(2, b:count())
    assert.are.equal(3, b:tokens())
    assert.are.equal(1, e.calls)
  end)

  it("custo = tokens / 1e6 x preço do modelo", function()
    local est = dryrun.build_estimate(stats({ verse = { processed = 10, chunks = 12, tokens = 500000,
      requests = 3, skipped = 2, embedded = 10, deleted = 1 } }), { verse = 10 }, { verse = 10 },
      { verse = 3 }, plan, cfg())
    assert.are.equal(10, est.documents)
    assert.are.equal(12, est.chunks)
    assert.are.equal(500000, est.tokens)
    assert.are.equal(3, est.requests)
    assert.are.equal(3, est.batches)
    assert.are.equal(2, est.skipped_unchanged)
    assert.are.near(0.01, est.cost_usd, 1e-12)
    assert.is_false(est.sampled)
  end)

  it("fonte maior que a amostra: extrapola pela razão contagem/lidos e marca sampled", function()
    local est = dryrun.build_estimate(stats({ verse = { processed = 1000, chunks = 1500, tokens = 20000,
      requests = 16, skipped = 100, embedded = 900, deleted = 0 } }), { verse = 10000 }, { verse = 1000 },
      { verse = 16 }, plan, cfg())
    assert.is_true(est.sampled)
    assert.are.equal(10000, est.documents)
    assert.are.equal(15000, est.chunks)
    assert.are.equal(200000, est.tokens)
    assert.are.equal(160, est.requests)
    assert.are.equal(1000, est.skipped_unchanged)
  end)

  it("sem preço do modelo: custo 0 com nota explicando", function()
    local est = dryrun.build_estimate(stats({ verse = { processed = 1, chunks = 1, tokens = 10,
      requests = 1, skipped = 0, embedded = 1, deleted = 0 } }), {}, {}, {}, plan,
      cfg({ model = "outro", price_per_1m_tokens = {} }))
    assert.are.equal(0, est.cost_usd)
    assert.matches("sem preço", est.cost_note)
  end)

  it("duração: o maior entre latência/concorrência e os limites por minuto", function()
    -- 100 requests x 0.5 s / 4 in flight = 12.5 s
    assert.are.near(12.5, dryrun.estimate_duration_s(100, 1000, plan, cfg()), 1e-9)
    -- 100 requests at 60/min = 100 s
    assert.are.near(100, dryrun.estimate_duration_s(100, 1000, plan,
      cfg({ rate_limits = { requests_per_min = 60, max_concurrency = 8 } })), 1e-9)
    -- 1,000,000 tokens at 100k/min = 600 s
    assert.are.near(600, dryrun.estimate_duration_s(10, 1000000, plan,
      cfg({ rate_limits = { tokens_per_min = 100000, max_concurrency = 8 } })), 1e-9)
    -- max_concurrency below in_flight caps the parallelism: 100 x 0.5 / 2
    assert.are.near(25, dryrun.estimate_duration_s(100, 0, plan,
      cfg({ rate_limits = { max_concurrency = 2 } })), 1e-9)
  end)
end)

describe("dry-run: calibração dos tokens", function()
  local dryrun = require "ragops.run.dryrun"
  local plan_mod = require "ragops.plan"
  local plan = plan_mod.new { name = "p", sources = { plan_mod.source "verse" {
    sql = "select 1 as id", key = "id", document = function() return { content = "x" } end } } }
  local function cfg(provider)
    local c = require("ragops.plan.config").defaults()
    for k, v in pairs(provider or {}) do c.provider[k] = v end
    c.provider.model = "text-embedding-3-small"
    return c
  end
  local function stats(c)
    c.skipped, c.deleted = c.skipped or 0, c.deleted or 0
    local st = { per_entity_type = { verse = c } }
    for k, v in pairs(c) do st[k] = v end
    return st
  end

  it("usa a razão tokens/byte cobrada na execução mais recente do mesmo modelo e tipo", function()
    local est = dryrun.build_estimate(stats({ processed = 10, chunks = 10, embedded = 10, tokens = 250,
      bytes = 1000, bytes_sq = 100000, requests = 1 }), { verse = 10 }, { verse = 10 }, { verse = 1 }, plan, cfg(),
      { verse = { run_id = 12, documents = 31102, bytes = 4000, tokens = 1200 } })
    local item = est.per_entity_type.verse
    assert.are.equal(300, item.tokens) -- 1000 bytes x 0.3
    assert.are.equal("calibrated", item.token_basis)
    assert.are.equal("calibrado pela execução 12, 31.102 documentos e 4.000 bytes", item.token_basis_text)
    assert.are.equal(300, est.tokens)
  end)

  it("sem calibração: razão padrão do modelo, depois bytes/4", function()
    local s = stats({ processed = 1, chunks = 1, embedded = 1, tokens = 25, bytes = 100, bytes_sq = 10000, requests = 1 })
    local est = dryrun.build_estimate(s, {}, {}, {}, plan, cfg({ tokens_per_byte = { ["text-embedding-3-small"] = 0.5 } }), {})
    assert.are.equal(50, est.tokens)
    assert.are.equal("model_default", est.per_entity_type.verse.token_basis)
    est = dryrun.build_estimate(s, {}, {}, {}, plan, cfg(), {})
    assert.are.equal(25, est.tokens)
    assert.are.equal("heurística bytes/4", est.per_entity_type.verse.token_basis_text)
  end)

  it("amostra: informa o intervalo de ±2σ em vez de um número só", function()
    -- 100 chunks read of 1000 rows: sizes 50 and 150 bytes alternating (mean 100, sd ~50).
    local est = dryrun.build_estimate(stats({ processed = 100, chunks = 100, embedded = 100, tokens = 2500,
      bytes = 10000, bytes_sq = 50 * 50 * 50 + 150 * 150 * 50, requests = 2 }), { verse = 1000 }, { verse = 100 },
      { verse = 2 }, plan, cfg(), {})
    assert.is_true(est.sampled)
    assert.are.equal(25000, est.tokens)
    assert.is_true(est.tokens_low < 25000 and est.tokens_high > 25000)
    -- half-width = 2 x 10 x sqrt(100 x var) x 0.25 x sqrt(0.9) with var = 2500 x 100/99
    local half = 2 * 10 * math.sqrt(100 * 2500 * 100 / 99) * 0.25 * math.sqrt(0.9)
    assert.are.near(25000 - half, est.tokens_low, 1)
    assert.is_not_nil(est.cost_usd_low)
  end)
end)
