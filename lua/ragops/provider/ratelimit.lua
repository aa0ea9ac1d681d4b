-- ragops.provider.ratelimit: client-side rate limits for calls to the embedding
-- provider. One limiter is shared by every worker coroutine of a run; before
-- each request a worker calls acquire(tokens) and after it release(outcome).
--
-- Three things gate an acquisition, all of them at once:
--   * a concurrency window (AIMD): halves on 429/503 (at most once per
--     cooldown_ms), grows by one after `window` successes, up to
--     max_concurrency;
--   * a requests bucket (capacity = requests_per_min, continuous refill);
--   * a tokens bucket (capacity = tokens_per_min, continuous refill). A request
--     larger than the whole capacity passes when the bucket is full and leaves
--     the bucket in debt, so the long-run rate still holds and nothing
--     deadlocks.
-- pause_until(ms) (from a provider's Retry-After) holds every new
-- acquisition until that instant. Waiters are served strictly in FIFO order.
-- set_rates() changes the buckets and the concurrency ceiling in place (the
-- shared quota, ragops.provider.quota, hands each process its slice);
-- demand() says what the workers asked since the previous call: two sums
-- and a flag kept by acquire(), nothing more per request.
--
-- Waiting never spins: only the head of the queue ever waits on time (one
-- sched.sleep for exactly the missing time); the others are suspended and
-- woken when they become the head or when a slot frees up.
local M = {}

M.DEFAULT_MAX_CONCURRENCY = 8
M.DEFAULT_MIN_CONCURRENCY = 1
M.DEFAULT_COOLDOWN_MS = 2000

-- Bounds of billed_ratio (tokens billed per estimated token).
M.MIN_BILLED_RATIO = 0.05
M.MAX_BILLED_RATIO = 20

-- Tolerance for float rounding when comparing bucket levels.
local EPSILON = 1e-9

local Limiter = {}
Limiter.__index = Limiter

-- A token bucket holding `capacity` units, refilled at capacity/60000 per ms.
-- nil when there is no limit.
local function new_bucket(per_min, now)
  if per_min == nil then return nil end
  return { capacity = per_min, level = per_min, rate = per_min / 60000, updated = now }
end

local function refill(bucket, now)
  if not bucket then return end
  local elapsed = now - bucket.updated
  if elapsed > 0 then
    bucket.level = math.min(bucket.capacity, bucket.level + elapsed * bucket.rate)
  end
  bucket.updated = now
end

-- What the bucket needs before it can grant `amount`: an oversize request
-- only needs a full bucket.
local function bucket_need(bucket, amount)
  return math.min(amount, bucket.capacity)
end

-- Milliseconds until the bucket can grant `amount` (0 = now).
local function bucket_wait_ms(bucket, amount)
  if not bucket then return 0 end
  local missing = bucket_need(bucket, amount) - bucket.level
  if missing <= EPSILON then return 0 end
  return math.max(1, math.ceil(missing / bucket.rate))
end

local function bucket_take(bucket, amount)
  if bucket then bucket.level = math.min(bucket.capacity, bucket.level - amount) end
end

-- How much of a bucket is there now, 0..1 (1 without a bucket).
local function bucket_room(bucket, now)
  if not bucket then return 1 end
  refill(bucket, now)
  return math.max(0, bucket.level / bucket.capacity)
end

local function check_limit(opts, key, integer, who)
  local v = opts[key]
  if v == nil then return end
  if type(v) ~= "number" or v ~= v or v <= 0 or v == math.huge
      or (integer and v ~= math.floor(v)) then
    error(("%s: %s deve ser um número%s maior que zero, recebido %s")
      :format(who or "ratelimit.new", key, integer and " inteiro" or "", tostring(v)), 3)
  end
end

-- The concurrency a run really gets: the plan's in_flight, capped by the
-- provider's max_concurrency when that is lower. Returns the effective
-- value and, when capped, the pt-BR reason (first log line and report).
function M.effective_concurrency(in_flight, max_concurrency)
  if max_concurrency and max_concurrency < in_flight then
    return max_concurrency, ("o plano pede %d; limitado por provider.rate_limits.max_concurrency = %d")
      :format(in_flight, max_concurrency)
  end
  return in_flight, nil
end

-- opts = { sched = scheduler (now/sleep/suspend/wake), requests_per_min,
--          tokens_per_min, max_concurrency (default: in_flight, else 8),
--          in_flight (the plan's workers), min_concurrency (1),
--          cooldown_ms (2000), log = ragops.obs.log-like (optional) }
-- Without a provider max_concurrency the AIMD window's ceiling is the
-- plan's in_flight: it only shrinks (429/503) and grows back to it.
function M.new(opts)
  if type(opts) ~= "table" then
    error("ratelimit.new: esperada uma tabela de opções", 2)
  end
  local s = opts.sched
  if type(s) ~= "table" or type(s.now) ~= "function" or type(s.sleep) ~= "function"
      or type(s.suspend) ~= "function" or type(s.wake) ~= "function" then
    error("ratelimit.new: sched deve ser um escalonador (now, sleep, suspend, wake)", 2)
  end
  check_limit(opts, "requests_per_min", false)
  check_limit(opts, "tokens_per_min", false)
  check_limit(opts, "max_concurrency", true)
  check_limit(opts, "min_concurrency", true)
  check_limit(opts, "in_flight", true)
  local max_c = opts.max_concurrency or opts.in_flight or M.DEFAULT_MAX_CONCURRENCY
  local min_c = opts.min_concurrency or M.DEFAULT_MIN_CONCURRENCY
  if min_c > max_c then
    error(("ratelimit.new: min_concurrency (%d) maior que max_concurrency (%d)")
      :format(min_c, max_c), 2)
  end
  local cooldown = opts.cooldown_ms or M.DEFAULT_COOLDOWN_MS
  if type(cooldown) ~= "number" or cooldown ~= cooldown or cooldown < 0 then
    error("ratelimit.new: cooldown_ms deve ser um número >= 0", 2)
  end
  local now = s.now()
  return setmetatable({
    sched = s,                       -- scheduler used for now/sleep/suspend/wake
    log = opts.log,                  -- optional logger (warn/info)
    max_concurrency = max_c,         -- ceiling of the AIMD window
    min_concurrency = min_c,         -- floor of the AIMD window
    cooldown_ms = cooldown,          -- minimum gap between two decreases
    window = max_c,                  -- current concurrency window
    workers = opts.in_flight,        -- the plan's workers (nil: unknown)
    in_flight = 0,                   -- acquisitions not yet released
    successes = 0,                   -- successes since the window last changed
    last_decrease = nil,             -- clock of the last decrease (nil = never)
    paused_until = nil,              -- no grant before this clock (Retry-After)
    requests = new_bucket(opts.requests_per_min, now), -- requests bucket or nil
    tokens = new_bucket(opts.tokens_per_min, now),     -- tokens bucket or nil
    queue = {}, head = 1, tail = 0,  -- FIFO of waiters { co, tokens, state, since }
    waited_ms = 0,                   -- total time spent waiting in acquire
    throttled = 0,                   -- acquisitions that had to wait
    base_max_concurrency = opts.in_flight or M.DEFAULT_MAX_CONCURRENCY, -- ceiling without a provider limit
    base_min_concurrency = min_c,    -- the configured floor (set_rates may lower the live one)
    asked = { since = now, requests = 0, tokens = 0, peak = 0, starved = false }, -- demand() window
    last_demand = nil,               -- demand() of the previous window
    billed_ratio = 1,                -- tokens the provider bills per estimated token (moving average)
    head_on_bucket = false,          -- the head of the queue is waiting on a bucket now
  }, Limiter)
end

-- Milliseconds the head must still wait for time-based gates (pause and
-- buckets), assuming a concurrency slot is free. 0 = can go now. Second
-- result: a bucket (not only the pause) holds it back.
function Limiter:_time_wait(tokens)
  local now = self.sched.now()
  refill(self.requests, now)
  refill(self.tokens, now)
  local wait = 0
  if self.paused_until and self.paused_until > now then
    wait = math.max(wait, math.ceil(self.paused_until - now))
  end
  local bucket = math.max(bucket_wait_ms(self.requests, 1), bucket_wait_ms(self.tokens, tokens))
  return math.max(wait, bucket), bucket > 0
end

function Limiter:_grant(tokens)
  bucket_take(self.requests, 1)
  bucket_take(self.tokens, tokens)
  self.in_flight = self.in_flight + 1
end

-- Wakes the head of the queue if it is suspended (a sleeping head wakes by
-- itself and re-checks everything).
function Limiter:_wake_head()
  local w = self.queue[self.head]
  if w and w.state == "suspended" then
    w.state = "ready"
    self.sched.wake(w.co)
  end
end

-- The head of the queue waits ms for the time-based gates: parked, with a
-- timer that wakes it then, unless something woke it earlier (_rouse_head:
-- new rates). One sleep per wait, whatever wakes it.
function Limiter:_nap(me, ms)
  local s = self.sched
  local nap = (me.nap or 0) + 1
  me.nap, me.state = nap, "sleeping"
  s.spawn(function()
    s.sleep(ms)
    if me.nap == nap and me.state == "sleeping" then
      me.state = "ready"
      s.wake(me.co)
    end
  end)
  s.suspend()
  me.state = "ready"
end

-- Wakes the head of the queue whether it is parked or napping (the gates
-- changed: it computes its wait again).
function Limiter:_rouse_head()
  local w = self.queue[self.head]
  if w and (w.state == "suspended" or w.state == "sleeping") then
    w.nap, w.state = (w.nap or 0) + 1, "ready"
    self.sched.wake(w.co)
  end
end

-- Waits until a request of `tokens` (estimated) tokens may be sent. The
-- tokens bucket is charged the estimate times what the provider billed per
-- estimated token so far (billed_ratio); returns that charge, which
-- release() settles against the tokens really billed.
function Limiter:acquire(tokens)
  tokens = tokens or 0
  if type(tokens) ~= "number" or tokens ~= tokens or tokens < 0 or tokens == math.huge then
    error("acquire: tokens deve ser um número >= 0, recebido " .. tostring(tokens), 2)
  end
  tokens = tokens * self.billed_ratio
  local s = self.sched
  local asked = self.asked
  asked.requests, asked.tokens = asked.requests + 1, asked.tokens + tokens
  local wanted = self.in_flight + (self.tail - self.head + 1) + 1
  if wanted > asked.peak then asked.peak = wanted end
  -- Fast path: nobody queued, everything open.
  if self.head > self.tail and self.in_flight < self.window and self:_time_wait(tokens) == 0 then
    self:_grant(tokens)
    return tokens
  end
  local me = { co = coroutine.running(), tokens = tokens, state = "ready", since = s.now() }
  if not me.co then error("acquire: chamada fora de uma corrotina", 2) end
  self.tail = self.tail + 1
  self.queue[self.tail] = me
  self.throttled = self.throttled + 1
  while true do
    if self.queue[self.head] ~= me or self.in_flight >= self.window then
      me.state = "suspended"
      s.suspend()
    else
      local wait, on_bucket = self:_time_wait(tokens)
      if on_bucket then self.asked.starved = true end
      if wait > 0 then
        self.head_on_bucket = on_bucket
        self:_nap(me, wait)
        self.head_on_bucket = false
      else
        break
      end
    end
  end
  self.queue[self.head] = nil
  self.head = self.head + 1
  self:_grant(tokens)
  self.waited_ms = self.waited_ms + (s.now() - me.since)
  -- The next waiter may be able to go right away (or start its own wait).
  self:_wake_head()
  return tokens
end

local function is_overload(status)
  return status == 429 or status == 503
end

-- The tokens really billed (outcome.billed) settle the acquisition's charge
-- (outcome.charged, what acquire returned; its estimate outcome.estimated):
-- the bucket takes the difference (or gets it back), and billed_ratio moves
-- toward billed / estimated, so the next charges match the provider's count.
local function settle_tokens(self, outcome)
  local billed, charged, estimated = outcome.billed, outcome.charged, outcome.estimated
  if type(billed) ~= "number" or type(charged) ~= "number" or billed < 0 then return end
  refill(self.tokens, self.sched.now())
  bucket_take(self.tokens, billed - charged)
  if type(estimated) == "number" and estimated > 0 and billed > 0 then
    local ratio = 0.8 * self.billed_ratio + 0.2 * (billed / estimated)
    self.billed_ratio = math.max(M.MIN_BILLED_RATIO, math.min(M.MAX_BILLED_RATIO, ratio))
  end
end

-- Ends an acquisition. outcome = { status = HTTP status or 0, ok = bool,
-- billed, charged, estimated (optional: see settle_tokens) }; nil means "no
-- verdict" (the call was abandoned): the slot is freed and the window does
-- not move.
function Limiter:release(outcome)
  if outcome ~= nil and type(outcome) ~= "table" then
    error("release: outcome deve ser uma tabela { status = n, ok = bool }", 2)
  end
  if self.in_flight <= 0 then
    error("release: chamada sem um acquire correspondente", 2)
  end
  self.in_flight = self.in_flight - 1
  if outcome then
    settle_tokens(self, outcome)
    local status = tonumber(outcome.status) or 0
    if is_overload(status) then
      self.successes = 0
      local now = self.sched.now()
      if not self.last_decrease or now - self.last_decrease >= self.cooldown_ms then
        self.last_decrease = now
        local new = math.max(self.min_concurrency, math.floor(self.window / 2))
        if new < self.window then
          self.window = new
          if self.log then
            self.log.warn("limite de concorrência reduzido para %d após %d", new, status)
          end
        end
      end
    elseif outcome.ok then
      if self.window < self.max_concurrency then
        self.successes = self.successes + 1
        if self.successes >= self.window then
          self.window = self.window + 1
          self.successes = 0
          if self.window == self.max_concurrency and self.log then
            self.log.info("concorrência restaurada para %d", self.window)
          end
        end
      end
    end
  end
  self:_wake_head()
end

-- Holds every new acquisition until the scheduler clock reaches `ms`
-- (absolute, same clock as sched.now()). An earlier instant never shortens
-- a pause already in force.
function Limiter:pause_until(ms)
  if type(ms) ~= "number" or ms ~= ms then
    error("pause_until: esperado um instante em milissegundos, recebido " .. tostring(ms), 2)
  end
  if not self.paused_until or ms > self.paused_until then
    self.paused_until = ms
  end
end

-- A bucket at a new per-minute capacity, refilled up to `now` at its old
-- rate first: a lower capacity clamps the level (a debt stays), a higher
-- one keeps it. nil per_min: no bucket (no limit); a new bucket starts full.
local function rebucket(bucket, per_min, now)
  if per_min == nil then return nil end
  if not bucket then return new_bucket(per_min, now) end
  refill(bucket, now)
  bucket.capacity, bucket.rate = per_min, per_min / 60000
  bucket.level = math.min(bucket.level, per_min)
  return bucket
end

-- Changes the limits in place, keeping every waiter in its place:
-- requests_per_min and tokens_per_min set the buckets' capacity and rate
-- (nil: no limit), max_concurrency the AIMD window's ceiling (nil: the
-- ceiling new() takes without a provider limit). A window at its old
-- ceiling follows the new one; a window the AIMD reduced only shrinks to fit.
-- A head sleeping on the old rate is woken to check the new ones.
function Limiter:set_rates(requests_per_min, tokens_per_min, max_concurrency)
  local opts = { requests_per_min = requests_per_min, tokens_per_min = tokens_per_min,
                 max_concurrency = max_concurrency }
  check_limit(opts, "requests_per_min", false, "set_rates")
  check_limit(opts, "tokens_per_min", false, "set_rates")
  check_limit(opts, "max_concurrency", true, "set_rates")
  local now = self.sched.now()
  self.requests = rebucket(self.requests, requests_per_min, now)
  self.tokens = rebucket(self.tokens, tokens_per_min, now)
  local ceiling = max_concurrency or self.base_max_concurrency
  if self.window >= self.max_concurrency or self.window > ceiling then self.window = ceiling end
  self.max_concurrency = ceiling
  self.min_concurrency = math.min(self.base_min_concurrency, ceiling)
  self:_rouse_head()
end

-- What the workers asked since the previous call (the window then starts
-- again): { requests_per_min, tokens_per_min (asked, granted or not),
-- concurrency (most acquisitions in flight or waiting at once), starved
-- (some acquisition waited on a bucket, or the head waits on one now),
-- window_ms }. A call at the same
-- instant as the previous one repeats its answer.
function Limiter:demand()
  local now, asked = self.sched.now(), self.asked
  local elapsed = now - asked.since
  if elapsed <= 0 and self.last_demand then return self.last_demand end
  local per_min = 60000 / math.max(elapsed, 1)
  local d = { requests_per_min = asked.requests * per_min, tokens_per_min = asked.tokens * per_min,
              concurrency = math.max(asked.peak, self.in_flight + (self.tail - self.head + 1)),
              starved = asked.starved or self.head_on_bucket == true, window_ms = elapsed }
  self.asked = { since = now, requests = 0, tokens = 0, peak = 0, starved = false }
  self.last_demand = d
  return d
end

-- Empties both buckets and puts them in debt for debt_ms of refill (a
-- process joining a quota others already spend: it earns its slice at the
-- refill rate, starting once the others have given it up, instead of
-- bursting).
function Limiter:empty_buckets(debt_ms)
  local now, debt_ms = self.sched.now(), debt_ms or 0
  if self.requests then self.requests.level, self.requests.updated = -self.requests.rate * debt_ms, now end
  if self.tokens then self.tokens.level, self.tokens.updated = -self.tokens.rate * debt_ms, now end
end

-- How much of the quota is free now, 0..1: the emptier of the two buckets
-- (0 while paused). The endpoints pool spreads requests by it.
function Limiter:room()
  local now = self.sched.now()
  if self.paused_until and self.paused_until > now then return 0 end
  return math.min(bucket_room(self.requests, now), bucket_room(self.tokens, now))
end

-- concurrency: the requests that may really be in flight now, the AIMD
-- window within the plan's workers (a window of 8 over 4 workers sends 4).
function Limiter:stats()
  local concurrency = self.workers and math.min(self.window, self.workers) or self.window
  return { concurrency = concurrency, in_flight = self.in_flight,
           waited_ms = self.waited_ms, throttled = self.throttled,
           queued = self.tail - self.head + 1 }
end

-- Estimated tokens of one text (about 4 bytes per token): the one estimate
-- of the engine (the limiter, the dry-run, the budget's admission).
function M.estimate_text_tokens(text)
  return math.ceil(#text / 4)
end

-- Estimated tokens of a list of texts, the figure passed to acquire()
-- before the provider tells the real count.
function M.estimate_tokens(texts)
  local n = 0
  for _, text in ipairs(texts) do n = n + M.estimate_text_tokens(text) end
  return n
end

return M
