-- numbers_spec.lua: numbers that must add up (issue 19, points 5, 7 and 8),
-- without PostgreSQL: documents the plan decided have no document counted
-- apart (runner, report, progress, HTML, status text, metrics), the HTML
-- report's latency, failure classes and throughput, the effective
-- concurrency, the minimum sample of a token calibration and the log of an
-- entity asked by id that the source does not have.
require "tests.lua.c_stubs"

local metrics = require "ragops.obs.metrics"
local plan = require "ragops.plan"
local progress = require "ragops.obs.progress"
local ratelimit = require "ragops.provider.ratelimit"
local report = require "ragops.report"
local report_html = require "ragops.report.html"
local status = require "ragops.report.status"
local testing = require "ragops.testing"

-- A plan over "item" rows { id, text, updated_at }: an empty or blank text
-- has no document (document() returns nil, or content "  ").
local function make_plan(spec)
  local source = plan.source "item" {
    sql = "select id, text, updated_at from items", key = "id", updated_at = "updated_at",
    document = function(row)
      if row.text == "" then return nil end
      return { content = row.text }
    end,
  }
  local full = { name = "numeros", sources = { source }, batch = { size = 3, in_flight = 1 },
                 chunking = { max_chars = 100, overlap = 10 } }
  for k, v in pairs(spec or {}) do full[k] = v end
  return plan.new(full)
end

local function rows(texts)
  local out = {}
  for i, text in ipairs(texts) do out[i] = { id = i, text = text, updated_at = ("2024-01-%02d"):format(i) } end
  return out
end

local function sum_of_outcomes(st)
  return st.succeeded + st.failed + st.skipped + st.no_document
end

