-- ragops.cli.commands.status: `ragops status [--json]`, what ran, what is running,
-- coverage and lag per entity type, open failures and vector indexes
-- (ragops.report.status), as pt-BR text or stable English JSON keys. The
-- coverage needs the corpus's plan (--plan, plans.default, the only plan).
local exit = require "ragops.util.exit"
local locate = require "ragops.plan.locate"
local prelude = require "ragops.cli.prelude"
local store_target = require "ragops.store.target"
local pipeline = require "ragops.run.pipeline"
local status = require "ragops.report.status"

local M = {}

M.FLAGS = { config = "string", json = "bool", plan = "string" }

-- The plan whose sources give the coverage: --plan or plans.default (an
-- error there is the operator's to fix), else the only plan of the folder
-- (or the demo's). Returns plan, or nil, note (why there is no coverage),
-- or nil, nil, exit code (printed).
local function coverage_plan(opts, cfg)
  local found, err = locate.resolve(opts.plan, cfg)
  if not found then
    if opts.plan or cfg.plans.default then return nil, nil, exit.fail(exit.usage, "%s", err) end
    return nil, err
  end
  local p, code = prelude.plan(found.path, {})
  if not p then return nil, nil, code end
  return p, nil, nil, found.how
end

-- The sources to measure, checked: nil, note when an implicit plan's SQL
-- does not run on this database (the demo's plan on another corpus).
local function checked_sources(conn, p, how)
  local sources = pipeline.selected_sources(p)
  local ok, code, err = store_target.check_sources(function(sql) return conn:query(sql) end, p, sources)
  if ok then return sources end
  if how == "only" or how == "demo" then
    return nil, nil, ("o plano %s (%s) não roda neste banco: %s"):format(p.name, p.file, err)
  end
  return nil, exit.fail(code, "%s", err)
end

-- `ragops status [--json] [--plan NOME|ARQUIVO] [--config F]`; coverage is
-- measured against the sources of the plan (ragops.plan.locate); without
-- one, the rest is shown and the coverage says it needs a plan.
function M.main(args, cli)
  local a = cli.parse(args, M.FLAGS)
  if #a.positional > 0 then cli.usage_error("status não aceita argumentos: %s", a.positional[1]) end
  local opts = a.options
  local cfg, code = prelude.config(opts)
  if not cfg then return code end
  local p, note, pcode, how = coverage_plan(opts, cfg)
  if pcode then return pcode end
  local conn, ccode = prelude.session(cfg, true)
  if not conn then return ccode end
  local sources = {}
  if p then
    local scode
    sources, scode, note = checked_sources(conn, p, how)
    if scode then conn:close(); return scode end
  end
  local st, qerr = status.collect(conn, cfg.database.table, sources or {})
  conn:close()
  if not st then return exit.fail(exit.unreachable, "%s", qerr) end
  st.plan = p and sources and p.name or nil
  st.coverage_note = note and ("cobertura não medida: " .. note) or nil
  local scrub = require "ragops.util.scrub" -- secrets masked; text: control characters escaped
  io.stdout:write(opts.json and (scrub.mask(status.json(st)) .. "\n") or scrub.text(status.format(st)))
  return exit.ok
end

return M
