-- pool_spec.lua: ragops.store.pool with a fake ragops.pg on the fake scheduler:
-- waiters are woken when a connect fails (7.11), and pool:with applies the
-- database retry policy to connection losses (7.7).

local pool_mod = require "ragops.store.pool"
local testing = require "ragops.testing"

-- A fake ragops.pg: connect() fails while `down` is true; queries answer
-- `answers` in order (each { rows } or { nil, err, state }).
local function fake_pg(s)
  local pg = { down = false, connects = 0 }
  function pg.connect()
    pg.connects = pg.connects + 1
    s.sleep(5) -- a connect takes loop time, so others queue behind it
    if pg.down then return nil, "conexão recusada" end
    local conn = { ok = true }
    function conn:is_ok() return self.ok end
    function conn:close() self.ok = false end
    function conn:query() return pg.answer(self) end
    return conn
  end
  function pg.answer() return { ok = 1 } end
  return pg
end

describe("ragops.store.pool", function()
  it("acorda quem espera quando uma conexão falha, em vez de deixá-lo parado para sempre (7.11)", function()
    local s = testing.scheduler()
    local pg = fake_pg(s)
    pg.down = true
    local pool = pool_mod.new { conninfo = "x", size = 1, sched = s, pg = pg }
    local results = {}
    s.run(function()
      local g = require("ragops.util.sched").group(s)
      for i = 1, 4 do
        g:spawn(function()
          local c, err = pool:acquire()
          results[i] = c and "ok" or err
        end)
      end
      g:wait()
    end)
    assert.are.same({ "conexão recusada", "conexão recusada", "conexão recusada", "conexão recusada" }, results)
  end)

  it("with() refaz a operação numa conexão nova quando a conexão cai (08006)", function()
    local s = testing.scheduler()
    local pg = fake_pg(s)
    local calls = 0
    function pg.answer(conn)
      calls = calls + 1
      if calls <= 2 then conn.ok = false; return nil, "conexão perdida", "08006" end
      return { n = calls }
    end
    local pool = pool_mod.new { conninfo = "x", size = 2, sched = s, pg = pg,
                                retry = { attempts = 5, base_ms = 10, max_ms = 50 } }
    local rows = s.run(function() return pool:with(function(c) return c:query("select 1") end) end)
    assert.are.equal(3, rows.n)
    assert.are.equal(3, pg.connects)
  end)

  it("with() não repete erros que não são de conexão", function()
    local s = testing.scheduler()
    local pg = fake_pg(s)
    local calls = 0
    function pg.answer() calls = calls + 1; return nil, "violação de chave", "23505" end
    local pool = pool_mod.new { conninfo = "x", size = 2, sched = s, pg = pg }
    local r, err, state = s.run(function() return pool:with(function(c) return c:query("x") end) end)
    assert.is_nil(r)
    assert.are.equal("violação de chave", err)
    assert.are.equal("23505", state)
    assert.are.equal(1, calls)
  end)
end)
