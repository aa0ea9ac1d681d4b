-- ragops.stages.changes: the read stage of `ragops sync`. Instead of
-- paging a whole source, it hands on units made of the source's CHANGES:
--   trigger strategy: changes claimed from the queue (ragops.sync_queue),
--     coalesced by entity; the unit's rows are the source rows of those keys,
--     and the keys the source no longer has are deletions (the same proof
--     by key as the runner's present_keys);
--   watermark strategy: source rows with updated_at at or after the last
--     committed watermark minus the overlap, in (updated_at, key) order.
-- Each unit carries `sync` (see ragops.sync_queue.write), handled in the
-- unit's write transaction: claimed changes deleted, watermark advanced.
local decide = require "ragops.stages.decide"
local sync_queue = require "ragops.sync_queue"
local sync_watermark = require "ragops.sync_watermark"

local M = {}
local key_text = decide.key_text

-- Coalesces claimed changes: { keys (each entity once, oldest first), ids }.
function M.coalesce(changes)
  local keys, ids, seen = {}, {}, {}
  for _, c in ipairs(changes) do
    ids[#ids + 1] = c.id
    if not seen[c.entity_key] then
      seen[c.entity_key] = true
      keys[#keys + 1] = c.entity_key
    end
  end
  return keys, ids
end

-- The unit of one claim: source rows of the keys, the rest deletions.
local function queue_unit(ctx, source, seq, changes, run_id)
  local keys, ids = M.coalesce(changes)
  local rows, err = sync_queue.rows_by_key(ctx.store, source, keys)
  if not rows then return nil, err end
  local present, delete_ids = {}, {}
  for _, row in ipairs(rows) do present[key_text(row[source.key])] = true end
  for _, k in ipairs(keys) do
    if not present[k] then delete_ids[#delete_ids + 1] = k end
  end
  return { seq = seq, source = source, rows = rows, first_key = keys[1], last_key = keys[#keys],
           sync = { change_ids = ids, run_id = run_id, delete_ids = delete_ids } }
end

-- Claims and emits units until the queue of source's entity type is empty
-- (or the run stops). opts = { run_id, run_lock_class }. Returns the number
-- of changes claimed, or nil after stopping the run.
function M.drain_queue(ctx, source, opts, emit)
  local total, seq = 0, 0
  while not ctx:halted() do
    local changes, err = sync_queue.claim(ctx.store, source.entity_type, ctx.plan.batch.size,
      opts.run_id, opts.run_lock_class)
    if not changes then
      ctx:abort(4, ("falha ao tomar mudanças da fila de %q: %s"):format(source.entity_type, tostring(err)))
      return nil
    end
    if #changes == 0 then return total end
    total, seq = total + #changes, seq + 1
    local unit, ferr = queue_unit(ctx, source, seq, changes, opts.run_id)
    if not unit then
      ctx:abort(4, ("falha ao ler a fonte %q: %s"):format(source.entity_type, tostring(ferr)))
      return nil
    end
    emit(unit)
  end
  return total
end

-- Emits the rows changed since the watermark (minus the overlap) as units,
-- in (updated_at, key) order; each unit moves the watermark to its last
-- row's updated_at. opts = { plan_name }. Returns the rows read, or nil
-- after stopping the run.
function M.watermark_pass(ctx, source, opts, emit)
  local from, err = sync_watermark.start(ctx.store, opts.plan_name, source)
  if err then
    ctx:abort(4, ("falha ao ler a marca d'água de %q: %s"):format(source.entity_type, tostring(err)))
    return nil
  end
  local after, total, seq = nil, 0, 0
  while not ctx:halted() do
    local rows, rerr = sync_watermark.page(ctx.store, source, from, after, ctx.plan.batch.size)
    if not rows then
      ctx:abort(4, ("falha ao ler a fonte %q: %s"):format(source.entity_type, tostring(rerr)))
      return nil
    end
    if #rows == 0 then return total end
    local last = rows[#rows]
    after = { updated_at = last[source.updated_at], key = last[source.key] }
    total, seq = total + #rows, seq + 1
    emit({ seq = seq, source = source, rows = rows, first_key = key_text(rows[1][source.key]),
           last_key = key_text(last[source.key]),
           sync = { watermark = { plan = opts.plan_name, value = after.updated_at } } })
    if #rows < ctx.plan.batch.size then return total end
  end
  return total
end

return M
