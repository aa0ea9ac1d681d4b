-- ragops.dryrun: `--dry-run`. Runs the same plan through the same runner,
-- but in a sandbox that cannot write anywhere:
--   * one PostgreSQL session, read-only by PostgreSQL itself
--     (default_transaction_read_only + BEGIN READ ONLY, repeatable read), so
--     even a plan's own SQL cannot write;
--   * the embedding client is replaced by an estimator (tokens ~ bytes / 4);
--     no request leaves the process;
--   * writes become counts: what would be embedded, pruned and deleted.
-- Volume comes from SQL count(*) per source; when a source has more rows
-- than MAX_SCAN_ROWS, only that many are read through the plan (keyset
-- order) and the figures are extrapolated (estimate.sampled = true).
local config = require "ragops.config"
local log = require "ragops.log"

local M = {}

M.MAX_SCAN_ROWS = 200000
M.READ_ONLY_VIOLATION = "25006"

-- Counts an estimate of tokens the way the provider-side estimate does.
local function estimate_tokens(text)
  return math.ceil(#text / 4)
end
M.estimate_tokens = estimate_tokens

-- Embedder replacement: returns a batch-shaped object, sends nothing.
local function estimator(dim)
  local e = { calls = 0 }
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
  local sem = require("ragops.sched").semaphore(s, 1)
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

-- Builds the estimate from runner stats and the SQL counts per source.
function M.build_estimate(stats, totals, scanned, batches, plan, cfg)
  local price = config.price_per_1m(cfg)
  local est = { documents = 0, chunks = 0, tokens = 0, requests = 0, batches = 0,
                skipped_unchanged = 0, deletions = 0, per_entity_type = {}, sampled = false,
                price_per_1m_tokens = price }
  for entity_type, c in pairs(stats.per_entity_type) do
    local total, seen = totals[entity_type] or c.processed, scanned[entity_type] or c.processed
    local factor = 1
    if seen > 0 and total > seen then factor = total / seen; est.sampled = true end
    local function scaled(v) return math.floor(v * factor + 0.5) end
    local item = {
      documents = total, chunks = scaled(c.chunks), tokens = scaled(c.tokens),
      requests = scaled(c.requests), batches = scaled(batches[entity_type] or 0),
      skipped_unchanged = scaled(c.skipped), would_embed = scaled(c.embedded),
      deletions = c.deleted,
    }
    est.per_entity_type[entity_type] = item
    for _, k in ipairs({ "documents", "chunks", "tokens", "requests", "batches",
                         "skipped_unchanged", "deletions" }) do
      est[k] = est[k] + item[k]
    end
  end
  est.cost_usd = price and est.tokens / 1e6 * price or 0
  if not price then
    est.cost_note = ("sem preço configurado para o modelo %q em provider.price_per_1m_tokens"):format(cfg.provider.model)
  end
  est.duration_s = M.estimate_duration_s(est.requests, est.tokens, plan, cfg)
  return est
end

function M.run(p, cfg, opts, params)
  local EXIT = require("ragops.engine").EXIT
  local engine = require "ragops.engine"
  local pg = require "ragops.pg"
  local sched = require "ragops.sched"
  local store_pg = require "ragops.store_pg"
  local runner = require "ragops.runner"
  local s = sched.real()

  local conn, cerr = engine.connect(cfg)
  if not conn then
    io.stderr:write("ragops: " .. cerr .. "\n")
    return EXIT.unreachable
  end
  local function q(sql, ...)
    local rows, err, state = conn:query(sql, ...)
    if not rows then error({ err = err, state = state }, 0) end
    return rows
  end
  local ok, setup_err = pcall(function()
    q("set client_min_messages = warning")
    q("set default_transaction_read_only = on")
    q("begin transaction isolation level repeatable read read only")
  end)
  if not ok then
    conn:close()
    io.stderr:write("ragops: não foi possível abrir a sessão somente leitura: " .. tostring(setup_err.err) .. "\n")
    return EXIT.unreachable
  end

  local coltype = require("ragops.migrate").embedding_column(conn, cfg.database.table)
  local date_ok, date_err = engine.check_date_range(conn, p.scope)
  if not date_ok then
    conn:close()
    io.stderr:write("ragops: " .. date_err .. "\n")
    return EXIT.usage
  end

  local pool = single_connection_pool(conn, s)
  local real = store_pg.new { pool = pool, table = cfg.database.table,
                              embedding_type = coltype or "real[]",
                              model = cfg.provider.model, dim = cfg.provider.dim }
  local target = require("ragops.sqlname").quote_table(cfg.database.table)
  local write_attempt
  local scanned, totals, batches = {}, {}, {}
  local dry = {}

  local function note_state(err, state)
    if state == M.READ_ONLY_VIOLATION and not write_attempt then write_attempt = err end
  end

  function dry:fetch_page(source, scope, after_key, limit, upto_key)
    local t = source.entity_type
    if (scanned[t] or 0) >= M.MAX_SCAN_ROWS then return {} end
    local rows, err, state = real:fetch_page(source, scope, after_key, limit, upto_key)
    if not rows then note_state(err, state); return nil, err, state end
    scanned[t] = (scanned[t] or 0) + #rows
    return rows
  end

  function dry:existing_hashes(entity_type, ids)
    if not coltype then return {} end
    return real:existing_hashes(entity_type, ids)
  end

  local function count(sql, ...)
    if not coltype then return 0 end
    local rows, err, state = store_pg.query(pool, sql, ...)
    if not rows then note_state(err, state); return nil, err, state end
    return rows[1].n
  end

  function dry:write_unit(unit)
    local docs = 0
    for _, part in ipairs(unit.parts) do docs = docs + #part.docs end
    if docs > 0 then batches[unit.entity_type] = (batches[unit.entity_type] or 0) + 1 end
    local pruned = 0
    if #unit.chunk_counts.entity_ids > 0 then
      local n, err, state = count(([[select count(*) as n from %s d
          join unnest($2::text[], $3::int[]) as x(entity_id, n) on d.entity_id = x.entity_id
         where d.entity_type = $1 and d.chunk_index >= x.n]]):format(target),
        unit.entity_type, unit.chunk_counts.entity_ids, unit.chunk_counts.counts)
      if not n then return nil, err, state end
      pruned = n
    end
    return { written = docs, pruned = pruned }
  end

  function dry:delete_orphans(source)
    return count(([[select count(*) as n from %s d where d.entity_type = $1
      and not exists (select 1 from (%s) as src where src.%s::text = d.entity_id)]])
      :format(target, source.sql, pg.quote_ident(source.key)), source.entity_type)
  end

  function dry:present_keys(source, ids) return real:present_keys(source, ids) end
  function dry:duplicate_key(source, scope) return real:duplicate_key(source, scope) end

  function dry:delete_entities(_, entity_type, ids)
    return count(("select count(*) as n from %s where entity_type = $1 and entity_id = any($2::text[])")
      :format(target), entity_type, ids)
  end


  -- Volume per source with one count(*) each (filters pushed down).
  for _, source in ipairs(runner.selected_sources(p)) do
    local sql, sql_params = store_pg.source_query(source, p.scope, nil, nil, "count(*) as n")
    local rows, err, state = conn:query(sql, unpack(sql_params))
    if not rows then
      note_state(err, state)
      conn:close()
      if write_attempt then
        io.stderr:write(("ragops: simulação: o plano tentou gravar no banco ao ler a fonte %q: %s\n")
          :format(source.entity_type, tostring(write_attempt)))
        return EXIT.usage
      end
      io.stderr:write(("ragops: falha ao contar a fonte %q: %s\n"):format(source.entity_type, tostring(err)))
      return EXIT.unreachable
    end
    totals[source.entity_type] = rows[1].n
  end

  log.info("simulação (dry-run) do plano %q: sessão somente leitura, sem chamadas de embedding", p.name)
  local env = {
    sched = s, store = dry, embedder = estimator(cfg.provider.dim), log = log, run_id = nil,
    model = cfg.provider.model, dim = cfg.provider.dim, hash = require("ragops.core").hash,
  }
  local stats = runner.run(p, env)
  conn:query("rollback")
  conn:close()

  if write_attempt then
    io.stderr:write(("ragops: simulação: o plano tentou gravar no banco, o que é proibido em --dry-run: %s\n")
      :format(tostring(write_attempt)))
    return EXIT.usage
  end
  local code = EXIT.ok
  if stats.aborted then
    code = stats.aborted.code
    stats.abort_reason = stats.aborted.reason
  end
  stats.aborted = nil
  stats.plan = p.name
  stats.dry_run = true
  stats.limits = engine.limits(p, cfg)
  stats.status = code == EXIT.ok and "dry_run" or "aborted"
  stats.estimate = M.build_estimate(stats, totals, scanned, batches, p, cfg)
  -- Nothing was written: the runner's counters are what *would* happen.
  stats.would = { embedded = stats.embedded, deleted = stats.deleted, succeeded = stats.succeeded }
  stats.embedded, stats.deleted, stats.succeeded = 0, 0, 0
  for _, c in pairs(stats.per_entity_type) do c.embedded, c.deleted, c.succeeded = 0, 0, 0 end
  return engine.print_report(stats, opts, code)
end

return M
