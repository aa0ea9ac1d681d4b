-- ragops.workunits: scale-out. Several processes run the same plan with the
-- same parameters and `--scale-out`; they join one run and split its sources
-- into work units (key ranges of about batch.size x 16 rows), recorded in
-- ragops_work_units. Each process claims a unit with FOR UPDATE SKIP LOCKED
-- under a lease it renews while working, runs the ordinary runner on that
-- key range, and marks the unit done with its counters. A process that dies
-- loses its lease; another one takes the unit over when the lease expires
-- (re-running a range is safe: unchanged content is skipped by hash). The
-- process that sees every unit done finishes the run: it deletes entities
-- gone from the source (full backfills) and records the run's totals.
local account = require "ragops.stages.account"
local cjson = require "cjson"
local runner = require "ragops.runner"
local store_pg = require "ragops.store_pg"

local M = {}

M.DEFAULT_LEASE_S = 60
M.ROWS_PER_UNIT_FACTOR = 16      -- rows per unit = batch.size x this
local UNITS_LOCK_CLASS = 7265678 -- advisory lock class for creating a run's units

local selected_sources = runner.selected_sources

-- Runs fn(step) in one transaction on a pooled connection (store_pg.transaction).
local function in_transaction(pool, fn)
  return pool:with(function(conn) return store_pg.transaction(conn, fn) end)
end

local query = store_pg.query

