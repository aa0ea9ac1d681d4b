-- ragops.engine: wires the real parts together for the CLI commands:
-- configuration, PostgreSQL pool, embedding client, storage backend, runner,
-- report. Returns exit codes (see ragops.cli).
local cjson = require "cjson"
local config = require "ragops.config"
local log = require "ragops.log"
local messages = require "ragops.messages"
local metrics_endpoint = require "ragops.metrics_endpoint"
local migrate = require "ragops.migrate"
local plan_mod = require "ragops.plan"
local report = require "ragops.report"

local M = {}

local EXIT = { ok = 0, dead_letters = 1, usage = 2, alert = 3, unreachable = 4, interrupted = 130 }
M.EXIT = EXIT

-- Signals (one process, one command): the first SIGINT/SIGTERM marks the
-- process interrupted and stops the run in progress, if any (stop_run); every
-- command that loops over runs checks `received` before the next one. The
-- bridge exits at once on a second signal.
local signals = {
  trapped = false,  -- core.trap_signals was installed
  received = nil,   -- name of the first signal ("SIGINT" | "SIGTERM")
  stop_run = nil,   -- function(name) stopping the run in progress
}

local function trap_signals()
  if signals.trapped then return end
  signals.trapped = true
  local core = require "ragops.core"
  core.trap_signals(function(name)
    signals.received = name
    log.warn("sinal %s recebido: interrompendo esperas e chamadas em andamento, descartando o lote "
      .. "em andamento e gravando o relatório (código 130); um segundo sinal encerra na hora", name)
    if signals.stop_run then signals.stop_run(name) else core.cancel_all() end
  end)
end

local function fail(code, fmt, ...)
  io.stderr:write("ragops: " .. fmt:format(...) .. "\n")
  return code
end

local function load_config(opts)
  local cfg, err = config.load(opts.config, os.getenv)
  if not cfg then return nil, err end
  return cfg
end

-- Connects one session or returns nil, pt-BR message without secrets.
function M.connect(cfg)
  local pg = require "ragops.pg"
  local conn, err = pg.connect(cfg.database.url)
  if not conn then
    return nil, ("não foi possível conectar ao PostgreSQL em %s: %s")
      :format(config.redact_url(cfg.database.url), messages.translate(err))
  end
  return conn
end

-- Writes text to path atomically (temp file + rename).
local function write_file_atomic(path, text)
  local tmp = path .. ".tmp"
  local f, err = io.open(tmp, "w")
  if not f then return nil, err end
  f:write(text)
  f:close()
  local ok, rename_err = os.rename(tmp, path)
  if not ok then return nil, rename_err end
  return true
end
M.write_file_atomic = write_file_atomic

-- Prints the pt-BR report, writes --report-json (by the engine, never the
-- plan) and returns the exit code (2 when the report file cannot be written).
function M.print_report(stats, opts, code, json)
  io.stdout:write(report.format(stats), "\n")
  if opts["report-json"] then
    local ok, werr = write_file_atomic(opts["report-json"], (json or report.json(stats)) .. "\n")
    if not ok then
      log.error("não foi possível gravar o relatório em %s: %s", opts["report-json"], tostring(werr))
      if code == EXIT.ok then code = EXIT.usage end
    end
  end
  if stats.abort_reason then log.error("%s", stats.abort_reason) end
  return code
end

function M.migrate(opts)
  log.quiet = opts.quiet or false
  local cfg, err = load_config(opts)
  if not cfg then return fail(EXIT.usage, "%s", err) end
  local conn, cerr = M.connect(cfg)
  if not conn then return fail(EXIT.unreachable, "%s", cerr) end
  local result, merr, kind = migrate.run(conn, cfg)
  conn:close()
  if not result then return fail(EXIT[kind] or EXIT.unreachable, "migração falhou: %s", tostring(merr)) end
  if #result.applied == 0 then
    io.stdout:write(("esquema já está atualizado (versão %d)\n"):format(result.current))
  else
    io.stdout:write(("migrações aplicadas: %s; esquema na versão %d; coluna embedding: %s\n")
      :format(table.concat(result.applied, ", "), result.current,
        result.storage == "vector" and ("vector(%d) (pgvector)"):format(cfg.provider.dim)
          or "real[] (sem pgvector: sem índice IVFFlat/HNSW)"))
  end
  return EXIT.ok
