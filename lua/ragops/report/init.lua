-- ragops.report: the end-of-run report, as pt-BR text for the operator
-- (report.format) and as JSON with stable English keys (report.json), and
-- its delivery (report.emit: stdout, --report-json written through
-- ragops.util.safe_file).

local cjson = require "cjson"
local exit = require "ragops.util.exit"
local format = require "ragops.util.format"
local log = require "ragops.obs.log"
local safe_file = require "ragops.util.safe_file"
local scrub = require "ragops.util.scrub"

local M = {}

-- Private cjson instance so options do not leak to other modules.
local json = cjson.new()
json.encode_sparse_array(true)

-- Counters every report has (default 0).
local COUNTERS = { "processed", "succeeded", "failed", "skipped", "no_document", "embedded", "deleted" }
local ESTIMATE_FIELDS = { "documents", "chunks", "tokens", "requests", "batches", "cost_usd", "duration_s",
                          "skipped_unchanged", "no_document" }

local finite, number_or_zero = format.finite, format.number_or_zero

-- The pt-BR number formats (ragops.util.format), as every report names them.
M.format_number, M.format_count = format.format_number, format.format_count
M.format_duration, M.format_usd = format.format_duration, format.format_usd

-- Number of UTF-8 code points (for aligning labels with accents).
local function text_width(text)
  local _, count = text:gsub("[^\128-\191]", "")
  return count
end

-- Renders label/value rows with values aligned in one column.
local function aligned(rows, indent)
  local width = 0
  for _, row in ipairs(rows) do width = math.max(width, text_width(row[1])) end
  local lines = {}
  for i, row in ipairs(rows) do
    local label = row[1]
    lines[i] = indent .. label .. string.rep(" ", width - text_width(label) + 1) .. row[2]
  end
  return lines
end

local function plan_name(stats)
  return stats.plan or stats.plan_name
end

-- Documents per second, or nil when elapsed time is unknown or zero.
function M.throughput(stats)
  local elapsed = stats.elapsed_s
  if finite(elapsed) and elapsed > 0 then
    return number_or_zero(stats.processed) / elapsed
  end
  return nil
end

local sorted_keys = require("ragops.util.tables").sorted_keys

local function header(stats)
  local name = plan_name(stats)
  local title = name and string.format('Relatório do plano "%s"', tostring(name)) or "Relatório da execução"
  if stats.run_id ~= nil then
    title = title .. string.format(" (execução %s)", tostring(stats.run_id))
  end
  return title
end

-- pt-BR summary of the operating limits (params.limits): first log line of
-- a run and the "limites:" line of the report.
function M.format_limits(limits)
  local timeout = number_or_zero(limits.timeout_s)
  return string.format("lotes de %s, %s em paralelo%s, %s, %s tentativa(s) por pedido, tempo limite de %s s",
    M.format_count(limits.batch_size), M.format_count(limits.in_flight),
    limits.in_flight_note and (" (" .. limits.in_flight_note .. ")") or "",
    limits.limit and string.format("no máximo %s entidade(s) por fonte", M.format_count(limits.limit))
      or "sem limite de entidades",
    M.format_count(limits.max_retries), M.format_number(timeout, timeout % 1 == 0 and 0 or 2))
    .. (limits.budget_usd and (", orçamento de " .. M.format_usd(limits.budget_usd)) or "")
end

-- What the run cost: { spent_usd, budget_usd, left_usd } (nil without a
-- price), from the tokens the provider billed (stats.tokens) x the price.
function M.spend(stats, price_per_1m, budget_usd)
  if not price_per_1m then return nil end
  local spent = number_or_zero(stats.tokens) * price_per_1m / 1e6
  return { spent_usd = spent, budget_usd = budget_usd,
           left_usd = budget_usd and math.max(budget_usd - spent, 0) or nil }
end

