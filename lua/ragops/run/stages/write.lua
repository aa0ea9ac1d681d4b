-- ragops.run.stages.write: from vectors to rows. Receives a unit, its decision
-- and the embedded parts, and writes in ONE transaction (store:write_unit):
-- the documents (COPY + upsert), stale chunks pruned, unchanged documents
-- refreshed, dead letters recorded, dead letters of entities now indexed
-- resolved, and the run's progress (checkpoint + units committed past it).
-- A crash between any two of these is impossible: they commit together.
-- A unit with nothing to write opens no transaction: its progress goes
-- with a later one (see FLUSH_UNITS).
-- Hands on the unit's delta with deleted/refreshed filled in, or nil after
-- stopping the run (the database retry policy lives in ragops.store.pool).
--
-- The tracker knows which units of a source committed, to compute a
-- checkpoint that never skips an uncommitted unit (the last key of the
-- longest committed prefix) and which committed units lie past it.
local run_context = require "ragops.run.context"
local instruments = require "ragops.obs.instruments"

local M = {}

-- A unit with nothing to write commits nothing: the committed prefix it
-- extends is recorded with the next unit that writes, or on its own once
-- FLUSH_UNITS units or FLUSH_MS went unrecorded, and at the end of the
-- source. A kill -9 redoes at most those units, which wrote nothing.
M.FLUSH_UNITS = 64
M.FLUSH_MS = 1000

local Tracker = {}
Tracker.__index = Tracker

-- cp = stored checkpoint of the source: { seq, after, stats, ahead };
-- now = the scheduler's clock (ms).
function M.tracker(cp, now)
  cp = cp or {}
  return setmetatable({
    seq = cp.seq or 0, after = cp.after, next = (cp.seq or 0) + 1,
    stats = run_context.add_counters(run_context.new_counters(), cp.stats or {}),
    done = {},   -- seq -> { key, delta, has_row } committed past the prefix
    rows = {},   -- last key -> seq of units with a ragops_run_units row
    recorded = cp.seq or 0, -- seq of the last checkpoint stored
    recorded_at = now or 0, -- when it was stored (ms)
    flushing = false, -- a flush of the prefix is in flight
  }, Tracker)
end

