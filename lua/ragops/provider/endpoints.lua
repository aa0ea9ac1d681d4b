-- ragops.provider.endpoints: the provider's endpoints as one pool, the way
-- every online provider call of a run leaves (the embed stage asks it for
-- an endpoint, calls it, and hands it the outcome). One endpoint is
-- provider.url; provider.endpoints makes several for the same model (Azure
-- deployments in several regions, TEI/vLLM replicas).
--
-- Each endpoint has its client, its limiter (ragops.provider.ratelimit, at
-- the endpoint's rate_limits) and, from start_quota on, its keeper of the
-- quota shared with every other ragops process using it
-- (ragops.provider.quota, keyed by dialect, URL without credentials and
-- model: ragops.provider.client endpoints). The pool:
--   * picks an endpoint by smooth weighted round robin over the live ones,
--     each weighted by its configured weight times the room left in its
--     limiter (an endpoint whose quota is spent gets fewer requests);
--   * takes an endpoint out after a connection failure, a 5xx or a refused
--     credential (401/403) when another one is live, for TAKE_OUT_MS,
--     doubling at each new take-out up to TAKE_OUT_MAX_MS; the failed call
--     is then transient, so the provider policy retries it elsewhere; when
--     its time is up the next pick probes it;
--   * turns a Retry-After into a pause of every holder of the endpoint's
--     quota, and x-ratelimit-remaining-* under what a request like the last
--     one needs into a wait of this process;
--   * reports each change of health (on_health) for metrics and status.
local quota = require "ragops.provider.quota"
local retry = require "ragops.provider.retry"

local M = {}

M.TAKE_OUT_MS = 5000
M.TAKE_OUT_MAX_MS = 60000
-- A pause shorter than this is not worth telling the other processes.
M.MIN_SHARED_PAUSE_MS = 50
-- The least weight an endpoint keeps whatever its room (so it is probed).
local MIN_ROOM = 0.05

local Pool = {}
Pool.__index = Pool

local function check_endpoint(e, i)
  if type(e) ~= "table" or type(e.client) ~= "table" or type(e.client.embed) ~= "function" then
    error(("endpoints.new: endpoints[%d].client deve ter :embed(texts)"):format(i), 3)
  end
  if type(e.name) ~= "string" or e.name == "" then
    error(("endpoints.new: endpoints[%d].name deve ser um texto não vazio"):format(i), 3)
  end
end

-- opts = { sched, log (optional), on_health = function(endpoint) (optional),
-- endpoints = { { name, key, display, weight (1), client, limiter
-- (optional), rate_limits (optional) }, ... } }.
function M.new(opts)
  if type(opts) ~= "table" or type(opts.endpoints) ~= "table" or #opts.endpoints == 0 then
    error("endpoints.new: esperada uma lista não vazia de endpoints", 2)
  end
  local list = {}
  for i, e in ipairs(opts.endpoints) do
    check_endpoint(e, i)
    list[i] = {
      name = e.name,                 -- label in metrics, status and logs
      key = e.key or e.name,         -- quota key (dialect, URL, model)
      display = e.display or e.name, -- URL without credentials, for people
      weight = e.weight or 1,        -- configured share of the requests
      client = e.client,             -- ragops.provider.client (or a fake)
      limiter = e.limiter,           -- ragops.provider.ratelimit or nil
      rate_limits = e.rate_limits or {}, -- the endpoint's quota (shared with other processes)
      keeper = nil,                  -- ragops.provider.quota keeper, from start_quota
      stopped_keeper = nil,          -- the keeper once stopped (its counters stay readable)
      current = 0,                   -- smooth weighted round robin state
      down_until = nil,              -- taken out until this clock (nil: live)
      down_reason = nil,             -- why it was taken out last ("connection", "http_503", ...)
      take_outs = 0,                 -- take-outs in a row (no success since)
      shared_pause_until = nil,      -- the last pause told the other processes (clock)
      calls = 0, failures = 0,       -- calls made, calls failed
    }
  end
  return setmetatable({ sched = opts.sched, log = opts.log, on_health = opts.on_health, list = list,
                        limits = opts.limits or list[1].client.limits }, Pool)
end

-- A pool of one endpoint around an embedder and an optional limiter (the
-- fakes of ragops.testing, or a run without provider.endpoints).
function M.single(embedder, limiter, sched)
  return M.new { sched = sched, endpoints = { { name = "default", client = embedder, limiter = limiter } } }
end

function Pool:live(e, now)
  return not e.down_until or e.down_until <= now
end

-- The endpoint the next request goes to (see the header); with every
-- endpoint taken out, the one that comes back first.
function Pool:pick()
  local list = self.list
  if #list == 1 then return list[1] end
  local now, total, best = self.sched.now(), 0, nil
  for _, e in ipairs(list) do
    if self:live(e, now) then
      local eff = e.weight * math.max(MIN_ROOM, e.limiter and e.limiter:room() or 1)
      e.current = e.current + eff
      total = total + eff
      if not best or e.current > best.current then best = e end
    end
  end
  if best then
    best.current = best.current - total
    return best
  end
  for _, e in ipairs(list) do
    if not best or e.down_until < best.down_until then best = e end
  end
  return best
end

-- An endpoint for a request of `tokens` estimated tokens, past its limiter.
-- Returns a lease { endpoint, charged, estimated } for call() and release().
function Pool:acquire(tokens)
  local e = self:pick()
  local charged = e.limiter and e.limiter:acquire(tokens) or tokens
  return { endpoint = e, charged = charged, estimated = tokens }
end

-- The call itself on the lease's endpoint.
function Pool:call(lease, texts)
  local e = lease.endpoint
  e.calls = e.calls + 1
  return e.client:embed(texts)
end

-- The lease given back without a call (the budget or the run said no).
function Pool:abandon(lease)
  if lease.endpoint.limiter then lease.endpoint.limiter:release() end
end

-- Why a failure takes an endpoint out (nil: it does not): it is the
-- endpoint, not the request (connection, 5xx, refused credential).
function M.take_out_reason(info)
  if not info then return nil end
  if info.kind == "connection" or info.kind == "timeout" then return info.kind end
  local status = tonumber(info.status) or 0
  if status >= 500 or status == 401 or status == 403 then return "http_" .. status end
  return nil
end

function Pool:_health_changed(e)
  if self.on_health then self.on_health(e) end
end

-- Takes e out (another endpoint carries the run). Returns true when some
-- other endpoint is live, so the call may be tried again there.
function Pool:take_out(e, reason)
  local now = self.sched.now()
  local others = false
  for _, o in ipairs(self.list) do
    if o ~= e and self:live(o, now) then others = true end
  end
  if not others then return false end
  e.take_outs = e.take_outs + 1
  local ms = math.min(M.TAKE_OUT_MAX_MS, M.TAKE_OUT_MS * 2 ^ (e.take_outs - 1))
  e.down_until, e.down_reason = now + ms, reason
  if self.log then
    self.log.warn("endpoint %s (%s) do provedor fora por %d s (%s); os outros levam a execução",
      e.name, e.display, math.ceil(ms / 1000), reason)
  end
  self:_health_changed(e)
  return true
end

function Pool:_back(e)
  local was_down = e.take_outs > 0
  e.take_outs, e.down_until = 0, nil
  if was_down then
    if self.log then self.log.info("endpoint %s (%s) do provedor voltou a responder", e.name, e.display) end
    self:_health_changed(e)
  end
end

-- The x-ratelimit-* figures of an answer (ragops.embed: info.ratelimit,
-- on a success as on a failure), or nil.
function M.ratelimit_of(info)
  return info and info.ratelimit or nil
end

-- How long until the provider's bucket holds `need` when it says it has
-- `remaining` of `limit`, full again in reset_ms (its refill rate; without
-- reset_ms, limit per minute). 0 when it already holds enough.
function M.slow_down_ms(remaining, limit, reset_ms, need)
  if not (remaining and limit) or limit <= 0 or need == nil or remaining >= need then return 0 end
  local rate = (reset_ms and reset_ms > 0 and limit > remaining) and (limit - remaining) / reset_ms or limit / 60000
  return math.ceil((need - remaining) / rate)
end

-- Pauses e for ms: its limiter now, every holder of its quota through the
-- keeper (in the background: the worker does not wait for the database).
function Pool:_pause(e, ms)
  ms = math.min(ms, retry.MAX_RETRY_AFTER_MS)
  if ms <= 0 then return end
  local until_ms = self.sched.now() + ms
  if e.limiter then e.limiter:pause_until(until_ms) end
  local keeper = e.keeper
  if keeper and ms >= M.MIN_SHARED_PAUSE_MS and until_ms > (e.shared_pause_until or 0) + M.MIN_SHARED_PAUSE_MS then
    e.shared_pause_until = until_ms
    self.sched.spawn(function() keeper:report_pause(ms) end)
  end
end

function Pool:_pace(e, info, lease)
  if info and info.retry_after_ms and info.retry_after_ms > 0 then self:_pause(e, info.retry_after_ms) end
  local rl = M.ratelimit_of(info)
  if rl and e.limiter then
    -- The provider's bucket cannot take another request like this one yet:
    -- this process waits for it (a Retry-After pauses every process; these
    -- headers do not: at full use of the quota the provider's bucket sits
    -- near empty by construction, and pausing the whole fleet at each
    -- answer would waste it).
    local ms = math.max(M.slow_down_ms(rl.remaining_requests, rl.limit_requests, rl.reset_requests_ms, 1),
      M.slow_down_ms(rl.remaining_tokens, rl.limit_tokens, rl.reset_tokens_ms, lease.charged))
    if ms > 0 then e.limiter:pause_until(self.sched.now() + math.min(ms, retry.MAX_RETRY_AFTER_MS)) end
  end
end

-- Ends a lease with the call's outcome (batch, err, info as the client
-- answered): settles the limiter, paces every holder of the endpoint's
-- quota, updates its health. Returns err, info as the provider policy must
-- see them: a failure that took the endpoint out is transient while
-- another one is live.
function Pool:release(lease, batch, err, info)
  local e = lease.endpoint
  local status = info and info.status or (batch and 200) or 0
  if e.limiter then
    e.limiter:release({ status = status, ok = batch ~= nil, billed = batch and batch:tokens() or nil,
                        charged = lease.charged, estimated = lease.estimated })
  end
  self:_pace(e, info, lease)
  if batch then
    self:_back(e)
    return err, info
  end
  e.failures = e.failures + 1
  local reason = #self.list > 1 and M.take_out_reason(info)
  if reason and self:take_out(e, reason) then
    local moved = {}
    for k, v in pairs(info) do moved[k] = v end
    moved.class = "transient"
    return ("%s (no endpoint %s; a chamada vai para outro)"):format(tostring(err), e.name), moved
  end
  return err, info
