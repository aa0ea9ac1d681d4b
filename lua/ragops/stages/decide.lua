-- ragops.stages.decide: from rows to decisions. Receives a unit (rows of one
-- page of a source) and the stored hashes of its entities; turns each row
-- into an entity with chunks and content hashes (the plan's document(),
-- under pcall), and decides per entity: skip (unchanged; metadata and
-- source_updated_at refreshed in place), embed (new or changed chunks), and
-- prune (stored chunks past the entity's new chunk count). With what the
-- store read with the page (store_pg fetch_page_existing: stored metadata,
-- source_updated_at and open dead letters), an unchanged chunk is refreshed
-- only where it differs and an unchanged entity resolved only when it has
-- an open dead letter, so an unchanged unit has nothing to write. Hands on a
-- `decision` for the embed and write stages:
--   { entities, failures (dead letters of document()/metadata),
--     items = { { text, chunk, entity } to embed }, changed = { [id] = { entity, failed } },
--     refresh = { entity_ids, chunk_indexes, metadata, updated_at },
--     prune = { entity_ids, counts }, unchanged_ids, skipped,
--     no_document (entities document() gave no content: counted apart, their
--       stored chunks pruned, see M.no_document_markers),
--     all_new (no entity has anything stored: COPY straight into the target) }
local cjson = require "cjson"
local chunk = require "ragops.chunk"
local sandbox = require "ragops.sandbox"

local M = {}

function M.key_text(v)
  if type(v) == "number" and v == math.floor(v) and math.abs(v) < 2^53 then
    return ("%d"):format(v)
  end
  return tostring(v)
end
local key_text = M.key_text

-- metadata as JSON text, or nil, pt-BR reason (sparse arrays, NaN, cycles...).
local function encode_metadata(metadata)
  local ok, text = pcall(cjson.encode, metadata or {})
  if ok then return text end
  return nil, "os metadados devolvidos por document() não podem ser convertidos em JSON ("
    .. tostring(text):gsub("^.-:%d+: ", "") .. ")"
end

local function transform_failure(source, id, message, class)
  return { entity_type = source.entity_type, entity_id = id, error_class = class or "transform",
           attempts = 1, message = message }
end

-- One row -> entity { id, updated_at, chunks }, or nil, dead letter.
local function build_entity(ctx, source, row)
  local plan, env = ctx.plan, ctx.env
  local id = key_text(row[source.key])
  -- document() runs under the sandbox's time and memory budget; a breach or
  -- an error dead-letters the row (class time/memory/transform), and past
  -- sandbox.max_breaches budget breaches the run stops (code 2).
  ctx.hook_budget = ctx.hook_budget or sandbox.hook_budget()
  local ok, doc, class = sandbox.call(ctx.hook_budget, source.document, row)
  if not ok then
    local too_many = sandbox.breach_limit_reached(ctx.hook_budget)
    if too_many then ctx:abort(2, too_many) end
    return nil, transform_failure(source, id, "document() falhou: " .. doc, class ~= "error" and class or nil)
  end
  local e = { id = id, chunks = {} }
  local updated = source.updated_at and row[source.updated_at]
  e.updated_at = updated ~= nil and tostring(updated) or nil
  if type(doc) == "table" and type(doc.content) == "string" and doc.content:find("%S") then
    local metadata, merr = encode_metadata(doc.metadata)
    if not metadata then return nil, transform_failure(source, id, merr) end
    for i, text in ipairs(chunk.split(doc.content, plan.chunking.max_chars, plan.chunking.overlap)) do
      e.chunks[i] = { index = i - 1, content = text, metadata = metadata,
                      hash = env.hash(text, env.model, tostring(env.dim)) }
    end
  end
  return e
end

-- Turns the rows of a unit into entities with chunks and hashes.
-- (e.updated_us: updated_at in µs, and e.fp: the row's fingerprint, when
-- the store read them with the page).
function M.build_entities(ctx, unit)
  local entities, failures = {}, {}
  for _, row in ipairs(unit.rows) do
    local e, failure = build_entity(ctx, unit.source, row)
    if e then
      e.updated_us = unit.updated_us and unit.updated_us[e.id] or nil
      e.fp = unit.fps and unit.fps[e.id] or nil
      entities[#entities + 1] = e
    else
      failures[#failures + 1] = failure
    end
  end
  return entities, failures
end

-- True when no entity has anything stored (known: the store said so for
-- every entity) and each one's updated_at has its µs form: the unit's
-- documents can be copied straight into the target.
local function all_new(entities, existing, known)
  if not known or #entities == 0 then return false end
  for _, e in ipairs(entities) do
    if existing[e.id] or (e.updated_at ~= nil and e.updated_us == nil) then return false end
  end
  return true
end

-- Chunks of e that need an embedding (all of them in overwrite mode).
local function chunks_to_embed(mode, e, old)
  local out = {}
  for _, c in ipairs(e.chunks) do
    if mode == "overwrite" or not old or old.hashes[c.index] ~= c.hash then out[#out + 1] = c end
  end
  return out
end

-- Deep equality of two decoded JSON values (jsonb compares by value too).
function M.same_json(a, b)
  if type(a) ~= type(b) then return false end
  if type(a) ~= "table" then return a == b end
  for k, v in pairs(a) do if not M.same_json(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end

-- True when the stored chunk c of old may differ in metadata or
-- source_updated_at (always, when the store did not say what it holds).
local function needs_refresh(old, c, decoded)
  if not (old and old.metadata) then return true end
  if not old.same_updated_at[c.index] then return true end
  decoded[c.metadata] = decoded[c.metadata] or cjson.decode(c.metadata)
  return not M.same_json(old.metadata[c.index], decoded[c.metadata])
end

-- An unchanged entity: chunks to refresh in place, and the entity among
-- those whose dead letters are resolved unless the store says it has none.
local function keep_unchanged(d, e, old, known, decoded)
  d.skipped = d.skipped + 1
  if not known or (old and old.open_failure) then d.unchanged_ids[#d.unchanged_ids + 1] = e.id end
  local r = d.refresh
  for _, c in ipairs(e.chunks) do
    if needs_refresh(old, c, decoded) then
      r.entity_ids[#r.entity_ids + 1] = e.id
      r.chunk_indexes[#r.chunk_indexes + 1] = c.index
      r.metadata[#r.metadata + 1] = c.metadata
      r.updated_at[#r.updated_at + 1] = e.updated_at or ""
    end
  end
end

-- An entity the plan gave no document (document() returned nil or blank
-- content): not skipped, not indexed, counted apart; what it had stored is
-- pruned and its dead letters resolved (the plan decided, nothing failed).
local function keep_no_document(d, e, old, known)
  d.no_document = d.no_document + 1
  d.no_document_entities[#d.no_document_entities + 1] = e
  if not known or (old and old.open_failure) then d.unchanged_ids[#d.unchanged_ids + 1] = e.id end
  if old and old.count > 0 then
    d.prune.entity_ids[#d.prune.entity_ids + 1] = e.id
    d.prune.counts[#d.prune.counts + 1] = 0
  end
end

-- Decides per entity against existing = { [id] = { count, hashes } }; known:
-- existing comes from ragops.store_pg fetch_page_existing (with metadata,
-- same_updated_at and open_failure, and every entity with an open dead
-- letter present), so unchanged chunks that match are not refreshed and
-- unchanged entities without a dead letter are not resolved.
-- unchanged_ids: the unchanged entities whose dead letters are resolved.
function M.decide(ctx, entities, failures, existing, known)
  local d = { entities = entities, failures = failures, items = {}, changed = {},
              refresh = { entity_ids = {}, chunk_indexes = {}, metadata = {}, updated_at = {} },
              prune = { entity_ids = {}, counts = {} }, unchanged_ids = {}, skipped = 0,
              no_document = 0, no_document_entities = {},
              all_new = all_new(entities, existing, known) }
  local mode = ctx.plan.mode
  local decoded = {} -- metadata text -> decoded, once per unit
  for _, e in ipairs(entities) do
    local old = existing[e.id]
    local to_embed = chunks_to_embed(mode, e, old)
    local dirty = mode == "overwrite" or #to_embed > 0 or (old and old.count or 0) ~= #e.chunks
    if #e.chunks == 0 then
      keep_no_document(d, e, old, known)
    elseif not dirty then
      keep_unchanged(d, e, old, known, decoded)
    else
      -- may_have_failure: its open dead letters are resolved once it is
      -- indexed (unknown when the store did not say).
      d.changed[e.id] = { entity = e, failed = false,
                          may_have_failure = not known or (old ~= nil and old.open_failure == true) }
      for _, c in ipairs(to_embed) do d.items[#d.items + 1] = { text = c.content, chunk = c, entity = e } end
      if old and old.count > #e.chunks then
        d.prune.entity_ids[#d.prune.entity_ids + 1] = e.id
        d.prune.counts[#d.prune.counts + 1] = #e.chunks
      end
    end
  end
  return d
end

-- ---- no-document markers (ragops_no_document) ----
-- What the store holds for entity_type's markers: ctx.no_document_state[t]
-- = { stored = the store had markers of t when the run first asked,
--     marked = { [id] = updated_at text } marked by this run since }. While
-- the store had none, the run's own marks are all there is to ask (a cold
-- backfill sends no query); a marker another process adds meanwhile next
-- to a document is harmless: a document wins (ragops.status).
local function marker_state(ctx, entity_type)
  ctx.no_document_state = ctx.no_document_state or {}
  local state = ctx.no_document_state[entity_type]
  if state then return state end
  local any, err = ctx.store:has_no_document(entity_type)
  if any == nil then return nil, err end
  -- Another worker may have asked while this one waited.
  state = ctx.no_document_state[entity_type] or { stored = any, marked = {} }
  ctx.no_document_state[entity_type] = state
  return state
end

-- { [id] = true (marker as of the row's updated_at) | false (older) } for
-- ids, or nil, err.
local function markers_of(ctx, entity_type, ids, updated_at)
  if #ids == 0 or not ctx.store.no_document_markers then return {} end
  local state, err = marker_state(ctx, entity_type)
  if not state then return nil, err end
  if state.stored then return ctx.store:no_document_markers(entity_type, ids, updated_at) end
  local out = {}
  for i, id in ipairs(ids) do
    local m = state.marked[id]
    if m ~= nil then out[id] = m == updated_at[i] end
  end
  return out
end

-- The markers the unit's write sets and clears, in d.mark = { entity_ids,
-- updated_at } (entities without a document whose marker is absent or
-- older than the row) and d.unmark (entities that now get documents and
-- had a marker): only those with nothing stored can have one. A store
-- without markers (a dry run's) gets every no-document entity marked.
-- Returns true, or nil after stopping the run.
function M.no_document_markers(ctx, entity_type, d, existing)
  local ids, updated_at = {}, {}
  for _, e in ipairs(d.no_document_entities) do
    ids[#ids + 1], updated_at[#updated_at + 1] = e.id, e.updated_at or ""
  end
  for id, c in pairs(d.changed) do
    local old = existing[id]
    if not old or old.count == 0 then
      ids[#ids + 1], updated_at[#updated_at + 1] = id, c.entity.updated_at or ""
    end
  end
  local markers, err = markers_of(ctx, entity_type, ids, updated_at)
  if not markers then
    ctx:abort(4, "falha ao consultar as entidades sem documento: " .. tostring(err))
    return nil
  end
  local state = ctx.no_document_state and ctx.no_document_state[entity_type]
  d.mark, d.unmark = { entity_ids = {}, updated_at = {} }, {}
  for i = 1, #d.no_document_entities do
    if markers[ids[i]] ~= true then
      d.mark.entity_ids[#d.mark.entity_ids + 1], d.mark.updated_at[#d.mark.updated_at + 1] = ids[i], updated_at[i]
      if state and not state.stored then state.marked[ids[i]] = updated_at[i] end
    end
  end
  for i = #d.no_document_entities + 1, #ids do
    if markers[ids[i]] ~= nil then
      d.unmark[#d.unmark + 1] = ids[i]
      if state then state.marked[ids[i]] = nil end
    end
  end
  return true
end

return M
