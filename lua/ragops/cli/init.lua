-- ragops.cli: the command line. Parses arguments (pt-BR help and errors)
-- and dispatches to the commands (ragops.cli.commands.*, each given this
-- module for parse/usage_error/home_path; each starts through
-- ragops.cli.prelude). Runs inside the main coroutine started by
-- engine/main.c; returns the process exit code (ragops.util.exit).
local cmd_batch = require "ragops.cli.commands.batch"
local cmd_failures = require "ragops.cli.commands.failures"
local cmd_index = require "ragops.cli.commands.index"
local cmd_migrate = require "ragops.cli.commands.migrate"
local cmd_model = require "ragops.cli.commands.model"
local cmd_run = require "ragops.cli.commands.run"
local cmd_status = require "ragops.cli.commands.status"
local cmd_sync = require "ragops.cli.commands.sync"
local cmd_validate = require "ragops.cli.commands.validate"
local exit = require "ragops.util.exit"
local help = require "ragops.cli.commands.help"
local plan_mod = require "ragops.plan"

local M = {}

M.VERSION = "0.1.0"

-- Raised for usage errors; carries a pt-BR message.
local UsageError = {}
local function usage_error(fmt, ...)
  error(setmetatable({ message = fmt:format(...) }, UsageError), 0)
end

-- Parses argv into { command, positional = {}, options = {}, sets = {} }.
-- spec: { [flag] = "string" | "bool" | "list" }; only a "list" flag (--set,
-- --entity-id of some commands) may be given more than once.
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
      if kind ~= "list" and out.options[name] ~= nil then
        usage_error("a opção --%s foi informada mais de uma vez; informe-a uma vez só", name)
      end
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

local commands = {
  migrate = cmd_migrate.main,
  run = cmd_run.main, backfill = cmd_run.shortcut("backfill"), reindex = cmd_run.shortcut("reindex"),
  failures = cmd_failures.main,
  batch = cmd_batch.main,
  index = cmd_index.main,
  validate = cmd_validate.main,
  status = cmd_status.main,
  sync = cmd_sync.main,
  model = cmd_model.main,
}

-- Flags of each command with options of its own (cli_help_spec checks that
-- the help of each lists them all).
M.FLAGS = {
  migrate = cmd_migrate.FLAGS,
  run = cmd_run.FLAGS, backfill = cmd_run.FLAGS, reindex = cmd_run.FLAGS,
  ["failures list"] = cmd_failures.FLAGS.list, ["failures retry"] = cmd_failures.FLAGS.retry,
  ["batch collect"] = cmd_batch.FLAGS.collect, ["batch cancel"] = cmd_batch.FLAGS.cancel,
  status = cmd_status.FLAGS,
  sync = cmd_sync.FLAGS, ["sync install"] = cmd_sync.INSTALL_FLAGS, ["sync uninstall"] = cmd_sync.INSTALL_FLAGS,
}
for sub, flags in pairs(cmd_model.FLAGS) do M.FLAGS["model " .. sub] = flags end

-- A path inside the installation (RAGOPS_HOME, set by engine/main.c).
function M.home_path(rel)
  return (RAGOPS_HOME or ".") .. "/" .. rel
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
    return exit.usage
  end
  local cmd = commands[name]
  if not cmd then
    return exit.fail(exit.usage, "comando desconhecido: %s (veja ragops --help)", name)
  end
  if help.asked(argv) and cmd ~= commands.help then
    table.insert(argv, 1, name)
    cmd = commands.help
  end
  local ok, result = xpcall(function() return cmd(argv, M) end, function(e)
    if getmetatable(e) == UsageError then return e end
    return debug.traceback(tostring(e), 2)
  end)
  if ok then return result end
  if getmetatable(result) == UsageError then
    return exit.fail(exit.usage, "%s", result.message)
  end
  return exit.fail(exit.internal, "erro interno: %s", tostring(result))
end

M.usage_error = usage_error

-- The value of --flag in options (M.parse's) as a decimal integer in
-- [low, high], or nil when the flag is absent; anything else (0x10, 1e3,
-- 16.0) is a usage error.
function M.integer_option(options, flag, low, high)
  local v = options[flag]
  if v == nil then return nil end
  local n = tostring(v):match("^%-?%d+$") and tonumber(v)
  if not plan_mod.is_integer(n) or n < low or n > high then
    usage_error("--%s espera um inteiro entre %d e %d, recebi %q", flag, low, high, v)
  end
  return n
end
return M
