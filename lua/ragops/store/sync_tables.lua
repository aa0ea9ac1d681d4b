-- ragops.store.sync_tables: what the store itself does with the tables of
-- ragops sync (created by `ragops sync install`, ragops.sync.queue): inside
-- a unit's write transaction (ragops.store.pg write_unit) the claimed
-- changes leave the queue, entities gone from the source lose their
-- documents and the watermark moves (M.write); the queue's depth and lag
-- for status and metrics (M.depth); and the trust check of every object in
-- ragops_sync (M.check_owned). Here, below ragops.sync, so the store never
-- requires the sync room.
local migrate = require "ragops.store.migrate"

local M = {}

-- Every object in ragops_sync, for ragops.store.migrate.check_owned: the schema,
-- its relations (tables, sequences, indexes...) and functions, grants of
-- CREATE on it, and triggers on its tables (ragops never creates any).
M.OBJECTS_SQL = [[
  select 'o esquema' as kind, n.nspname::text as name, n.nspowner as owner, 'owner' as what
    from pg_namespace n where n.nspname = 'ragops_sync'
  union all
  select 'o esquema', n.nspname::text, a.grantee, 'create'
    from pg_namespace n, aclexplode(n.nspacl) a
   where n.nspname = 'ragops_sync' and a.privilege_type = 'CREATE' and a.grantee <> n.nspowner
  union all
  select case c.relkind when 'S' then 'a sequência' when 'i' then 'o índice' when 'v' then 'a visão'
                        else 'a tabela' end, format('%I.%I', n.nspname, c.relname), c.relowner, 'owner'
    from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = 'ragops_sync'
  union all
  select 'a função', format('%I.%I()', n.nspname, p.proname), p.proowner, 'owner'
    from pg_proc p join pg_namespace n on n.oid = p.pronamespace where n.nspname = 'ragops_sync'
  union all
  select 'o gatilho', format('%I em %I.%I', t.tgname, n.nspname, c.relname), c.relowner, 'foreign'
    from pg_trigger t join pg_class c on c.oid = t.tgrelid join pg_namespace n on n.oid = c.relnamespace
   where n.nspname = 'ragops_sync' and not t.tgisinternal]]

-- Is everything in ragops_sync trusted? Returns true, or nil, err, kind
-- ("usage": a refused object; "db").
function M.check_owned(query)
  return migrate.check_owned(query, M.OBJECTS_SQL)
end

-- Pending changes per entity type: { [entity_type] = { depth, lag_s } }
-- (lag: age of the oldest change), or {} when the queue is not installed,
-- or nil, err (also when an object of ragops_sync is not trusted).
function M.depth(query)
  local present = query("select to_regclass('ragops_sync.changes') is not null as ok")
  if not present or not present[1].ok then return {} end
  local owned, oerr = M.check_owned(query)
  if not owned then return nil, oerr end
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
    step(require("ragops.store.pg").RESOLVE_SQL, unit.run_id, unit.entity_type, sync.delete_ids)
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