local function estimate_lines(estimate, lines)
  lines[#lines + 1] = "  Estimativa:"
  local rows = {
    { "documentos:", M.format_count(estimate.documents) },
    { "trechos (chunks):", M.format_count(estimate.chunks) },
    { "tokens:", M.format_count(estimate.tokens) .. (estimate.tokens_low and
        ("  (intervalo ±2σ da amostra: %s a %s)"):format(M.format_count(estimate.tokens_low),
          M.format_count(estimate.tokens_high)) or "") },
    { "requisições de embedding:", M.format_count(estimate.requests) },
    { "lotes:", M.format_count(estimate.batches) },
    { "ignorados (inalterados):", M.format_count(estimate.skipped_unchanged) },
    { "sem documento por decisão do plano:", M.format_count(estimate.no_document) },
    { "custo estimado:", M.format_usd(number_or_zero(estimate.cost_usd))
        .. (estimate.cost_usd_low and ("  (%s a %s)"):format(M.format_usd(estimate.cost_usd_low),
          M.format_usd(estimate.cost_usd_high)) or "")
        .. (estimate.cost_note and ("  (" .. tostring(estimate.cost_note) .. ")") or "") },
    { "duração estimada:", M.format_duration(number_or_zero(estimate.duration_s)) },
  }
  if estimate.cost_usd_batch then
    table.insert(rows, #rows, { "custo na API de lotes:", M.format_usd(number_or_zero(estimate.cost_usd_batch))
      .. (estimate.cost_usd_batch_low and ("  (%s a %s)"):format(M.format_usd(estimate.cost_usd_batch_low),
        M.format_usd(estimate.cost_usd_batch_high)) or "")
      .. (estimate.embed_mode == "batch" and "  (embed.mode = \"batch\": o que esta execução pagaria)"
        or "  (com --embed-mode batch, em até 24 h)") })
  end
  for _, line in ipairs(aligned(rows, "    ")) do lines[#lines + 1] = line end
  local per_type = estimate.per_entity_type
  if type(per_type) == "table" and next(per_type) then
    lines[#lines + 1] = "    Por tipo de entidade:"
    for _, entity_type in ipairs(sorted_keys(per_type)) do
      local item = per_type[entity_type]
      lines[#lines + 1] = string.format("      %s: %s documentos, %s trechos, %s tokens%s%s",
        tostring(entity_type), M.format_count(item.documents), M.format_count(item.chunks),
        M.format_count(item.tokens),
        item.tokens_low and (" (%s a %s)"):format(M.format_count(item.tokens_low), M.format_count(item.tokens_high)) or "",
        item.token_basis_text and (" — tokens: " .. tostring(item.token_basis_text)) or "")
    end
  end
end

-- pt-BR multi-line report for the operator.
function M.format(stats)
  if type(stats) ~= "table" then error("report.format: esperado uma tabela de estatísticas", 2) end
  local lines = { header(stats) }
  if stats.dry_run then
    lines[#lines + 1] = "  SIMULAÇÃO (dry-run): nada foi gravado, nenhuma chamada de embedding feita"
  end
  if stats.aborted then
    local reason = stats.aborted
    if type(reason) == "table" then reason = reason.reason or "limite de alerta excedido" end
    lines[#lines + 1] = "  ABORTADO: " .. tostring(reason)
  end
  local elapsed = M.format_duration(number_or_zero(stats.elapsed_s))
  local throughput = M.throughput(stats)
  if throughput then
    elapsed = elapsed .. string.format("   (%s documentos/s)", M.format_number(throughput, 1))
  end
  local rows = {
    { "processados:", M.format_count(stats.processed) },
    { "sucesso:", M.format_count(stats.succeeded) },
    { "falhas:", M.format_count(stats.failed) },
    { "ignorados (inalterados):", M.format_count(stats.skipped) },
    -- document() gave nothing (empty body, a row the plan excludes): neither
    -- skipped nor pending; processed = sucesso + falhas + ignorados + this.
    { "sem documento por decisão do plano:", M.format_count(stats.no_document) },
    { "embeddings gerados:", M.format_count(stats.embedded) },
    { "removidos:", M.format_count(stats.deleted) },
  }
  if (tonumber(stats.refreshed) or 0) > 0 then
    rows[#rows + 1] = { "metadados atualizados:", M.format_count(stats.refreshed) }
  end
  if stats.retries ~= nil and stats.retries > 0 then
    rows[#rows + 1] = { "novas tentativas:", M.format_count(stats.retries) }
  end
  if stats.tokens ~= nil then rows[#rows + 1] = { "tokens:", M.format_count(stats.tokens) } end
  if stats.requests ~= nil then
    rows[#rows + 1] = { "requisições de embedding:", M.format_count(stats.requests) }
  end
  if stats.requests_spent ~= nil and stats.requests_spent ~= stats.requests then
    rows[#rows + 1] = { "requisições gastas (todas as tentativas):", M.format_count(stats.requests_spent) }
  end
  local spend = stats.spend
  if type(spend) == "table" and not stats.dry_run then
    rows[#rows + 1] = { "gasto:", M.format_usd(number_or_zero(spend.spent_usd))
      .. (spend.budget_usd and ("  (orçamento " .. M.format_usd(spend.budget_usd) .. ", restante "
        .. M.format_usd(number_or_zero(spend.left_usd)) .. ")") or "") }
  end
  local b = stats.batch
  if type(b) == "table" then
    rows[#rows + 1] = { "API de lotes:", ("%s parte(s) montada(s), %s enviada(s), %s coletada(s); %s entrada(s) "
      .. "reenviada(s) em lotes novos (preço de lote)"):format(M.format_count(b.parts), M.format_count(b.uploads),
        M.format_count(b.collected), M.format_count(b.resubmitted)) }
  end
  rows[#rows + 1] = { "tempo decorrido:", elapsed }
  if type(stats.limits) == "table" then rows[#rows + 1] = { "limites:", M.format_limits(stats.limits) } end
  for _, line in ipairs(aligned(rows, "  ")) do lines[#lines + 1] = line end

  local per_type = stats.per_entity_type
  if type(per_type) == "table" and next(per_type) then
    lines[#lines + 1] = "  Por tipo de entidade:"
    for _, entity_type in ipairs(sorted_keys(per_type)) do
      local item = per_type[entity_type]
      lines[#lines + 1] = string.format(
        "    %s: processados %s, sucesso %s, falhas %s, ignorados %s, sem documento %s, removidos %s",
        tostring(entity_type), M.format_count(item.processed), M.format_count(item.succeeded),
        M.format_count(item.failed), M.format_count(item.skipped), M.format_count(item.no_document),
        M.format_count(item.deleted))
    end
  end
  if type(stats.alerts) == "table" and #stats.alerts > 0 then
    lines[#lines + 1] = "  Alertas disparados:"
    for _, message in ipairs(stats.alerts) do lines[#lines + 1] = "    - " .. tostring(message) end
  end
  if number_or_zero(stats.failed) > 0 and not stats.dry_run then
    lines[#lines + 1] = "  Itens com falha foram para a fila de falhas: veja `ragops failures list`."
  end
  if stats.dry_run and type(stats.estimate) == "table" then
    estimate_lines(stats.estimate, lines)
  end
  return table.concat(lines, "\n") .. "\n"
end

-- Copies plain data (no functions/userdata), replacing NaN/inf by 0.
local function plain(value, depth)
  depth = depth or 0
  local kind = type(value)
  if kind == "number" then return number_or_zero(value) end
  if kind == "string" or kind == "boolean" then return value end
  if kind == "table" and depth < 16 then
    local out = {}
    for key, item in pairs(value) do
      if type(key) == "string" or type(key) == "number" then
        local copied = plain(item, depth + 1)
        if copied ~= nil then out[key] = copied end
      end
    end
    return out
  end
  return nil
end

-- Builds the JSON-ready table (stable English keys).
function M.to_table(stats)
  if type(stats) ~= "table" then error("report.json: esperado uma tabela de estatísticas", 2) end
  local out = plain(stats)
  out.plan_name = nil
  out.plan = plan_name(stats)
  if out.plan == nil then out.plan = cjson.null end
  if out.run_id == nil then out.run_id = cjson.null end
  for _, key in ipairs(COUNTERS) do out[key] = number_or_zero(stats[key]) end
  out.elapsed_s = number_or_zero(stats.elapsed_s)
  out.dry_run = stats.dry_run == true
  out.throughput = M.throughput(stats) or 0
  out.tokens = number_or_zero(stats.tokens)
  out.requests = number_or_zero(stats.requests)
  out.per_entity_type = out.per_entity_type or {}
  if type(out.limits) == "table" and out.limits.limit == nil then out.limits.limit = cjson.null end
  if out.dry_run or stats.estimate ~= nil then
    local estimate = type(out.estimate) == "table" and out.estimate or {}
    for _, key in ipairs(ESTIMATE_FIELDS) do estimate[key] = number_or_zero(estimate[key]) end
    estimate.per_entity_type = estimate.per_entity_type or {}
    out.estimate = estimate
  end
  return out
end

-- JSON string for --report-json and the run record (ragops_runs.report),
-- configured secrets masked (ragops.util.scrub).
function M.json(stats)
  return scrub.mask(json.encode(M.to_table(stats)))
end

-- Replaces path with text (ragops.util.safe_file: O_EXCL temporary in the
-- same directory, fsync, rename; symbolic links and non-regular targets
-- refused). Returns true or nil, pt-BR reason, kind.
function M.write_file_atomic(path, text)
  return safe_file.write(path, text)
end

-- Writes text to the --report-json file path; on failure logs it and turns
-- exit code 0 into 2. Returns the exit code.
function M.write_json_file(path, text, code)
  local ok, werr = M.write_file_atomic(path, text .. "\n")
  if ok then return code end
  log.error("não foi possível gravar o relatório em %s: %s", path, tostring(werr))
  if code == exit.ok then return exit.usage end
  return code
end

-- Prints the pt-BR report, writes --report-json (by the engine, never the
-- plan) and returns the exit code (2 when the report file cannot be written).
-- The abort reason is not logged again: the stop logged it once (ctx:abort).
function M.emit(stats, opts, code, json_text)
  io.stdout:write(scrub.text(M.format(stats)), "\n")
  if opts["report-json"] then
    code = M.write_json_file(opts["report-json"], scrub.mask(json_text or M.json(stats)), code)
  end
  return code
end

return M
