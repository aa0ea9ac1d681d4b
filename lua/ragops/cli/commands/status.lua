-- ragops.cmd.status: `ragops status [--json]`, what ran, what is running,
-- coverage and lag per entity type, open failures and vector indexes
-- (ragops.status), as pt-BR text or stable English JSON keys.
local store_target = require "ragops.store.target"
local exit = require "ragops.util.exit"
local params = require "ragops.plan.params"
local runner = require "ragops.run.runner"
local status = require "ragops.report.status"

local M = {}

M.FLAGS = { config = "string", json = "bool", plan = "string" }

-- `ragops status [--json] [--plan PLANO.lua] [--config F]`; coverage is
-- measured against the sources of the plan (default plans/backfill.lua).
function M.main(args, cli)
  local a = cli.parse(args, M.FLAGS)
  if #a.positional > 0 then cli.usage_error("status não aceita argumentos: %s", a.positional[1]) end
  local opts = a.options
  local cfg, err = cli.load_config(opts)
  if not cfg then return exit.fail(exit.usage, "%s", err) end
  local p, perr = params.load_plan(opts.plan or cli.home_path("plans/backfill.lua"), {})
  if not p then return exit.fail(exit.usage, "%s", perr) end
  local conn, cerr = store_target.connect(cfg)
  if not conn then return exit.fail(exit.unreachable, "%s", cerr) end
  local ok, serr, scode = store_target.check_schema(conn)
  if not ok then conn:close(); return exit.fail(scode, "%s", serr) end
  local sources = runner.selected_sources(p)
  local sql_ok, sql_code, sql_err = store_target.check_sources(function(sql) return conn:query(sql) end, p, sources)
  if not sql_ok then conn:close(); return exit.fail(sql_code, "%s", sql_err) end
  local st, qerr = status.collect(conn, cfg.database.table, sources)
  conn:close()
  if not st then return exit.fail(exit.unreachable, "%s", qerr) end
  local scrub = require "ragops.util.scrub" -- secrets masked; text: control characters escaped
  io.stdout:write(opts.json and (scrub.mask(status.json(st)) .. "\n") or scrub.text(status.format(st)))
  return exit.ok
end

return M
