-- ragops.store.runs: the run record on PostgreSQL, as methods of the
-- store: M.Store is the run-record half of ragops.store.pg's Store (its
-- metatable falls back to it; the mixin ragops.store.contract declares). It claims or resumes a
-- run (ragops_runs), keeps it held while the run works (advisory lock +
-- owner token + heartbeat), counts the embedding requests and the tokens
-- spent, reads back what the run committed and its open dead letters, and
-- records how the run ended. Exclusivity has two parts: a session advisory
-- lock on a connection held until finish_run (a crashed process loses it
-- with its session, so a re-run takes over at once), and an owner token in
-- ragops_runs that every unit's transaction checks (the fence): when a
-- restart of PostgreSQL drops the lock and another process takes the run,
-- this one's next write fails and it stops. With shared = true
-- (--scale-out) the lock is shared, every scale-out process joins the same
-- run (work units have their own leases) and there is no owner token.
local cjson = require "cjson"

local M = {}

M.RUN_LOCK_CLASS = 7265677 -- advisory lock class for runs (second key: run id)
M.HEARTBEAT_MS = 2000
M.FENCED = "outro processo assumiu esta execução (o dono registrado mudou); este processo para"

-- The run-record half of the PostgreSQL store (ragops.store.pg's Store
-- looks methods up here after its own).
local Store = {}
M.Store = Store

-- ragops.store.pg, required when used (it requires this module).
local function store_pg() return require "ragops.store.pg" end

-- Requests spent and not yet recorded, reserved for one transaction; give
-- them back with unreserve_spent when it rolls back.
function Store:reserve_spent()
  local n = self.spent_fn and (self.spent_fn() - (self.reported_spent or 0)) or 0
  self.reported_spent = (self.reported_spent or 0) + n
  return n
end
function Store:unreserve_spent(n) self.reported_spent = self.reported_spent - n end

-- The fence, inside a unit's transaction: fails to match when another
-- process took the run over. It also records the requests spent since the
-- last record, so a kill -9 loses at most those of the units in flight.
-- (A scale-out work unit's store overrides it with the unit's own fence,
-- which also records the unit's part: ragops.run.workunits; unit, pruned and
-- refreshed are for that one.)
function Store:check_owner(step, run_id, spent)
  local rows = step([[update ragops_runs set updated_at = now(), requests_spent = requests_spent + $3
                       where id = $1 and owner is not distinct from $2]], run_id, self.owner_token, spent)
  if rows.affected ~= 1 then error({ err = M.FENCED, state = "RGFEN" }, 0) end
end

-- The statement that tries the run's lock ($1 class, $2 run id): `ok`.
local function lock_sql(shared)
  return ("select %s($1, $2) as ok"):format(shared and "pg_try_advisory_lock_shared" or "pg_try_advisory_lock")
end

-- Sessions other than this one holding the run's lock (its live processes:
-- a crashed process loses the lock with its session).
local function live_holders(q, run_id)
  return q([[select count(*)::int as n from pg_locks
              where locktype = 'advisory' and granted and pid <> pg_backend_pid()
                and database = (select oid from pg_database where datname = current_database())
                and classid = $1::bigint::oid and objid = $2::bigint::oid and objsubid = 2]],
    M.RUN_LOCK_CLASS, run_id)[1].n
end

-- The short form of a plan fingerprint, for people.
function M.short_fingerprint(fp)
  return fp and tostring(fp):sub(1, 12) or "desconhecida"
end

-- With --scale-out, before anything is written: --join (scale.join) needs a
-- run in progress (live processes) to help; a run in progress with another
-- plan fingerprint is refused. Raises { nothing } or { mismatch }.
local function check_scale(q, run, plan_name, scale)
  local others = run and live_holders(q, run.id) or 0
  if scale.join and others == 0 then
    error({ nothing = ("nada a fazer: nenhuma execução --scale-out em andamento do plano %q com estes parâmetros "
      .. "(--join só ajuda uma execução em andamento, nunca começa uma)"):format(plan_name) }, 0)
  end
  local theirs = run and run.plan_fingerprint
  if others > 0 and theirs and scale.fingerprint and theirs ~= scale.fingerprint then
    error({ mismatch = ("a execução %d do plano %q está em andamento com outra versão do plano (impressão digital "
      .. "%s; a deste processo é %s: o texto do plano ou dos que ele importa, o chunking, o modelo, a dimensão ou "
      .. "os parâmetros diferem). Processos com versões diferentes não dividem uma execução: implante a mesma "
      .. "versão do plano e da configuração em todos os processos, ou espere a execução terminar (ragops status "
      .. "mostra os processos dela). Nada foi gravado"):format(run.id, plan_name, M.short_fingerprint(theirs),
        M.short_fingerprint(scale.fingerprint)) }, 0)
  end
  return others
