-- ragops.provider.quota: one provider quota (requests per minute, tokens per
-- minute, concurrent requests) shared by every ragops process using the same
-- endpoint, through PostgreSQL. Each process holds a leased slice and paces
-- itself with its own limiter (ragops.provider.ratelimit) at that slice: no
-- round trip per request, one statement per process every RENEW_MS.
--
-- The keeper. Every RENEW_MS (2 s) a coroutine renews this process's lease
-- (store:renew: upsert its row with the demand its limiter measured and an
-- expiry TTL_S (10 s) ahead by the database clock, delete the key's expired
-- rows, read every live holder's demand and the key's pause), computes its
-- grant of each limit with M.allocate over every holder's demand, and hands
-- it to the limiter (set_rates, pause_until). A Retry-After seen here goes to
-- the table (report_pause) and every holder pauses at its next renewal.
-- stop() deletes the row, so the others take the slice at their next
-- renewal; a process killed with -9 loses its slice when its lease expires.
--
-- The allocation (M.allocate): max-min fair water-filling of one limit.
-- Holders are taken by increasing demand; each gets min(demand, what is left
-- / holders not yet served); what nobody needed is then split equally among
-- all (head-room to grow; only when everyone is satisfied). A starved holder
-- (one of its acquisitions waited on a bucket: its measured demand is capped
-- by its grant) counts as unbounded; a holder without demand data counts as
-- asking exactly the equal share; every demand counts as at least MIN_SHARE
-- of the equal share, so an idle holder can still start (and become starved,
-- which wins it a fair share at the next renewal). The grants never add up
-- to more than the limit. Concurrency is allocated in whole requests
-- (largest remainders), at least 1 per holder.
--
-- Worst-case overshoot. Every holder computes from the same rows, but not at
-- the same instant: a joiner takes its share at once while the others keep
-- their old grants until their next renewal, up to RENEW_MS later. Over that
-- gap the holders together may send up to limit × RENEW_MS / 60 s more than
-- the limit per joiner (1/30 of a minute's quota at 2 s), plus each bucket's
-- burst (a bucket holds up to its capacity; the capacities add up to the
-- limit, so the bursts add up to at most one minute's quota). Concurrency: at
-- least 1 per holder, so more holders than max_concurrency exceed it by one
-- each. A pause reaches the others up to RENEW_MS after it was reported.
-- When the database is unreachable a holder keeps its grant until its lease
-- would have expired (TTL_S), then paces at limit / the last number of
-- holders it knew, with a warning, and keeps retrying: if only it lost the
-- database the others take its slice back after the expiry, so the overshoot
-- is that slice (limit / holders) per unreachable process until it is back.
local M = {}

M.RENEW_MS = 2000
M.TTL_S = 10
M.MIN_SHARE = 0.05

-- The limits a quota shares, as the limiter's set_rates takes them.
M.LIMITS = { "requests_per_min", "tokens_per_min", "max_concurrency" }

local function check_demands(demands)
  if type(demands) ~= "table" or #demands == 0 then
    error("quota.allocate: esperada uma lista não vazia de demandas", 3)
  end
  for i, d in ipairs(demands) do
    if d ~= false and (type(d) ~= "number" or d ~= d or d < 0) then
      error(("quota.allocate: demanda %d deve ser um número >= 0, math.huge ou false, recebido %s")
        :format(i, tostring(d)), 3)
    end
  end
end

-- Max-min fair grants of `limit` over `demands` (a list, one per holder: a
-- number >= 0 per minute, math.huge when starved, false without data).
-- Returns the list of grants, in the same order. See the header.
function M.allocate(limit, demands)
  if type(limit) ~= "number" or limit ~= limit or limit <= 0 or limit == math.huge then
    error("quota.allocate: limit deve ser um número maior que zero, recebido " .. tostring(limit), 2)
  end
  check_demands(demands)
  local n = #demands
  local equal = limit / n
  local want, order = {}, {}
  for i, d in ipairs(demands) do
    want[i] = d == false and equal or math.max(d, equal * M.MIN_SHARE)
    order[i] = i
  end
  table.sort(order, function(a, b)
    if want[a] ~= want[b] then return want[a] < want[b] end
    return a < b
  end)
  local grants, remaining, left = {}, limit, n
  for _, i in ipairs(order) do
    local g = math.min(want[i], remaining / left)
    grants[i], remaining, left = g, remaining - g, left - 1
  end
  if remaining > 0 then
    for i = 1, n do grants[i] = grants[i] + remaining / n end
  end
  return grants
end

-- M.allocate in whole units (concurrent requests): 1 for each holder
-- first (a holder cannot work with none), the rest of the limit allocated
-- over the demands beyond that one, floored, and the units left to the
-- largest remainders. Adds up to the limit, unless there are more holders
-- than units (then 1 each).
function M.allocate_whole(limit, demands)
  check_demands(demands)
  local n, units = #demands, math.floor(limit + 1e-9)
  local whole = {}
  for i = 1, n do whole[i] = 1 end
  if units <= n then return whole end
  local beyond = {}
  for i, d in ipairs(demands) do beyond[i] = d and math.max(0, d - 1) end
  local grants = M.allocate(units - n, beyond)
  local order, given = {}, n
  for i, g in ipairs(grants) do
    local floor = math.floor(g + 1e-9)
    whole[i], order[i], given = 1 + floor, i, given + floor
    grants[i] = g - floor
  end
  table.sort(order, function(a, b)
    if math.abs(grants[a] - grants[b]) > 1e-9 then return grants[a] > grants[b] end
    return a < b
  end)
  for k = 1, units - given do whole[order[k]] = whole[order[k]] + 1 end
  return whole
end

-- The demand list of one limit over the holders' rows (ragops.store.quota
-- renew's view.holders).
local function demands_of(holders, limit_name)
  local out = {}
  for i, h in ipairs(holders) do
    local d = h.demand
    if not d then
      out[i] = false
    elseif limit_name == "max_concurrency" then
      out[i] = d.concurrency or false
    elseif d.starved then
      out[i] = math.huge
    else
      out[i] = d[limit_name] or false
    end
  end
  return out
end

-- This holder's grants ({ requests_per_min, tokens_per_min, max_concurrency },
-- nil where there is no limit) over the live holders (it is the one named
-- `holder`).
function M.grants_for(limits, holders, holder)
  local me
  for i, h in ipairs(holders) do if h.holder == holder then me = i end end
  if not me then error("quota.grants_for: o próprio detentor não está entre os detentores", 2) end
  local out = {}
  for _, name in ipairs(M.LIMITS) do
    if limits[name] then
      local alloc = name == "max_concurrency" and M.allocate_whole or M.allocate
      out[name] = alloc(limits[name], demands_of(holders, name))[me]
    end
  end
  return out
end

-- The grants while the database is unreachable past the lease: the limit
-- over the last number of holders known.
function M.fallback_grants(limits, holders)
  local out = {}
  for _, name in ipairs(M.LIMITS) do
    local limit = limits[name]
    if limit then
      local g = limit / math.max(1, holders)
      out[name] = name == "max_concurrency" and math.max(1, math.floor(g)) or g
    end
  end
  return out
end

-- A holder id unique across processes and machines: the pid and 64 random
-- bits (the kernel's, else the clock's).
function M.holder_id(pid)
  local f = io.open("/proc/sys/kernel/random/uuid", "r")
  local nonce = f and f:read("*l")
  if f then f:close() end
  if not nonce or nonce == "" then
    math.randomseed(os.time() + math.floor(os.clock() * 1e6) + (tonumber(pid) or 0))
    nonce = ("%08x%08x"):format(math.random(0, 0x7fffffff), math.random(0, 0x7fffffff))
  end
  return ("%s-%s"):format(tostring(pid), nonce)
end

---------------------------------------------------------------------------
-- The keeper
---------------------------------------------------------------------------

local Keeper = {}
Keeper.__index = Keeper

local function check_keeper_opts(opts)
  if type(opts) ~= "table" then error("quota.new: esperada uma tabela de opções", 3) end
  local store, s, lim = opts.store, opts.sched, opts.limiter
  if type(store) ~= "table" or type(store.renew) ~= "function" or type(store.pause) ~= "function"
      or type(store.leave) ~= "function" then
    error("quota.new: store deve ter renew, pause e leave (ragops.store.quota)", 3)
  end
  if type(s) ~= "table" or type(s.now) ~= "function" or type(s.sleep) ~= "function"
      or type(s.spawn) ~= "function" or type(s.suspend) ~= "function" or type(s.wake) ~= "function" then
    error("quota.new: sched deve ser um escalonador (now, sleep, spawn, suspend, wake)", 3)
  end
  if type(lim) ~= "table" or type(lim.set_rates) ~= "function" or type(lim.pause_until) ~= "function"
      or type(lim.demand) ~= "function" or type(lim.empty_buckets) ~= "function" then
    error("quota.new: limiter deve ter set_rates, pause_until, demand e empty_buckets (ragops.provider.ratelimit)", 3)
  end
  for _, name in ipairs({ "key", "holder" }) do
    if type(opts[name]) ~= "string" or opts[name] == "" then
      error(("quota.new: %s deve ser um texto não vazio"):format(name), 3)
    end
  end
  if type(opts.limits) ~= "table" then error("quota.new: limits deve ser uma tabela", 3) end
end

-- opts = { store = a quota store (ragops.store.quota new), key = endpoint
-- key, limits = { requests_per_min, tokens_per_min, max_concurrency } (nil:
-- no such limit), holder = M.holder_id(pid), sched, limiter, log (optional) }.
function M.new(opts)
  check_keeper_opts(opts)
  return setmetatable({
    store = opts.store, key = opts.key, holder = opts.holder, limits = opts.limits,
    sched = opts.sched, limiter = opts.limiter, log = opts.log,
    grants = nil,                  -- the grants applied last (nil: none yet)
    holders = 1,                   -- live holders at the last renewal, this one included
    last_ok = opts.sched.now(),    -- when the last renewal that worked began
    failing = false,               -- renewals fail since the last that worked
    fallen_back = false,           -- pacing at the fallback grants
    stopped = false, busy = false, stop_waiter = nil,
    renewals = 0, renew_ms = 0,    -- renewals made and the time they took (the coordination's cost)
  }, Keeper)
end

function Keeper:_apply(grants)
  self.grants = grants
  self.limiter:set_rates(grants.requests_per_min, grants.tokens_per_min, grants.max_concurrency)
end

function Keeper:_renewed(view, started)
  if self.failing and self.log then
    self.log.info("cota compartilhada do provedor: o PostgreSQL voltou a responder; fatia recalculada entre %d processo(s)",
      #view.holders)
  end
  local joining = self.grants == nil and #view.holders > 1
  self.failing, self.fallen_back, self.last_ok, self.holders = false, false, started, #view.holders
  self:_apply(M.grants_for(self.limits, view.holders, self.holder))
  -- Joining a quota others already draw from: the provider's buckets are
  -- theirs to spend, and they keep their old grants until their next
  -- renewal (up to RENEW_MS); this process starts with empty buckets that
  -- begin to fill only then: no burst, no overlap.
  if joining then self.limiter:empty_buckets(M.RENEW_MS) end
  if view.pause_ms and view.pause_ms > 0 then
    self.limiter:pause_until(self.sched.now() + view.pause_ms)
  end
end

function Keeper:_failed(err)
  if not self.failing and self.log then
    self.log.warn("cota compartilhada do provedor: não foi possível renovar a fatia no PostgreSQL (%s); "
      .. "a fatia atual vale até o fim do prazo (%d s), depois o limite dividido por %d processo(s)",
      tostring(err), M.TTL_S, self.holders)
  end
  self.failing = true
  if not self.fallen_back and self.sched.now() - self.last_ok >= M.TTL_S * 1000 then
    self.fallen_back = true
    if self.log then
      self.log.warn("cota compartilhada do provedor: prazo da fatia vencido sem o PostgreSQL; "
        .. "ritmo local com o limite dividido por %d processo(s) até ele voltar", self.holders)
    end
    self:_apply(M.fallback_grants(self.limits, self.holders))
  end
end

-- One renewal: the grants and the pause applied, or the failure handled.
-- Returns true or nil, err.
function Keeper:renew()
  local started = self.sched.now()
  self.busy = true
  local view, err = self.store:renew(self.key, self.holder, self.limiter:demand(), M.TTL_S)
  self.busy = false
  self.renewals, self.renew_ms = self.renewals + 1, self.renew_ms + (self.sched.now() - started)
  if self.stop_waiter then
    local co = self.stop_waiter
    self.stop_waiter = nil
    self.sched.wake(co)
  end
  if self.stopped then return nil, "parado" end
  if view then
    self:_renewed(view, started)
    return true
  end
  self:_failed(err)
  return nil, err
end

-- Starts the keeper: a renewal now, in the caller (from a coroutine: so
-- the first requests already go at this process's slice), then every
-- RENEW_MS in a coroutine of its own until stop() (or the scheduler's
-- stop(), a signal). Returns self.
function Keeper:start()
  local s = self.sched
  if coroutine.running() then self:renew() end
  s.spawn(function()
    if not coroutine.running() or self.grants then
      if self.stopped or not s.sleep(M.RENEW_MS) then return end
    end
    while not self.stopped do
      self:renew()
      if self.stopped or not s.sleep(M.RENEW_MS) then break end
    end
  end)
  return self
end

-- A Retry-After of ms milliseconds seen by this process: every holder of
-- the key pauses (this one at once). Returns true or nil, err.
function Keeper:report_pause(ms)
  if type(ms) ~= "number" or ms ~= ms or ms <= 0 or ms == math.huge then
    error("report_pause: esperado um número de milissegundos maior que zero, recebido " .. tostring(ms), 2)
  end
  self.limiter:pause_until(self.sched.now() + ms)
  return self.store:pause(self.key, ms)
end

-- Ends the keeper and gives the slice back (after a renewal in progress, so
-- it cannot write the row again). Returns true or nil, err.
function Keeper:stop()
  if self.stopped then return true end
  self.stopped = true
  local co = coroutine.running()
  if self.busy and co then
    self.stop_waiter = co
    self.sched.suspend()
  end
  return self.store:leave(self.key, self.holder)
end

return M
