-- ragops.run.dryrun: `--dry-run`. Runs the same plan through the same runner,
-- but in a sandbox that cannot write anywhere:
--   * one PostgreSQL session, read-only by PostgreSQL itself
--     (default_transaction_read_only + BEGIN READ ONLY, repeatable read,
--     checked before any plan SQL runs), so even a plan's own SQL cannot
--     write: every query is one statement (extended protocol), so plan SQL
--     can neither end that transaction nor open a writable one;
--   * the embedding client is replaced by an estimator (tokens ~ bytes / 4);
--     no request leaves the process;
--   * writes become counts: what would be embedded, pruned and deleted.
-- Volume comes from SQL count(*) per source; when a source has more rows
-- than MAX_SCAN_ROWS, only that many are read through the plan (keyset
-- order) and the figures are extrapolated (estimate.sampled = true).
local store_target = require "ragops.store.target"
local config = require "ragops.plan.config"
local core = require "ragops.core"
local exit = require "ragops.util.exit"
local log = require "ragops.obs.log"
local migrate = require "ragops.store.migrate"
local params_mod = require "ragops.plan.params"
local pg = require "ragops.pg"
local report = require "ragops.report"
local report_html = require "ragops.report.html"
local dialects = require "ragops.provider.dialects"
local pipeline = require "ragops.run.pipeline"
local ratelimit = require "ragops.provider.ratelimit"
local sched = require "ragops.util.sched"
local sqlname = require "ragops.util.sqlname"
local store_pg = require "ragops.store.pg"

local M = {}

M.MAX_SCAN_ROWS = 200000
M.READ_ONLY_VIOLATION = "25006"

-- Counts an estimate of tokens the way the provider-side estimate does.
local estimate_tokens = ratelimit.estimate_text_tokens
M.estimate_tokens = estimate_tokens

-- Embedder replacement: returns a batch-shaped object, sends nothing.
local function estimator(dim, limits)
  -- The provider's limits form the requests counted (without asking the
  -- provider: a dry run sends nothing, not even GET /info).
  local e = { calls = 0, limits = limits }
  function e:embed(texts)
    self.calls = self.calls + 1
    local tokens = 0
    for _, t in ipairs(texts) do tokens = tokens + estimate_tokens(t) end
    local n = #texts
    return { count = function() return n end, dim = function() return dim end,
             tokens = function() return tokens end }
  end
  function e:close() end
  return e
end
M.estimator = estimator

-- A "pool" over one connection: callers take turns (the runner's workers
-- are coroutines sharing the single read-only session).
local function single_connection_pool(conn, s)
  local sem = sched.semaphore(s, 1)
  return {
    with = function(_, fn)
      sem:acquire()
      local results = { pcall(fn, conn) }
      sem:release()
      if not results[1] then error(results[2], 0) end
      return unpack(results, 2, table.maxn(results))
    end,
  }
end

-- Expected wall time at the configured concurrency and rate limits.
function M.estimate_duration_s(requests, tokens, plan, cfg)
  local limits = cfg.provider.rate_limits or {}
  local concurrency = math.min(plan.batch.in_flight, limits.max_concurrency or plan.batch.in_flight)
  local by_latency = requests * (cfg.provider.expected_latency_ms or 500) / 1000 / math.max(concurrency, 1)
  local by_requests = limits.requests_per_min and requests / limits.requests_per_min * 60 or 0
  local by_tokens = limits.tokens_per_min and tokens / limits.tokens_per_min * 60 or 0
  return math.max(by_latency, by_requests, by_tokens)
end

-- The least sample a token calibration is taken from: a provider's bill
-- over fewer documents AND fewer bytes (a --limit or --entity-id sanity
-- run) says little about a whole source (docs/limites-e-riscos.md).
M.CALIBRATION_MIN_DOCUMENTS = 1000
M.CALIBRATION_MIN_BYTES = 100000

local function calibration_runs(c)
  if (c.runs or 1) <= 1 then return ("pela execução %d"):format(c.run_id) end
  return ("pelas %d execuções de %d a %d"):format(c.runs, c.first_run_id, c.run_id)
