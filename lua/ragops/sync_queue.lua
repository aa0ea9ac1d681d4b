-- ragops.sync_queue: the change queue of the trigger strategy, in the
-- engine's schema ragops_sync (created by `ragops sync install`, not by
-- migrate). Install creates, for every source with sync.strategy =
-- "trigger", AFTER INSERT/UPDATE/DELETE row triggers on its table (and on
-- each related table) that enqueue (entity_type, key, op) and NOTIFY
-- ragops_sync; ragops_sync.installed records exactly what was created, so
-- uninstall removes exactly that and a second install of the same plan is
-- a no-op. Followers claim changes (see M.CLAIM_SQL) and delete them in the
-- transaction that writes the documents (M.write).
local pg = require "ragops.pg"
local sqlname = require "ragops.sqlname"

local M = {}

M.SCHEMA = "ragops_sync"
M.CHANNEL = "ragops_sync"
local CLAIM_LOCK_CLASS = 7265679 -- advisory lock class serialising claims per entity type

M.INSUFFICIENT_PRIVILEGE = "42501"

local SCHEMA_SQL = {
  "create schema if not exists ragops_sync",
  [[create table if not exists ragops_sync.changes (
      id bigserial primary key,
      entity_type text not null,
      entity_key text not null,
      op text not null check (op in ('I', 'U', 'D')),
      enqueued_at timestamptz not null default clock_timestamp(),
      claimed_by bigint)]],
  "create index if not exists changes_by_entity on ragops_sync.changes (entity_type, entity_key)",
  "create index if not exists changes_by_type on ragops_sync.changes (entity_type, id)",
  -- The claimed changes (a few units' worth): "is this entity held?" without
  -- a scan of the whole backlog.
  [[create index if not exists changes_claimed on ragops_sync.changes (entity_type, entity_key)
      where claimed_by is not null]],
  [[create table if not exists ragops_sync.installed (
      plan text not null,
      entity_type text not null,
      source_table text not null,
      trigger_name text not null,
      function_name text not null,
      installed_at timestamptz not null default now(),
      primary key (plan, trigger_name))]],
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

-- The trigger function body for one table: direct (the source's own table,
-- keys of OLD and NEW) or related (entities found by the plan's query).
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
    "  perform pg_notify('" .. M.CHANNEL .. "', " .. literal(entity_type) .. ");",
    "  return null;",
    "end" }, "\n")
end

-- The triggers a plan needs: { entity_type, table, trigger_name, function_name, body },
-- named by a hash of what they do (a plan change gives other names).
function M.wanted(plan, hash)
  local out = {}
  for _, source in ipairs(plan.sources) do
    local sync = source.sync
    if sync and sync.strategy == "trigger" then
      local specs = { { table = sync.table, key_column = sync.key_column } }
      for _, r in ipairs(sync.related) do specs[#specs + 1] = { table = r.table, related = r } end
      for _, spec in ipairs(specs) do
        local body = function_body(source.entity_type, spec)
        local id = hash(source.entity_type, spec.table, body):sub(1, 16)
        out[#out + 1] = { entity_type = source.entity_type, table = spec.table, body = body,
                          trigger_name = "ragops_sync_" .. id, function_name = "f_" .. id }
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

local function create_trigger(step, t)
  local fn = "ragops_sync." .. pg.quote_ident(t.function_name)
  step(("create or replace function %s() returns trigger language plpgsql as %s"):format(fn, literal(t.body)))
  step(("create trigger %s after insert or update or delete on %s for each row execute function %s()")
    :format(pg.quote_ident(t.trigger_name), sqlname.quote_table(t.table), fn))
  step([[insert into ragops_sync.installed (plan, entity_type, source_table, trigger_name, function_name)
         values ($1, $2, $3, $4, $5)]], t.plan, t.entity_type, t.table, t.trigger_name, t.function_name)
end

-- The pt-BR explanation of a refused install (the role may not alter a table).
local function privilege_error(err)
  return "o papel do banco não tem permissão para criar os gatilhos da estratégia trigger (" .. tostring(err)
    .. "); é preciso ser dono das tabelas (ou ter o privilégio TRIGGER nelas e CREATE no banco). "
    .. 'Sem poder alterar a origem, use a estratégia watermark (sync = { strategy = "watermark" }), '
    .. "que só lê a coluna updated_at (veja docs/sincronizacao.md)"
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
    for _, sql in ipairs(SCHEMA_SQL) do step(sql) end
    step("select pg_advisory_xact_lock($1, hashtext($2))", CLAIM_LOCK_CLASS - 1, plan.name)
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
  if result.changed then
    return nil, ("o plano %q mudou desde o `ragops sync install`: os gatilhos instalados são %s, e o plano "
      .. "pede %s. Rode `ragops sync uninstall` e depois `ragops sync install` com este plano")
      :format(plan.name, result.changed, names(wanted)), "usage"
  end
  return result
end

-- Removes what install created for plan_name (from ragops_sync.installed,
-- whatever the plan says now); the schema goes with the last plan.
-- Returns { removed = n } or nil, err.
function M.uninstall(store, plan_name)
  return store:transaction(function(step)
    step("set local client_min_messages = warning") -- no NOTICE for the cascade
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
end

-- Is the queue installed (the schema exists)?
function M.installed(store)
  local rows, err = store:query("select to_regclass('ragops_sync.changes') is not null as ok")
  if not rows then return nil, err end
  return rows[1].ok
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
-- each, FOR UPDATE SKIP LOCKED inside).
M.CLAIM_SQL = [[
  with alive as materialized (
    select l.objid::bigint as run_id from pg_locks l
     where l.locktype = 'advisory' and l.granted and l.classid::bigint = $4 and l.objsubid = 2),
  free as (
    select q.id, q.entity_key from ragops_sync.changes q
     where q.entity_type = $1
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
     where q.entity_type = $1
       and (q.claimed_by is null or (q.claimed_by <> $3 and q.claimed_by not in (select run_id from alive)))
     for update of q skip locked)
  update ragops_sync.changes q set claimed_by = $3
    from locked where q.id = locked.id
  returning q.id, q.entity_key, q.op]]

-- Returns the claimed changes { { id, entity_key, op }, ... } or nil, err.
function M.claim(store, entity_type, limit, run_id, run_lock_class)
  return store:transaction(function(step)
    step("select pg_advisory_xact_lock($1, hashtext($2))", CLAIM_LOCK_CLASS, entity_type)
    return step(M.CLAIM_SQL, entity_type, limit, run_id, run_lock_class)
  end)
end

-- The source rows of the given keys (text), by key only: the parameter is
-- left untyped so PostgreSQL reads it as an array of the key column's own
-- type and can use the source's index on the key (a key::text comparison
-- would scan the whole source for every unit). Returns rows or nil, err.
function M.rows_by_key(store, source, keys)
  local key = "src." .. pg.quote_ident(source.key)
  return store:query(("select src.* from (%s) as src where %s = any($1) order by %s")
    :format(source.sql, key, key), keys)
end

-- Frees the claims an earlier process of this follower's run left (it was
-- killed): the run's lock is now ours, so they would look held forever.
function M.release_claims(store, run_id)
  local rows, err = store:query("update ragops_sync.changes set claimed_by = null where claimed_by = $1", run_id)
  if not rows then return nil, err end
  return rows.affected
