-- ragops.run.context: the last stage of a unit, and the run's books.
-- Receives the counters of a committed unit (a delta) and adds them to the
-- run's totals, per entity type; feeds the alerts (document outcomes, embed
-- calls), the metrics and the progress snapshot (ragops.obs.progress draws it). Also the run's stop switch:
-- ctx:abort(code, reason) is how any stage ends the run (ctx:abort_db after
-- a database failure: the SQLSTATE chooses the code). The reason is logged
-- once, here, as the one ERRO line of the stop (a signal: no ERRO, the
-- handler already warned).
--
-- The run context (ctx) it builds is what every stage receives; every
-- field is declared, with what it holds, in M.context below (M.FIELDS) and
-- nowhere else: tests/lua/run/context_spec.lua fails on a module that
-- assigns a ctx field not declared there.
local exit = require "ragops.util.exit"
local instruments = require "ragops.obs.instruments"
local messages = require "ragops.util.messages"
local sandbox = require "ragops.plan.sandbox"

local M = {}

M.COUNTER_KEYS = { "processed", "succeeded", "failed", "skipped", "embedded",
                   "deleted", "chunks", "tokens", "requests", "retries", "refreshed",
                   -- entities the plan's document() gave no document (not pending):
                   "no_document",
                   -- what was sent for embedding (calibration of token estimates):
                   "bytes", "chars", "bytes_sq" }

function M.new_counters()
  local c = {}
  for _, k in ipairs(M.COUNTER_KEYS) do c[k] = 0 end
  return c
end

-- into[k] += delta[k] for every counter; returns into.
function M.add_counters(into, delta)
  for _, k in ipairs(M.COUNTER_KEYS) do into[k] = (into[k] or 0) + (delta[k] or 0) end
  return into
end

local Context = {}
Context.__index = Context

-- Every field of a run context, in the order M.context sets them.
M.FIELDS = { "plan", "env", "sched", "store", "log", "stats", "booked", "aborted", "spent", "started",
             "tokens_before", "fingerprint_seed", "fingerprints", "hook_budget", "no_document_state",
             "source_rows", "total", "waited_reported" }

-- The seed of a source's row fingerprints (see ragops.run.stages.read), or
-- nil when the run computes none (env.fingerprint unset: dry run, sync).
local function fingerprint_seed(env)
  if not env.fingerprint then return nil end
  return function(source) return env.fingerprint .. "\0" .. source.entity_type end
end

-- A new run context: every field it will ever have, set here. A resumed
-- run starts from the counters of its checkpointed prefix and of the units
-- committed past it.
function M.context(plan, env)
  local spent = env.spent or { requests = 0 }
  spent.tokens = spent.tokens or 0
  local stats = M.new_counters()
  stats.per_entity_type, stats.missing_entities = {}, {}
  local ctx = setmetatable({
    plan = plan, env = env,                 -- the validated plan and what the run is given (ragops.run.pipeline)
    sched = env.sched, store = env.store,   -- the scheduler; the Store (ragops.store.contract)
    log = env.log,                          -- ragops.obs.log-like
    stats = stats,                          -- totals (COUNTER_KEYS) + per_entity_type + missing_entities
    booked = { per_entity_type = {} },      -- the part of stats that is units' counters (the resumed
                                            -- prefix and each unit accounted); the rest (deletions of
                                            -- entities gone, spend of dropped units) is added to what
                                            -- the run committed (M.rebase)
    aborted = nil,                          -- nil, or { code, reason, halt } once the run is stopping
    spent = spent,                          -- { requests, tokens }: embedding requests of every attempt
                                            -- and tokens the provider billed, in this process
    started = env.sched.now(),              -- when the run began (ms, the scheduler's clock)
    tokens_before = 0,                      -- tokens billed before this process (a resumed run's prefix)
    fingerprint_seed = fingerprint_seed(env), -- function(source) -> seed, or nil: no fingerprints
    fingerprints = {},                      -- [entity_type] = { seed, set, stored } while a source whose
                                            -- stored fingerprints were loaded is read (ragops.run.pipeline)
    hook_budget = sandbox.hook_budget(),    -- the sandbox budget shared by the run's document() calls
    no_document_state = {},                 -- [entity_type] = { stored, marked } (ragops.run.stages.decide)
    source_rows = {},                       -- [entity_type] = rows the source holds (obs.instruments)
    total = nil,                            -- rows of the whole run, once counted (progress and ETA)
    waited_reported = 0,                    -- limiter wait already counted in the metric (seconds)
  }, Context)
  for entity_type, cp in pairs(env.checkpoint or {}) do
    if type(cp) == "table" then
      if type(cp.stats) == "table" then ctx:book(entity_type, cp.stats) end
      for _, unit in ipairs(cp.ahead or {}) do ctx:book(entity_type, unit.stats) end
    end
  end
  ctx.tokens_before = ctx.stats.tokens
  return ctx
end

-- Adds delta to the run totals as units' counters (see ctx.booked).
function Context:book(entity_type, delta)
  self:merge(entity_type, delta)
  local per = self.booked.per_entity_type
  per[entity_type] = M.add_counters(per[entity_type] or M.new_counters(), delta)
end

-- The totals of a run from what it committed (committed = { [entity_type]
-- = counters }, read back from the database) plus what stats holds beyond
-- its booked units' counters. Units this process believes lost (a commit
-- its client gave up on at a signal) but PostgreSQL committed count; units
-- it skipped without writing and never recorded do not (a resume redoes
-- them). Returns stats, changed in place.
function M.rebase(stats, booked, committed)
  local per = stats.per_entity_type
  for entity_type in pairs(committed) do per[entity_type] = per[entity_type] or M.new_counters() end
  for _, k in ipairs(M.COUNTER_KEYS) do stats[k] = 0 end
  for entity_type, c in pairs(per) do
    local b, from_db = booked.per_entity_type[entity_type] or {}, committed[entity_type] or {}
    for _, k in ipairs(M.COUNTER_KEYS) do
      c[k] = (from_db[k] or 0) + (c[k] or 0) - (b[k] or 0)
      stats[k] = stats[k] + c[k]
    end
  end
  return stats
