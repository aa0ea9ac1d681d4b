-- ragops.cli.prelude: the one start every command goes through, always in
-- this order: configuration (--config, the environment over it) → log
-- set-up (--quiet, --log-format over log.format) → signals (SIGINT/SIGTERM
-- stop the run; before the target, which may already query the database)
-- → target (--target live | shadow | previous: which table) → plan
-- (--plan NOME|ARQUIVO, else plans.default, else the only plan of the
-- plans folder: ragops.plan.locate; loaded with its params and tuned for
-- the command's operation). Each step is optional but the order is not;
-- a failed step prints its pt-BR error on stderr and returns the exit code.
-- The commands keep only their options and their output.
local chunk = require "ragops.plan.chunk"
local config = require "ragops.plan.config"
local exit = require "ragops.util.exit"
local locate = require "ragops.plan.locate"
local log = require "ragops.obs.log"
local model = require "ragops.vector.model"
local params_mod = require "ragops.plan.params"
local provider_client = require "ragops.provider.client"
local run = require "ragops.run"
local target_mod = require "ragops.store.target"

local M = {}

-- Configuration and log set-up (the only config.load of the commands).
-- Returns cfg or nil, exit code (the error printed).
function M.config(opts)
  log.quiet = opts.quiet or false
  local cfg, err = config.load(opts.config, os.getenv)
  if not cfg then return nil, exit.fail(exit.usage, "%s", err) end
  local format = opts["log-format"] or cfg.log.format
  if not log.FORMATS[format] then
    return nil, exit.fail(exit.usage, "--log-format espera text ou json, recebi %q", tostring(format))
  end
  log.format = format
  return cfg
end

-- The configuration of the table --target names ("live", the default,
-- leaves cfg as it is). Returns cfg, target or nil, exit code (printed).
function M.target(cfg, value)
  local tcfg, terr, tcode = model.target_config(cfg, value)
  if not tcfg then return nil, exit.fail(tcode, "%s", terr) end
  return tcfg, model.parse_target(value)
end

-- SIGINT/SIGTERM stop the run in progress (ragops.run); a command checks
-- M.interrupted() before it reports its own outcome.
function M.signals() run.trap_signals() end
function M.interrupted() return run.signal_received() ~= nil end

-- The plan file a command runs: choice (--plan NOME|ARQUIVO, or nil for
-- plans.default / the only plan of the folder) under cfg. Returns path,
-- how ("flag", "default", "only", "demo") or nil, exit code (printed).
function M.locate(choice, cfg)
  local found, err = locate.resolve(choice, cfg)
  if not found then return nil, exit.fail(exit.usage, "%s", err) end
  return found.path, found.how
end

-- The plan at path (nil: M.locate(choice, cfg)) under params, tuned for
-- operation (ragops.plan.params.OPERATIONS; nil: as written). Returns plan,
-- run params (the run's identity) or nil, exit code (printed).
function M.plan(path, params, operation, choice, cfg)
  if not path then
    local code
    path, code = M.locate(choice, cfg)
    if not path then return nil, code end
  end
  local p, loaded = params_mod.load_plan(path, params or {}, operation)
  if not p then return nil, exit.fail(exit.usage, "%s", loaded) end
  if cfg then
    local limits = provider_client.limits(cfg, log.warn)
    local fits, ferr = chunk.fit(p.chunking, cfg.provider, limits, limits.tokens_per_byte)
    if not fits then return nil, exit.fail(exit.usage, "plano %s: %s", path, ferr) end
  end
  return p, loaded
end

-- The steps a command asks for, in the one order. want = { signals = true,
-- target = true (the command takes --target), plan = path or true (resolve
-- opts.plan: M.locate), operation = "backfill" | ..., params = {} }.
-- Returns { cfg, target, plan, params } or nil, exit code (printed; 130 once
-- a signal arrived).
function M.start(opts, want)
  want = want or {}
  local out, code = {}, nil
  out.cfg, code = M.config(opts)
  if not out.cfg then return nil, code end
  if want.signals then M.signals() end
  if want.target then
    out.cfg, code = M.target(out.cfg, opts.target)
    if not out.cfg then return nil, (want.signals and M.interrupted()) and exit.interrupted or code end
    out.target = code
  end
  if want.plan then
    local path = want.plan ~= true and want.plan or nil
    out.plan, out.params = M.plan(path, want.params, want.operation, opts.plan, out.cfg)
    if not out.plan then
      return nil, (want.signals and M.interrupted()) and exit.interrupted or out.params
    end
  end
  return out
end

-- One session to cfg's database (schema = true: the engine's tables
-- checked, ragops migrate done). Returns conn or nil, exit code (printed).
function M.session(cfg, schema)
  local conn, err = target_mod.connect(cfg)
  if not conn then return nil, exit.fail(exit.unreachable, "%s", err) end
  if schema then
    local ok, serr, scode = target_mod.check_schema(conn)
    if not ok then conn:close(); return nil, exit.fail(scode, "%s", serr) end
  end
  return conn
end

-- Runs the plan file at path (nil: the one opts.plan names, M.locate)
-- under cfg for operation (run: nil; backfill, reindex, failures_retry):
-- signals → target → plan → ragops.run. Once a signal arrived the exit code
-- is 130 whatever step it interrupted.
function M.run_plan(path, opts, params, cfg, operation)
  M.signals()
  local code
  local tcfg, target = M.target(cfg, params.target)
  if not tcfg then
    code = target
  else
    params.target = target -- "live" (the default) leaves the run's identity as without --target
    local p, loaded = M.plan(path, params, operation, opts.plan, cfg)
    code = p and run.loaded_plan(p, loaded, tcfg, opts) or loaded
  end
  if M.interrupted() then return exit.interrupted end
  return code
end

return M
