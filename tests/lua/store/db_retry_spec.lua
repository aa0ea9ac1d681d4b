-- db_retry_spec.lua: the database retry policy (ragops.store.pool + ragops.provider.retry)
-- on the fake scheduler, whose clock only moves when someone waits: the
-- window an outage may last (issue 19 item 15), the jitter of each process,
-- a run that aborted making single attempts, and the paths that lost the
-- SQLSTATE of a terminated session (issue 19 item 1).
require "tests.lua.c_stubs"
local context_mod = require "ragops.run.context"
local pool_mod = require "ragops.store.pool"
local retry = require "ragops.provider.retry"
local store_pg = require "ragops.store.pg"
local testing = require "ragops.testing"

local function const(x) return function() return x end end

local QUIET = { warn = function() end, error = function() end, info = function() end }

-- A fake ragops.pg whose connections answer with pg.answer(conn, sql);
-- connect() fails while pg.down(clock) is true. Takes no loop time, so the
-- fake clock is the sum of the waits.
local function fake_pg(s)
  local pg = { connects = 0, conns = {} }
  function pg.down() return false end
  function pg.connect()
    pg.connects = pg.connects + 1
    if pg.down(s.now()) then return nil, "conexão recusada" end
    local conn = { ok = true, n = pg.connects }
    function conn:is_ok() return self.ok end
    function conn:close() self.ok = false end
    function conn:query(sql, ...) return pg.answer(self, sql, ...) end
    pg.conns[#pg.conns + 1] = conn
    return conn
  end
  function pg.answer(conn)
    if not conn.ok then return nil, "conexão perdida", "08006" end
    return { { ok = 1 } }
  end
  return pg
end

local function new_pool(s, pg, random, size)
  return pool_mod.new { conninfo = "x", size = size or 4, sched = s, pg = pg, random = random }
end

describe("política de novas tentativas do PostgreSQL", function()
  describe("janela (item 15)", function()
    it("espera total explícita: 45 s no pior caso, no esperado e no melhor", function()
      local least, expected, worst = retry.total_wait_ms(pool_mod.DB_RETRY)
      assert.are.same({ 45000, 45000, 45000 }, { least, expected, worst })
      -- The old policy (12 attempts, full jitter from 250 ms to 10 s): 0 to
      -- 65.75 s for one operation, 32.9 s expected; the first of several
      -- operations retrying at once gave up much sooner.
      local old = { attempts = 12, base_ms = 250, max_ms = 10000 }
      least, expected, worst = retry.total_wait_ms(old)
      assert.are.same({ 0, 32875, 65750 }, { least, expected, worst })
    end)

    for _, case in ipairs({ { "menor", 0, 23 }, { "meio", 0.5, 17 }, { "maior", 0.9999, 14 } }) do
      it(("com o banco fora, desiste depois de exatamente 45 s de espera (jitter %s)"):format(case[1]), function()
        local s = testing.scheduler()
        local pg = fake_pg(s)
        pg.down = function() return true end
        local pool = new_pool(s, pg, const(case[2]))
        local r, err, state = s.run(function() return pool:with(function(c) return c:query("select 1") end) end)
        assert.is_nil(r)
        assert.are.equal("conexão recusada", err)
        assert.are.equal("08006", state)
        assert.are.equal(pool_mod.WINDOW_MS, s.now())
        assert.are.equal(case[3], pg.connects)
      end)
    end

    for _, jitter in ipairs({ 0, 0.3, 0.7, 0.9999 }) do
      it(("uma queda de 44 s não derruba a operação; uma de 46 s sim (jitter %.1f)"):format(jitter), function()
        for _, outage in ipairs({ 44000, 46000 }) do
          local s = testing.scheduler()
          local pg = fake_pg(s)
          pg.down = function(now) return now < outage end
          local pool = new_pool(s, pg, const(jitter))
          local r = s.run(function() return pool:with(function(c) return c:query("select 1") end) end)
          if outage < pool_mod.WINDOW_MS then
            assert.is_not_nil(r, ("queda de %d ms deveria ser tolerada"):format(outage))
          else
            assert.is_nil(r, ("queda de %d ms deveria desistir"):format(outage))
          end
        end
      end)
    end

    it("ninguém espera menos que a metade do teto (jitter igual)", function()
      for attempt = 1, 12 do
        local floor, ceiling = retry.backoff_range(pool_mod.DB_RETRY, attempt)
        assert.are.equal(ceiling / 2, floor)
        assert.is_true(retry.backoff_ms(pool_mod.DB_RETRY, attempt, nil, const(0)) >= floor)
        assert.is_true(retry.backoff_ms(pool_mod.DB_RETRY, attempt, nil, const(0.9999)) < ceiling)
      end
    end)
  end)

  it("dois processos sorteiam esperas diferentes (math.random semeado uma vez por processo)", function()
    local script = [[local r = require "ragops.provider.retry"
      local out = {}
      for i = 1, 6 do out[i] = r.backoff_ms({ base_ms = 250, max_ms = 10000 }, i) end
      io.write(table.concat(out, ","))]]
    local cmd = "LUA_PATH='./lua/?.lua;;' luajit -e '" .. script .. "'"
    local draws = {}
    for i = 1, 2 do
      local p = assert(io.popen(cmd))
      draws[i] = p:read("*a")
      p:close()
    end
    assert.matches("^%d+,%d+,%d+,%d+,%d+,%d+$", draws[1])
    assert.are_not.equal(draws[1], draws[2])
  end)

  describe("depois do abort (item 15)", function()
    -- The run's context over a store on the pool, as ragops.run.pipeline builds it.
    local function run_context(s, pool)
      local store = store_pg.new { pool = pool, table = "rag_documents", embedding_type = "real[]" }
      return context_mod.context({}, { sched = s, store = store, log = QUIET }), store
    end

    it("as operações em espera desistem na hora, e as seguintes tentam uma vez, sem esperar", function()
      local s = testing.scheduler()
      local pg = fake_pg(s)
      pg.down = function() return true end
      local pool = new_pool(s, pg, const(0.5))
      local ctx, store = run_context(s, pool)
      local ended, after = {}, nil
      s.run(function()
        local g = require("ragops.util.sched").group(s)
        for i = 1, 3 do
          g:spawn(function()
            local r, err = store:query("select 1")
            ended[i] = { at = s.now(), r = r, err = err }
          end)
        end
        s.sleep(3000)
        ctx:abort(4, "não foi possível gravar no PostgreSQL")
        g:wait()
        local connects, at = pg.connects, s.now()
        local r, err, state = store:query("select 2")
        after = { attempts = pg.connects - connects, waited = s.now() - at, r = r, err = err, state = state }
      end)
      for i = 1, 3 do
        assert.are.equal(3000, ended[i].at, ("operação %d deveria desistir no abort"):format(i))
        assert.is_nil(ended[i].r)
        assert.are.equal("conexão recusada", ended[i].err)
      end
      assert.are.same({ attempts = 1, waited = 0, err = "conexão recusada", state = "08006" }, after)
    end)

    it("um abort por alerta (código 3) deixa as unidades em andamento terminarem com a política inteira", function()
      local s = testing.scheduler()
      local pg = fake_pg(s)
      pg.down = function(now) return now < 10000 end
      local pool = new_pool(s, pg, const(0.5))
      local ctx, store = run_context(s, pool)
      local rows = s.run(function()
        s.spawn(function() s.sleep(1000); ctx:abort(3, "taxa de falhas") end)
        return store:query("select 1")
      end)
      assert.is_not_nil(rows)
      assert.is_true(s.now() >= 10000)
    end)
  end)

  describe("sessões encerradas (item 1)", function()
    it("a criação da tabela de staging devolve o SQLSTATE da sessão perdida", function()
      -- A pool that runs fn once: what the store itself hands back.
      local conn = { ok = true }
      function conn:is_ok() return self.ok end
      function conn:query(sql)
        if sql:match("create temp table") then
          self.ok = false
          return nil, "conexão com o PostgreSQL perdida: FATAL: terminating connection due to administrator command",
            "08006"
        end
        return { affected = 0 }
      end
      local once = { with = function(_, fn) return fn(conn) end }
      local store = store_pg.new { pool = once, table = "rag_documents", embedding_type = "real[]" }
      local r, err, state = store:write_unit { entity_type = "verse", parts = { { docs = { {} }, batch = {} } },
        chunk_counts = { entity_ids = {}, counts = {} }, refresh = { entity_ids = {} }, failures = {},
        resolved_ids = {} }
      assert.is_nil(r)
      assert.matches("administrator command", err)
      assert.are.equal("08006", state)
    end)

    it("uma falha sem SQLSTATE numa conexão que caiu é refeita numa conexão nova", function()
      local s = testing.scheduler()
      local pg = fake_pg(s)
      local pool = new_pool(s, pg, const(0))
      local calls = 0
      local r = s.run(function()
        return pool:with(function(c)
          calls = calls + 1
          if calls == 1 then c.ok = false; return nil, "falha ao ler o esquema do ragops" end
          return "ok"
        end)
      end)
      assert.are.equal("ok", r)
      assert.are.equal(2, calls)
    end)

    it("depois de uma sessão perdida, as ociosas (encerradas juntas) não gastam tentativas", function()
      local s = testing.scheduler()
      local pg = fake_pg(s)
      local pool = new_pool(s, pg, const(0), 4)
      local attempts = 0
      local r = s.run(function()
        -- Four sessions opened and left idle, then all terminated at once.
        local held = {}
        for i = 1, 4 do held[i] = pool:acquire() end
        for i = 1, 4 do pool:release(held[i]) end
        for _, c in ipairs(pg.conns) do c.ok = false end
        return pool:with(function(c) attempts = attempts + 1; return c:query("select 1") end)
      end)
      assert.is_not_nil(r)
      assert.are.equal(2, attempts)
      assert.are.equal(5, pg.connects)
    end)
  end)
end)
