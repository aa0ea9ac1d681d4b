-- sched_spec.lua: the fake-clock scheduler of ragops.testing and the sync
-- primitives of ragops.util.sched (group, queue, semaphore) running on it.

local sched = require "ragops.util.sched"
local testing = require "ragops.testing"

describe("testing.scheduler (relógio falso)", function()
  it("run devolve os valores da função principal", function()
    local s = testing.scheduler()
    local a, b = s.run(function(x) return x + 1, "ok" end, 41)
    assert.are.equal(42, a)
    assert.are.equal("ok", b)
  end)

  it("sleep avança o relógio falso sem gastar tempo real e acorda na ordem do horário", function()
    local s = testing.scheduler()
    local order = {}
    local t0 = os.clock()
    s.run(function()
      for _, ms in ipairs({ 30000, 10, 5000, 10 }) do
        s.spawn(function()
          s.sleep(ms)
          order[#order + 1] = ms .. "@" .. s.now()
        end)
      end
      s.sleep(60000)
    end)
    assert.are.same({ "10@10", "10@10", "5000@5000", "30000@30000" }, order)
    assert.are.equal(60000, s.now())
    assert.is_true(os.clock() - t0 < 1, "o relógio falso não deveria esperar de verdade")
  end)

  it("spawn roda as corrotinas em ordem FIFO, passando os argumentos", function()
    local s = testing.scheduler()
    local seen = {}
    s.run(function()
      for i = 1, 3 do s.spawn(function(n, tag) seen[#seen + 1] = tag .. n end, i, "t") end
    end)
    assert.are.same({ "t1", "t2", "t3" }, seen)
  end)

  it("suspend devolve os valores passados a wake", function()
    local s = testing.scheduler()
    local got
    s.run(function()
      local me = coroutine.running()
      s.spawn(function() s.sleep(5); s.wake(me, "a", nil, 3) end)
      got = { n = 0 }
      local function keep(...) got.n = select("#", ...); got.values = { ... } end
      keep(s.suspend())
    end)
    assert.are.equal(3, got.n)
    assert.are.equal("a", got.values[1])
    assert.is_nil(got.values[2])
    assert.are.equal(3, got.values[3])
    assert.are.equal(5, s.now())
  end)

  it("wake de uma corrotina que não está suspensa é erro", function()
    local s = testing.scheduler()
    assert.has_error(function()
      s.run(function()
        local co = s.spawn(function() s.sleep(10) end)
        s.wake(co)
      end)
    end)
  end)

  it("impasse (corrotinas suspensas para sempre) gera erro claro", function()
    local s = testing.scheduler()
    local ok, err = pcall(s.run, function()
      s.spawn(function() s.suspend() end)
      s.suspend()
    end)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("impasse", 1, true), tostring(err))
    assert.truthy(tostring(err):find("2 corrotina", 1, true), tostring(err))
    -- The scheduler stays usable after the error.
    assert.are.equal(7, s.run(function() return 7 end))
  end)

  it("erro dentro de uma corrotina é propagado por run com traceback", function()
    local s = testing.scheduler()
    local ok, err = pcall(s.run, function()
      s.spawn(function() s.sleep(1); error("explodiu") end)
      s.sleep(10)
    end)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("explodiu", 1, true))
    assert.truthy(tostring(err):find("traceback", 1, true))
  end)

  it("sleep/suspend fora de uma corrotina do escalonador são erro de uso", function()
    local s = testing.scheduler()
    assert.has_error(function() s.sleep(10) end)
    assert.has_error(function() s.suspend() end)
    assert.has_error(function() s.run(function() s.sleep(-1) end) end)
  end)
  it("stop() interrompe os sleeps pendentes; os seguintes dormem normalmente", function()
    local s = testing.scheduler()
    local got = {}
    s.run(function()
      for i = 1, 2 do
        s.spawn(function() got[i] = { s.sleep(60000) } end)
      end
      assert.is_true(s.sleep(10))
      assert.is_false(s.stopped())
      assert.are.equal(2, s.stop())
      assert.is_true(s.stopped())
      assert.is_true(s.sleep(20))
    end)
    assert.are.same({ { nil, "interrompido" }, { nil, "interrompido" } }, got)
    assert.are.equal(30, s.now(), "os sleeps interrompidos não deviam avançar o relógio até 60 s")
  end)
end)

describe("ragops.util.sched sobre o escalonador falso", function()
  it("group:wait espera todas as tarefas", function()
    local s = testing.scheduler()
    local done = {}
    s.run(function()
      local g = sched.group(s)
      for _, ms in ipairs({ 300, 100, 200 }) do g:spawn(function() s.sleep(ms); done[#done + 1] = ms end) end
      g:wait()
      assert.are.equal(3, #done)
      assert.are.equal(300, s.now())
    end)
    assert.are.same({ 100, 200, 300 }, done)
  end)

  it("group:wait relança o primeiro erro de uma tarefa", function()
    local s = testing.scheduler()
    local ok, err = pcall(s.run, function()
      local g = sched.group(s)
      g:spawn(function() s.sleep(5); error("primeiro") end)
      g:spawn(function() s.sleep(10); error("segundo") end)
      g:wait()
    end)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("primeiro", 1, true))
    assert.falsy(tostring(err):find("segundo", 1, true))
  end)

  it("queue limitada bloqueia push quando cheia e pop devolve nil depois de fechada e vazia", function()
    local s = testing.scheduler()
    local popped, push_times = {}, {}
    s.run(function()
      local q = sched.queue(s, 2)
      local g = sched.group(s)
      g:spawn(function()
        while true do
          local item = q:pop()
          if item == nil then return end
          popped[#popped + 1] = item
          s.sleep(100)
        end
      end)
      for i = 1, 5 do
        q:push(i)
        push_times[i] = s.now()
      end
      q:close()
      g:wait()
    end)
    assert.are.same({ 1, 2, 3, 4, 5 }, popped)
    -- The first pushes fit; later ones had to wait for the consumer.
    assert.are.equal(0, push_times[1])
    assert.is_true(push_times[5] >= 200, "push deveria ter bloqueado com a fila cheia")
  end)

  it("push em fila fechada é erro", function()
    local s = testing.scheduler()
    assert.has_error(function()
      s.run(function()
        local q = sched.queue(s, 1)
        q:close()
        q:push(1)
      end)
    end)
  end)

  it("semaphore limita quantos seguram ao mesmo tempo e resize libera esperas", function()
    local s = testing.scheduler()
    local active, peak = 0, 0
    s.run(function()
      local sem = sched.semaphore(s, 2)
      local g = sched.group(s)
      for _ = 1, 6 do
        g:spawn(function()
          sem:acquire()
          active = active + 1
          peak = math.max(peak, active)
          s.sleep(100)
          active = active - 1
          sem:release()
        end)
      end
      g:wait()
      assert.are.equal(300, s.now())

      sem:resize(3)
      for _ = 1, 6 do
        g:spawn(function()
          sem:acquire()
          active = active + 1
          peak = math.max(peak, active)
          s.sleep(100)
          active = active - 1
          sem:release()
        end)
      end
      g:wait()
      assert.are.equal(500, s.now())
    end)
    assert.are.equal(3, peak)
  end)

  it("resize para cima acorda quem está esperando", function()
    local s = testing.scheduler()
    local got_at
    s.run(function()
      local sem = sched.semaphore(s, 1)
      sem:acquire()
      local g = sched.group(s)
      g:spawn(function() sem:acquire(); got_at = s.now() end)
      s.sleep(50)
      sem:resize(2)
      g:wait()
    end)
    assert.are.equal(50, got_at)
  end)
end)

describe("sched.future", function()
  it("roda a função numa tarefa própria e get() espera e devolve os resultados", function()
    local s = testing.scheduler()
    local order = {}
    s.run(function()
      local f = sched.future(s, function(a, b)
        s.sleep(100)
        order[#order + 1] = "tarefa"
        return a + b, nil, "fim"
      end, 1, 2)
      order[#order + 1] = "principal"
      local x, y, z = f:get()
      assert.are.equal(3, x); assert.is_nil(y); assert.are.equal("fim", z)
      assert.are.same({ 3, nil, "fim" }, { f:get() })
    end)
    assert.are.same({ "principal", "tarefa" }, order)
  end)

  it("o erro da tarefa reaparece em get()", function()
    local s = testing.scheduler()
    local ok, err = s.run(function()
      local f = sched.future(s, function() error("quebrou") end)
      return pcall(f.get)
    end)
    assert.is_false(ok)
    assert.matches("quebrou", tostring(err))
  end)
end)
