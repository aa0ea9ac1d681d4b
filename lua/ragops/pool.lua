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

-- opts: { conninfo = "...", size = 8, sched = <scheduler>, pg = <ragops.pg>,
--         on_connect = function(conn) -> ok, err (session setup, optional),
--         retry = policy (default M.DB_RETRY), log = ragops.log-like (optional) }
function M.new(opts)
  local pool = { idle = {}, open = 0, size = opts.size or 8, waiters = {},
                 closed = false, policy = opts.retry or M.DB_RETRY }
  local pg, s = opts.pg or require "ragops.pg", opts.sched

  local function wake_next_waiter()
    local co = table.remove(pool.waiters, 1)
    if co then s.wake(co) end
  end

  -- Opens one session with its setup; returns conn or nil, err.
  local function open_session()
    local c, err = pg.connect(opts.conninfo)
    if c and opts.on_connect then
      local ok, setup_err = opts.on_connect(c)
      if not ok then c:close(); c, err = nil, setup_err end
    end
    return c, err
  end

  -- Returns a connection or nil, err (the server is unreachable).
  function pool:acquire()
    while true do
      if self.closed then return nil, "pool de conexões fechado" end
      local conn = table.remove(self.idle)
      if conn then return conn end
      if self.open < self.size then
        self.open = self.open + 1
        local c, err = open_session()
        if not c then
          self.open = self.open - 1
          -- A waiter parked for this slot tries (and fails or succeeds) itself.
          wake_next_waiter()
          return nil, err
        end
        return c
      end
      self.waiters[#self.waiters + 1] = coroutine.running()
      s.suspend()
    end
  end

  -- Gives conn back; a broken connection is closed and not reused.
  function pool:release(conn)
    if self.closed or not conn:is_ok() then
      conn:close()
      self.open = self.open - 1
    else
      self.idle[#self.idle + 1] = conn
    end
    wake_next_waiter()
  end

  -- Closes a held connection for good (its session locks go with it).
  function pool:discard(conn)
    conn:close()
    self.open = self.open - 1
    wake_next_waiter()
  end

  -- Runs fn(conn) once with a pooled connection; returns { fn's results }
  -- ({ nil, err, "08006" } when no connection could be had). With keep, a
  -- success leaves the connection out of the pool, as results.conn. Errors
  -- raised by fn release the connection and propagate.
  local function run_once(fn, keep)
    local conn, err = pool:acquire()
    if not conn then return { nil, err, "08006" } end
    local packed = { pcall(fn, conn) }
    if not packed[1] then pool:release(conn); error(packed[2], 0) end
    local results = { unpack(packed, 2, table.maxn(packed)) }
    if keep and results[1] ~= nil then results.conn = conn else pool:release(conn) end
    return results
  end

  -- Runs fn(conn) under the database retry policy: fn returns result or
  -- nil, err, sqlstate; a retryable sqlstate runs fn again on a fresh
  -- connection (fn must be safe to repeat: one transaction, or a read).
  -- Returns { results } or { nil, err, sqlstate } once the policy gives up.
  local function run_with_retry(fn, keep)
    -- After a signal the run only records how it ended: one attempt, no waits.
    if s.stopped and s.stopped() then return run_once(fn, keep) end
    local failed
    local results = retry.call(pool.policy, s, function()
      local r = run_once(fn, keep)
      if r[1] ~= nil then return r end
      failed = r
      local class = M.retryable_sqlstate(r[3]) and not pool.closed and "transient" or "fatal"
      return nil, r[2], { class = class }
    end, function(attempt, delay, e)
      if opts.log then
        opts.log.warn("falha no PostgreSQL (%s); tentativa %d de %d em %d ms", tostring(e), attempt,
          pool.policy.attempts, delay)
      end
    end)
    return results or failed or { nil, "interrompido" }
  end

  -- fn(conn) -> result | nil, err, sqlstate, under the retry policy.
  -- Returns fn's results, or nil, err, sqlstate.
  function pool:with(fn)
    local r = run_with_retry(fn, false)
    return unpack(r, 1, table.maxn(r))
  end

  -- Like with(fn), but a success keeps the connection out of the pool for
  -- the caller (a session that holds a lock): returns conn, fn's results,
  -- or nil, err, sqlstate. The caller gives it back with release().
  function pool:hold(fn)
    local r = run_with_retry(fn, true)
    if r[1] == nil then return nil, r[2], r[3] end
    return r.conn, unpack(r, 1, table.maxn(r))
  end

  function pool:close()
    self.closed = true
    for _, c in ipairs(self.idle) do c:close() end
    self.idle = {}
    for _, co in ipairs(self.waiters) do s.wake(co) end
    self.waiters = {}
  end

  return pool
end

return M
