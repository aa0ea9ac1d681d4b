-- ragops.retry: the retry policy for calls to the embedding provider.
-- Exponential backoff with full jitter, capped; Retry-After wins when the
-- provider sends one. Only failures classified "transient" are retried.
local M = {}

M.MAX_RETRY_AFTER_MS = 300000 -- never wait more than 5 min for one Retry-After

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

-- Calls fn(attempt) -> result, err, info until it succeeds, fails with a
-- non-transient class, or policy.attempts is reached.
-- info.class: "transient" | "permanent" | "fatal"; info.retry_after_ms.
-- on_retry(attempt, delay_ms, err, info) is called before each wait.
-- Returns result, nil, info, attempts  or  nil, err, info, attempts.
function M.call(policy, sleep, fn, on_retry, random)
  local attempt = 0
  while true do
    attempt = attempt + 1
    local result, err, info = fn(attempt)
    if result ~= nil then return result, nil, info, attempt end
    info = info or { class = "transient" }
    if info.class ~= "transient" or attempt >= policy.attempts then
      return nil, err, info, attempt
    end
    local delay = M.backoff_ms(policy, attempt, info.retry_after_ms, random)
    if on_retry then on_retry(attempt, delay, err, info) end
    sleep(delay)
  end
end

return M