-- Creates the run's units once; later processes find them. Unit boundaries
-- are every rows_per_unit-th key of the (scoped) source, in key order.
-- Returns the number of units or nil, err.
function M.ensure_units(pool, run_id, plan)
  local pg = require "ragops.pg"
  return in_transaction(pool, function(step)
    step("select pg_advisory_xact_lock($1, $2)", UNITS_LOCK_CLASS, run_id)
    local existing = step("select count(*) as n from ragops_work_units where run_id = $1", run_id)[1].n
    if existing > 0 then return existing end
    local rows_per_unit = plan.batch.size * M.ROWS_PER_UNIT_FACTOR
    local total = 0
    for _, source in ipairs(selected_sources(plan)) do
      local key = "src." .. pg.quote_ident(source.key)
      local inner, params = store_pg.source_query(source, plan.scope, nil, nil,
        ("%s::text as k, row_number() over (order by %s) as rn"):format(key, key))
      params[#params + 1] = rows_per_unit
      local bounds = step(("select k from (%s) as t where rn %% $%d = 0 order by rn"):format(inner, #params),
        unpack(params))
      local after, seq = nil, 0
      local function add(last)
        seq = seq + 1
        step([[insert into ragops_work_units (run_id, entity_type, seq, after_key, last_key)
               values ($1, $2, $3, $4, $5)]], run_id, source.entity_type, seq, after, last)
        after = last
      end
      for _, b in ipairs(bounds) do add(b.k) end
      add(nil) -- the tail: keys after the last boundary
      total = total + seq
    end
    return total
  end)
end

-- Claims a free unit (pending, lease absent or expired). Returns the unit
-- row, false when none is free, or nil, err.
function M.claim(pool, run_id, owner, lease_s)
  local rows, err = query(pool, [[
    update ragops_work_units u
       set lease_owner = $2, lease_expires_at = now() + make_interval(secs => $3),
           attempts = u.attempts + 1
     where u.id = (select id from ragops_work_units
                    where run_id = $1 and status = 'pending'
                      and (lease_expires_at is null or lease_expires_at < now())
                    order by id
                    for update skip locked
                    limit 1)
    returning id, entity_type, seq, after_key, last_key, attempts]], run_id, owner, lease_s)
  if not rows then return nil, err end
  return rows[1] or false
end

-- Extends the lease; false when another process took the unit over.
function M.renew(pool, unit_id, owner, lease_s)
  local rows = query(pool, [[
    update ragops_work_units set lease_expires_at = now() + make_interval(secs => $3)
     where id = $1 and lease_owner = $2 and status = 'pending' returning id]], unit_id, owner, lease_s)
  return rows ~= nil and #rows > 0
end

function M.complete(pool, unit_id, stats_json)
  return query(pool, [[
    update ragops_work_units set status = 'done', done_at = now(), stats = $2::jsonb,
           lease_expires_at = null
     where id = $1 and status = 'pending']], unit_id, stats_json)
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

-- Adds runner stats b into a (counters and per entity type).
function M.add_stats(a, b)
  for _, k in ipairs(runner.COUNTER_KEYS) do a[k] = (a[k] or 0) + (b[k] or 0) end
  a.per_entity_type = a.per_entity_type or {}
  for t, c in pairs(b.per_entity_type or {}) do
    local into = a.per_entity_type[t] or {}
    for _, k in ipairs(runner.COUNTER_KEYS) do into[k] = (into[k] or 0) + (c[k] or 0) end
    a.per_entity_type[t] = into
  end
  return a
end

local function counters_json(st)
  local out = M.add_stats({}, st)
  return cjson.encode(out)
end

-- Runs this process's share of plan p. opts = { pool, run_id, owner, lease_s }.
-- Returns stats (this process's work, with .aborted as the runner does) and,
-- for the process that finished the run, totals (the whole run's counters).
function M.run(p, env, opts)
  local s, log, pool = env.sched, env.log, opts.pool
  local lease_s = opts.lease_s or M.DEFAULT_LEASE_S
  local started = s.now()
  local mine = M.add_stats({}, {})
  local by_type = {}
  for _, source in ipairs(p.sources) do by_type[source.entity_type] = source end

  local stopped, current
  env.stop = function(code, reason)
    stopped = stopped or { code = code, reason = reason }
    if current and current.stop then current.stop(code, reason) end
  end
  local function finish(aborted)
    mine.elapsed_s = (s.now() - started) / 1000
    mine.throughput = mine.elapsed_s > 0 and mine.processed / mine.elapsed_s or 0
    mine.aborted = aborted
    return mine
  end

  local check = account.context(p, env)
  runner.check_unique_keys(check)
  if check.aborted then return finish(check.aborted) end
  local n, err = M.ensure_units(pool, opts.run_id, p)
  if not n then return finish({ code = 4, reason = "falha ao criar as unidades de trabalho: " .. tostring(err) }) end
  log.info("scale-out: execução %d dividida em %d unidade(s) de trabalho; este processo é %s (lease de %d s)",
    opts.run_id, n, opts.owner, lease_s)

  local units_done = 0
  while not stopped do
    local unit, cerr = M.claim(pool, opts.run_id, opts.owner, lease_s)
    if unit == nil then
      return finish({ code = 4, reason = "falha ao reivindicar unidade de trabalho: " .. tostring(cerr) })
    end
    if unit then
      log.info("unidade %s #%d (chaves de %s até %s)%s", unit.entity_type, unit.seq,
        unit.after_key or "início", unit.last_key or "fim",
        unit.attempts > 1 and (" retomada de outro processo, tentativa " .. unit.attempts) or "")
      local working = true
      s.spawn(function()
        -- Short naps, so the heartbeat never keeps the process alive long
        -- after the unit is done; renew every third of the lease.
        local last = s.now()
        while working do
          s.sleep(200)
          if working and s.now() - last >= lease_s * 1000 / 3 then
            last = s.now()
            if not M.renew(pool, unit.id, opts.owner, lease_s) then
              log.warn("a unidade %s #%d mudou de dono (lease expirado); o trabalho refeito é idempotente",
                unit.entity_type, unit.seq)
            end
          end
        end
      end)
      local unit_plan = setmetatable({ sources = { by_type[unit.entity_type] } }, { __index = p })
      current = setmetatable({ range = { after = unit.after_key, upto = unit.last_key } }, { __index = env })
      local st = runner.run(unit_plan, current)
      working = false
      M.add_stats(mine, st)
      if st.aborted then return finish(st.aborted) end
      M.complete(pool, unit.id, counters_json(st))
      units_done = units_done + 1
    else
      local state = M.progress(pool, opts.run_id)
      if state and state.done == state.total then break end
      -- Units leased by others: wait, and take over any whose lease expires.
      s.sleep(math.min(1000, lease_s * 250))
    end
  end
  if stopped then return finish(stopped) end
  log.info("scale-out: este processo concluiu %d unidade(s)", units_done)

  -- Exactly one process finishes the run.
  local won = query(pool, [[update ragops_runs set status = 'finalizing', updated_at = now()
                             where id = $1 and status in ('running', 'interrupted', 'aborted')
                            returning id]], opts.run_id)
  if not won or #won == 0 then return finish(nil) end
  local totals = M.add_stats({}, {})
  local rows = query(pool, "select stats::text as stats from ragops_work_units where run_id = $1 and status = 'done'",
    opts.run_id) or {}
  for _, r in ipairs(rows) do M.add_stats(totals, cjson.decode(r.stats)) end
  local scope = p.scope or {}
  if p.delete_missing and not scope.since and not scope["until"] then
    for _, source in ipairs(selected_sources(p)) do
      local deleted, derr = env.store:delete_orphans(source)
      if not deleted then
        return finish({ code = 4, reason = "falha ao remover documentos órfãos: " .. tostring(derr) }), totals
      end
      if deleted > 0 then
        log.info("%d documento(s) de %s removido(s): entidades ausentes da fonte", deleted, source.entity_type)
      end
      M.add_stats(totals, { deleted = deleted, per_entity_type = { [source.entity_type] = { deleted = deleted } } })
      M.add_stats(mine, { deleted = deleted, per_entity_type = { [source.entity_type] = { deleted = deleted } } })
    end
  end
  return finish(nil), totals
end

return M
