-- ragops.sync.queue: the change queue of the trigger strategy, in the
-- engine's schema ragops_sync (created by `ragops sync install`, not by
-- migrate). Install creates, for every source with sync.strategy =
-- "trigger", AFTER INSERT/UPDATE/DELETE row triggers and an AFTER TRUNCATE
-- statement trigger on its table (and on each related table) that enqueue
-- (entity_type, key, op) — a TRUNCATE enqueues a marker, see M.MARKER_SQL
-- — and NOTIFY ragops_sync; ragops_sync.installed records exactly what was
-- created, so uninstall removes exactly that and a second install of the
-- same plan is a no-op. The trigger functions are SECURITY DEFINER, owned
-- by the installing role, with a fixed search_path: every role that may
-- write a source fires them without any privilege on ragops_sync, which
-- grants nothing to anyone. Nothing in the schema is used unless its owner
-- is trusted (ragops.store.migrate.check_owned). Followers claim changes (see
-- M.CLAIM_SQL) and delete them in the transaction that writes the
-- documents (ragops.store.sync_tables.write).
local pg = require "ragops.pg"
local sqlname = require "ragops.util.sqlname"
local sync_tables = require "ragops.store.sync_tables"

local M = {}

-- Is everything in ragops_sync trusted? (ragops.store.sync_tables)
M.check_owned = sync_tables.check_owned

M.CHANNEL = "ragops_sync"
local CLAIM_LOCK_CLASS = 7265679 -- advisory lock class serialising claims per entity type
local INSTALL_LOCK = { CLAIM_LOCK_CLASS - 1, 0 } -- one install or uninstall at a time

M.INSUFFICIENT_PRIVILEGE = "42501"

