-- ragops.run.workunits: scale-out. Several processes run the same plan with the
-- same parameters and `--scale-out`; they join one run and split its sources
-- into work units (key ranges of about batch.size x 16 rows), recorded in
-- ragops_work_units. Each process claims a unit with FOR UPDATE SKIP LOCKED
-- under a lease it renews while working, runs the ordinary runner on that
-- key range, and marks the unit done with its counters. A process that dies
-- loses its lease; another one takes the unit over when the lease expires.
--
-- What a unit committed is the truth of its counters: every part (a batch
-- of rows) that writes records itself on the unit's row in its own
-- transaction, under the unit's fence (the lease is still this attempt's
-- and the run is still running; otherwise nothing is written and the unit
-- is abandoned). A takeover skips the parts an earlier attempt committed;
-- the unit's counters are those parts plus the last attempt's work. Each
-- request to the provider is counted on the unit's row before it leaves
-- (`sent`), and, with a budget, reserved there at an upper bound of its
-- tokens (`reserved`) until its answer turns it into tokens billed and not
-- yet committed (`billed`); what a dead attempt left there is counted as
-- spent (`ghost`). A run resumed from a checkpoint of an earlier process
-- (without --scale-out) is split past that checkpoint only, the units that
-- process committed past it becoming done units of their own.
-- The process that sees every unit done finishes the run: it deletes
-- entities gone from the source (full backfills) and records the run's
-- totals: the checkpoint's prefix plus every unit's counters.
-- Each process has a worker label (--worker, RAGOPS_WORKER, else the host
-- name): recorded on the units it claims (with its last sign of life, for
-- `ragops status`) and the `worker` label of its scale-out metrics.
local run_context = require "ragops.run.context"
local cjson = require "cjson"
local exit = require "ragops.util.exit"
local pg = require "ragops.pg"
local pipeline = require "ragops.run.pipeline"
local store_pg = require "ragops.store.pg"

local M = {}

M.DEFAULT_LEASE_S = 60
M.ROWS_PER_UNIT_FACTOR = 16      -- rows per unit = batch.size x this
local UNITS_LOCK_CLASS = 7265678 -- advisory lock class for creating a run's units

M.LOST = "a unidade de trabalho mudou de dono (lease expirado) ou a execução não está mais em andamento; "
  .. "nada desta gravação foi feito"

-- Counters of work (from what was committed) and of spend (everything this
-- process sent, committed or not).
local WORK_KEYS = { "processed", "succeeded", "failed", "skipped", "embedded", "deleted", "chunks", "refreshed" }
local SPEND_KEYS = { "tokens", "requests", "retries", "bytes", "chars", "bytes_sq" }

-- ---- the worker label ----

M.WORKER_MAX = 32
local WORKER_CHARS = "^[%w_.%-]+$"

-- The worker label of this process: opts.worker (--worker), else
-- getenv("RAGOPS_WORKER"), else the host name of process_id ("host:pid")
-- cut at its first dot, its other characters turned into "-" and cut to
-- M.WORKER_MAX. A label the operator gave must be 1 to M.WORKER_MAX
-- characters of [A-Za-z0-9_.-] (a metric label: bounded and readable).
-- Returns the label or nil, pt-BR err.
function M.worker_label(opts, getenv, process_id)
  getenv = getenv or os.getenv
  if opts.worker and not opts["scale-out"] then return nil, "--worker só vale com --scale-out ou --join" end
  local given, from = opts.worker, "--worker"
  if not given then given, from = getenv("RAGOPS_WORKER"), "RAGOPS_WORKER" end
  if given and given ~= "" then
    if #given > M.WORKER_MAX or not given:match(WORKER_CHARS) then
      return nil, ("%s espera um nome de 1 a %d caracteres entre letras sem acento, dígitos, '_', '.' e '-' "
        .. "(vira o rótulo worker das métricas), recebi %q"):format(from, M.WORKER_MAX, given:sub(1, 64))
    end
    return given
  end
  if given == "" and from == "--worker" then return nil, "--worker não pode ser vazio" end
  local host = (process_id or require("ragops.core").process_id()):match("^(.*):%d+$") or ""
  host = host:match("^[^.]*"):gsub("[^%w_.%-]", "-"):sub(1, M.WORKER_MAX)
  return host ~= "" and host or "desconhecido"
end

