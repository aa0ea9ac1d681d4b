-- ragops.run.endpoints: the provider's endpoints of a run (every run mode:
-- backfill, reindex, run, failures retry, scale-out units, sync): the pool
-- (ragops.provider.endpoints) built from the configuration with a limiter
-- per endpoint, its check before the run (a pool's endpoints must answer
-- the configured dimension), the quota keepers started with the run and
-- stopped at its end, and each change of an endpoint's health recorded in
-- the database for `ragops status`.
local endpoints = require "ragops.provider.endpoints"
local provider_client = require "ragops.provider.client"
local quota = require "ragops.provider.quota"
local quota_store = require "ragops.store.quota"
local ratelimit = require "ragops.provider.ratelimit"

local M = {}

-- The text of the check request sent to each endpoint of a pool.
M.PROBE_TEXT = "ragops"

-- The strictest of each numeric limit over the clients (nil when none says).
local function strictest_limits(list)
  local out = {}
  for _, e in ipairs(list) do
    for k, v in pairs(e.client.limits or {}) do
      if type(v) == "number" then out[k] = out[k] and math.min(out[k], v) or v
      elseif out[k] == nil then out[k] = v end
    end
  end
  return out
end

-- One statement on a pooled connection, a single attempt: the keeper's
-- own cadence is its retry (it renews again RENEW_MS later, and falls
-- back to local pacing when the database stays away); a health record
-- lost is written again at the endpoint's next change.
local function single_attempt(db_pool)
  return function(sql, ...)
    local args, n = { ... }, select("#", ...)
    local r = db_pool:run_once(function(conn) return conn:query(sql, unpack(args, 1, n)) end)
    return r[1], r[2], r[3]
  end
end

-- The run's pool: cfg's endpoints, each with its limiter at its
-- rate_limits within the plan's in_flight, calls timing out after
-- timeout_s; each change of health recorded through db_pool.
function M.build(cfg, s, log, in_flight, timeout_s, db_pool)
  local list = provider_client.endpoints(cfg, timeout_s, "document", log.warn)
  for _, e in ipairs(list) do
    local rl = e.rate_limits
    e.limiter = ratelimit.new {
      sched = s, requests_per_min = rl.requests_per_min, tokens_per_min = rl.tokens_per_min,
      max_concurrency = rl.max_concurrency, in_flight = in_flight, log = log,
    }
  end
  local store = quota_store.new(single_attempt(db_pool))
  local pool = endpoints.new { sched = s, log = log, endpoints = list, limits = strictest_limits(list) }
  pool.on_health = function(e)
    local down_ms = e.down_until and math.max(1, e.down_until - s.now()) or nil
    s.spawn(function() store:health(e.key, e.name, down_ms, e.down_reason) end)
  end
  pool.quota_store = store
  return pool
end

-- A pool of several endpoints is one model: each must answer the
-- configured dimension. Sends one short text to each; an endpoint that
-- does not answer is taken out (the run goes on with the others). Returns
-- true, or nil, pt-BR err (the configuration is wrong: exit 2).
function M.verify(pool, cfg, log)
  if #pool.list < 2 then return true end
  for _, e in ipairs(pool.list) do
    local batch, err, info = e.client:embed({ M.PROBE_TEXT })
    if not batch and info and info.kind == "dimension" then
      return nil, ("o endpoint %s (%s) do pool de provider.endpoints devolve vetores de outra dimensão (%s): "
        .. "um pool é um modelo só, com provider.dim = %d em todos os endpoints"):format(e.name, e.display,
        tostring(err), cfg.provider.dim)
    end
    if not batch then
      log.warn("endpoint %s (%s) do provedor não respondeu à verificação antes da execução (%s); "
        .. "começa fora e volta quando responder", e.name, e.display, tostring(err))
      pool:take_out(e, endpoints.take_out_reason(info) or "check")
    end
  end
  return true
end

-- Starts the quota keepers of pool; `owner` names this process (host:pid).
-- Every endpoint this process starts with is recorded live (`ragops status`
-- lists each endpoint a run used; the down ones were recorded by verify).
function M.start(pool, owner)
  pool:start_quota { store = pool.quota_store, holder = quota.holder_id(owner) }
  for _, e in ipairs(pool.list) do
    if not e.down_until then pool.on_health(e) end
  end
end

-- Stops the keepers (their slices go back to the other processes).
function M.stop(pool)
  pool:stop()
end

return M