-- The ids of a fake store's no-document markers of entity_type, sorted.
local function marked(store, entity_type)
  local out = {}
  for id in pairs((store.no_document or {})[entity_type] or {}) do out[#out + 1] = id end
  table.sort(out)
  return out
end

describe("documentos sem documento por decisão do plano (issue 19, ponto 5)", function()
  local TEXTS = { "um", "", "três", "  ", "cinco", "seis" }

  it("contam à parte: nem ignorados, nem gravados; processados = soma dos resultados", function()
    local r = testing.run(make_plan(), { sources = { item = rows(TEXTS) } })
    local st = r.stats
    assert.are.equal(2, st.no_document, "sem documento")
    assert.are.equal(0, st.skipped, "ignorados")
    assert.are.equal(4, st.succeeded, "gravados")
    assert.are.equal(st.processed, sum_of_outcomes(st))
    assert.are.equal(2, st.per_entity_type.item.no_document)
    assert.are.same({ "2", "4" }, marked(r.store, "item"))
  end)

  it("numa reexecução continuam sem documento, e a marca não é regravada", function()
    local r = testing.run(make_plan(), { sources = { item = rows(TEXTS) } })
    local before = #r.store.writes
    local r2 = testing.run(make_plan(), { store = r.store })
    assert.are.equal(2, r2.stats.no_document)
    assert.are.equal(4, r2.stats.skipped)
    assert.are.equal(r2.stats.processed, sum_of_outcomes(r2.stats))
    for i = before + 1, #r.store.writes do
      assert.are.same({}, (r.store.writes[i].no_document or { entity_ids = {} }).entity_ids,
        "a reexecução regravou marcas")
    end
  end)

  it("entidade que tinha documentos e passa a não ter: trechos removidos, marcada; depois volta", function()
    local r = testing.run(make_plan(), { sources = { item = rows(TEXTS) } })
    r.store.sources.item[1].text = ""
    r.store.sources.item[1].updated_at = "2024-02-01"
    local r2 = testing.run(make_plan(), { store = r.store })
    assert.is_nil(r2:document("item", 1, 0))
    assert.are.equal(3, r2.stats.no_document)
    assert.are.equal(0, r2.stats.succeeded, "remover os trechos não é gravar um documento")
    assert.are.equal(1, r2.stats.deleted)
    assert.are.same({ "1", "2", "4" }, marked(r.store, "item"))
    r.store.sources.item[2].text = "agora tem texto"
    local r3 = testing.run(make_plan(), { store = r.store })
    assert.is_not_nil(r3:document("item", 2, 0))
    assert.are.same({ "1", "4" }, marked(r.store, "item"))
  end)

  it("métricas: resultado no_document e cobertura sobre as entidades que devem ter documento", function()
    local registry = metrics.new()
    testing.run(make_plan(), { sources = { item = rows(TEXTS) }, metrics = registry })
    local text = registry:render()
    assert.matches('ragops_documents_total{entity_type="item",outcome="no_document",plan="numeros"} 2', text, 1, true)
    assert.matches('ragops_coverage_ratio{entity_type="item",plan="numeros"} 1\n', text, 1, true)
    assert.matches('ragops_no_document_entities{entity_type="item",plan="numeros"} 2\n', text, 1, true)
  end)

  it("relatório em texto, JSON e HTML, e a linha de progresso", function()
    local st = { plan = "numeros", processed = 6, succeeded = 4, failed = 0, skipped = 0, no_document = 2,
                 embedded = 4, deleted = 0, elapsed_s = 1,
                 per_entity_type = { item = { processed = 6, succeeded = 4, failed = 0, skipped = 0,
                                              no_document = 2, deleted = 0 } } }
    local text = report.format(st)
    assert.matches("sem documento por decisão do plano: 2", text, 1, true)
    assert.matches("item: processados 6, sucesso 4, falhas 0, ignorados 0, sem documento 2", text, 1, true)
    assert.are.equal(2, report.to_table(st).no_document)
    assert.are.equal(0, report.to_table({ processed = 0 }).no_document)
    local html = report_html.render(st)
    assert.matches("<td>sem documento por decisão do plano</td><td>2</td>", html, 1, true)
    local line = progress.format({ processed = 6, succeeded = 4, skipped = 0, failed = 0, no_document = 2,
                                   retries = 0, elapsed_s = 1 })
    assert.matches("2 sem documento", line, 1, true)
    assert.are.equal(2, progress.fields({ no_document = 2 }).no_document)
  end)

  it("status: em dia + sem documento + pendentes = linhas da fonte, no texto", function()
    local text = status.format({ runs = {}, open_failures = {}, indexes = {}, sync_queue = {},
      coverage = { { entity_type = "article", source_rows = 3935, indexed = 3813, up_to_date = 3812, stale = 1,
                     no_document = 122, pending = 1, coverage = 1, lag_s = 7200 } } })
    assert.matches("article: 3.813 de 3.813 entidades indexadas (100,0%); na fonte 3.935 = 3.812 em dia "
      .. "+ 122 sem documento por decisão do plano + 1 pendente(s) (1 desatualizada(s)), "
      .. "mudança mais antiga não indexada há 2 h 00 min", text, 1, true)
  end)

  it("status: a classe das falhas em aberto sai em pt-BR, não o nome interno", function()
    local text = status.format({ runs = {}, indexes = {}, sync_queue = {}, coverage = {},
      open_failures = { { entity_type = "verse", error_class = "permanent", open = 3 },
                        { entity_type = "verse", error_class = "transient", open = 1 } } })
    assert.matches("verse / permanente: 3", text, 1, true)
    assert.matches("verse / temporária (tentativas esgotadas): 1", text, 1, true)
    assert.is_nil(text:find("permanent:", 1, true), text)
  end)
end)

describe("relatório HTML (issue 19, ponto 7)", function()
  -- The run's registry: every series carries the plan label.
  local function run_registry()
    local registry = metrics.new()
    local h = registry:histogram("ragops_embed_latency_seconds", nil, nil, { plan = "numeros" })
    for _ = 1, 3 do h:observe(0.004) end
    h:observe(0.3)
    registry:counter("ragops_embed_requests_total", nil, { plan = "numeros", status = "200" }):inc(4)
    return registry
  end

  it("a latência vem do histograma com rótulos", function()
    local latency = run_registry():histogram_totals("ragops_embed_latency_seconds")
    assert.is_not_nil(latency, "latência não lida do histograma com rótulo plan")
    assert.are.equal(4, latency.count)
    assert.are.near(0.312, latency.sum, 1e-9)
    assert.are.equal(3, latency.buckets[1].count)
    local html = report_html.render({ plan = "numeros", embed_latency = latency, series = {} })
    assert.is_nil(html:find("latência por faixa: sem dados", 1, true), "o gráfico de latência ficou sem dados")
    assert.matches("média: 78,0 ms em 4 requisições", html, 1, true)
  end)

  it("a classe de falha aparece em pt-BR", function()
    local html = report_html.render({ plan = "numeros", failures_by_class = { permanent = 3, transient = 1 } })
    assert.matches(">permanente<", html, 1, true)
    assert.matches(">temporária (tentativas esgotadas)<", html, 1, true)
    assert.is_nil(html:find(">permanent<", 1, true), html)
    assert.is_nil(html:find(">transient<", 1, true), html)
  end)

  it("a vazão é documentos por segundo em cada intervalo, não o acumulado", function()
    local series = { { t = 0, processed = 0 }, { t = 10, processed = 100 }, { t = 20, processed = 400 },
                     { t = 30, processed = 450 } }
    local points = report_html.rate_points(series)
    assert.are.same({ { 10, 10 }, { 20, 30 }, { 30, 5 } }, points)
    local html = report_html.render({ plan = "numeros", series = series })
    assert.matches("documentos/s: até 30,0", html, 1, true)
    assert.is_nil(html:find("até 450", 1, true), "o eixo mostra o acumulado")
  end)
end)

describe("concorrência, estimativa e entidades ausentes (issue 19, ponto 8)", function()
  it("a concorrência mostrada é a efetiva: a janela do limitador limitada por in_flight", function()
    local s = testing.scheduler()
    local lim = ratelimit.new { sched = s, max_concurrency = 8, in_flight = 4 }
    assert.are.equal(4, lim:stats().concurrency)
    local r = testing.run(make_plan({ batch = { size = 1, in_flight = 4 } }), { sources = { item = rows({ "a", "b" }) } })
    local snap = r.env.progress_snapshot()
    assert.is_nil(snap.concurrency) -- no limiter in the fakes
    assert.matches("concorrência 4", progress.format({ processed = 1, elapsed_s = 1, concurrency = lim:stats().concurrency }),
      1, true)
  end)

  it("uma execução pequena não calibra a estimativa de tokens; a base e a amostra são ditas", function()
    local dryrun = require "ragops.run.dryrun"
    local cfg = require("ragops.plan.config").defaults()
    cfg.provider.model = "m"
    local tiny = dryrun.token_basis("article", { article = { run_id = 5, first_run_id = 5, runs = 1, documents = 1,
                                                             bytes = 300, tokens = 80 } }, cfg)
    assert.are.equal("bytes_per_4", tiny.kind)
    assert.matches("amostra de 1 documento(s) e 300 bytes", tiny.text, 1, true)
    assert.matches("mínimo de 1.000 documentos ou 100.000 bytes", tiny.text, 1, true)
    local big = dryrun.token_basis("article", { article = { run_id = 7, first_run_id = 6, runs = 2, documents = 1200,
                                                            bytes = 90000, tokens = 27000 } }, cfg)
    assert.are.equal("calibrated", big.kind)
    assert.are.near(0.3, big.ratio, 1e-9)
    assert.are.equal("calibrado pelas 2 execuções de 6 a 7, 1.200 documentos e 90.000 bytes", big.text)
  end)

  it("entidade pedida por id que nunca existiu: nada removido, e o log não diz que removeu", function()
    local r = testing.run(make_plan(), { sources = { item = rows({ "um", "dois" }) } })
    local r2 = testing.run(make_plan({ scope = { entity_ids = { "2", "99999" } } }), { store = r.store })
    assert.are.equal(0, r2.stats.deleted)
    assert.are.same({}, r2:logged("documento(s) removido(s)"))
    assert.are.equal(1, #r2:logged("entidade item 99999 não existe na fonte e não tinha documentos no índice"))
    r.store.sources.item[1] = nil
    local r3 = testing.run(make_plan({ scope = { entity_ids = { "1" } } }), { store = r.store })
    assert.are.equal(1, r3.stats.deleted)
    assert.are.equal(1, #r3:logged("entidade item 1 não existe mais na fonte; 1 documento(s) removido(s)"))
  end)
end)
