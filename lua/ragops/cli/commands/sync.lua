-- ragops.cli.commands.sync: `ragops sync [PLANO] [--follow]` (ragops.sync) and
-- `ragops sync install | uninstall [PLANO]` (the trigger strategy's triggers
-- and change queue, ragops.sync.queue). PLANO (positional or --plan) is the
-- corpus's plan, resolved like every command's (ragops.plan.locate:
-- plans.default, the only plan of the plans folder).
local store_target = require "ragops.store.target"
local core = require "ragops.core"
local exit = require "ragops.util.exit"
local prelude = require "ragops.cli.prelude"
local pool_mod = require "ragops.store.pool"
local sched = require "ragops.util.sched"
local store_pg = require "ragops.store.pg"
local sync = require "ragops.sync"
local sync_queue = require "ragops.sync.queue"

local M = {}

M.FLAGS = {
  config = "string", set = "list", ["report-json"] = "string", quiet = "bool",
  follow = "bool", follower = "string", ["log-format"] = "string",
  ["metrics-listen"] = "string", ["metrics-push"] = "string", plan = "string",
}
M.INSTALL_FLAGS = { config = "string", plan = "string" }

-- The plan the positional argument or --plan names (nil: the default).
local function plan_choice(a, cli, usage)
  if #a.positional > 1 or (#a.positional == 1 and a.options.plan) then cli.usage_error("uso: %s", usage) end
  a.options.plan = a.positional[1] or a.options.plan
end

-- A store on its own pool, for install/uninstall. Returns store, pool or
-- nil, err.
local function open_store(cfg)
  local pool = pool_mod.new { conninfo = cfg.database.url, sched = sched.real(), size = 1 }
  local conn, err = pool:acquire()
  if not conn then return nil, store_target.connect_error(cfg, err) end
  pool:release(conn)
  return store_pg.new { pool = pool, table = cfg.database.table, embedding_type = "real[]" }, pool
end

-- `ragops sync install|uninstall [PLANO]`. Returns the exit code.
local function install_cmd(verb, args, cli)
  local a = cli.parse(args, M.INSTALL_FLAGS)
  plan_choice(a, cli, ("ragops sync %s [PLANO | --plan PLANO]"):format(verb))
  local start, code = prelude.start(a.options, { plan = true, operation = "sync" })
  if not start then return code end
  local cfg, p = start.cfg, start.plan
  local store, pool = open_store(cfg)
  if not store then return exit.fail(exit.unreachable, "%s", pool) end
  local result, ierr, kind
  if verb == "install" then result, ierr, kind = sync_queue.install(store, p, core.hash)
  else result, ierr, kind = sync_queue.uninstall(store, p.name) end
  pool:close()
  if not result then return exit.fail(kind == "usage" and exit.usage or exit.unreachable, "%s", ierr) end
  if verb == "uninstall" then
    io.stdout:write(("ragops sync uninstall: %d gatilho(s) do plano %q removido(s)\n"):format(result.removed, p.name))
  elseif result.created == 0 then
    io.stdout:write(("ragops sync install: o plano %q já está instalado; nada mudou\n"):format(p.name))
  else
    io.stdout:write(("ragops sync install: %d gatilho(s) e a fila ragops_sync.changes criados para o plano %q\n")
      :format(result.created, p.name))
  end
  return exit.ok
end

-- `ragops sync ...`; returns the exit code.
function M.main(args, cli)
  local verb = args[1]
  if verb == "install" or verb == "uninstall" then
    table.remove(args, 1)
    return install_cmd(verb, args, cli)
  end
  local a = cli.parse(args, M.FLAGS)
  plan_choice(a, cli, "ragops sync [PLANO | --plan PLANO] [--follow]")
  local start, code = prelude.start(a.options, { signals = true, plan = true, operation = "sync", params = a.sets })
  if not start then return code end
  return sync.main(start.plan, start.params, a.options, start.cfg)
end

return M
