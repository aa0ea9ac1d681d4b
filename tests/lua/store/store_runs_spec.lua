-- store_runs_spec.lua: the heartbeat that keeps a run held (ragops.store.runs)
-- with a fake ragops.pg behind the real pool, on the fake scheduler. A
-- session killed right after the lock was taken again must be retried under
-- the database retry policy, not end the run (CI failure of the chaos test:
-- "execução interrompida: conexão com o PostgreSQL perdida").

local pool_mod = require "ragops.store.pool"
local store_runs = require "ragops.store.runs"
local testing = require "ragops.testing"

-- A fake ragops.pg whose sessions answer script[i](sql) for the i-th
-- statement run on any session, in order; a statement answered with 08006
-- kills its session.
local function fake_pg(s, script)
  local pg = { connects = 0, statements = {} }
  function pg.connect()
    pg.connects = pg.connects + 1
    s.sleep(1)
    local conn = { ok = true }
    function conn:is_ok() return self.ok end
    function conn:close() self.ok = false end
    function conn:query(sql)
      pg.statements[#pg.statements + 1] = sql:match("pg_try_advisory_lock") and "lock" or "beat"
      local answer = table.remove(script, 1)
      if not answer then return nil, "roteiro do teste acabou", "XX000" end
      local rows, err, state = answer()
      if state == "08006" then self.ok = false end
      return rows, err, state
    end
    return conn
  end
  return pg
end

local function killed() return nil, "conexão com o PostgreSQL perdida: server closed the connection", "08006" end
local function locked() return { { ok = true } } end
local function not_locked() return { { ok = false } } end
local function beat_ok() return { { id = 7 } } end
local function beat_no_owner() return {} end

-- A store with the run methods, holding run 7 on a first session.
local function held_store(s, script, attempts)
  local pg = fake_pg(s, script)
  local pool = pool_mod.new { conninfo = "x", size = 4, sched = s, pg = pg,
                              retry = { attempts = attempts or 5, base_ms = 10, max_ms = 20 } }
  local store = setmetatable({ pool = pool, locked_run = 7, owner_token = "dono", keeping = true },
                             { __index = store_runs.Store })
  return store, pg
end

describe("ragops.store.runs: heartbeat", function()
  it("uma sessão derrubada logo depois de retomar a trava é refeita pela política do banco (CI da parada 15)", function()
    local s = testing.scheduler()
    local store, pg = held_store(s, { killed, locked, killed, locked, beat_ok })
    local ok, reason = s.run(function()
      store.lock_conn = store.pool:acquire()
      return store:beat()
    end)
    assert.are.equal(true, ok, reason)
    assert.are.same({ "beat", "lock", "beat", "lock", "beat" }, pg.statements)
    assert.is_true(store.lock_conn:is_ok())
  end)

  it("outro processo com a trava: a execução é perdida, com a razão em pt-BR", function()
    local s = testing.scheduler()
    local store = held_store(s, { killed, not_locked })
    local ok, reason = s.run(function()
      store.lock_conn = store.pool:acquire()
      return store:beat()
    end)
    assert.is_nil(ok)
    assert.are.equal("outro processo tomou a execução enquanto a conexão estava perdida", reason)
  end)

  it("dono trocado: perdida, sem refazer", function()
    local s = testing.scheduler()
    local store, pg = held_store(s, { beat_no_owner })
    local ok, reason = s.run(function()
      store.lock_conn = store.pool:acquire()
      return store:beat()
    end)
    assert.is_nil(ok)
    assert.matches("outro processo assumiu", reason)
    assert.are.equal(1, #pg.statements)
  end)

  it("PostgreSQL inalcançável além da política: keep_run chama on_lost uma vez, sem o texto cru do libpq", function()
    local s = testing.scheduler()
    local script = {}
    for i = 1, 20 do script[i] = killed end
    local store = held_store(s, script, 3)
    local lost = {}
    s.run(function()
      store.lock_conn = store.pool:acquire()
      store:keep_run { sched = s, spent = function() return 0 end,
                       on_lost = function(r) lost[#lost + 1] = r end }
      s.sleep(store_runs.HEARTBEAT_MS * 3 + 1000)
      store.keeping = false
    end)
    assert.are.equal(1, #lost)
    assert.matches("^não foi possível reconectar ao PostgreSQL", lost[1])
  end)

  it("os pedidos reservados para um heartbeat que não gravou voltam para o próximo", function()
    local s = testing.scheduler()
    local store = held_store(s, { killed, not_locked })
    store.spent_fn = function() return 5 end
    s.run(function()
      store.lock_conn = store.pool:acquire()
      store:beat()
    end)
    assert.are.equal(5, store:reserve_spent())
  end)
end)
