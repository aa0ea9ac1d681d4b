-- ragops.cli.commands.batch: `ragops batch collect | cancel`, the batches of
-- the Batch API mode (ragops.run.batch) for the operator. collect goes on
-- with the plan's latest run that has batches not collected, with that
-- run's own params (the same as running its command again): it waits for
-- them, collects them and finishes the run. cancel asks the provider to
-- cancel every batch of the plan's runs still in flight; the run collects
-- what they finished and leaves the rest as dead letters (batch_cancelled).
local batch_api = require "ragops.provider.batch"
local batches = require "ragops.store.batches"
local cjson = require "cjson"
local exit = require "ragops.util.exit"
local log = require "ragops.obs.log"
local plan_mod = require "ragops.plan"
local pool_mod = require "ragops.store.pool"
local prelude = require "ragops.cli.prelude"
local sched = require "ragops.util.sched"
local store_target = require "ragops.store.target"

local M = {}

local COMMON = { config = "string", quiet = "bool", plan = "string", ["log-format"] = "string" }
-- collect takes the operating limits of the run's command too (--budget-usd...).
local COLLECT = { ["report-json"] = "string" }
for k, v in pairs(COMMON) do COLLECT[k] = v end
for _, item in ipairs(plan_mod.LIMITS) do COLLECT[item.flag] = "string" end
M.FLAGS = { collect = COLLECT, cancel = COMMON }

-- The runs of plan_name with parts not finished with, newest first:
-- { { id, params } } or nil, exit code (printed).
local function runs_with_batches(pool, plan_name)
  local rows, err = pool:with(function(c)
    local ok, serr, scode = store_target.check_schema(c)
    if not ok then return { err = serr, code = scode } end
    return c:query([[select r.id, r.params::text as params from ragops_runs r
                      where r.plan = $1 and r.status in ('running', 'interrupted', 'aborted', 'failed', 'waiting')
                        and exists (select 1 from ragops_batches b where b.run_id = r.id and b.state = any($2::text[]))
                      order by r.id desc]], plan_name, batches.OPEN_STATES)
  end)
  if rows and rows.err then return nil, exit.fail(rows.code, "%s", rows.err) end
  if not rows then return nil, exit.fail(exit.unreachable, "falha ao consultar os lotes: %s", tostring(err)) end
  return rows
end

local function open_pool(cfg)
  return pool_mod.new { conninfo = cfg.database.url, sched = sched.real(), size = 1, log = log }
end

-- A run's params (JSON) as the --set values of its command.
local function params_of(json)
  local ok, decoded = pcall(cjson.decode, json)
  local out = {}
  for k, v in pairs(ok and type(decoded) == "table" and decoded or {}) do
    out[k] = type(v) == "table" and table.concat(v, ",") or tostring(v)
  end
  return out
end

-- `ragops batch collect`
local function collect(opts, cfg)
  local plan_path, pcode = prelude.locate(opts.plan, cfg)
  if not plan_path then return pcode end
  local p, perr = prelude.plan(plan_path, {}, nil)
  if not p then return perr end
  local pool = open_pool(cfg)
  local runs, code = runs_with_batches(pool, p.name)
  pool:close()
  if not runs then return code end
  if #runs == 0 then
    io.stdout:write(("nenhum lote por coletar do plano %q\n"):format(p.name))
    return exit.ok
  end
  log.info("coletando os lotes da execução %d do plano %q", runs[1].id, p.name)
  local params = params_of(runs[1].params)
  for _, item in ipairs(plan_mod.LIMITS) do
    if opts[item.flag] then params[item.key] = opts[item.flag] end
  end
  params["embed.mode"] = "batch"
  return prelude.run_plan(plan_path, { plan = opts.plan, resume = true, config = opts.config,
                                       ["report-json"] = opts["report-json"] }, params, cfg, nil)
end

-- The store-like object batches.* takes, over the pool (its retry policy).
local function pool_store(pool)
  return { query = function(_, ...)
    local args = { ... }
    return pool:with(function(c) return c:query(unpack(args, 1, select("#", unpack(args)))) end)
  end }
end

-- Cancels one part: at the provider when it has its batch; a part sealed
-- but never uploaded (ready) is cancelled here. Returns true (cancelled),
-- false (another process moved it meanwhile) or nil, code.
local function cancel_part(store, api, row, run_id)
  local state = "cancelled"
  if row.state ~= "ready" then
    local b, err, kind = api:cancel(row.batch_id)
    if not b then
      return nil, exit.fail(batch_api.exit_code(kind),
        "o provedor não cancelou o lote %s: %s", tostring(row.batch_id), tostring(err))
    end
    state = b.status
  end
  local ok, uerr = batches.update(store, row.id, { state = state }, nil, { row.state })
  if ok == nil then return nil, exit.fail(exit.unreachable, "falha ao registrar o cancelamento: %s", tostring(uerr)) end
  if not ok then return false end
  log.info("lote %s da execução %d: %s", tostring(row.batch_id or row.file_name), run_id, state)
  return true
end

-- Cancels the batches in flight of run_id; returns how many, or nil, code.
local function cancel_run(pool, api, run_id)
  local store = pool_store(pool)
  local rows = batches.open_parts(store, run_id)
  if not rows then return nil, exit.fail(exit.unreachable, "falha ao ler os lotes da execução %d", run_id) end
  local n = 0
  for _, row in ipairs(rows) do
    if row.state == "ready" or (batches.PROVIDER_ACTIVE[row.state] and row.state ~= "cancelling") then
      local ok, code = cancel_part(store, api, row, run_id)
      if ok == nil then return nil, code end
      if ok then n = n + 1 end
    end
  end
  return n
end

-- `ragops batch cancel`
local function cancel(opts, cfg)
  local p, perr = prelude.plan(nil, {}, nil, opts.plan, cfg)
  if not p then return perr end
  local api, aerr = batch_api.new(cfg.provider, { policy = p.retry, sched = sched.real() })
  if not api then return exit.fail(exit.usage, "%s", aerr) end
  local pool = open_pool(cfg)
  local runs, code = runs_with_batches(pool, p.name)
  local total = 0
  for _, r in ipairs(runs or {}) do
    local n, ccode = cancel_run(pool, api, r.id)
    if not n then pool:close(); return ccode end
    total = total + n
  end
  pool:close()
  if not runs then return code end
  io.stdout:write(("%d lote(s) do plano %q cancelado(s) (no provedor, ou aqui os que ainda não tinham sido enviados); "
    .. "rode o mesmo comando da execução (ou "
    .. "`ragops batch collect --plan %s`) para coletar o que eles terminaram\n"):format(total, p.name, p.name))
  return exit.ok
end

function M.main(args, cli)
  local sub = args[1]
  if sub ~= "collect" and sub ~= "cancel" then cli.usage_error("uso: ragops batch collect|cancel [opções]") end
  local a = cli.parse({ unpack(args, 2) }, M.FLAGS[sub])
  if #a.positional > 0 then cli.usage_error("argumento inesperado: %s", a.positional[1]) end
  local cfg, code = prelude.config(a.options)
  if not cfg then return code end
  if sub == "collect" then return collect(a.options, cfg) end
  return cancel(a.options, cfg)
end

return M
