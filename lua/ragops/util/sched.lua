-- ragops.util.sched: coroutine scheduling seen from Lua.
--
-- Every module that needs concurrency takes a scheduler with this shape:
--   spawn(fn, ...) -> co       run fn in a new coroutine (next loop pass)
--   suspend() -> ...           park the running coroutine until wake(co, ...)
--   wake(co, ...)              resume a parked coroutine with values
--   sleep(ms) -> true          yield for ms milliseconds; nil, "interrompido"
--                              when stop() cuts it short
--   now() -> ms                monotonic clock in milliseconds
--   stop() -> n                the run is stopping (a signal): every wait
--                              pending now returns nil, "interrompido" at once
--                              (sleeps; on the real loop also queries, HTTP and
--                              embedding calls); n = how many were cut short
--   stopped() -> bool          stop() was called: retry loops give up (ragops.provider.retry)
-- sched.real() is backed by the C loop (ragops.core); ragops.testing offers
-- a pure-Lua one with a fake clock. On top of either, this module builds the
-- few sync primitives the runner needs: task groups, semaphores and queues.
local M = {}

function M.real()
  local core = require "ragops.core"
  local stopped = false
  return {
    spawn = core.spawn, suspend = core.suspend, wake = core.wake,
    sleep = core.sleep, now = core.now,
    stop = function() stopped = true; return core.cancel_all() end,
    stopped = function() return stopped end,
  }
end

-- A group of tasks: spawn many, wait for all. The first error raised in a
-- task is kept (with its traceback) and re-raised by wait().
function M.group(s)
  local g = { pending = 0, waiter = nil, err = nil }
  function g:spawn(fn, ...)
    self.pending = self.pending + 1
    local args, nargs = { ... }, select("#", ...)
    s.spawn(function()
      local ok, err = xpcall(function() return fn(unpack(args, 1, nargs)) end, debug.traceback)
      if not ok and not self.err then self.err = err end
      self.pending = self.pending - 1
      if self.pending == 0 and self.waiter then
        local co = self.waiter
        self.waiter = nil
        s.wake(co)
      end
    end)
  end
  function g:wait()
    if self.pending > 0 then
      self.waiter = coroutine.running()
      s.suspend()
    end
    if self.err then error(self.err, 0) end
  end
  return g
end

-- fn(...) in a task of its own; :get() waits for it and returns its
-- results (re-raising its error, like group:wait()).
function M.future(s, fn, ...)
  local g, results = M.group(s), { n = 0 }
  local args, nargs = { ... }, select("#", ...)
  g:spawn(function()
    local function pack(...) return { n = select("#", ...), ... } end
    results = pack(fn(unpack(args, 1, nargs)))
  end)
  return { get = function() g:wait(); return unpack(results, 1, results.n) end }
end

-- A bounded FIFO queue between coroutines. push blocks while full; pop blocks
-- while empty and returns nil once the queue is closed and drained.
function M.queue(s, capacity)
  local q = { items = {}, head = 1, tail = 0, closed = false,
              pushers = {}, poppers = {} }
  local function wake_one(list, ...)
    local co = table.remove(list, 1)
    if co then s.wake(co, ...) end
  end
  function q:size() return self.tail - self.head + 1 end
  function q:push(item)
    assert(not self.closed, "fila fechada")
    while self:size() >= capacity do
      self.pushers[#self.pushers + 1] = coroutine.running()
      s.suspend()
    end
    self.tail = self.tail + 1
    self.items[self.tail] = item
    wake_one(self.poppers)
  end
  function q:pop()
    while self:size() == 0 do
      if self.closed then return nil end
      self.poppers[#self.poppers + 1] = coroutine.running()
      s.suspend()
    end
    local item = self.items[self.head]
    self.items[self.head] = nil
    self.head = self.head + 1
    wake_one(self.pushers)
    return item
  end
  function q:close()
    self.closed = true
    while #self.poppers > 0 do wake_one(self.poppers) end
  end
  return q
end

-- A counting semaphore (limits concurrent holders; capacity may change).
function M.semaphore(s, capacity)
  local sem = { capacity = capacity, held = 0, waiters = {} }
  function sem:acquire()
    while self.held >= self.capacity do
      self.waiters[#self.waiters + 1] = coroutine.running()
      s.suspend()
    end
    self.held = self.held + 1
  end
  function sem:release()
    self.held = self.held - 1
    local co = table.remove(self.waiters, 1)
    if co then s.wake(co) end
  end
  function sem:resize(n)
    self.capacity = n
    local room = self.capacity - self.held
    while room > 0 and #self.waiters > 0 do
      s.wake(table.remove(self.waiters, 1))
      room = room - 1
    end
  end
  return sem
end

return M
