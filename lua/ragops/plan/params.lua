-- ragops.plan.params: the params of a run (--set and the filter/limit flags of
-- backfill/reindex) applied to a loaded plan: unknown keys refused, filters
-- turned into the plan's scope, operating limits into batch.*/retry.*.
-- Pure Lua (plans' unit specs load plans through it via ragops.testing).
local plan_mod = require "ragops.plan"
local ratelimit = require "ragops.provider.ratelimit"
local copy_table = require("ragops.util.tables").shallow_copy

local M = {}

-- "a, b,,c" -> { "a", "b", "c" } (blanks dropped).
local function split_list(text)
  local out = {}
  for item in tostring(text):gmatch("[^,]+") do
    item = item:match("^%s*(.-)%s*$")
    if item ~= "" then out[#out + 1] = item end
  end
  return out
end
M.split_list = split_list

-- Params the engine itself reads (the filters of backfill/reindex, and the
-- target: "shadow" runs on the model change's shadow, ragops.vector.model) and the
-- operating limits; with the keys the plan reads, the valid --set keys.
M.FILTER_KEYS = { "entity_type", "entity_id", "since", "until", "mode", "target" }
local FILTER_FLAGS = { entity_type = "--entity-type", entity_id = "--entity-id" }

-- A filter list that selects nothing is a usage error, not "no filter" (an
-- empty --entity-id would widen a reindex to the whole type).
local function non_empty_list(params, key)
  local list = split_list(params[key])
  if #list == 0 then
    return nil, ("%s vazio (%q): informe ao menos um valor, ou omita o filtro")
      :format(FILTER_FLAGS[key], tostring(params[key]))
  end
  return list
end

-- Turns the filter params (flags of backfill/reindex, or --set) into plan
-- overrides. Returns overrides (or nil when there is no filter), or nil, err.
function M.scope_overrides(params)
  params = params or {}
  local scope, overrides = {}, {}
  if params.entity_id and not params.entity_type then
    return nil, "--entity-id exige --entity-type (o id só identifica a entidade junto com o tipo)"
  end
  for key, field in pairs({ entity_type = "entity_types", entity_id = "entity_ids" }) do
    if params[key] then
      local list, err = non_empty_list(params, key)
      if not list then return nil, err end
      scope[field] = list
    end
  end
  if params.since then scope.since = params.since end
  if params["until"] then scope["until"] = params["until"] end
  if next(scope) then overrides.scope = scope end
  if params.mode then overrides.mode = params.mode end
  if next(overrides) == nil then return nil end
  return overrides
end

-- The --set keys valid for plan p, sorted.
local function valid_keys(p)
  local keys = {}
  for _, key in ipairs(M.FILTER_KEYS) do keys[#keys + 1] = key end
  for _, item in ipairs(plan_mod.LIMITS) do keys[#keys + 1] = item.key end
  for key in pairs(plan_mod.params_read(p)) do
    if type(key) == "string" then keys[#keys + 1] = key end
  end
  table.sort(keys)
  local out = {}
  for i, key in ipairs(keys) do
    if key ~= keys[i - 1] then out[#out + 1] = key end
  end
  return out
end

-- Rejects params (from --set and the flags) that neither the engine nor the
-- plan reads. Returns true or nil, err.
local function check_param_keys(p, params)
  local unknown = plan_mod.first_unknown_key(params, valid_keys(p))
  if unknown == nil then return true end
  return nil, ("--set %s: chave desconhecida para o plano %q; chaves válidas: %s")
    :format(tostring(unknown), p.name, table.concat(valid_keys(p), ", "))
end

-- Splits params into the run's params (its identity: filters, plan keys,
-- limit) and the operating limits that only tune it (batch.*, retry.*).
local function split_params(params)
  local run_params, limits = {}, {}
  for key, value in pairs(params) do
    if type(key) == "string" and key:find(".", 1, true) then limits[key] = value else run_params[key] = value end
  end
  limits.limit = params.limit
  return run_params, limits
end

-- Operating limits the command line gives as text must be plain decimal
-- numbers: tonumber would also take 0x10, 1e309, inf and nan. Text that is
-- no number at all is left to the plan's validator (its own message).
-- Returns true or nil, err.
local function check_limit_texts(limits)
  for _, item in ipairs(plan_mod.LIMITS) do
    local text = limits[item.key]
    if type(text) == "string" and tonumber(text) and not text:match("^%-?%d+$")
        and not text:match("^%-?%d*%.%d+$") then
      return nil, ("--%s (--set %s): valor %q inválido; esperado um número em decimal (como 64 ou 1.5), "
        .. "sem 0x, expoente, inf ou nan"):format(item.flag, item.key, text)
    end
  end
  return true
end

-- The operations one plan serves (plan key `operations`), and the tuning an
-- operation gets when the plan says nothing: failures retry reprocesses
-- problem documents, in small batches, and a high failure rate there is
-- expected (a warning, not an abort).
M.OPERATIONS = { "backfill", "reindex", "failures_retry", "sync" }
local function default_tuning(p, operation)
  if operation ~= "failures_retry" then return {} end
  return {
    batch = { size = math.min(p.batch.size, 16), in_flight = math.min(p.batch.in_flight, 2) },
    -- problem documents are reprocessed online, not in a batch of up to 24 h
    embed = { mode = "online" },
    alerts = { failure_rate = { above = 1, window = 100, min_samples = 100, action = "warn" } },
  }
end

-- Plan overrides (for plan.with) turning plan p into its version for
-- operation: the defaults, then the plan's operations[operation], each
-- section overlaid key by key on the plan's own.
function M.operation_overrides(p, operation)
  local out = {}
  local layers = { default_tuning(p, operation), (p.operations or {})[operation] or {} }
  for _, layer in ipairs(layers) do
    for section, values in pairs(layer) do
      out[section] = out[section] or copy_table(p[section] or {})
      for key, value in pairs(values) do out[section][key] = value end
    end
  end
  return out
end

-- p for operation (nil: as written). Returns plan or nil, err.
local function for_operation(p, operation)
  if not operation then return p end
  local overrides = M.operation_overrides(p, operation)
  if next(overrides) == nil then return p end
  local ok, result = pcall(plan_mod.with, p, overrides, ("%s (operations.%s)"):format(p.file, operation))
  if not ok then return nil, tostring(result) end
  return result
end

-- Loads the plan, tunes it for operation (nil: none; see M.OPERATIONS) and
-- applies the filter params and the operating limits. Returns plan, run
-- params (what identifies the run) or nil, err.
function M.load_plan(path, params, operation)
  local run_params, limits = split_params(params or {})
  local texts_ok, terr = check_limit_texts(limits)
  if not texts_ok then return nil, terr end
  local loaded, perr = plan_mod.load(path, run_params)
  if not loaded then return nil, perr end
  local p, oerr = for_operation(loaded, operation)
  if not p then return nil, oerr end
  local known, kerr = check_param_keys(p, params or {})
  if not known then return nil, kerr end
  local overrides, oerr = M.scope_overrides(run_params)
  if oerr then return nil, oerr end
  overrides = overrides or {}
  for key, value in pairs(plan_mod.limit_overrides(p, limits)) do overrides[key] = value end
  if next(overrides) then
    local ok, result = pcall(plan_mod.with, p, overrides, p.file .. " (linha de comando)")
    if not ok then return nil, tostring(result) end
    p = result
  end
  return p, run_params
end

-- The effective operating limits of plan p under cfg (first log line and
-- report): the plan's (or the flags') values, and the request timeout
-- (plan/--timeout over provider.timeout_s). in_flight is the effective
-- concurrency; in_flight_note says why when a provider limit capped it.
function M.limits(p, cfg)
  local rl = cfg and cfg.provider.rate_limits or {}
  local in_flight, note = ratelimit.effective_concurrency(p.batch.in_flight, rl.max_concurrency)
  return { batch_size = p.batch.size, in_flight = in_flight, in_flight_note = note, limit = p.limit,
           max_retries = p.retry.attempts,
           timeout_s = p.retry.timeout_s or (cfg and cfg.provider.timeout_s),
           budget_usd = p.budget and p.budget.usd }
end

return M
