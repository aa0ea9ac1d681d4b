-- endpoints_spec.lua: ragops.provider.endpoints, the pool every provider
-- call goes through: the spread by weight and room, the take-out of an
-- endpoint that fails (and its return), the failure made transient only
-- while another endpoint is live, the pauses (Retry-After, x-ratelimit-*)
-- handed to the limiter and the shared quota, and the tokens billed settled
-- on the limiter. Fake clients and the fake-clock scheduler of ragops.testing.

local endpoints = require "ragops.provider.endpoints"
local ratelimit = require "ragops.provider.ratelimit"
local testing = require "ragops.testing"

-- A client whose answers come from answer(texts) -> batch | nil, err, info.
local function client(answer)
  return { calls = 0, embed = function(self, texts) self.calls = self.calls + 1; return answer(texts) end }
end

local function batch(tokens)
  return { tokens = function() return tokens end }
end

local function ok_client(tokens) return client(function() return batch(tokens or 10) end) end

local CONNECTION = { class = "transient", kind = "connection", status = 0 }
local UNAUTHORIZED = { class = "fatal", status = 401 }

local function pool_of(s, specs, log)
  local list = {}
  for i, spec in ipairs(specs) do
    list[i] = { name = spec.name or ("e" .. i), weight = spec.weight, client = spec.client, limiter = spec.limiter }
  end
  return endpoints.new { sched = s, log = log, endpoints = list }
end

-- Calls the pool n times; returns { [name] = calls } and the last err, info.
local function call_n(pool, n)
  local by, err, info = {}, nil, nil
  for _ = 1, n do
    local lease = pool:acquire(4)
    local b, e, i = pool:call(lease, { "x" })
    err, info = pool:release(lease, b, e, i)
    by[lease.endpoint.name] = (by[lease.endpoint.name] or 0) + 1
  end
  return by, err, info
end

describe("endpoints: divisão dos pedidos", function()
  it("segue os pesos (3 para 1) quando há folga em todos", function()
    local s = testing.scheduler()
    local pool = pool_of(s, { { weight = 3, client = ok_client() }, { weight = 1, client = ok_client() } })
    local by
    s.run(function() by = call_n(pool, 40) end)
    assert.are.same({ e1 = 30, e2 = 10 }, by)
  end)

  it("um endpoint com a cota gasta (balde vazio) recebe menos que o peso diria", function()
    local s = testing.scheduler()
    local spent = ratelimit.new { sched = s, tokens_per_min = 6000 }
    spent:empty_buckets()
    local pool = pool_of(s, { { client = ok_client(), limiter = spent },
                              { client = ok_client(), limiter = ratelimit.new { sched = s, tokens_per_min = 6000 } } })
    local by
    s.run(function() by = call_n(pool, 20) end)
    assert.is_true((by.e1 or 0) < (by.e2 or 0), ("e1 %s, e2 %s"):format(tostring(by.e1), tostring(by.e2)))
  end)
end)

