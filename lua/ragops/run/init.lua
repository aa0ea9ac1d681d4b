-- ragops.run: the wiring of a run (run, backfill, reindex, failures retry):
-- configuration, plan, PostgreSQL pool, storage, embedding client, alerts,
-- rate limiter, metrics, signals, log format and context, progress timer
-- (ragops.obs.progress), runner (or scale-out work units), the run record's
-- finish and the reports (text, --report-json, --report-html). `--dry-run`
-- goes to ragops.run.dryrun, which uses the same lower pieces (store_target,
-- params, report). Returns exit codes (ragops.util.exit).
local run_context = require "ragops.run.context"
local batch = require "ragops.run.batch"
local alerts_mod = require "ragops.obs.alerts"
local store_target = require "ragops.store.target"
local provider_client = require "ragops.provider.client"
local cjson = require "cjson"
local config = require "ragops.plan.config"
local core = require "ragops.core"
local dryrun = require "ragops.run.dryrun"
local exit = require "ragops.util.exit"
local http = require "ragops.http"
local log = require "ragops.obs.log"
local metrics_endpoint = require "ragops.obs.metrics_endpoint"
local metrics_mod = require "ragops.obs.metrics"
local model = require "ragops.vector.model"
local params_mod = require "ragops.plan.params"
local plan_mod = require "ragops.plan"
local pool_mod = require "ragops.store.pool"
local progress = require "ragops.obs.progress"
local report = require "ragops.report"
local run_endpoints = require "ragops.run.endpoints"
local report_html = require "ragops.report.html"
local pipeline = require "ragops.run.pipeline"
local safe_file = require "ragops.util.safe_file"
local sched = require "ragops.util.sched"
local store_pg = require "ragops.store.pg"
local workunits = require "ragops.run.workunits"

local M = {}

local fail = exit.fail

-- Signals (one process, one command): the first SIGINT/SIGTERM marks the
-- process interrupted and stops the run in progress, if any (stop_run); every
-- command that loops over runs checks `received` before the next one. The
-- bridge exits at once on a second signal.
local signals = {
  trapped = false,  -- core.trap_signals was installed
  received = nil,   -- name of the first signal ("SIGINT" | "SIGTERM")
  stop_run = nil,   -- function(name) stopping the run in progress
}

function M.trap_signals()
  if signals.trapped then return end
  signals.trapped = true
  core.trap_signals(function(name)
    signals.received = name
    log.warn("sinal %s recebido: interrompendo esperas e chamadas em andamento, descartando o lote "
      .. "em andamento e gravando o relatório (código 130); um segundo sinal encerra na hora", name)
    if signals.stop_run then signals.stop_run(name) else core.cancel_all() end
  end)
end

-- The first signal received by this process, or nil.
function M.signal_received()
  return signals.received
end

-- The longest lease of a scale-out work unit (--lease-s), in seconds.
M.MAX_LEASE_S = 86400

-- Checks, before the run starts, that the report files (--report-json,
-- --report-html) can be written the way they will be (ragops.util.safe_file:
-- a regular file or absent, in a folder that takes a new file), writing
-- nothing there. Returns true or nil, err.
function M.check_output_files(opts)
  for _, flag in ipairs({ "report-json", "report-html" }) do
    local path = opts[flag]
    if path then
      local ok, err = safe_file.probe(path)
      if not ok then
        return nil, ("--%s %s: não é possível gravar o relatório ali: %s"):format(flag, path, err)
      end
    end
  end
  return true
end

