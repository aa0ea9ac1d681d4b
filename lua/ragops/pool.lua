-- ragops.pool: a small pool of PostgreSQL connections shared by the runner's
-- coroutines. acquire() parks the caller while every connection is busy;
-- a connection that was lost is dropped on release and replaced lazily.
local M = {}

-- opts: { conninfo = "...", size = 8, sched = <scheduler>, pg = <ragops.pg>,
--         on_connect = function(conn) -> ok, err (session setup, optional) }
function M.new(opts)
  local pool = { idle = {}, open = 0, size = opts.size or 8, waiters = {},
                 closed = false }
  local pg, s = opts.pg or require "ragops.pg", opts.sched

  -- Returns a connection or nil, err (the server is unreachable).
  function pool:acquire()
    while true do
      if self.closed then return nil, "pool de conexões fechado" end
      local conn = table.remove(self.idle)
      if conn then return conn end
      if self.open < self.size then
        self.open = self.open + 1
        local c, err = pg.connect(opts.conninfo)
        if c and opts.on_connect then
          local ok, setup_err = opts.on_connect(c)
          if not ok then c:close(); c, err = nil, setup_err end
        end
        if not c then
          self.open = self.open - 1
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
    local co = table.remove(self.waiters, 1)
    if co then s.wake(co) end
  end

  -- Runs fn(conn) with a pooled connection; returns what fn returns.
  -- Errors raised by fn release the connection and propagate.
  function pool:with(fn)
    local conn, err = self:acquire()
    if not conn then return nil, err, "08006" end
    local results = { pcall(fn, conn) }
    self:release(conn)
    if not results[1] then error(results[2], 0) end
    return unpack(results, 2, table.maxn(results))
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
