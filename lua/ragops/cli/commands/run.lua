-- ragops.cli.commands.run: `ragops run [PLANO]`, `ragops backfill` and `ragops reindex`:
-- the same plan of the corpus (--plan NOME|ARQUIVO, else plans.default, else
-- the only plan of the plans folder: ragops.plan.locate) as a full run or
-- scoped by the filters; the flags become plan params and ragops.run does
-- the run.
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
  plan = "string", rpm = "string", tpm = "string", detach = "bool", join = "bool", worker = "string",
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

-- Runs the plan at path (nil: the one --plan names) with the parsed
-- arguments a for operation; returns the exit code.
local function run_plan(path, a, cli, operation)
  local params = plan_params(a.options, a.sets, cli)
  -- --join: a scale-out process that only helps a run in progress.
  if a.options.join then a.options["scale-out"] = true end
  local cfg, code = prelude.config(a.options)
  if not cfg then return code end
  -- Pacing (manage.py's --sleep): the provider's limits for this run.
  local limits = cfg.provider.rate_limits
  limits.requests_per_min = cli.integer_option(a.options, "rpm", 1, 100000000) or limits.requests_per_min
  limits.tokens_per_min = cli.integer_option(a.options, "tpm", 1, 1000000000000) or limits.tokens_per_min
  return prelude.run_plan(path, a.options, params, cfg, operation)
end

-- `ragops run [PLANO] [opções]`: PLANO (or --plan) is a NAME of the plans
-- folder or a FILE; returns the exit code.
function M.main(args, cli)
  local a = cli.parse(args, M.FLAGS)
  if #a.positional > 1 or (#a.positional == 1 and a.options.plan) then
    cli.usage_error("uso: ragops run [PLANO | --plan PLANO] [opções]")
  end
  a.options.plan = a.positional[1] or a.options.plan
  return run_plan(nil, a, cli, nil)
end

-- The command running the corpus's plan for operation (backfill, reindex).
function M.shortcut(operation)
  return function(args, cli)
    local a = cli.parse(args, M.FLAGS)
    if #a.positional > 0 then cli.usage_error("argumento inesperado: %s (o plano vem de --plan)", a.positional[1]) end
    return run_plan(nil, a, cli, operation)
  end
end

return M
