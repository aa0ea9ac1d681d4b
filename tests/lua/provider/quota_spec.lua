-- quota_spec.lua: ragops.provider.quota, the provider quota shared by every
-- process: the max-min fair allocation (properties over random demands), the
-- keeper on the fake-clock scheduler against a fake quota store with the
-- contract of ragops.store.quota (renew works, fails, recovers; grants to
-- the limiter; pauses; stop), two keepers with real limiters sharing one
-- limit, and ragops.store.quota's decoding and the migration's relations.
require "tests.lua.c_stubs"

local quota = require "ragops.provider.quota"
local ratelimit = require "ragops.provider.ratelimit"
local store_quota = require "ragops.store.quota"
local migrate = require "ragops.store.migrate"
local testing = require "ragops.testing"

local HUGE = math.huge

local function sum(list)
  local n = 0
  for _, v in ipairs(list) do n = n + v end
  return n
end

local function near(expected, got, what)
  assert(math.abs(expected - got) <= 1e-6 * math.max(1, math.abs(expected)),
    ("%s: esperado %s, obtido %s"):format(what or "valor", tostring(expected), tostring(got)))
end

describe("quota.allocate", function()
  it("um detentor só leva o limite inteiro, qualquer que seja a demanda", function()
    for _, d in ipairs({ 0, 10, 1000, HUGE, false }) do
      near(600, quota.allocate(600, { d })[1], "demanda " .. tostring(d))
    end
  end)

  it("demandas iguais dão fatias iguais", function()
    for _, d in ipairs({ 5, 100, HUGE, false }) do
      local g = quota.allocate(900, { d, d, d })
      near(300, g[1], "1"); near(300, g[2], "2"); near(300, g[3], "3")
    end
  end)

  it("quem pede pouco leva o que pede; a sobra vai para os famintos", function()
    local g = quota.allocate(1000, { 100, HUGE, HUGE, 250 })
    near(100, g[1], "pequeno"); near(250, g[4], "médio")
    near(325, g[2], "faminto 1"); near(325, g[3], "faminto 2")
  end)

  it("sem dados de demanda: a fatia igual", function()
    local g = quota.allocate(1000, { false, HUGE, HUGE, HUGE })
    near(250, g[1], "sem dados")
    near(250, g[2], "faminto")
  end)

  it("todos satisfeitos: a sobra é dividida por igual (folga para crescer)", function()
    local g = quota.allocate(1000, { 100, 200 })
    near(100 + 350, g[1], "1"); near(200 + 350, g[2], "2")
  end)

  it("uma demanda zero ainda leva MIN_SHARE da fatia igual para poder começar", function()
    local g = quota.allocate(1000, { 0, HUGE })
    near(500 * quota.MIN_SHARE, g[1], "ocioso")
    near(1000 - 500 * quota.MIN_SHARE, g[2], "faminto")
  end)

  it("propriedades sobre demandas aleatórias", function()
    math.randomseed(25)
    for trial = 1, 2000 do
      local n, limit = math.random(1, 9), math.random(1, 100000)
      local demands = {}
      for i = 1, n do
        local r = math.random()
        demands[i] = r < 0.15 and HUGE or r < 0.25 and false or math.random(0, 2 * limit / n)
      end
      local g = quota.allocate(limit, demands)
      local what = ("tentativa %d, limite %d, demandas %s"):format(trial, limit,
        table.concat((function() local t = {}; for i, d in ipairs(demands) do t[i] = tostring(d) end; return t end)(), ","))
      assert.are.equal(n, #g, what)
      assert.is_true(sum(g) <= limit * (1 + 1e-9), "soma acima do limite: " .. sum(g) .. "; " .. what)
      local all_satisfied, equal = true, limit / n
      local want = {}
      for i, d in ipairs(demands) do
        want[i] = d == false and equal or math.max(d, equal * quota.MIN_SHARE)
        if g[i] < want[i] - 1e-6 then all_satisfied = false end
        assert.is_true(g[i] >= 0, "negativo; " .. what)
      end
      for i = 1, n do
        if not all_satisfied then
          assert.is_true(g[i] <= want[i] + 1e-6, ("detentor %d acima da demanda sem sobra; %s"):format(i, what))
        end
        -- Max-min: someone below its demand has at least as much as anyone.
        if g[i] < want[i] - 1e-6 then
          for j = 1, n do
            assert.is_true(g[j] <= g[i] + 1e-6, ("%d com fome e %d com mais; %s"):format(i, j, what))
          end
        end
      end
      near(limit, sum(g), "o limite todo é distribuído; " .. what)
    end
  end)

  it("concorrência em unidades inteiras, pelo menos 1 cada", function()
    assert.are.same({ 3, 3, 2 }, quota.allocate_whole(8, { HUGE, HUGE, HUGE }))
    assert.are.same({ 1, 7 }, quota.allocate_whole(8, { 1, 10 }))
    assert.are.same({ 1, 1, 1 }, quota.allocate_whole(2, { HUGE, HUGE, HUGE }))
    math.randomseed(11)
    for _ = 1, 500 do
      local n, limit = math.random(1, 6), math.random(6, 40)
      local demands = {}
      for i = 1, n do demands[i] = math.random() < 0.3 and HUGE or math.random(0, 12) end
      local g = quota.allocate_whole(limit, demands)
      assert.are.equal(limit, sum(g), "a soma é o limite")
      for i = 1, n do assert.are.equal(math.floor(g[i]), g[i]) end
    end
  end)

  it("recusa uso incorreto", function()
    assert.has_error(function() quota.allocate(0, { 1 }) end)
    assert.has_error(function() quota.allocate(10, {}) end)
    assert.has_error(function() quota.allocate(10, { -1 }) end)
    assert.has_error(function() quota.allocate(10, { "x" }) end)
  end)
end)

-- A quota store with ragops.store.quota's contract, in memory, on the fake
-- clock s (a renewal takes delay_ms; fail = an error to answer).
local function fake_store(s)
  local st = { rows = {}, paused_until = nil, fail = nil, delay_ms = 0, renewals = 0, pauses = {}, left = {} }
  function st:renew(key, holder, demand, ttl_s)
    self.renewals = self.renewals + 1
    if self.delay_ms > 0 then s.sleep(self.delay_ms) end
    if self.fail then return nil, self.fail, "08006" end
    local now = s.now()
    self.rows[holder] = { key = key, demand = testing.copy(demand), expires = now + ttl_s * 1000 }
    local view = { holders = { { holder = holder, demand = self.rows[holder].demand } }, expired = 0,
                   pause_ms = math.max(0, (self.paused_until or 0) - now) }
    local names = {}
    for name in pairs(self.rows) do names[#names + 1] = name end
    table.sort(names)
    for _, name in ipairs(names) do
      local row = self.rows[name]
      if row.expires <= now then
        self.rows[name], view.expired = nil, view.expired + 1
      elseif name ~= holder and row.key == key then
        view.holders[#view.holders + 1] = { holder = name, demand = row.demand }
      end
    end
    return view
  end
  function st:pause(_, ms)
    if self.fail then return nil, self.fail, "08006" end
    self.pauses[#self.pauses + 1] = ms
    self.paused_until = math.max(self.paused_until or 0, s.now() + ms)
    return true
  end
  function st:leave(_, holder)
    self.left[#self.left + 1] = holder
    self.rows[holder] = nil
    return true
  end
  return st
end

-- A limiter that records what the keeper gives it and answers a set demand.
local function fake_limiter(demand)
  local lim = { rates = {}, pauses = {}, want = demand or { requests_per_min = 0, tokens_per_min = 0,
                                                            concurrency = 1, starved = false } }
  function lim:set_rates(rpm, tpm, conc)
    self.rates[#self.rates + 1] = { requests_per_min = rpm, tokens_per_min = tpm, max_concurrency = conc }
  end
  function lim:pause_until(ms) self.pauses[#self.pauses + 1] = ms end
  function lim:demand() return self.want end
  function lim:empty_buckets(debt_ms) self.emptied, self.debt_ms = (self.emptied or 0) + 1, debt_ms end
  return lim
end

local LIMITS = { requests_per_min = 600, tokens_per_min = 60000, max_concurrency = 8 }
local STARVED = { requests_per_min = 50, tokens_per_min = 9000, concurrency = 8, starved = true }

local function keeper(s, st, lim, holder, log)
  return quota.new { store = st, key = "openai|text-embedding-3-small", limits = LIMITS, holder = holder,
                     sched = s, limiter = lim, log = log }
end

describe("quota: o guardião", function()
  it("sozinho leva o limite inteiro; com outro faminto, metade; renova a cada RENEW_MS", function()
    local s = testing.scheduler()
    local st = fake_store(s)
    local lim_a, lim_b = fake_limiter(STARVED), fake_limiter(STARVED)
    local a, b = keeper(s, st, lim_a, "a"), keeper(s, st, lim_b, "b")
    s.run(function()
      a:start()
      s.sleep(1)
      assert.are.same({ LIMITS }, lim_a.rates)
      b:start()
      s.sleep(quota.RENEW_MS)
      assert.are.same({ requests_per_min = 300, tokens_per_min = 30000, max_concurrency = 4 },
        lim_a.rates[#lim_a.rates])
      assert.are.same({ requests_per_min = 300, tokens_per_min = 30000, max_concurrency = 4 },
        lim_b.rates[#lim_b.rates])
      a:stop(); b:stop()
    end)
    assert.are.equal(2, #lim_a.rates)
    assert.are.same({ "a", "b" }, st.left)
    assert.are.same({}, st.rows)
  end)

  it("quem chega a uma cota já em uso começa com os baldes vazios; quem está só, não (sem rajada)", function()
    local s = testing.scheduler()
    local st = fake_store(s)
    local lim_a, lim_b = fake_limiter(STARVED), fake_limiter(STARVED)
    s.run(function()
      local a = keeper(s, st, lim_a, "a"):start()
      local b = keeper(s, st, lim_b, "b"):start()
      -- b's first grant is applied before start() returns: its first request goes at its slice.
      assert.are.same({ requests_per_min = 300, tokens_per_min = 30000, max_concurrency = 4 }, lim_b.rates[1])
      s.sleep(quota.RENEW_MS * 3)
      a:stop(); b:stop()
    end)
    assert.is_nil(lim_a.emptied, "a estava só ao chegar")
    assert.are.equal(1, lim_b.emptied, "b chegou com a em uso: uma vez, na primeira renovação")
    assert.are.equal(quota.RENEW_MS, lim_b.debt_ms, "b só começa a encher quando a já cedeu a fatia")
  end)

  it("quem pede pouco leva o que pede e o faminto o resto", function()
    local s = testing.scheduler()
    local st = fake_store(s)
    local small = { requests_per_min = 60, tokens_per_min = 6000, concurrency = 2, starved = false }
    local lim_a, lim_b = fake_limiter(small), fake_limiter(STARVED)
    s.run(function()
      keeper(s, st, lim_a, "a"):start()
      keeper(s, st, lim_b, "b"):start()
      s.sleep(quota.RENEW_MS + 1)
      s.stop()
    end)
    assert.are.same({ requests_per_min = 540, tokens_per_min = 54000, max_concurrency = 6 }, lim_b.rates[#lim_b.rates])
    assert.are.same({ requests_per_min = 60, tokens_per_min = 6000, max_concurrency = 2 }, lim_a.rates[#lim_a.rates])
  end)

  it("um detentor que some sem sair (kill -9) perde a fatia quando o prazo vence", function()
    local s = testing.scheduler()
    local st = fake_store(s)
    local lim = fake_limiter(STARVED)
    s.run(function()
      st.rows.dead = { key = "openai|text-embedding-3-small", demand = STARVED, expires = quota.TTL_S * 1000 }
      local k = keeper(s, st, lim, "a"):start()
      s.sleep(1)
      assert.are.equal(30000, lim.rates[#lim.rates].tokens_per_min)
      s.sleep(quota.TTL_S * 1000)
      assert.are.equal(60000, lim.rates[#lim.rates].tokens_per_min)
      assert.is_nil(st.rows.dead)
      k:stop()
    end)
  end)

  it("falha ao renovar: avisa uma vez, mantém a fatia até o prazo, cai para limite/detentores, volta e diz", function()
    local s = testing.scheduler()
    local st = fake_store(s)
    local log = testing.log()
    local lim = fake_limiter(STARVED)
    s.run(function()
      st.rows.b = { key = "openai|text-embedding-3-small", demand = STARVED, expires = 1e9 }
      st.rows.c = { key = "openai|text-embedding-3-small", demand = STARVED, expires = 1e9 }
      local k = keeper(s, st, lim, "a", log):start()
      s.sleep(1)
      assert.are.equal(20000, lim.rates[1].tokens_per_min)
      st.fail = "conexão recusada"
      local renewals = st.renewals
      s.sleep(quota.TTL_S * 1000 - 1000)          -- the lease has not expired yet
      assert.are.equal(1, #lim.rates, "a fatia fica até o prazo")
      assert.are.equal(1, #log.lines)
      assert.matches("não foi possível renovar a fatia no PostgreSQL (conexão recusada)", log.lines[1], 1, true)
      s.sleep(2000)
      assert.are.same({ requests_per_min = 200, tokens_per_min = 20000, max_concurrency = 2 }, lim.rates[2])
      assert.are.equal(2, #log.lines)
      assert.matches("prazo da fatia vencido", log.lines[2], 1, true)
      s.sleep(10 * quota.RENEW_MS)
      assert.is_true(st.renewals >= renewals + 15, "continua tentando: " .. st.renewals)
      assert.are.equal(2, #log.lines, "avisa uma vez só")
      assert.are.equal(2, #lim.rates, "a queda é aplicada uma vez")
      st.fail, st.rows.c = nil, nil
      s.sleep(quota.RENEW_MS)
      assert.are.equal(30000, lim.rates[#lim.rates].tokens_per_min)
      assert.matches("voltou a responder; fatia recalculada entre 2 processo", log.lines[3], 1, true)
      k:stop()
    end)
    assert.are.equal(3, #log.lines)
  end)

  it("a pausa gravada por outro chega na renovação; report_pause grava e pausa aqui", function()
    local s = testing.scheduler()
    local st = fake_store(s)
    local lim_a, lim_b = fake_limiter(), fake_limiter()
    s.run(function()
      local a = keeper(s, st, lim_a, "a"):start()
      local b = keeper(s, st, lim_b, "b"):start()
      s.sleep(500)
      assert.is_true(b:report_pause(7000))
      assert.are.same({ 7500 }, lim_b.pauses)
      assert.are.same({ 7000 }, st.pauses)
      s.sleep(quota.RENEW_MS)
      -- a renewed at t=2000: 5500 ms of pause left.
      assert.are.same({ 7500 }, lim_a.pauses)
      a:stop(); b:stop()
    end)
  end)

  it("stop durante uma renovação espera por ela e só então apaga a linha", function()
    local s = testing.scheduler()
    local st = fake_store(s)
    st.delay_ms = 300
    local lim = fake_limiter(STARVED)
    s.run(function()
      local k = keeper(s, st, lim, "a"):start()     -- the first renewal, in start(): 0 to 300
      assert.are.equal(300, s.now())
      s.sleep(quota.RENEW_MS + 100)               -- the second one (2300 to 2600) is in the store
      assert.is_true(k:stop())
      assert.are.equal(2600, s.now())
    end)
    assert.are.same({}, st.rows)
    assert.are.equal(2, st.renewals)
    assert.are.equal(1, #lim.rates, "parado: a renovação em curso não aplica nada")
  end)

  it("recusa opções incompletas", function()
    local s = testing.scheduler()
    local st, lim = fake_store(s), fake_limiter()
    assert.has_error(function() quota.new() end)
    assert.has_error(function() quota.new { store = {}, key = "k", holder = "h", limits = {}, sched = s, limiter = lim } end)
    assert.has_error(function() quota.new { store = st, key = "", holder = "h", limits = {}, sched = s, limiter = lim } end)
    assert.has_error(function() quota.new { store = st, key = "k", holder = "h", limits = {}, sched = s, limiter = {} } end)
    local k = keeper(s, st, lim, "a")
    assert.has_error(function() k:report_pause(0) end)
  end)

  it("holder_id: pid e um sufixo aleatório diferente a cada chamada", function()
    local a, b = quota.holder_id(4242), quota.holder_id(4242)
    assert.matches("^4242%-", a)
    assert.are_not.equal(a, b)
  end)
end)

describe("quota: dois processos com limitadores de verdade", function()
  it("juntos ficam no limite de tokens e o usam quase todo", function()
    local s = testing.scheduler()
    local st = fake_store(s)
    local limits = { tokens_per_min = 60000 }
    local granted, stop_at = {}, 180000
    local function process(name)
      local lim = ratelimit.new { sched = s, tokens_per_min = limits.tokens_per_min, max_concurrency = 4 }
      local k = quota.new { store = st, key = "k", limits = limits, holder = name, sched = s, limiter = lim }
      k:start()
      for _ = 1, 4 do
        s.spawn(function()
          while s.now() < stop_at do
            lim:acquire(500)
            granted[#granted + 1] = s.now()
            s.sleep(100)
            lim:release({ status = 200, ok = true })
          end
        end)
      end
      return k
    end
    s.run(function()
      local a = process("a")
      s.sleep(30000)
      local b = process("b")                     -- a joiner mid-run
      s.sleep(stop_at - 30000 + 1000)
      a:stop(); b:stop()
    end)
    -- Steady state after the joiner settled: per minute at most the limit
    -- plus the bound of the header (one joiner: limit * RENEW_MS / 60 s).
    local bound = 60000 * (1 + quota.RENEW_MS / 60000)
    local from, to, tokens = 60000, 180000, 0
    for _, t in ipairs(granted) do
      if t >= from and t < to then tokens = tokens + 500 end
    end
    local per_min = tokens / ((to - from) / 60000)
    assert.is_true(per_min <= bound, ("%.0f tokens por minuto acima de %.0f"):format(per_min, bound))
    assert.is_true(per_min >= 0.9 * 60000, ("só %.0f tokens por minuto de 60000"):format(per_min))
  end)
end)

describe("ragops.store.quota", function()
  it("renew manda a demanda como JSON e lê os detentores (o próprio primeiro) e a pausa", function()
    local seen
    local function q(sql, ...)
      seen = { sql = sql, args = { ... } }
      return {
        { holder = "b", demand = '{"tokens_per_min":100,"starved":false}' },
        { holder = "a", demand = '{"tokens_per_min":5,"starved":true}', pause_ms = 1500.5, expired = 2 },
        { holder = "c", demand = '{"tokens_per_min":"x","requests_per_min":-3}' },
        { holder = "d", demand = "não é json" },
      }
    end
    local view = store_quota.renew(q, "k", "a", { tokens_per_min = 5, starved = true, window_ms = 2000 }, 10)
    assert.are.equal(store_quota.RENEW_SQL, seen.sql)
    assert.are.same({ "k", "a", 10 }, { seen.args[1], seen.args[2], seen.args[4] })
    assert.are.same({ tokens_per_min = 5, starved = true }, require("cjson").decode(seen.args[3]),
      "só os números e a fome, sem window_ms")
    assert.are.equal(1500.5, view.pause_ms)
    assert.are.equal(2, view.expired)
    assert.are.same({ "a", "b", "c", "d" }, { view.holders[1].holder, view.holders[2].holder,
                                              view.holders[3].holder, view.holders[4].holder })
    assert.are.same({ tokens_per_min = 5, starved = true }, view.holders[1].demand)
    assert.are.same({ starved = false }, view.holders[3].demand, "números inválidos de outro processo são ignorados")
    assert.is_nil(view.holders[4].demand)
  end)

  it("os erros do banco passam adiante como nil, err, sqlstate", function()
    local st = store_quota.new({ query = function() return nil, "conexão perdida", "08006" end })
    local ok, err, state = st:renew("k", "a", {}, 10)
    assert.is_nil(ok); assert.are.equal("conexão perdida", err); assert.are.equal("08006", state)
    assert.are.same({ nil, "conexão perdida", "08006" }, { st:pause("k", 10) })
    assert.are.same({ nil, "conexão perdida", "08006" }, { st:leave("k", "a") })
  end)

  it("as tabelas da migração 11 entram na conferência de dono do migrate", function()
    local set = {}
    for _, n in ipairs(migrate.engine_relations(nil)) do set[n] = true end
    assert.is_true(set.ragops_quota_holders, "ragops_quota_holders")
    assert.is_true(set.ragops_quota_state, "ragops_quota_state")
    assert.is_true(migrate.latest_version() >= 11, "versão " .. migrate.latest_version())
  end)
end)
