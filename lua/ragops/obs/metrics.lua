-- ragops.obs.metrics: a tiny Prometheus registry (counters, gauges, histograms)
-- rendered in the text exposition format and written atomically to a file
-- for node_exporter's textfile collector. Pure Lua, no I/O except write_file.
--
--   local m = metrics.new()
--   m:counter("ragops_documents_total", nil, { entity_type = "verse", result = "embedded" }):inc(3)
--   m:gauge("ragops_run_in_progress"):set(1)
--   m:histogram("ragops_embed_latency_seconds"):observe(0.42)
--   m:render()                 -> text
--   m:write_file(path)         -> true | nil, err
--
-- A family (name) has one type, one help text and, for histograms, one set of
-- buckets; each distinct label set is one series of it. When `help` is nil,
-- the help of a known engine metric (metrics.HELP) is used. Misuse (invalid
-- names, a name reused with another type, negative counter increments)
-- raises a Lua error; write_file failures return nil, err.
local M = {}

-- The metrics the engine exports: name -> { type, pt-BR help }. The stages
-- feed most of them (ragops.obs.instruments); the run wiring, the alerts
-- and `index create` the others. docs/alertas-e-metricas.md lists them all
-- (tests/lua/ops_spec.lua checks it, and the docs/ops dashboard and rules).
M.ENGINE = {
  ragops_documents_total = { "counter", "Documentos por resultado: embedded, skipped, no_document (sem documento por decisão do plano) e failed contam entidades; refreshed (metadados atualizados sem novo embedding) e deleted contam linhas do índice." },
  ragops_units_total = { "counter", "Unidades de trabalho (páginas da fonte) gravadas." },
  ragops_batches_total = { "counter", "Lotes de embedding bem-sucedidos (um pedido ao provedor cada)." },
  ragops_embed_requests_total = { "counter", "Pedidos de embedding ao provedor, por status HTTP (0 = sem resposta)." },
  ragops_embed_errors_total = { "counter", "Pedidos de embedding que falharam, por classe (transient, permanent, fatal)." },
  ragops_retries_total = { "counter", "Novas tentativas de pedidos de embedding depois de uma falha temporária." },
  ragops_dead_letters_total = { "counter", "Itens enviados à fila de falhas (dead letters)." },
  ragops_dead_letters_resolved_total = { "counter", "Itens da fila de falhas resolvidos (a entidade foi indexada)." },
  ragops_embed_tokens_total = { "counter", "Tokens cobrados pelo provedor (usage.prompt_tokens)." },
  ragops_embed_cost_usd_total = { "counter", "Custo estimado em US$ (tokens cobrados x provider.price_per_1m_tokens)." },
  ragops_ratelimit_wait_seconds_total = { "counter", "Tempo esperado no limitador de taxa antes de enviar pedidos, em segundos." },
  ragops_provider_endpoint_up = { "gauge", "1 enquanto o endpoint do provedor recebe pedidos, 0 enquanto está fora (falha de conexão, 5xx ou 401/403), por endpoint." },
  ragops_provider_endpoint_requests_total = { "counter", "Pedidos de embedding por endpoint do provedor e resultado (ok, failed)." },
  ragops_provider_quota_share = { "gauge", "Fatia deste processo na cota compartilhada do endpoint, por limite (requests_per_min, tokens_per_min, max_concurrency)." },
  ragops_provider_quota_holders = { "gauge", "Processos do ragops que dividem a cota do endpoint na última renovação (este incluído)." },
  ragops_batch_api_parts = { "gauge", "Partes da API de lotes desta execução por estado (building, uploading, validating, in_progress, finalizing, completed, expired, failed, cancelled...), ainda não coletadas." },
  ragops_batch_api_requests = { "gauge", "Pedidos dos lotes em andamento na API de lotes, por status (total, completed, failed), pelo request_counts do provedor." },
  ragops_batch_api_uploads_total = { "counter", "Arquivos JSONL enviados à API de lotes (um por parte; um reenvio é uma parte nova)." },
  ragops_embed_latency_seconds = { "histogram", "Latência dos pedidos de embedding, em segundos." },
  ragops_write_duration_seconds = { "histogram", "Duração da gravação de uma unidade no PostgreSQL (uma transação), em segundos." },
  ragops_rows_pending = { "gauge", "Linhas da fonte ainda não processadas nesta execução." },
  ragops_progress_ratio = { "gauge", "Fração das linhas da execução já processadas (0 a 1)." },
  ragops_embed_concurrency = { "gauge", "Pedidos de embedding em paralelo permitidos agora: a janela do limitador (AIMD) dentro do batch.in_flight do plano." },
  ragops_last_progress_timestamp_seconds = { "gauge", "Horário (Unix) da última unidade gravada." },
  ragops_source_rows = { "gauge", "Linhas da fonte no recorte da execução, por tipo de entidade." },
  ragops_indexed_entities = { "gauge", "Entidades com documento no índice, por tipo (fim de um backfill completo)." },
  ragops_no_document_entities = { "gauge", "Entidades sem documento por decisão do plano (document() devolveu nada), por tipo (fim de um backfill completo)." },
  ragops_coverage_ratio = { "gauge", "Entidades indexadas / (linhas da fonte - entidades sem documento por decisão do plano), por tipo (fim de um backfill completo)." },
  ragops_sync_queue_depth = { "gauge", "Mudanças da fonte na fila de sincronização, por tipo de entidade." },
  ragops_sync_lag_seconds = { "gauge", "Idade da mudança mais antiga da fonte ainda não indexada, em segundos, por tipo." },
  ragops_alerts_total = { "counter", "Alertas disparados, por alerta e ação." },
  ragops_run_in_progress = { "gauge", "1 enquanto uma execução de plano está em andamento, 0 caso contrário." },
  ragops_last_run_timestamp_seconds = { "gauge", "Horário (Unix, segundos) do fim da última execução de plano." },
  inprogress_index_builds = { "gauge", "Construções de índice vetorial em andamento (ragops index create)." },
  ragops_scale_out_units_claimed_total = { "counter", "Unidades de trabalho do --scale-out reivindicadas por este processo, com o rótulo worker (--worker, RAGOPS_WORKER ou o nome do host)." },
  ragops_scale_out_units_done_total = { "counter", "Unidades de trabalho do --scale-out concluídas por este processo, com o rótulo worker (--worker, RAGOPS_WORKER ou o nome do host)." },
}