-- Option checks that need the loaded plan. Returns true or nil, err.
local function check_options(p, opts)
  local files_ok, ferr = M.check_output_files(opts)
  if not files_ok then return nil, ferr end
  local worker, werr = workunits.worker_label(opts)
  if not worker then return nil, werr end
  opts.worker_label = worker
  if opts["scale-out"] then
    local flag = opts.join and "--join" or "--scale-out"
    if opts["dry-run"] then return nil, flag .. " não combina com --dry-run" end
    if p.limit then return nil, flag .. " não combina com --limit (a execução de sanidade é de um processo só)" end
    if p.scope and p.scope.entity_ids then
      return nil, flag .. " não combina com --entity-id (poucas entidades não se dividem entre processos)"
    end
  end
  local lease = opts["lease-s"]
  local lease_s = lease and lease:match("^%d+%.?%d*$") and tonumber(lease)
  if lease and not (lease_s and lease_s >= 1 and lease_s <= M.MAX_LEASE_S) then
    return nil, ("--lease-s espera um número decimal de segundos entre 1 e %d, recebi %q"):format(M.MAX_LEASE_S, lease)
  end
  if p.embed.mode == "batch" and opts["scale-out"] then
    return nil, "--scale-out não combina com embed.mode = \"batch\" (os lotes de uma execução são de um processo só)"
  end
  if opts.detach and p.embed.mode ~= "batch" then return nil, "--detach só vale com --embed-mode batch" end
  if #p.sources == 0 then
    return nil, ("o plano %q não tem fontes para indexar; planos de operação como "
      .. "plans/create_index.lua são lidos por `ragops index create`, não por `ragops run`"):format(p.name)
  end
  return true
end

-- The target's checks on conn: { coltype } or { err, code } (a refusal);
-- nil, err when the session was lost on the way (ragops.store.pool retries it).
local function check_target(conn, cfg, p)
  local coltype, terr, code = store_target.check_target(conn, cfg)
  if coltype then
    local ok, merr, mcode = model.check_table_model(conn, cfg, p.mode)
    if not ok then coltype, terr, code = nil, merr, mcode end
  end
  if coltype then
    local ok, derr = store_target.check_date_range(conn, p.scope)
    if not ok then coltype, terr, code = nil, derr, exit.usage end
  end
  if coltype then return { coltype = coltype } end
  if not conn:is_ok() then return nil, terr end
  return { err = terr, code = code }
end

-- Opens the pool and checks the target (its model too: ragops.vector.model), the
-- date range and then the SQL of the plan's selected sources
-- (ragops.store_target.check_sources), under the database retry policy (a
-- database that cannot be reached at all at the start fails at once):
-- nothing is recorded before PostgreSQL accepted it. Returns pool,
-- embedding column type or nil, exit code, err.
local function open_target(cfg, p, s)
  local pool = pool_mod.new {
    conninfo = cfg.database.url, sched = s,
    size = math.max(cfg.database.pool_size, p.batch.in_flight + 2), log = log,
  }
  local conn, cerr = pool:acquire()
  if not conn then return nil, exit.unreachable, store_target.connect_error(cfg, cerr) end
  pool:release(conn)
  local checked, err = pool:with(function(c) return check_target(c, cfg, p) end)
  if not checked then checked = { err = store_target.connect_error(cfg, err), code = exit.unreachable } end
  if checked.coltype then
    local ok, qcode, qerr = store_target.check_sources(function(sql)
      return pool:with(function(c) return c:query(sql) end)
    end, p, pipeline.selected_sources(p))
    if not ok then checked = { err = qerr, code = qcode } end
  end
  if not checked.coltype then pool:close(); return nil, checked.code, checked.err end
  return pool, checked.coltype
end

-- Registers (or resumes, or joins) the run. A run already split into work
-- units (--scale-out) goes on through them even without the flag (its
-- prefix and units are its truth). Returns the run record { id,
-- checkpoint, resumed, how = the line that says so, logged after the
-- first one } or nil, exit code, err.
local function start_run(store, p, params, opts, fingerprint)
  local run_id, checkpoint_or_err, resumed_or_code, has_units = store:start_run(p.name,
    cjson.encode(params or {}), false, opts.resume, opts["scale-out"], core.process_id(),
    { fingerprint = fingerprint, join = opts.join })
  if not run_id then
    -- --join with no run in progress: nothing to do, nothing written (0).
    if resumed_or_code == "nothing" then return nil, exit.ok, checkpoint_or_err end
    if resumed_or_code == "busy" or resumed_or_code == "mismatch" then return nil, exit.usage, checkpoint_or_err end
    return nil, exit.unreachable, "falha ao registrar a execução: " .. tostring(checkpoint_or_err)
  end
  local how
  if resumed_or_code and opts["scale-out"] then
    how = ("participando da execução %d do plano %q (scale-out)"):format(run_id, p.name)
  elseif has_units then
    opts["scale-out"] = true
    how = ("retomando a execução %d do plano %q pelas suas unidades de trabalho (ela foi dividida com "
      .. "--scale-out); este processo segue sozinho"):format(run_id, p.name)
  elseif resumed_or_code then
    how = ("retomando a execução %d do plano %q a partir do checkpoint"):format(run_id, p.name)
  end
  return { id = run_id, checkpoint = checkpoint_or_err, resumed = resumed_or_code, how = how }
