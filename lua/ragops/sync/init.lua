-- ragops.sync: `ragops sync [PLANO.lua] [--follow]`. A follower is a run
-- of the plan whose read stage is ragops.sync.changes (the source's
-- changes, not a full scan), through the same runner workers, stores,
-- retry, dead letters, alerts and metrics as a backfill (ragops.run's
-- wiring). It registers in ragops_runs as plan "sync:<plano>" with params
-- { follower = <id> } (one follower per host by default; --follower names
-- another), kept by the run record's heartbeat, so `ragops status` shows it
-- and a dead follower's claims are freed with its session. Without --follow
-- it applies the pending changes once and ends; with --follow it LISTENs on
-- ragops_sync and applies changes as they arrive (draining the queue on
-- start, after a reconnect and every sync.drain_every_s; watermark sources
-- every sync.poll_s), until SIGINT/SIGTERM.
local changes = require "ragops.sync.changes"
local cjson = require "cjson"
local core = require "ragops.core"
local exit = require "ragops.util.exit"
local instruments = require "ragops.obs.instruments"
local log = require "ragops.obs.log"
local metrics_endpoint = require "ragops.obs.metrics_endpoint"
local pg = require "ragops.pg"
local run = require "ragops.run"
local pipeline = require "ragops.run.pipeline"
local sched = require "ragops.util.sched"
local sqlname = require "ragops.util.sqlname"
local store_runs = require "ragops.store.runs"
local sync_queue = require "ragops.sync.queue"
local sync_tables = require "ragops.store.sync_tables"
local sync_watermark = require "ragops.sync.watermark"

local M = {}

local fail = exit.fail
M.RECONNECT_MS = { first = 250, max = 5000 }

-- The plan's sources with a sync strategy (nil, err when none).
function M.sync_sources(p)
  local out = {}
  for _, source in ipairs(pipeline.selected_sources(p)) do
    if source.sync then out[#out + 1] = source end
  end
  if #out == 0 then
    return nil, ('o plano %q não tem fontes com sync = { strategy = ... }; veja docs/sincronizacao.md'):format(p.name)
  end
  return out
end

-- The sync sources of p, with the report files checked. Returns sources or
-- nil, err.
local function check(p, opts)
  local sources, serr = M.sync_sources(p)
  if not sources then return nil, serr end
  local files_ok, ferr = run.check_output_files(opts)
  if not files_ok then return nil, ferr end
  return sources
end

-- Applies every source's pending changes once (trigger: the queue until
-- empty; watermark: one pass, and the anti-join of deletions when due).
local function apply_once(ctx, sources, how)
  for _, source in ipairs(sources) do
    if ctx:halted() then return end
    ctx:counters_for(source.entity_type)
    if source.sync.strategy == "trigger" then
      pipeline.process_units(ctx, nil, function(emit) return changes.drain_queue(ctx, source, how, emit) end)
    else
      -- One worker: units commit in order, so the watermark never passes
      -- a unit that did not commit.
      pipeline.process_units(ctx, nil, function(emit) return changes.watermark_pass(ctx, source, how, emit) end, 1)
      M.deletions(ctx, source, how)
    end
  end
  M.report_queue(ctx, sources)
end

-- The watermark strategy's deletions (paged anti-join), when due.
function M.deletions(ctx, source, how)
  if ctx:halted() then return end
  local due, err = sync_watermark.deletes_due(ctx.store, how.plan_name, source)
  if due then
    local n
    n, err = sync_watermark.delete_pass(ctx.store, how.target, how.plan_name, source)
    if n then
      ctx:merge(source.entity_type, { deleted = n })
      if n > 0 then ctx.log.info("%d documento(s) de %s removido(s): entidades ausentes da fonte", n, source.entity_type) end
      return
    end
  end
  if err then ctx:abort(exit.unreachable, ("falha ao procurar remoções de %q: %s"):format(source.entity_type, tostring(err))) end
end