-- Help texts and types of the engine metrics (a registration without its
-- own help uses these; another type for an engine name is refused).
M.HELP, M.TYPES = {}, {}
for name, spec in pairs(M.ENGINE) do M.TYPES[name], M.HELP[name] = spec[1], spec[2] end

-- Default histogram buckets (seconds), suited to HTTP latencies.
M.DEFAULT_BUCKETS = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60 }

local METRIC_NAME = "^[%a_:][%w_:]*$"
local LABEL_NAME = "^[%a_][%w_]*$"

-- Renders a sample value: integers without a fraction, others with the
-- shortest of %.15g / %.17g that round-trips, and +Inf/-Inf/NaN.
local function format_value(v)
  if v ~= v then return "NaN" end
  if v == math.huge then return "+Inf" end
  if v == -math.huge then return "-Inf" end
  if v == math.floor(v) and math.abs(v) < 2^53 then return ("%d"):format(v) end
  local s = ("%.15g"):format(v)
  if tonumber(s) ~= v then s = ("%.17g"):format(v) end
  return s
end
M.format_value = format_value

local function escape_label_value(s)
  return (s:gsub("\\", "\\\\"):gsub("\"", "\\\""):gsub("\n", "\\n"))
end

local function escape_help(s)
  return (s:gsub("\\", "\\\\"):gsub("\n", "\\n"))
end