end

-- The tokens-per-byte ratio for an entity type, and what it is based on:
-- the provider's bill in the most recent runs of the same model and type
-- (calib[entity_type] = { run_id, first_run_id, runs, documents, bytes,
-- tokens }, see read_calibration) when their sample reaches the minimum,
-- else the model's default ratio (provider.tokens_per_byte), else bytes/4.
function M.token_basis(entity_type, calib, cfg)
  local c = calib and calib[entity_type]
  local usable = c and c.bytes > 0 and c.tokens > 0
  if usable and (c.documents >= M.CALIBRATION_MIN_DOCUMENTS or c.bytes >= M.CALIBRATION_MIN_BYTES) then
    return { kind = "calibrated", ratio = c.tokens / c.bytes, run_id = c.run_id, documents = c.documents,
             bytes = c.bytes,
             text = ("calibrado %s, %s documentos e %s bytes"):format(calibration_runs(c),
               report.format_count(c.documents), report.format_count(c.bytes)) }
  end
  local why = usable and ("; sem calibrar: amostra de %s documento(s) e %s bytes (%s), abaixo do mínimo de %s "
    .. "documentos ou %s bytes"):format(report.format_count(c.documents), report.format_count(c.bytes),
      calibration_runs(c), report.format_count(M.CALIBRATION_MIN_DOCUMENTS),
      report.format_count(M.CALIBRATION_MIN_BYTES)) or ""
  local default = (cfg.provider.tokens_per_byte or {})[cfg.provider.model]
  if default then
    return { kind = "model_default", ratio = default,
             text = ("razão padrão do modelo %s (provider.tokens_per_byte = %s)"):format(cfg.provider.model,
               report.format_number(default, 3)) .. why }
  end
  return { kind = "bytes_per_4", ratio = 0.25, text = "heurística bytes/4" .. why }
end