end

-- The limiters' figures summed over the endpoints (progress, report),
-- empty without limiters; with a shared quota, quota_renewals and
-- quota_renew_ms (the coordination's cost).
function Pool:stats()
  local out = {}
  for _, e in ipairs(self.list) do
    if e.limiter then
      for k, v in pairs(e.limiter:stats()) do out[k] = (out[k] or 0) + v end
    end
    local keeper = e.keeper or e.stopped_keeper
    if keeper then
      out.quota_renewals = (out.quota_renewals or 0) + keeper.renewals
      out.quota_renew_ms = (out.quota_renew_ms or 0) + keeper.renew_ms
    end
  end
  return out
end

-- The first endpoint as a gate for calls that are not embeddings (the
-- Batch API's uploads and polls, ragops.provider.batch): enter() takes one
-- request of its limiter (so of its shared quota), leave(pass, status,
-- retry_after_ms) gives it back and pauses the endpoint on a Retry-After.
function Pool:gate()
  local pool, e = self, self.list[1]
  return {
    enter = function() if e.limiter then e.limiter:acquire(0) end return e end,
    leave = function(_, _, status, retry_after_ms)
      if e.limiter then e.limiter:release({ status = status, ok = status >= 200 and status < 300 }) end
      if retry_after_ms and retry_after_ms > 0 then pool:_pause(e, retry_after_ms) end
    end,
  }
end

-- Starts the keeper of every endpoint that has a quota (rate_limits):
-- opts = { store (ragops.store.quota new), holder (quota.holder_id) }.
function Pool:start_quota(opts)
  for _, e in ipairs(self.list) do
    local rl = e.rate_limits
    if e.limiter and (rl.requests_per_min or rl.tokens_per_min or rl.max_concurrency) then
      e.keeper = quota.new { store = opts.store, key = e.key, holder = opts.holder, sched = self.sched,
                             limiter = e.limiter, log = self.log,
                             limits = { requests_per_min = rl.requests_per_min, tokens_per_min = rl.tokens_per_min,
                                        max_concurrency = rl.max_concurrency } }:start()
    end
  end
end

-- Stops the keepers (each gives its slice back).
function Pool:stop()
  for _, e in ipairs(self.list) do
    if e.keeper then e.keeper:stop(); e.keeper, e.stopped_keeper = nil, e.keeper end
  end
end

-- Closes every client.
function Pool:close()
  for _, e in ipairs(self.list) do
    if e.client.close then e.client:close() end
  end
end

return M
