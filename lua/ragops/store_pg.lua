-- ragops.store_pg: the runner's storage backend on PostgreSQL. It reads the
-- plan's sources page by page (keyset pagination, filters pushed down as
-- parameters), looks up stored hashes, writes a unit of work (binary COPY
-- into a staging table + one upsert + stale-chunk delete + checkpoint, in
-- one transaction), records failures and run bookkeeping.
--
-- The same interface is implemented in memory by ragops.testing, so the
-- runner can be tested without a database.
local cjson = require "cjson"
local pg = require "ragops.pg"

local M = {}

local STAGING = "ragops_staging"
local RUN_LOCK_CLASS = 7265677 -- advisory lock class for runs (second key: run id)


-- Builds "select ... from (<source sql>) src where <filters>" with numbered
-- parameters; keys in (after_key, upto_key] when given. Returns sql, params.
function M.source_query(source, scope, after_key, limit, select_list, upto_key)
  local params, where = {}, {}
  local function param(v)
    params[#params + 1] = v
    return "$" .. #params
  end
  local key = "src." .. pg.quote_ident(source.key)
  scope = scope or {}
  if after_key ~= nil then where[#where + 1] = key .. " > " .. param(after_key) end
  if upto_key ~= nil then where[#where + 1] = key .. " <= " .. param(upto_key) end
  if scope.entity_ids and #scope.entity_ids > 0 then
    where[#where + 1] = key .. "::text = any(" .. param(scope.entity_ids) .. "::text[])"
  end
  if scope.since or scope["until"] then
    assert(source.updated_at, "fonte sem updated_at")
    local col = "src." .. pg.quote_ident(source.updated_at)
    if scope.since then where[#where + 1] = col .. " >= " .. param(scope.since) .. "::timestamptz" end
    if scope["until"] then where[#where + 1] = col .. " < " .. param(scope["until"]) .. "::timestamptz" end
  end
  local sql = ("select %s from (%s) as src"):format(select_list or "src.*", source.sql)
  if #where > 0 then sql = sql .. " where " .. table.concat(where, " and ") end
  if limit then sql = sql .. " order by " .. key .. " limit " .. param(limit) end
  return sql, params
end

M.HEARTBEAT_MS = 2000
M.FENCED = "outro processo assumiu esta execução (o dono registrado mudou); este processo para"

-- Keys that appear more than once among the rows the scope selects: keyset
-- pagination would skip rows silently. Returns sql, params.
function M.duplicate_key_query(source, scope)
  local key = "src." .. pg.quote_ident(source.key)
  local inner, params = M.source_query(source, scope, nil, nil, key .. " as k")
  return ("select k::text as k from (%s) as t group by k having count(*) > 1 limit 1"):format(inner), params
end

local function add_late_counters(stats, pruned, refreshed)
  stats.deleted = (stats.deleted or 0) + pruned
  stats.refreshed = (stats.refreshed or 0) + refreshed
end

-- The run's progress, in the unit's transaction: the checkpoint (the
-- committed prefix of the source, with its counters) moves forward, the
-- units it now covers leave ragops_run_units, and a unit committed past the
-- prefix is recorded there, so a resume skips it and counts it once.
-- pruned/refreshed are this unit's, known only now.
function M.record_progress(step, unit, pruned, refreshed)
  local cp = unit.checkpoint
  if not cp then return end
  if cp.includes_unit then add_late_counters(cp.stats, pruned, refreshed) end
  step([[update ragops_runs
            set checkpoint = jsonb_set(checkpoint, array[$2::text], $3::jsonb), updated_at = now()
          where id = $1 and coalesce((checkpoint -> $2::text ->> 'seq')::bigint, 0) < $4]],
       unit.run_id, unit.entity_type, cjson.encode({ seq = cp.seq, after = cp.after, stats = cp.stats }),
       cp.seq)
  if cp.covered and #cp.covered > 0 then
    step([[delete from ragops_run_units where run_id = $1 and entity_type = $2
             and last_key = any($3::text[])]], unit.run_id, unit.entity_type, cp.covered)
  end
  local ahead = unit.ahead
  if ahead then
    add_late_counters(ahead.stats, pruned, refreshed)
    step([[insert into ragops_run_units (run_id, entity_type, first_key, after_key, last_key, stats)
           values ($1, $2, $3, $4, $5, $6::jsonb)
           on conflict (run_id, entity_type, last_key) do update set stats = excluded.stats]],
         unit.run_id, unit.entity_type, ahead.first_key, ahead.after_key, ahead.last_key,
         cjson.encode(ahead.stats))
  end
end

-- Session setup for every pooled connection: the staging table.
function M.prepare_connection(conn)
  local rows, err = conn:query(([[
    create temp table if not exists %s (
      entity_type text, entity_id text, chunk_index int4, content text, content_hash text,
      metadata text, embedding_model text, source_updated_at text, embedding real[])
    on commit delete rows]]):format(STAGING))
  if not rows then return nil, err end
  return true
end


-- Runs one query on a pooled connection: rows, or nil, err, sqlstate.
function M.query(pool, sql, ...)
  local args, n = { ... }, select("#", ...)
  return pool:with(function(conn) return conn:query(sql, unpack(args, 1, n)) end)
end

-- Runs fn(step, conn) between begin and commit on conn; step(sql, ...) runs a
-- query and raises on error. Returns fn's result, or nil, err, sqlstate after
-- a rollback. Errors that are not query errors propagate.
function M.transaction(conn, fn)
  local function step(sql, ...)
    local rows, err, state = conn:query(sql, ...)
    if not rows then error({ err = err, state = state }, 0) end
    return rows
  end
  local ok, res = pcall(function()
    step("begin")
    local result = fn(step, conn)
    step("commit")
    return result
  end)
  if ok then return res end
  if conn:is_ok() then conn:query("rollback") end
  if type(res) == "table" and res.err then return nil, res.err, res.state end
  error(res, 0)
end

-- opts: { pool = ragops.pool, table = "rag_documents", embedding_type = "real[]"|"vector(N)",
--         model = "...", dim = N }
function M.new(opts)
  local store = {}
  local target = require("ragops.sqlname").quote_table(opts.table)
  local cast = opts.embedding_type:match("^vector") and "::vector" or ""
  local pool = opts.pool

  local upsert_sql = ([[
    insert into %s as d (entity_type, entity_id, chunk_index, content, content_hash, metadata,
                         embedding, embedding_model, source_updated_at, indexed_at)
    select entity_type, entity_id, chunk_index, content, content_hash, metadata::jsonb,
           embedding%s, embedding_model, source_updated_at::timestamptz, now()
      from %s
    on conflict (entity_type, entity_id, chunk_index) do update set
      content = excluded.content, content_hash = excluded.content_hash,
      metadata = excluded.metadata, embedding = excluded.embedding,
      embedding_model = excluded.embedding_model,
      source_updated_at = excluded.source_updated_at, indexed_at = now()]])
    :format(target, cast, STAGING)

  local prune_sql = ([[
    delete from %s d using unnest($2::text[], $3::int[]) as x(entity_id, n)
     where d.entity_type = $1 and d.entity_id = x.entity_id and d.chunk_index >= x.n]]):format(target)

  -- Unchanged content whose metadata or source_updated_at moved: updated in
  -- place, without a new embedding (indexed_at stays: nothing was re-embedded).
  local refresh_sql = ([[
    update %s d set metadata = x.metadata::jsonb,
                    source_updated_at = nullif(x.updated_at, '')::timestamptz
      from unnest($2::text[], $3::int[], $4::text[], $5::text[])
           as x(entity_id, chunk_index, metadata, updated_at)
     where d.entity_type = $1 and d.entity_id = x.entity_id and d.chunk_index = x.chunk_index
       and (d.metadata is distinct from x.metadata::jsonb
            or d.source_updated_at is distinct from nullif(x.updated_at, '')::timestamptz)]]):format(target)

  -- Runs fn(conn) on a pooled connection; pg errors come back as nil, err, sqlstate.
  local function with_conn(fn) return pool:with(fn) end

  local function query(sql, ...) return M.query(pool, sql, ...) end

  function store:fetch_page(source, scope, after_key, limit, upto_key)
    local sql, params = M.source_query(source, scope, after_key, limit, nil, upto_key)
    return query(sql, unpack(params))
  end

  -- Returns { [entity_id] = { count = n, hashes = { [chunk_index] = hash } } }.
  function store:existing_hashes(entity_type, entity_ids)
    local rows, err = query(([[
      select entity_id, chunk_index, content_hash from %s
       where entity_type = $1 and entity_id = any($2::text[])]]):format(target),
      entity_type, entity_ids)
    if not rows then return nil, err end
    local out = {}
    for _, r in ipairs(rows) do
      local e = out[r.entity_id]
      if not e then e = { count = 0, hashes = {} }; out[r.entity_id] = e end
      e.count = e.count + 1
      e.hashes[r.chunk_index] = r.content_hash
    end
    return out
  end

  local failure_sql = [[
    insert into ragops_failures as f (run_id, entity_type, entity_id, chunk_index, error_class,
                                      http_status, message, attempts)
    select $1, $2, x.entity_id, nullif(x.chunk_index, -1), x.error_class, nullif(x.http_status, 0),
           x.message, x.attempts
      from unnest($3::text[], $4::int[], $5::text[], $6::int[], $7::text[], $8::int[])
           as x(entity_id, chunk_index, error_class, http_status, message, attempts)
    on conflict (entity_type, entity_id) where resolved_at is null do update set
      run_id = excluded.run_id, chunk_index = excluded.chunk_index,
      error_class = excluded.error_class, http_status = excluded.http_status,
      message = excluded.message, attempts = f.attempts + excluded.attempts,
      last_seen = now()]]

  local resolve_sql = [[
    update ragops_failures set resolved_at = now(), resolved_run_id = $1
     where resolved_at is null and entity_type = $2 and entity_id = any($3::text[])]]

  -- Dead letters of one entity type, as the parallel arrays of failure_sql.
  local function failure_arrays(failures)
    local a = { {}, {}, {}, {}, {}, {} }
    for i, f in ipairs(failures) do
      a[1][i], a[2][i], a[3][i] = f.entity_id, f.chunk_index or -1, f.error_class
      a[4][i], a[5][i], a[6][i] = f.http_status or 0, f.message, f.attempts or 1
    end
    return a
  end

  -- The fence: a run written by one process at a time. The update fails to
  -- match when another process took the run over (see start_run). It also
  -- records the embedding requests spent since the last record, so a kill -9
  -- loses at most those of the units in flight.
  local function check_owner(step, run_id, spent)
    local rows = step([[update ragops_runs set updated_at = now(), requests_spent = requests_spent + $3
                         where id = $1 and owner is not distinct from $2]], run_id, store.owner_token, spent)
    if rows.affected ~= 1 then error({ err = M.FENCED, state = "RGFEN" }, 0) end
  end

  -- Requests spent and not yet recorded, reserved for one transaction; give
  -- them back with unreserve_spent when it rolls back.
  function store:reserve_spent()
    local n = self.spent_fn and (self.spent_fn() - (self.reported_spent or 0)) or 0
    self.reported_spent = (self.reported_spent or 0) + n
    return n
  end
  function store:unreserve_spent(n) self.reported_spent = self.reported_spent - n end

  -- unit = { entity_type, run_id,
  --          parts = { { docs = {...}, batch = vecbatch }, ... },
  --          chunk_counts = { entity_ids = {...}, counts = {...} },
  --          refresh = { entity_ids, chunk_indexes, metadata, updated_at },
  --          failures = { dead letters }, resolved_ids = { entity ids now indexed },
  --          checkpoint = { seq, after, stats, covered = { last keys }, includes_unit },
  --          ahead = nil | { first_key, after_key, last_key, stats } (committed past the prefix) }
  -- Everything in one transaction. Returns { written, pruned, refreshed } or nil, err, sqlstate.
  function store:write_unit(unit)
    local spent = unit.run_id and self:reserve_spent() or 0
    local result, err, state = with_conn(function(conn)
      return M.transaction(conn, function(step)
        if unit.run_id then check_owner(step, unit.run_id, spent) end
        local written = 0
        for _, part in ipairs(unit.parts) do
          if #part.docs > 0 then
            local n, err, state = conn:copy_documents(STAGING, part.docs, part.batch)
            if not n then error({ err = err, state = state }, 0) end
          end
        end
        if #unit.parts > 0 then written = step(upsert_sql).affected end
        local pruned = 0
        if #unit.chunk_counts.entity_ids > 0 then
          pruned = step(prune_sql, unit.entity_type, unit.chunk_counts.entity_ids,
                        unit.chunk_counts.counts).affected
        end
        local refreshed = 0
        local refresh = unit.refresh
        if refresh and #refresh.entity_ids > 0 then
          refreshed = step(refresh_sql, unit.entity_type, refresh.entity_ids, refresh.chunk_indexes,
                           refresh.metadata, refresh.updated_at).affected
        end
        if unit.failures and #unit.failures > 0 then
          step(failure_sql, unit.run_id, unit.entity_type, unpack(failure_arrays(unit.failures)))
        end
        if unit.resolved_ids and #unit.resolved_ids > 0 then
          step(resolve_sql, unit.run_id, unit.entity_type, unit.resolved_ids)
        end
        if unit.run_id then
          M.record_progress(step, unit, pruned, refreshed)
        end
        return { written = written, pruned = pruned, refreshed = refreshed }
      end)
    end)
    if not result then self:unreserve_spent(spent) end
    return result, err, state
  end

  -- Entity ids among `ids` that the source still has, asked by key only
  -- (no date or other filter): the proof of absence before a deletion.
  -- Returns { [id] = true } or nil, err, sqlstate.
  function store:present_keys(source, ids)
    local rows, err, state = query(([[select src.%s::text as k from (%s) as src
                                        where src.%s::text = any($1::text[])]])
      :format(pg.quote_ident(source.key), source.sql, pg.quote_ident(source.key)), ids)
    if not rows then return nil, err, state end
    local present = {}
    for _, r in ipairs(rows) do present[r.k] = true end
    return present
  end

  -- One key that appears more than once among the rows the scope selects,
  -- false when keys are unique, or nil, err, sqlstate.
  function store:duplicate_key(source, scope)
    local sql, params = M.duplicate_key_query(source, scope)
    local rows, err, state = query(sql, unpack(params))
    if not rows then return nil, err, state end
    return rows[1] and rows[1].k or false
  end

  -- Deletes every document of entity_type whose entity is no longer in the
  -- source (full backfill). Returns the number of rows deleted.
  function store:delete_orphans(source)
    local rows, err, state = query(([[
      delete from %s d where d.entity_type = $1
         and not exists (select 1 from (%s) as src where src.%s::text = d.entity_id)]])
      :format(target, source.sql, pg.quote_ident(source.key)), source.entity_type)
    if not rows then return nil, err, state end
    return rows.affected
  end

  -- Deletes every document of the given entities and resolves their open
  -- dead letters, in one transaction. Returns rows deleted.
  function store:delete_entities(run_id, entity_type, entity_ids)
    return with_conn(function(conn)
      return M.transaction(conn, function(step)
        local n = step(("delete from %s where entity_type = $1 and entity_id = any($2::text[])")
          :format(target), entity_type, entity_ids).affected
        step(resolve_sql, run_id, entity_type, entity_ids)
        return n
      end)
    end)
  end

  -- Starts the run record, or resumes the latest unfinished run of the same
  -- plan with the same params (status running/interrupted/aborted/failed: a
  -- crash, a signal, an alert abort or an internal error). Exclusivity has
  -- two parts: a session advisory lock on a connection held until
  -- finish_run (a crashed process loses it with its session, so a re-run
  -- takes over at once), and an owner token in ragops_runs that every unit's
  -- transaction checks (the fence): when a restart of PostgreSQL drops the
  -- lock and another process takes the run, this one's next write fails and
  -- it stops (see keep_run). With shared = true (--scale-out) the lock is
  -- shared, every scale-out process joins the same run (work units have
  -- their own leases) and there is no owner token.
  -- Returns run_id, checkpoint, resumed  or  nil, err, code ("busy"|"db").
  function store:start_run(plan_name, params_json, dry_run, must_resume, shared, owner)
    local try_lock = shared and "pg_try_advisory_lock_shared" or "pg_try_advisory_lock"
    local token = not shared and owner or nil
    local held, conn, claimed = pcall(pool.hold, pool, function(c)
      return M.transaction(c, function(q)
        -- Claiming is serialised per plan+params, so two processes started at
        -- the same instant cannot both create a run.
        q("select pg_advisory_xact_lock($1, hashtext($2))", RUN_LOCK_CLASS - 1, plan_name .. params_json)
        local rows = q([[select id, checkpoint::text as checkpoint from ragops_runs
                          where plan = $1 and params = $2::jsonb and not dry_run
                            and status in ('running', 'interrupted', 'aborted', 'failed')
                          order by id desc limit 1]], plan_name, params_json)
        local run = rows[1]
        if not run and must_resume then
          error({ busy = ("não há execução interrompida do plano %q com estes parâmetros para retomar")
                  :format(plan_name) }, 0)
        end
        if not run then
          run = q([[insert into ragops_runs (plan, params, dry_run) values ($1, $2::jsonb, $3)
                    returning id, checkpoint::text as checkpoint]], plan_name, params_json, dry_run)[1]
        end
        if not q(("select %s($1, $2) as ok"):format(try_lock), RUN_LOCK_CLASS, run.id)[1].ok then
          error({ busy = ("a execução %d do plano %q está em andamento em outro processo%s")
                  :format(run.id, plan_name, shared and " sem --scale-out" or
                    " (para dividir o trabalho entre processos, rode todos com --scale-out)") }, 0)
        end
        q([[update ragops_runs set status = 'running', owner = $2, heartbeat_at = now(),
                   updated_at = now() where id = $1]], run.id, token)
        return { id = run.id, checkpoint = cjson.decode(run.checkpoint), resumed = rows[1] ~= nil }
      end)
    end)
    if not held then
      if type(conn) == "table" and conn.busy then return nil, conn.busy, "busy" end
      error(conn, 0)
    end
    if not conn then return nil, claimed, "db" end
    local id, checkpoint, resumed = claimed.id, claimed.checkpoint, claimed.resumed
    self.lock_conn, self.locked_run, self.lock_shared = conn, id, shared
    self.owner_token = token
    local ahead, aerr = self:ahead_units(id)
    if not ahead then self:finish_run(id, nil); return nil, aerr, "db" end
    for entity_type, list in pairs(ahead) do
      checkpoint[entity_type] = checkpoint[entity_type] or {}
      checkpoint[entity_type].ahead = list
    end
    return id, checkpoint, resumed
  end

  -- Units committed past the checkpoint by an interrupted process, per
  -- entity type: { { first_key, after_key, last_key, stats }, ... }.
  function store:ahead_units(run_id)
    local rows, err = query([[select entity_type, first_key, after_key, last_key, stats::text as stats
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

  -- Keeps the run held while it works: every HEARTBEAT_MS it records the
  -- heartbeat and the embedding requests spent since the last beat
  -- (spent() -> total so far) on the lock connection. When that connection
  -- is lost it takes the lock again on a new one; if another process holds
  -- it, or took the run over (owner changed), it calls on_lost(reason).
  -- opts = { sched, spent = function, on_lost = function(reason) }.
  function store:keep_run(opts)
    local s = opts.sched
    self.keeping, self.spent_fn = true, opts.spent
    local function beat()
      local spent = self:reserve_spent()
      local rows, err = self.lock_conn:query([[
        update ragops_runs set heartbeat_at = now(), requests_spent = requests_spent + $3
         where id = $1 and owner is not distinct from $2 returning id]],
        self.locked_run, self.owner_token, spent)
      if not rows then self:unreserve_spent(spent); return nil, err end
      if #rows == 0 then return nil, "lost" end
      return true
    end
    local function retake()
      pool:discard(self.lock_conn)
      local conn, ok = pool:hold(function(c)
        local r, e, state = c:query(("select %s($1, $2) as ok"):format(
          self.lock_shared and "pg_try_advisory_lock_shared" or "pg_try_advisory_lock"),
          RUN_LOCK_CLASS, self.locked_run)
        if not r then return nil, e, state end
        return r[1].ok
      end)
      if not conn then return nil, "não foi possível reconectar ao PostgreSQL: " .. tostring(ok) end
      self.lock_conn = conn
      if not ok then return nil, "outro processo tomou a execução enquanto a conexão estava perdida" end
      return true
    end
    s.spawn(function()
      while self.keeping do
        s.sleep(M.HEARTBEAT_MS)
        if not self.keeping then break end
        local ok, err = beat()
        if not self.keeping then break end
        if not ok and err ~= "lost" then
          ok, err = retake()
          if ok then ok, err = beat() end
        end
        if not ok then
          self.keeping = false
          opts.on_lost(err == "lost" and "outro processo assumiu esta execução (o dono registrado mudou)"
            or tostring(err))
        end
      end
    end)
  end

  -- Records the final status and report (status nil: only release the lock,
  -- for a scale-out process that leaves the finishing to another), with the
  -- requests spent and not yet recorded.
  -- The report gets `requests_spent`: every embedding request of every
  -- process and attempt of the run (a resumed run includes the ones before
  -- the interruption). Returns that total, or nil, err.
  function store:finish_run(run_id, status, report_json)
    self.keeping = false
    local since_beat = self:reserve_spent()
    local rows, err = query([[
      update ragops_runs set status = coalesce($2, status),
             requests_spent = requests_spent + $4,
             report = case when $3::jsonb is null then report
                           else $3::jsonb || jsonb_build_object('requests_spent', requests_spent + $4) end,
             finished_at = case when $2::text is null then finished_at else now() end,
             owner = case when $2::text is null then owner else null end, updated_at = now()
       where id = $1 and owner is not distinct from $5 returning requests_spent]],
      run_id, status, report_json, since_beat, self.owner_token)
    if rows and status and status:match("^done") then
      query("delete from ragops_run_units where run_id = $1", run_id)
    end
    if self.lock_conn then
      -- Closing the session releases its advisory lock (and ends a heartbeat
      -- that may be using the connection right now).
      pool:discard(self.lock_conn)
      self.lock_conn = nil
    end
    if not rows then return nil, err end
    -- No row: another process took the run over (fenced); nothing recorded.
    return rows[1] and rows[1].requests_spent or nil
  end

  return store
end

return M
