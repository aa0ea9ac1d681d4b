-- ragops.plan.locate: which plan file a command runs, in one place (used by
-- ragops.cli.prelude). One plan per corpus: every command (backfill,
-- reindex, sync, failures, status, model, run) takes `--plan NAME|FILE`;
-- without it, `plans.default` of the configuration; without that, the only
-- plan of the plans folder; else a pt-BR usage error listing the plans found.
-- The plans folder: `plans.dir` of the configuration (relative to the
-- configuration file, resolved by ragops.plan.config) or RAGOPS_PLANS; else
-- the runtime's plans/ (the demo's examples, whose corpus plan is
-- backfill.lua). Returns { path, dir, how } or nil, err (pt-BR).
local has_core, core = pcall(require, "ragops.core")

local M = {}

-- The demo's corpus plan in the runtime's plans/ (the other files there are
-- examples and golden sets, not a second corpus).
M.DEMO_PLAN = "backfill"

-- The runtime's plans folder (RAGOPS_HOME, set by engine/main.c).
function M.runtime_dir()
  return (RAGOPS_HOME or ".") .. "/plans"
end

-- A FILE (a path ending in .lua or containing "/"), not a NAME of the folder.
function M.is_file(choice)
  return choice:find("/", 1, true) ~= nil or choice:match("%.lua$") ~= nil
end

-- The *.lua files of dir, sorted, as names without ".lua"; or nil, err.
-- list(dir) -> entries or nil, err (core.list_dir in the binary).
function M.plans_in(dir, list)
  list = list or (has_core and core.list_dir)
  if not list then return nil, "listar pastas exige o binário ragops" end
  local entries, err = list(dir)
  if not entries then return nil, tostring(err) end
  local names = {}
  for _, entry in ipairs(entries) do
    local name = entry:match("^(.+)%.lua$")
    if name and name:sub(1, 1) ~= "." then names[#names + 1] = name end
  end
  table.sort(names)
  return names
end

local function found_text(names)
  if #names == 0 then return "nenhum" end
  return table.concat(names, ", ")
end

-- The file of NAME in dir, checked against the plans found there.
local function named(dir, name, names, how)
  if not name:match("^[%w_%-%.]+$") then
    return nil, ("--plan %q: esperado o NOME de um plano da pasta %s (letras, dígitos, _, - ou .) "
      .. "ou o caminho de um arquivo .lua"):format(name, dir)
  end
  for _, found in ipairs(names) do
    if found == name then return { path = dir .. "/" .. name .. ".lua", dir = dir, how = how } end
  end
  return nil, ("plano %q não encontrado na pasta de planos %s (esperado %s.lua); planos encontrados: %s")
    :format(name, dir, name, found_text(names))
end

-- The plan when nothing names one: the only plan of dir (or the demo's).
local function implicit(dir, names, runtime)
  if #names == 1 then return { path = dir .. "/" .. names[1] .. ".lua", dir = dir, how = "only" } end
  if runtime then
    for _, name in ipairs(names) do
      if name == M.DEMO_PLAN then return { path = dir .. "/" .. name .. ".lua", dir = dir, how = "demo" } end
    end
  end
  if #names == 0 then
    return nil, ("nenhum plano (*.lua) na pasta de planos %s: escreva o plano do acervo nela "
      .. "(docs/referencia-de-planos.md) ou informe --plan ARQUIVO.lua"):format(dir)
  end
  return nil, ("nenhum plano escolhido e a pasta de planos %s tem mais de um (%s): informe --plan NOME "
    .. "ou defina plans.default na configuração"):format(dir, found_text(names))
end

-- Resolves the plan: choice (the --plan value or nil), cfg (its plans
-- section), list (optional, for tests). Returns { path, dir, how = "flag" |
-- "default" | "only" | "demo" } or nil, err.
function M.resolve(choice, cfg, list)
  local plans = cfg and cfg.plans or {}
  local how = choice and "flag" or (plans.default and "default")
  choice = choice or plans.default
  if choice == "" then return nil, "--plan vazio: informe o NOME de um plano da pasta ou um arquivo .lua" end
  if choice and M.is_file(choice) then return { path = choice, how = how } end
  local dir = plans.dir or M.runtime_dir()
  local names, err = M.plans_in(dir, list)
  if not names then
    return nil, ("a pasta de planos %s não pôde ser lida (%s); confira plans.dir na configuração ou "
      .. "RAGOPS_PLANS"):format(dir, err)
  end
  if choice then return named(dir, choice, names, how) end
  return implicit(dir, names, plans.dir == nil)
end

return M
