-- ragops.store.contract: what a Store is. The run stages (ragops.run.*), the
-- run's wiring and ragops sync read sources and write documents, runs and
-- failures through one object, the Store; three implementations keep this
-- contract whole, every method, in every mode:
--   ragops.store.pg      the PostgreSQL store (its run-record half is the
--                        mixin ragops.store.runs, M.MIXINS)
--   ragops.testing       store{}: the in-memory fake of the unit specs and
--                        of plan specs (the same fast path as production)
--   ragops.run.dryrun    the dry-run store: reads go to PostgreSQL through a
--                        read-only session; writes are recorded (counted),
--                        nothing is written
-- A scale-out work unit's store (ragops.run.workunits unit_store) is the
-- PostgreSQL store with the unit's fence and M.WORK_UNIT's methods on top.
-- tests/lua/store/contract_spec.lua checks that each implementation has
-- every method below and no public method undeclared (M.EXTRAS);
-- tests/integration/store_conformance_spec.lua runs the same behavioural
-- checks against the three.
--
-- Failure convention: a method that talks to a dependency returns
-- `nil, err, sqlstate` (err: pt-BR text; sqlstate: PostgreSQL's code, or a
-- ragops kind such as "RGFEN", "busy", "db"); misuse (wrong arguments, the
-- fake asked for SQL) raises. Below, "| fail" means that convention.
--
-- Shapes used below:
--   source    a validated plan source: { entity_type, sql, key, updated_at, ... }
--   scope     the plan's scope: { entity_ids, since, until, entity_types } (any nil)
--   existing  { [entity_id] = { count, hashes = { [chunk_index] = content_hash },
--               metadata = { [chunk_index] = decoded }, same_updated_at =
--               { [chunk_index] = bool }, open_failure = bool } } (existing_hashes
--               gives count and hashes only)
--   fp        nil | { seed = text, set = fingerprint set | nil,
--                     without_stored = bool, target_empty = bool }
--   fingerprint set  pg.fpset() (or the fake's): :add(fp), :contains(fp),
--               :stats() -> { members, unknown, unseen }
--   unit      the payload of ragops.run.stages.write (see ragops.store.pg write_unit)
local M = {}

-- Every method of a Store, in groups, with its arguments and results.
M.GROUPS = {
  -- Reading the sources and what the target holds.
  read = {
    -- (source, scope, after_key, limit, upto_key) -> rows | fail
    --   rows of the source in key order, keys in (after_key, upto_key], at most limit
    "fetch_page",
    -- (source, scope, after_key, limit, upto_key, fp) -> rows, existing, updated_us, fps | fail
    --   the page with what the target holds for its entities (the fast path):
    --   existing as above (nil: this store does not read it with the page,
    --   the caller asks existing_hashes: the dry-run store); updated_us
    --   { [id] = µs since the epoch }; fps { [id] = the row's fingerprint }
    --   (with fp); rows whose fingerprint is in fp.set come as their key
    --   value alone (rows.skipped counts them); fp.without_stored: existing
    --   then has only entities with open dead letters (see add_stored)
    "fetch_page_existing",
    -- (entity_type, ids, existing, updated_at) -> true | fail
    --   what the target holds for ids, added to existing in its shape
    --   (updated_at: each row's updated_at text, "" for none)
    "add_stored",
    -- (entity_type) -> fingerprint set | fail
    --   the fingerprints of the entities of entity_type the target holds (chunk 0)
    "load_fingerprints",
    -- (entity_type, ids) -> { [id] = { count, hashes } } | fail
    "existing_hashes",
    -- (source, scope) -> { rows, duplicate = a key seen twice | nil } | fail
    "key_census",
    -- (source, ids) -> { [id] = true } for ids the source has (by key only) | fail
    "present_keys",
    -- (source, ids) -> the source's rows of ids (by key only), in key order | fail
    --   (the Batch API mode reads again what a collected part covers)
    "rows_by_key",
    -- (entity_type) -> entities with a document (chunk 0) | fail
    "indexed_entities",
    -- (entity_type) -> whether entity_type has no-document markers | fail
    "has_no_document",
    -- (entity_type, ids, updated_at) -> { [id] = true (marker as of that
    --   updated_at) | false (older) } for ids with a marker | fail
    "no_document_markers",
  },
  -- Writing (the dry-run store records and writes nothing: counts come back).
  write = {
    -- (unit) -> { written, pruned, refreshed, resolved } | fail
    --   documents, pruning, refresh, dead letters, resolutions, no-document
    --   markers, usage and checkpoint in ONE transaction
    "write_unit",
    -- (source) -> documents deleted whose entity the source no longer has | fail
    "delete_orphans",
    -- (source) -> no-document markers deleted of entities gone from the source | fail
    "delete_orphan_markers",
    -- (run_id, entity_type, ids) -> documents deleted (dead letters resolved,
    --   markers cleared, one transaction) | fail
    "delete_entities",
  },
  -- The run record.
  run = {
    -- (plan_name, params_json, dry_run, must_resume, shared, owner)
    --   -> run_id, checkpoint, resumed, has_units | nil, err, "busy"|"db"
    --   resumes the latest unfinished run of plan + params, or starts one
    "start_run",
    -- ({ sched, spent = function, on_lost = function(reason) }) -> nothing
    --   keeps the run held (heartbeat) until finish_run
    "keep_run",
    -- (run_id, status|nil, report_json, extra_requests) -> requests spent
    --   | nil (fenced) | nil, err; status nil: only let the run go
    "finish_run",
    -- (run_id, settle) -> { [entity_type] = counters } committed | nil, err
    "committed_totals",
    -- (run_id) -> open dead letters of the run | nil, err
    "open_failures",
    -- (run_id) -> tokens billed to the run by every process | nil, err
    "run_billed_tokens",
    -- (run_id, entity_type, { model, chunks, bytes, chars, tokens }) -> true | nil, err
    --   the bill of a batch embedded and then dropped
    "record_dropped",
  },
  -- The session under the store.
  session = {
    -- (sql, ...) -> rows | fail   one parameterised statement (the fake raises: no SQL)
    "query",
    -- (fn(step, conn), before) -> fn's result | fail   (the fake raises: no SQL)
    "transaction",
    -- () -> nothing: the run is ending, what is left makes a single attempt
    "wind_down",
  },
}

-- Every method name, in group order.
M.METHODS = {}
for _, group in ipairs({ "read", "write", "run", "session" }) do
  for _, name in ipairs(M.GROUPS[group]) do M.METHODS[#M.METHODS + 1] = name end
end

-- Methods a Store gets from a mixin (its metatable falls back to it), not
-- from its own table: ragops.store.pg's run record lives in ragops.store.runs.
M.MIXINS = {
  ["ragops.store.runs"] = { "start_run", "keep_run", "finish_run", "committed_totals", "open_failures",
                            "run_billed_tokens", "record_dropped" },
}

-- A scale-out work unit's store (ragops.run.workunits, store.work_unit set)
-- has these on top of the contract; the stages ask store.work_unit, never
-- whether a method exists.
M.WORK_UNIT = { "record_request", "reserve_request", "settle_request" }

-- Public methods an implementation has beyond the contract, each with why.
M.EXTRAS = {
  pg = {
    reserve_spent = "requests spent reserved for one transaction (run record)",
    unreserve_spent = "gives them back after a rollback",
    check_owner = "the owner's fence inside write_unit (a work unit's store overrides it)",
    ahead_units = "units committed past the checkpoint (start_run)",
    heartbeat_on = "one heartbeat on a session (keep_run)",
    beat_on_new_session = "the lock taken again on a new session (keep_run)",
    beat = "one heartbeat (keep_run)",
  },
  fake = {
    put = "test API: puts a document",
    documents = "test API: the documents, sorted",
    document = "test API: one document",
    delete_where = "test API: deletes the documents a predicate selects",
    resume_checkpoint = "test API: the checkpoint a resumed run gets",
    record_failures = "test API: records dead letters (write_unit's part)",
    resolve_failures = "test API: resolves dead letters (write_unit's part)",
    write_no_document = "write_unit's part: the no-document markers",
    add_usage = "write_unit's and record_dropped's part: usage and tokens billed",
    fail_write = "option: the injected write failure (a function field)",
  },
  dry = {
    count = "a count over the target, 0 before it exists (what a write would touch)",
  },
}

-- The columns of a document a write puts in the target, in the order of
-- the binary COPY (engine/pg_lua.c document_columns, pg.DOCUMENT_COLUMNS,
-- must list the same: tests/lua/store/contract_spec.lua). The one list of
-- ragops.store.pg's staging table and upsert, and of the fake's documents.
--   staging: the column's type in the staging table (nil: the target's
--            embedding type); cast: how the upsert reads it from staging;
--   key: part of the unique key (not updated on conflict).
-- A new column: here, in engine/pg_lua.c (its encoder), and a migration.
M.DOCUMENT_COLUMNS = {
  { name = "entity_type", staging = "text", key = true },
  { name = "entity_id", staging = "text", key = true },
  { name = "chunk_index", staging = "int4", key = true },
  { name = "content", staging = "text" },
  { name = "content_hash", staging = "text" },
  { name = "metadata", staging = "text", cast = "::jsonb" },
  { name = "embedding_model", staging = "text" },
  { name = "source_updated_at", staging = "text", cast = "::timestamptz" },
  { name = "source_hash", staging = "int8" },
  { name = "embedding" },
}

-- The names of M.DOCUMENT_COLUMNS, in order.
function M.document_column_names()
  local out = {}
  for i, c in ipairs(M.DOCUMENT_COLUMNS) do out[i] = c.name end
  return out
end

-- The public methods of store: its function fields and those of the
-- tables its metatable falls back to (__index chains of tables).
function M.methods_of(store)
  local out, seen, t = {}, {}, store
  while type(t) == "table" and not seen[t] do
    seen[t] = true
    for k, v in pairs(t) do
      if type(k) == "string" and type(v) == "function" and not k:match("^__") then out[k] = true end
    end
    local mt = getmetatable(t)
    t = mt and type(mt.__index) == "table" and mt.__index or nil
  end
  return out
end

-- What store lacks of the contract and what it has beyond it and the
-- implementation's EXTRAS (kind: "pg" | "fake" | "dry"): missing, extra
-- (sorted lists of names).
function M.check(store, kind)
  local have, declared = M.methods_of(store), {}
  local missing, extra = {}, {}
  for _, name in ipairs(M.METHODS) do
    declared[name] = true
    -- As callers see it: a data field of the same name hides the method.
    if type(store[name]) ~= "function" then missing[#missing + 1] = name end
  end
  for name in pairs(have) do
    if not declared[name] and not (M.EXTRAS[kind] or {})[name] then extra[#extra + 1] = name end
  end
  table.sort(extra)
  return missing, extra
end

return M