end

-- In the claim transaction: the run to resume, or a new one, locked.
-- scale = { fingerprint, join } (fingerprint: the plan's, recorded on the
-- run; checked against a run in progress with --scale-out).
local function claim(q, plan_name, params_json, dry_run, must_resume, shared, token, scale)
  -- Claiming is serialised per plan+params, so two processes started at
  -- the same instant cannot both create a run.
  q("select pg_advisory_xact_lock($1, hashtext($2))", M.RUN_LOCK_CLASS - 1, plan_name .. params_json)
  local rows = q([[select id, checkpoint::text as checkpoint, plan_fingerprint,
                          exists (select 1 from ragops_work_units w where w.run_id = r.id) as has_units
                     from ragops_runs r
                    where plan = $1 and params = $2::jsonb and not dry_run
                      and status in ('running', 'interrupted', 'aborted', 'failed', 'waiting')
                    order by id desc limit 1]], plan_name, params_json)
  local run = rows[1]
  local others = shared and check_scale(q, run, plan_name, scale) or 0
  if not run and must_resume then
    error({ busy = ("não há execução interrompida do plano %q com estes parâmetros para retomar")
            :format(plan_name) }, 0)
  end
  if not run then
    run = q([[insert into ragops_runs (plan, params, dry_run) values ($1, $2::jsonb, $3)
              returning id, checkpoint::text as checkpoint]], plan_name, params_json, dry_run)[1]
  end
  if not q(lock_sql(shared), M.RUN_LOCK_CLASS, run.id)[1].ok then
    error({ busy = ("a execução %d do plano %q está em andamento em outro processo%s")
            :format(run.id, plan_name, shared and " sem --scale-out" or
              " (para dividir o trabalho entre processos, rode todos com --scale-out)") }, 0)
  end
  -- The first process of the run (no other alive) records its plan's
  -- fingerprint; the ones joining it have the same (check_scale).
  q([[update ragops_runs set status = 'running', owner = $2, heartbeat_at = now(), updated_at = now(),
             plan_fingerprint = case when $4 then coalesce(plan_fingerprint, $3) else $3 end
       where id = $1]], run.id, token, scale.fingerprint, others > 0)
  return { id = run.id, checkpoint = cjson.decode(run.checkpoint), resumed = rows[1] ~= nil,
           has_units = run.has_units == true }
end

-- Starts the run record, or resumes the latest unfinished run of the same
-- plan with the same params (status running/interrupted/aborted/failed: a
-- crash, a signal, an alert abort or an internal error), and holds it.
-- scale = { fingerprint = the plan's (ragops.run fingerprint_seed; nil:
-- unknown), join = true (--join) }, optional. Returns run_id, checkpoint,
-- resumed, has_units (the run was split into work units by --scale-out: it
-- goes on through them)  or  nil, err, code ("busy"; "mismatch": a run in
-- progress with another plan fingerprint; "nothing": --join and no run in
-- progress; "db"). Refusals write nothing.
function Store:start_run(plan_name, params_json, dry_run, must_resume, shared, owner, scale)
  local token = not shared and owner or nil
  local held, conn, claimed = pcall(self.pool.hold, self.pool, function(c)
    return store_pg().transaction(c, function(q)
      return claim(q, plan_name, params_json, dry_run, must_resume, shared, token, scale or {})
    end)
  end)
  if not held then
    if type(conn) == "table" then
      for _, kind in ipairs({ "busy", "mismatch", "nothing" }) do
        if conn[kind] then return nil, conn[kind], kind end
      end
    end
    error(conn, 0)
  end
  if not conn then return nil, claimed, "db" end
  self.lock_conn, self.locked_run, self.lock_shared = conn, claimed.id, shared
  self.owner_token = token
  local checkpoint = claimed.checkpoint
  local ahead, aerr = self:ahead_units(claimed.id)
  if not ahead then self:finish_run(claimed.id, nil); return nil, aerr, "db" end
  for entity_type, list in pairs(ahead) do
    checkpoint[entity_type] = checkpoint[entity_type] or {}
    checkpoint[entity_type].ahead = list
  end
  return claimed.id, checkpoint, claimed.resumed, claimed.has_units