end

-- Checks that the target table exists and matches the configured dimension.
-- Returns the embedding column type or nil, err, exit code.
function M.check_target(conn, cfg)
  local schema_ok, serr, scode = M.check_schema(conn)
  if not schema_ok then return nil, serr, scode end
  local coltype, err = migrate.embedding_column(conn, cfg.database.table)
  if err then return nil, err, EXIT.unreachable end
  if not coltype then
    return nil, ("a tabela %q não existe ou não tem a coluna embedding; execute `ragops migrate` antes")
      :format(cfg.database.table), EXIT.usage
  end
  local dim = tonumber(coltype:match("^vector%((%d+)%)$"))
  if dim and dim ~= cfg.provider.dim then
    return nil, ("a coluna embedding é %s, mas provider.dim = %d; ajuste a configuração ou recrie o índice")
      :format(coltype, cfg.provider.dim), EXIT.usage
  end
  return coltype
end

-- "a, b,,c" -> { "a", "b", "c" } (blanks dropped).
local function split_list(text)
  local out = {}
  for item in tostring(text):gmatch("[^,]+") do
    item = item:match("^%s*(.-)%s*$")
    if item ~= "" then out[#out + 1] = item end
  end
  return out
end
M.split_list = split_list

-- Params the engine itself reads (the filters of backfill/reindex) and the
-- operating limits; with the keys the plan reads, the valid --set keys.
M.FILTER_KEYS = { "entity_type", "entity_id", "since", "until", "mode" }
local FILTER_FLAGS = { entity_type = "--entity-type", entity_id = "--entity-id" }

-- A filter list that selects nothing is a usage error, not "no filter" (an
-- empty --entity-id would widen a reindex to the whole type).
local function non_empty_list(params, key)
  local list = split_list(params[key])
  if #list == 0 then
    return nil, ("%s vazio (%q): informe ao menos um valor, ou omita o filtro")
      :format(FILTER_FLAGS[key], tostring(params[key]))
  end
  return list
end

-- Turns the filter params (flags of backfill/reindex, or --set) into plan
-- overrides. Returns overrides (or nil when there is no filter), or nil, err.
function M.scope_overrides(params)
  params = params or {}
  local scope, overrides = {}, {}
  if params.entity_id and not params.entity_type then
    return nil, "--entity-id exige --entity-type (o id só identifica a entidade junto com o tipo)"
  end
  for key, field in pairs({ entity_type = "entity_types", entity_id = "entity_ids" }) do
    if params[key] then
      local list, err = non_empty_list(params, key)
      if not list then return nil, err end
      scope[field] = list
    end
  end
  if params.since then scope.since = params.since end
  if params["until"] then scope["until"] = params["until"] end
  if next(scope) then overrides.scope = scope end
  if params.mode then overrides.mode = params.mode end
  if next(overrides) == nil then return nil end
  return overrides
end

-- The --set keys valid for plan p, sorted.
local function valid_keys(p)
  local keys = {}
  for _, key in ipairs(M.FILTER_KEYS) do keys[#keys + 1] = key end
  for _, item in ipairs(plan_mod.LIMITS) do keys[#keys + 1] = item.key end
  for key in pairs(plan_mod.params_read(p)) do
    if type(key) == "string" then keys[#keys + 1] = key end
  end
  table.sort(keys)
  local out = {}
  for i, key in ipairs(keys) do
    if key ~= keys[i - 1] then out[#out + 1] = key end
  end
  return out
end

-- Rejects params (from --set and the flags) that neither the engine nor the
-- plan reads. Returns true or nil, err.
local function check_param_keys(p, params)
  local unknown = plan_mod.first_unknown_key(params, valid_keys(p))
  if unknown == nil then return true end
  return nil, ("--set %s: chave desconhecida para o plano %q; chaves válidas: %s")
    :format(tostring(unknown), p.name, table.concat(valid_keys(p), ", "))
end

-- Splits params into the run's params (its identity: filters, plan keys,
-- limit) and the operating limits that only tune it (batch.*, retry.*).
local function split_params(params)
  local run_params, limits = {}, {}
  for key, value in pairs(params) do
    if type(key) == "string" and key:find(".", 1, true) then limits[key] = value else run_params[key] = value end
  end
  limits.limit = params.limit
  return run_params, limits
end

-- Loads the plan and applies the filter params and the operating limits.
-- Returns plan, run params (what identifies the run) or nil, err.
function M.load_plan(path, params)
  local run_params, limits = split_params(params or {})
  local p, perr = plan_mod.load(path, run_params)
  if not p then return nil, perr end
  local known, kerr = check_param_keys(p, params or {})
  if not known then return nil, kerr end
  local overrides, oerr = M.scope_overrides(run_params)
  if oerr then return nil, oerr end
  overrides = overrides or {}
  for key, value in pairs(plan_mod.limit_overrides(p, limits)) do overrides[key] = value end
  if next(overrides) then
    local ok, result = pcall(plan_mod.with, p, overrides, p.file .. " (linha de comando)")
    if not ok then return nil, tostring(result) end
    p = result
  end
  return p, run_params
end

-- The effective operating limits of plan p (first log line and report).
-- The effective operating limits of plan p under cfg: the plan's (or the
-- flags') values, and the request timeout (plan/--timeout over provider.timeout_s).
function M.limits(p, cfg)
  return { batch_size = p.batch.size, in_flight = p.batch.in_flight, limit = p.limit,
           max_retries = p.retry.attempts,
           timeout_s = p.retry.timeout_s or (cfg and cfg.provider.timeout_s) }
end

-- Checks that `ragops migrate` has created the engine's tables (at the
-- latest version). Returns true or nil, err, exit code.
function M.check_schema(conn)
  local version, err = migrate.schema_version(conn)
  if not version then return nil, ("falha ao ler o esquema do ragops: %s"):format(tostring(err)), EXIT.unreachable end
  if version == 0 then
    return nil, "as tabelas do ragops não existem neste banco; execute `ragops migrate` antes", EXIT.usage
  end
  if version < migrate.latest_version() then
    return nil, ("as tabelas do ragops estão na versão %d, mas esta versão do ragops precisa da %d; "
      .. "execute `ragops migrate` antes"):format(version, migrate.latest_version()), EXIT.usage
  end
  return true
end

-- Checks since < until in the database (its time zone applies to dates
-- without zone). Returns true or nil, err.
function M.check_date_range(conn, scope)
  if not scope or not scope.since or not scope["until"] then return true end
  local rows, err = conn:query("select $1::timestamptz < $2::timestamptz as ok", scope.since, scope["until"])
  if not rows then return nil, "intervalo de datas inválido: " .. tostring(err) end
  if not rows[1].ok then
    return nil, ("--since (%s) deve ser anterior a --until (%s)"):format(scope.since, scope["until"])
  end
  return true
end

local run_plan

-- Runs a plan (the backfill/reindex/run commands); once a signal arrived the
-- exit code is 130 whatever step it interrupted.
function M.run_plan(path, opts, params)
  trap_signals()
  local code = run_plan(path, opts, params)
  if signals.received then return EXIT.interrupted end
  return code
end

function run_plan(path, opts, params)
  log.quiet = opts.quiet or false
  local cfg, err = load_config(opts)
  if not cfg then return fail(EXIT.usage, "%s", err) end
  local metrics_settings, mserr = metrics_endpoint.settings(cfg.metrics, opts) -- issue 10
  if not metrics_settings then return fail(EXIT.usage, "%s", mserr) end
  local p, loaded = M.load_plan(path, params)
  if not p then return fail(EXIT.usage, "%s", loaded) end
  params = loaded -- the run's identity (without batch.* and retry.*)
  if opts["scale-out"] then
    if opts["dry-run"] then return fail(EXIT.usage, "--scale-out não combina com --dry-run") end
    if p.limit then return fail(EXIT.usage, "--scale-out não combina com --limit (a execução de sanidade é de um processo só)") end
    if p.scope and p.scope.entity_ids then
      return fail(EXIT.usage, "--scale-out não combina com --entity-id (poucas entidades não se dividem entre processos)")
    end
  end
  if opts["lease-s"] and not (tonumber(opts["lease-s"]) and tonumber(opts["lease-s"]) >= 1) then
    return fail(EXIT.usage, "--lease-s espera um número de segundos >= 1, recebi %q", opts["lease-s"])
  end
  if #p.sources == 0 then
    return fail(EXIT.usage, "o plano %q não tem fontes para indexar; planos de operação como "
      .. "plans/create_index.lua são lidos por `ragops index create`, não por `ragops run`", p.name)
  end
  if opts["dry-run"] then
    return require("ragops.dryrun").run(p, cfg, opts, params)
  end

  local sched = require "ragops.sched"
  local store_pg = require "ragops.store_pg"
  local runner = require "ragops.runner"
  local core = require "ragops.core"
  local s = sched.real()
  local pool = require("ragops.pool").new {
    conninfo = cfg.database.url, sched = s, on_connect = store_pg.prepare_connection,
    size = math.max(cfg.database.pool_size, p.batch.in_flight + 2), log = log,
  }
  local conn, cerr = pool:acquire()
  if not conn then
    return fail(EXIT.unreachable, "não foi possível conectar ao PostgreSQL em %s: %s",
      config.redact_url(cfg.database.url), messages.translate(cerr))
  end
  local coltype, terr, code = M.check_target(conn, cfg)
  if coltype then
    local ok, derr = M.check_date_range(conn, p.scope)
    if not ok then coltype, terr, code = nil, derr, EXIT.usage end
  end
  pool:release(conn)
  if not coltype then pool:close(); return fail(code, "%s", terr) end

  local embed = require "ragops.embed"
  local client = embed.client {
    url = cfg.provider.url, model = cfg.provider.model, dimensions = cfg.provider.dimensions,
    expected_dim = cfg.provider.dim, api_key = cfg.provider.api_key,
    timeout_ms = M.limits(p, cfg).timeout_s * 1000, encoding = cfg.provider.encoding,
  }
  local store = store_pg.new { pool = pool, table = cfg.database.table, embedding_type = coltype,
                               model = cfg.provider.model, dim = cfg.provider.dim }
  local scale_out = opts["scale-out"]
  local run_id, checkpoint_or_err, resumed_or_code = store:start_run(p.name,
    cjson.encode(params or {}), false, opts.resume, scale_out, core.process_id())
  if not run_id then
    pool:close(); client:close()
    if resumed_or_code == "busy" then return fail(EXIT.usage, "%s", checkpoint_or_err) end
    return fail(EXIT.unreachable, "falha ao registrar a execução: %s", tostring(checkpoint_or_err))
  end
  if resumed_or_code and scale_out then
    log.info("participando da execução %d do plano %q (scale-out)", run_id, p.name)
  elseif resumed_or_code then
    log.info("retomando a execução %d do plano %q a partir do checkpoint", run_id, p.name)
  end
  log.info("execução %d do plano %q iniciada (modelo %s, dim %d, %s)",
    run_id, p.name, cfg.provider.model, cfg.provider.dim, report.format_limits(M.limits(p, cfg)))

  local metrics = require("ragops.metrics").new()
  local metrics_file = cfg.metrics.file
  local function write_metrics()
    if not metrics_file then return end
    local ok, merr = metrics:write_file(metrics_file)
    if not ok then log.warn("não foi possível gravar as métricas em %s: %s", metrics_file, tostring(merr)) end
  end
  metrics:gauge("ragops_run_in_progress", nil, { plan = p.name }):set(1)
  local endpoint = metrics_endpoint.start_run(metrics_settings, metrics, log, -- issue 10
    function() return not signals.received, signals.received and "execução interrompida\n" or nil end)

  local webhook
  if cfg.alerts.webhook_url then
    local http = require "ragops.http"
    webhook = function(payload)
      local resp, herr = http.request { method = "POST", url = cfg.alerts.webhook_url,
        headers = { ["Content-Type"] = "application/json" }, body = cjson.encode(payload),
        timeout_ms = 5000 }
      if not resp then
        local url = cfg.alerts.webhook_url
        local text = tostring(herr)
        local at = text:find(url, 1, true)
        if at then text = text:sub(1, at - 1) .. config.redact_webhook(url) .. text:sub(at + #url) end
        return nil, text
      end
      if resp.status >= 300 then return nil, ("HTTP %d"):format(resp.status) end
      return true
    end
  end
  local alerts = require("ragops.alerts").new {
    config = p.alerts, now = s.now, sleep = s.sleep, spawn = s.spawn, log = log,
    metrics = metrics, webhook = webhook, plan = p.name,
  }
  local rl = cfg.provider.rate_limits or {}
  local limiter = require("ragops.ratelimit").new {
    sched = s, requests_per_min = rl.requests_per_min, tokens_per_min = rl.tokens_per_min,
    max_concurrency = rl.max_concurrency, log = log,
  }

  local env = {
    sched = s, store = store, embedder = client, log = log, run_id = run_id,
    checkpoint = checkpoint_or_err, model = cfg.provider.model, dim = cfg.provider.dim,
    hash = core.hash, alerts = alerts, limiter = limiter, metrics = metrics,
    spent = { requests = 0 },
  }
  store:keep_run { sched = s, spent = function() return env.spent.requests end,
    on_lost = function(reason) if env.stop then env.stop(EXIT.unreachable, reason) end end }
  local interrupted = false
  -- Stops this run: alerts stop pausing, the runner stops taking work, and
  -- every wait (backoff, pause between rounds, query, embedding call) ends now.
  signals.stop_run = function(name)
    interrupted = true
    alerts:stop()
    if env.stop then env.stop(EXIT.interrupted, "interrompido pelo operador (" .. name .. ")") end
    s.stop()
  end
  if signals.received then signals.stop_run(signals.received) end
  local running = true
  if metrics_file then
    s.spawn(function()
      while running do
        write_metrics()
        s.sleep(10000)
      end
    end)
  end
  -- Progress on a timer: it shows while every worker waits on the provider.
  s.spawn(function()
    local every = cfg.log.progress_every_s * 1000
    while running do
      s.sleep(every)
      if running and env.progress then env.progress() end
    end
  end)

  local ok_run, stats, run_totals = xpcall(function()
    if scale_out then
      return require("ragops.workunits").run(p, env, {
        pool = pool, run_id = run_id, owner = core.process_id(), lease_s = tonumber(opts["lease-s"]),
      })
    end
    return runner.run(p, env)
  end, debug.traceback)
  signals.stop_run = nil
  running = false
  if not ok_run then
    log.error("erro interno durante a execução %d: %s", run_id, tostring(stats))
    stats = { aborted = { code = EXIT.usage, reason = "erro interno: " .. tostring(stats):match("^[^\n]*") } }
    for _, k in ipairs(runner.COUNTER_KEYS) do stats[k] = 0 end
    stats.per_entity_type = {}
  end
  stats.plan = p.name
  stats.run_id = run_id
  stats.dry_run = false
  stats.resumed = resumed_or_code or nil
  stats.rate_limit = limiter:stats()
  stats.limits = M.limits(p, cfg)
  local code = EXIT.ok
  local status = "done"
  if interrupted then
    code = EXIT.interrupted
    status = "interrupted"
    stats.abort_reason = "interrompido pelo operador (" .. signals.received .. ")"
  elseif stats.aborted then
    code = stats.aborted.code
    status = code == EXIT.usage and "failed" or "aborted"
    stats.abort_reason = stats.aborted.reason
  elseif stats.failed > 0 then
    code = EXIT.dead_letters
    status = "done_with_failures"
  end
  stats.aborted = nil
  stats.status = status
  if scale_out then
    stats.scale_out = { finished_run = run_totals ~= nil, run_totals = run_totals }
  end
  local json = report.json(stats)
  if scale_out then
    -- This process's share is in its report; the run record gets the totals
    -- from the process that finished the run, and stays open otherwise.
    local run_status
    if run_totals then
      run_status = run_totals.failed > 0 and "done_with_failures" or "done"
      run_totals.plan, run_totals.run_id, run_totals.status = p.name, run_id, run_status
      if code == EXIT.ok and run_totals.failed > 0 then code = EXIT.dead_letters end
    end
    -- A scale-out process that stops early leaves the run open: its unit's
    -- lease expires and the other processes (or a re-run) take it over.
    stats.requests_spent = store:finish_run(run_id, run_status,
      run_totals and report.json(run_totals) or json)
  else
    stats.requests_spent = store:finish_run(run_id, status, json)
  end
  json = report.json(stats)
  pool:close()
  client:close()
  metrics:gauge("ragops_run_in_progress", nil, { plan = p.name }):set(0)
  metrics:gauge("ragops_last_run_timestamp_seconds", nil, { plan = p.name, status = status }):set(os.time())
  write_metrics()
  metrics_endpoint.finish_run(endpoint, metrics_settings, metrics, p.name, log) -- issue 10

  return M.print_report(stats, opts, code, json)
end

-- Loads the config and reads the failures selected by opts.
-- Returns rows or nil, exit code (the error already printed).
local function read_failures(opts)
  local cfg, err = load_config(opts)
  if not cfg then return nil, fail(EXIT.usage, "%s", err) end
  local conn, cerr = M.connect(cfg)
  if not conn then return nil, fail(EXIT.unreachable, "%s", cerr) end
  local schema_ok, serr, scode = M.check_schema(conn)
  if not schema_ok then conn:close(); return nil, fail(scode, "%s", serr) end
  local rows, qerr = require("ragops.failures").query(conn, opts)
  conn:close()
  if not rows then
    return nil, fail(EXIT.unreachable, "falha ao consultar a fila de falhas: %s", tostring(qerr))
  end
  return rows
end

-- `ragops failures list`
function M.failures_list(opts)
  local rows, code = read_failures(opts)
  if not rows then return code end
  io.stdout:write(require("ragops.failures").format(rows, opts))
  return EXIT.ok
end

-- `ragops failures retry`: one scoped run of plans/reprocess_failures.lua per
-- entity type with open failures. Exit code: the worst of the runs; a signal
-- stops the loop (the types not started yet keep their failures open).
function M.failures_retry(opts, plan_path)
  trap_signals()
  local rows, code = read_failures(opts)
  if signals.received then return EXIT.interrupted end
  if not rows then return code end
  local by_type, types = require("ragops.failures").group(rows)
  if #types == 0 then
    io.stdout:write("nenhuma falha em aberto para reprocessar\n")
    return EXIT.ok
  end
  local worst = EXIT.ok
  for i, entity_type in ipairs(types) do
    if signals.received then
      log.warn("interrompido: %d tipo(s) de entidade não reprocessado(s) (%s)", #types - i + 1,
        table.concat(types, ", ", i))
      return EXIT.interrupted
    end
    local ids = by_type[entity_type]
    log.info("reprocessando %d falha(s) de %q", #ids, entity_type)
    local params = { entity_type = entity_type, entity_id = table.concat(ids, ",") }
    if opts.overwrite then params.mode = "overwrite" end
    local code = M.run_plan(plan_path, opts, params)
    if code ~= EXIT.ok and (worst == EXIT.ok or code > worst) then worst = code end
  end
  return worst
end

return M