-- Counts one unit event (claimed, done) of this process on its worker
-- label: the only ragops metrics with a `worker` label (docs/alertas-e-metricas.md).
local function count_unit(w, name)
  local registry = w.env.metrics
  if registry then registry:counter(name, nil, { plan = w.plan.name, worker = w.worker }):inc(1) end
end

local selected_sources = pipeline.selected_sources
local query = store_pg.query

-- Runs fn(step) in one transaction on a pooled connection (store_pg.transaction).
local function in_transaction(pool, fn)
  return pool:with(function(conn) return store_pg.transaction(conn, fn) end)
end

local function decode(text)
  if text == nil then return {} end
  return cjson.decode(text)
end

-- Counters of one entity type as unit stats ({ ..., per_entity_type }).
local function typed(entity_type, counters)
  local c = run_context.add_counters(run_context.new_counters(), counters or {})
  local out = run_context.add_counters({}, c)
  out.per_entity_type = { [entity_type] = c }
  return out
end

-- ---- creating the units ----

-- The committed units of an earlier process (checkpoint `ahead`) in the
-- source's key order; one whose last key the source lost is left out (its
-- rows are done again).
local function ahead_in_key_order(step, source, ahead)
  local by_last, keys = {}, {}
  for _, a in ipairs(ahead or {}) do by_last[a.last_key] = a; keys[#keys + 1] = a.last_key end
  if #keys == 0 then return {} end
  local key = "src." .. pg.quote_ident(source.key)
  local rows = step(("select %s::text as k from (%s) as src where %s::text = any($1::text[]) order by %s")
    :format(key, source.sql, key, key), keys)
  local out = {}
  for _, r in ipairs(rows) do out[#out + 1] = by_last[r.k] end
  return out
end

-- Adds pending units over the keys in (after, upto] (upto nil: to the
-- end), one every rows_per_unit keys of the scoped source.
local function add_gap(step, add, source, scope, after, upto, rows_per_unit)
  local key = "src." .. pg.quote_ident(source.key)
  local inner, params = store_pg.source_query(source, scope, after, nil,
    ("%s::text as k, row_number() over (order by %s) as rn"):format(key, key), upto)
  params[#params + 1] = rows_per_unit
  local bounds = step(("select k from (%s) as t where rn %% $%d = 0 order by rn"):format(inner, #params),
    unpack(params))
  local last = after
  for _, b in ipairs(bounds) do add(last, b.k); last = b.k end
  if upto == nil or last ~= upto then add(last, upto) end -- the tail
end

-- One source's units, in key order, past its checkpoint cp (cp.ahead:
-- done units with their counters). Returns how many.
local function source_units(step, run_id, source, scope, cp, rows_per_unit)
  local seq = 0
  local function insert(after, last, status, stats)
    seq = seq + 1
    step([[insert into ragops_work_units (run_id, entity_type, seq, after_key, last_key, status, stats, done_at)
           values ($1, $2, $3, $4, $5, $6, $7::jsonb, case when $6 = 'done' then now() end)]],
      run_id, source.entity_type, seq, after, last, status, stats and cjson.encode(stats) or nil)
  end
  local function add(after, last) insert(after, last, "pending", nil) end
  local after = cp.after
  for _, a in ipairs(ahead_in_key_order(step, source, cp.ahead)) do
    if a.after_key ~= after then add_gap(step, add, source, scope, after, a.after_key, rows_per_unit) end
    insert(a.after_key, a.last_key, "done", typed(source.entity_type, a.stats))
    after = a.last_key
  end
  add_gap(step, add, source, scope, after, nil, rows_per_unit)
  return seq
end

-- Creates the run's units once; later processes find them. Unit boundaries
-- are every rows_per_unit-th key of the (scoped) source, in key order, past
-- the checkpoint of an earlier process (checkpoint[entity_type]).
-- Returns the number of units or nil, err.
function M.ensure_units(pool, run_id, plan, checkpoint)
  return in_transaction(pool, function(step)
    step("select pg_advisory_xact_lock($1, $2)", UNITS_LOCK_CLASS, run_id)
    local existing = step("select count(*) as n from ragops_work_units where run_id = $1", run_id)[1].n
    if existing > 0 then return existing end
    local total = 0
    for _, source in ipairs(selected_sources(plan)) do
      local cp = (checkpoint or {})[source.entity_type]
      total = total + source_units(step, run_id, source, plan.scope, type(cp) == "table" and cp or {},
        plan.batch.size * M.ROWS_PER_UNIT_FACTOR)
    end
    return total
  end)
end

-- ---- leases ----

-- Claims a free unit (pending, lease absent or expired) for owner, under
-- its worker label. What a dead attempt had reserved or billed and not
-- committed becomes `ghost` (spent). Returns the unit row (stats decoded),
-- false when none is free, or nil, err.
function M.claim(pool, run_id, owner, lease_s, worker)
  local rows, err = query(pool, [[
    update ragops_work_units u
       set lease_owner = $2, lease_expires_at = now() + make_interval(secs => $3),
           attempts = u.attempts + 1, worker = $4, heartbeat_at = now(),
           stats = case when u.stats ? 'reserved' or u.stats ? 'billed'
                        then (u.stats - 'reserved' - 'billed') || jsonb_build_object('ghost',
                               coalesce((u.stats ->> 'ghost')::bigint, 0)
                               + coalesce((u.stats ->> 'reserved')::bigint, 0)
                               + coalesce((u.stats ->> 'billed')::bigint, 0))
                        else u.stats end
     where u.id = (select id from ragops_work_units
                    where run_id = $1 and status = 'pending'
                      and (lease_expires_at is null or lease_expires_at < now())
                    order by id
                    for update skip locked
                    limit 1)
    returning id, entity_type, seq, after_key, last_key, attempts, stats::text as stats]], run_id, owner, lease_s,
    worker)
  if not rows then return nil, err end
  local unit = rows[1]
  if not unit then return false end
  unit.stats = decode(unit.stats)
  return unit
end

-- The unit's fence, as a WHERE over ragops_work_units w: $1 unit id, $2
-- owner, $3 attempt, $4 the run's owner token (nil with --scale-out). The
-- run's row is share-locked: the process that finishes the run waits for
-- the parts being committed, and none commits after it.
local FENCE = [[w.id = $1 and w.lease_owner = $2 and w.attempts = $3 and w.status = 'pending'
   and exists (select 1 from ragops_runs r where r.id = w.run_id and r.status = 'running'
                 and r.owner is not distinct from $4 for share of r)]]

-- Extends the lease; false when another process took the unit over or the
-- run is no longer running (nil, err: the database failed).
function M.renew(pool, wu, lease_s)
  local rows, err = query(pool, [[
    update ragops_work_units w set lease_expires_at = now() + make_interval(secs => $5), heartbeat_at = now()
     where ]] .. FENCE .. " returning w.id", wu.id, wu.owner, wu.attempt, wu.token, lease_s)
  if not rows then return nil, err end
  return #rows > 0
end

-- Marks the unit done with its counters (stats, a JSON object merged over
-- the unit's `parts`, `sent` and `ghost`). Returns true, false (lost) or
-- nil, err.
function M.complete(pool, wu, stats_json)
  local rows, err = query(pool, [[
    update ragops_work_units w set status = 'done', done_at = now(), lease_expires_at = null, heartbeat_at = now(),
           stats = coalesce(w.stats, '{}') || $5::jsonb
     where ]] .. FENCE .. " returning w.id", wu.id, wu.owner, wu.attempt, wu.token, stats_json)
  if not rows then return nil, err end
  return #rows > 0
end

-- A process that stops before a unit is done frees it at once for the
-- others (or a resume) instead of holding it until the lease expires.
local function release(pool, wu)
  query(pool, [[update ragops_work_units set lease_expires_at = now()
                 where id = $1 and lease_owner = $2 and attempts = $3 and status = 'pending']],
    wu.id, wu.owner, wu.attempt)
end

-- { total, done, leased (live leases), free }.
function M.progress(pool, run_id)
  local rows, err = query(pool, [[
    select count(*) as total,
           count(*) filter (where status = 'done') as done,
           count(*) filter (where status = 'pending' and lease_expires_at >= now()) as leased,
           count(*) filter (where status = 'pending'
                              and (lease_expires_at is null or lease_expires_at < now())) as free
      from ragops_work_units where run_id = $1]], run_id)
  if not rows then return nil, err end
  return rows[1]
end

-- ---- the unit's store: its fence, its parts, its requests and budget ----

local PART_SQL = [[
  update ragops_work_units w
     set stats = jsonb_set(coalesce(w.stats, '{}'), '{parts}',
                           coalesce(w.stats -> 'parts', '[]') || jsonb_build_array($5::jsonb))
                 || case when $6::bigint > 0
                         then jsonb_build_object('billed', coalesce((w.stats ->> 'billed')::bigint, 0) - $6)
                         else '{}' end
   where ]] .. FENCE .. " returning w.id"

local SENT_SQL = [[
  update ragops_work_units w
     set stats = coalesce(w.stats, '{}') || jsonb_build_object('sent', coalesce((w.stats ->> 'sent')::bigint, 0) + 1)
   where ]] .. FENCE .. " returning w.id"

local RESERVE_SQL = [[
  update ragops_work_units w
     set stats = coalesce(w.stats, '{}')
                 || jsonb_build_object('reserved', coalesce((w.stats ->> 'reserved')::bigint, 0) + $5)
   where ]] .. FENCE .. " returning w.id"

local SETTLE_SQL = [[
  update ragops_work_units w
     set stats = coalesce(w.stats, '{}')
                 || jsonb_build_object('reserved', coalesce((w.stats ->> 'reserved')::bigint, 0) - $5,
                                       'billed', coalesce((w.stats ->> 'billed')::bigint, 0) + $6)
   where ]] .. FENCE .. " returning w.id"

-- The run's spend in tokens (billed: committed, dropped, not yet committed,
-- and dead attempts') and the upper bounds of the requests in flight.
local SPEND_SQL = [[
  select (select coalesce(sum(tokens), 0) from ragops_token_usage where run_id = $1)::float8
         + coalesce(sum(coalesce((stats ->> 'billed')::bigint, 0)
                        + coalesce((stats ->> 'ghost')::bigint, 0)), 0)::float8 as spent,
         coalesce(sum(coalesce((stats ->> 'reserved')::bigint, 0)), 0)::float8 as reserved
    from ragops_work_units where run_id = $1]]

local Unit = {}

-- Inside a part's transaction (store_pg write_unit, instead of the run
-- record's check_owner): records the part on the unit's row, with its
-- tokens no longer `billed` but in the usage, or raises the fence.
function Unit:check_owner(step, _, _, payload, pruned, refreshed)
  local wu, part = self.work_unit, payload.part
  -- A copy: the transaction may run again (the database retry policy).
  local stats = run_context.add_counters({}, part and part.stats or {})
  stats.deleted, stats.refreshed = stats.deleted + pruned, stats.refreshed + refreshed
  local rows = step(PART_SQL, wu.id, wu.owner, wu.attempt, wu.token,
    cjson.encode({ first_key = part and part.first_key, after_key = part and part.after_key,
                   last_key = part and part.last_key, attempt = wu.attempt, stats = stats }),
    wu.budget and stats.tokens or 0)
  if #rows == 0 then
    self.fenced = true
    error({ err = M.LOST, state = "RGFEN" }, 0)
  end
end

-- Counts one request on the unit before it leaves: true, or false, reason
-- (the unit is lost), or nil, err.
function Unit:record_request()
  local wu = self.work_unit
  local rows, err = query(self.pool, SENT_SQL, wu.id, wu.owner, wu.attempt, wu.token)
  if not rows then return nil, err end
  if #rows == 0 then self.fenced = true; return false, M.LOST end
  return true
end

-- The budget's verdict on one request (ragops.run.stages.embed admission),
-- weighed and reserved in one transaction on the run's row lock, so every
-- process sees every other's reservations. Returns verdict, spent tokens
-- ("lost", reason; nil, err).
function Unit:reserve_request(est, upper, limit)
  local admission = require("ragops.run.stages.embed").admission
  local wu = self.work_unit
  local answer, err = in_transaction(self.pool, function(step)
    step("select 1 from ragops_runs where id = $1 for update", wu.run_id)
    local r = step(SPEND_SQL, wu.run_id)[1]
    local v = admission(r.spent, r.reserved, est, upper, limit)
    if v == "ok" and #step(RESERVE_SQL, wu.id, wu.owner, wu.attempt, wu.token, upper) == 0 then v = "lost" end
    return { verdict = v, spent = r.spent }
  end)
  if not answer then return nil, err end
  if answer.verdict == "lost" then self.fenced = true; return "lost", M.LOST end
  return answer.verdict, answer.spent
end

-- The answer came: the reservation becomes the tokens billed (a lost unit's
-- reservation already counts as a dead attempt's).
function Unit:settle_request(upper, tokens)
  local wu = self.work_unit
  query(self.pool, SETTLE_SQL, wu.id, wu.owner, wu.attempt, wu.token, upper, tokens)
end

local UNBILL_SQL = [[
  update ragops_work_units w
     set stats = coalesce(w.stats, '{}')
                 || jsonb_build_object('billed', coalesce((w.stats ->> 'billed')::bigint, 0) - $4)
   where w.id = $1 and w.lease_owner = $2 and w.attempts = $3 and w.status = 'pending' returning w.id]]

-- A dropped batch's tokens go to the run's usage and leave `billed`, in one
-- transaction; when the unit is lost they are a dead attempt's already.
function Unit:record_dropped(run_id, entity_type, usage)
  local wu = self.work_unit
  if not wu.budget then return self.base:record_dropped(run_id, entity_type, usage) end
  local ok, err = in_transaction(self.pool, function(step)
    if #step(UNBILL_SQL, wu.id, wu.owner, wu.attempt, usage.tokens) == 0 then return true end
    step(store_pg.USAGE_SQL, run_id, usage.model, entity_type, 0, usage.chunks, usage.bytes, usage.chars,
      usage.tokens)
    return true
  end)
  if not ok then return nil, err end
  return true
end

-- The store a unit's runner uses: the run's store, with the unit's fence
-- and bookkeeping. wu = { id, run_id, owner, attempt, token, budget }.
function M.unit_store(base, wu)
  local store = setmetatable({ work_unit = wu, base = base, fenced = false }, { __index = function(_, k)
    local own = Unit[k]
    if own ~= nil then return own end
    return base[k]
  end })
  return store
end

-- ---- counters ----

-- Adds runner stats b into a (counters and per entity type).
function M.add_stats(a, b)
  for _, k in ipairs(pipeline.COUNTER_KEYS) do a[k] = (a[k] or 0) + (b[k] or 0) end
  a.per_entity_type = a.per_entity_type or {}
  for t, c in pairs(b.per_entity_type or {}) do
    local into = a.per_entity_type[t] or {}
    for _, k in ipairs(pipeline.COUNTER_KEYS) do into[k] = (into[k] or 0) + (c[k] or 0) end
    a.per_entity_type[t] = into
  end
  return a
end

-- Counters of the parts committed (by attempt `only`, or all), per unit's
-- entity type.
local function parts_stats(parts, entity_type, only)
  local c = run_context.new_counters()
  for _, part in ipairs(parts or {}) do
    if not only or part.attempt == only then run_context.add_counters(c, part.stats or {}) end
  end
  return typed(entity_type, c)
end

-- This process's share of a unit it did not complete: the work of the parts
-- it committed (read back: they count once, whoever finishes the unit) and
-- everything it spent.
local function share_of(pool, unit, st)
  local rows = query(pool, "select (stats -> 'parts')::text as parts from ragops_work_units where id = $1", unit.id)
  local committed = parts_stats(decode(rows and rows[1] and rows[1].parts), unit.entity_type, unit.attempts)
  local share = { per_entity_type = { [unit.entity_type] = run_context.new_counters() } }
  local c = share.per_entity_type[unit.entity_type]
  for _, k in ipairs(WORK_KEYS) do share[k] = committed[k]; c[k] = committed[k] end
  for _, k in ipairs(SPEND_KEYS) do share[k] = st[k] or 0; c[k] = st[k] or 0 end
  return share
end

M.share_of = share_of
M.parts_stats = parts_stats

-- Requests the run's units recorded (every attempt, dead or alive).
function M.requests_sent(pool, run_id)
  local rows, err = query(pool, [[select coalesce(sum((stats ->> 'sent')::bigint), 0)::float8 as n
                                    from ragops_work_units where run_id = $1]], run_id)
  if not rows then return nil, err end
  return tonumber(rows[1].n)
end

-- ---- this process's part of the run ----

-- Renews w's lease on the unit while `working` says so (short naps, so it
-- never keeps the process alive after the unit; a renewal every third of
-- the lease); when the unit was lost, marks it and stops its runner.
local function keep_lease(w, wu, state)
  local s = w.env.sched
  local last = s.now()
  while state.working do
    s.sleep(200)
    if state.working and s.now() - last >= w.lease_s * 1000 / 3 then
      last = s.now()
      if M.renew(w.pool, wu, w.lease_s) == false and state.working then
        state.lost = true
        if state.env.stop then state.env.stop(4, M.LOST) end
      end
    end
  end
end

-- The unit's runner env: its key range (skipping the parts committed by
-- earlier attempts), its store, no checkpoint (a unit's counters start at 0).
local function unit_env(w, unit, wu)
  local range = { after = unit.after_key, upto = unit.last_key, ahead = unit.stats.parts }
  return setmetatable({ range = range, checkpoint = {}, store = M.unit_store(w.env.store, wu) },
    { __index = w.env })
end

-- Marks a unit the runner finished as done, with the earlier attempts'
-- parts and this attempt's counters. Returns true, false (lost) or nil, err.
local function complete_unit(w, unit, wu, st)
  local final = M.add_stats(parts_stats(unit.stats.parts, unit.entity_type), st)
  return M.complete(w.pool, wu, cjson.encode(M.add_stats({}, final)))
end

-- Runs one claimed unit. Returns "done", "lost" (another process has it, or
-- the run ended) or "stopped" (and the runner's stats: st.aborted).
local function run_unit(w, unit)
  local env, log = w.env, w.env.log
  local wu = { id = unit.id, run_id = w.run_id, owner = w.owner, attempt = unit.attempts,
               token = env.store.owner_token, budget = env.budget_usd ~= nil and env.price_per_1m_tokens ~= nil }
  log.info("unidade %s #%d (chaves de %s até %s)%s", unit.entity_type, unit.seq,
    unit.after_key or "início", unit.last_key or "fim",
    unit.attempts > 1 and (" retomada de outro processo, tentativa " .. unit.attempts) or "")
  local state = { working = true, env = unit_env(w, unit, wu) }
  w.current = state.env
  env.sched.spawn(keep_lease, w, wu, state)
  local unit_plan = setmetatable({ sources = { w.by_type[unit.entity_type] } }, { __index = w.plan })
  local st = pipeline.run(unit_plan, state.env)
  state.working, w.current = false, nil
  local lost = state.lost or state.env.store.fenced
  if not lost and not st.aborted then
    local ok, cerr = complete_unit(w, unit, wu, st)
    if ok then M.add_stats(w.mine, st); return "done" end
    if ok == nil then
      st.aborted = { code = exit.unreachable, reason = "falha ao concluir a unidade de trabalho: " .. tostring(cerr) }
    end
    lost = ok == false
  end
  M.add_stats(w.mine, share_of(w.pool, unit, st))
  if lost then
    log.warn("a unidade %s #%d mudou de dono (lease expirado) ou a execução terminou: este processo a "
      .. "abandona; o que ele gravou nela conta uma vez, o resto fica com quem a tem", unit.entity_type, unit.seq)
    return "lost", st
  end
  release(w.pool, wu)
  return "stopped", st
end

-- True when the run is no longer running (another process finished it).
local function run_over(w)
  local rows = query(w.pool, "select status from ragops_runs where id = $1", w.run_id)
  return rows ~= nil and rows[1] ~= nil and rows[1].status ~= "running"
end

-- Claims and runs units until none is left. Returns nil (every unit is
-- done, or the run ended elsewhere: ended = true), or the reason to stop
-- ({ code, reason }).
local function work(w)
  local s = w.env.sched
  while not w.stopped do
    local unit, cerr = M.claim(w.pool, w.run_id, w.owner, w.lease_s, w.worker)
    if unit == nil then return { code = exit.unreachable, reason = "falha ao reivindicar unidade de trabalho: " .. tostring(cerr) } end
    if unit then
      count_unit(w, "ragops_scale_out_units_claimed_total")
      local outcome, st = run_unit(w, unit)
      if outcome == "done" then
        w.units_done = w.units_done + 1
        count_unit(w, "ragops_scale_out_units_done_total")
      elseif outcome == "stopped" then return w.stopped or st.aborted
      elseif run_over(w) then w.ended = true; return nil end
    else
      local state = M.progress(w.pool, w.run_id)
      if state and state.done == state.total then return nil end
      -- Units leased by others: wait, and take over any whose lease expires.
      s.sleep(math.min(1000, w.lease_s * 250))
    end
  end
  return w.stopped
end

-- The run's totals, for the process that finishes it: the prefix an
-- earlier process checkpointed and every unit's counters. Returns totals,
-- requests the units sent; or nil, err.
local function run_totals(w)
  local totals = M.add_stats({}, {})
  for entity_type, cp in pairs(w.env.checkpoint or {}) do
    if type(cp) == "table" and type(cp.stats) == "table" then M.add_stats(totals, typed(entity_type, cp.stats)) end
  end
  local rows, err = query(w.pool, "select stats::text as stats from ragops_work_units where run_id = $1", w.run_id)
  if not rows then return nil, err end
  local sent = 0
  for _, r in ipairs(rows) do
    local st = decode(r.stats)
    M.add_stats(totals, st)
    sent = sent + (st.sent or 0)
  end
  return totals, sent
end

-- Exactly one process finishes the run: marks it finalizing (waiting for
-- the parts being committed; none commits after), deletes entities gone
-- from the source and adds the totals. Returns totals, sent (nil: another
-- process finishes it), or nil, nil, reason.
local function finalize(w)
  local p, env, log = w.plan, w.env, w.env.log
  local won = query(w.pool, [[update ragops_runs set status = 'finalizing', updated_at = now()
                               where id = $1 and status in ('running', 'interrupted', 'aborted')
                              returning id]], w.run_id)
  if not won or #won == 0 then return nil end
  local totals, sent = run_totals(w)
  if not totals then
    return nil, nil, { code = exit.unreachable, reason = "falha ao somar as unidades de trabalho: " .. tostring(sent) }
  end
  local scope = p.scope or {}
  if not (p.delete_missing and not scope.since and not scope["until"]) then return totals, sent end
  for _, source in ipairs(selected_sources(p)) do
    local deleted, derr = env.store:delete_orphans(source)
    if not deleted then
      return totals, sent, { code = exit.unreachable, reason = "falha ao remover documentos órfãos: " .. tostring(derr) }
    end
    if deleted > 0 then
      log.info("%d documento(s) de %s removido(s): entidades ausentes da fonte", deleted, source.entity_type)
    end
    M.add_stats(totals, typed(source.entity_type, { deleted = deleted }))
    M.add_stats(w.mine, typed(source.entity_type, { deleted = deleted }))
  end
  return totals, sent
end

-- Runs this process's share of plan p. opts = { pool, run_id, owner,
-- lease_s, worker (label; default: the host name) }. Returns stats (this process's share: the work it committed
-- and everything it spent, with .aborted as the runner does; .run_ended
-- when another process finished the run) and, for the process that
-- finished the run, totals (the whole run's counters) and the requests
-- the units sent.
function M.run(p, env, opts)
  local s, log = env.sched, env.log
  local w = { env = env, plan = p, pool = opts.pool, run_id = opts.run_id, owner = opts.owner,
              lease_s = opts.lease_s or M.DEFAULT_LEASE_S, mine = M.add_stats({}, {}), by_type = {},
              units_done = 0, worker = opts.worker or M.worker_label({}) or "desconhecido" }
  for _, source in ipairs(p.sources) do w.by_type[source.entity_type] = source end
  local started = s.now()
  env.stop = function(code, reason)
    w.stopped = w.stopped or { code = code, reason = reason }
    if w.current and w.current.stop then w.current.stop(code, reason) end
  end
  local function finish(aborted)
    local mine = w.mine
    mine.elapsed_s = (s.now() - started) / 1000
    mine.throughput = mine.elapsed_s > 0 and mine.processed / mine.elapsed_s or 0
    mine.aborted = aborted
    return mine
  end

  local check = run_context.context(p, env)
  pipeline.check_unique_keys(check)
  if check.aborted then return finish(check.aborted) end
  local n, err = M.ensure_units(w.pool, w.run_id, p, env.checkpoint)
  if not n then return finish({ code = exit.unreachable, reason = "falha ao criar as unidades de trabalho: " .. tostring(err) }) end
  log.info("scale-out: execução %d dividida em %d unidade(s) de trabalho; este processo é %s, worker %s "
    .. "(lease de %d s)", w.run_id, n, w.owner, w.worker, w.lease_s)
  local stop = work(w)
  if stop then return finish(stop) end
  log.info("scale-out: este processo concluiu %d unidade(s)", w.units_done)
  if w.ended then return finish(nil) end
  local totals, sent, ferr = finalize(w)
  return finish(ferr), totals, sent
end

return M
