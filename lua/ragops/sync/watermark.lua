-- ragops.sync.watermark: the watermark strategy's SQL (no DDL on the
-- source). The watermark (ragops_sync_watermarks, one per plan and entity
-- type) is the newest updated_at a committed unit covered; a pass reads
-- from the watermark minus sync.overlap_s (late commits, clock drift:
-- unchanged rows are skipped by hash) in (updated_at, key) order. Deletions
-- are found by a key-only anti-join between the indexed entities and the
-- source, page by page of indexed entity ids (never the whole key set in
-- memory), at most every sync.deletes_every_s. Soft deletes
-- (sync.soft_delete) are seen at every pass: the keys the declared table
-- marks deleted, changed since the pass's start, that still have documents
-- (M.soft_deleted_page); the caller deletes those the source no longer
-- returns.
local pg = require "ragops.pg"
local store_pg = require "ragops.store.pg"
local sqlname = require "ragops.util.sqlname"

local M = {}

M.DELETE_PAGE = 1000 -- indexed entities checked per anti-join statement

-- The start of a pass: watermark - overlap as timestamptz text, or nil
-- (no watermark yet: the whole source), or nil, err.
function M.start(store, plan_name, source)
  local rows, err = store:query([[select (watermark - make_interval(secs => $3))::text as from_ts
                                    from ragops_sync_watermarks where plan = $1 and entity_type = $2]],
    plan_name, source.entity_type, source.sync.overlap_s)
  if not rows then return nil, err end
  return rows[1] and rows[1].from_ts or nil
end

-- One page of rows changed at or after from_ts, after the (updated_at, key)
-- position `after` ({ updated_at, key } of the previous page's last row).
function M.page(store, source, from_ts, after, limit)
  local col, key = "src." .. pg.quote_ident(source.updated_at), "src." .. pg.quote_ident(source.key)
  local where, params = { col .. " is not null" }, {}
  local function param(v) params[#params + 1] = v; return "$" .. #params end
  if from_ts then where[#where + 1] = col .. " >= " .. param(from_ts) .. "::timestamptz" end
  if after then
    local ts = param(after.updated_at)
    where[#where + 1] = ("(%s > %s::timestamptz or (%s = %s::timestamptz and %s > %s))")
      :format(col, ts, col, ts, key, param(after.key))
  end
  local sql = ("select src.* from (%s) as src where %s order by %s, %s limit %s")
    :format(source.sql, table.concat(where, " and "), col, key, param(limit))
  return store:query(sql, unpack(params))
end

-- One page of keys (text, in text order, after `after_key`) of rows the
-- soft-delete table marks deleted, with updated_at at or after from_ts
-- (every marked row when nil), that still have a document in target (the
-- quoted documents table). A mark is true, or not null for a column of any
-- other type (deleted_at). Returns { key, ... } or nil, err.
function M.soft_deleted_page(store, target, source, from_ts, after_key, limit)
  local sd = source.sync.soft_delete
  local key = "t." .. pg.quote_ident(sd.key_column) .. "::text"
  local where = { ("coalesce(to_jsonb(t.%s) <> 'false'::jsonb, false)"):format(pg.quote_ident(sd.column)),
                  key .. " > $2",
                  ("exists (select 1 from %s d where d.entity_type = $1 and d.entity_id = %s)"):format(target, key) }
  local params = { source.entity_type, after_key or "", limit }
  if from_ts then
    params[4] = from_ts
    where[#where + 1] = ("t.%s >= $4::timestamptz"):format(pg.quote_ident(sd.updated_at))
  end
  local rows, err = store:query(("select %s as k from %s t where %s order by 1 limit $3")
    :format(key, sqlname.quote_table(sd.table), table.concat(where, " and ")), unpack(params, 1, from_ts and 4 or 3))
  if not rows then return nil, err end
  local keys = {}
  for i, r in ipairs(rows) do keys[i] = r.k end
  return keys
end

-- Is a deletion pass due (none yet, or the last one deletes_every_s ago)?
function M.deletes_due(store, plan_name, source)
  local rows, err = store:query([[select coalesce(deletes_checked_at < now() - make_interval(secs => $3), true) as due
                                    from ragops_sync_watermarks where plan = $1 and entity_type = $2]],
    plan_name, source.entity_type, source.sync.deletes_every_s)
  if not rows then return nil, err end
  return rows[1] == nil or rows[1].due
end

-- One anti-join statement: the indexed entities of the page after
-- `after_id` (text order) that the source no longer has are deleted.
-- Returns { last = last entity id of the page or nil, deleted = n }.
local function delete_page(step, target, source, after_id)
  local page = step(([[select max(entity_id) as last from (
      select distinct entity_id from %s where entity_type = $1 and entity_id > $2
       order by entity_id limit $3) as p]]):format(target), source.entity_type, after_id, M.DELETE_PAGE)
  local last = page[1].last
  if not last then return { deleted = 0 } end
  local deleted = step(("delete from %s d where d.entity_type = $1 and d.entity_id > $2 and d.entity_id <= $3 and %s")
    :format(target, store_pg.absent_from_source(source, "d")), source.entity_type, after_id, last).affected
  return { last = last, deleted = deleted }
end

-- The anti-join over every page of target (the quoted documents table):
-- the documents of source's entity type whose entity the source no longer
-- has are deleted. Returns the documents deleted or nil, err.
function M.orphan_pass(store, target, source)
  local after, total = "", 0
  repeat
    local page, err = store:transaction(function(step) return delete_page(step, target, source, after) end)
    if not page then return nil, err end
    total, after = total + page.deleted, page.last
  until not after
  return total
end

-- The deletion pass (M.orphan_pass); records when it ran. Returns the
-- documents deleted or nil, err.
function M.delete_pass(store, target, plan_name, source)
  local total, perr = M.orphan_pass(store, target, source)
  if not total then return nil, perr end
  local ok, err = store:query([[insert into ragops_sync_watermarks as w (plan, entity_type, watermark, deletes_checked_at)
                                values ($1, $2, '-infinity', now())
                                on conflict (plan, entity_type) do update set deletes_checked_at = now()]],
    plan_name, source.entity_type)
  if not ok then return nil, err end
  return total
end

return M
