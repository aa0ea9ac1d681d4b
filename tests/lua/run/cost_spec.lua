-- cost_spec.lua: issue 14 on the runner with ragops.testing's fakes: what
-- the provider bills is recorded against what was sent (calibration), and
-- a spend budget stops the run before it would be passed.

local plan = require "ragops.plan"
local testing = require "ragops.testing"

local function make_plan(size)
  return plan.new {
    name = "custo", batch = { size = size or 2, in_flight = 1 },
    sources = { plan.source "item" {
      sql = "select id, text from items", key = "id",
      document = function(row) return { content = row.text } end } },
  }
end

local function rows(n)
  local out = {}
  for i = 1, n do out[i] = { id = i, text = ("ação %04d"):format(i) } end -- 11 bytes, 9 characters
  return out
end

-- A provider that bills one token per word (not bytes/4).
local function per_word(texts)
  local n = 0
  for _, t in ipairs(texts) do for _ in t:gmatch("%S+") do n = n + 1 end end
  return n
end

describe("custo", function()
  it("registra tokens cobrados contra bytes e caracteres enviados, na gravação da unidade", function()
    local r = testing.run(make_plan(), { sources = { item = rows(6) }, embedder = { tokens = per_word } })
    assert.are.same({ documents = 6, chunks = 6, bytes = 66, chars = 54, tokens = 12 }, r.store.usage.item)
    for _, w in ipairs(r.store.writes) do
      assert.are.same({ model = "fake-model", documents = 2, chunks = 2, bytes = 22, chars = 18, tokens = 4 }, w.usage)
    end
    assert.are.equal(66, r.stats.bytes)
    assert.are.equal(54, r.stats.per_entity_type.item.chars)
  end)

  it("sem usage do provedor (0 tokens), nada é registrado para calibração", function()
    local r = testing.run(make_plan(), { sources = { item = rows(2) }, embedder = { tokens = function() return 0 end } })
    assert.is_nil(r.store.usage.item)
  end)

  it("--budget-usd para antes de passar do orçamento (código 3) e a retomada com orçamento maior continua", function()
    -- 2 texts per call, 4 tokens per call, US$ 1000 per 1M tokens: US$ 0.004 per call.
    local opts = { sources = { item = rows(10) }, embedder = { tokens = per_word }, run_id = 1,
                   price_per_1m_tokens = 1000, budget_usd = 0.01 }
    local r = testing.run(make_plan(), opts)
    assert.are.equal(3, r.stats.aborted.code)
    assert.matches("orçamento de US%$ 0,01", r.stats.aborted.reason)
    assert.matches("gasto US%$ 0,008", r.stats.aborted.reason)
    assert.are.equal(2, #r.embedder.calls)
    assert.are.equal(8, r.stats.tokens)
    local resumed = testing.run(make_plan(), { store = r.store, embedder = { tokens = per_word }, run_id = 1,
      checkpoint = r.store:resume_checkpoint(), price_per_1m_tokens = 1000, budget_usd = 1 })
    assert.is_nil(resumed.stats.aborted)
    assert.are.equal(10, resumed.stats.embedded)
    assert.are.equal(20, resumed.stats.tokens)
    assert.are.equal(3, #resumed.embedder.calls)
  end)

  it("a linha de progresso mostra o gasto quando há preço", function()
    local r = testing.run(make_plan(), { sources = { item = rows(2) }, price_per_1m_tokens = 1000 })
    local line = require("ragops.obs.progress").format(r.env.progress_snapshot())
    assert.matches("gasto US%$ 0,0", line)
    assert.matches("2/2 processados", line)
  end)
end)

describe("métricas da execução", function()
  it("documentos por resultado, unidades, lotes, pedidos, tokens, custo e progresso, todos com o plano", function()
    local metrics = require("ragops.obs.metrics").new()
    local r = testing.run(make_plan(), { sources = { item = rows(4) }, embedder = { tokens = per_word,
      fail = function(texts)
        for _, t in ipairs(texts) do if t == "ação 0003" then return { status = 400, class = "permanent" } end end
      end },
      price_per_1m_tokens = 1000, metrics = metrics })
    local text = metrics:render()
    assert.are.equal(1, r.stats.failed)
    local function has(line) assert.truthy(text:find(line, 1, true), line .. "\n---\n" .. text) end
    has('ragops_documents_total{entity_type="item",outcome="embedded",plan="custo"} 3')
    has('ragops_documents_total{entity_type="item",outcome="failed",plan="custo"} 1')
    has('ragops_units_total{entity_type="item",plan="custo"} 2')
    has('ragops_dead_letters_total{entity_type="item",plan="custo"} 1')
    has('ragops_embed_requests_total{plan="custo",status="400"}')
    has('ragops_embed_errors_total{class="permanent",plan="custo"}')
    has('ragops_embed_tokens_total{plan="custo"} 6')
    has('ragops_embed_cost_usd_total{plan="custo"} 0.006')
    has('ragops_source_rows{entity_type="item",plan="custo"} 4')
    has('ragops_rows_pending{entity_type="item",plan="custo"} 0')
    has('ragops_progress_ratio{plan="custo"} 1')
    has('ragops_coverage_ratio{entity_type="item",plan="custo"} 0.75')
    has('ragops_write_duration_seconds_count{plan="custo"} 2')
    has('# HELP ragops_units_total Unidades de trabalho')
  end)
end)
