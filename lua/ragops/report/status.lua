-- ragops.report.status: what ran, what is running and how far the index is behind
-- the source, read from the database (`ragops status`). Each part is one
-- function over a connection-like object (conn:query(sql, ...) -> rows | nil, err):
--   runs(conn, limit)              recent runs, who holds them, last heartbeat
--   workers(conn)                  per worker of a scale-out run in progress: units
--                                  done, units in progress, last sign of life
--   coverage(conn, table, sources) per entity type: indexed, no document by
--                                  the plan's decision, pending, vs source rows; lag
--   failures(conn)                 open dead letters by entity type and class
--   indexes(conn, table)        vector indexes: method, definition, size, valid
--   sync_queue(conn)               ragops sync's change queue: depth and lag per entity type
--   batches                        the Batch API's parts not finished with (ragops.store.batches.in_flight)
--   storage                        the embedding column's type ("halfvec(3072)", "real[]")
-- collect() gathers them into one table with stable English keys (the
-- --json output); format() renders it as pt-BR text.
local cjson = require "cjson"
local failures = require "ragops.store.failures"
local index = require "ragops.vector.index"
local migrate = require "ragops.store.migrate"
local report = require "ragops.report"
local sqlname = require "ragops.util.sqlname"
local batches = require "ragops.store.batches"
local quota_store = require "ragops.store.quota"
local sync_tables = require "ragops.store.sync_tables"

local M = {}

-- A run whose heartbeat is older than this is not considered alive.
M.STALE_HEARTBEAT_S = 30

local quote_ident = index.quote_ident

function M.runs(conn, limit)
  return conn:query([[
    select id, plan, params::text as params, status, dry_run,
           to_char(started_at, 'YYYY-MM-DD"T"HH24:MI:SSOF') as started_at,
           to_char(finished_at, 'YYYY-MM-DD"T"HH24:MI:SSOF') as finished_at,
           to_char(heartbeat_at, 'YYYY-MM-DD"T"HH24:MI:SSOF') as heartbeat_at,
           extract(epoch from (coalesce(finished_at, now()) - started_at))::float8 as duration_s,
           extract(epoch from (now() - heartbeat_at))::float8 as heartbeat_age_s,
           owner, requests_spent, left(plan_fingerprint, 12) as plan_fingerprint,
           coalesce((report ->> 'processed')::bigint, 0) as processed,
           coalesce((report ->> 'embedded')::bigint, 0) as embedded,
           coalesce((report ->> 'failed')::bigint, 0) as failed,
           coalesce((report ->> 'skipped')::bigint, 0) as skipped
      from ragops_runs order by id desc limit $1]], limit or 10)
end

-- The workers (label recorded on the units they claim) of the scale-out
-- runs in progress: units done, the units they hold under a live lease
-- ("verse #3"), their last sign of life (claim, lease renewal, unit done).
function M.workers(conn)
  return conn:query([[
    select w.run_id, w.worker,
           count(*) filter (where w.status = 'done') as units_done,
           coalesce(string_agg(w.entity_type || ' #' || w.seq, ', ' order by w.id)
                      filter (where w.status = 'pending' and w.lease_expires_at >= now()), '') as in_progress,
           to_char(max(w.heartbeat_at), 'YYYY-MM-DD"T"HH24:MI:SSOF') as heartbeat_at,
           extract(epoch from (now() - max(w.heartbeat_at)))::float8 as heartbeat_age_s
      from ragops_work_units w join ragops_runs r on r.id = w.run_id
     where r.status in ('running', 'finalizing') and w.worker is not null
     group by w.run_id, w.worker order by w.run_id desc, w.worker limit 200]])
end

