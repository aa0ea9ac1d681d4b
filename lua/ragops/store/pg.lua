-- ragops.store.pg: the runner's storage backend on PostgreSQL. It reads the
-- plan's sources page by page (keyset pagination, filters pushed down as
-- parameters, with the stored hashes of each page in the same query), writes
-- a unit of work (binary COPY into a staging table + one upsert, or straight
-- into the target when every key is new; stale-chunk delete; checkpoint; in
-- one transaction), records failures and run bookkeeping.
--
-- A Store of ragops.store.contract (as are ragops.testing's fake, in memory,
-- and the dry run's), so the runner can be tested without a database.
local cjson = require "cjson"
local contract = require "ragops.store.contract"
local key_text = require("ragops.util.keys").text
local pg = require "ragops.pg"
local scrub = require "ragops.util.scrub"
local sqlname = require "ragops.util.sqlname"
local store_runs = require "ragops.store.runs"
local batches = require "ragops.store.batches"
local sync_tables = require "ragops.store.sync_tables"

local M = {}

local STAGING = "ragops_staging"
local UNIQUE_VIOLATION = "23505"


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


-- Columns the page query adds to each source row (removed before the row
-- reaches the plan): what the target holds for the row's entity.
local STORED_COL, OPEN_FAILURE_COL = "__ragops_stored", "__ragops_open_failure"
local UPDATED_US_COL = "__ragops_updated_us"
-- Set by conn:query_page (engine/pg_rows.h): the row's fingerprint.
local FP_FIELD = "__ragops_fp"
-- pg_type oid of timestamptz (conn:query_page's rows.types).
local TIMESTAMPTZ_OID = 1184

-- The page of M.source_query with, per row, whether its entity has an open
-- dead letter and, as the options say:
--   target = the quoted target: the entity's stored chunks as one JSON array
--     of [chunk_index, content_hash, metadata, same_updated_at]
--     (same_updated_at: the stored source_updated_at equals the row's), the
--     re-run's read and decide in one round trip; without it, the plain page
--     (a re-run with fingerprints, see Store:fetch_page_existing);
--   with_updated_us = the row's updated_at in microseconds since the Unix epoch (null
--     when null or infinite), for a COPY straight into the target (numeric
--     arithmetic in PostgreSQL: ~1.3 µs a row, so only where it can be used);
--   updated_at_is_timestamptz = the source's updated_at column is a timestamptz, used as it is
--     (otherwise through its text, which also turns '' into null: ~1 µs a row).
-- Returns sql, params.
function M.page_query(source, scope, after_key, limit, upto_key, opts)
  local inner, params = M.source_query(source, scope, after_key, limit, nil, upto_key)
  params[#params + 1] = source.entity_type
  local entity_type, key = "$" .. #params, "p." .. pg.quote_ident(source.key)
  local updated = "null::timestamptz"
  if source.updated_at and opts.updated_at_is_timestamptz then
    updated = "p." .. pg.quote_ident(source.updated_at)
  elseif source.updated_at then
    updated = ("nullif(p.%s::text, '')::timestamptz"):format(pg.quote_ident(source.updated_at))
  end
  local extra, join = {}, ""
  if opts.target then
    extra[#extra + 1] = ", s.stored as " .. STORED_COL
    join = ([[
      left join lateral (
        select json_agg(json_build_array(d.chunk_index, d.content_hash, d.metadata,
                                         d.source_updated_at is not distinct from %s))::text as stored
          from %s d where d.entity_type = %s and d.entity_id = %s::text) as s on true]])
      :format(updated, opts.target, entity_type, key)
  end
  if opts.with_updated_us then
    extra[#extra + 1] = (", case when isfinite(%s) then (extract(epoch from %s) * 1000000)::int8 end as %s")
      :format(updated, updated, UPDATED_US_COL)
  end
  return ([[
    select p.*, exists (select 1 from ragops_failures f where f.resolved_at is null
                           and f.entity_type = %s and f.entity_id = %s::text) as %s%s
      from (%s) as p %s
     order by %s]]):format(entity_type, key, OPEN_FAILURE_COL, table.concat(extra), inner, join, key), params
end

-- One pass over the keys the scope selects: how many rows, and one key that
-- appears more than once (keyset pagination would skip rows silently).
-- Returns sql, params.
function M.key_census_query(source, scope)
  local key = "src." .. pg.quote_ident(source.key)
  local inner, params = M.source_query(source, scope, nil, nil, key .. " as k")
  return ([[select coalesce(sum(n), 0)::bigint as rows, min(k::text) filter (where n > 1) as duplicate
              from (select k, count(*) as n from (%s) as t group by k) as g]]):format(inner), params
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
-- The checkpoint's update is also the owner's fence (see store_runs
-- check_owner): one statement on the run's row, which matches only while
-- this process owns the run, and records the requests spent.
-- Tokens billed against bytes and characters sent, per run, model and
-- entity type (the dry-run's calibration): one unit's usage, from `rows` (a
-- VALUES or SELECT of the eight columns), added to what the run has.
local function usage_upsert(rows)
  return ([[
  insert into ragops_token_usage as u (run_id, model, entity_type, documents, chunks, bytes, chars, tokens)
  %s
  on conflict (run_id, model, entity_type) do update set
    documents = u.documents + excluded.documents, chunks = u.chunks + excluded.chunks, bytes = u.bytes + excluded.bytes,
    chars = u.chars + excluded.chars, tokens = u.tokens + excluded.tokens, updated_at = now()]]):format(rows)
end

-- A unit's usage on its own (a run without checkpoint: a work unit).
M.USAGE_SQL = usage_upsert("values ($1, $2, $3, $4, $5, $6, $7, $8)")

-- One statement (one round trip, one plan), the last of the unit's
-- transaction: the run's row, the covered units deleted, the unit ahead
-- recorded and the tokens billed added up, as data-modifying CTEs. The
-- run's row and its usage row are the same for every unit: touched only
-- here, their locks are held for this statement and the commit (the usage
-- row, written earlier in the transaction, made the units wait ~15 ms
-- each for one another).
M.PROGRESS_SQL = [[
  with progress as (
    update ragops_runs
       set checkpoint = case when coalesce((checkpoint -> $2::text ->> 'seq')::bigint, 0) < $4
                             then jsonb_set(checkpoint, array[$2::text], $3::jsonb) else checkpoint end,
           requests_spent = requests_spent + $6, updated_at = now()
     where id = $1 and owner is not distinct from $5
    returning id),
  covered as (
    delete from ragops_run_units
     where run_id = $1 and entity_type = $2::text and last_key = any($7::text[])),
  ahead as (
    insert into ragops_run_units (run_id, entity_type, first_key, after_key, last_key, stats)
    select $1, $2::text, $8::text, $9::text, $10::text, $11::jsonb where $10::text is not null
    on conflict (run_id, entity_type, last_key) do update set stats = excluded.stats),
  usage as (]] .. usage_upsert([[select $1, $12::text, $2::text, $13::bigint, $14::bigint, $15::bigint,
                                        $16::bigint, $17::bigint where $12::text is not null]]) .. [[)
  select count(*)::int as owned from progress]]

function M.record_progress(step, unit, pruned, refreshed, owner_token, spent)
  local cp = unit.checkpoint
  if cp.includes_unit then add_late_counters(cp.stats, pruned, refreshed) end
  local covered = cp.covered and #cp.covered > 0 and cp.covered or nil
  local ahead = unit.ahead
  if ahead then add_late_counters(ahead.stats, pruned, refreshed) end
  local u = unit.usage
  local rows = step(M.PROGRESS_SQL,
    unit.run_id, unit.entity_type, cjson.encode({ seq = cp.seq, after = cp.after, stats = cp.stats }),
    cp.seq, owner_token, spent, covered,
    ahead and ahead.first_key, ahead and ahead.after_key, ahead and ahead.last_key,
    ahead and cjson.encode(ahead.stats),
    u and u.model, u and u.documents, u and u.chunks, u and u.bytes, u and u.chars, u and u.tokens)
  if rows[1].owned ~= 1 then error({ err = store_runs.FENCED, state = "RGFEN" }, 0) end
end

-- Staging tables, one per embedding format (conn:copy_documents's format):
-- the vectors arrive in the target type's own binary input and are stored
-- uncompressed (real[] would otherwise go through pglz on every row), so
-- the upsert copies them without a cast.
local STAGING_BY_FORMAT = {
  ["real[]"] = { table = STAGING, type = "real[]" },
  vector = { table = STAGING .. "_vector", type = "vector" },
  halfvec = { table = STAGING .. "_halfvec", type = "halfvec" },
}

-- The COPY format of an embedding column type ("vector(1536)" -> "vector").
function M.embedding_format(coltype)
  local base = tostring(coltype):match("^[%w_]+")
  if base == "vector" or base == "halfvec" then return base end
  return "real[]"
end

local function create_staging(conn, staging)
  local columns = {}
  for i, c in ipairs(contract.DOCUMENT_COLUMNS) do columns[i] = c.name .. " " .. (c.staging or staging.type) end
  local rows, err, state = conn:query(("create temp table if not exists %s (%s) on commit delete rows")
    :format(staging.table, table.concat(columns, ", ")))
  -- The SQLSTATE goes on: without it a session terminated before the
  -- unit's first write through staging was not retried (exit 4).
  if not rows then return nil, err, state end
  return conn:query(("alter table %s alter column embedding set storage external"):format(staging.table))
end

-- Sessions (connections) that have the staging table of a format:
-- conn -> { [format] = true }. Made on a session's first write through
-- staging, not when it opens: a re-run or a cold backfill never needs one.
local staged = setmetatable({}, { __mode = "k" })

-- The staging table of `format` on conn, created once per session (outside
-- any transaction, so a rollback cannot undo it). Returns true or nil, err.
local function ensure_staging(conn, format)
  local have = staged[conn]
  if have and have[format] then return true end
  local ok, err, state = create_staging(conn, STAGING_BY_FORMAT[format])
  if not ok then return nil, err, state end
  staged[conn] = have or {}
  staged[conn][format] = true
  return true
end

-- Runs one query on a pooled connection: rows, or nil, err, sqlstate.
function M.query(pool, sql, ...)
  local args, n = { ... }, select("#", ...)
  return pool:with(function(conn) return conn:query(sql, unpack(args, 1, n)) end)
end

-- The statements around a transaction: a whole one, or a savepoint inside
-- a transaction already open (the dry-run's read-only session).
M.TRANSACTION = { open = "begin", close = "commit", undo = "rollback" }
M.SAVEPOINT = { open = "savepoint ragops_tx", close = "release savepoint ragops_tx",
                undo = "rollback to savepoint ragops_tx" }

-- Runs fn(step, conn) between begin and commit on conn (or bracket's
-- statements); step(sql, ...) runs a query and raises on error. Returns
-- fn's result, or nil, err, sqlstate after a rollback. Errors that are not
-- query errors propagate.
function M.transaction(conn, fn, bracket)
  bracket = bracket or M.TRANSACTION
  local function step(sql, ...)
    local rows, err, state = conn:query(sql, ...)
    if not rows then error({ err = err, state = state }, 0) end
    return rows
  end
  local ok, res = pcall(function()
    step(bracket.open)
    local result = fn(step, conn)
    step(bracket.close)
    return result
  end)
  if ok then return res end
  if conn:is_ok() then conn:query(bracket.undo) end
  if type(res) == "table" and res.err then return nil, res.err, res.state end
  error(res, 0)
end

-- The upsert from staging into target, over contract.DOCUMENT_COLUMNS:
-- every column but the key's updated on conflict, indexed_at = now().
local function upsert_sql(target, staging_table)
  local names, reads, sets = {}, {}, {}
  for i, c in ipairs(contract.DOCUMENT_COLUMNS) do
    names[i], reads[i] = c.name, c.name .. (c.cast or "")
    if not c.key then sets[#sets + 1] = ("%s = excluded.%s"):format(c.name, c.name) end
  end
  return ([[
      insert into %s as d (%s, indexed_at)
      select %s, now()
        from %s
      on conflict (entity_type, entity_id, chunk_index) do update set
        %s, indexed_at = now()]]):format(target, table.concat(names, ", "), table.concat(reads, ", "),
    staging_table, table.concat(sets, ", "))
end

-- SQL of the documents table, built once per store (target is quoted;
-- staging is the STAGING_BY_FORMAT entry of the target's embedding type).
local function document_sql(target, staging)
  return {
    upsert = upsert_sql(target, staging.table),
    -- The source row each entity was indexed from ('': none, cleared), on
    -- its chunk 0, where that chunk was not rewritten (see
    -- ragops.run.stages.write fingerprints).
    fingerprint = ([[
      update %s d set source_hash = nullif(x.fp, '')::int8
        from unnest($2::text[], $3::text[]) as x(entity_id, fp)
       where d.entity_type = $1 and d.entity_id = x.entity_id and d.chunk_index = 0
         and d.source_hash is distinct from nullif(x.fp, '')::int8]]):format(target),
    -- What the target holds for some entities (Store:add_stored).
    stored = ([[
      select d.entity_id, json_agg(json_build_array(d.chunk_index, d.content_hash, d.metadata,
               d.source_updated_at is not distinct from nullif(x.updated_at, '')::timestamptz))::text as stored
        from unnest($2::text[], $3::text[]) as x(entity_id, updated_at)
        join %s d on d.entity_type = $1 and d.entity_id = x.entity_id
       group by d.entity_id]]):format(target),
    -- The fingerprints of the entities stored (chunk 0), by ranges of id.
    id_bounds = ("select min(id)::text as lo, max(id)::text as hi from %s"):format(target),
    fingerprints = ([[
      select source_hash::text as fp from %s
       where entity_type = $1 and chunk_index = 0 and id >= $2 and id < $3]]):format(target),
    prune = ([[
      delete from %s d using unnest($2::text[], $3::int[]) as x(entity_id, n)
       where d.entity_type = $1 and d.entity_id = x.entity_id and d.chunk_index >= x.n]]):format(target),
    -- Unchanged content whose metadata or source_updated_at moved: updated in
    -- place, without a new embedding (indexed_at stays: nothing was re-embedded);
    -- chunk 0 takes the fingerprint of the row it now reflects ('': none).
    refresh = ([[
      update %s d set metadata = x.metadata::jsonb,
                      source_updated_at = nullif(x.updated_at, '')::timestamptz,
                      source_hash = case when d.chunk_index = 0 then nullif(x.fp, '')::int8
                                         else d.source_hash end
        from unnest($2::text[], $3::int[], $4::text[], $5::text[], $6::text[])
             as x(entity_id, chunk_index, metadata, updated_at, fp)
       where d.entity_type = $1 and d.entity_id = x.entity_id and d.chunk_index = x.chunk_index
         and (d.metadata is distinct from x.metadata::jsonb
              or d.source_updated_at is distinct from nullif(x.updated_at, '')::timestamptz)]]):format(target),
    existing = ([[
      select entity_id, chunk_index, content_hash from %s
       where entity_type = $1 and entity_id = any($2::text[])]]):format(target),
    orphans = ("delete from %s d where d.entity_type = $1 and %%s"):format(target),
    delete_entities = ("delete from %s where entity_type = $1 and entity_id = any($2::text[])"):format(target),
    indexed = ("select count(*) as n from %s where entity_type = $1 and chunk_index = 0"):format(target),
  }
end

-- The anti-join of every orphan search (backfill, dry-run, the watermark
-- strategy of ragops sync): source has no row whose key, as text, is
-- `alias`.entity_id. The proof of absence a deletion needs, in one place.
function M.absent_from_source(source, alias)
  return ("not exists (select 1 from (%s) as src where src.%s::text = %s.entity_id)")
    :format(source.sql, pg.quote_ident(source.key), alias)
end

M.FAILURE_SQL = [[
  insert into ragops_failures as f (run_id, entity_type, entity_id, chunk_index, error_class,
                                    http_status, message, attempts, request_id, provider_request_id)
  select $1, $2, x.entity_id, nullif(x.chunk_index, -1), x.error_class, nullif(x.http_status, 0),
         x.message, x.attempts, nullif(x.request_id, ''), nullif(x.provider_request_id, '')
    from unnest($3::text[], $4::int[], $5::text[], $6::int[], $7::text[], $8::int[], $9::text[], $10::text[])
         as x(entity_id, chunk_index, error_class, http_status, message, attempts, request_id, provider_request_id)
  on conflict (entity_type, entity_id) where resolved_at is null do update set
    run_id = excluded.run_id, chunk_index = excluded.chunk_index,
    error_class = excluded.error_class, http_status = excluded.http_status,
    message = excluded.message, attempts = f.attempts + excluded.attempts,
    request_id = excluded.request_id, provider_request_id = excluded.provider_request_id,
    last_seen = now()]]

M.RESOLVE_SQL = [[
  update ragops_failures set resolved_at = now(), resolved_run_id = $1
   where resolved_at is null and entity_type = $2 and entity_id = any($3::text[])]]

-- The no-document markers (migration 9): set with the row's updated_at,
-- cleared when the entity gets documents or leaves the source.
M.NO_DOCUMENT_SQL = {
  mark = [[
    insert into ragops_no_document as m (entity_type, entity_id, source_updated_at, run_id)
    select $1, x.entity_id, nullif(x.updated_at, '')::timestamptz, $4
      from unnest($2::text[], $3::text[]) as x(entity_id, updated_at)
    on conflict (entity_type, entity_id) do update set
      source_updated_at = excluded.source_updated_at, run_id = excluded.run_id, decided_at = now()]],
  clear = "delete from ragops_no_document where entity_type = $1 and entity_id = any($2::text[])",
  any = "select exists (select 1 from ragops_no_document where entity_type = $1) as any",
  -- current: the marker is as of the row's updated_at (compared as the
  -- refresh of the documents compares it).
  markers = [[
    select m.entity_id, m.source_updated_at is not distinct from nullif(x.updated_at, '')::timestamptz as current
      from unnest($2::text[], $3::text[]) as x(entity_id, updated_at)
      join ragops_no_document m on m.entity_type = $1 and m.entity_id = x.entity_id]],
  orphans = "delete from ragops_no_document m where m.entity_type = $1 and %s",
}

-- A unit's markers: set, cleared (entities now indexed, and the source's
-- deletions of a sync unit).
local function write_no_document(step, unit)
  local mark, cleared = unit.no_document, unit.no_document_cleared
  if mark and #mark.entity_ids > 0 then
    step(M.NO_DOCUMENT_SQL.mark, unit.entity_type, mark.entity_ids, mark.updated_at, unit.run_id)
  end
  if cleared and #cleared > 0 then step(M.NO_DOCUMENT_SQL.clear, unit.entity_type, cleared) end
  local gone = unit.sync and unit.sync.delete_ids
  if gone and #gone > 0 then step(M.NO_DOCUMENT_SQL.clear, unit.entity_type, gone) end
end

-- Dead letters of one entity type, as the parallel arrays of FAILURE_SQL
-- (messages and ids through scrub: secrets masked, capped, escaped).
local function failure_arrays(failures)
  local a = { {}, {}, {}, {}, {}, {}, {}, {} }
  for i, f in ipairs(failures) do
    a[1][i], a[2][i], a[3][i] = f.entity_id, f.chunk_index or -1, f.error_class
    a[4][i], a[5][i], a[6][i] = f.http_status or 0, scrub.message(f.message), f.attempts or 1
    a[7][i], a[8][i] = scrub.message(f.request_id or ""), scrub.message(f.provider_request_id or "")
  end
  return a
end

-- The store: documents here, the run record in ragops.store.runs (its
-- Store, the mixin this one falls back to: ragops.store.contract MIXINS).
local Store = setmetatable({}, { __index = store_runs.Store })
Store.__index = Store
M.Store = Store

-- opts: { pool = ragops.store.pool, table = "rag_documents",
--         embedding_type = "real[]"|"vector(N)"|"halfvec(N)",
--         model = "...", dim = N }
function M.new(opts)
  local target = sqlname.quote_table(opts.table)
  local format = M.embedding_format(opts.embedding_type)
  return setmetatable({ pool = opts.pool, format = format, target = target,
                        sql = document_sql(target, STAGING_BY_FORMAT[format]),
                        -- source -> its updated_at column is a timestamptz (M.page_query updated_at_is_timestamptz)
                        updated_at_is_timestamptz = setmetatable({}, { __mode = "k" }) }, Store)
end

-- One query on a pooled connection (under the database retry policy).
function Store:query(sql, ...) return M.query(self.pool, sql, ...) end

-- The run is ending: what is left makes a single attempt (ragops.store.pool wind_down).
function Store:wind_down() self.pool:wind_down() end

-- fn(step, conn) in one transaction on a pooled connection, retried whole;
-- before (optional): before(conn) -> true | nil, err, sqlstate, run first
-- on that connection, outside the transaction.
function Store:transaction(fn, before)
  return self.pool:with(function(conn)
    if before then
      local ok, err, state = before(conn)
      if not ok then return nil, err, state end
    end
    return M.transaction(conn, fn)
  end)
end

function Store:fetch_page(source, scope, after_key, limit, upto_key)
  local sql, params = M.source_query(source, scope, after_key, limit, nil, upto_key)
  return self:query(sql, unpack(params))
end

-- The page with what the target holds for each row's entity, in one query
-- (M.page_query). Returns rows, existing (the shape of existing_hashes, each
-- entity also with metadata = { [chunk_index] = decoded }, same_updated_at =
-- { [chunk_index] = bool } and open_failure; entities with neither
-- documents nor an open dead letter are absent), updated_us ({ [entity_id]
-- = updated_at in µs since the Unix epoch }, see M.page_query), fps
-- ({ [entity_id] = the source row's fingerprint }, with fp), or nil, err,
-- sqlstate. fp = nil | { seed = text, set = pg.fpset | nil, without_stored = bool, target_empty = bool }:
-- each row's fingerprint is computed (conn:query_page); rows whose
-- fingerprint is in `set` come back as their key value alone
-- (unchanged: nothing of them in existing); without_stored: without what
-- the target holds (existing then only has open dead letters), and also
-- without updated_us unless target_empty (see M.page_query with_updated_us).
-- An entity of `existing` from the stored JSON of M.page_query (nil: no
-- documents) and whether it has an open dead letter.
local function stored_entity(stored, open_failure)
  local e = { count = 0, hashes = {}, metadata = {}, same_updated_at = {}, open_failure = open_failure }
  for _, c in ipairs(stored and cjson.decode(stored) or {}) do
    e.count = e.count + 1
    e.hashes[c[1]], e.metadata[c[1]], e.same_updated_at[c[1]] = c[2], c[3], c[4]
  end
  return e
end

function Store:fetch_page_existing(source, scope, after_key, limit, upto_key, fp)
  local without_stored = fp ~= nil and fp.without_stored == true
  local sql, params = M.page_query(source, scope, after_key, limit, upto_key,
    { target = not without_stored and self.target or nil,
      updated_at_is_timestamptz = self.updated_at_is_timestamptz[source],
      with_updated_us = not without_stored or fp.target_empty == true })
  local rows, err, state
  if fp then
    local opts = { seed = fp.seed, key = source.key, set = fp.set }
    rows, err, state = self.pool:with(function(conn) return conn:query_page(opts, sql, unpack(params)) end)
  else
    rows, err, state = self:query(sql, unpack(params))
  end
  if not rows then return nil, err, state end
  if rows.types and source.updated_at then
    self.updated_at_is_timestamptz[source] = rows.types[source.updated_at] == TIMESTAMPTZ_OID
  end
  local existing, updated_us, fps = {}, {}, {}
  for _, r in ipairs(rows) do
    if type(r) == "table" then
      local id = key_text(r[source.key])
      local stored, open_failure = r[STORED_COL], r[OPEN_FAILURE_COL]
      updated_us[id], fps[id] = r[UPDATED_US_COL], r[FP_FIELD]
      r[STORED_COL], r[OPEN_FAILURE_COL], r[UPDATED_US_COL], r[FP_FIELD] = nil, nil, nil, nil
      if stored or open_failure then existing[id] = stored_entity(stored, open_failure) end
    end
  end
  return rows, existing, updated_us, fps
end

-- What the target holds for the entities `ids` (rows of a plain page that
-- were not skipped), added to `existing` (the plain page's: open dead
-- letters) in its shape. updated_at: each row's updated_at as the page
-- gave it (text, or "" for none), for same_updated_at, compared as
-- M.page_query does. Returns true, or nil, err, sqlstate.
function Store:add_stored(entity_type, ids, existing, updated_at)
  local rows, err, state = self:query(self.sql.stored, entity_type, ids, updated_at)
  if not rows then return nil, err, state end
  for _, r in ipairs(rows) do
    local open = existing[r.entity_id]
    existing[r.entity_id] = stored_entity(r.stored, open ~= nil and open.open_failure)
  end
  return true
end

-- Ids per query when loading the fingerprints of a target: the rows of one
-- query (and its result in memory) stay under this.
M.FINGERPRINT_IDS = 250000

-- The fingerprints of the entities of entity_type the target holds (their
-- chunk 0), in a pg.fpset, read by ranges of id (each a sequential scan, no
-- ordering) under the retry policy. Returns the set, or nil, err, sqlstate.
function Store:load_fingerprints(entity_type)
  local bounds, err, state = self:query(self.sql.id_bounds)
  if not bounds then return nil, err, state end
  local set, lo, hi = pg.fpset(), tonumber(bounds[1].lo), tonumber(bounds[1].hi)
  while lo and lo <= hi do
    local n, lerr, lstate = self.pool:with(function(conn)
      return conn:load_fingerprints(set, self.sql.fingerprints, entity_type, lo, lo + M.FINGERPRINT_IDS)
    end)
    if not n then return nil, lerr, lstate end
    lo = lo + M.FINGERPRINT_IDS
  end
  return set
end

-- Returns { [entity_id] = { count = n, hashes = { [chunk_index] = hash } } }.
function Store:existing_hashes(entity_type, entity_ids)
  local rows, err = self:query(self.sql.existing, entity_type, entity_ids)
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

-- The documents of a unit: COPY into staging and one upsert (or, when
-- every key is new, COPY straight into the target), stale chunks pruned,
-- unchanged ones refreshed. Returns written, pruned, refreshed.
local function write_documents(store, step, conn, unit)
  local written, pruned, refreshed = 0, 0, 0
  local into = unit.into_target and store.target or STAGING_BY_FORMAT[store.format].table
  for _, part in ipairs(unit.parts) do
    if #part.docs > 0 then
      local n, err, state = conn:copy_documents(into, part.docs, part.batch, store.format, unit.into_target)
      if not n then error({ err = err, state = state }, 0) end
      written = written + n
    end
  end
  if #unit.parts > 0 and not unit.into_target then written = step(store.sql.upsert).affected end
  local counts = unit.chunk_counts
  if #counts.entity_ids > 0 then
    pruned = step(store.sql.prune, unit.entity_type, counts.entity_ids, counts.counts).affected
  end
  local r = unit.refresh
  if r and #r.entity_ids > 0 then
    refreshed = step(store.sql.refresh, unit.entity_type, r.entity_ids, r.chunk_indexes,
                     r.metadata, r.updated_at, r.fps).affected
  end
  local f = unit.fingerprints
  if f and #f.entity_ids > 0 then step(store.sql.fingerprint, unit.entity_type, f.entity_ids, f.fps) end
  return written, pruned, refreshed
end

-- Dead letters recorded, and those of entities now indexed resolved.
-- Returns the number of dead letters resolved.
local function write_failures(step, unit)
  local resolved = 0
  if unit.failures and #unit.failures > 0 then
    step(M.FAILURE_SQL, unit.run_id, unit.entity_type, unpack(failure_arrays(unit.failures)))
  end
  if unit.resolved_ids and #unit.resolved_ids > 0 then
    resolved = step(M.RESOLVE_SQL, unit.run_id, unit.entity_type, unit.resolved_ids).affected
  end
  return resolved
end

-- unit = { entity_type, run_id,
--          parts = { { docs = {...}, batch = vecbatch }, ... },
--          chunk_counts = { entity_ids = {...}, counts = {...} },
--          refresh = { entity_ids, chunk_indexes, metadata, updated_at, fps },
--          fingerprints = { entity_ids, fps } (chunk 0's source_hash; "": none),
--          failures = { dead letters }, resolved_ids = { entity ids now indexed },
--          checkpoint = { seq, after, stats, covered = { last keys }, includes_unit },
--          into_target = every key is new: COPY straight into the target (docs
--                        with source_updated_us), no staging and no upsert,
--          ahead = nil | { first_key, after_key, last_key, stats } (committed past the prefix),
--          sync = nil | { change_ids, run_id, delete_ids, watermark } (ragops.store.sync_tables.write),
--          batch = nil | { add, collected } (ragops.store.batches.write),
--          no_document = nil | { entity_ids, updated_at } (markers to set),
--          no_document_cleared = nil | { entity ids } (markers to clear) }
-- Everything in one transaction, with the owner's fence and the requests
-- spent (ragops.store.runs). Returns { written, pruned, refreshed } or nil, err, sqlstate.
function Store:write_unit(unit)
  local spent = unit.run_id and self:reserve_spent() or 0
  local staging = not unit.into_target and #unit.parts > 0
    and function(conn) return ensure_staging(conn, self.format) end or nil
  local result, err, state = self:transaction(function(step, conn)
    local written, pruned, refreshed = write_documents(self, step, conn, unit)
    local resolved = write_failures(step, unit)
    write_no_document(step, unit)
    pruned = pruned + sync_tables.write(step, self, unit)
    batches.write(step, unit, pruned, refreshed)
    -- The run's row last: its lock serialises the units' commits, so it is
    -- held only for its last statements, not for the whole transaction.
    if unit.run_id and unit.checkpoint then
      M.record_progress(step, unit, pruned, refreshed, self.owner_token, spent)
    elseif unit.run_id then
      local u = unit.usage
      if u then
        step(M.USAGE_SQL, unit.run_id, u.model, unit.entity_type, u.documents, u.chunks, u.bytes, u.chars, u.tokens)
      end
      self:check_owner(step, unit.run_id, spent, unit, pruned, refreshed)
    end
    return { written = written, pruned = pruned, refreshed = refreshed, resolved = resolved }
  end, staging)
  if not result and spent > 0 then self:unreserve_spent(spent) end
  -- Keys read as new that another process wrote since: the upsert instead.
  if not result and state == UNIQUE_VIOLATION and unit.into_target then
    unit.into_target = false
    return self:write_unit(unit)
  end
  return result, err, state
end

-- Entity ids among `ids` that the source still has, asked by key only
-- (no date or other filter): the proof of absence before a deletion.
-- Returns { [id] = true } or nil, err, sqlstate.
function Store:present_keys(source, ids)
  local key = pg.quote_ident(source.key)
  local rows, err, state = self:query(([[select src.%s::text as k from (%s) as src
                                           where src.%s::text = any($1::text[])]])
    :format(key, source.sql, key), ids)
  if not rows then return nil, err, state end
  local present = {}
  for _, r in ipairs(rows) do present[r.k] = true end
  return present
end

-- The source's rows of the entity ids (keys as text), in key order: the
-- Batch API mode reads again, at collection, the entities a part covers;
-- sync reads the entities of its claimed changes.
-- The key is compared in its own type ($1's type is inferred from it), so
-- PostgreSQL can use the source's index (a cast to text would scan the
-- whole source for every unit). Returns rows or nil, err, sqlstate.
function Store:rows_by_key(source, ids)
  local key = "src." .. pg.quote_ident(source.key)
  return self:query(("select src.* from (%s) as src where %s = any($1) order by %s")
    :format(source.sql, key, key), ids)
end

-- { rows = rows the scope selects, duplicate = a key that appears more
-- than once or nil }, or nil, err, sqlstate.
function Store:key_census(source, scope)
  local sql, params = M.key_census_query(source, scope)
  local rows, err, state = self:query(sql, unpack(params))
  if not rows then return nil, err, state end
  return { rows = rows[1].rows, duplicate = rows[1].duplicate }
end

-- Entities of entity_type with a document in the index.
function Store:indexed_entities(entity_type)
  local rows, err, state = self:query(self.sql.indexed, entity_type)
  if not rows then return nil, err, state end
  return rows[1].n
end

-- Whether entity_type has no-document markers: true/false, or nil, err, sqlstate.
function Store:has_no_document(entity_type)
  local rows, err, state = self:query(M.NO_DOCUMENT_SQL.any, entity_type)
  if not rows then return nil, err, state end
  return rows[1].any
end

-- The markers of the entities `ids` (updated_at: each row's, "" for none):
-- { [id] = true (as of that updated_at) | false (older) }, or nil, err, sqlstate.
function Store:no_document_markers(entity_type, ids, updated_at)
  local rows, err, state = self:query(M.NO_DOCUMENT_SQL.markers, entity_type, ids, updated_at)
  if not rows then return nil, err, state end
  local out = {}
  for _, r in ipairs(rows) do out[r.entity_id] = r.current end
  return out
end

-- Deletes the markers of entity_type whose entity is no longer in the
-- source (full backfill). Returns the number of markers deleted.
function Store:delete_orphan_markers(source)
  local rows, err, state = self:query(M.NO_DOCUMENT_SQL.orphans:format(M.absent_from_source(source, "m")),
    source.entity_type)
  if not rows then return nil, err, state end
  return rows.affected
end

-- Deletes every document of entity_type whose entity is no longer in the
-- source (full backfill). Returns the number of rows deleted.
function Store:delete_orphans(source)
  local rows, err, state = self:query(self.sql.orphans:format(M.absent_from_source(source, "d")),
    source.entity_type)
  if not rows then return nil, err, state end
  return rows.affected
end

-- Deletes every document of the given entities, resolves their open
-- dead letters and clears their no-document markers, in one transaction.
-- Returns rows deleted.
function Store:delete_entities(run_id, entity_type, entity_ids)
  return self:transaction(function(step)
    local n = step(self.sql.delete_entities, entity_type, entity_ids).affected
    step(M.RESOLVE_SQL, run_id, entity_type, entity_ids)
    step(M.NO_DOCUMENT_SQL.clear, entity_type, entity_ids)
    return n
  end)
end

M.FENCED, M.HEARTBEAT_MS = store_runs.FENCED, store_runs.HEARTBEAT_MS

return M