-- Canonical `a="x",b="y"` text of a label set (sorted by label name).
local function label_text(labels, kind)
  local names = {}
  for name, value in pairs(labels) do
    if type(name) ~= "string" or not name:match(LABEL_NAME) or name:sub(1, 2) == "__" then
      error(("nome de rótulo inválido: %s"):format(tostring(name)), 4)
    end
    if name == "le" and kind == "histogram" then
      error("o rótulo \"le\" é reservado em histogramas", 4)
    end
    local t = type(value)
    if t ~= "string" and t ~= "number" and t ~= "boolean" then
      error(("valor inválido para o rótulo %q: %s"):format(name, t), 4)
    end
    names[#names + 1] = name
  end
  table.sort(names)
  local parts = {}
  for i, name in ipairs(names) do
    local value = labels[name]
    value = type(value) == "number" and format_value(value) or tostring(value)
    parts[i] = ("%s=\"%s\""):format(name, escape_label_value(value))
  end
  return table.concat(parts, ",")
end

local function join_labels(base, extra)
  if base == "" then return extra end
  if extra == "" then return base end
  return base .. "," .. extra
end

local function braces(text)
  return text == "" and "" or ("{" .. text .. "}")
end

local function check_number(v, what)
  if type(v) ~= "number" then
    error(("%s: esperado um número, recebido %s"):format(what, type(v)), 3)
  end
end

-- Series objects ------------------------------------------------------------

local Counter = {}
Counter.__index = Counter
function Counter:inc(n)
  n = n == nil and 1 or n
  check_number(n, "counter:inc")
  if n < 0 then error("counter:inc: um contador não pode diminuir", 2) end
  self.value = self.value + n
  return self
end
function Counter:get() return self.value end

local Gauge = {}
Gauge.__index = Gauge
function Gauge:set(v)
  check_number(v, "gauge:set")
  self.value = v
  return self
end
function Gauge:inc(n)
  n = n == nil and 1 or n
  check_number(n, "gauge:inc")
  self.value = self.value + n
  return self
end
function Gauge:dec(n)
  n = n == nil and 1 or n
  check_number(n, "gauge:dec")
  self.value = self.value - n
  return self
end
function Gauge:get() return self.value end

local Histogram = {}
Histogram.__index = Histogram
function Histogram:observe(v)
  check_number(v, "histogram:observe")
  local buckets = self.family.buckets
  for i = 1, #buckets do
    if v <= buckets[i] then self.counts[i] = self.counts[i] + 1 end
  end
  self.sum = self.sum + v
  self.count = self.count + 1
  return self
end

-- Registry ------------------------------------------------------------------

local Registry = {}
Registry.__index = Registry

function M.new()
  return setmetatable({ families = {} }, Registry)
end

local function validate_buckets(buckets)
  if type(buckets) ~= "table" or #buckets == 0 then
    error("histogram: buckets deve ser uma lista não vazia de números", 4)
  end
  local out = {}
  for i, b in ipairs(buckets) do
    if type(b) ~= "number" or b ~= b then
      error(("histogram: bucket %d não é um número"):format(i), 4)
    end
    if i > 1 and b <= buckets[i - 1] then
      error("histogram: buckets devem estar em ordem estritamente crescente", 4)
    end
    if b ~= math.huge then out[#out + 1] = b end
  end
  return out
end

-- Returns the family `name` of type `kind`, creating it on first use.
local function family(self, kind, name, help, buckets)
  if type(name) ~= "string" or not name:match(METRIC_NAME) then
    error(("nome de métrica inválido: %s"):format(tostring(name)), 3)
  end
  if help ~= nil and type(help) ~= "string" then
    error(("texto de ajuda da métrica %s deve ser uma string"):format(name), 3)
  end
  local f = self.families[name]
  if f then
    if f.kind ~= kind then
      error(("a métrica %s já foi registrada como %s"):format(name, f.kind), 3)
    end
    if f.help == nil then f.help = help end
    return f
  end
  if M.TYPES[name] and M.TYPES[name] ~= kind then
    error(("a métrica %s é um %s"):format(name, M.TYPES[name]), 3)
  end
  f = { kind = kind, name = name, help = help or M.HELP[name], series = {} }
  if kind == "histogram" then
    f.buckets = validate_buckets(buckets or M.DEFAULT_BUCKETS)
  end
  self.families[name] = f
  return f
end

local function series(f, labels)
  if labels ~= nil and type(labels) ~= "table" then
    error("os rótulos devem ser uma tabela { nome = valor }", 3)
  end
  local key = label_text(labels or {}, f.kind)
  local s = f.series[key]
  if not s then
    if f.kind == "counter" then
      local values = {}
      for name, value in pairs(labels or {}) do
        values[name] = type(value) == "number" and format_value(value) or tostring(value)
      end
      s = setmetatable({ labels = key, label_values = values, value = 0 }, Counter)
    elseif f.kind == "gauge" then
      s = setmetatable({ labels = key, value = 0 }, Gauge)
    else
      local counts = {}
      for i = 1, #f.buckets do counts[i] = 0 end
      s = setmetatable({ labels = key, family = f, counts = counts, sum = 0, count = 0 }, Histogram)
    end
    f.series[key] = s
  end
  return s
end

function Registry:counter(name, help, labels)
  return series(family(self, "counter", name, help), labels)
end

function Registry:gauge(name, help, labels)
  return series(family(self, "gauge", name, help), labels)
end

-- buckets: ascending upper bounds (+Inf is implicit); nil = DEFAULT_BUCKETS.
-- A family's buckets are fixed by its first registration.
function Registry:histogram(name, help, buckets, labels)
  return series(family(self, "histogram", name, help, buckets), labels)
end

local sorted_keys = require("ragops.util.tables").sorted_keys

-- Text exposition format, families sorted by name, series by label text.
function Registry:render()
  local out = {}
  for _, name in ipairs(sorted_keys(self.families)) do
    local f = self.families[name]
    if f.help and f.help ~= "" then
      out[#out + 1] = ("# HELP %s %s"):format(name, escape_help(f.help))
    end
    out[#out + 1] = ("# TYPE %s %s"):format(name, f.kind)
    for _, key in ipairs(sorted_keys(f.series)) do
      local s = f.series[key]
      if f.kind == "histogram" then
        for i, bound in ipairs(f.buckets) do
          local le = ("le=\"%s\""):format(format_value(bound))
          out[#out + 1] = ("%s_bucket{%s} %s"):format(name, join_labels(key, le), format_value(s.counts[i]))
        end
        out[#out + 1] = ("%s_bucket{%s} %s"):format(name, join_labels(key, "le=\"+Inf\""), format_value(s.count))
        out[#out + 1] = ("%s_sum%s %s"):format(name, braces(key), format_value(s.sum))
        out[#out + 1] = ("%s_count%s %s"):format(name, braces(key), format_value(s.count))
      else
        out[#out + 1] = ("%s%s %s"):format(name, braces(key), format_value(s.value))
      end
    end
  end
  if #out == 0 then return "" end
  return table.concat(out, "\n") .. "\n"
end

-- The histogram `name` added up over its series, per bucket (not
-- cumulative): { buckets = { { le = "0.05", count }, ..., { le = "+Inf",
-- count } }, count, sum }, or nil without observations. The numbers a
-- report shows, straight from the registry.
function Registry:histogram_totals(name)
  local f = self.families[name]
  if not f or f.kind ~= "histogram" then return nil end
  local cumulative, out = {}, { count = 0, sum = 0, buckets = {} }
  for i = 1, #f.buckets do cumulative[i] = 0 end
  for _, key in ipairs(sorted_keys(f.series)) do
    local s = f.series[key]
    for i = 1, #f.buckets do cumulative[i] = cumulative[i] + s.counts[i] end
    out.count, out.sum = out.count + s.count, out.sum + s.sum
  end
  if out.count == 0 then return nil end
  local previous = 0
  for i, bound in ipairs(f.buckets) do
    out.buckets[i] = { le = format_value(bound), count = cumulative[i] - previous }
    previous = cumulative[i]
  end
  out.buckets[#f.buckets + 1] = { le = "+Inf", count = out.count - previous }
  return out
end

-- The counter `name` added up per value of its label `label` (series
-- without it left out): { [value] = n }.
function Registry:counter_by_label(name, label)
  local f, out = self.families[name], {}
  if not f or f.kind ~= "counter" then return out end
  for _, s in pairs(f.series) do
    local value = s.label_values[label]
    if value ~= nil then out[value] = (out[value] or 0) + s.value end
  end
  return out
end

-- Replaces path with render() through ragops.util.safe_file (a temporary
-- with O_EXCL in the same directory, fsync, rename), so the textfile
-- collector never reads a half-written file and a link planted at path is
-- refused, not followed. Returns true or nil, err.
function Registry:write_file(path)
  if type(path) ~= "string" or path == "" then
    error("write_file: caminho do arquivo de métricas ausente", 2)
  end
  local ok, err = require("ragops.util.safe_file").write(path, self:render())
  if not ok then return nil, ("não foi possível gravar o arquivo de métricas %s: %s"):format(path, err) end
  return true
end

return M
