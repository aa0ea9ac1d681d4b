-- ragops.obs.alerts: evaluates a plan's alert thresholds over sliding windows of
-- runner events and turns breaches into a log line, a metric, a webhook call
-- and an action (warn | pause | abort) for the runner.
--
--   local a = alerts.new{
--     config  = plan.alerts,          -- validated by ragops.plan
--     now     = function() -> ms,     -- monotonic clock (sched.now)
--     sleep   = function(ms),         -- required when some action is "pause"
--     log     = ragops.obs.log-like,      -- info/warn/error(fmt, ...)
--     metrics = ragops.obs.metrics registry (optional),
--     webhook = function(payload) -> true | nil, err (optional; may yield),
--     plan    = plan name for the webhook payload (optional),
--     pause_ms = 30000,               -- see gate(); also read from config.pause_ms
--     pause_step_ms = 1000,           -- gate() re-checks the clock this often
--     wall    = function() -> unix s, -- webhook `ts` (default os.time)
--   }
--   a:observe(event) -> nil | "warn" | "pause" | "abort"
--   a:gate(should_stop)  -- blocks while a "pause" alert is breached
--   a:status()           -> { [alert] = { value, limit, samples, breached, action } }
--   a.last_reason        -- pt-BR reason of the most severe breached alert
--   a.fired              -- list of pt-BR breach messages, in order (for the
--                           report's "Alertas disparados": stats.alerts = a.fired)
--
-- Events (from ragops.run.pipeline):
--   { kind = "embed", ok, status, latency_ms, class }  one per embedding call
--   { kind = "document", ok }                           one per document
--
-- Rules:
--   failure_rate     failures / count over the last `window` document events,
--                    > above, only once count >= min_samples.
--   rate_429_per_min embed events with status 429 in the last 60 s, > above.
--   p95_latency_ms   nearest-rank p95 of latency_ms over the last 200 embed
--                    events (at least 20), > above.
-- failure_rate and p95 only change with new samples; rate_429_per_min also
-- falls as time passes.
local M = {}

M.P95_WINDOW = 200      -- embed events kept for the p95
M.P95_MIN_SAMPLES = 20  -- fewer samples than this never breach the p95 rule
M.RATE_WINDOW_MS = 60000
M.DEFAULT_PAUSE_MS = 30000
M.DEFAULT_PAUSE_STEP_MS = 1000

local SEVERITY = { warn = 1, pause = 2, abort = 3 }
-- Evaluation order (also the tie-break for last_reason).
local RULE_ORDER = { "failure_rate", "rate_429_per_min", "p95_latency_ms" }

-- pt-BR number formatting ---------------------------------------------------

-- 2350 -> "2.350"; -1234567 -> "-1.234.567"
local function group_int(n)
  local s = ("%d"):format(math.abs(n))
  local out = s:reverse():gsub("(%d%d%d)", "%1."):reverse()
  if out:sub(1, 1) == "." then out = out:sub(2) end
  return (n < 0 and "-" or "") .. out
end

-- Integers grouped; fractions with one decimal and a comma.
local function fmt_num(v)
  if v == math.floor(v) then return group_int(v) end
  return (("%.1f"):format(v):gsub("%.", ","))
end

-- 0.12 -> "12,0%"; keeps a second decimal when one is not enough.
local function fmt_pct(v)
  local p = v * 100
  local s = ("%.1f"):format(p)
  if math.abs(tonumber(s) - p) > 1e-9 then s = ("%.2f"):format(p) end
  return (s:gsub("%.", ",")) .. "%"
end

local function fmt_ms(v)
  return group_int(math.floor(v + 0.5)) .. " ms"
end

M.fmt_pct, M.fmt_num = fmt_pct, fmt_num

-- Rules ---------------------------------------------------------------------
-- Each rule: update(event, now), measure(now) -> value|nil (nil = not enough
-- samples), describe(value) -> pt-BR text, time_based (recovers with time).

local function failure_rate_rule(cfg)
  local window = cfg.window
  local ring, head, count, failures = {}, 0, 0, 0
  local r = { name = "failure_rate", cfg = cfg, time_based = false }
  function r.update(event)
    if event.kind ~= "document" then return end
    local failed = not event.ok
    head = head % window + 1
    if count == window then
      if ring[head] then failures = failures - 1 end
    else
      count = count + 1
    end
    ring[head] = failed
    if failed then failures = failures + 1 end
  end
  function r.samples() return count end
  function r.measure()
    if count == 0 or count < (cfg.min_samples or 0) then return nil end
    return failures / count
  end
  function r.describe(value)
    return ("taxa de falhas %s acima do limite de %s (janela de %s documentos)")
      :format(fmt_pct(value), fmt_pct(cfg.above), group_int(count))
  end
  function r.describe_ok(value)
    if value == nil then
      return ("taxa de falhas sem amostras suficientes (%s de %s documentos)")
        :format(group_int(count), group_int(cfg.min_samples or 0))
    end
    return ("taxa de falhas %s, limite de %s (janela de %s documentos)")
      :format(fmt_pct(value), fmt_pct(cfg.above), group_int(count))
  end
  return r
end

local function rate_429_rule(cfg)
  local stamps, first, last = {}, 1, 0
  local r = { name = "rate_429_per_min", cfg = cfg, time_based = true }
  local function expire(now)
    while first <= last and now - stamps[first] >= M.RATE_WINDOW_MS do
      stamps[first] = nil
      first = first + 1
    end
  end
  function r.update(event, now)
    if event.kind == "embed" and event.status == 429 then
      last = last + 1
      stamps[last] = now
    end
  end
  function r.samples(now) expire(now); return last - first + 1 end
  function r.measure(now)
    expire(now)
    return last - first + 1
  end
  function r.describe(value)
    return ("%s respostas 429 no último minuto, acima do limite de %s")
      :format(group_int(value), fmt_num(cfg.above))
  end
  function r.describe_ok(value)
    return ("%s respostas 429 no último minuto, limite de %s")
      :format(group_int(value), fmt_num(cfg.above))
  end
  return r
end

local function p95_rule(cfg)
  local ring, head, count = {}, 0, 0
  local cached, dirty = nil, false
  local r = { name = "p95_latency_ms", cfg = cfg, time_based = false }
  function r.update(event)
    if event.kind ~= "embed" or type(event.latency_ms) ~= "number" then return end
    head = head % M.P95_WINDOW + 1
    if count < M.P95_WINDOW then count = count + 1 end
    ring[head] = event.latency_ms
    dirty = true
  end
  function r.samples() return count end
  function r.measure()
    if count < M.P95_MIN_SAMPLES then return nil end
    if dirty then
      local sorted = {}
      for i = 1, count do sorted[i] = ring[i] end
      table.sort(sorted)
      cached = sorted[math.ceil(0.95 * count)]
      dirty = false
    end
    return cached
  end
  function r.describe(value)
    return ("latência p95 de %s acima do limite de %s (últimas %s chamadas)")
      :format(fmt_ms(value), fmt_ms(cfg.above), group_int(count))
  end
  function r.describe_ok(value)
    if value == nil then
      return ("latência p95 sem amostras suficientes (%s de %d chamadas)")
        :format(group_int(count), M.P95_MIN_SAMPLES)
    end
    return ("latência p95 de %s, limite de %s (últimas %s chamadas)")
      :format(fmt_ms(value), fmt_ms(cfg.above), group_int(count))
  end
  return r
end

-- p95 over a list (nearest rank); exposed for tests and reports.
function M.p95(values)
  if #values == 0 then return nil end
  local sorted = {}
  for i, v in ipairs(values) do sorted[i] = v end
  table.sort(sorted)
  return sorted[math.ceil(0.95 * #sorted)]
end

local BUILDERS = {
  failure_rate = failure_rate_rule,
  rate_429_per_min = rate_429_rule,
  p95_latency_ms = p95_rule,
}

-- Alerts object -------------------------------------------------------------

local Alerts = {}
Alerts.__index = Alerts

function M.new(opts)
  if type(opts) ~= "table" then error("alerts.new: esperada uma tabela de opções", 2) end
  if type(opts.now) ~= "function" then error("alerts.new: now (relógio em ms) é obrigatório", 2) end
  if type(opts.log) ~= "table" then error("alerts.new: log é obrigatório", 2) end
  if opts.webhook ~= nil and type(opts.webhook) ~= "function" then
    error("alerts.new: webhook deve ser uma função", 2)
  end
  local config = opts.config or {}
  local self = setmetatable({
    now = opts.now, sleep = opts.sleep, log = opts.log, metrics = opts.metrics,
    webhook = opts.webhook, spawn = opts.spawn, plan = opts.plan,
    wall = opts.wall or os.time,
    pause_ms = opts.pause_ms or config.pause_ms or M.DEFAULT_PAUSE_MS,
    pause_step_ms = opts.pause_step_ms or M.DEFAULT_PAUSE_STEP_MS,
    rules = {},
    last_reason = nil,
    fired = {},             -- pt-BR text of every breach, in order
    paused = false,         -- a pause is in effect (logged once)
    pause_started = nil,    -- clock (ms) of the pause start or of the last probe
    stopped = false,        -- stop() was called: gate() never blocks again
  }, Alerts)
  for _, name in ipairs(RULE_ORDER) do
    local cfg = config[name]
    if cfg ~= nil then
      if type(cfg) ~= "table" or type(cfg.above) ~= "number" then
        error(("alerts.new: regra %s inválida (use o plano validado)"):format(name), 2)
      end
      local action = cfg.action or "warn"
      if not SEVERITY[action] then
        error(("alerts.new: ação inválida em %s: %s"):format(name, tostring(action)), 2)
      end
      if name == "failure_rate" and (type(cfg.window) ~= "number" or cfg.window < 1) then
        error("alerts.new: failure_rate.window inválida", 2)
      end
      if action == "pause" and type(opts.sleep) ~= "function" then
        error(("alerts.new: sleep é obrigatório para a ação pause (%s)"):format(name), 2)
      end
      local rule = BUILDERS[name](cfg)
      rule.action = action
      rule.breached = false
      self.rules[#self.rules + 1] = rule
    end
  end
  return self
end

-- Calls the webhook without letting its failure (error or nil, err) break
-- the run. Runs in its own coroutine when a spawn function was given.
function Alerts:_notify(payload)
  if not self.webhook then return end
  local function send()
    local ok, res, err = pcall(self.webhook, payload)
    if not ok or res == nil or res == false then
      self.log.warn("falha ao enviar o alerta %s ao webhook: %s", payload.alerta,
        tostring(ok and (err or "sem detalhes") or res))
    end
  end
  if self.spawn then self.spawn(send) else send() end
end

function Alerts:_breach(rule, value)
  local reason = rule.describe(value)
  local line = ("alerta: %s; ação: %s"):format(reason, rule.action)
  self.fired[#self.fired + 1] = ("%s; ação: %s"):format(reason, rule.action)
  if rule.action == "abort" then self.log.error("%s", line) else self.log.warn("%s", line) end
  if self.metrics then
    self.metrics:counter("ragops_alerts_total", nil,
      { alert = rule.name, action = rule.action, plan = self.plan }):inc()
  end
  self:_notify({ alerta = rule.name, estado = "disparado", valor = value, limite = rule.cfg.above,
                 acao = rule.action, plano = self.plan, ts = self.wall(), mensagem = reason })
end

function Alerts:_recover(rule, value)
  local text = rule.describe_ok(value)
  self.log.info("alerta normalizado: %s", text)
  self:_notify({ alerta = rule.name, estado = "normalizado", valor = value, limite = rule.cfg.above,
                 acao = rule.action, plano = self.plan, ts = self.wall(), mensagem = text })
end

-- Re-evaluates every rule at the current clock, handling transitions.
-- Returns the most severe action among breached rules (or nil).
function Alerts:check()
  local now = self.now()
  local worst, worst_rule, worst_value
  for _, rule in ipairs(self.rules) do
    local value = rule.measure(now)
    local breached = value ~= nil and value > rule.cfg.above
    if breached and not rule.breached then
      rule.breached = true
      self:_breach(rule, value)
    elseif not breached and rule.breached then
      rule.breached = false
      self:_recover(rule, value)
    end
    if breached and (not worst or SEVERITY[rule.action] > SEVERITY[worst]) then
      worst, worst_rule, worst_value = rule.action, rule, value
    end
  end
  if worst_rule then self.last_reason = worst_rule.describe(worst_value) end
  return worst
end

function Alerts:observe(event)
  if type(event) ~= "table" then error("alerts:observe: evento deve ser uma tabela", 2) end
  local now = self.now()
  for _, rule in ipairs(self.rules) do rule.update(event, now) end
  return self:check()
end

-- Snapshot for reports: per alert its value (nil = too few samples), limit,
-- samples, breached and action.
function Alerts:status()
  local now = self.now()
  local out = {}
  for _, rule in ipairs(self.rules) do
    out[rule.name] = { value = rule.measure(now), limit = rule.cfg.above, samples = rule.samples(now),
                       breached = rule.breached, action = rule.action }
  end
  return out
end

-- Makes gate() return at once from now on (the run is stopping).
function Alerts:stop()
  self.stopped = true
end

local function pause_rules(self)
  local list, time_based = {}, true
  for _, rule in ipairs(self.rules) do
    if rule.breached and rule.action == "pause" then
      list[#list + 1] = rule
      if not rule.time_based then time_based = false end
    end
  end
  return list, time_based
end

-- Called by a worker before each unit of work. Returns at once unless a
-- "pause" alert is breached; then sleeps in steps of pause_step_ms,
-- re-evaluating at the clock, until no pause alert is breached. Rules that
-- only change with new samples (failure_rate, p95_latency_ms) cannot recover
-- while nothing runs, so while one of them holds the pause, one probe unit
-- is let through every pause_ms (its results feed the windows). Also returns
-- when an "abort" alert is breached, after stop(), or when should_stop()
-- returns true, so the runner can wind down. Safe with many workers: the
-- pause and the resume are logged once, and each probe admits one worker.
function Alerts:gate(should_stop)
  while true do
    if self.stopped or (should_stop and should_stop()) then return end
    local action = self:check()
    local rules, time_based = pause_rules(self)
    if #rules == 0 or action == "abort" then
      if self.paused then
        self.paused = false
        self.pause_started = nil
        if action ~= "abort" then
          self.log.info("retomando o processamento: nenhum alerta com ação pause ativo")
        end
      end
      return
    end
    local now = self.now()
    if not self.paused then
      self.paused = true
      self.pause_started = now
      local reasons = {}
      for i, rule in ipairs(rules) do reasons[i] = rule.describe(rule.measure(now)) end
      local probe = time_based and ""
        or ("; uma unidade de teste será liberada a cada %s"):format(fmt_ms(self.pause_ms))
      self.log.warn("pausado por alerta: %s; nova verificação a cada %s%s",
        table.concat(reasons, "; "), fmt_ms(self.pause_step_ms), probe)
    elseif not time_based and now - self.pause_started >= self.pause_ms then
      self.pause_started = now
      self.log.info("pausa por alerta há %s: liberando uma unidade de teste para reavaliar (%s)",
        fmt_ms(self.pause_ms), rules[1].describe(rules[1].measure(now)))
      return
    end
    self.sleep(self.pause_step_ms)
  end
end

return M