end

function Context:counters_for(entity_type)
  local c = self.stats.per_entity_type[entity_type]
  if not c then c = M.new_counters(); self.stats.per_entity_type[entity_type] = c end
  return c
end

-- Adds a unit's counters (delta) to the run totals.
function Context:merge(entity_type, delta)
  local c = self:counters_for(entity_type)
  for _, k in ipairs(M.COUNTER_KEYS) do
    local n = delta[k] or 0
    if n ~= 0 then self.stats[k] = self.stats[k] + n; c[k] = c[k] + n end
  end
end

-- Stops the run: readers stop reading, workers drop their units, except
-- for an alert abort (code 3): units already taken finish and commit, so
-- what was paid for is kept and a resume starts past it. halt: stop the
-- units in progress too, whatever the code (the budget: nothing more may
-- be sent).
function Context:abort(code, reason, halt)
  if not self.aborted then
    self.aborted = { code = code, reason = reason, halt = halt or nil }
    if code ~= exit.interrupted then self.log.error("execução interrompida: %s", reason) end
    -- The database retries end with the run: what is left (units in
    -- flight, the run's record) makes a single attempt.
    if self:halted() then self.store:wind_down() end
  end
end

-- Stops the run after a database operation that failed for good (what:
-- what the run was doing, pt-BR): 4, the database may come back; 2 when
-- PostgreSQL refused the SQL itself (SQLSTATE class 42: the plan's SQL or
-- the grants are the operator's to fix).
function Context:abort_db(what, err, state)
  local code = exit.for_sqlstate(state)
  local reason = what .. ": " .. messages.postgres(err, state)
  if code == exit.usage then
    reason = reason .. "; confira o SQL das fontes do plano e as permissões do usuário do banco"
  end
  self:abort(code, reason)
end

-- True when work in progress must stop now (any abort but an alert's).
function Context:halted()
  return self.aborted ~= nil and (self.aborted.code ~= exit.alert or self.aborted.halt == true)
end

-- Feeds one event to the alerts; an "abort" answer stops the run (code 3).
function Context:observe(event)
  local alerts = self.env.alerts
  if not alerts then return end
  if alerts:observe(event) == "abort" and not self.aborted then
    self:abort(exit.alert, alerts.last_reason or "limite de alerta excedido")
  end
end

-- Books a committed unit: totals, metrics, alert events.
function Context:account_unit(entity_type, delta, rows)
  self:book(entity_type, delta)
  instruments.unit_committed(self, entity_type, delta)
  for _ = 1, rows - delta.failed do self:observe({ kind = "document", ok = true }) end
  for _ = 1, delta.failed do self:observe({ kind = "document", ok = false }) end
end

-- What a unit that will not commit spent on the provider (delta; parts:
-- its embedded batches): kept in the totals, and what the provider billed
-- for it recorded with the run's usage, so the run's spend (this process's,
-- a resumed one's, the other scale-out processes') counts it.
function Context:spend_dropped(entity_type, delta, parts)
  self:merge(entity_type, { requests = delta.requests, retries = delta.retries, tokens = delta.tokens })
  local store, run_id = self.store, self.env.run_id
  if not (run_id and delta.tokens > 0) then return end
  local inputs = 0
  for _, part in ipairs(parts or {}) do inputs = inputs + #part.items end
  local ok, err = store:record_dropped(run_id, entity_type, { model = self.env.model, chunks = inputs,
    bytes = delta.bytes, chars = delta.chars, tokens = delta.tokens })
  if not ok then
    self.log.warn("não foi possível registrar os %d tokens cobrados de um lote descartado: %s", delta.tokens,
      tostring(err))
  end
end

-- US$ billed so far by the run (all processes), or nil without a price.
function Context:spend_usd()
  local price = self.env.price_per_1m_tokens
  if not price then return nil end
  return ((self.env.budget_base or self.tokens_before) + self.spent.tokens) * price / 1e6
end

-- The run's final stats (the runner's return value).
function Context:finish()
  local st = self.stats
  st.elapsed_s = (self.sched.now() - self.started) / 1000
  st.throughput = st.elapsed_s > 0 and st.processed / st.elapsed_s or 0
  st.aborted = self.aborted
  local alerts = self.env.alerts
  if alerts and alerts.fired and #alerts.fired > 0 then st.alerts = alerts.fired end
  -- Reachable as st.booked (M.rebase) but not a field: not in the reports.
  return setmetatable(st, { __index = { booked = self.booked } })
end

-- ---- progress snapshot ----
-- The numbers the progress renderer (ragops.obs.progress) and the report's
-- series read: ctx.total is the rows to process when known (nil today).
function Context:snapshot()
  instruments.refresh(self)
  local st = self.stats
  local limiter = self.env.endpoints and self.env.endpoints:stats() or {}
  return { processed = st.processed, total = self.total, succeeded = st.succeeded, skipped = st.skipped,
           no_document = st.no_document,
           failed = st.failed, retries = st.retries, elapsed_s = (self.sched.now() - self.started) / 1000,
           concurrency = limiter.concurrency, in_flight = limiter.in_flight, spend_usd = self:spend_usd() }
end

return M