-- Run by install once the schema is known to be absent or trusted (the
-- `if not exists` below never adopts: only trusted roles can create in a
-- trusted schema that grants CREATE to nobody else).
local SCHEMA_SQL = {
  [[create table if not exists ragops_sync.changes (
      id bigserial primary key,
      entity_type text not null,
      entity_key text not null,
      op text not null constraint changes_op_check check (op in ('I', 'U', 'D', 'T', 'R')),
      enqueued_at timestamptz not null default clock_timestamp(),
      claimed_by bigint)]],
  "create index if not exists changes_by_entity on ragops_sync.changes (entity_type, entity_key)",
  "create index if not exists changes_by_type on ragops_sync.changes (entity_type, id)",
  -- The claimed changes (a few units' worth): "is this entity held?" without
  -- a scan of the whole backlog.
  [[create index if not exists changes_claimed on ragops_sync.changes (entity_type, entity_key)
      where claimed_by is not null]],
  -- TRUNCATE markers (M.MARKER_SQL), found without a scan of the backlog.
  "create index if not exists changes_markers on ragops_sync.changes (entity_type, id) where op in ('T', 'R')",
  [[create table if not exists ragops_sync.installed (
      plan text not null,
      entity_type text not null,
      source_table text not null,
      trigger_name text not null,
      function_name text not null,
      installed_at timestamptz not null default now(),
      primary key (plan, trigger_name))]],
  "revoke all on schema ragops_sync from public",
  "revoke all on all tables in schema ragops_sync from public",
  "revoke all on all sequences in schema ragops_sync from public",
}

-- Dollar-quoted SQL literal for text written into a function body.
local function literal(text)
  local tag = "q"
  while text:find("$" .. tag .. "$", 1, true) do tag = tag .. "q" end
  return "$" .. tag .. "$" .. text .. "$" .. tag .. "$"
end

-- Body lines enqueuing the keys of one row image (OLD or NEW).
local function enqueue_direct(entity_type, key_column, image, op)
  return ("insert into ragops_sync.changes (entity_type, entity_key, op) values (%s, %s.%s::text, %s);")
    :format(literal(entity_type), image, pg.quote_ident(key_column), op)
end

local function enqueue_related(entity_type, related, image)
  local sql = ("insert into ragops_sync.changes (entity_type, entity_key, op) "
    .. "select $2, x.k::text, 'U' from (%s) as x(k)"):format(related.entities)
  return ("execute %s using %s.%s, %s::text;"):format(literal(sql), image, pg.quote_ident(related.column),
    literal(entity_type))
end

local function notify(entity_type)
  return "  perform pg_catalog.pg_notify('" .. M.CHANNEL .. "', " .. literal(entity_type) .. ");"
end

-- The row trigger function body for one table: direct (the source's own
-- table, keys of OLD and NEW) or related (entities found by the plan's query).
local function function_body(entity_type, spec)
  local old, new
  if spec.related then
    old, new = enqueue_related(entity_type, spec.related, "OLD"), enqueue_related(entity_type, spec.related, "NEW")
  else
    old = enqueue_direct(entity_type, spec.key_column, "OLD", "case when TG_OP = 'DELETE' then 'D' else 'U' end")
    new = enqueue_direct(entity_type, spec.key_column, "NEW", "left(TG_OP, 1)")
  end
  local changed = spec.related and "true" or ("NEW.%s is distinct from OLD.%s")
    :format(pg.quote_ident(spec.key_column), pg.quote_ident(spec.key_column))
  return table.concat({
    "begin",
    "  if TG_OP <> 'INSERT' then " .. old .. " end if;",
    "  if TG_OP = 'INSERT' or (TG_OP = 'UPDATE' and " .. changed .. ") then " .. new .. " end if;",
    notify(entity_type),
    "  return null;",
    "end" }, "\n")
end

-- The TRUNCATE trigger function body: one marker for the entity type, 'T'
-- for the source's own table (every entity may be gone), 'R' for a related
-- table (every entity may have changed).
local function truncate_body(entity_type, spec)
  return table.concat({
    "begin",
    ("  insert into ragops_sync.changes (entity_type, entity_key, op) values (%s, '', '%s');")
      :format(literal(entity_type), spec.related and "R" or "T"),
    notify(entity_type),
    "  return null;",
    "end" }, "\n")
end

-- The triggers a plan needs: { entity_type, table, kind = "row" | "truncate",
-- related (plan SQL runs in it), trigger_name, function_name, body }, named
-- by a hash of what they do (a plan change gives other names).
function M.wanted(plan, hash)
  local out = {}
  for _, source in ipairs(plan.sources) do
    local sync = source.sync
    if sync and sync.strategy == "trigger" then
      local specs = { { table = sync.table, key_column = sync.key_column } }
      for _, r in ipairs(sync.related) do specs[#specs + 1] = { table = r.table, related = r } end
      for _, spec in ipairs(specs) do
        for _, kind in ipairs({ "row", "truncate" }) do
          local body = kind == "row" and function_body(source.entity_type, spec) or truncate_body(source.entity_type, spec)
          local id = hash(source.entity_type, spec.table, body):sub(1, 16)
          out[#out + 1] = { entity_type = source.entity_type, table = spec.table, kind = kind, body = body,
                            related = kind == "row" and spec.related ~= nil, source_table = sync.table,
                            trigger_name = "ragops_sync_" .. id, function_name = "f_" .. id }
        end
      end
    end
  end
  return out
end

-- The names of a list of triggers, sorted, as one text (to compare sets).
local function names(list)
  local n = {}
  for i, t in ipairs(list) do n[i] = t.trigger_name .. " em " .. (t.table or t.source_table) end
  table.sort(n)
  return table.concat(n, ", ")
end

-- The search_path of a trigger function: pg_catalog and pg_temp alone
-- (every name in the body is qualified), and for a related function, whose
-- body runs the plan's `entities` query, the schemas of the source and
-- related tables in between.
local function search_path(step, t)
  local parts, seen = { "pg_catalog" }, {}
  for _, name in ipairs(t.related and { t.source_table, t.table } or {}) do
    local row = step([[select n.nspname from pg_class c join pg_namespace n on n.oid = c.relnamespace
                        where c.oid = to_regclass($1)]], sqlname.quote_table(name))[1]
    if row and not seen[row.nspname] then
      seen[row.nspname] = true
      parts[#parts + 1] = pg.quote_ident(row.nspname)
    end
  end
  parts[#parts + 1] = "pg_temp"
  return table.concat(parts, ", ")
end

-- The DDL of one trigger function: SECURITY DEFINER (it runs as the
-- installing role, so a writer needs nothing on ragops_sync) with a fixed
-- search_path, EXECUTE revoked from PUBLIC.
function M.function_sql(t, path)
  local fn = "ragops_sync." .. pg.quote_ident(t.function_name)
  return {
    ("create or replace function %s() returns trigger language plpgsql security definer set search_path = %s as %s")
      :format(fn, path, literal(t.body)),
    ("revoke all on function %s() from public"):format(fn),
  }
end

local function create_trigger(step, t)
  for _, sql in ipairs(M.function_sql(t, search_path(step, t))) do step(sql) end
  local fn = "ragops_sync." .. pg.quote_ident(t.function_name)
  local event = t.kind == "truncate" and "truncate" or "insert or update or delete"
  step(("create trigger %s after %s on %s for each %s execute function %s()")
    :format(pg.quote_ident(t.trigger_name), event, sqlname.quote_table(t.table),
      t.kind == "truncate" and "statement" or "row", fn))
  step([[insert into ragops_sync.installed (plan, entity_type, source_table, trigger_name, function_name)
         values ($1, $2, $3, $4, $5)]], t.plan, t.entity_type, t.table, t.trigger_name, t.function_name)
end

-- The queue schema and tables: created when absent, completed when an
-- earlier ragops created them (the TRUNCATE markers' op values).
local function ensure_schema(step)
  if not step("select to_regnamespace('ragops_sync') is not null as ok")[1].ok then
    step("create schema ragops_sync")
  end
  for _, sql in ipairs(SCHEMA_SQL) do step(sql) end
  local def = step([[select pg_get_constraintdef(oid) as def from pg_constraint
                      where conrelid = 'ragops_sync.changes'::regclass and conname = 'changes_op_check']])[1]
  if not (def and def.def:find("'T'", 1, true)) then
    step([[alter table ragops_sync.changes drop constraint if exists changes_op_check,
             add constraint changes_op_check check (op in ('I', 'U', 'D', 'T', 'R'))]])
  end
end

-- The pt-BR explanation of a refused install (the role may not alter a table).
local function privilege_error(err)
  return "o papel do banco não tem permissão para criar os gatilhos da estratégia trigger (" .. tostring(err)
    .. "); é preciso ser dono das tabelas (ou ter o privilégio TRIGGER nelas e CREATE no banco). "
    .. 'Sem poder alterar a origem, use a estratégia watermark (sync = { strategy = "watermark" }), '
    .. "que só lê a coluna updated_at (veja docs/sincronizacao.md)"
end

-- The pt-BR explanation of installed triggers that are not the plan's.
local function changed_error(plan_name, have, wanted)
  return ("o plano %q mudou desde o `ragops sync install` (ou o ragops foi atualizado): os gatilhos "
    .. "instalados são %s, e o plano pede %s. Rode `ragops sync uninstall` e depois `ragops sync install` "
    .. "com este plano"):format(plan_name, have, wanted)
end

-- Installs the plan's triggers in one transaction. Returns { created = n }
-- ({ created = 0 } when already installed), or nil, err, kind
-- ("usage": plan changed, nothing to install or no privilege; "db").
function M.install(store, plan, hash)
  local wanted = M.wanted(plan, hash)
  if #wanted == 0 then
    return nil, ('o plano %q não tem fontes com sync = { strategy = "trigger", ... }; '
      .. "nada a instalar"):format(plan.name), "usage"
  end
  local result, err, state = store:transaction(function(step)
    step("set local client_min_messages = warning") -- no NOTICE for what already exists
    step("select pg_advisory_xact_lock($1, $2)", INSTALL_LOCK[1], INSTALL_LOCK[2])
    local owned, oerr = M.check_owned(step)
    if not owned then return { refused = oerr } end
    ensure_schema(step)
    local have = step("select trigger_name, source_table from ragops_sync.installed where plan = $1", plan.name)
    if #have > 0 then
      if names(have) == names(wanted) then return { created = 0 } end
      return { changed = names(have) }
    end
    for _, t in ipairs(wanted) do t.plan = plan.name; create_trigger(step, t) end
    return { created = #wanted }
  end)
  if not result then
    if state == M.INSUFFICIENT_PRIVILEGE then return nil, privilege_error(err), "usage" end
    return nil, err, "db"
  end
  if result.refused then return nil, result.refused, "usage" end
  if result.changed then
    return nil, changed_error(plan.name, result.changed, names(wanted)), "usage"
  end
  return result
end

-- Removes what install created for plan_name (from ragops_sync.installed,
-- whatever the plan says now); the schema goes with the last plan. Nothing
-- is touched when an object of the schema is not trusted. Returns
-- { removed = n } or nil, err, kind ("usage" | "db").
function M.uninstall(store, plan_name)
  local result, err = store:transaction(function(step)
    step("set local client_min_messages = warning") -- no NOTICE for the cascade
    step("select pg_advisory_xact_lock($1, $2)", INSTALL_LOCK[1], INSTALL_LOCK[2])
    local owned, oerr = M.check_owned(step)
    if not owned then return { refused = oerr } end
    if not step("select to_regclass('ragops_sync.installed') is not null as ok")[1].ok then
      return { removed = 0 }
    end
    local have = step("select * from ragops_sync.installed where plan = $1", plan_name)
    for _, t in ipairs(have) do
      step(("drop trigger if exists %s on %s"):format(pg.quote_ident(t.trigger_name),
        sqlname.quote_table(t.source_table)))
      step(("drop function if exists ragops_sync.%s()"):format(pg.quote_ident(t.function_name)))
    end
    step("delete from ragops_sync.installed where plan = $1", plan_name)
    if step("select count(*)::int as n from ragops_sync.installed")[1].n == 0 then
      step("drop schema ragops_sync cascade")
    end
    return { removed = #have }
  end)
  if not result then return nil, err, "db" end
  if result.refused then return nil, result.refused, "usage" end
  return result
end

-- Does the queue hold what install created for plan (the triggers it asks
-- for now)? Returns true, or nil, err, kind ("usage": not installed, or
-- installed for another version of the plan; "db").
function M.check_installed(store, plan, hash)
  local owned, err, kind = M.check_owned(function(sql, ...) return store:query(sql, ...) end)
  if not owned then return nil, err, kind end
  local rows
  rows, err = store:query("select to_regclass('ragops_sync.installed') is not null as ok")
  if not rows then return nil, err, "db" end
  if not rows[1].ok then
    return nil, ("a fila de mudanças não está instalada: rode `ragops sync install` com o plano %q antes")
      :format(plan.name), "usage"
  end
  rows, err = store:query("select trigger_name, source_table from ragops_sync.installed where plan = $1", plan.name)
  if not rows then return nil, err, "db" end
  local wanted = M.wanted(plan, hash)
  if #rows == 0 then
    return nil, ("o plano %q não está instalado na fila de mudanças: rode `ragops sync install` com ele antes")
      :format(plan.name), "usage"
  end
  if names(rows) ~= names(wanted) then
    return nil, changed_error(plan.name, names(rows), names(wanted)), "usage"
  end
  return true
end

-- Claims the changes of up to `limit` entities of entity_type, oldest first
-- (looking at a window of the oldest free changes, so a claim costs the
-- same whatever the backlog), for the follower whose run is run_id. A change
-- is free when unclaimed or claimed by another follower whose run lock is
-- gone (it died: its session and advisory lock went with it); this
-- follower's own claims are its units in flight (release_claims frees those
-- of an earlier process of the same run), held even while a restart of
-- PostgreSQL has dropped its lock. An entity with a change held by a live
-- follower is skipped, so one entity is never in two units at once. All free changes of a chosen entity are claimed together
-- (coalescing). Claims are serialised per entity type (one short transaction
-- each, FOR UPDATE SKIP LOCKED inside). TRUNCATE markers are never claimed,
-- and with one pending ($5, its id) only entities with a change queued
-- before it are chosen (see M.claim).
M.CLAIM_SQL = [[
  with alive as materialized (
    select l.objid::bigint as run_id from pg_locks l
     where l.locktype = 'advisory' and l.granted and l.classid::bigint = $4 and l.objsubid = 2),
  free as (
    select q.id, q.entity_key from ragops_sync.changes q
     where q.entity_type = $1 and q.op in ('I', 'U', 'D') and ($5::bigint is null or q.id < $5)
       and (q.claimed_by is null or (q.claimed_by <> $3 and q.claimed_by not in (select run_id from alive)))
     order by q.id limit $2 * 4),
  chosen as (
    select f.entity_key from free f
     where not exists (select 1 from ragops_sync.changes h
                        where h.entity_type = $1 and h.entity_key = f.entity_key and h.claimed_by is not null
                          and (h.claimed_by = $3 or h.claimed_by in (select run_id from alive)))
     group by f.entity_key order by min(f.id) limit $2),
  locked as (
    select q.id from ragops_sync.changes q join chosen c on c.entity_key = q.entity_key
     where q.entity_type = $1 and q.op in ('I', 'U', 'D')
       and (q.claimed_by is null or (q.claimed_by <> $3 and q.claimed_by not in (select run_id from alive)))
     for update of q skip locked)
  update ragops_sync.changes q set claimed_by = $3
    from locked where q.id = locked.id
  returning q.id, q.entity_key, q.op]]

-- The oldest TRUNCATE marker of an entity type: op 'T' (a TRUNCATE of the
-- source's table: every entity may be gone) or 'R' (of a related table:
-- every entity may have changed), entity_key ''.
M.MARKER_SQL = [[select id, op from ragops_sync.changes where entity_type = $1 and op in ('T', 'R')
                  order by id limit 1]]

-- Claims changes (M.CLAIM_SQL) queued before the oldest marker, if any.
-- Returns { changes = { { id, entity_key, op }, ... }, marker = nil | { id, op } }
-- or nil, err.
function M.claim(store, entity_type, limit, run_id, run_lock_class)
  return store:transaction(function(step)
    step("select pg_advisory_xact_lock($1, hashtext($2))", CLAIM_LOCK_CLASS, entity_type)
    local marker = step(M.MARKER_SQL, entity_type)[1]
    local claimed = step(M.CLAIM_SQL, entity_type, limit, run_id, run_lock_class, marker and marker.id)
    return { changes = claimed, marker = marker }
  end)
end

-- Are changes queued before the marker still in the queue (free, or in a
-- unit that has not committed)? Returns true | false, or nil, err.
function M.pending_before(store, entity_type, marker_id)
  local rows, err = store:query([[select exists (select 1 from ragops_sync.changes where entity_type = $1
                                    and id < $2 and op in ('I', 'U', 'D')) as pending]], entity_type, marker_id)
  if not rows then return nil, err end
  return rows[1].pending
end

-- Removes a marker once applied. Returns true or nil, err.
function M.drop_marker(store, marker_id)
  local rows, err = store:query("delete from ragops_sync.changes where id = $1", marker_id)
  if not rows then return nil, err end
  return true
end

-- Applies an 'R' marker: one change 'U' for every entity of entity_type
-- with documents in target (the quoted documents table), and the marker
-- gone, in one transaction (another follower that applied it first leaves
-- nothing to do). Returns the entities queued or nil, err.
function M.expand_marker(store, target, entity_type, marker_id)
  return store:transaction(function(step)
    if step("delete from ragops_sync.changes where id = $1", marker_id).affected == 0 then return 0 end
    return step(([[insert into ragops_sync.changes (entity_type, entity_key, op)
                   select $1, d.entity_id, 'U' from (select distinct entity_id from %s where entity_type = $1) d]])
      :format(target), entity_type).affected
  end)
end

-- Frees the claims an earlier process of this follower's run left (it was
-- killed): the run's lock is now ours, so they would look held forever.
function M.release_claims(store, run_id)
  local rows, err = store:query("update ragops_sync.changes set claimed_by = null where claimed_by = $1", run_id)
  if not rows then return nil, err end
  return rows.affected
end

return M
