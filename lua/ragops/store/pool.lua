-- ragops.store.pool: a small pool of PostgreSQL connections shared by the runner's
-- coroutines, and the one place where the database retry policy applies.
-- acquire() parks the caller while every connection is busy; a connection
-- that was lost is dropped on release and replaced lazily. pool:with(fn)
-- runs fn(conn) and, when fn answers a connection loss, a shutdown or a
-- serialization conflict (or no connection can be opened), runs it again on
-- a fresh connection after a backoff: every database operation of a run goes
-- through it, so no new query can forget the policy. Once the run ends
-- (wind_down), what is left makes a single attempt and waits for nothing.
local retry = require "ragops.provider.retry"

local M = {}

-- Retry policy for PostgreSQL (connection loss, restart, sessions
-- terminated): independent of the plan's provider policy, sized for a
-- restart that takes tens of seconds. An operation is retried for
-- WINDOW_MS from its first failure, whatever the jitter: waits of
-- 125-250 ms, 250-500 ms, 0.5-1 s, 1-2 s, 2-4 s, then 2.5-5 s each (equal
-- jitter: processes do not retry in lockstep, none waits less than half),
-- the last one cut to end with the window, and one last attempt there.
-- Total wait before giving up: 45 s, least, expected and worst alike
-- (retry.total_wait_ms), plus the attempts themselves: an outage shorter
-- than 45 s never aborts a run. (With full jitter and 12 attempts the
-- wait was 0-65.75 s, 32.9 s expected for one operation, and the first of
-- the ~10 operations retrying at once gave up after ~15-20 s.)
M.WINDOW_MS = 45000
M.DB_RETRY = { base_ms = 250, max_ms = 5000, jitter = "equal", window_ms = M.WINDOW_MS }

-- SQLSTATE of a connection that could not be opened or was lost.
M.CONNECTION_LOST = "08006"

-- The session is gone: connection loss (08) or shutdown/crash recovery
-- (57P01-57P03, e.g. pg_terminate_backend or a restart).
function M.session_lost(state)
  if not state then return false end
  return state:sub(1, 2) == "08" or state == "57P01" or state == "57P02" or state == "57P03"
end

-- SQLSTATEs worth running an operation again for: the session lost (see
-- session_lost), serialization and deadlock.
function M.retryable_sqlstate(state)
  return M.session_lost(state) or state == "40001" or state == "40P01"
end

local Pool = {}
Pool.__index = Pool

