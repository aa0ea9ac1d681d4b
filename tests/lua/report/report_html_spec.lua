-- report_html_spec.lua: ragops.report.html: a self-contained pt-BR page
-- (no external reference, no script), every outside text escaped, the
-- sections of a run and of a dry-run, and the numbers it draws read from
-- the metrics registry (latency per bucket, requests per status).
local metrics = require "ragops.obs.metrics"
local report_html = require "ragops.report.html"

-- A registry with 6 latencies (2 up to 0.05 s, 3 more up to 0.1 s, 1 over)
-- and requests per status; returns latency, by_status as the run reads them.
local function registry_numbers()
  local registry = metrics.new()
  local h = registry:histogram("ragops_embed_latency_seconds", nil, { 0.05, 0.1 })
  for _, v in ipairs({ 0.01, 0.05, 0.06, 0.07, 0.1, 0.26 }) do h:observe(v) end
  registry:counter("ragops_embed_requests_total", nil, { status = "200" }):inc(5)
  registry:counter("ragops_embed_requests_total", nil, { status = 429 }):inc(1)
  registry:counter("ragops_embed_requests_total"):inc(7) -- no status label: left out
  return registry:histogram_totals("ragops_embed_latency_seconds"),
    registry:counter_by_label("ragops_embed_requests_total", "status")
end

local function run_stats()
  local latency, by_status = registry_numbers()
  return {
    plan = 'x<script>alert("p")</script>', run_id = 3, status = "done_with_failures",
    processed = 100, succeeded = 90, failed = 4, skipped = 6, embedded = 90, deleted = 0, retries = 2,
    tokens = 1000, requests = 6, elapsed_s = 10, abort_reason = "<b>motivo</b>",
    series = { { t = 0, processed = 0 }, { t = 5, processed = 40 }, { t = 10, processed = 100 } },
    embed_latency = latency, requests_by_status = by_status,
    failures_by_class = { permanent = 4 },
    previous_estimate = { documents = 80, tokens = 1250, requests = 5, duration_s = 8, plan = "backfill" },
  }
end

describe("ragops.report.html", function()
  it("lê do registro de métricas a latência por faixa (não acumulada) e as requisições por status", function()
    local latency, by_status = registry_numbers()
    assert.are.same({ 2, 3, 1 }, { latency.buckets[1].count, latency.buckets[2].count, latency.buckets[3].count })
    assert.are.same({ "0.05", "0.1", "+Inf" }, { latency.buckets[1].le, latency.buckets[2].le, latency.buckets[3].le })
    assert.are.equal(6, latency.count)
    assert.are.near(0.55, latency.sum, 1e-9)
    assert.are.same({ ["200"] = 5, ["429"] = 1 }, by_status)
    assert.is_nil(metrics.new():histogram_totals("ragops_embed_latency_seconds"))
    assert.are.same({}, metrics.new():counter_by_label("ragops_embed_requests_total", "status"))
  end)

  it("página autocontida em pt-BR, sem script nem recurso externo, com textos escapados", function()
    local html = report_html.render(run_stats())
    assert.matches('^<!DOCTYPE html>\n<html lang="pt%-BR">', html)
    assert.is_nil(html:find("<script", 1, true))
    assert.is_nil(html:find("http://", 1, true))
    assert.is_nil(html:find("https://", 1, true))
    assert.is_nil(html:find("<b>", 1, true))
    assert.truthy(html:find("x&lt;script&gt;alert(&quot;p&quot;)&lt;/script&gt;", 1, true))
    assert.truthy(html:find("&lt;b&gt;motivo&lt;/b&gt;", 1, true))
  end)

  it("execução: totais, vazão, latência, causas e estimativa x real, com gráficos SVG", function()
    local html = report_html.render(run_stats())
    for _, title in ipairs({ "Totais", "Vazão ao longo do tempo", "Latência das requisições de embedding",
                             "Novas tentativas e falhas por causa", "Estimativa x real" }) do
      assert.truthy(html:find("<h2>" .. title, 1, true), title)
    end
    local _, svgs = html:gsub("<svg ", "")
    assert.are.equal(4, svgs)                 -- throughput, latency, statuses, classes
    assert.truthy(html:find("<polyline", 1, true))
    assert.truthy(html:find("HTTP 429", 1, true))
    assert.truthy(html:find(">permanente<", 1, true)) -- the class in pt-BR (ragops.store.failures)
    assert.truthy(html:find("25,0%", 1, true))  -- 100 documents against 80 estimated
  end)

  it("dry-run: a estimativa por tipo de entidade, sem as seções de execução", function()
    local html = report_html.render({ plan = "backfill", dry_run = true, estimate = {
      cost_usd = 0.5, duration_s = 12, per_entity_type = {
        verse = { documents = 10, chunks = 12, tokens = 300, requests = 1, would_embed = 10 },
        ["<t>"] = { documents = 2, chunks = 2, tokens = 20, requests = 1, would_embed = 2 } } } })
    assert.truthy(html:find("Estimativa por tipo de entidade", 1, true))
    assert.truthy(html:find(">verse<", 1, true))
    assert.truthy(html:find(">&lt;t&gt;<", 1, true))
    assert.is_nil(html:find("Vazão ao longo do tempo", 1, true))
    assert.truthy(html:find("<svg ", 1, true))
  end)

  it("sem dados: avisa em vez de desenhar", function()
    local html = report_html.render({ plan = "p", processed = 0, series = { { t = 0, processed = 0 } } })
    assert.truthy(html:find("poucos pontos para um gráfico", 1, true))
    assert.truthy(html:find("sem dados", 1, true))
  end)

  it("emit grava o arquivo; uma falha de gravação vira código 2", function()
    local log, errors = require "ragops.obs.log", {}
    local sink = log.sink
    log.sink = { write = function(_, text) errors[#errors + 1] = text end }
    local path = os.tmpname()
    assert.are.equal(0, report_html.emit(run_stats(), { ["report-html"] = path }, 0))
    local f = assert(io.open(path)); local text = f:read("*a"); f:close(); os.remove(path)
    assert.matches("</html>\n$", text)
    assert.are.equal(2, report_html.emit(run_stats(), { ["report-html"] = "/nao/existe/r.html" }, 0))
    assert.are.equal(1, report_html.emit(run_stats(), { ["report-html"] = "/nao/existe/r.html" }, 1))
    assert.are.equal(0, report_html.emit(run_stats(), {}, 0))
    log.sink = sink
    assert.are.equal(2, #errors)
    assert.matches("não foi possível gravar o relatório HTML", errors[1])
  end)
end)