-- Tokens of one entity type (c: the runner's counters over what was read,
-- factor: total/read) with the basis, and when sampled the ±2σ interval of
-- the sum (chunks treated as a sample of the source's chunks).
local function estimate_tokens_of(c, factor, basis)
  local tokens = (c.bytes or 0) > 0 and c.bytes * basis.ratio or c.tokens
  local out = { tokens = math.floor(tokens * factor + 0.5) }
  local n = c.embedded or 0
  if factor > 1 and n > 1 and (c.bytes or 0) > 0 then
    local mean = c.bytes / n
    local variance = math.max((c.bytes_sq or 0) / n - mean * mean, 0) * n / (n - 1)
    local half = 2 * factor * math.sqrt(n * variance) * basis.ratio * math.sqrt(math.max(1 - 1 / factor, 0))
    out.low, out.high = math.max(math.floor(out.tokens - half), 0), math.ceil(out.tokens + half)
  end
  return out
end

-- Builds the estimate from runner stats and the SQL counts per source;
-- calib: the token calibration per entity type (see token_basis).
function M.build_estimate(stats, totals, scanned, batches, plan, cfg, calib)
  local price = config.price_per_1m(cfg)
  local est = { documents = 0, chunks = 0, tokens = 0, requests = 0, batches = 0,
                skipped_unchanged = 0, no_document = 0, deletions = 0, per_entity_type = {}, sampled = false,
                price_per_1m_tokens = price }
  for entity_type, c in pairs(stats.per_entity_type) do
    local total, seen = totals[entity_type] or c.processed, scanned[entity_type] or c.processed
    local factor = 1
    if seen > 0 and total > seen then factor = total / seen; est.sampled = true end
    local function scaled(v) return math.floor(v * factor + 0.5) end
    local basis = M.token_basis(entity_type, calib, cfg)
    local tok = estimate_tokens_of(c, factor, basis)
    local item = {
      documents = total, chunks = scaled(c.chunks), tokens = tok.tokens,
      tokens_low = tok.low, tokens_high = tok.high, token_basis = basis.kind, token_basis_text = basis.text,
      token_basis_run_id = basis.run_id,
      requests = scaled(c.requests), batches = scaled(batches[entity_type] or 0),
      skipped_unchanged = scaled(c.skipped), no_document = scaled(c.no_document or 0),
      would_embed = scaled(c.embedded), deletions = c.deleted,
    }
    est.per_entity_type[entity_type] = item
    for _, k in ipairs({ "documents", "chunks", "tokens", "requests", "batches",
                         "skipped_unchanged", "no_document", "deletions" }) do
      est[k] = est[k] + item[k]
    end
  end
  local low, high = 0, 0
  for _, item in pairs(est.per_entity_type) do
    low, high = low + (item.tokens_low or item.tokens), high + (item.tokens_high or item.tokens)
  end
  if est.sampled then est.tokens_low, est.tokens_high = low, high end
  est.cost_usd = price and est.tokens / 1e6 * price or 0
  if price and est.sampled then est.cost_usd_low, est.cost_usd_high = low / 1e6 * price, high / 1e6 * price end
  -- The Batch API's price beside it (embed.mode = "batch" pays this one).
  local batch_price = config.price_per_1m_batch(cfg)
  if batch_price then
    est.price_per_1m_tokens_batch = batch_price
    est.cost_usd_batch = est.tokens / 1e6 * batch_price
    if est.sampled then est.cost_usd_batch_low, est.cost_usd_batch_high = low / 1e6 * batch_price, high / 1e6 * batch_price end
  end
  est.embed_mode = plan.embed and plan.embed.mode or "online"
  if not price then
    est.cost_note = ("sem preço configurado para o modelo %q em provider.price_per_1m_tokens"):format(cfg.provider.model)
  end
  est.duration_s = M.estimate_duration_s(est.requests, est.tokens, plan, cfg)
  return est
end

-- Opens the read-only session (read-only by PostgreSQL itself): one
-- read-only transaction for the whole simulation, in a session whose
-- default is read-only too, confirmed by the server before going on.
-- Returns conn or nil, exit code, err.
function M.open_read_only(cfg)
  local conn, cerr = store_target.connect(cfg)
  if not conn then return nil, exit.unreachable, cerr end
  for _, sql in ipairs({ "set client_min_messages = warning", "set default_transaction_read_only = on",
                         "begin transaction isolation level repeatable read read only",
                         "select current_setting('transaction_read_only') = 'on' as read_only" }) do
    local rows, err = conn:query(sql)
    if not rows or (rows[1] and rows[1].read_only == false) then
      conn:close()
      return nil, exit.unreachable, "não foi possível abrir a sessão somente leitura: "
        .. tostring(err or "o servidor não confirmou a transação somente leitura")
    end
  end
  return conn
end

-- The Store of a dry run (ragops.store.contract, whole) over the read-only
-- session: reads go to the real store, writes record what they would do
-- and write nothing (counts come back; `tally` gets { scanned, totals,
-- batches } per entity type, write_attempt = the first write PostgreSQL
-- refused). coltype: the target's embedding column type, nil when the
-- target does not exist yet (nothing stored: every count is 0).
local DryStore = {}
DryStore.__index = DryStore

function M.dry_store(conn, s, cfg, coltype, tally)
  local pool = single_connection_pool(conn, s)
  local real = store_pg.new { pool = pool, table = cfg.database.table, embedding_type = coltype or "real[]",
                              model = cfg.provider.model, dim = cfg.provider.dim }
  return setmetatable({ pool = pool, real = real, coltype = coltype, tally = tally, runs = {}, dropped = {},
                        target = sqlname.quote_table(cfg.database.table) }, DryStore)
end

-- A count over the target (0 when it does not exist), or nil, err, sqlstate.
function DryStore:count(sql, ...)
  if not self.coltype then return 0 end
  local rows, err, state = store_pg.query(self.pool, sql, ...)
  if not rows then self.tally:note_state(err, state); return nil, err, state end
  return rows[1].n
end

-- ---- reads: the real store's, at most MAX_SCAN_ROWS rows per source ----

function DryStore:fetch_page(source, scope, after_key, limit, upto_key)
  local t, scanned = source.entity_type, self.tally.scanned
  if (scanned[t] or 0) >= M.MAX_SCAN_ROWS then return {} end
  local rows, err, state = self.real:fetch_page(source, scope, after_key, limit, upto_key)
  if not rows then self.tally:note_state(err, state); return nil, err, state end
  scanned[t] = (scanned[t] or 0) + #rows
  return rows
end

-- The plain page, without what the target holds (existing nil: the runner
-- asks existing_hashes, which works before the target exists).
function DryStore:fetch_page_existing(source, scope, after_key, limit, upto_key)
  local rows, err, state = self:fetch_page(source, scope, after_key, limit, upto_key)
  if not rows then return nil, err, state end
  return rows, nil, nil, nil
end

function DryStore:add_stored(entity_type, ids, existing, updated_at)
  if not self.coltype then return true end
  return self.real:add_stored(entity_type, ids, existing, updated_at)
end

function DryStore:load_fingerprints(entity_type)
  if not self.coltype then return pg.fpset() end
  return self.real:load_fingerprints(entity_type)
end

function DryStore:existing_hashes(entity_type, ids)
  if not self.coltype then return {} end
  return self.real:existing_hashes(entity_type, ids)
end

function DryStore:present_keys(source, ids) return self.real:present_keys(source, ids) end
function DryStore:rows_by_key(source, ids) return self.real:rows_by_key(source, ids) end
function DryStore:key_census(source, scope) return self.real:key_census(source, scope) end
function DryStore:indexed_entities(entity_type)
  if not self.coltype then return 0 end
  return self.real:indexed_entities(entity_type)
end

-- The markers only decide what a write sets and clears, and a dry run
-- writes none: it neither reads them (a target migrated before them works)
-- nor deletes them.
function DryStore:has_no_document() return false end
function DryStore:no_document_markers() return {} end
function DryStore:delete_orphan_markers() return 0 end

-- ---- writes: what would be written, counted ----

function DryStore:write_unit(unit)
  local docs, batches = 0, self.tally.batches
  for _, part in ipairs(unit.parts) do docs = docs + #part.docs end
  if docs > 0 then batches[unit.entity_type] = (batches[unit.entity_type] or 0) + 1 end
  local pruned = 0
  if #unit.chunk_counts.entity_ids > 0 then
    local n, err, state = self:count(([[select count(*) as n from %s d
        join unnest($2::text[], $3::int[]) as x(entity_id, n) on d.entity_id = x.entity_id
       where d.entity_type = $1 and d.chunk_index >= x.n]]):format(self.target),
      unit.entity_type, unit.chunk_counts.entity_ids, unit.chunk_counts.counts)
    if not n then return nil, err, state end
    pruned = n
  end
  return { written = docs, pruned = pruned, refreshed = 0, resolved = 0 }
end

function DryStore:delete_orphans(source)
  return self:count(("select count(*) as n from %s d where d.entity_type = $1 and %s")
    :format(self.target, store_pg.absent_from_source(source, "d")), source.entity_type)
end

function DryStore:delete_entities(_, entity_type, ids)
  return self:count(("select count(*) as n from %s where entity_type = $1 and entity_id = any($2::text[])")
    :format(self.target), entity_type, ids)
end

-- ---- the run record: a dry run creates none in ragops_runs ----

-- A local record (self.runs), never resumed: run_id, {}, false, false.
function DryStore:start_run(plan_name, params_json)
  self.runs[#self.runs + 1] = { plan = plan_name, params = params_json, status = "running" }
  return #self.runs, {}, false, false
end
function DryStore:keep_run() end
function DryStore:finish_run(run_id, status, report_json)
  local run = self.runs[run_id]
  if not run then return nil, "execução " .. tostring(run_id) .. " não encontrada" end
  if status then run.status, run.report = status, report_json end
  return 0
end
function DryStore:committed_totals() return {} end
function DryStore:open_failures() return 0 end
function DryStore:run_billed_tokens() return 0 end
function DryStore:record_dropped(run_id, entity_type, usage)
  self.dropped[#self.dropped + 1] = { run_id = run_id, entity_type = entity_type, usage = usage }
  return true
end

-- ---- the session: the read-only one ----

function DryStore:query(sql, ...)
  local rows, err, state = store_pg.query(self.pool, sql, ...)
  if not rows then self.tally:note_state(err, state) end
  return rows, err, state
end

-- fn(step, conn) under a savepoint of the session's read-only transaction
-- (a begin/commit would end it). Returns fn's result or nil, err, sqlstate.
function DryStore:transaction(fn)
  return self.pool:with(function(conn)
    local res, err, state = store_pg.transaction(conn, fn, store_pg.SAVEPOINT)
    if err then self.tally:note_state(err, state) end
    return res, err, state
  end)
end

-- One session, no retries: nothing to wind down.
function DryStore:wind_down() end

-- What a dry run counts: rows read per type, SQL totals per type, batches
-- per type, and the first write PostgreSQL refused (the plan tried to write).
function M.new_tally()
  local tally = { scanned = {}, totals = {}, batches = {}, write_attempt = nil }
  function tally:note_state(err, state)
    if state == M.READ_ONLY_VIOLATION and not self.write_attempt then self.write_attempt = err end
  end
  return tally
end

-- Volume per source with one count(*) each (filters pushed down) into
-- tally.totals. Returns true or nil, exit code, err.
local function count_sources(conn, p, tally)
  for _, source in ipairs(pipeline.selected_sources(p)) do
    local sql, sql_params = store_pg.source_query(source, p.scope, nil, nil, "count(*) as n")
    local rows, err, state = conn:query(sql, unpack(sql_params))
    if not rows then
      tally:note_state(err, state)
      if tally.write_attempt then
        return nil, exit.usage, ("simulação: o plano tentou gravar no banco ao ler a fonte %q: %s")
          :format(source.entity_type, tostring(tally.write_attempt))
      end
      return nil, exit.unreachable, ("falha ao contar a fonte %q: %s"):format(source.entity_type, tostring(err))
    end
    tally.totals[source.entity_type] = rows[1].n
  end
  return true
end

-- The provider's bill in the most recent runs of this model, per entity
-- type: the newest runs until their sample reaches the minimum (or all of
-- them), added up (ragops_token_usage; none before `ragops migrate`
-- created it). { [entity_type] = { run_id (newest), first_run_id, runs,
-- documents, bytes, tokens } }.
local function read_calibration(conn, model)
  local exists = conn:query("select to_regclass('ragops_token_usage') is not null as ok")
  if not exists or not exists[1].ok then return {} end
  local rows = conn:query([[
    with u as (
      select entity_type, run_id, documents, bytes, tokens,
             coalesce(sum(documents) over w, 0) as documents_before, coalesce(sum(bytes) over w, 0) as bytes_before
        from ragops_token_usage where model = $1 and tokens > 0 and bytes > 0
      window w as (partition by entity_type order by run_id desc rows between unbounded preceding and 1 preceding))
    select entity_type, max(run_id) as run_id, min(run_id) as first_run_id, count(*)::int as runs,
           sum(documents)::bigint as documents, sum(bytes)::bigint as bytes, sum(tokens)::bigint as tokens
      from u where documents_before < $2 and bytes_before < $3
     group by entity_type]], model, M.CALIBRATION_MIN_DOCUMENTS, M.CALIBRATION_MIN_BYTES) or {}
  local out = {}
  for _, r in ipairs(rows) do out[r.entity_type] = r end
  return out
end

-- A dry run's counters of tokens and requests are what its estimator saw
-- of the rows it read: the report shows the estimate's instead (one
-- computation, M.build_estimate: the token basis and the extrapolation).
local function use_estimate_totals(stats)
  local est = stats.estimate
  stats.tokens, stats.requests = est.tokens, est.requests
  for entity_type, c in pairs(stats.per_entity_type) do
    local item = est.per_entity_type[entity_type]
    if item then c.tokens, c.requests = item.tokens, item.requests end
  end
end

-- An estimate over the budget is refused like the run would be (code 3).
local function over_budget(p, stats)
  local e = stats.estimate
  local cost = p.embed.mode == "batch" and e.cost_usd_batch or e.cost_usd
  if not p.budget or cost <= p.budget.usd then return nil end
  return ("a estimativa de custo (%s%s) passa do orçamento de %s: aumente --budget-usd ou reduza o recorte")
    :format(report.format_usd(cost), p.embed.mode == "batch" and ", na API de lotes" or "", report.format_usd(p.budget.usd))
end

-- The dry run's report: the runner's counters become what *would* happen
-- (nothing was written) and the estimate. Returns the exit code.
local function finish(p, cfg, opts, stats, tally)
  local code = exit.ok
  if stats.aborted then
    code = stats.aborted.code
    stats.abort_reason = stats.aborted.reason
  end
  stats.aborted = nil
  stats.plan = p.name
  stats.dry_run = true
  stats.limits = params_mod.limits(p, cfg)
  stats.status = code == exit.ok and "dry_run" or "aborted"
  stats.estimate = M.build_estimate(stats, tally.totals, tally.scanned, tally.batches, p, cfg, tally.calibration)
  use_estimate_totals(stats)
  local budget_err = over_budget(p, stats)
  if budget_err and code == exit.ok then
    code, stats.abort_reason, stats.status = exit.alert, budget_err, "aborted"
    log.error("%s", budget_err)
  end
  -- Failing documents: not a clean simulation, for a CI gate as for a run (1).
  if code == exit.ok and stats.failed > 0 then code = exit.dead_letters end
  stats.would = { embedded = stats.embedded, deleted = stats.deleted, succeeded = stats.succeeded }
  stats.embedded, stats.deleted, stats.succeeded = 0, 0, 0
  for _, c in pairs(stats.per_entity_type) do c.embedded, c.deleted, c.succeeded = 0, 0, 0 end
  return report_html.emit(stats, opts, report.emit(stats, opts, code))
end

-- Simulates loaded plan p under cfg. Returns the exit code.
function M.run(p, cfg, opts)
  local conn, ocode, oerr = M.open_read_only(cfg)
  if not conn then return exit.fail(ocode, "%s", oerr) end
  local coltype = migrate.embedding_column(conn, cfg.database.table)
  local date_ok, date_err = store_target.check_date_range(conn, p.scope)
  if not date_ok then conn:close(); return exit.fail(exit.usage, "%s", date_err) end
  local sql_ok, qcode, qerr = store_target.check_sources(function(sql) return conn:query(sql) end, p,
    pipeline.selected_sources(p))
  if not sql_ok then conn:close(); return exit.fail(qcode, "%s", qerr) end
  local s, tally = sched.real(), M.new_tally()
  local dry = M.dry_store(conn, s, cfg, coltype, tally)
  local counted, ccode, cerr = count_sources(conn, p, tally)
  if not counted then conn:close(); return exit.fail(ccode, "%s", cerr) end
  tally.calibration = read_calibration(conn, cfg.provider.model)

  log.context { plan = p.name, dry_run = true }
  log.info("simulação (dry-run) do plano %q: sessão somente leitura, sem chamadas de embedding", p.name)
  local env = {
    sched = s, store = dry, embedder = estimator(cfg.provider.dim, dialects.limits(cfg.provider)), log = log, run_id = nil,
    model = cfg.provider.model, dim = cfg.provider.dim, hash = core.hash,
  }
  local stats = pipeline.run(p, env)
  conn:query("rollback")
  conn:close()
  if tally.write_attempt then
    return exit.fail(exit.usage, "simulação: o plano tentou gravar no banco, o que é proibido em --dry-run: %s",
      tostring(tally.write_attempt))
  end
  return finish(p, cfg, opts, stats, tally)
end

return M
