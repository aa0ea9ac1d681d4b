-- ratelimit_spec.lua: ragops.provider.ratelimit on the fake-clock scheduler of
-- ragops.testing: request/token buckets (checked by grant timestamps),
-- oversize requests, AIMD window (halve on 429 once per cooldown, grow back),
-- Retry-After pause for everyone, FIFO order, peak concurrency, no busy loop,
-- and the acquire/embed/release sequence the runner uses.

local ratelimit = require "ragops.provider.ratelimit"
local testing = require "ragops.testing"
local retry = require "ragops.provider.retry"

-- A testing scheduler whose sleep() calls are counted; a runaway number of
-- sleeps (a limiter spinning on the fake clock) fails the test instead of
-- hanging it.
local MAX_SLEEPS = 10000
local function counted_sched()
  local s = testing.scheduler()
  local real_sleep = s.sleep
  s.sleeps = 0
  s.sleep = function(ms)
    s.sleeps = s.sleeps + 1
    if s.sleeps > MAX_SLEEPS then error("espera ativa: mais de " .. MAX_SLEEPS .. " sleep()", 2) end
    return real_sleep(ms)
  end
  return s
end

local OK = { status = 200, ok = true }
local TOO_MANY = { status = 429, ok = false }

-- Largest number of grants inside any window [t, t + width) of the sorted times.
local function max_in_window(times, width)
  local best, lo = 0, 1
  for hi = 1, #times do
    while times[hi] - times[lo] >= width do lo = lo + 1 end
    best = math.max(best, hi - lo + 1)
  end
  return best
end