-- The units with rows that a checkpoint through seq covers (last keys).
function Tracker:covered_through(seq)
  local covered = {}
  for last_key, s in pairs(self.rows) do
    if s <= seq then covered[#covered + 1] = last_key end
  end
  return covered
end

-- Notes that a checkpoint through seq was stored at now.
function Tracker:recorded_through(seq, now)
  if seq > self.recorded then self.recorded, self.recorded_at = seq, now end
end

-- The committed prefix to record on its own, when it is due (see
-- FLUSH_UNITS; force: whenever something is unrecorded), or nil.
function Tracker:due(now, force)
  if self.flushing or self.seq <= self.recorded then return nil end
  if not force and self.seq - self.recorded < M.FLUSH_UNITS and now - self.recorded_at < M.FLUSH_MS then
    return nil
  end
  return { seq = self.seq, after = self.after, stats = run_context.add_counters({}, self.stats),
           covered = self:covered_through(self.seq), includes_unit = false }
end

-- The checkpoint to write with unit's transaction, assuming it commits:
-- { seq, after, stats, covered = last keys of rows the prefix now covers,
--   includes_unit = the unit is in the prefix }.
function Tracker:candidate(unit, delta)
  local seq, key = self.seq, self.after
  local prefix = run_context.add_counters({}, self.stats)
  local n, includes_unit = self.next, false
  while true do
    local d
    if n == unit.seq then d = { key = unit.last_key, delta = delta }; includes_unit = true
    else d = self.done[n] end
    if d == nil then break end
    seq, key = n, d.key
    run_context.add_counters(prefix, d.delta)
    n = n + 1
  end
  return { seq = seq, after = key, stats = prefix, covered = self:covered_through(seq),
           includes_unit = includes_unit }
end

-- Records that unit committed with delta; has_row: it has a
-- ragops_run_units row (it committed past the prefix, or was one of those
-- found at resume); covered: the rows its transaction deleted.
function Tracker:committed(unit, delta, has_row, covered)
  for _, k in ipairs(covered or {}) do self.rows[k] = nil end
  if has_row then self.rows[unit.last_key] = unit.seq end
  self.done[unit.seq] = { key = unit.last_key, delta = delta }
  while self.done[self.next] ~= nil do
    local d = self.done[self.next]
    self.seq, self.after = self.next, d.key
    run_context.add_counters(self.stats, d.delta)
    self.done[self.next] = nil
    self.next = self.next + 1
  end
end

-- Dead letters for the entities with a failed chunk (marks them failed).
local function dead_letters(entity_type, decision, failed_groups)
  for _, g in ipairs(failed_groups) do
    for _, it in ipairs(g.items) do
      local c = decision.changed[it.entity.id]
      if not c.failed then
        c.failed = true
        decision.failures[#decision.failures + 1] = {
          entity_type = entity_type, entity_id = it.entity.id, chunk_index = it.chunk.index,
          error_class = g.info.class or "transient",
          http_status = g.info.status ~= 0 and g.info.status or nil,
          message = tostring(g.err), attempts = g.attempts,
          -- for a support ticket: our X-Request-Id and the provider's own id
          request_id = g.info.request_id, provider_request_id = g.info.provider_request_id }
      end
    end
  end
end

-- Documents of the parts whose entity did not fail, per part.
local function document_parts(ctx, entity_type, decision, parts)
  local out, embedded = {}, 0
  for _, part in ipairs(parts) do
    local docs = {}
    for i, it in ipairs(part.items) do
      if not decision.changed[it.entity.id].failed then
        docs[#docs + 1] = { entity_type = entity_type, entity_id = it.entity.id,
          chunk_index = it.chunk.index, content = it.chunk.content,
          content_hash = it.chunk.hash, metadata = it.chunk.metadata,
          embedding_model = ctx.env.model, source_updated_at = it.entity.updated_at,
          source_updated_us = it.entity.updated_us, vec = part.rows and part.rows[i] or i,
          source_hash = it.chunk.index == 0 and it.entity.fp or nil }
      end
    end
    if #docs > 0 then
      out[#out + 1] = { docs = docs, batch = part.batch }
      embedded = embedded + #docs
    end
  end
  return out, embedded
end

-- The fingerprints to store on chunk 0 of the entities of a unit that end
-- indexed and whose chunk 0 is not rewritten (the COPY and the upsert carry
-- it) nor refreshed (the refresh carries it): { entity_ids, fps ("": none) }.
-- Every write of a document keeps its fingerprint true (the fingerprint of
-- the row it was written from, or none), or a re-run would skip a row whose
-- document no longer matches it. So: an entity read in a fast re-run
-- (ragops.run.stages.read: it reached decide because the target does not hold
-- its row's fingerprint), a changed one (chunks re-embedded or pruned), and
-- one refreshed past its chunk 0 (decision.refit).
local function fingerprints(unit, decision, doc_parts)
  local out = { entity_ids = {}, fps = {} }
  local rewritten = {}
  for _, part in ipairs(doc_parts) do
    for _, d in ipairs(part.docs) do
      if d.chunk_index == 0 then rewritten[d.entity_id] = true end
    end
  end
  local refit = decision.refit or {}
  for _, e in ipairs(decision.entities) do
    local c = decision.changed[e.id]
    local written = c ~= nil or refit[e.id] or (unit.fingerprinted and e.fp ~= nil)
    if written and #e.chunks > 0 and not rewritten[e.id] and not (c and c.failed) then
      out.entity_ids[#out.entity_ids + 1] = e.id
      out.fps[#out.fps + 1] = e.fp or ""
    end
  end
  return out
end

-- The decision's refreshes without those of entities that failed (an
-- entity with a failed chunk is not written, not even in part).
local function refreshes(decision)
  local r = decision.refresh
  local keep = {}
  for i, id in ipairs(r.entity_ids) do
    local c = decision.changed[id]
    if not (c and c.failed) then keep[#keep + 1] = i end
  end
  if #keep == #r.entity_ids then return r end
  local out = { entity_ids = {}, chunk_indexes = {}, metadata = {}, updated_at = {}, fps = {} }
  for _, i in ipairs(keep) do
    for field, list in pairs(out) do list[#list + 1] = r[field][i] end
  end
  return out
end

-- The payload of store:write_unit, and the unit's delta filled in.
function M.payload(ctx, unit, decision, parts, failed_groups, delta)
  local entity_type = unit.source.entity_type
  dead_letters(entity_type, decision, failed_groups)
  local doc_parts, embedded = document_parts(ctx, entity_type, decision, parts)
  local prune = { entity_ids = {}, counts = {} }
  for i, id in ipairs(decision.prune.entity_ids) do
    local c = decision.changed[id] -- nil: an entity without a document
    if not (c and c.failed) then
      prune.entity_ids[#prune.entity_ids + 1] = id
      prune.counts[#prune.counts + 1] = decision.prune.counts[i]
    end
  end
  -- Entities now indexed whose dead letters may be open (the store says
  -- which have one): resolved in the same transaction.
  local resolved, succeeded = {}, 0
  for _, id in ipairs(decision.unchanged_ids) do resolved[#resolved + 1] = id end
  for id, c in pairs(decision.changed) do
    if not c.failed then
      succeeded = succeeded + 1
      if c.may_have_failure then resolved[#resolved + 1] = id end
    end
  end
  delta.succeeded = succeeded
  delta.embedded = embedded
  delta.failed = #decision.failures
  for _, e in ipairs(decision.entities) do delta.chunks = delta.chunks + #e.chunks end
  return { entity_type = entity_type, run_id = ctx.env.run_id, parts = doc_parts,
           chunk_counts = prune, refresh = refreshes(decision), failures = decision.failures,
           resolved_ids = resolved, usage = M.usage(ctx, delta), sync = unit.sync,
           -- the Batch API's bookkeeping (ragops.run.batch): a unit's lines
           -- in a part, a collected unit marked
           batch = (unit.batch_add or unit.batch_collected)
             and { add = unit.batch_add, collected = unit.batch_collected and
                   { batch = unit.batch_collected.batch, unit_no = unit.batch_collected.unit_no, stats = delta } }
             or nil,
           into_target = decision.all_new, fingerprints = fingerprints(unit, decision, doc_parts),
           -- entities without a document marked, and those now indexed unmarked
           -- (stages.decide no_document_markers)
           no_document = decision.mark, no_document_cleared = decision.unmark }
end

-- What the provider billed for this unit against what was sent, for the
-- token calibration (ragops_token_usage); nil when it reported no usage.
function M.usage(ctx, delta)
  if delta.tokens <= 0 or delta.bytes <= 0 then return nil end
  return { model = ctx.env.model, documents = delta.succeeded, chunks = delta.embedded,
           bytes = delta.bytes, chars = delta.chars, tokens = delta.tokens }
end

-- True when the payload changes nothing: no documents, stale chunks,
-- refreshes, fingerprints, dead letters, resolutions, usage or sync bookkeeping.
local function changes_nothing(p)
  return #p.parts == 0 and #p.chunk_counts.entity_ids == 0 and #p.refresh.entity_ids == 0
    and #p.fingerprints.entity_ids == 0
    and #p.failures == 0 and #p.resolved_ids == 0 and p.usage == nil and p.sync == nil and p.batch == nil
    and #((p.no_document or {}).entity_ids or {}) == 0 and #(p.no_document_cleared or {}) == 0
end

-- An empty payload of the run's entity type (only the progress to record).
local function empty_payload(ctx, entity_type, checkpoint)
  return { entity_type = entity_type, run_id = ctx.env.run_id, parts = {},
           chunk_counts = { entity_ids = {}, counts = {} }, refresh = { entity_ids = {} },
           failures = {}, resolved_ids = {}, checkpoint = checkpoint }
end

-- Stores the committed prefix on its own when it is due (Tracker:due);
-- force: at the end of the source. Returns true, or nil after stopping
-- the run (or after a failure when it was stopping already).
function M.flush(ctx, entity_type, tracker, force)
  if not (tracker and ctx.env.run_id) then return true end
  local checkpoint = tracker:due(ctx.sched.now(), force)
  if not checkpoint then return true end
  tracker.flushing = true
  local result, err, state = ctx.store:write_unit(empty_payload(ctx, entity_type, checkpoint))
  tracker.flushing = false
  if not result then
    if not ctx.aborted then
      ctx:abort_db("não foi possível gravar o progresso no PostgreSQL", err, state)
    end
    return nil
  end
  for _, k in ipairs(checkpoint.covered) do tracker.rows[k] = nil end
  tracker:recorded_through(checkpoint.seq, ctx.sched.now())
  return true
end

-- A unit that changes nothing: committed in memory only (its progress is
-- flushed later, see FLUSH_UNITS). Returns the delta, or nil after stopping.
local function skip_write(ctx, unit, delta, tracker)
  delta.deleted, delta.refreshed, delta.resolved = 0, 0, 0
  if tracker then tracker:committed(unit, delta, false) end
  if not M.flush(ctx, unit.source.entity_type, tracker) then return nil end
  return delta
end

-- Writes the unit with its progress (nothing, when it changes nothing).
-- Returns the completed delta, or nil after stopping the run.
function M.write(ctx, unit, payload, delta, tracker)
  if changes_nothing(payload) then return skip_write(ctx, unit, delta, tracker) end
  local checkpoint
  if tracker then
    checkpoint = tracker:candidate(unit, delta)
    payload.checkpoint = checkpoint
    if not checkpoint.includes_unit then
      payload.ahead = { first_key = unit.first_key, after_key = unit.after_key,
                        last_key = unit.last_key, stats = run_context.add_counters({}, delta) }
    end
  elseif ctx.store.work_unit then
    -- A scale-out work unit records each part it commits, in the part's
    -- transaction (ragops.run.workunits): a takeover skips it, totals count it.
    payload.part = { first_key = unit.first_key, after_key = unit.after_key,
                     last_key = unit.last_key, stats = run_context.add_counters({}, delta) }
  end
  local started = ctx.sched.now()
  local result, err, state = ctx.store:write_unit(payload)
  instruments.observe(ctx, "ragops_write_duration_seconds", nil, (ctx.sched.now() - started) / 1000)
  if not result then
    ctx:abort_db("não foi possível gravar no PostgreSQL", err, state)
    return nil
  end
  delta.deleted = result.pruned
  delta.refreshed = result.refreshed or 0
  delta.resolved = result.resolved
  if tracker then
    tracker:committed(unit, delta, payload.ahead ~= nil, checkpoint.covered)
    if ctx.env.run_id then tracker:recorded_through(checkpoint.seq, ctx.sched.now()) end
  end
  for _, f in ipairs(payload.failures) do
    ctx.log.warn("falha permanente em %s %s: %s", f.entity_type, f.entity_id, f.message)
  end
  return delta
end

return M
