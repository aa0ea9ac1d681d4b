-- ragops.cli: the command line. Parses arguments (pt-BR help and errors),
-- loads the configuration and dispatches to the commands. Runs inside the
-- main coroutine started by engine/main.c; returns the process exit code:
--   0 concluído; 1 concluído com itens na fila de falhas; 2 uso ou plano
--   inválido (nada gravado); 3 abortado por alerta; 4 dependência inalcançável.
local M = {}

M.EXIT = { ok = 0, dead_letters = 1, usage = 2, alert = 3, unreachable = 4 }

M.VERSION = "0.1.0"

local HELP = [=[
ragops %s: backfill e reindexação de dados relacionais em uma tabela pgvector para RAG.

Uso:
  ragops migrate                              cria/atualiza as tabelas do motor
  ragops run PLANO.lua [opções]               executa um plano
  ragops backfill [opções]                    atalho para plans/backfill.lua
  ragops reindex [filtros] [opções]           atalho para plans/reindex.lua
  ragops failures list [--entity-type T] [--run ID] [--all]
                                              fila de falhas (em aberto; --all = histórico)
  ragops failures retry [--entity-type T] [--id N[,N]] [--overwrite]
                                              reprocessa as falhas em aberto
  ragops index create --lists N --dim N [--method ivfflat|hnsw] [--maintenance-work-mem 2GB]
                     [--concurrently] [--alter-dim] [--dry-run]
                                              cria o índice vetorial (pgvector)
  ragops index drop [--name N] [--dry-run]    remove o índice (DROP INDEX CONCURRENTLY)
  ragops index status                         coluna, extensão, índices e probes recomendados
  ragops validate [GOLDEN.lua] [--k K] [--min-recall R] [--min-mrr M] [--probes N] [--report-json F]
                                              recall@k e MRR contra um conjunto de consultas
                                              (padrão: plans/validate_quality.lua; código 1 abaixo do limite)
  ragops embed-server [--port P] [--dim D]    servidor local de embeddings (veja --help)
  ragops help | --help                        esta ajuda
  ragops version                              versão

Opções de execução:
  --config ARQUIVO       configuração (formato de config.example.lua)
  --set chave=valor      parâmetro do plano (pode repetir)
  --report-json ARQUIVO  grava o relatório final em JSON
  --dry-run              simulação: nada é gravado, nenhum embedding é pedido
  --resume               exige retomar a execução interrompida do mesmo plano e parâmetros
                         (sem a opção, a retomada também acontece quando houver uma)
  --scale-out            vários processos com o mesmo comando dividem o trabalho em
                         unidades (FOR UPDATE SKIP LOCKED sob lease)
  --lease-s N            duração do lease de uma unidade, em segundos (padrão 60)
  --quiet                só erros no log do operador

Filtros de reindex:
  --entity-type T[,T2]   tipos de entidade
  --entity-id ID[,ID2]   entidades específicas (exige --entity-type)
  --since D --until D    intervalo de updated_at (ISO 8601; --since inclusivo, --until exclusivo)
  --only-missing         (padrão) ignora conteúdo inalterado
  --overwrite            reprocessa tudo o que foi selecionado (troca de modelo)

Variáveis de ambiente: DATABASE_URL, RAGOPS_EMBED_URL, OPENAI_API_KEY, RAGOPS_EMBED_MODEL.
Códigos de saída: 0 concluído; 1 concluído com falhas na fila; 2 uso/plano inválido;
3 abortado por alerta; 4 dependência inalcançável; 130 interrompido por sinal (retomável).
]=]

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
      if not kind then usage_error("opção desconhecida: --%s (veja ragops --help)", name) end
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
      usage_error("opção inválida: %s (veja ragops --help)", a)
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

local RUN_FLAGS = {
  config = "string", set = "list", ["report-json"] = "string", ["dry-run"] = "bool",
  quiet = "bool", resume = "bool", ["scale-out"] = "bool", ["lease-s"] = "string",
  ["entity-type"] = "string", ["entity-id"] = "string", since = "string", ["until"] = "string",
  ["only-missing"] = "bool", overwrite = "bool",
}

local function home_path(rel)
  return (RAGOPS_HOME or ".") .. "/" .. rel
end

-- Turns reindex/backfill filter flags into plan params (--set also works).
local function filter_params(opts, sets)
  local map = { ["entity-type"] = "entity_type", ["entity-id"] = "entity_id",
                since = "since", ["until"] = "until" }
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
  local a = M.parse(args, { config = "string", quiet = "bool" })
  if #a.positional > 0 then usage_error("migrate não aceita argumentos: %s", a.positional[1]) end
  return require("ragops.engine").migrate(a.options)
end

function commands.run(args)
  local a = M.parse(args, RUN_FLAGS)
  if #a.positional ~= 1 then usage_error("uso: ragops run PLANO.lua [opções]") end
  return require("ragops.engine").run_plan(a.positional[1], a.options, filter_params(a.options, a.sets))
end

local function plan_shortcut(plan_file)
  return function(args)
    local a = M.parse(args, RUN_FLAGS)
    if #a.positional > 0 then usage_error("argumento inesperado: %s", a.positional[1]) end
    return require("ragops.engine").run_plan(home_path("plans/" .. plan_file), a.options,
      filter_params(a.options, a.sets))
  end
end
commands.backfill = plan_shortcut("backfill.lua")
commands.reindex = plan_shortcut("reindex.lua")

function commands.failures(args)
  local sub = table.remove(args, 1)
  local a = M.parse(args, { config = "string", ["entity-type"] = "string", run = "string",
                            id = "string", all = "bool", quiet = "bool", ["report-json"] = "string",
                            overwrite = "bool" })
  if #a.positional > 0 then usage_error("argumento inesperado: %s", a.positional[1]) end
  for _, key in ipairs({ "run", "id" }) do
    local v = a.options[key]
    if v and not v:match("^%d+[%d,]*$") then
      usage_error("--%s espera número(s) separados por vírgula, recebi %q", key, v)
    end
  end
  local engine = require "ragops.engine"
  if sub == "list" then return engine.failures_list(a.options) end
  if sub == "retry" then
    if a.options.all then usage_error("--all só vale para failures list") end
    return engine.failures_retry(a.options, home_path("plans/reprocess_failures.lua"))
  end
  usage_error("uso: ragops failures list|retry [--entity-type T] [--run ID] [--id N]")
end

-- `ragops index ...` and `ragops validate ...` live in their own modules.
function commands.index(args)
  return require("ragops.index").main(args, M)
end

function commands.validate(args)
  return require("ragops.validate").main(args, M)
end

function commands.help()
  io.stdout:write(HELP:format(M.VERSION))
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
    io.stderr:write(HELP:format(M.VERSION))
    return M.EXIT.usage
  end
  local cmd = commands[name]
  if not cmd then
    io.stderr:write(("ragops: comando desconhecido: %s (veja ragops --help)\n"):format(name))
    return M.EXIT.usage
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
