-- ragops.cli.commands.run: `ragops run PLANO.lua`, and its shortcuts `ragops backfill`
-- and `ragops reindex` (plans/backfill.lua, plans/reindex.lua): the flags
-- become plan params and ragops.run does the run.
local plan_mod = require "ragops.plan"
local prelude = require "ragops.cli.prelude"

local M = {}

-- Flags of run, backfill and reindex (the help lists them all: cli_help_spec).
M.FLAGS = {
  config = "string", set = "list", ["report-json"] = "string", ["dry-run"] = "bool",
  quiet = "bool", resume = "bool", ["scale-out"] = "bool", ["lease-s"] = "string",
  ["entity-type"] = "string", ["entity-id"] = "string", since = "string", ["until"] = "string",
  ["only-missing"] = "bool", overwrite = "bool",
  ["metrics-listen"] = "string", ["metrics-push"] = "string",
  ["log-format"] = "string", ["report-html"] = "string", ["estimate-json"] = "string", target = "string",
}
for _, item in ipairs(plan_mod.LIMITS) do M.FLAGS[item.flag] = "string" end

-- Turns the filter and operating-limit flags into plan params (the same
-- keys --set takes; a flag wins over --set).
local function plan_params(opts, sets, cli)
  local map = { ["entity-type"] = "entity_type", ["entity-id"] = "entity_id",
                since = "since", ["until"] = "until", target = "target" }
  for _, item in ipairs(plan_mod.LIMITS) do map[item.flag] = item.key end
  for flag, key in pairs(map) do
    if opts[flag] then sets[key] = opts[flag] end
  end
  if opts.overwrite and opts["only-missing"] then
    cli.usage_error("--overwrite e --only-missing são mutuamente exclusivas")
  end
  if opts.overwrite then sets.mode = "overwrite" end
  if opts["only-missing"] then sets.mode = "only_missing" end
  return sets
end

-- Runs the plan at path with the parsed arguments a; returns the exit code.
local function run_plan(path, a, cli)
  local params = plan_params(a.options, a.sets, cli)
  local cfg, code = prelude.config(a.options)
  if not cfg then return code end
  return prelude.run_plan(path, a.options, params, cfg)
end

-- `ragops run PLANO.lua [opções]`; returns the exit code.
function M.main(args, cli)
  local a = cli.parse(args, M.FLAGS)
  if #a.positional ~= 1 then cli.usage_error("uso: ragops run PLANO.lua [opções]") end
  return run_plan(a.positional[1], a, cli)
end

-- The command running plans/<plan_file> (backfill, reindex).
function M.shortcut(plan_file)
  return function(args, cli)
    local a = cli.parse(args, M.FLAGS)
    if #a.positional > 0 then cli.usage_error("argumento inesperado: %s", a.positional[1]) end
    return run_plan(cli.home_path("plans/" .. plan_file), a, cli)
  end
end

return M
