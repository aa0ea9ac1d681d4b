-- ragops.pool: a small pool of PostgreSQL connections shared by the runner's
-- coroutines, and the one place where the database retry policy applies.
-- acquire() parks the caller while every connection is busy; a connection
-- that was lost is dropped on release and replaced lazily. pool:with(fn)
-- runs fn(conn) and, when fn answers a connection loss, a shutdown or a
-- serialization conflict (or no connection can be opened), runs it again on
-- a fresh connection after a backoff: every database operation of a run goes
-- through it, so no new query can forget the policy.
local retry = require "ragops.retry"

local M = {}

-- Retry policy for PostgreSQL (connection loss, restart): independent of the
-- plan's provider policy, sized for a restart that takes tens of seconds
-- (expected total wait ~40 s before giving up).
M.DB_RETRY = { attempts = 12, base_ms = 250, max_ms = 10000 }

-- SQLSTATEs worth running an operation again for: connection loss (08),
-- shutdown/crash recovery (57P01-57P03), serialization and deadlock.
function M.retryable_sqlstate(state)
  if not state then return false end
  return state:sub(1, 2) == "08" or state == "57P01" or state == "57P02"
      or state == "57P03" or state == "40001" or state == "40P01"
end

local Pool = {}
Pool.__index = Pool

-- opts: { conninfo = "...", size = 8, sched = <scheduler>, pg = <ragops.pg>,
--         on_connect = function(conn) -> ok, err (session setup, optional),
--         retry = policy (default M.DB_RETRY), log = ragops.log-like (optional) }
function M.new(opts)
  return setmetatable({
    idle = {},          -- connections ready for use
    open = 0,           -- connections open (idle, lent or being opened)
    size = opts.size or 8, waiters = {}, closed = false,
    policy = opts.retry or M.DB_RETRY, opts = opts,
    pg = opts.pg or require "ragops.pg", s = opts.sched,
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

-- Runs fn(conn) once with a pooled connection; returns { fn's results }
-- ({ nil, err, "08006" } when no connection could be had). With keep, a
-- success leaves the connection out of the pool, as results.conn. Errors
-- raised by fn release the connection and propagate.
function Pool:run_once(fn, keep)
  local conn, err = self:acquire()
  if not conn then return { nil, err, "08006" } end
  local packed = { pcall(fn, conn) }
  if not packed[1] then self:release(conn); error(packed[2], 0) end
  local results = { unpack(packed, 2, table.maxn(packed)) }
  if keep and results[1] ~= nil then results.conn = conn else self:release(conn) end
  return results
end

-- Runs fn(conn) under the database retry policy: fn returns result or
-- nil, err, sqlstate; a retryable sqlstate runs fn again on a fresh
-- connection (fn must be safe to repeat: one transaction, or a read).
-- Returns { results } or { nil, err, sqlstate } once the policy gives up.
function Pool:run_with_retry(fn, keep)
  -- After a signal the run only records how it ended: one attempt, no waits.
  if self.s.stopped and self.s.stopped() then return self:run_once(fn, keep) end
  local failed
  local log = self.opts.log
  local results = retry.call(self.policy, self.s, function()
    local r = self:run_once(fn, keep)
    if r[1] ~= nil then return r end
    failed = r
    local class = M.retryable_sqlstate(r[3]) and not self.closed and "transient" or "fatal"
    return nil, r[2], { class = class }
  end, function(attempt, delay, e)
    if log then
      log.warn("falha no PostgreSQL (%s); tentativa %d de %d em %d ms", tostring(e), attempt,
        self.policy.attempts, delay)
    end
  end)
  return results or failed or { nil, "interrompido" }
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