end

-- Units committed past the checkpoint by an interrupted process, per
-- entity type: { { first_key, after_key, last_key, stats }, ... }.
function Store:ahead_units(run_id)
  local rows, err = self:query([[select entity_type, first_key, after_key, last_key, stats::text as stats
                                   from ragops_run_units where run_id = $1]], run_id)
  if not rows then return nil, err end
  local out = {}
  for _, r in ipairs(rows) do
    local list = out[r.entity_type] or {}
    list[#list + 1] = { first_key = r.first_key, after_key = r.after_key, last_key = r.last_key,
                        stats = cjson.decode(r.stats) }
    out[r.entity_type] = list
  end
  return out
end

local HEARTBEAT_SQL = [[
  update ragops_runs set heartbeat_at = now(), requests_spent = requests_spent + $3
   where id = $1 and owner is not distinct from $2 returning id]]

-- The heartbeat statement on conn: true, "lost" (the owner changed) or
-- nil, err, sqlstate.
function Store:heartbeat_on(conn, spent)
  local rows, err, state = conn:query(HEARTBEAT_SQL, self.locked_run, self.owner_token, spent)
  if not rows then return nil, err, state end
  return #rows > 0 or "lost"
end

-- The lock's session was lost: takes the lock again on a new session and
-- beats there, both under the database retry policy (a session killed
-- between the two is retried whole). Returns true, "lost", "taken"
-- (another process holds the lock) or nil, err.
function Store:beat_on_new_session(spent)
  self.pool:discard(self.lock_conn)
  self.lock_conn = nil
  local conn, answer, err = self.pool:hold(function(c)
    local r, e, state = c:query(lock_sql(self.lock_shared), M.RUN_LOCK_CLASS, self.locked_run)
    if not r then return nil, e, state end
    if not r[1].ok then return "taken" end
    return self:heartbeat_on(c, spent)
  end)
  if not conn then return nil, answer end
  -- finish_run ran while this waited: the new session must not outlive it.
  if not self.keeping then self.pool:discard(conn); return "taken" end
  self.lock_conn = conn
  return answer, err
end

-- One heartbeat, with the requests spent since the last one: true, or
-- nil, reason (the run is lost to this process).
function Store:beat()
  local spent = self:reserve_spent()
  local answer, err = self:heartbeat_on(self.lock_conn, spent)
  if answer == nil then answer, err = self:beat_on_new_session(spent) end
  if answer == true then return true end
  self:unreserve_spent(spent)
  if answer == "lost" then return nil, "outro processo assumiu esta execução (o dono registrado mudou)" end
  if answer == "taken" then return nil, "outro processo tomou a execução enquanto a conexão estava perdida" end
  return nil, "não foi possível reconectar ao PostgreSQL: " .. tostring(err)
end

-- Keeps the run held while it works: every HEARTBEAT_MS a heartbeat (with
-- the requests spent since the last one, spent() -> total so far); when the
-- lock's session is lost, the lock is taken again on a new one; if another
-- process holds it, took the run over, or PostgreSQL stays unreachable past
-- the retry policy, on_lost(reason) is called.
-- opts = { sched, spent = function, on_lost = function(reason) }.
function Store:keep_run(opts)
  local s = opts.sched
  self.keeping, self.spent_fn = true, opts.spent
  s.spawn(function()
    while self.keeping do
      s.sleep(M.HEARTBEAT_MS)
      if not self.keeping then break end
      local ok, reason = self:beat()
      if not self.keeping then break end
      if not ok then
        self.keeping = false
        opts.on_lost(reason)
      end
    end
  end)
end