describe("endpoints: saúde", function()
  it("uma falha de conexão tira o endpoint por TAKE_OUT_MS, a chamada vira temporária, e ele volta ao responder", function()
    local s = testing.scheduler()
    local down = true
    local flaky = client(function()
      if down then return nil, "conexão recusada", CONNECTION end
      return batch(10)
    end)
    local log, changes = testing.log(), {}
    local pool = pool_of(s, { { client = flaky }, { client = ok_client() } }, log)
    pool.on_health = function(e) changes[#changes + 1] = e.name .. (e.down_until and ":fora" or ":no ar") end
    s.run(function()
      local lease = pool:acquire(4)
      assert.are.equal("e1", lease.endpoint.name)
      local b, e, i = pool:call(lease, { "x" })
      local err, info = pool:release(lease, b, e, i)
      assert.are.equal("transient", info.class)
      assert.matches("no endpoint e1", err, 1, true)
      local by = call_n(pool, 6)
      assert.are.same({ e2 = 6 }, by)
      down = false
      s.sleep(endpoints.TAKE_OUT_MS)
      by = call_n(pool, 4)
      assert.are.equal(2, by.e1, "volta a receber a sua parte")
    end)
    assert.are.same({ "e1:fora", "e1:no ar" }, changes)
    assert.matches("fora por 5 s", table.concat(log.lines, "\n"), 1, true)
  end)

  it("401 num pool: temporária enquanto outro está no ar; com todos fora, a classe do provedor fica", function()
    local s = testing.scheduler()
    local refused = function() return nil, "credencial recusada", UNAUTHORIZED end
    local pool = pool_of(s, { { client = client(refused) }, { client = client(refused) } })
    s.run(function()
      local _, _, first = call_n(pool, 1)
      assert.are.equal("transient", first.class)
      local _, _, second = call_n(pool, 1)
      assert.are.equal("fatal", second.class, "nenhum outro no ar: a configuração está errada")
    end)
  end)

  it("com um endpoint só, uma falha não o tira nem muda a classe", function()
    local s = testing.scheduler()
    local pool = pool_of(s, { { client = client(function() return nil, "recusada", CONNECTION end) } })
    s.run(function()
      local _, _, info = call_n(pool, 1)
      assert.are.equal(CONNECTION, info)
      assert.is_nil(pool.list[1].down_until)
    end)
  end)

  it("take_out_reason: conexão, 5xx, 401/403 tiram; 400 e 429 não", function()
    assert.are.equal("connection", endpoints.take_out_reason(CONNECTION))
    assert.are.equal("http_503", endpoints.take_out_reason({ status = 503 }))
    assert.are.equal("http_403", endpoints.take_out_reason({ status = 403 }))
    assert.is_nil(endpoints.take_out_reason({ status = 400 }))
    assert.is_nil(endpoints.take_out_reason({ status = 429 }))
  end)
end)

describe("endpoints: ritmo", function()
  it("Retry-After pausa o limitador do endpoint e a cota compartilhada (uma gravação por pausa nova)", function()
    local s = testing.scheduler()
    local lim = ratelimit.new { sched = s, tokens_per_min = 60000 }
    local limited = client(function() return nil, "429", { class = "transient", status = 429, retry_after_ms = 1500 } end)
    local pool = pool_of(s, { { client = limited, limiter = lim } })
    local reported = {}
    pool.list[1].keeper = { report_pause = function(_, ms) reported[#reported + 1] = ms end }
    s.run(function()
      local a, b = pool:acquire(4), pool:acquire(4)
      for _, lease in ipairs({ a, b }) do pool:release(lease, pool:call(lease, { "x" })) end
      assert.are.equal(1500, lim.paused_until)
      s.sleep(1)
    end)
    assert.are.same({ 1500 }, reported, "duas 429 no mesmo instante: uma pausa contada aos outros")
  end)

  it("x-ratelimit-remaining-tokens abaixo do pedido: este processo espera o balde do provedor, os outros não", function()
    local s = testing.scheduler()
    local lim = ratelimit.new { sched = s, tokens_per_min = 60000 }
    local nearly_spent = client(function()
      return batch(10), nil, { ratelimit = { remaining_tokens = 0, limit_tokens = 6000, reset_tokens_ms = 60000 } }
    end)
    local pool = pool_of(s, { { client = nearly_spent, limiter = lim } })
    local reported = {}
    pool.list[1].keeper = { report_pause = function(_, ms) reported[#reported + 1] = ms end }
    s.run(function() call_n(pool, 1) end)
    -- The request was charged 4 tokens; the provider refills 6000 in 60 s: 40 ms.
    assert.are.equal(40, lim.paused_until)
    assert.are.same({}, reported, "a pausa pelos cabeçalhos não vai à cota compartilhada")
  end)

  it("slow_down_ms: o tempo até o balde do provedor caber o que se pede; zero quando já cabe", function()
    assert.are.equal(0, endpoints.slow_down_ms(50, 6000, 1000, 40))
    assert.are.equal(0, endpoints.slow_down_ms(nil, 6000, 1000, 40))
    -- 0 of 6000 left, full in 60 s (100 per s): 40 tokens in 400 ms.
    assert.are.equal(400, endpoints.slow_down_ms(0, 6000, 60000, 40))
    -- Without the reset, the limit per minute is the rate.
    assert.are.equal(400, endpoints.slow_down_ms(0, 6000, nil, 40))
  end)

  it("os tokens cobrados acertam o balde e ensinam a razão cobrado/estimado", function()
    local s = testing.scheduler()
    local lim = ratelimit.new { sched = s, tokens_per_min = 60000 }
    local pool = pool_of(s, { { client = ok_client(2), limiter = lim } })
    s.run(function()
      local lease = pool:acquire(10)
      assert.are.equal(10, lease.charged)
      assert.are.equal(59990, lim.tokens.level)
      local b = pool:call(lease, { "x" })
      pool:release(lease, b)
      assert.are.equal(59998, lim.tokens.level, "cobrou 2, não 10")
      assert.is_true(lim.billed_ratio < 1, "razão " .. lim.billed_ratio)
    end)
  end)
end)
