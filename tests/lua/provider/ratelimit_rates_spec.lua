-- ratelimit_rates_spec.lua: ragops.provider.ratelimit's set_rates (buckets
-- and concurrency ceiling changed in place, waiters kept) and demand (what
-- the workers asked over the last window), on the fake-clock scheduler of
-- ragops.testing.

local ratelimit = require "ragops.provider.ratelimit"
local testing = require "ragops.testing"

local OK = { status = 200, ok = true }
local TOO_MANY = { status = 429, ok = false }

describe("ratelimit: set_rates", function()
  it("uma capacidade menor corta o nível; uma maior mantém o nível", function()
    local s = testing.scheduler()
    local lim = ratelimit.new { sched = s, requests_per_min = 600, tokens_per_min = 6000 }
    s.run(function()
      lim:acquire(1000); lim:release(OK)        -- tokens 6000 -> 5000, requests 600 -> 599
      lim:set_rates(60, 1200)
      assert.are.equal(60, lim.requests.level, "nível de requisições")
      assert.are.equal(1200, lim.tokens.level, "nível de tokens")
      lim:set_rates(6000, 60000)
      assert.are.equal(60, lim.requests.level, "nível mantido ao subir")
      assert.are.equal(1200, lim.tokens.level, "nível mantido ao subir")
      assert.are.equal(6000, lim.requests.capacity)
      assert.are.equal(60000 / 60000, lim.tokens.rate)
    end)
  end)

  it("antes de mudar, o balde se enche pelo ritmo antigo até agora", function()
    local s = testing.scheduler()
    local lim = ratelimit.new { sched = s, tokens_per_min = 600 }     -- 10 tokens/s
    s.run(function()
      lim:acquire(600); lim:release(OK)         -- empty
      s.sleep(3000)                             -- +30 at the old rate
      lim:set_rates(nil, 60000)                 -- 1000 tokens/s from now on
      assert.are.equal(30, lim.tokens.level)
      s.sleep(1000)
      lim:acquire(1030)
      assert.are.equal(4000, s.now(), "1030 tokens cabem em t=4 s")
      lim:release(OK)
    end)
  end)

  it("uma dívida (pedido maior que o balde) continua depois de baixar a capacidade", function()
    local s = testing.scheduler()
    local lim = ratelimit.new { sched = s, tokens_per_min = 600 }
    s.run(function()
      lim:acquire(900); lim:release(OK)         -- oversize: level -300
      lim:set_rates(nil, 300)
      assert.are.equal(-300, lim.tokens.level)
    end)
  end)

  it("quem espera num balde lento é servido no ritmo novo, em ordem, sem perder ninguém", function()
    local s = testing.scheduler()
    local lim = ratelimit.new { sched = s, requests_per_min = 1, max_concurrency = 8 }
    local order = {}
    s.run(function()
      lim:acquire(0); lim:release(OK)           -- bucket empty: next one in 60 s
      for i = 1, 5 do
        s.spawn(function()
          lim:acquire(0)
          order[#order + 1] = { i, s.now() }
          lim:release(OK)
        end)
      end
      s.sleep(10)
      assert.are.equal(5, lim:stats().queued)
      lim:set_rates(600, nil)                   -- one every 100 ms
    end)
    local ids = {}
    for k, o in ipairs(order) do ids[k] = o[1] end
    assert.are.same({ 1, 2, 3, 4, 5 }, ids)
    -- The head was napping on the old rate (60 s): set_rates wakes it, and it
    -- goes at the new rate (a request every 100 ms), the others after it. (A
    -- head left asleep on the old rate starved a joining process of the shared
    -- quota: its demand read as idle, its slice stayed at the minimum.)
    assert.is_true(order[1][2] <= 10 + 100, "primeira em " .. order[1][2] .. " ms")
    assert.is_true(order[5][2] <= 10 + 5 * 100, "última em " .. order[5][2] .. " ms")
    assert.are.equal(0, lim:stats().queued)
  end)

  it("nil tira o limite; um limite novo começa com o balde cheio", function()
    local s = testing.scheduler()
    local lim = ratelimit.new { sched = s, requests_per_min = 1 }
    s.run(function()
      lim:set_rates(nil, nil)
      for _ = 1, 100 do lim:acquire(10); lim:release(OK) end
      assert.are.equal(0, s.now())
      lim:set_rates(nil, 500)
      assert.are.equal(500, lim.tokens.level)
    end)
  end)

  it("baixar o teto de concorrência segura os novos; subir libera os que esperam", function()
    local s = testing.scheduler()
    local lim = ratelimit.new { sched = s, max_concurrency = 8 }
    local peak, granted = 0, 0
    s.run(function()
      lim:set_rates(nil, nil, 2)
      assert.are.equal(2, lim:stats().concurrency)
      for _ = 1, 6 do
        s.spawn(function()
          lim:acquire(1)
          granted = granted + 1
          peak = math.max(peak, lim:stats().in_flight)
          s.sleep(1000)
          lim:release(OK)
        end)
      end
      s.sleep(10)
      assert.are.equal(2, granted)
      lim:set_rates(nil, nil, 6)
      assert.are.equal(6, lim:stats().concurrency)
      s.sleep(0)
      assert.are.equal(6, granted, "subir o teto acorda os que esperam")
    end)
    assert.are.equal(6, peak)
  end)

  it("uma janela reduzida pelo AIMD não pula para o teto novo; nil volta ao teto sem limite", function()
    local s = testing.scheduler()
    local lim = ratelimit.new { sched = s, max_concurrency = 8, in_flight = 16 }
    s.run(function()
      lim:acquire(1); lim:release(TOO_MANY)     -- 8 -> 4
      lim:set_rates(nil, nil, 12)
      assert.are.equal(4, lim.window)
      assert.are.equal(12, lim.max_concurrency)
      lim:set_rates(nil, nil, 3)
      assert.are.equal(3, lim.window)
      lim:set_rates(nil, nil, nil)
      assert.are.equal(16, lim.max_concurrency)
    end)
  end)

  it("um teto abaixo de min_concurrency baixa o piso junto", function()
    local s = testing.scheduler()
    local lim = ratelimit.new { sched = s, max_concurrency = 8, min_concurrency = 4 }
    s.run(function()
      lim:set_rates(nil, nil, 1)
      assert.are.equal(1, lim.window)
      assert.are.equal(1, lim.min_concurrency)
      lim:set_rates(nil, nil, 8)
      assert.are.equal(4, lim.min_concurrency)
    end)
  end)

  it("recusa valores inválidos", function()
    local s = testing.scheduler()
    local lim = ratelimit.new { sched = s }
    assert.has_error(function() lim:set_rates(0) end)
    assert.has_error(function() lim:set_rates(nil, -1) end)
    assert.has_error(function() lim:set_rates(nil, nil, 1.5) end)
    assert.has_error(function() lim:set_rates(nil, nil, 0) end)
  end)
end)

describe("ratelimit: demand", function()
  it("requisições e tokens pedidos por minuto na janela, e a janela recomeça", function()
    local s = testing.scheduler()
    local lim = ratelimit.new { sched = s }
    local d1, d2
    s.run(function()
      for _ = 1, 10 do lim:acquire(100); lim:release(OK) end
      s.sleep(2000)
      d1 = lim:demand()
      s.sleep(6000)
      lim:acquire(50); lim:release(OK)
      d2 = lim:demand()
    end)
    assert.are.same({ requests_per_min = 300, tokens_per_min = 30000, concurrency = 1,
                      starved = false, window_ms = 2000 }, d1)
    assert.are.same({ requests_per_min = 10, tokens_per_min = 500, concurrency = 1,
                      starved = false, window_ms = 6000 }, d2)
  end)

  it("conta o que foi pedido, não só o concedido, e marca quem esperou num balde", function()
    local s = testing.scheduler()
    local lim = ratelimit.new { sched = s, tokens_per_min = 600, max_concurrency = 8 }
    local d
    s.run(function()
      for _ = 1, 4 do
        s.spawn(function() lim:acquire(600); s.sleep(10); lim:release(OK) end)
      end
      s.sleep(1000)
      d = lim:demand()                          -- 3 still waiting on the bucket
    end)
    assert.are.equal(4 * 600 * 60, d.tokens_per_min)
    assert.is_true(d.starved)
    assert.are.equal(4, d.concurrency, "quatro pediram ao mesmo tempo")
  end)

  it("esperar só pela pausa (Retry-After) ou pela janela de concorrência não é fome de balde", function()
    local s = testing.scheduler()
    local lim = ratelimit.new { sched = s, tokens_per_min = 60000, max_concurrency = 1 }
    local d
    s.run(function()
      lim:pause_until(500)
      for _ = 1, 3 do
        s.spawn(function() lim:acquire(1); s.sleep(100); lim:release(OK) end)
      end
      s.sleep(2000)
      d = lim:demand()
    end)
    assert.is_false(d.starved)
    assert.are.equal(3, d.concurrency)
  end)

  it("duas chamadas no mesmo instante dão a mesma resposta", function()
    local s = testing.scheduler()
    local lim = ratelimit.new { sched = s }
    s.run(function()
      lim:acquire(10); lim:release(OK)
      s.sleep(1000)
      local a = lim:demand()
      local b = lim:demand()
      assert.are.equal(a, b)
      assert.are.equal(600, b.tokens_per_min)
    end)
  end)
end)

describe("ratelimit: empty_buckets", function()
  it("esvazia os dois baldes e os deixa devendo debt_ms de reposição: nada sai antes disso", function()
    local s = testing.scheduler()
    local lim = ratelimit.new { sched = s, requests_per_min = 600, tokens_per_min = 6000 }
    s.run(function()
      lim:empty_buckets(2000)
      assert.are.equal(-20, lim.requests.level)
      assert.are.equal(-200, lim.tokens.level)
      assert.are.equal(0, lim:room())
      lim:acquire(10)                    -- 200 tokens of debt + 10 at 100/s: 2.1 s
      assert.are.equal(2100, s.now())
    end)
  end)
end)

describe("ratelimit: demand de quem espera", function()
  it("a cabeça da fila esperando num balde conta como faminta em toda janela, não só na que chegou", function()
    local s = testing.scheduler()
    local lim = ratelimit.new { sched = s, tokens_per_min = 60 }
    s.run(function()
      lim:acquire(60); lim:release(OK)          -- bucket empty: 60 tokens take a minute
      s.spawn(function() lim:acquire(60); lim:release(OK) end)
      s.sleep(10)
      assert.is_true(lim:demand().starved, "primeira janela")
      s.sleep(2000)
      assert.is_true(lim:demand().starved, "janela seguinte, ainda esperando")
      s.stop()
    end)
  end)
end)
