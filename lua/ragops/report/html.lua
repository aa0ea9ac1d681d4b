-- ragops.report.html: `--report-html ARQUIVO`, the end-of-run report as one
-- self-contained pt-BR page (inline CSS and SVG, no script, no external
-- asset: it works offline): totals, throughput over time (documents per
-- second per interval of stats.series), embedding latency distribution
-- (stats.embed_latency), requests per HTTP status and dead letters per
-- error class (in pt-BR, ragops.store.failures), the estimate against the actual
-- figures (stats.previous_estimate, a dry-run's --report-json given with
-- --estimate-json) and, for a dry-run, the estimate per entity type. Every
-- text from outside (plan names, types, messages) is HTML-escaped.
local cjson = require "cjson"
local exit = require "ragops.util.exit"
local failures = require "ragops.store.failures"
local log = require "ragops.obs.log"
local report = require "ragops.report"

local M = {}

local fmt = report

local ESCAPES = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;" }

-- HTML text of any value.
function M.escape(value)
  return (tostring(value):gsub("[&<>\"']", ESCAPES))
end
local esc = M.escape

local function num(v) return tonumber(v) or 0 end

local sorted_keys = require("ragops.util.tables").sorted_keys

-- ---------- reading the run's numbers ----------

-- The progress series { { t, processed } } as documents per second over
-- each interval: { { t, rate } } (intervals without time are skipped).
function M.rate_points(series)
  local points = {}
  for i = 2, #(series or {}) do
    local a, b = series[i - 1], series[i]
    local dt = num(b.t) - num(a.t)
    if dt > 0 then points[#points + 1] = { num(b.t), (num(b.processed) - num(a.processed)) / dt } end
  end
  return points
end

-- The estimate of a dry-run's --report-json file, or nil (a warning says why).
function M.read_estimate(path, logger)
  local f, err = io.open(path, "r")
  if not f then
    logger.warn("--estimate-json: não foi possível ler %s: %s", path, tostring(err))
    return nil
  end
  local ok, decoded = pcall(cjson.decode, f:read("*a"))
  f:close()
  if not ok or type(decoded) ~= "table" or decoded.dry_run ~= true or type(decoded.estimate) ~= "table" then
    logger.warn("--estimate-json: %s não é o relatório JSON de um dry-run (--dry-run --report-json)", path)
    return nil
  end
  decoded.estimate.plan = decoded.plan
  return decoded.estimate
end

-- ---------- inline SVG ----------

local W, H, PAD = 640, 220, 40

-- Horizontal bars: items = { { label, value } }. Empty list: a note.
function M.bar_chart(title, items)
  if #items == 0 then return ('<p class="vazio">%s: sem dados.</p>'):format(esc(title)) end
  local max = 0
  for _, it in ipairs(items) do max = math.max(max, num(it[2])) end
  local row, label_w = 22, 160
  local out = { ('<svg role="img" aria-label="%s" width="%d" height="%d" viewBox="0 0 %d %d">')
    :format(esc(title), W, #items * row + 10, W, #items * row + 10) }
  for i, it in ipairs(items) do
    local y = (i - 1) * row + 5
    local bar = max > 0 and (W - label_w - 90) * num(it[2]) / max or 0
    out[#out + 1] = ('<text x="%d" y="%d" text-anchor="end">%s</text><rect x="%d" y="%d" width="%.1f" '
      .. 'height="%d" class="barra"/><text x="%.1f" y="%d">%s</text>'):format(label_w - 6, y + 15,
      esc(it[1]), label_w, y + 2, bar, row - 6, label_w + bar + 6, y + 15, esc(fmt.format_count(it[2])))
  end
  out[#out + 1] = "</svg>"
  return table.concat(out)
end

-- A line through points { { x, y } } with axis labels (x_label, y_label).
function M.line_chart(title, points, x_label, y_label)
  if #points < 2 then return ('<p class="vazio">%s: poucos pontos para um gráfico.</p>'):format(esc(title)) end
  local max_x, max_y = 0, 0
  for _, pt in ipairs(points) do max_x = math.max(max_x, pt[1]); max_y = math.max(max_y, pt[2]) end
  if max_x <= 0 then max_x = 1 end
  if max_y <= 0 then max_y = 1 end
  local coords = {}
  for i, pt in ipairs(points) do
    coords[i] = ("%.1f,%.1f"):format(PAD + (W - 2 * PAD) * pt[1] / max_x, H - PAD - (H - 2 * PAD) * pt[2] / max_y)
  end
  return table.concat {
    ('<svg role="img" aria-label="%s" width="%d" height="%d" viewBox="0 0 %d %d">'):format(esc(title), W, H, W, H),
    ('<line x1="%d" y1="%d" x2="%d" y2="%d" class="eixo"/>'):format(PAD, H - PAD, W - PAD, H - PAD),
    ('<line x1="%d" y1="%d" x2="%d" y2="%d" class="eixo"/>'):format(PAD, PAD, PAD, H - PAD),
    ('<polyline points="%s" class="linha"/>'):format(table.concat(coords, " ")),
    ('<text x="%d" y="%d" text-anchor="end">%s</text>'):format(W - PAD, H - 10, esc(x_label .. ": " .. fmt.format_number(max_x, 1))),
    ('<text x="%d" y="%d">%s</text>'):format(PAD + 4, PAD - 8, esc(y_label .. ": até " .. fmt.format_number(max_y, 1))),
    "</svg>",
  }
end

-- ---------- sections ----------

local function table_html(headers, rows)
  local out = { "<table><thead><tr>" }
  for _, h in ipairs(headers) do out[#out + 1] = "<th>" .. esc(h) .. "</th>" end
  out[#out + 1] = "</tr></thead><tbody>"
  for _, row in ipairs(rows) do
    out[#out + 1] = "<tr>"
    for _, cell in ipairs(row) do out[#out + 1] = "<td>" .. esc(cell) .. "</td>" end
    out[#out + 1] = "</tr>"
  end
  out[#out + 1] = "</tbody></table>"
  return table.concat(out)
end

local function section(title, body)
  return ("<section><h2>%s</h2>%s</section>\n"):format(esc(title), body)
end

local STATUS_PTBR = { done = "concluída", done_with_failures = "concluída com itens na fila de falhas",
                      aborted = "abortada", interrupted = "interrompida", failed = "falhou" }

local function totals(stats)
  local rows = {
    { "processados", fmt.format_count(stats.processed) }, { "sucesso", fmt.format_count(stats.succeeded) },
    { "falhas", fmt.format_count(stats.failed) }, { "ignorados (inalterados)", fmt.format_count(stats.skipped) },
    { "sem documento por decisão do plano", fmt.format_count(stats.no_document) },
    { "embeddings gerados", fmt.format_count(stats.embedded) }, { "removidos", fmt.format_count(stats.deleted) },
    { "novas tentativas", fmt.format_count(stats.retries) }, { "tokens", fmt.format_count(stats.tokens) },
    { "requisições de embedding", fmt.format_count(stats.requests) },
    { "tempo decorrido", fmt.format_duration(num(stats.elapsed_s)) },
    { "vazão", fmt.format_number(report.throughput(stats) or 0, 1) .. " documentos/s" },
  }
  if stats.status then table.insert(rows, 1, { "situação", STATUS_PTBR[stats.status] or stats.status }) end
  if stats.abort_reason then table.insert(rows, 2, { "motivo da interrupção", stats.abort_reason }) end
  return section("Totais", table_html({ "indicador", "valor" }, rows))
end

local function throughput(stats)
  return section("Vazão ao longo do tempo",
    M.line_chart("documentos por segundo ao longo do tempo", M.rate_points(stats.series), "segundos", "documentos/s"))
end

local function latency(stats)
  local items, lat = {}, stats.embed_latency
  local previous = "0 ms"
  for _, b in ipairs(lat and lat.buckets or {}) do
    local bound = b.le ~= "+Inf" and (fmt.format_number(tonumber(b.le) * 1000, 0) .. " ms")
    items[#items + 1] = { bound and ("até " .. bound) or ("acima de " .. previous), b.count }
    previous = bound or previous
  end
  local mean = lat and num(lat.count) > 0 and ("<p>média: %s ms em %s requisições</p>"):format(
    esc(fmt.format_number(num(lat.sum) / lat.count * 1000, 1)), esc(fmt.format_count(lat.count))) or ""
  return section("Latência das requisições de embedding", mean .. M.bar_chart("latência por faixa", items))
end

local function causes(stats)
  local status_items, class_items = {}, {}
  for _, status in ipairs(sorted_keys(stats.requests_by_status)) do
    local label = status == "0" and "sem resposta (rede/tempo)" or ("HTTP " .. status)
    status_items[#status_items + 1] = { label, stats.requests_by_status[status] }
  end
  for _, class in ipairs(sorted_keys(stats.failures_by_class)) do
    class_items[#class_items + 1] = { failures.CLASS_PTBR[class] or class, stats.failures_by_class[class] }
  end
  return section("Novas tentativas e falhas por causa", table.concat {
    ("<p>novas tentativas: %s</p>"):format(esc(fmt.format_count(stats.retries))),
    "<h3>Requisições de embedding por resposta</h3>", M.bar_chart("requisições por resposta", status_items),
    "<h3>Itens na fila de falhas por classe de erro</h3>", M.bar_chart("falhas por classe", class_items),
  })
end

local ESTIMATE_ROWS = {
  { "documentos", "documents", "processed" }, { "tokens", "tokens", "tokens" },
  { "requisições de embedding", "requests", "requests" }, { "duração (s)", "duration_s", "elapsed_s" },
}

local function estimate_vs_actual(stats)
  local est = stats.previous_estimate
  local rows = {}
  for i, r in ipairs(ESTIMATE_ROWS) do
    local e, a = num(est[r[2]]), num(stats[r[3]])
    rows[i] = { r[1], fmt.format_number(e, 1), fmt.format_number(a, 1),
                e > 0 and (fmt.format_number((a - e) / e * 100, 1) .. "%") or "-" }
  end
  return section("Estimativa x real (dry-run anterior" .. (est.plan and (" do plano " .. est.plan) or "") .. ")",
    table_html({ "indicador", "estimado", "real", "diferença" }, rows))
end

local function dry_run_estimate(stats)
  local est, rows, items = stats.estimate or {}, {}, {}
  for _, t in ipairs(sorted_keys(est.per_entity_type)) do
    local it = est.per_entity_type[t]
    rows[#rows + 1] = { t, fmt.format_count(it.documents), fmt.format_count(it.chunks),
                        fmt.format_count(it.tokens), fmt.format_count(it.requests), fmt.format_count(it.would_embed),
                        fmt.format_count(it.no_document) }
    items[#items + 1] = { t, it.tokens }
  end
  local summary = ("<p>custo estimado: %s; duração estimada: %s</p>"):format(
    esc(fmt.format_usd(num(est.cost_usd))), esc(fmt.format_duration(num(est.duration_s))))
  return section("Estimativa por tipo de entidade (simulação)", summary
    .. table_html({ "tipo", "documentos", "trechos", "tokens", "requisições", "a embedar",
                    "sem documento por decisão do plano" }, rows)
    .. M.bar_chart("tokens estimados por tipo", items))
end

local STYLE = [[
body{font-family:sans-serif;margin:2em;color:#222;max-width:60em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
svg text{font-size:12px;fill:#222}.barra{fill:#3b6ea5}.linha{fill:none;stroke:#3b6ea5;stroke-width:2}
.eixo{stroke:#888}.vazio{color:#777}
]]

-- The whole page for stats (a run's or a dry-run's report fields).
function M.render(stats)
  local title = ("Relatório do plano \"%s\""):format(tostring(stats.plan or "?"))
    .. (stats.run_id and (" (execução " .. tostring(stats.run_id) .. ")") or "")
  local parts = { '<!DOCTYPE html>\n<html lang="pt-BR"><head><meta charset="utf-8"><title>', esc(title),
    "</title><style>", STYLE, "</style></head><body><h1>", esc(title), "</h1>\n" }
  if stats.dry_run then
    parts[#parts + 1] = "<p><strong>SIMULAÇÃO (dry-run): nada foi gravado, nenhuma chamada de embedding feita.</strong></p>"
    parts[#parts + 1] = dry_run_estimate(stats)
  else
    parts[#parts + 1] = totals(stats)
    parts[#parts + 1] = throughput(stats)
    parts[#parts + 1] = latency(stats)
    parts[#parts + 1] = causes(stats)
    if type(stats.previous_estimate) == "table" then parts[#parts + 1] = estimate_vs_actual(stats) end
  end
  parts[#parts + 1] = "</body></html>\n"
  return table.concat(parts)
end

-- Writes --report-html when asked; a write failure is logged and turns
-- exit code 0 into 2. Returns the exit code.
function M.emit(stats, opts, code)
  local path = opts["report-html"]
  if not path then return code end
  local ok, err = report.write_file_atomic(path, require("ragops.util.scrub").mask(M.render(stats)))
  if ok then return code end
  log.error("não foi possível gravar o relatório HTML em %s: %s", path, tostring(err))
  return code == exit.ok and exit.usage or code
end

return M
