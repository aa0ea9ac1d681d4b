-- ragops.cli: the command line. Parses arguments (pt-BR help and errors),
-- loads the configuration and dispatches to the commands. Runs inside the
-- main coroutine started by engine/main.c; returns the process exit code:
--   0 concluído; 1 concluído com itens na fila de falhas; 2 uso ou plano
--   inválido (nada gravado); 3 abortado por alerta; 4 dependência inalcançável.
local M = {}

M.EXIT = { ok = 0, dead_letters = 1, usage = 2, alert = 3, unreachable = 4 }

M.VERSION = "0.1.0"

local help = require "ragops.cmd.help"
local plan_mod = require "ragops.plan"

-- Raised for usage errors; carries a pt-BR message.
local UsageError = {}
local function usage_error(fmt, ...)
  error(setmetatable({ message = fmt:format(...) }, UsageError), 0)
end

-- Parses argv into { command, positional = {}, options = {}, sets = {} }.
-- spec: { [flag] = "string" | "bool" | "list" }.
function M.parse(args, spec)
  local out = { positional = {}, options = {}, sets = {} }
  local i = 1
  while i <= #args do
    local a = args[i]
    local name, inline = a:match("^%-%-([%w%-]+)=(.*)$")
    name = name or a:match("^%-%-([%w%-]+)$")
    if name then
      local kind = spec[name]
      if not kind then usage_error("opção desconhecida: --%s (veja a ajuda do comando: --help)", name) end
      if kind == "bool" then
        if inline then usage_error("a opção --%s não aceita valor", name) end
        out.options[name] = true
      else
        local value = inline
        if not value then
          i = i + 1
          value = args[i]
          if value == nil or value:match("^%-%-") then
            usage_error("a opção --%s exige um valor", name)
          end
        end
        if kind == "list" then
          local list = out.options[name] or {}
          list[#list + 1] = value
          out.options[name] = list
        else
          out.options[name] = value
        end
      end
    elseif a:match("^%-") and a ~= "-" then
      usage_error("opção inválida: %s (veja a ajuda do comando: --help)", a)
    else
      out.positional[#out.positional + 1] = a
    end
    i = i + 1
  end
  for _, kv in ipairs(out.options.set or {}) do
    local k, v = kv:match("^([%a_][%w_%.]*)=(.*)$")
    if not k then usage_error("--set espera chave=valor, recebi %q", kv) end
    out.sets[k] = v
  end
  return out
end

-- Flags of each command (the help of each lists them all: cli_help_spec).
local RUN_FLAGS = {
  config = "string", set = "list", ["report-json"] = "string", ["dry-run"] = "bool",
  quiet = "bool", resume = "bool", ["scale-out"] = "bool", ["lease-s"] = "string",
  ["entity-type"] = "string", ["entity-id"] = "string", since = "string", ["until"] = "string",
  ["only-missing"] = "bool", overwrite = "bool",
  ["metrics-listen"] = "string", ["metrics-push"] = "string", -- issue 10
}
for _, item in ipairs(plan_mod.LIMITS) do RUN_FLAGS[item.flag] = "string" end

local FAILURE_FILTERS = { config = "string", quiet = "bool", ["entity-type"] = "string",
                          run = "string", id = "string" }
local function with_flags(base, extra)
  local out = {}
  for k, v in pairs(base) do out[k] = v end
  for k, v in pairs(extra) do out[k] = v end
  return out
end

M.FLAGS = {
  migrate = { config = "string", quiet = "bool" },
  run = RUN_FLAGS, backfill = RUN_FLAGS, reindex = RUN_FLAGS,
  ["failures list"] = with_flags(FAILURE_FILTERS, { all = "bool" }),
  ["failures retry"] = with_flags(FAILURE_FILTERS, { overwrite = "bool", ["report-json"] = "string" }),
}

local function home_path(rel)
  return (RAGOPS_HOME or ".") .. "/" .. rel
end

-- Turns the filter and operating-limit flags of run/backfill/reindex into
-- plan params (the same keys --set takes; a flag wins over --set).
local function plan_params(opts, sets)
  local map = { ["entity-type"] = "entity_type", ["entity-id"] = "entity_id",
                since = "since", ["until"] = "until" }
  for _, item in ipairs(plan_mod.LIMITS) do map[item.flag] = item.key end
  for flag, key in pairs(map) do
    if opts[flag] then sets[key] = opts[flag] end
  end
  if opts.overwrite and opts["only-missing"] then
    usage_error("--overwrite e --only-missing são mutuamente exclusivas")
  end
  if opts.overwrite then sets.mode = "overwrite" end
  if opts["only-missing"] then sets.mode = "only_missing" end
  return sets
end

local commands = {}

function commands.migrate(args)
  local a = M.parse(args, M.FLAGS.migrate)
  if #a.positional > 0 then usage_error("migrate não aceita argumentos: %s", a.positional[1]) end
  return require("ragops.engine").migrate(a.options)
end

function commands.run(args)
  local a = M.parse(args, RUN_FLAGS)
  if #a.positional ~= 1 then usage_error("uso: ragops run PLANO.lua [opções]") end
  return require("ragops.engine").run_plan(a.positional[1], a.options, plan_params(a.options, a.sets))
end

local function plan_shortcut(plan_file)
  return function(args)
    local a = M.parse(args, RUN_FLAGS)
    if #a.positional > 0 then usage_error("argumento inesperado: %s", a.positional[1]) end
    return require("ragops.engine").run_plan(home_path("plans/" .. plan_file), a.options,
      plan_params(a.options, a.sets))
  end
end
commands.backfill = plan_shortcut("backfill.lua")
commands.reindex = plan_shortcut("reindex.lua")

function commands.failures(args)
  local sub = table.remove(args, 1)
  local flags = M.FLAGS["failures " .. tostring(sub)]
  if not flags then usage_error("uso: ragops failures list|retry [opções] (veja ragops failures --help)") end
  local a = M.parse(args, flags)
  if #a.positional > 0 then usage_error("argumento inesperado: %s", a.positional[1]) end
  for _, key in ipairs({ "run", "id" }) do
    local v = a.options[key]
    if v and not v:match("^%d+[%d,]*$") then
      usage_error("--%s espera número(s) separados por vírgula, recebi %q", key, v)
    end
  end
  local engine = require "ragops.engine"
  local types = a.options["entity-type"]
  if types and #engine.split_list(types) == 0 then
    usage_error("--entity-type vazio (%q): informe ao menos um tipo, ou omita o filtro", types)
  end
  if sub == "list" then return engine.failures_list(a.options) end
  return engine.failures_retry(a.options, home_path("plans/reprocess_failures.lua"))
end

-- `ragops index ...` and `ragops validate ...` live in their own modules.
function commands.index(args)
  return require("ragops.index").main(args, M)
end

function commands.validate(args)
  return require("ragops.validate").main(args, M)
end

function commands.help(args)
  local name = table.remove(args, 1)
  if name and not commands[name] then usage_error("comando desconhecido: %s (veja ragops --help)", name) end
  io.stdout:write(help.text(name, args, M.VERSION))
  return 0
end
commands["--help"] = commands.help
commands["-h"] = commands.help

function commands.version()
  io.stdout:write("ragops " .. M.VERSION .. "\n")
  return 0
end
commands["--version"] = commands.version

function M.main(...)
  local argv = { ... }
  local name = table.remove(argv, 1)
  if not name then
    io.stderr:write(help.text(nil, argv, M.VERSION))
    return M.EXIT.usage
  end
  local cmd = commands[name]
  if not cmd then
    io.stderr:write(("ragops: comando desconhecido: %s (veja ragops --help)\n"):format(name))
    return M.EXIT.usage
  end
  if help.asked(argv) and cmd ~= commands.help then
    table.insert(argv, 1, name)
    cmd = commands.help
  end
  local ok, result = xpcall(function() return cmd(argv) end, function(e)
    if getmetatable(e) == UsageError then return e end
    return debug.traceback(tostring(e), 2)
  end)
  if ok then return result end
  if getmetatable(result) == UsageError then
    io.stderr:write("ragops: " .. result.message .. "\n")
    return M.EXIT.usage
  end
  io.stderr:write("ragops: erro interno: " .. tostring(result) .. "\n")
  return M.EXIT.usage
end

M.usage_error = usage_error
return M
