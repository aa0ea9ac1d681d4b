-- retry_spec.lua: ragops.provider.retry backoff bounds (with injected randomness),
-- Retry-After precedence, and which failures are retried how many times.

local retry = require "ragops.provider.retry"

local POLICY = { attempts = 4, base_ms = 500, max_ms = 30000 }

local function const(x) return function() return x end end

describe("retry.backoff_ms", function()
  it("fica em [0, base * 2^(n-1)) com jitter total", function()
    assert.are.equal(0, retry.backoff_ms(POLICY, 1, nil, const(0)))
    assert.are.equal(499, retry.backoff_ms(POLICY, 1, nil, const(0.999)))
    assert.are.equal(999, retry.backoff_ms(POLICY, 2, nil, const(0.999)))
    assert.are.equal(1998, retry.backoff_ms(POLICY, 3, nil, const(0.999)))
    assert.are.equal(1000, retry.backoff_ms(POLICY, 3, nil, const(0.5)))
  end)

  it("nunca passa de max_ms", function()
    assert.are.equal(29970, retry.backoff_ms(POLICY, 20, nil, const(0.999)))
    for attempt = 1, 30 do
      local d = retry.backoff_ms(POLICY, attempt, nil, const(0.9999999))
      assert.is_true(d >= 0 and d < POLICY.max_ms, ("tentativa %d: %d ms"):format(attempt, d))
    end
  end)

  it("Retry-After vence quando é maior que o backoff", function()
    assert.are.equal(7000, retry.backoff_ms(POLICY, 1, 7000, const(0.999)))
    -- A smaller Retry-After does not shorten the backoff.
    assert.are.equal(1998, retry.backoff_ms(POLICY, 3, 10, const(0.999)))
  end)

  it("Retry-After é limitado a MAX_RETRY_AFTER_MS", function()
    assert.are.equal(retry.MAX_RETRY_AFTER_MS, retry.backoff_ms(POLICY, 1, 10 * 3600 * 1000, const(0)))
  end)
end)

