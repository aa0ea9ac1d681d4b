-- alerts_spec.lua: sliding windows, breach/recovery transitions, webhook,
-- metrics and the pause gate of ragops.obs.alerts, with a fake clock.

local alerts = require "ragops.obs.alerts"
local metrics = require "ragops.obs.metrics"

-- A fake clock, a recording log, webhook and sleep.
local function harness(config, extra)
  local h = { t = 0, lines = {}, payloads = {}, sleeps = {} }
  h.log = {}
  for _, level in ipairs({ "info", "warn", "error" }) do
    h.log[level] = function(fmt, ...)
      h.lines[#h.lines + 1] = { level = level, text = fmt:format(...) }
    end
  end
  local opts = {
    config = config,
    now = function() return h.t end,
    log = h.log,
    webhook = function(payload) h.payloads[#h.payloads + 1] = payload; return true end,
    sleep = function(ms) h.sleeps[#h.sleeps + 1] = ms; h.t = h.t + ms end,
    plan = "backfill",
    wall = function() return 1700000000 end,
  }
  for k, v in pairs(extra or {}) do opts[k] = v end
  h.alerts = alerts.new(opts)
  -- Lines whose text contains `needle` (plain).
  function h.matching(needle)
    local out = {}
    for _, l in ipairs(h.lines) do
      if l.text:find(needle, 1, true) then out[#out + 1] = l end
    end
    return out
  end
  function h.docs(ok, n)
    local action
    for _ = 1, n do action = h.alerts:observe({ kind = "document", ok = ok }) end
    return action
  end
  function h.embed(status, latency_ms)
    return h.alerts:observe({ kind = "embed", ok = status == 200, status = status,
                              latency_ms = latency_ms or 10, class = status == 200 and nil or "transient" })
  end
  return h
end

local function failure_cfg(above, window, min_samples, action)
  return { failure_rate = { above = above, window = window, min_samples = min_samples, action = action } }
end

describe("ragops.obs.alerts", function()
  describe("failure_rate", function()
    it("does not trigger below min_samples, then breaches and logs once", function()
      local h = harness(failure_cfg(0.05, 100, 20, "abort"))
      assert.is_nil(h.docs(false, 19))
      assert.are.equal(0, #h.lines)
      assert.are.equal(0, #h.payloads)
      assert.are.equal("abort", h.docs(false, 1))
      assert.are.same({ { level = "error",
        text = "alerta: taxa de falhas 100,0% acima do limite de 5,0% (janela de 20 documentos); ação: abort" } },
        h.lines)
      -- Still breached: the action keeps coming back, but no new log/webhook.
      assert.are.equal("abort", h.docs(false, 30))
      assert.are.equal(1, #h.lines)
      assert.are.equal(1, #h.payloads)
      assert.are.equal("taxa de falhas 100,0% acima do limite de 5,0% (janela de 50 documentos)",
        h.alerts.last_reason)
    end)

    it("does not breach at exactly the threshold", function()
      local h = harness(failure_cfg(0.05, 100, 100, "warn"))
      h.docs(true, 95)
      assert.is_nil(h.docs(false, 5))               -- 5 of 100: not above 5%
      assert.are.equal("warn", h.docs(false, 1))    -- 6 of the last 100
      assert.are.same({ { level = "warn",
        text = "alerta: taxa de falhas 6,0% acima do limite de 5,0% (janela de 100 documentos); ação: warn" } },
        h.lines)
    end)

    it("sends the webhook payload and counts the alert metric", function()
      local m = metrics.new()
      local h = harness(failure_cfg(0.1, 10, 10, "pause"), { metrics = m })
      h.docs(true, 8)
      assert.are.equal("pause", h.docs(false, 2))
      assert.are.same({ alerta = "failure_rate", estado = "disparado", valor = 0.2, limite = 0.1,
        acao = "pause", plano = "backfill", ts = 1700000000,
        mensagem = "taxa de falhas 20,0% acima do limite de 10,0% (janela de 10 documentos)" }, h.payloads[1])
      assert.truthy(m:render():find('ragops_alerts_total{action="pause",alert="failure_rate"', 1, true))
      require("cjson").encode(h.payloads[1]) -- JSON-able
    end)

    it("recovers when failures leave the window, and can breach again", function()
      local h = harness(failure_cfg(0.2, 10, 10, "warn"))
      h.docs(false, 3)
      assert.are.equal("warn", h.docs(true, 7))      -- 3/10 = 30%
      assert.is_nil(h.docs(true, 1))                 -- oldest failure leaves: 20%
      assert.are.same({ level = "info",
        text = "alerta normalizado: taxa de falhas 20,0%, limite de 20,0% (janela de 10 documentos)" },
        h.lines[2])
      assert.are.equal("normalizado", h.payloads[2].estado)
      assert.is_nil(h.docs(true, 10))
      assert.are.equal(2, #h.lines)
      assert.are.equal("warn", h.docs(false, 3))
      assert.are.equal(3, #h.lines)
      assert.are.same({
        "taxa de falhas 30,0% acima do limite de 20,0% (janela de 10 documentos); ação: warn",
        "taxa de falhas 30,0% acima do limite de 20,0% (janela de 10 documentos); ação: warn",
      }, h.alerts.fired)
      assert.are.equal("alerta: taxa de falhas 30,0% acima do limite de 20,0% (janela de 10 documentos); ação: warn",
        h.lines[3].text)
    end)

    it("ignores embed events", function()
      local h = harness(failure_cfg(0.05, 10, 1, "abort"))
      for _ = 1, 50 do assert.is_nil(h.embed(500)) end
    end)
  end)

  describe("rate_429_per_min", function()
    it("counts 429s over the last 60 s and expires them", function()
      local h = harness({ rate_429_per_min = { above = 2, action = "warn" } })
      assert.is_nil(h.embed(429)); h.t = 10000
      assert.is_nil(h.embed(429)); h.t = 20000
      assert.is_nil(h.embed(200))
      assert.are.equal("warn", h.embed(429))
      assert.are.same({ { level = "warn",
        text = "alerta: 3 respostas 429 no último minuto, acima do limite de 2; ação: warn" } }, h.lines)
      h.t = 59999
      assert.are.equal("warn", h.embed(200))
      h.t = 60000                                    -- the 429 at t=0 expires
      assert.is_nil(h.embed(200))
      assert.are.equal("alerta normalizado: 2 respostas 429 no último minuto, limite de 2", h.lines[2].text)
      assert.are.equal(3, h.payloads[1].valor)
      assert.are.equal(2, #h.payloads)
    end)

    it("recovers on check() with the clock alone", function()
      local h = harness({ rate_429_per_min = { above = 0, action = "abort" } })
      assert.are.equal("abort", h.embed(429))
      assert.are.equal("error", h.lines[1].level)
      h.t = 60000
      assert.is_nil(h.alerts:check())
      assert.are.equal("info", h.lines[2].level)
    end)
  end)

  describe("p95_latency_ms", function()
    it("computes the nearest-rank p95", function()
      local values = {}
      for i = 100, 1, -1 do values[#values + 1] = i end
      assert.are.equal(95, alerts.p95(values))
      assert.are.equal(7, alerts.p95({ 7 }))
      local twenty = {}
      for i = 1, 20 do twenty[i] = i * 10 end
      assert.are.equal(190, alerts.p95(twenty))
      assert.is_nil(alerts.p95({}))
    end)

    it("needs 20 samples and compares the p95 to the limit", function()
      local h = harness({ p95_latency_ms = { above = 2000, action = "warn" } })
      for _ = 1, 19 do assert.is_nil(h.embed(200, 5000)) end
      assert.are.equal("warn", h.embed(500, 5000))
      assert.are.equal(
        "alerta: latência p95 de 5.000 ms acima do limite de 2.000 ms (últimas 20 chamadas); ação: warn",
        h.lines[1].text)
      assert.are.equal(5000, h.payloads[1].valor)
    end)

    it("uses the last 200 calls only", function()
      local h = harness({ p95_latency_ms = { above = 94, action = "warn" } })
      for i = 1, 100 do h.embed(200, i) end          -- p95 = 95 > 94
      assert.are.equal(95, h.alerts:status().p95_latency_ms.value)
      assert.are.equal("warn", h.alerts:check())
      for _ = 1, 200 do h.embed(200, 50) end         -- slow calls pushed out
      assert.are.equal(50, h.alerts:status().p95_latency_ms.value)
      assert.are.equal(200, h.alerts:status().p95_latency_ms.samples)
      assert.is_nil(h.alerts:check())
      -- Recovered after 20 fast calls: 120 samples, nearest rank 114 is 94.
      assert.are.equal(
        "alerta normalizado: latência p95 de 94 ms, limite de 94 ms (últimas 120 chamadas)", h.lines[2].text)
      assert.are.equal(2, #h.lines)
    end)
  end)

  describe("several rules", function()
    it("returns the most severe breached action and its reason", function()
      local h = harness({
        failure_rate = { above = 0.5, window = 4, min_samples = 4, action = "warn" },
        rate_429_per_min = { above = 0, action = "abort" },
      })
      assert.are.equal("warn", h.docs(false, 4))
      assert.are.equal("abort", h.embed(429))
      assert.are.equal("1 respostas 429 no último minuto, acima do limite de 0", h.alerts.last_reason)
      local st = h.alerts:status()
      assert.is_true(st.failure_rate.breached)
      assert.is_true(st.rate_429_per_min.breached)
    end)
  end)

  describe("webhook failures", function()
    it("log a warning and never break observe", function()
      local calls = 0
      local h = harness(failure_cfg(0.1, 2, 2, "abort"), { webhook = function()
        calls = calls + 1
        error("conexão recusada")
      end })
      assert.are.equal("abort", h.docs(false, 2))
      assert.are.equal(1, calls)
      local warns = h.matching("falha ao enviar o alerta failure_rate ao webhook")
      assert.are.equal(1, #warns)
      assert.truthy(warns[1].text:find("conexão recusada", 1, true))
    end)

    it("also when the webhook returns nil, err", function()
      local h = harness(failure_cfg(0.1, 2, 2, "warn"),
        { webhook = function() return nil, "HTTP 503" end })
      assert.are.equal("warn", h.docs(false, 2))
      assert.are.equal(1, #h.matching("ao webhook: HTTP 503"))
    end)

    it("runs through spawn when given", function()
      local spawned = {}
      local h = harness(failure_cfg(0.1, 2, 2, "warn"), { spawn = function(fn) spawned[#spawned + 1] = fn end })
      h.docs(false, 2)
      assert.are.equal(0, #h.payloads)
      assert.are.equal(1, #spawned)
      spawned[1]()
      assert.are.equal(1, #h.payloads)
    end)
  end)

  describe("new", function()
    it("rejects a pause action without sleep and bad options", function()
      assert.has_error(function()
        alerts.new({ config = failure_cfg(0.1, 10, 10, "pause"), now = os.time, log = {} })
      end)
      assert.has_error(function() alerts.new({ config = {}, log = {} }) end)
      assert.has_error(function()
        alerts.new({ config = { rate_429_per_min = { above = 1, action = "explode" } }, now = os.time, log = {} })
      end)
    end)

    it("with no config observes without ever alerting", function()
      local a = alerts.new({ now = function() return 0 end, log = {} })
      assert.is_nil(a:observe({ kind = "document", ok = false }))
      assert.is_nil(a:gate())
    end)
  end)

  describe("gate", function()
    it("returns at once when nothing is paused", function()
      local h = harness(failure_cfg(0.1, 2, 2, "warn"))
      h.docs(false, 2)
      h.alerts:gate()
      assert.are.equal(0, #h.sleeps)
    end)

    it("pauses on 429s and resumes as the minute passes", function()
      local h = harness({ rate_429_per_min = { above = 1, action = "pause" } })
      h.embed(429); h.t = 5000
      assert.are.equal("pause", h.embed(429))
      h.alerts:gate()
      -- The 429 at t=0 expires at t=60000: 55 sleeps of 1000 ms.
      assert.are.equal(60000, h.t)
      assert.are.equal(55, #h.sleeps)
      assert.are.equal(1, #h.matching("pausado por alerta: 2 respostas 429 no último minuto"))
      assert.are.equal(1, #h.matching("alerta normalizado: 1 respostas 429"))
      assert.are.equal(1, #h.matching("retomando o processamento"))
      assert.are.equal(0, #h.matching("unidade de teste"))
      h.alerts:gate()
      assert.are.equal(55, #h.sleeps)
    end)

    it("lets one probe unit through every pause_ms for failure_rate", function()
      local h = harness(failure_cfg(0.5, 10, 10, "pause"), { pause_ms = 5000 })
      assert.are.equal("pause", h.docs(false, 10))
      h.alerts:gate()
      assert.are.equal(5000, h.t)
      assert.are.equal(1, #h.matching("pausado por alerta: taxa de falhas 100,0%"))
      assert.are.equal(1, #h.matching("liberando uma unidade de teste"))
      -- The probe unit failed too: the next gate waits another pause_ms.
      h.docs(false, 1)
      h.alerts:gate()
      assert.are.equal(10000, h.t)
      assert.are.equal(2, #h.matching("liberando uma unidade de teste"))
      assert.are.equal(1, #h.matching("pausado por alerta"))
      -- The probe succeeded: the window recovers and gate returns at once.
      h.docs(true, 6)
      local before = #h.sleeps
      h.alerts:gate()
      assert.are.equal(before, #h.sleeps)
      assert.are.equal(1, #h.matching("alerta normalizado: taxa de falhas 50,0%"))
      assert.are.equal(1, #h.matching("retomando o processamento"))
    end)

    it("admits one probe among concurrent workers and logs the pause once", function()
      local h = harness(failure_cfg(0.5, 4, 4, "pause"), { pause_ms = 3000,
        sleep = function(ms) coroutine.yield(ms) end })
      h.docs(false, 4)
      local passed = {}
      local workers = {}
      for i = 1, 3 do
        workers[i] = coroutine.create(function() h.alerts:gate(); passed[#passed + 1] = i end)
      end
      -- Round-robin: every worker runs until it sleeps, then the clock ticks.
      for _ = 1, 3 do
        for _, co in ipairs(workers) do
          if coroutine.status(co) == "suspended" then assert(coroutine.resume(co)) end
        end
        h.t = h.t + 1000
      end
      for _, co in ipairs(workers) do
        if coroutine.status(co) == "suspended" then assert(coroutine.resume(co)) end
      end
      assert.are.same({ 1 }, passed)
      assert.are.equal(1, #h.matching("pausado por alerta"))
      h.docs(true, 4)
      for _, co in ipairs(workers) do
        if coroutine.status(co) == "suspended" then assert(coroutine.resume(co)) end
      end
      assert.are.same({ 1, 2, 3 }, passed)
      assert.are.equal(1, #h.matching("retomando o processamento"))
    end)

    it("returns when should_stop() says so, after stop() and on abort", function()
      local h = harness({
        failure_rate = { above = 0.5, window = 2, min_samples = 2, action = "pause" },
        rate_429_per_min = { above = 0, action = "abort" },
      })
      h.docs(false, 2)
      local stop = false
      local sleeps = 0
      h.alerts.sleep = function(ms) sleeps = sleeps + 1; if sleeps == 3 then stop = true end; h.t = h.t + ms end
      h.alerts:gate(function() return stop end)
      assert.are.equal(3, sleeps)
      h.alerts:stop()
      h.alerts:gate()
      assert.are.equal(3, sleeps)
      h.alerts.stopped = false
      h.embed(429)
      h.alerts:gate()
      assert.are.equal(3, sleeps)
    end)
  end)
end)