-- Coverage and lag of one source, in one pass over it (an index on the
-- source's key helps). Each source row is one of: indexed and up to date,
-- without a document by the plan's decision (a marker in
-- ragops_no_document as of the row's updated_at, and no document), or
-- pending (no document and no such marker, or a document older than the
-- row: stale). So up_to_date + no_document + pending = source_rows.
-- indexed (up to date or stale) / (source_rows - no_document) is the
-- coverage; lag_s, the age of the oldest pending change (sources with
-- updated_at only).
local function coverage_sql(target, source)
  local key = "src." .. quote_ident(source.key)
  local col = source.updated_at and ("src." .. quote_ident(source.updated_at))
  local stale = col and ("d.source_updated_at < " .. col) or "false"
  local marked = "d.entity_id is null and m.entity_id is not null"
    .. (col and (" and (" .. col .. " is null or m.source_updated_at >= " .. col .. ")") or "")
  local lag = col and (", extract(epoch from (now() - min(%s) filter (where not (%s) and (d.entity_id is null or %s))))"
    .. "::float8 as lag_s"):format(col, marked, stale) or ""
  return ([[
    select count(*) as source_rows, count(d.entity_id) as indexed,
           count(*) filter (where %s) as stale, count(*) filter (where %s) as no_document%s
      from (%s) as src
      left join %s d on d.entity_type = $1 and d.entity_id = %s::text and d.chunk_index = 0
      left join ragops_no_document m on m.entity_type = $1 and m.entity_id = %s::text]])
    :format(stale, marked, lag, source.sql, target, key, key)
end

local function source_coverage(conn, target, source)
  local rows, err = conn:query(coverage_sql(target, source), source.entity_type)
  if not rows then return nil, err end
  local r = rows[1]
  local out = { entity_type = source.entity_type, source_rows = r.source_rows, indexed = r.indexed,
                stale = r.stale, no_document = r.no_document }
  out.up_to_date = out.indexed - out.stale
  out.pending = out.source_rows - out.up_to_date - out.no_document
  local owed = out.source_rows - out.no_document
  out.coverage = owed > 0 and math.min(out.indexed / owed, 1) or 1
  if source.updated_at then out.lag_s = out.pending > 0 and math.max(r.lag_s or 0, 0) or 0 end
  return out
end

function M.coverage(conn, table_name, sources)
  local target = sqlname.quote_table(table_name)
  local out = {}
  for _, source in ipairs(sources) do
    local c, err = source_coverage(conn, target, source)
    if not c then return nil, err end
    out[#out + 1] = c
  end
  return out
end

function M.failures(conn)
  return conn:query([[select entity_type, error_class, count(*) as open
               from ragops_failures where resolved_at is null
              group by 1, 2 order by 1, 2]])
end

M.indexes = index.vector_indexes

-- The trigger strategy's queue: { { entity_type, depth, lag_s } } (empty
-- when `ragops sync install` never ran).
function M.sync_queue(conn)
  local depth, err = sync_tables.depth(function(sql, ...) return conn:query(sql, ...) end)
  if not depth then return nil, err end
  local out = {}
  for entity_type, d in pairs(depth) do
    out[#out + 1] = { entity_type = entity_type, depth = d.depth, lag_s = d.lag_s }
  end
  table.sort(out, function(a, b) return a.entity_type < b.entity_type end)
  return out
end

-- Rows as a plain array (query results also carry fields such as
-- `affected`, which would turn the JSON list into an object).
local function plain_rows(rows)
  local out = {}
  for i, r in ipairs(rows) do out[i] = r end
  return out
end

-- Everything `ragops status` shows. Returns the table or nil, err.
function M.collect(conn, table_name, sources)
  local out = {}
  local parts = {
    { "runs", function() return M.runs(conn, 10) end },
    { "workers", function() return M.workers(conn) end },
    { "coverage", function() return M.coverage(conn, table_name, sources) end },
    { "open_failures", function() return M.failures(conn) end },
    { "indexes", function() return M.indexes(conn, table_name) end },
    { "sync_queue", function() return M.sync_queue(conn) end },
    { "batches", function() return batches.in_flight(function(sql, ...) return conn:query(sql, ...) end) end },
    { "endpoints", function() return quota_store.status(function(sql, ...) return conn:query(sql, ...) end) end },
  }
  for _, part in ipairs(parts) do
    local rows, err = part[2]()
    if not rows then return nil, ("falha ao ler %s: %s"):format(part[1], tostring(err)) end
    out[part[1]] = plain_rows(rows)
  end
  local column, cerr = migrate.embedding_column(conn, table_name)
  if cerr then return nil, ("falha ao ler storage: %s"):format(tostring(cerr)) end
  out.storage = column
  for _, run in ipairs(out.runs) do
    run.alive = run.status == "running" and run.heartbeat_age_s ~= nil
      and run.heartbeat_age_s < M.STALE_HEARTBEAT_S
  end
  return out
end

-- The --json output. lua-cjson writes an empty table as {}: the lists
-- are written as [] when empty, so their type never changes.
local EMPTY = "\0ragops-empty-list\0"
function M.json(st)
  local copy = {}
  for k, v in pairs(st) do copy[k] = (type(v) == "table" and next(v) == nil) and EMPTY or v end
  return (cjson.encode(copy):gsub('"\\u0000ragops%-empty%-list\\u0000"', "[]"))
end

local count, number = report.format_count, report.format_number

local function format_duration(seconds)
  seconds = math.floor(seconds or 0)
  if seconds < 60 then return seconds .. " s" end
  if seconds < 3600 then return ("%d min %02d s"):format(seconds / 60, seconds % 60) end
  return ("%d h %02d min"):format(seconds / 3600, seconds % 3600 / 60)
end

-- The run states of ragops_runs as a person reads them (the JSON keeps
-- the English values).
local STATES = {
  done = "concluída", done_with_failures = "concluída com falhas", interrupted = "interrompida",
  aborted = "abortada", failed = "falhou (erro de uso ou interno)", dry_run = "simulação",
}

local function run_state(run)
  if run.status ~= "running" then return STATES[run.status] or tostring(run.status) end
  if run.alive then
    return ("em andamento (processo %s, heartbeat há %s)"):format(tostring(run.owner or "compartilhado"),
      format_duration(run.heartbeat_age_s))
  end
  return "em andamento sem heartbeat recente (processo morto? o mesmo comando retoma)"
end

local function format_runs(lines, runs)
  lines[#lines + 1] = "Execuções recentes:"
  if #runs == 0 then lines[#lines + 1] = "  nenhuma" end
  for _, r in ipairs(runs) do
    lines[#lines + 1] = ("  #%d %s%s: %s; início %s, duração %s; %s processados, %s gerados, %s falhas, %s pedidos"):format(
      r.id, r.plan, r.dry_run and " (simulação)" or "", run_state(r), r.started_at or "-",
      format_duration(r.duration_s), count(r.processed), count(r.embedded), count(r.failed),
      count(r.requests_spent or 0))
    if r.params ~= "{}" then lines[#lines + 1] = "      parâmetros: " .. r.params end
    if r.status == "running" and r.plan_fingerprint then
      lines[#lines + 1] = "      impressão digital do plano: " .. r.plan_fingerprint
    end
  end
end

-- The workers of the scale-out runs in progress (nothing without one).
local function format_workers(lines, workers)
  if #workers == 0 then return end
  lines[#lines + 1] = "Processos do --scale-out em andamento (por worker):"
  for _, w in ipairs(workers) do
    lines[#lines + 1] = ("  execução #%s, worker %s: %s unidade(s) concluída(s); em andamento: %s; último sinal há %s")
      :format(tostring(w.run_id), tostring(w.worker), count(w.units_done),
        w.in_progress ~= "" and w.in_progress or "nenhuma", format_duration(w.heartbeat_age_s))
  end
end

-- "X de Y entidades indexadas" counts the entities owed a document (the
-- source's rows less those the plan decided have none); the source's rows
-- then add up as up to date + no document + pending.
local function format_coverage(lines, coverage, note)
  lines[#lines + 1] = "Cobertura e atraso por tipo de entidade:"
  if note then lines[#lines + 1] = "  " .. note end
  for _, c in ipairs(coverage) do
    lines[#lines + 1] = ("  %s: %s de %s entidades indexadas (%s%%); na fonte %s = %s em dia + %s sem documento "
      .. "por decisão do plano + %s pendente(s)%s%s"):format(c.entity_type,
      count(c.indexed), count(c.source_rows - c.no_document), number(c.coverage * 100, 1),
      count(c.source_rows), count(c.up_to_date), count(c.no_document), count(c.pending),
      c.stale > 0 and (" (%s desatualizada(s))"):format(count(c.stale)) or "",
      c.lag_s and (", mudança mais antiga não indexada há " .. format_duration(c.lag_s)) or "")
  end
end

-- The Batch API's parts not finished with, per run and state.
local function format_batches(lines, rows)
  if #rows == 0 then return end
  lines[#lines + 1] = "Lotes da API de lotes em aberto (embed.mode = \"batch\"):"
  for _, b in ipairs(rows) do
    lines[#lines + 1] = ("  execução %s (%s): %s parte(s) %s, pedidos %s de %s concluídos, %s com falha; "
      .. "a mais antiga há %s"):format(tostring(b.run_id), tostring(b.plan), count(b.parts), tostring(b.state),
      count(b.completed), count(b.requests), count(b.failed), format_duration(b.oldest_s))
  end
end

-- The provider's endpoints seen by runs: taken out or live, a pause in
-- force, the processes sharing each one's quota.
local function format_endpoints(lines, rows)
  if #rows == 0 then return end
  lines[#lines + 1] = "Endpoints do provedor (cota compartilhada e saúde):"
  for _, e in ipairs(rows) do
    local health = "no ar"
    if e.down_since then
      health = ("FORA desde %s (%s)%s"):format(e.down_since, tostring(e.down_reason or "?"),
        (tonumber(e.down_left_s) or 0) > 0 and (", volta a ser tentado em " .. format_duration(e.down_left_s))
          or ", sem resposta boa desde então")
    end
    local paused = (tonumber(e.paused_left_s) or 0) > 0 and ("; pausado por mais " .. format_duration(e.paused_left_s)) or ""
    lines[#lines + 1] = ("  %s: %s%s; %s processo(s) com fatia da cota\n      %s"):format(
      tostring(e.endpoint or "-"), health, paused, count(e.holders or 0), tostring(e.key))
  end
end

function M.format(st)
  local lines = {}
  format_runs(lines, st.runs)
  format_workers(lines, st.workers or {})
  format_coverage(lines, st.coverage, st.coverage_note)
  lines[#lines + 1] = "Falhas em aberto:"
  if #st.open_failures == 0 then lines[#lines + 1] = "  nenhuma" end
  for _, f in ipairs(st.open_failures) do
    lines[#lines + 1] = ("  %s / %s: %s"):format(f.entity_type,
      failures.CLASS_PTBR[f.error_class] or f.error_class, count(f.open))
  end
  lines[#lines + 1] = ("Armazenamento: coluna embedding %s%s"):format(tostring(st.storage or "ausente"),
    index.type_note(st.storage))
  lines[#lines + 1] = "Índices vetoriais:"
  if #st.indexes == 0 then lines[#lines + 1] = "  nenhum" end
  for _, i in ipairs(st.indexes) do
    lines[#lines + 1] = ("  %s: %s, %s, %s\n      %s"):format(i.name, i.method, i.size,
      i.valid and "válido" or "INVALID (remova com DROP INDEX CONCURRENTLY)", i.definition)
  end
  if #st.sync_queue > 0 then lines[#lines + 1] = "Fila do ragops sync (mudanças pendentes):" end
  for _, q in ipairs(st.sync_queue) do
    lines[#lines + 1] = ("  %s: %s pendente(s), a mais antiga há %s"):format(q.entity_type, count(q.depth),
      format_duration(q.lag_s))
  end
  format_batches(lines, st.batches or {})
  format_endpoints(lines, st.endpoints or {})
  return table.concat(lines, "\n") .. "\n"
end

return M