-- Queue depth and lag per entity type into the metrics.
function M.report_queue(ctx, sources)
  local types = {}
  for _, source in ipairs(sources) do
    if source.sync.strategy == "trigger" then types[#types + 1] = source.entity_type end
  end
  if #types == 0 then return end
  local depth = sync_tables.depth(function(sql, ...) return ctx.store:query(sql, ...) end)
  if depth then instruments.sync_queue(ctx, types, depth) end
end

-- How long the follower waits between passes without a notification (ms).
local function wait_ms(sources)
  local s
  for _, source in ipairs(sources) do
    local every = source.sync.strategy == "trigger" and source.sync.drain_every_s or source.sync.poll_s
    s = math.min(s or every, every)
  end
  return math.max(1, math.floor(s * 1000))
end

-- A session LISTENing on the queue's channel, reconnecting with backoff
-- until it gets one or the run stops. Returns conn or nil.
local function listen(ctx, url)
  local delay = M.RECONNECT_MS.first
  while not ctx:halted() do
    local conn, err = pg.connect(url)
    if conn then
      local ok
      ok, err = conn:query("listen " .. pg.quote_ident(sync_queue.CHANNEL))
      if ok then return conn end
      conn:close()
    end
    ctx.log.warn("seguidor sem conexão para LISTEN (%s); nova tentativa em %d ms", tostring(err), delay)
    ctx.sched.sleep(delay)
    delay = math.min(delay * 2, M.RECONNECT_MS.max)
  end
end

-- --follow: apply, wait on LISTEN (not a polling loop of queries), apply
-- again; after a lost connection, re-listen and drain (NOTIFY is lossy).
local function follow(ctx, sources, how, url)
  local conn = listen(ctx, url)
  local every = wait_ms(sources)
  while conn and not ctx:halted() do
    apply_once(ctx, sources, how)
    if ctx:halted() then break end
    local note, err = conn:wait_notification(every)
    if note == nil and not ctx:halted() then
      ctx.log.warn("conexão de LISTEN perdida (%s); reconectando e drenando a fila", tostring(err))
      conn:close()
      conn = listen(ctx, url)
    end
  end
  if conn then conn:close() end
end

-- Registers this follower (a run of "sync:<plan>"). Returns the run
-- { id } or nil, exit code, err.
local function start_follower(store, p, params, opts)
  local follower = opts.follower or core.process_id():match("^(.*):%d+$")
  params = params or {}
  params.follower = follower
  local run_id, err, code = store:start_run("sync:" .. p.name, cjson.encode(params), false, false, false,
    core.process_id())
  if not run_id then
    if code == "busy" then
      return nil, exit.usage, ("o seguidor %q do plano %q já está rodando em outro processo; "
        .. "para mais um seguidor use --follower NOME"):format(follower, p.name)
    end
    return nil, exit.unreachable, "falha ao registrar o seguidor: " .. tostring(err)
  end
  return { id = run_id, follower = follower }
end

-- For trigger sources, checks that the queue is owned by roles this one
-- trusts (ragops.store.migrate.check_owned; the engine's tables were checked when
-- the target was opened) and holds the plan's triggers. Returns true, uses
-- the queue, or nil, err, exit code.
local function check_installed(store, sources, p)
  local queued = false
  for _, source in ipairs(sources) do queued = queued or source.sync.strategy == "trigger" end
  if not queued then return true, false end
  local ok, err, kind = sync_queue.check_installed(store, p, core.hash)
  if not ok then return nil, err, kind == "usage" and exit.usage or exit.unreachable end
  return true, true
end

-- Runs the follower under xpcall (an internal error ends it with code 2).
local function execute(ctx, sources, how, opts, cfg)
  local ok, err = xpcall(function()
    if opts.follow then follow(ctx, sources, how, cfg.database.url) else apply_once(ctx, sources, how) end
  end, debug.traceback)
  if not ok then
    -- One ERRO line (the abort's); the traceback, for a bug report, below it.
    ctx:abort(exit.internal, "erro interno no ragops sync: " .. tostring(err):match("^[^\n]*"))
    log.event("debug", nil, "%s", tostring(err))
  end
  return ctx:finish()
end

-- The queue checked, the follower registered and the claims its earlier
-- process left freed. Returns the follower or nil, exit code, err.
local function register(store, p, sources, params, opts)
  local ok, queued, code = check_installed(store, sources, p)
  if not ok then return nil, code, queued end
  local follower, rcode, rerr = start_follower(store, p, params, opts)
  if not follower then return nil, rcode, rerr end
  if queued then
    local _, cerr = sync_queue.release_claims(store, follower.id)
    if cerr then store:finish_run(follower.id, nil); return nil, exit.unreachable, cerr end
  end
  return follower
end

local function sync_loaded(p, cfg, sources, opts, params)
  local w = run.wiring
  local metrics_settings, mserr = metrics_endpoint.settings(cfg.metrics, opts)
  if not metrics_settings then return fail(exit.usage, "%s", mserr) end
  local s = sched.real()
  local pool, code, err = w.open_target(cfg, p, s)
  if not pool then return fail(code, "%s", err) end
  local env, parts = w.build_env(p, cfg, s, pool, code)
  parts.metrics_settings, parts.follower = metrics_settings, true
  local checked, verr = w.verify_endpoints(env.endpoints, cfg, log)
  if not checked then pool:close(); parts.client:close(); return fail(exit.usage, "%s", verr) end
  local follower, rcode, rerr = register(env.store, p, sources, params, opts)
  if not follower then
    pool:close(); parts.client:close()
    return fail(rcode, "%s", rerr)
  end
  env.run_id = follower.id
  log.info("seguidor %q (execução %d) do plano %q iniciado%s", follower.follower, follower.id, p.name,
    opts.follow and "; aguardando mudanças (--follow)" or "")
  local state = w.start(env, cfg, parts)
  local ctx = pipeline.context(p, env)
  local how = { run_id = follower.id, run_lock_class = store_runs.RUN_LOCK_CLASS, plan_name = p.name,
                target = sqlname.quote_table(cfg.database.table) }
  local stats = execute(ctx, sources, how, opts, cfg)
  run.run_ended()
  state.running = false
  return w.finish(p, cfg, env, parts, { id = follower.id }, stats, nil, state, opts)
end

-- `ragops sync [PLANO] [--follow]`: plan p under cfg (both loaded by
-- ragops.cli.prelude, signals trapped; params: the run's identity).
-- Returns the exit code.
function M.main(p, params, opts, cfg)
  local sources, err = check(p, opts)
  if not sources then return fail(exit.usage, "%s", err) end
  local code = sync_loaded(p, cfg, sources, opts, params)
  if run.signal_received() then return exit.interrupted end
  return code
end

return M