-- Records the final status and report (status nil: only release the lock,
-- for a scale-out process that leaves the finishing to another), with the
-- requests spent and not yet recorded (plus `extra_requests`: the ones the
-- work units recorded, given by the scale-out process that finishes the
-- run). The report gets `requests_spent`: every embedding request of every
-- process and attempt of the run (a resumed run includes the ones before
-- the interruption). Returns that total, or nil (fenced: another process
-- owns the run; nothing recorded), or nil, err.
function Store:finish_run(run_id, status, report_json, extra_requests)
  self.keeping = false
  local rows, err = self:query([[
    update ragops_runs set status = coalesce($2, status),
           requests_spent = requests_spent + $4,
           report = case when $3::jsonb is null then report
                         else $3::jsonb || jsonb_build_object('requests_spent', requests_spent + $4) end,
           finished_at = case when $2::text is null then finished_at else now() end,
           owner = case when $2::text is null then owner else null end, updated_at = now()
     where id = $1 and owner is not distinct from $5 returning requests_spent]],
    run_id, status, report_json, self:reserve_spent() + (extra_requests or 0), self.owner_token)
  if rows and status and status:match("^done") then
    self:query("delete from ragops_run_units where run_id = $1", run_id)
  end
  if self.lock_conn then
    -- Closing the session releases its advisory lock (and ends a heartbeat
    -- that may be using the connection right now).
    self.pool:discard(self.lock_conn)
    self.lock_conn = nil
  end
  if not rows then return nil, err end
  return rows[1] and rows[1].requests_spent or nil
end

-- Tokens the provider billed to the run, by every process and attempt:
-- the units committed and the batches embedded but dropped
-- (ragops_token_usage), and, in work units, what was billed and not yet
-- committed plus what a dead process had in flight (counted at its upper
-- bound: the provider may have billed it). Returns tokens or nil, err.
function Store:run_billed_tokens(run_id)
  local rows, err = self:query([[
    select (select coalesce(sum(tokens), 0) from ragops_token_usage where run_id = $1)::float8
         + (select coalesce(sum(coalesce((stats ->> 'billed')::bigint, 0)
                                 + coalesce((stats ->> 'ghost')::bigint, 0)), 0)
              from ragops_work_units where run_id = $1)::float8 as tokens]], run_id)
  if not rows then return nil, err end
  return tonumber(rows[1].tokens)
end

-- What the provider billed for a batch embedded and then dropped (the
-- run stopped before its unit was written): recorded with the run's usage
-- (documents 0; chunks = the inputs embedded), so the spend of this run,
-- of its later processes and the calibration count it. usage = { model,
-- chunks, bytes, chars, tokens }. Returns true or nil, err.
function Store:record_dropped(run_id, entity_type, usage)
  local rows, err = self:query(store_pg().USAGE_SQL, run_id, usage.model, entity_type, 0, usage.chunks,
    usage.bytes, usage.chars, usage.tokens)
  if not rows then return nil, err end
  return true
end

-- Open dead letters of the run (the exit code's truth: 1 iff any).
-- Returns the count or nil, err.
function Store:open_failures(run_id)
  local rows, err = self:query([[select count(*)::int as n from ragops_failures
                                  where run_id = $1 and resolved_at is null]], run_id)
  if not rows then return nil, err end
  return rows[1].n
end

local add_into = require("ragops.util.tables").add_numbers_into

local COMMITTED_SQL = [[
  select checkpoint::text as checkpoint,
         (select json_agg(json_build_array(u.entity_type, u.stats))
            from ragops_run_units u where u.run_id = r.id)::text as units,
         (select json_agg(json_build_array(u.entity_type, u.stats))
            from ragops_batch_units u join ragops_batches b on b.id = u.batch
           where b.run_id = r.id and u.stats is not null)::text as batch_units
    from ragops_runs r where r.id = $1]]

-- What the run committed, per entity type: the checkpoint's prefix and the
-- units committed past it. settle: first lock the run's row (after a
-- signal): a unit transaction whose commit is still running (its client
-- gave up on it) holds that row to the end, so what it wrote is counted
-- once it is in. Returns { [entity_type] = counters } or nil, err.
function Store:committed_totals(run_id, settle)
  local run, err
  if settle then
    run, err = self:transaction(function(step)
      step("select 1 from ragops_runs where id = $1 for update", run_id)
      return step(COMMITTED_SQL, run_id)[1]
    end)
  else
    local rows
    rows, err = self:query(COMMITTED_SQL, run_id)
    run = rows and rows[1]
  end
  if not run then return nil, err end
  local per = {}
  for entity_type, cp in pairs(cjson.decode(run.checkpoint)) do
    if type(cp) == "table" then add_into(per, entity_type, cp.stats) end
  end
  for _, u in ipairs(run.units and cjson.decode(run.units) or {}) do add_into(per, u[1], u[2]) end
  -- units of the Batch API mode, written when their batch was collected
  for _, u in ipairs(run.batch_units and cjson.decode(run.batch_units) or {}) do add_into(per, u[1], u[2]) end
  return per
end

return M
