-- ragops.retry: the retry policy for calls to the embedding provider.
-- Exponential backoff with full jitter, capped; Retry-After wins when the
-- provider sends one. Only failures classified "transient" are retried.
local M = {}

M.MAX_RETRY_AFTER_MS = 300000 -- never wait more than 5 min for one Retry-After
M.INTERRUPTED = "interrompido" -- error of a call given up because the run stopped

-- Delay before attempt+1 after `attempt` failed (1-based), in ms.
-- random: function() -> [0,1) (math.random by default; injectable for tests).
function M.backoff_ms(policy, attempt, retry_after_ms, random)
  random = random or math.random
  local ceiling = math.min(policy.max_ms, policy.base_ms * 2 ^ (attempt - 1))
  local delay = math.floor(random() * ceiling)
  if retry_after_ms and retry_after_ms > 0 then
    delay = math.max(delay, math.min(retry_after_ms, M.MAX_RETRY_AFTER_MS))
  end
  return delay
end

-- 429 answers are rate limiting, not failures: they wait (Retry-After) but
-- do not use up attempts, up to this many per call.
M.MAX_RATE_LIMITED_WAITS = 30

-- Calls fn(attempt) -> result, err, info until it succeeds, fails with a
-- non-transient class, or the attempts run out:
--   * policy.attempts per round; after a round is exhausted and
--     policy.rounds (default 1) allows, waits policy.max_ms (cool-down) and
--     starts a new round, so a burst of failures does not dead-letter a batch;
--   * HTTP 429 does not count as an attempt (up to MAX_RATE_LIMITED_WAITS).
-- info.class: "transient" | "permanent" | "fatal"; info.retry_after_ms; info.status.
-- on_retry(attempt, delay_ms, err, info) is called before each wait.
-- waits: the scheduler (ragops.sched shape: sleep, stopped) or a bare sleep
-- function. Once the scheduler is stopped (a signal), or a wait is cut short,
-- it returns at once: nil, "interrompido", { class = "cancelled" }, calls.
-- Returns result, nil, info, calls  or  nil, err, info, calls.
function M.call(policy, waits, fn, on_retry, random)
  local sleep, stopped = waits, function() return false end
  if type(waits) == "table" then sleep, stopped = waits.sleep, waits.stopped or stopped end
  local rounds = policy.rounds or 1
  local calls, attempt, round, rate_limited = 0, 0, 1, 0
  local function interrupted() return nil, M.INTERRUPTED, { class = "cancelled" }, calls end
  if stopped() then return interrupted() end
  while true do
    calls = calls + 1
    local result, err, info = fn(calls)
    if result ~= nil then return result, nil, info, calls end
    info = info or { class = "transient" }
    if info.class ~= "transient" then return nil, err, info, calls end
    local delay
    if info.status == 429 and rate_limited < M.MAX_RATE_LIMITED_WAITS then
      rate_limited = rate_limited + 1
      delay = M.backoff_ms(policy, math.max(attempt, 1), info.retry_after_ms, random)
    else
      attempt = attempt + 1
      if attempt >= policy.attempts then
        if round >= rounds then return nil, err, info, calls end
        round, attempt = round + 1, 0
        delay = policy.max_ms
      else
        delay = M.backoff_ms(policy, attempt, info.retry_after_ms, random)
      end
    end
    if stopped() then return interrupted() end
    if on_retry then on_retry(calls, delay, err, info) end
    local _, cut_short = sleep(delay)
    if cut_short or stopped() then return interrupted() end
  end
end

return M