end

-- Pending changes per entity type: { [entity_type] = { depth, lag_s } }
-- (lag: age of the oldest change), or {} when the queue is not installed.
function M.depth(query)
  local present = query("select to_regclass('ragops_sync.changes') is not null as ok")
  if not present or not present[1].ok then return {} end
  local rows, err = query([[select entity_type, count(*)::bigint as depth,
                                   extract(epoch from now() - min(enqueued_at))::float8 as lag_s
                              from ragops_sync.changes group by entity_type order by entity_type]])
  if not rows then return nil, err end
  local out = {}
  for _, r in ipairs(rows) do out[r.entity_type] = { depth = r.depth, lag_s = math.max(r.lag_s, 0) } end
  return out
end

M.CLAIM_LOST = "as mudanças deste lote foram tomadas por outro seguidor; o lote foi descartado"

-- Inside a unit's write transaction (store_pg.write_unit): the claimed
-- changes leave the queue (fenced: all of them still ours), entities gone
-- from the source lose their documents, and the watermark moves. Returns the
-- number of documents deleted.
function M.write(step, store, unit)
  local sync = unit.sync
  if not sync then return 0 end
  local deleted = 0
  if sync.change_ids and #sync.change_ids > 0 then
    local gone = step("delete from ragops_sync.changes where id = any($1::bigint[]) and claimed_by = $2",
      sync.change_ids, sync.run_id)
    if gone.affected ~= #sync.change_ids then error({ err = M.CLAIM_LOST, state = "RGSYN" }, 0) end
  end
  if sync.delete_ids and #sync.delete_ids > 0 then
    deleted = step(store.sql.delete_entities, unit.entity_type, sync.delete_ids).affected
    step(store.module.RESOLVE_SQL, unit.run_id, unit.entity_type, sync.delete_ids)
  end
  local w = sync.watermark
  if w then
    step([[insert into ragops_sync_watermarks as w (plan, entity_type, watermark) values ($1, $2, $3::timestamptz)
           on conflict (plan, entity_type) do update
             set watermark = greatest(w.watermark, excluded.watermark), updated_at = now()]],
      w.plan, unit.entity_type, w.value)
  end
  return deleted
end

return M
