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
  if type(res) == "table" then return nil, res.err, res.state end
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

  -- unit = { entity_type, parts = { { docs = {...}, batch = vecbatch }, ... },
  --          chunk_counts = { entity_ids = {...}, counts = {...} },
  --          run_id, checkpoint = { seq = n, after = key } }
  -- Returns { written = n, pruned = n } or nil, err, sqlstate.
  function store:write_unit(unit)
    return with_conn(function(conn)
      return M.transaction(conn, function(step)
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
        if unit.run_id and unit.checkpoint then
          step([[update ragops_runs
                    set checkpoint = jsonb_set(checkpoint, array[$2::text], $3::jsonb),
                        updated_at = now()
                  where id = $1
                    and coalesce((checkpoint -> $2::text ->> 'seq')::bigint, 0) < $4]],
               unit.run_id, unit.entity_type, cjson.encode(unit.checkpoint), unit.checkpoint.seq)
        end
        return { written = written, pruned = pruned, refreshed = refreshed }
      end)
    end)
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

  -- Deletes every document of the given entities. Returns rows deleted.
  function store:delete_entities(entity_type, entity_ids)
    local rows, err, state = query(([[delete from %s where entity_type = $1
                                        and entity_id = any($2::text[])]]):format(target),
      entity_type, entity_ids)
    if not rows then return nil, err, state end
    return rows.affected
  end

  -- failures: array of { entity_type, entity_id, chunk_index, error_class, http_status, message, attempts }
  function store:record_failures(run_id, failures)
    for _, f in ipairs(failures) do
      local rows, err = query([[
        insert into ragops_failures as f (run_id, entity_type, entity_id, chunk_index, error_class,
                                          http_status, message, attempts)
        values ($1, $2, $3, $4, $5, $6, $7, $8)
        on conflict (entity_type, entity_id) where resolved_at is null do update set
          run_id = excluded.run_id, chunk_index = excluded.chunk_index,
          error_class = excluded.error_class, http_status = excluded.http_status,
          message = excluded.message, attempts = f.attempts + excluded.attempts,
          last_seen = now()]],
        run_id, f.entity_type, f.entity_id, f.chunk_index, f.error_class, f.http_status,
        f.message, f.attempts or 1)
      if not rows then return nil, err end
    end
    return true
  end

  -- Marks open failures of these entities as resolved by run_id.
  function store:resolve_failures(run_id, entity_type, entity_ids)
    local rows, err = query([[
      update ragops_failures set resolved_at = now(), resolved_run_id = $1
       where resolved_at is null and entity_type = $2 and entity_id = any($3::text[])]],
      run_id, entity_type, entity_ids)
    if not rows then return nil, err end
    return rows.affected
  end

  -- Starts the run record, or resumes the latest unfinished run of the same
  -- plan with the same params (status running/interrupted/aborted: a crash,
  -- a signal or an alert abort). The run is held with a session advisory
  -- lock on a dedicated connection until finish_run, so two processes never
  -- work on the same run; a crashed process loses its lock with its session.
  -- With shared = true (--scale-out) the lock is shared: every scale-out
  -- process joins the same run, and none joins a run held exclusively.
  -- Returns run_id, checkpoint, resumed  or  nil, err, code ("busy"|"db").
  function store:start_run(plan_name, params_json, dry_run, must_resume, shared)
    local try_lock = shared and "pg_try_advisory_lock_shared" or "pg_try_advisory_lock"
    local take_lock = shared and "pg_advisory_lock_shared" or "pg_advisory_lock"
    local conn, err = pool:acquire()
    if not conn then return nil, err, "db" end
    local function q(sql, ...)
      local rows, qerr = conn:query(sql, ...)
      if not rows then error(qerr, 0) end
      return rows
    end
    local ok, id, checkpoint, resumed = pcall(function()
      -- Claiming is serialised per plan+params, so two processes started at
      -- the same instant cannot both create a run.
      q("begin")
      q("select pg_advisory_xact_lock($1, hashtext($2))", RUN_LOCK_CLASS - 1, plan_name .. params_json)
      local rows = q([[select id, checkpoint::text as checkpoint from ragops_runs
                        where plan = $1 and params = $2::jsonb and not dry_run
                          and status in ('running', 'interrupted', 'aborted')
                        order by id desc limit 1]], plan_name, params_json)
      if rows[1] then
        local locked = q(("select %s($1, $2) as ok"):format(try_lock), RUN_LOCK_CLASS, rows[1].id)[1].ok
        if not locked then
          error({ busy = ("a execução %d do plano %q está em andamento em outro processo%s")
                  :format(rows[1].id, plan_name, shared and " sem --scale-out" or
                    " (para dividir o trabalho entre processos, rode todos com --scale-out)") }, 0)
        end
        q("update ragops_runs set status = 'running', updated_at = now() where id = $1", rows[1].id)
        q("commit")
        return rows[1].id, cjson.decode(rows[1].checkpoint), true
      end
      if must_resume then
        error({ busy = ("não há execução interrompida do plano %q com estes parâmetros para retomar")
                :format(plan_name) }, 0)
      end
      local new = q([[insert into ragops_runs (plan, params, dry_run) values ($1, $2::jsonb, $3)
                      returning id]], plan_name, params_json, dry_run)[1].id
      q(("select %s($1, $2)"):format(take_lock), RUN_LOCK_CLASS, new)
      q("commit")
      return new, {}, false
    end)
    if not ok then
      if conn:is_ok() then conn:query("rollback") end
      pool:release(conn)
      if type(id) == "table" then return nil, id.busy, "busy" end
      return nil, id, "db"
    end
    self.lock_conn, self.locked_run, self.lock_shared = conn, id, shared
    return id, checkpoint, resumed
  end

  -- Records the final status and report (status nil: only release the lock,
  -- for a scale-out process that leaves the finishing to another).
  function store:finish_run(run_id, status, report_json)
    local rows, err = true, nil
    if status then
      rows, err = query([[update ragops_runs set status = $2, report = $3::jsonb,
                       finished_at = now(), updated_at = now() where id = $1]],
        run_id, status, report_json)
    end
    if self.lock_conn then
      self.lock_conn:query(("select %s($1, $2)"):format(self.lock_shared and "pg_advisory_unlock_shared"
        or "pg_advisory_unlock"), RUN_LOCK_CLASS, self.locked_run)
      pool:release(self.lock_conn)
      self.lock_conn = nil
    end
    return rows, err
  end

  return store
end

return M