describe("retry.call", function()
  local function recorder()
    local r = { sleeps = {}, retries = {} }
    function r.sleep(ms) r.sleeps[#r.sleeps + 1] = ms end
    function r.on_retry(attempt, delay, err, info)
      r.retries[#r.retries + 1] = { attempt = attempt, delay = delay, err = err, class = info.class }
    end
    return r
  end

  it("sucesso na primeira devolve o resultado sem esperar", function()
    local r = recorder()
    local res, err, _, attempts = retry.call(POLICY, r.sleep, function() return "ok" end, r.on_retry)
    assert.are.equal("ok", res)
    assert.is_nil(err)
    assert.are.equal(1, attempts)
    assert.are.equal(0, #r.sleeps)
  end)

  it("falha temporária é repetida até dar certo, esperando o backoff", function()
    local r, calls = recorder(), 0
    local res, _, _, attempts = retry.call(POLICY, r.sleep, function(attempt)
      calls = calls + 1
      assert.are.equal(calls, attempt)
      if attempt < 3 then return nil, "HTTP 503", { class = "transient", status = 503 } end
      return "ok"
    end, r.on_retry, const(0.5))
    assert.are.equal("ok", res)
    assert.are.equal(3, attempts)
    assert.are.same({ 250, 500 }, r.sleeps)
    assert.are.equal(2, #r.retries)
    assert.are.equal(1, r.retries[1].attempt)
    assert.are.equal("HTTP 503", r.retries[1].err)
  end)

  it("respeita policy.attempts e devolve o último erro", function()
    local r, calls = recorder(), 0
    local res, err, info, attempts = retry.call(POLICY, r.sleep, function()
      calls = calls + 1
      return nil, "falha " .. calls, { class = "transient" }
    end, r.on_retry, const(0))
    assert.is_nil(res)
    assert.are.equal(4, calls)
    assert.are.equal(4, attempts)
    assert.are.equal("falha 4", err)
    assert.are.equal("transient", info.class)
    assert.are.equal(3, #r.sleeps) -- no wait after the last attempt
  end)

  it("falha sem info é tratada como temporária", function()
    local calls = 0
    retry.call({ attempts = 2, base_ms = 1, max_ms = 1 }, function() end, function()
      calls = calls + 1
      return nil, "erro"
    end)
    assert.are.equal(2, calls)
  end)

  for _, class in ipairs({ "permanent", "fatal" }) do
    it("falha " .. class .. " não é repetida", function()
      local r, calls = recorder(), 0
      local res, err, info, attempts = retry.call(POLICY, r.sleep, function()
        calls = calls + 1
        return nil, "recusado", { class = class, status = 400 }
      end, r.on_retry)
      assert.is_nil(res)
      assert.are.equal(1, calls)
      assert.are.equal(1, attempts)
      assert.are.equal("recusado", err)
      assert.are.equal(class, info.class)
      assert.are.equal(0, #r.sleeps)
    end)
  end

  it("Retry-After do provedor define a espera", function()
    local r = recorder()
    retry.call(POLICY, r.sleep, function(attempt)
      if attempt == 1 then return nil, "HTTP 429", { class = "transient", retry_after_ms = 12000 } end
      return true
    end, r.on_retry, const(0.1))
    assert.are.same({ 12000 }, r.sleeps)
  end)

  it("rodadas: esgota as tentativas, espera max_ms e tenta outra rodada", function()
    local waits, calls = {}, 0
    local res, _, _, n = retry.call({ attempts = 2, rounds = 3, base_ms = 10, max_ms = 700 },
      function(ms) waits[#waits + 1] = ms end,
      function() calls = calls + 1; if calls < 5 then return nil, "x", { class = "transient" } end; return "ok" end,
      nil, function() return 0 end)
    assert.are.equal("ok", res)
    assert.are.equal(5, n)
    -- attempt 1 fails -> backoff; attempt 2 fails -> round over: cool-down of max_ms.
    assert.are.same({ 0, 700, 0, 700 }, waits)
    local again = 0
    local r2 = retry.call({ attempts = 2, rounds = 2, base_ms = 10, max_ms = 10 }, function() end,
      function() again = again + 1; return nil, "x", { class = "transient" } end)
    assert.is_nil(r2)
    assert.are.equal(4, again)
  end)

  it("429 não gasta tentativa (até o teto), mas respeita o Retry-After", function()
    local waits, calls = {}, 0
    local res = retry.call({ attempts = 2, base_ms = 10, max_ms = 100 }, function(ms) waits[#waits + 1] = ms end,
      function()
        calls = calls + 1
        if calls <= 6 then return nil, "429", { class = "transient", status = 429, retry_after_ms = 1000 } end
        return "ok"
      end, nil, function() return 0 end)
    assert.are.equal("ok", res)
    assert.are.equal(7, calls)
    for _, w in ipairs(waits) do assert.are.equal(1000, w) end
    local capped = 0
    local r2 = retry.call({ attempts = 1, base_ms = 1, max_ms = 1 }, function() end, function()
      capped = capped + 1
      return nil, "429", { class = "transient", status = 429 }
    end)
    assert.is_nil(r2)
    assert.are.equal(retry.MAX_RATE_LIMITED_WAITS + 1, capped)
  end)

  describe("quando a execução para (sinal)", function()
    local testing = require "ragops.testing"
    local FAILING = function() return nil, "HTTP 503", { class = "transient", status = 503 } end

    it("escalonador já parado: devolve interrompido sem chamar fn", function()
      local s = testing.scheduler()
      local calls = 0
      s.run(function()
        s.stop()
        local res, err, info, n = retry.call(POLICY, s, function() calls = calls + 1; return "ok" end)
        assert.is_nil(res)
        assert.are.equal("interrompido", err)
        assert.are.equal("cancelled", info.class)
        assert.are.equal(0, n)
      end)
      assert.are.equal(0, calls)
    end)

    it("stop() durante a espera entre tentativas devolve na hora, sem nova tentativa", function()
      local s = testing.scheduler()
      local calls, result = 0, nil
      s.run(function()
        s.spawn(function() s.sleep(100); s.stop() end)
        result = { retry.call({ attempts = 5, rounds = 2, base_ms = 30000, max_ms = 30000 }, s,
          function() calls = calls + 1; return FAILING() end, nil, const(0.999)) }
      end)
      assert.are.equal(1, calls)
      assert.is_nil(result[1])
      assert.are.equal("interrompido", result[2])
      assert.are.equal("cancelled", result[3].class)
      assert.are.equal(100, s.now(), "não devia esperar o backoff de ~30 s")
    end)

    it("stop() durante a pausa entre rodadas também corta a pausa", function()
      local s = testing.scheduler()
      local calls, err = 0, nil
      s.run(function()
        s.spawn(function() s.sleep(500); s.stop() end)
        local _
        _, err = retry.call({ attempts = 1, rounds = 3, base_ms = 10, max_ms = 28600 }, s,
          function() calls = calls + 1; return FAILING() end)
      end)
      assert.are.equal(1, calls)
      assert.are.equal("interrompido", err)
      assert.are.equal(500, s.now())
    end)

    it("parada durante a chamada (antes da espera): não dorme nem tenta de novo", function()
      local s = testing.scheduler()
      local calls, info = 0, nil
      s.run(function()
        local _
        _, _, info = retry.call(POLICY, s, function()
          calls = calls + 1
          s.stop() -- the signal arrives while the call is in flight
          return FAILING()
        end, nil, const(0.5))
      end)
      assert.are.equal(1, calls)
      assert.are.equal("cancelled", info.class)
      assert.are.equal(0, s.now())
    end)

    it("uma função sleep que devolve nil, erro interrompe como o escalonador", function()
      local calls = 0
      local res, err, info = retry.call(POLICY, function() return nil, "interrompido" end,
        function() calls = calls + 1; return FAILING() end)
      assert.is_nil(res)
      assert.are.equal("interrompido", err)
      assert.are.equal("cancelled", info.class)
      assert.are.equal(1, calls)
    end)
  end)
end)
