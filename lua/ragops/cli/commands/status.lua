-- ragops.cli.commands.status: `ragops status [--json]`, what ran, what is running,
-- coverage and lag per entity type, open failures and vector indexes
-- (ragops.report.status), as pt-BR text or stable English JSON keys.
local exit = require "ragops.util.exit"
local prelude = require "ragops.cli.prelude"
local store_target = require "ragops.store.target"
local pipeline = require "ragops.run.pipeline"
local status = require "ragops.report.status"

local M = {}

M.FLAGS = { config = "string", json = "bool", plan = "string" }

-- `ragops status [--json] [--plan PLANO.lua] [--config F]`; coverage is
-- measured against the sources of the plan (default plans/backfill.lua).
function M.main(args, cli)
  local a = cli.parse(args, M.FLAGS)
  if #a.positional > 0 then cli.usage_error("status não aceita argumentos: %s", a.positional[1]) end
  local opts = a.options
  local start, code = prelude.start(opts, { plan = opts.plan or cli.home_path("plans/backfill.lua") })
  if not start then return code end
  local cfg, p = start.cfg, start.plan
  local conn, ccode = prelude.session(cfg, true)
  if not conn then return ccode end
  local sources = pipeline.selected_sources(p)
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
