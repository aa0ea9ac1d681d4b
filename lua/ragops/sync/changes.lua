-- ragops.sync.changes: the read stage of `ragops sync`. Instead of
-- paging a whole source, it hands on units made of the source's CHANGES:
--   trigger strategy: changes claimed from the queue (ragops.sync.queue),
--     coalesced by entity; the unit's rows are the source rows of those keys,
--     and the keys the source no longer has are deletions (the same proof
--     by key as the runner's present_keys); a TRUNCATE marker is applied
--     in queue order (apply_marker);
--   watermark strategy: source rows with updated_at at or after the last
--     committed watermark minus the overlap, in (updated_at, key) order;
--     first, with sync.soft_delete, the keys marked deleted since then that
--     the source no longer returns (deletions, the same proof by key).
-- Each unit carries `sync` (see ragops.sync.queue.write), handled in the
-- unit's write transaction: claimed changes deleted, watermark advanced.
local decide = require "ragops.run.stages.decide"
local exit = require "ragops.util.exit"
local sync_queue = require "ragops.sync.queue"
local sync_watermark = require "ragops.sync.watermark"

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
  local rows, err = ctx.store:rows_by_key(source, keys)
  if not rows then return nil, err end
  local present, delete_ids = {}, {}
  for _, row in ipairs(rows) do present[key_text(row[source.key])] = true end
  for _, k in ipairs(keys) do
    if not present[k] then delete_ids[#delete_ids + 1] = k end
  end
  return { seq = seq, source = source, rows = rows, first_key = keys[1], last_key = keys[#keys],
           sync = { change_ids = ids, run_id = run_id, delete_ids = delete_ids } }
end

M.MARKER_WAIT_MS = 100 -- while changes queued before a TRUNCATE marker are in flight

-- Applies a TRUNCATE marker once every change queued before it has
-- committed (units that read the source before the TRUNCATE must not write
-- after the deletions), else waits a moment: 'T', the anti-join of the
-- entity type's documents against the source (ragops.sync.watermark), then
-- the marker goes; 'R', every indexed entity queued again. Returns true, or
-- nil after stopping the run.
local function apply_marker(ctx, source, marker, opts)
  local entity_type = source.entity_type
  local pending, err = sync_queue.pending_before(ctx.store, entity_type, marker.id)
  if pending then ctx.sched.sleep(M.MARKER_WAIT_MS); return true end
  if pending ~= nil and marker.op == "T" then
    local n, dropped
    n, err = sync_watermark.orphan_pass(ctx.store, opts.target, source)
    if n then dropped, err = sync_queue.drop_marker(ctx.store, marker.id) end
    if dropped then
      ctx:merge(entity_type, { deleted = n })
      ctx.log.info("TRUNCATE na fonte de %s: %d documento(s) de entidades ausentes da fonte removido(s)", entity_type, n)
      return true
    end
  elseif pending ~= nil then
    local n
    n, err = sync_queue.expand_marker(ctx.store, opts.target, entity_type, marker.id)
    if n then
      ctx.log.info("TRUNCATE numa tabela relacionada a %s: %d entidade(s) voltam à fila para nova leitura", entity_type, n)
      return true
    end
  end
  ctx:abort(exit.unreachable, ("falha ao aplicar o TRUNCATE registrado na fila de %q: %s"):format(entity_type, tostring(err)))
  return nil
end

-- Claims and emits units until the queue of source's entity type is empty
-- (or the run stops); TRUNCATE markers are applied in queue order.
-- opts = { run_id, run_lock_class, target }. Returns the number of changes
-- claimed, or nil after stopping the run.
function M.drain_queue(ctx, source, opts, emit)
  local total, seq = 0, 0
  while not ctx:halted() do
    local claim, err = sync_queue.claim(ctx.store, source.entity_type, ctx.plan.batch.size,
      opts.run_id, opts.run_lock_class)
    if not claim then
      ctx:abort(exit.unreachable, ("falha ao tomar mudanças da fila de %q: %s"):format(source.entity_type, tostring(err)))
      return nil
    end
    local changes = claim.changes
    if #changes > 0 then
      total, seq = total + #changes, seq + 1
      local unit, ferr = queue_unit(ctx, source, seq, changes, opts.run_id)
      if not unit then
        ctx:abort(exit.unreachable, ("falha ao ler a fonte %q: %s"):format(source.entity_type, tostring(ferr)))
        return nil
      end
      emit(unit)
    elseif not claim.marker then
      return total
    elseif not apply_marker(ctx, source, claim.marker, opts) then
      return nil
    end
  end
  return total
end

-- Keys among `keys` (text) that the source no longer returns, asked by
-- key only. Returns the list or nil, err.
local function absent_keys(ctx, source, keys)
  local rows, err = ctx.store:rows_by_key(source, keys)
  if not rows then return nil, err end
  local present, gone = {}, {}
  for _, row in ipairs(rows) do present[key_text(row[source.key])] = true end
  for _, k in ipairs(keys) do
    if not present[k] then gone[#gone + 1] = k end
  end
  return gone
end

-- The soft deletes of a pass (sync.soft_delete): units deleting the
-- documents of rows marked deleted at or after `from` that the source no
-- longer returns. Returns the last unit's seq, or nil after stopping.
local function soft_delete_units(ctx, source, from, opts, emit)
  local after, seq, limit = nil, 0, ctx.plan.batch.size
  while source.sync.soft_delete and not ctx:halted() do
    local keys, err = sync_watermark.soft_deleted_page(ctx.store, opts.target, source, from, after, limit)
    local gone = {}
    if keys and #keys > 0 then gone, err = absent_keys(ctx, source, keys) end
    if not keys or not gone then
      ctx:abort(exit.unreachable, ("falha ao procurar remoções lógicas de %q: %s"):format(source.entity_type, tostring(err)))
      return nil
    end
    if #gone > 0 then
      seq = seq + 1
      emit({ seq = seq, source = source, rows = {}, first_key = gone[1], last_key = gone[#gone],
             sync = { delete_ids = gone, run_id = opts.run_id } })
    end
    if #keys < limit then break end
    after = keys[#keys]
  end
  return seq
end

-- Emits the rows changed since the watermark (minus the overlap) as units,
-- in (updated_at, key) order; each unit moves the watermark to its last
-- row's updated_at. Soft deletes since then come first. opts = { plan_name,
-- target, run_id }. Returns the rows read, or nil after stopping the run.
function M.watermark_pass(ctx, source, opts, emit)
  local from, err = sync_watermark.start(ctx.store, opts.plan_name, source)
  if err then
    ctx:abort(exit.unreachable, ("falha ao ler a marca d'água de %q: %s"):format(source.entity_type, tostring(err)))
    return nil
  end
  local seq = soft_delete_units(ctx, source, from, opts, emit)
  if not seq then return nil end
  local after, total = nil, 0
  while not ctx:halted() do
    local rows, rerr = sync_watermark.page(ctx.store, source, from, after, ctx.plan.batch.size)
    if not rows then
      ctx:abort(exit.unreachable, ("falha ao ler a fonte %q: %s"):format(source.entity_type, tostring(rerr)))
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
