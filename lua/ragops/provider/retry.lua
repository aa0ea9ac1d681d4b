-- ragops.provider.retry: the retry loop under both policies, the embedding
-- provider's (the plan's `retry`, counted in attempts) and the database's
-- (ragops.store.pool, bounded by a window of time). Exponential backoff with
-- jitter, capped; Retry-After wins when the provider sends one. Only
-- failures classified "transient" are retried. Seeds math.random once per
-- process (see seed_random).
local M = {}

-- A seed from the kernel's entropy (/dev/urandom), or, without it, from the
-- clock and an address (ASLR): never the same in two processes.
local function entropy_seed()
  local f = io.open("/dev/urandom", "rb")
  local bytes = f and f:read(6)
  if f then f:close() end
  if bytes and #bytes == 6 then
    local n = 0
    for i = 1, 6 do n = n * 256 + bytes:byte(i) end
    return n
  end
  return os.time() * 1000003 + math.floor(os.clock() * 1e6)
    + (tonumber(tostring({}):match("0x(%x+)") or "0", 16) or 0) % 1000003
end

-- LuaJIT starts every process with the same math.random state: unseeded,
-- every process drew the same jitter (198, 174, 147... ms), so processes
-- that lost the database together retried in lockstep. Seeded once, when
-- this module is first loaded (every retrying process loads it).
function M.seed_random()
  if M.seeded then return end
  M.seeded = true
  math.randomseed(entropy_seed())
end
M.seed_random()

M.MAX_RETRY_AFTER_MS = 300000 -- never wait more than 5 min for one Retry-After
M.INTERRUPTED = "interrompido" -- error of a call given up because the run stopped

-- The backoff's ceiling before attempt+1 (1-based): base_ms * 2^(attempt-1),
-- capped at max_ms; and its floor: 0 with full jitter (the default), half
-- the ceiling with policy.jitter = "equal".
function M.backoff_range(policy, attempt)
  local ceiling = math.min(policy.max_ms, policy.base_ms * 2 ^ (attempt - 1))
  return policy.jitter == "equal" and ceiling / 2 or 0, ceiling
end

-- Delay before attempt+1 after `attempt` failed (1-based), in ms: drawn
-- uniformly in M.backoff_range.
-- random: function() -> [0,1) (math.random by default; injectable for tests).
function M.backoff_ms(policy, attempt, retry_after_ms, random)
  random = random or math.random
  local floor, ceiling = M.backoff_range(policy, attempt)
  local delay = math.floor(floor + random() * (ceiling - floor))
  if retry_after_ms and retry_after_ms > 0 then
    delay = math.max(delay, math.min(retry_after_ms, M.MAX_RETRY_AFTER_MS))
  end
  return delay
end

-- 429 answers are rate limiting, not failures: they wait (Retry-After) but
-- do not use up attempts, up to this many per call.
M.MAX_RATE_LIMITED_WAITS = 30

-- The wait before the next attempt after a transient failure (info), or
-- nil when the policy gives up. st = { attempt, round, rate_limited,
-- deadline }, updated; now() -> ms.
local function next_delay(policy, st, info, now, random)
  if info.status == 429 and st.rate_limited < M.MAX_RATE_LIMITED_WAITS then
    st.rate_limited = st.rate_limited + 1
    return M.backoff_ms(policy, math.max(st.attempt, 1), info.retry_after_ms, random)
  end
  st.attempt = st.attempt + 1
  if policy.window_ms then
    -- The window runs from the first failure; the last wait is cut to end
    -- with it, and one last attempt is made there.
    st.deadline = st.deadline or now() + policy.window_ms
    local left = st.deadline - now()
    if left <= 0 then return nil end
    return math.min(M.backoff_ms(policy, st.attempt, info.retry_after_ms, random), math.ceil(left))
  end
  if st.attempt < policy.attempts then
    return M.backoff_ms(policy, st.attempt, info.retry_after_ms, random)
  end
  if st.round >= (policy.rounds or 1) then return nil end
  st.round, st.attempt = st.round + 1, 0
  return policy.max_ms
end

-- Calls fn(attempt) -> result, err, info until it succeeds, fails with a
-- non-transient class, or the policy gives up:
--   * policy.window_ms (the database's policy): retries until window_ms
--     have passed since the first failure (on waits.now(), or counting the
--     waits themselves), the last wait cut to end with the window, then one
--     last attempt: the total wait is exactly window_ms whatever the jitter;
--   * otherwise policy.attempts per round; after a round is exhausted and
--     policy.rounds (default 1) allows, waits policy.max_ms (cool-down) and
--     starts a new round, so a burst of failures does not dead-letter a batch;
--   * HTTP 429 does not count as an attempt (up to MAX_RATE_LIMITED_WAITS).
-- info.class: "transient" | "permanent" | "fatal"; info.retry_after_ms; info.status.
-- on_retry(attempt, delay_ms, err, info) is called before each wait.
-- waits: the scheduler (ragops.util.sched shape: sleep, stopped, now) or a bare
-- sleep function. Once the scheduler is stopped (a signal), or a wait is cut
-- short, it returns at once: nil, "interrompido", { class = "cancelled" }, calls.
-- Returns result, nil, info, calls  or  nil, err, info, calls.
function M.call(policy, waits, fn, on_retry, random)
  local sleep, stopped, now = waits, function() return false end, nil
  local slept = 0
  if type(waits) == "table" then sleep, stopped, now = waits.sleep, waits.stopped or stopped, waits.now end
  now = now or function() return slept end
  local st = { attempt = 0, round = 1, rate_limited = 0 }
  local calls = 0
  local function interrupted() return nil, M.INTERRUPTED, { class = "cancelled" }, calls end
  if stopped() then return interrupted() end
  while true do
    calls = calls + 1
    local result, err, info = fn(calls)
    if result ~= nil then return result, nil, info, calls end
    info = info or { class = "transient" }
    if info.class ~= "transient" then return nil, err, info, calls end
    local delay = next_delay(policy, st, info, now, random)
    if not delay then return nil, err, info, calls end
    if stopped() then return interrupted() end
    if on_retry then on_retry(calls, delay, err, info) end
    local _, cut_short = sleep(delay)
    slept = slept + delay
    if cut_short or stopped() then return interrupted() end
  end
end

-- The total wait of a call that keeps failing, in ms: least, expected and
-- worst (the attempts themselves not counted). With window_ms all three are
-- the window; otherwise the sum of the backoffs' ranges over the attempts
-- and rounds (429 waits, which depend on the provider, not counted).
function M.total_wait_ms(policy)
  if policy.window_ms then return policy.window_ms, policy.window_ms, policy.window_ms end
  local least, worst = 0, 0
  local rounds = policy.rounds or 1
  for attempt = 1, policy.attempts - 1 do
    local floor, ceiling = M.backoff_range(policy, attempt)
    least, worst = least + floor, worst + ceiling
  end
  least, worst = least * rounds, worst * rounds
  local cool_down = (rounds - 1) * policy.max_ms
  return least + cool_down, (least + worst) / 2 + cool_down, worst + cool_down
end

return M