end

-- The alert webhook sender for cfg.alerts.webhook_url (nil when unset); its
-- errors never show the URL (it is a secret).
local function webhook_sender(cfg)
  local url = cfg.alerts.webhook_url
  if not url then return nil end
  return function(payload)
    local resp, herr = http.request { method = "POST", url = url,
      headers = { ["Content-Type"] = "application/json" }, timeout_ms = 5000,
      body = require("ragops.util.scrub").mask(cjson.encode(payload)) } -- leaves the process: secrets masked
    if not resp then
      local text = tostring(herr)
      local at = text:find(url, 1, true)
      if at then text = text:sub(1, at - 1) .. config.redact_webhook(url) .. text:sub(at + #url) end
      return nil, text
    end
    if resp.status >= 300 then return nil, ("HTTP %d"):format(resp.status) end
    return true
  end
end

-- The metrics registry and its writer to cfg.metrics.file (a no-op without).
local function new_metrics(cfg)
  local metrics = metrics_mod.new()
  local file = cfg.metrics.file
  local function write_metrics()
    if not file then return end
    local ok, merr = metrics:write_file(file)
    if not ok then log.warn("não foi possível gravar as métricas em %s: %s", file, tostring(merr)) end
  end
  return metrics, write_metrics
end

-- Bumped when what turns a row into documents changes in the engine
-- (chunking, content hash): every stored fingerprint then stops matching.
local FINGERPRINT_VERSION = "ragops-fp-1"

-- The seed of the source rows' fingerprints (ragops.run.stages.read): what,
-- besides the row, decides its documents: the plan's text (and the plans
-- it imports), the params it reads, the chunking, the model and the
-- dimension. nil when the plan has no digest.
local function fingerprint_seed(p, cfg, params)
  local digest = plan_mod.digest(p)
  if not digest then return nil end
  local keys = {}
  for key in pairs(plan_mod.params_read(p)) do keys[#keys + 1] = key end
  table.sort(keys)
  local parts = { FINGERPRINT_VERSION, digest, cfg.provider.model, tostring(cfg.provider.dim),
                  tostring(p.chunking.max_chars), tostring(p.chunking.overlap) }
  -- A plan's own content cap decides which rows have documents too (the
  -- default one keeps the fingerprints stored before it existed).
  if p.chunking.max_content_bytes then parts[#parts + 1] = "max_content_bytes=" .. p.chunking.max_content_bytes end
  for _, key in ipairs(keys) do
    parts[#parts + 1] = key
    parts[#parts + 1] = tostring((params or {})[key])
  end
  return core.hash(unpack(parts))
end

-- The runner's env: every part a run needs, built from cfg and the plan.
-- Also returns the parts wiring closes at the end (pool, client, limiter,
-- alerts, write_metrics).
local function build_env(p, cfg, s, pool, coltype, params)
  local limits = params_mod.limits(p, cfg)
  local providers = run_endpoints.build(cfg, s, log, p.batch.in_flight, limits.timeout_s, pool)
  local store = store_pg.new { pool = pool, table = cfg.database.table, embedding_type = coltype,
                               model = cfg.provider.model, dim = cfg.provider.dim }
  local metrics, write_metrics = new_metrics(cfg)
  local alerts = alerts_mod.new {
    config = p.alerts, now = s.now, sleep = s.sleep, spawn = s.spawn, log = log,
    metrics = metrics, webhook = webhook_sender(cfg), plan = p.name,
  }
  local env = {
    sched = s, store = store, embedder = providers.list[1].client, endpoints = providers, log = log,
    model = cfg.provider.model, dim = cfg.provider.dim, hash = core.hash, alerts = alerts, metrics = metrics,
    spent = { requests = 0 }, fingerprint = fingerprint_seed(p, cfg, params),
    -- The spend budget (stages.embed stops before it would be passed).
    budget_usd = p.budget and p.budget.usd, price_per_1m_tokens = config.price_per_1m(cfg),
  }
  return env, { pool = pool, client = providers, write_metrics = write_metrics }
end

-- Starts the run's background work: the lease keeper of the run record,
-- the signal hook, the metrics file writer and the progress timer. Returns
-- the state the end of the run reads ({ running, interrupted }).
local function start(env, cfg, parts)
  local s, state = env.sched, { running = true, interrupted = false }
  -- The provider's quota, shared with every other process on the same endpoints.
  run_endpoints.start(env.endpoints, core.process_id())
  -- Scale-out processes count their requests on their work units instead.
  env.store:keep_run { sched = s, spent = not env.scale_out and function() return env.spent.requests end or nil,
    on_lost = function(reason) if env.stop then env.stop(exit.unreachable, reason) end end }
  -- Stops this run: alerts stop pausing, the runner stops taking work, and
  -- every wait (backoff, pause between rounds, query, embedding call) ends now.
  signals.stop_run = function(name)
    state.interrupted = true
    env.alerts:stop()
    if env.stop then env.stop(exit.interrupted, "interrompido pelo operador (" .. name .. ")") end
    s.stop()
  end
  if signals.received then signals.stop_run(signals.received) end
  -- The Prometheus endpoint lives as long as the run (a busy port: a warning).
  parts.endpoint = metrics_endpoint.start_run(parts.metrics_settings, env.metrics, log,
    function() return not signals.received, signals.received and "execução interrompida\n" or nil end)
  if cfg.metrics.file then
    s.spawn(function()
      while state.running do
        parts.write_metrics()
        s.sleep(10000)
      end
    end)
  end
  -- Progress on a timer: it shows while every worker waits on the provider.
  state.progress = progress.new { log = log, tty = not log.quiet and core.isatty(2), follower = parts.follower }
  s.spawn(function()
    local every = cfg.log.progress_every_s * 1000
    while state.running do
      s.sleep(every)
      if state.running and env.progress_snapshot then state.progress.tick(env.progress_snapshot()) end
    end
  end)
  return state
end

-- Runs the plan through the runner (or the scale-out work units) under
-- xpcall; an internal error becomes an aborted run with exit code 2.
-- Returns stats, run totals and the requests its work units sent
-- (scale-out, when this process finished the run).
local function execute(p, env, opts, pool)
  local ok, stats, run_totals, sent = xpcall(function()
    if opts["scale-out"] then
      return workunits.run(p, env, {
        pool = pool, run_id = env.run_id, owner = core.process_id(), lease_s = tonumber(opts["lease-s"]),
        worker = opts.worker_label,
      })
    end
    return pipeline.run(p, env)
  end, debug.traceback)
  if ok then return stats, run_totals, sent end
  log.error("erro interno durante a execução %d: %s", env.run_id, tostring(stats))
  local failed = { aborted = { code = exit.internal, reason = "erro interno: " .. tostring(stats):match("^[^\n]*") } }
  for _, k in ipairs(pipeline.COUNTER_KEYS) do failed[k] = 0 end
  failed.per_entity_type = {}
  return failed
end

-- The exit code and the run record's status of a finished run; moves the
-- abort reason into stats.abort_reason. open = the run's open dead letters
-- (the failures queue is the truth: exit 1 iff the run leaves any; nil
-- when it could not be read: the run's failure count instead).
local function outcome(stats, state, open)
  local code, status = exit.ok, "done"
  if state.interrupted then
    code, status = exit.interrupted, "interrupted"
    stats.abort_reason = "interrompido pelo operador (" .. signals.received .. ")"
  elseif stats.aborted then
    code = stats.aborted.code
    status = code == exit.usage and "failed" or "aborted"
    stats.abort_reason = stats.aborted.reason
  elseif stats.batch_waiting then
    code, status = exit.ok, "waiting" -- --detach: its batches at the provider, collected by a later run
  elseif (open or stats.failed) > 0 then
    code, status = exit.dead_letters, "done_with_failures"
  end
  stats.aborted = nil
  stats.status = status
  return code, status
end

-- The run's open dead letters, or nil when they could not be read.
local function open_failures(store, run_id)
  local n, err = store:open_failures(run_id)
  if not n then
    log.warn("não foi possível contar as falhas em aberto da execução %d: %s", run_id, tostring(err))
  end
  return n
end

-- The spend of the run from the tokens the database says the provider
-- billed to it (every process and attempt; tokens when unknown).
local function run_spend(env, run_id, tokens)
  if not env.price_per_1m_tokens then return nil end
  local billed = env.store:run_billed_tokens(run_id)
  return report.spend({ tokens = billed or tokens }, env.price_per_1m_tokens, env.budget_usd)
end

-- Writes the run record's end for a scale-out process. The one that
-- finished the run records the totals (this process's share is in its
-- report; both have them, in scale_out.run_totals); the others release
-- it; one that stops early leaves the run open: its units are free for the
-- other processes (or a re-run). Returns the exit code.
local function record_scale_out(env, stats, run_totals, sent, code)
  local store = env.store
  stats.scale_out = { finished_run = run_totals ~= nil, run_totals = run_totals }
  if not run_totals then
    local base = store:finish_run(stats.run_id, nil, nil)
    local units = workunits.requests_sent(store.pool, stats.run_id)
    stats.requests_spent = base and units and base + units or nil
    return code
  end
  local open = open_failures(store, stats.run_id)
  local run_status = (open or run_totals.failed) > 0 and "done_with_failures" or "done"
  run_totals.plan, run_totals.run_id, run_totals.status = stats.plan, stats.run_id, run_status
  run_totals.dry_run, run_totals.spend = false, stats.spend
  run_totals.requests_spent = store:finish_run(stats.run_id, run_status, report.json(run_totals), sent)
  stats.requests_spent = run_totals.requests_spent
  if code == exit.ok and run_status == "done_with_failures" then code = exit.dead_letters end
  return code
end

-- Writes the run record's end. Returns the exit code.
local function record_finish(env, stats, run_totals, sent, code, status, opts)
  if not opts["scale-out"] then
    stats.requests_spent = env.store:finish_run(stats.run_id, status, report.json(stats))
    return code
  end
  return record_scale_out(env, stats, run_totals, sent, code)
end

-- A run's counters from what it committed (the database's checkpoint and
-- units past it), plus what the process did beyond units (deletions,
-- spend of dropped units): a commit its client gave up on at a signal
-- counts, units never written do not (ragops.run.context rebase).
local function from_committed(env, stats, interrupted)
  local booked = stats.booked
  if not booked then return end
  local committed, err = env.store:committed_totals(stats.run_id, interrupted)
  if not committed then
    log.warn("não foi possível ler o que a execução %d gravou: %s", stats.run_id, tostring(err))
    return
  end
  run_context.rebase(stats, booked, committed)
end

-- Adds what the HTML report draws to stats: the progress series, the
-- embedding latency and requests per status (from the metrics), the
-- run's open dead letters per error class (one query) and the estimate of
-- the dry-run given with --estimate-json.
local function observability_fields(env, state, stats, opts)
  state.progress.finish(env.progress_snapshot and env.progress_snapshot())
  stats.series = state.progress.series
  stats.embed_latency = env.metrics:histogram_totals("ragops_embed_latency_seconds")
  stats.requests_by_status = env.metrics:counter_by_label("ragops_embed_requests_total", "status")
  local rows = env.store:query([[select error_class, count(*) as n from ragops_failures
    where run_id = $1 and resolved_at is null group by error_class order by error_class]], stats.run_id)
  stats.failures_by_class = {}
  for _, r in ipairs(rows or {}) do stats.failures_by_class[r.error_class] = tonumber(r.n) end
  if opts["estimate-json"] then stats.previous_estimate = report_html.read_estimate(opts["estimate-json"], log) end
end

-- Ends the run: report fields, the run record, the closing of the pool and
-- the client, the final metrics. A run of the runner (run.committed)
-- reports what it committed and its exit code follows its open dead
-- letters. Returns the exit code.
local function finish(p, cfg, env, parts, run, stats, run_totals, state, opts, sent)
  stats.plan, stats.run_id, stats.dry_run, stats.resumed = p.name, run.id, false, run.resumed or nil
  stats.rate_limit = env.endpoints:stats()
  stats.limits = params_mod.limits(p, cfg)
  -- Stopped by a dependency that gave up (or an internal error): the run's
  -- record gets a single attempt, no waits (ragops.store.pool wind_down).
  local aborted = stats.aborted
  if aborted and (aborted.code ~= exit.alert or aborted.halt) then parts.pool:wind_down() end
  run_endpoints.stop(env.endpoints)
  local open
  if run.committed then
    if not opts["scale-out"] then from_committed(env, stats, state.interrupted) end
    stats.spend = run_spend(env, run.id, stats.tokens)
    open = not stats.aborted and not state.interrupted and open_failures(env.store, run.id) or nil
  else
    stats.spend = report.spend(stats, env.price_per_1m_tokens, env.budget_usd)
  end
  local code, status = outcome(stats, state, open)
  observability_fields(env, state, stats, opts)
  code = record_finish(env, stats, run_totals, sent, code, status, opts)
  parts.pool:close()
  parts.client:close()
  env.metrics:gauge("ragops_run_in_progress", nil, { plan = p.name }):set(0)
  env.metrics:gauge("ragops_last_run_timestamp_seconds", nil, { plan = p.name, status = status }):set(os.time())
  parts.write_metrics()
  metrics_endpoint.finish_run(parts.endpoint, parts.metrics_settings, env.metrics, p.name, log)
  code = report.emit(stats, opts, code, report.json(stats))
  return report_html.emit(stats, opts, code)
end

-- The Lua collector's pause: how far (in % of the heap live after a cycle)
-- the heap grows before the next one. From in_flight 32 on, many units are
-- alive at once and collecting sooner holds the peak memory down; below it
-- the CPU is what bounds a run. Why 150 (measurements): docs/desempenho.md,
-- "Pausa do coletor".
local function tune_gc(in_flight)
  collectgarbage("setpause", in_flight >= 32 and 150 or 200)
end

-- The Batch API mode (ragops.run.batch) when the plan asks for it, or when
-- the run resumed has batches not collected (a resume without
-- --embed-mode batch must not leave them behind). Returns nil, or an exit
-- code and the pt-BR reason.
local function with_batches(p, cfg, env, opts, run)
  if p.embed.mode ~= "batch" then
    local open = run.resumed and batch.open_parts(env.store, run.id)
    if not open or open == 0 then return nil end
    if opts["scale-out"] then
      return exit.usage, ("a execução %d tem %d parte(s) da API de lotes por coletar, e os lotes de uma execução são "
        .. "de um processo só: colete-as sem --scale-out (ragops batch collect --plan %s)"):format(run.id, open, p.name)
    end
    log.warn("a execução %d tem %d parte(s) da API de lotes por coletar: ela segue no modo de lotes "
      .. "(embed.mode = \"batch\") para coletá-las", run.id, open)
  end
  local session, berr = batch.for_run(p, cfg, env, opts)
  if not session then return exit.usage, berr end
  env.batch, env.price_per_1m_tokens = session, config.price_per_1m_batch(cfg)
  log.info("modo de lotes: partes JSONL em %s, enviadas à %s; preço de lote %s por 1M de tokens",
    session.dir, session.api:describe(),
    env.price_per_1m_tokens and ("US$ " .. report.format_number(env.price_per_1m_tokens, 4)) or "desconhecido")
  return nil
end

-- Runs loaded plan p for real (not --dry-run). Returns the exit code.
local function run_loaded(p, cfg, opts, params)
  local metrics_settings, mserr = metrics_endpoint.settings(cfg.metrics, opts)
  if not metrics_settings then return fail(exit.usage, "%s", mserr) end
  local s = sched.real()
  local pool, code, err = open_target(cfg, p, s)
  if not pool then return fail(code, "%s", err) end
  local env, parts = build_env(p, cfg, s, pool, code, params)
  parts.metrics_settings = metrics_settings
  local checked, verr = run_endpoints.verify(env.endpoints, cfg, log)
  if not checked then pool:close(); parts.client:close(); return fail(exit.usage, "%s", verr) end
  local run, rcode, rerr = start_run(env.store, p, params, opts, env.fingerprint)
  if not run then
    pool:close(); parts.client:close()
    if rcode == exit.ok then log.info("%s", rerr); return rcode end
    return fail(rcode, "%s", rerr)
  end
  local bcode, berr = with_batches(p, cfg, env, opts, run)
  if bcode then
    env.store:finish_run(run.id, nil, nil)
    pool:close(); parts.client:close()
    return fail(bcode, "%s", berr)
  end
  env.run_id, env.checkpoint, env.scale_out, run.committed = run.id, run.checkpoint, opts["scale-out"], true
  -- The run's spend so far (earlier processes included): the budget's base.
  if env.price_per_1m_tokens then env.budget_base = env.store:run_billed_tokens(run.id) end
  log.context { run_id = run.id, plan = p.name }
  log.info("execução %d do plano %q iniciada (%s, modelo %s, dim %d, %s)%s",
    run.id, p.name, provider_client.describe(cfg), cfg.provider.model, cfg.provider.dim,
    report.format_limits(params_mod.limits(p, cfg)), opts["scale-out"] and "; com --scale-out, os limites de "
      .. "taxa (provider.rate_limits) são divididos entre os processos pelo PostgreSQL" or "")
  if run.how then log.info("%s", run.how) end
  env.metrics:gauge("ragops_run_in_progress", nil, { plan = p.name }):set(1)
  tune_gc(params_mod.limits(p, cfg).in_flight)
  local state = start(env, cfg, parts)
  local stats, run_totals, sent = execute(p, env, opts, pool)
  signals.stop_run = nil
  state.running = false
  return finish(p, cfg, env, parts, run, stats, run_totals, state, opts, sent)
end

-- Runs plan p (loaded by ragops.cli.prelude under cfg, the configuration
-- of the --target's table, log settings applied; params: the run's
-- identity, without batch.* and retry.*): checks the options and runs it (or
-- simulates it with --dry-run). Returns the exit code.
function M.loaded_plan(p, params, cfg, opts)
  local ok, oerr = check_options(p, opts)
  if not ok then return fail(exit.usage, "%s", oerr) end
  local price = p.embed.mode == "batch" and config.price_per_1m_batch(cfg) or config.price_per_1m(cfg)
  if p.budget and not price then
    return fail(exit.usage, "um orçamento (--budget-usd ou budget.usd no plano) exige o preço do modelo %q "
      .. "em provider.price_per_1m_tokens%s", cfg.provider.model,
      p.embed.mode == "batch" and " ou provider.price_per_1m_tokens_batch" or "")
  end
  if opts["dry-run"] then return dryrun.run(p, cfg, opts) end
  return run_loaded(p, cfg, opts, params)
end

-- The pieces of a run's wiring that ragops.sync (a follower is a run with
-- another reader) uses as they are.
M.wiring = { open_target = open_target, build_env = build_env, verify_endpoints = run_endpoints.verify,
             start = start, finish = finish }

-- Forgets the run in progress for the signal handler (the run has ended).
function M.run_ended() signals.stop_run = nil end

return M