describe("ratelimit: balde de requisições", function()
  it("requests_per_min = 60 deixa passar a rajada inicial e depois 1 por segundo", function()
    local s = counted_sched()
    local lim = ratelimit.new { sched = s, requests_per_min = 60 }
    local times = {}
    s.run(function()
      for _ = 1, 100 do
        lim:acquire(0)
        times[#times + 1] = s.now()
        lim:release(OK)
      end
    end)
    assert.are.equal(100, #times)
    -- Bucket starts full: 60 at t=0, then one per 1000 ms.
    for i = 1, 60 do assert.are.equal(0, times[i]) end
    for i = 61, 100 do assert.are.equal((i - 60) * 1000, times[i], "requisição " .. i) end
    -- In steady state N seconds let through at most ~N requests.
    local steady = {}
    for i = 61, 100 do steady[#steady + 1] = times[i] end
    assert.is_true(max_in_window(steady, 10000) <= 10)
    assert.is_true(max_in_window(steady, 30000) <= 30)
    -- Over any window: never more than capacity + rate * width.
    assert.is_true(max_in_window(times, 60000) <= 60 + 60)
    -- One sleep per throttled grant, no spinning.
    assert.is_true(s.sleeps <= 40, "sleeps = " .. s.sleeps)
    local st = lim:stats()
    assert.are.equal(40, st.throttled)
    assert.are.equal(40 * 1000, st.waited_ms)
  end)

  it("com várias corrotinas concorrentes o ritmo também fica em 1 por segundo", function()
    local s = counted_sched()
    local lim = ratelimit.new { sched = s, requests_per_min = 60, max_concurrency = 4 }
    local times = {}
    s.run(function()
      for _ = 1, 8 do
        s.spawn(function()
          for _ = 1, 10 do
            lim:acquire(0)
            times[#times + 1] = s.now()
            s.sleep(50)
            lim:release(OK)
          end
        end)
      end
    end)
    assert.are.equal(80, #times)
    table.sort(times)
    -- Token-bucket bound: by time t at most 60 + t/1000 grants.
    for i = 1, 80 do
      assert.is_true(i <= 60 + times[i] / 1000 + 1e-9,
        ("a requisição %d passou cedo demais (%d ms)"):format(i, times[i]))
    end
    -- ... and the limiter does not hold back more than needed.
    assert.is_true(times[80] <= 21000, "última requisição em " .. times[80] .. " ms")
    assert.is_true(max_in_window(times, 60000) <= 60 + 60)
  end)
end)

describe("ratelimit: balde de tokens", function()
  it("tokens_per_min limita os tokens enviados", function()
    local s = counted_sched()
    -- 6000 tokens/min = 100 tokens/s; each request 1000 tokens.
    local lim = ratelimit.new { sched = s, tokens_per_min = 6000 }
    local times = {}
    s.run(function()
      for _ = 1, 20 do
        lim:acquire(1000)
        times[#times + 1] = s.now()
        lim:release(OK)
      end
    end)
    for i = 1, 6 do assert.are.equal(0, times[i]) end
    for i = 7, 20 do assert.are.equal((i - 6) * 10000, times[i], "requisição " .. i) end
    -- Tokens in any window of 60 s: at most capacity + 60 s of refill.
    assert.is_true(max_in_window(times, 60000) * 1000 <= 6000 + 6000)
    assert.is_true(s.sleeps <= 14, "sleeps = " .. s.sleeps)
  end)

  it("o mais restritivo dos dois baldes manda", function()
    local s = counted_sched()
    -- requests: 1/s; tokens: 10/s, requests of 50 tokens -> one per 5 s after the burst.
    local lim = ratelimit.new { sched = s, requests_per_min = 60, tokens_per_min = 600 }
    local times = {}
    s.run(function()
      for _ = 1, 15 do
        lim:acquire(50)
        times[#times + 1] = s.now()
        lim:release(OK)
      end
    end)
    for i = 1, 12 do assert.are.equal(0, times[i]) end
    assert.are.equal(5000, times[13])
    assert.are.equal(10000, times[14])
    assert.are.equal(15000, times[15])
  end)

  it("uma requisição maior que a capacidade passa com o balde cheio, sem impasse", function()
    local s = counted_sched()
    local lim = ratelimit.new { sched = s, tokens_per_min = 1000 }
    local t_big, t_next
    s.run(function()
      lim:acquire(5000)
      t_big = s.now()
      lim:release(OK)
      -- The debt (5000 - 1000) is paid back before anything else goes.
      lim:acquire(100)
      t_next = s.now()
      lim:release(OK)
    end)
    assert.are.equal(0, t_big)
    -- level = -4000, needs 100: 4100 tokens at 1000/60000 per ms.
    assert.are.equal(246000, t_next)
  end)

  it("uma requisição grande espera o balde encher, mas não mais que isso", function()
    local s = counted_sched()
    local lim = ratelimit.new { sched = s, tokens_per_min = 1000 }
    local t_big
    s.run(function()
      lim:acquire(500)
      lim:release(OK)
      lim:acquire(5000)
      t_big = s.now()
      lim:release(OK)
    end)
    -- 500 missing at 1000/60000 per ms = 30 s.
    assert.are.equal(30000, t_big)
  end)
end)

describe("ratelimit: janela de concorrência (AIMD)", function()
  it("começa em max_concurrency e nunca passa da janela (pico medido)", function()
    local s = counted_sched()
    local lim = ratelimit.new { sched = s, max_concurrency = 3 }
    local active, peak, over = 0, 0, 0
    s.run(function()
      for i = 1, 20 do
        s.spawn(function()
          lim:acquire(10)
          active = active + 1
          peak = math.max(peak, active)
          if lim:stats().in_flight > lim:stats().concurrency then over = over + 1 end
          s.sleep(100 + i)
          active = active - 1
          lim:release(OK)
        end)
      end
    end)
    assert.are.equal(3, peak)
    assert.are.equal(0, over)
    -- Waiting for a slot needs no sleep inside the limiter: only the 20 task sleeps.
    assert.are.equal(20, s.sleeps)
    assert.are.equal(0, lim:stats().in_flight)
  end)

  it("uma rajada de 429 da mesma janela reduz pela metade uma vez só, com log", function()
    local s = counted_sched()
    local log = testing.log()
    local lim = ratelimit.new { sched = s, max_concurrency = 8, log = log }
    s.run(function()
      for _ = 1, 8 do lim:acquire(1) end
      assert.are.equal(8, lim:stats().in_flight)
      for _ = 1, 8 do lim:release(TOO_MANY) end
    end)
    assert.are.equal(4, lim:stats().concurrency)
    assert.are.same({ "AVISO limite de concorrência reduzido para 4 após 429" }, log.lines)
  end)

  it("depois do cooldown um novo 429 reduz de novo, até min_concurrency", function()
    local s = counted_sched()
    local log = testing.log()
    local lim = ratelimit.new { sched = s, max_concurrency = 8, min_concurrency = 2,
                                cooldown_ms = 2000, log = log }
    local windows = {}
    s.run(function()
      for _ = 1, 5 do
        lim:acquire(1)
        lim:release(TOO_MANY)
        windows[#windows + 1] = lim:stats().concurrency
        s.sleep(1999)           -- still inside the cooldown
        lim:acquire(1)
        lim:release(TOO_MANY)
        windows[#windows + 1] = lim:stats().concurrency
        s.sleep(1)              -- cooldown over
      end
    end)
    assert.are.same({ 4, 4, 2, 2, 2, 2, 2, 2, 2, 2 }, windows)
    assert.are.equal(2, #log.lines)
    assert.are.equal("AVISO limite de concorrência reduzido para 2 após 429", log.lines[2])
  end)

  it("503 também reduz; 500 e timeout não mexem na janela", function()
    local s = counted_sched()
    local lim = ratelimit.new { sched = s, max_concurrency = 8 }
    s.run(function()
      lim:acquire(1); lim:release({ status = 500, ok = false })
      lim:acquire(1); lim:release({ status = 0, ok = false })
      lim:acquire(1); lim:release(nil)
      assert.are.equal(8, lim:stats().concurrency)
      lim:acquire(1); lim:release({ status = 503, ok = false })
      assert.are.equal(4, lim:stats().concurrency)
    end)
  end)

  it("volta a crescer (+1 a cada `janela` sucessos) até max_concurrency e avisa", function()
    local s = counted_sched()
    local log = testing.log()
    local lim = ratelimit.new { sched = s, max_concurrency = 8, log = log }
    local successes_to_grow = {}
    s.run(function()
      lim:acquire(1); lim:release(TOO_MANY)   -- 8 -> 4
      s.sleep(2000)
      lim:acquire(1); lim:release(TOO_MANY)   -- 4 -> 2
      assert.are.equal(2, lim:stats().concurrency)
      local n, window = 0, 2
      while lim:stats().concurrency < 8 do
        lim:acquire(1); lim:release(OK)
        n = n + 1
        if lim:stats().concurrency ~= window then
          successes_to_grow[#successes_to_grow + 1] = n
          window, n = lim:stats().concurrency, 0
        end
        assert.is_true(n < 100, "a janela não cresce")
      end
      -- Already at max: more successes change nothing.
      for _ = 1, 50 do lim:acquire(1); lim:release(OK) end
    end)
    assert.are.same({ 2, 3, 4, 5, 6, 7 }, successes_to_grow)
    assert.are.equal(8, lim:stats().concurrency)
    assert.are.same({
      "AVISO limite de concorrência reduzido para 4 após 429",
      "AVISO limite de concorrência reduzido para 2 após 429",
      "INFO concorrência restaurada para 8",
    }, log.lines)
  end)

  it("um 429 zera a contagem de sucessos rumo ao próximo aumento", function()
    local s = counted_sched()
    local lim = ratelimit.new { sched = s, max_concurrency = 8 }
    s.run(function()
      lim:acquire(1); lim:release(TOO_MANY)           -- 8 -> 4
      for _ = 1, 3 do lim:acquire(1); lim:release(OK) end
      lim:acquire(1); lim:release(TOO_MANY)           -- inside cooldown: no halving
      for _ = 1, 3 do lim:acquire(1); lim:release(OK) end
      assert.are.equal(4, lim:stats().concurrency)
      lim:acquire(1); lim:release(OK)
      assert.are.equal(5, lim:stats().concurrency)
    end)
  end)

  it("depois de reduzir, novas aquisições esperam até caber na janela nova", function()
    local s = counted_sched()
    local lim = ratelimit.new { sched = s, max_concurrency = 4 }
    local violations, grants = 0, 0
    s.run(function()
      for i = 1, 40 do
        s.spawn(function()
          lim:acquire(1)
          grants = grants + 1
          local st = lim:stats()
          if st.in_flight > st.concurrency then violations = violations + 1 end
          s.sleep(100)
          -- The first four calls get a 429: the window halves to 2.
          lim:release(i <= 4 and TOO_MANY or OK)
        end)
      end
    end)
    assert.are.equal(40, grants)
    assert.are.equal(0, violations)
  end)
end)

describe("ratelimit: pausa (Retry-After)", function()
  it("pause_until segura todas as novas aquisições, não só a que levou o 429", function()
    local s = counted_sched()
    local lim = ratelimit.new { sched = s, max_concurrency = 8 }
    local times = {}
    s.run(function()
      lim:acquire(1)
      lim:pause_until(s.now() + 5000)
      lim:release(TOO_MANY)
      for i = 1, 5 do
        s.spawn(function()
          s.sleep(i * 100)      -- arrive at different moments during the pause
          lim:acquire(1)
          times[#times + 1] = s.now()
          lim:release(OK)
        end)
      end
    end)
    assert.are.same({ 5000, 5000, 5000, 5000, 5000 }, times)
    -- Only the head waits on time; the others are suspended behind it.
    assert.is_true(s.sleeps <= 5 + 2, "sleeps = " .. s.sleeps)
  end)

  it("um instante anterior não encurta a pausa; um posterior a estende durante a espera", function()
    local s = counted_sched()
    local lim = ratelimit.new { sched = s }
    local granted
    s.run(function()
      lim:pause_until(3000)
      lim:pause_until(1000)
      s.spawn(function()
        s.sleep(2000)
        lim:pause_until(8000)  -- a new Retry-After while someone is waiting
      end)
      lim:acquire(1)
      granted = s.now()
      lim:release(OK)
    end)
    assert.are.equal(8000, granted)
  end)

  it("uma pausa que já passou não atrasa ninguém", function()
    local s = counted_sched()
    local lim = ratelimit.new { sched = s }
    s.run(function()
      lim:pause_until(500)
      s.sleep(1000)
      lim:acquire(1)
      assert.are.equal(1000, s.now())
      lim:release(OK)
    end)
    assert.are.equal(0, lim:stats().throttled)
  end)
end)

describe("ratelimit: ordem FIFO", function()
  it("quem chegou primeiro é servido primeiro, mesmo que um menor coubesse antes", function()
    local s = counted_sched()
    -- 600 tokens/min = 10 tokens/s.
    local lim = ratelimit.new { sched = s, tokens_per_min = 600, max_concurrency = 2 }
    local order = {}
    local sizes = { 300, 10, 200, 5, 100 }
    s.run(function()
      lim:acquire(600)      -- empties the bucket
      lim:release(OK)
      for i, tokens in ipairs(sizes) do
        s.spawn(function()
          lim:acquire(tokens)
          order[#order + 1] = { i, s.now() }
          lim:release(OK)
        end)
      end
      -- A late arrival that the bucket could serve at once (200 tokens
      -- available at t=20 s) still queues behind everyone.
      s.sleep(20000)
      lim:acquire(10)
      order[#order + 1] = { 6, s.now() }
      lim:release(OK)
    end)
    local ids = {}
    for k, o in ipairs(order) do ids[k] = o[1] end
    assert.are.same({ 1, 2, 3, 4, 5, 6 }, ids)
    assert.are.equal(62500, order[6][2])
    -- 300 tokens take 30 s; then 10 more take 1 s, and so on.
    assert.are.equal(30000, order[1][2])
    assert.are.equal(31000, order[2][2])
    assert.are.equal(51000, order[3][2])
    assert.are.equal(51500, order[4][2])
    assert.are.equal(61500, order[5][2])
  end)

  it("esperando por vaga na janela, a ordem de chegada também é respeitada", function()
    local s = counted_sched()
    local lim = ratelimit.new { sched = s, max_concurrency = 1 }
    local order = {}
    s.run(function()
      lim:acquire(1)
      for i = 1, 6 do
        s.spawn(function()
          lim:acquire(1)
          order[#order + 1] = i
          s.sleep(10)
          lim:release(OK)
        end)
      end
      s.sleep(5)
      lim:release(OK)
    end)
    assert.are.same({ 1, 2, 3, 4, 5, 6 }, order)
    local st = lim:stats()
    assert.are.equal(6, st.throttled)
    -- Waits: 5, 15, 25, 35, 45, 55 ms.
    assert.are.equal(180, st.waited_ms)
  end)
end)

describe("ratelimit: sem espera ativa", function()
  it("o número de sleep() fica limitado pelo número de esperas, não pelo tempo", function()
    local s = counted_sched()
    -- Very slow refill: 1 request per minute. 5 requests wait 4 minutes.
    local lim = ratelimit.new { sched = s, requests_per_min = 1, max_concurrency = 2 }
    s.run(function()
      for _ = 1, 5 do
        s.spawn(function() lim:acquire(0); lim:release(OK) end)
      end
    end)
    assert.are.equal(4 * 60000, s.now())
    assert.is_true(s.sleeps <= 4, "sleeps = " .. s.sleeps)
  end)

  it("sem limites configurados, acquire não dorme nem conta espera", function()
    local s = counted_sched()
    local lim = ratelimit.new { sched = s }
    s.run(function()
      for _ = 1, 1000 do lim:acquire(10000); lim:release(OK) end
    end)
    assert.are.equal(0, s.sleeps)
    assert.are.equal(0, s.now())
    assert.are.same({ concurrency = 8, in_flight = 0, waited_ms = 0, throttled = 0, queued = 0 },
      lim:stats())
  end)
end)

describe("ratelimit: uso incorreto", function()
  it("recusa opções inválidas", function()
    local s = testing.scheduler()
    assert.has_error(function() ratelimit.new() end)
    assert.has_error(function() ratelimit.new { } end)
    assert.has_error(function() ratelimit.new { sched = s, requests_per_min = 0 } end)
    assert.has_error(function() ratelimit.new { sched = s, tokens_per_min = -5 } end)
    assert.has_error(function() ratelimit.new { sched = s, max_concurrency = 2.5 } end)
    assert.has_error(function() ratelimit.new { sched = s, max_concurrency = 2, min_concurrency = 3 } end)
    assert.has_error(function() ratelimit.new { sched = s, cooldown_ms = "x" } end)
  end)

  it("recusa tokens inválidos, release sem acquire e pause_until sem número", function()
    local s = testing.scheduler()
    local lim = ratelimit.new { sched = s }
    s.run(function()
      assert.has_error(function() lim:acquire(-1) end)
      assert.has_error(function() lim:acquire("10") end)
      assert.has_error(function() lim:acquire(0 / 0) end)
      assert.has_error(function() lim:release(OK) end)
      lim:acquire(1)
      assert.has_error(function() lim:release("ok") end)
      lim:release(OK)
      assert.has_error(function() lim:pause_until(nil) end)
    end)
  end)

  it("estimate_tokens soma ceil(#texto / 4)", function()
    assert.are.equal(0, ratelimit.estimate_tokens({}))
    assert.are.equal(1 + 1 + 3, ratelimit.estimate_tokens({ "a", "abcd", "123456789" }))
  end)
end)

-- The exact sequence the runner runs for each attempt (see docs/limites-de-taxa.md).
describe("ratelimit: integração com retry.call como no runner", function()
  local function embed_with_limits(s, limiter, embedder, texts, policy)
    local estimated = ratelimit.estimate_tokens(texts)
    return retry.call(policy, s.sleep, function()
      limiter:acquire(estimated)
      local b, e, i = embedder:embed(texts)
      local status = i and i.status or 0
      if i and i.retry_after_ms and i.retry_after_ms > 0 then
        limiter:pause_until(s.now() + math.min(i.retry_after_ms, retry.MAX_RETRY_AFTER_MS))
      end
      limiter:release({ status = status, ok = b ~= nil })
      return b, e, i
    end, nil, function() return 0 end)
  end

  it("um 429 com Retry-After pausa os outros trabalhadores e reduz a janela", function()
    local s = counted_sched()
    local log = testing.log()
    local lim = ratelimit.new { sched = s, max_concurrency = 4, log = log }
    local embedder = testing.embedder {
      sched = s, latency_ms = 100,
      fail = function(_, call_no)
        if call_no == 1 then return { status = 429, class = "transient", retry_after_ms = 3000 } end
      end,
    }
    local policy = { attempts = 3, base_ms = 10, max_ms = 100 }
    local results = {}
    s.run(function()
      for w = 1, 4 do
        s.spawn(function()
          s.sleep(w * 10)
          for j = 1, 3 do
            local b = embed_with_limits(s, lim, embedder, { ("texto %d-%d"):format(w, j) }, policy)
            results[#results + 1] = b ~= nil
          end
        end)
      end
    end)
    assert.are.equal(12, #results)
    for _, ok in ipairs(results) do assert.is_true(ok) end
    -- Call 1 ends at t=110 with Retry-After 3 s: nothing new starts before t=3110.
    for i, c in ipairs(embedder.calls) do
      if c.started_at > 110 then
        assert.is_true(c.started_at >= 3110, ("chamada %d começou em %d ms"):format(i, c.started_at))
      end
    end
    assert.are.equal("AVISO limite de concorrência reduzido para 2 após 429", log.lines[1])
    assert.is_true(embedder.peak <= 4)
  end)
end)

-- One concurrency knob: batch.in_flight, capped only by a provider limit,
-- and never silently (issue 11: max_concurrency = 8 capped in_flight 16 while
-- the log said "16 em paralelo").
describe("ratelimit: concorrência efetiva", function()
  local params = require "ragops.plan.params"
  local report = require "ragops.report"

  local function plan_with(in_flight)
    return { batch = { size = 64, in_flight = in_flight }, retry = { attempts = 5, timeout_s = 60 } }
  end
  local function cfg_with(max_concurrency)
    return { provider = { timeout_s = 60, rate_limits = { max_concurrency = max_concurrency } } }
  end

  it("um limite do provedor abaixo do in_flight vira o valor efetivo, com o motivo", function()
    local limits = params.limits(plan_with(16), cfg_with(8))
    assert.are.equal(8, limits.in_flight)
    assert.matches("o plano pede 16; limitado por provider.rate_limits.max_concurrency = 8",
      limits.in_flight_note, 1, true)
    assert.matches("8 em paralelo (o plano pede 16; limitado por provider.rate_limits.max_concurrency = 8)",
      report.format_limits(limits), 1, true)
  end)

  it("sem limite do provedor (ou com um limite folgado) vale o in_flight do plano", function()
    for _, cfg in ipairs { cfg_with(nil), cfg_with(64) } do
      local limits = params.limits(plan_with(32), cfg)
      assert.are.equal(32, limits.in_flight)
      assert.is_nil(limits.in_flight_note)
      assert.matches("32 em paralelo, ", report.format_limits(limits), 1, true)
    end
  end)

  it("sem max_concurrency a janela AIMD começa no in_flight e não passa dele", function()
    local s = counted_sched()
    local lim = ratelimit.new { sched = s, in_flight = 32 }
    assert.are.equal(32, lim.window)
    assert.are.equal(32, lim.max_concurrency)
    local capped = ratelimit.new { sched = s, in_flight = 32, max_concurrency = 8 }
    assert.are.equal(8, capped.window)
  end)
end)