-- opts: { conninfo = "...", size = 8, sched = <scheduler>, pg = <ragops.pg>,
--         on_connect = function(conn) -> ok, err (session setup, optional),
--         retry = policy (default M.DB_RETRY), log = ragops.obs.log-like (optional),
--         random = function() -> [0,1) (the backoff's jitter; tests) }
function M.new(opts)
  return setmetatable({
    idle = {},          -- connections ready for use
    open = 0,           -- connections open (idle, lent or being opened)
    size = opts.size or 8, waiters = {}, closed = false,
    policy = opts.retry or M.DB_RETRY, opts = opts,
    pg = opts.pg or require "ragops.pg", s = opts.sched,
    winding = false,    -- wind_down() was called: one attempt, no waits
    backing_off = {},   -- { co = coroutine } -> true: waiting a backoff
  }, Pool)
end

function Pool:wake_next_waiter()
  local co = table.remove(self.waiters, 1)
  if co then self.s.wake(co) end
end

-- Opens one session with its setup; returns conn or nil, err.
function Pool:open_session()
  local c, err = self.pg.connect(self.opts.conninfo)
  if c and self.opts.on_connect then
    local ok, setup_err = self.opts.on_connect(c)
    if not ok then c:close(); c, err = nil, setup_err end
  end
  return c, err
end

-- Returns a connection or nil, err (the server is unreachable).
function Pool:acquire()
  while true do
    if self.closed then return nil, "pool de conexões fechado" end
    local conn = table.remove(self.idle)
    if conn then return conn end
    if self.open < self.size then
      self.open = self.open + 1
      local c, err = self:open_session()
      if not c then
        self.open = self.open - 1
        -- A waiter parked for this slot tries (and fails or succeeds) itself.
        self:wake_next_waiter()
        return nil, err
      end
      return c
    end
    self.waiters[#self.waiters + 1] = coroutine.running()
    self.s.suspend()
  end
end

-- Gives conn back; a broken connection is closed and not reused.
function Pool:release(conn)
  if self.closed or not conn:is_ok() then
    conn:close()
    self.open = self.open - 1
  else
    self.idle[#self.idle + 1] = conn
  end
  self:wake_next_waiter()
end

-- Closes a held connection for good (its session locks go with it).
function Pool:discard(conn)
  conn:close()
  self.open = self.open - 1
  self:wake_next_waiter()
end

-- Closes the idle connections: after one session was lost (a restart,
-- pg_terminate_backend of the database's sessions) they are most likely
-- lost too, and each would cost an attempt and a backoff to find out.
function Pool:drop_idle()
  local idle = self.idle
  self.idle = {}
  for _, c in ipairs(idle) do
    c:close()
    self.open = self.open - 1
  end
  for _ = 1, #idle do self:wake_next_waiter() end
end

-- Runs fn(conn) once with a pooled connection; returns { fn's results }
-- ({ nil, err, "08006" } when no connection could be had). With keep, a
-- success leaves the connection out of the pool, as results.conn. Errors
-- raised by fn release the connection and propagate. A failure that
-- carries no SQLSTATE on a connection that is no longer usable is a lost
-- session (08006), whatever path lost the SQLSTATE on the way.
function Pool:run_once(fn, keep)
  local conn, err = self:acquire()
  if not conn then return { nil, err, M.CONNECTION_LOST } end
  local packed = { pcall(fn, conn) }
  if not packed[1] then self:release(conn); error(packed[2], 0) end
  local results = { unpack(packed, 2, table.maxn(packed)) }
  if results[1] == nil and (results[3] == nil or results[3] == "") and not conn:is_ok() then
    results[3] = M.CONNECTION_LOST
  end
  if keep and results[1] ~= nil then results.conn = conn else self:release(conn) end
  if results[1] == nil and M.session_lost(results[3]) then self:drop_idle() end
  return results
end

-- Waits ms before the next attempt (retry.call's sleep); wind_down() ends
-- the wait at once. Returns true, and true again when it was cut short.
function Pool:backoff(ms)
  if self.winding then return true, true end
  local me, entry = coroutine.running(), {}
  self.backing_off[entry] = me
  self.s.spawn(function()
    -- A signal (s.stop) cuts the pending sleeps short, not one begun after it.
    if not (self.s.stopped and self.s.stopped()) then self.s.sleep(ms) end
    if self.backing_off[entry] then
      self.backing_off[entry] = nil
      self.s.wake(me)
    end
  end)
  self.s.suspend()
  return true, self.winding or nil
end

-- The run is ending (aborted): from now on every operation makes a single
-- attempt, and those waiting a backoff stop waiting (they give up with
-- their last error), so a process whose database is gone exits at once
-- instead of retrying each remaining operation in turn.
function Pool:wind_down()
  self.winding = true
  local waiting = self.backing_off
  self.backing_off = {}
  for _, co in pairs(waiting) do self.s.wake(co) end
end

-- The operator's line before a retry of the database policy.
local function log_retry(log, policy, attempt, delay, e)
  if not log then return end
  if policy.window_ms then
    log.warn("falha no PostgreSQL (%s); tentativa %d, a próxima em %d ms (desiste %d s depois da primeira falha)",
      tostring(e), attempt, delay, math.floor(policy.window_ms / 1000))
  else
    log.warn("falha no PostgreSQL (%s); tentativa %d de %d em %d ms", tostring(e), attempt, policy.attempts, delay)
  end
end

-- Runs fn(conn) under the database retry policy: fn returns result or
-- nil, err, sqlstate; a retryable sqlstate runs fn again on a fresh
-- connection (fn must be safe to repeat: one transaction, or a read).
-- Returns { results } or { nil, err, sqlstate } once the policy gives up.
function Pool:run_with_retry(fn, keep)
  local s = self.s
  local function ending() return self.winding or (s.stopped ~= nil and s.stopped()) end
  -- After a signal or an abort the run only records how it ended: one attempt, no waits.
  if ending() then return self:run_once(fn, keep) end
  local failed
  local waits = { sleep = function(ms) return self:backoff(ms) end, stopped = ending, now = s.now }
  local results = retry.call(self.policy, waits, function()
    local r = self:run_once(fn, keep)
    if r[1] ~= nil then return r end
    failed = r
    local class = M.retryable_sqlstate(r[3]) and not self.closed and "transient" or "fatal"
    return nil, r[2], { class = class }
  end, function(attempt, delay, e)
    log_retry(self.opts.log, self.policy, attempt, delay, e)
  end, self.opts.random)
  return results or failed or { nil, retry.INTERRUPTED }
end

-- fn(conn) -> result | nil, err, sqlstate, under the retry policy.
-- Returns fn's results, or nil, err, sqlstate.
function Pool:with(fn)
  local r = self:run_with_retry(fn, false)
  return unpack(r, 1, table.maxn(r))
end

-- Like with(fn), but a success keeps the connection out of the pool for
-- the caller (a session that holds a lock): returns conn, fn's results,
-- or nil, err, sqlstate. The caller gives it back with release() or discard().
function Pool:hold(fn)
  local r = self:run_with_retry(fn, true)
  if r[1] == nil then return nil, r[2], r[3] end
  return r.conn, unpack(r, 1, table.maxn(r))
end

function Pool:close()
  self.closed = true
  for _, c in ipairs(self.idle) do c:close() end
  self.idle = {}
  for _, co in ipairs(self.waiters) do self.s.wake(co) end
  self.waiters = {}
end

return M
