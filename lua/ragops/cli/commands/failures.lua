-- ragops.cli.commands.failures: `ragops failures list | retry`, the dead-letter
-- queue (ragops.store.failures) for the operator. retry runs the corpus's
-- plan (--plan, plans.default, the only plan: ragops.plan.locate) tuned for
-- the operation (operations.failures_retry), once per entity type of the
-- plan with open failures, scoped to the failing entity ids.
local store_target = require "ragops.store.target"
local exit = require "ragops.util.exit"
local prelude = require "ragops.cli.prelude"
local failures = require "ragops.store.failures"
local log = require "ragops.obs.log"
local params_mod = require "ragops.plan.params"
local pool_mod = require "ragops.store.pool"
local run = require "ragops.run"
local sched = require "ragops.util.sched"

local M = {}

local FILTERS = { config = "string", quiet = "bool", ["entity-type"] = "string", run = "string", id = "string" }

local function with_flags(extra)
  local out = {}
  for k, v in pairs(FILTERS) do out[k] = v end
  for k, v in pairs(extra) do out[k] = v end
  return out
end

-- Flags of each subcommand (the help lists them all: cli_help_spec).
M.FLAGS = {
  list = with_flags({ all = "bool" }),
  retry = with_flags({ overwrite = "bool", ["report-json"] = "string", ["log-format"] = "string",
                       plan = "string" }),
}

-- Reads the failures selected by opts from cfg's database.
-- Returns rows or nil, exit code (the error already printed).
local function read_failures(opts, cfg)
  -- Under the database retry policy (ragops.store.pool), like every run's reads.
  local pool = pool_mod.new { conninfo = cfg.database.url, sched = sched.real(), size = 1, log = log }
  local conn, cerr = pool:acquire()
  if not conn then return nil, exit.fail(exit.unreachable, "%s", store_target.connect_error(cfg, cerr)) end
  pool:release(conn)
  local read, qerr = pool:with(function(c)
    local schema_ok, serr, scode = store_target.check_schema(c)
    if not schema_ok then
      if not c:is_ok() then return nil, serr end -- the session was lost: retried
      return { err = serr, code = scode }
    end
    local rows, ferr, fstate = failures.query(c, opts)
    if not rows then return nil, ferr, fstate end
    return { rows = rows }
  end)
  pool:close()
  if read and read.err then return nil, exit.fail(read.code, "%s", read.err) end
  if not read then
    return nil, exit.fail(exit.unreachable, "falha ao consultar a fila de falhas: %s", tostring(qerr))
  end
  return read.rows
end

-- `ragops failures list`
local function list(opts, cfg)
  local rows, code = read_failures(opts, cfg)
  if not rows then return code end
  io.stdout:write(failures.format(rows, opts))
  return exit.ok
end

-- The entity types of plan p among types; the others (failures of another
-- corpus's plan in the same database) are left open and said.
local function plan_types(p, types)
  local mine, other = {}, {}
  for _, source in ipairs(p.sources) do mine[source.entity_type] = true end
  local out = {}
  for _, t in ipairs(types) do
    if mine[t] then out[#out + 1] = t else other[#other + 1] = t end
  end
  if #other > 0 then
    log.warn("falhas de tipo(s) de entidade fora do plano %q ficam em aberto: %s (reprocesse com --plan do acervo delas)",
      p.name, table.concat(other, ", "))
  end
  return out
end

-- `ragops failures retry`: one scoped run of the plan per entity type with
-- open failures. Exit code: the worst of the runs; a signal stops the loop
-- (the types not started yet keep their failures open).
local function retry(opts, cfg)
  prelude.signals()
  local plan_path, pcode = prelude.locate(opts.plan, cfg)
  if not plan_path then return pcode end
  local p, perr = prelude.plan(plan_path, {}, "failures_retry")
  if not p then return perr end
  local rows, code = read_failures(opts, cfg)
  if prelude.interrupted() then return exit.interrupted end
  if not rows then return code end
  local by_type, types = failures.group(rows)
  types = plan_types(p, types)
  if #types == 0 then
    io.stdout:write("nenhuma falha em aberto para reprocessar\n")
    return exit.ok
  end
  local worst = exit.ok
  for i, entity_type in ipairs(types) do
    if prelude.interrupted() then
      log.warn("interrompido: %d tipo(s) de entidade não reprocessado(s) (%s)", #types - i + 1,
        table.concat(types, ", ", i))
      return exit.interrupted
    end
    local ids = by_type[entity_type]
    log.info("reprocessando %d falha(s) de %q com o plano %q", #ids, entity_type, p.name)
    local params = { entity_type = entity_type, entity_id = table.concat(ids, ",") }
    if opts.overwrite then params.mode = "overwrite" end
    local run_code = prelude.run_plan(plan_path, opts, params, cfg, "failures_retry")
    if run_code ~= exit.ok and (worst == exit.ok or run_code > worst) then worst = run_code end
  end
  return worst
end

-- Raises a usage error for malformed --run, --id or --entity-type.
local function check_filters(opts, cli)
  for _, key in ipairs({ "run", "id" }) do
    local v = opts[key]
    if v and not v:match("^%d+[%d,]*$") then
      cli.usage_error("--%s espera número(s) separados por vírgula, recebi %q", key, v)
    end
  end
  local types = opts["entity-type"]
  if types and #params_mod.split_list(types) == 0 then
    cli.usage_error("--entity-type vazio (%q): informe ao menos um tipo, ou omita o filtro", types)
  end
end

-- `ragops failures list|retry [opções]`; returns the exit code.
function M.main(args, cli)
  local sub = table.remove(args, 1)
  local flags = M.FLAGS[tostring(sub)]
  if not flags then cli.usage_error("uso: ragops failures list|retry [opções] (veja ragops failures --help)") end
  local a = cli.parse(args, flags)
  if #a.positional > 0 then cli.usage_error("argumento inesperado: %s", a.positional[1]) end
  check_filters(a.options, cli)
  local cfg, code = prelude.config(a.options)
  if not cfg then return code end
  if sub == "list" then return list(a.options, cfg) end
  return retry(a.options, cfg)
end

return M
