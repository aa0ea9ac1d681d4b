-- ragops.run.stages.decide: from rows to decisions. Receives a unit (rows of one
-- page of a source) and the stored hashes of its entities; turns each row
-- into an entity with chunks and content hashes (the plan's document(),
-- under pcall), and decides per entity: skip (unchanged; metadata and
-- source_updated_at refreshed in place), embed (new or changed chunks), and
-- prune (stored chunks past the entity's new chunk count). What document()
-- returns is checked before anything is embedded (M.check_document: what a
-- document may be); a bad one is a dead letter (invalid_document). With what the
-- store read with the page (store_pg fetch_page_existing: stored metadata,
-- source_updated_at and open dead letters), an unchanged chunk is refreshed
-- only where it differs and an unchanged entity resolved only when it has
-- an open dead letter, so an unchanged unit has nothing to write. Hands on a
-- `decision` for the embed and write stages:
--   { entities, failures (dead letters of document()/metadata),
--     items = { { text, chunk, entity } to embed }, changed = { [id] = { entity, failed } },
--     refresh = { entity_ids, chunk_indexes, metadata, updated_at, fps },
--     refit = { [id] = true: refreshed, but not its chunk 0 (its fingerprint
--               is set apart, see ragops.run.stages.write fingerprints) },
--     prune = { entity_ids, counts }, unchanged_ids, skipped,
--     no_document (entities document() gave no content: counted apart, their
--       stored chunks pruned, see M.no_document_markers),
--     all_new (no entity has anything stored: COPY straight into the target) }
local cjson = require "cjson"
local chunk = require "ragops.plan.chunk"
local exit = require "ragops.util.exit"
local keys = require "ragops.util.keys"
local sandbox = require "ragops.plan.sandbox"

local M = {}

-- The largest content of one document, in bytes, unless the plan says
-- otherwise (chunking.max_content_bytes): past it the document is a dead
-- letter and nothing is sent (docs/limites-e-riscos.md, "Documentos").
M.MAX_CONTENT_BYTES = 1024 * 1024

-- The dead letters' class of a document PostgreSQL or the plan's contract
-- would refuse (content, metadata or key).
M.INVALID = "invalid_document"

-- Whether s is text PostgreSQL stores (valid UTF-8, no NUL byte): true, or
-- false, kind ("nul" | "invalid_utf8"), position (1-based byte). The same
-- answer as core.utf8_check (engine/bridge.c), which the engine uses; this
-- one serves where the engine is absent (busted).
function M.lua_utf8_check(s)
  local from, n = 1, #s
  while true do
    local p = s:find("[%z\128-\255]", from)
    if not p then return true end
    local c = s:byte(p)
    if c == 0 then return false, "nul", p end
    local len, cp, min
    if c >= 0xC2 and c <= 0xDF then len, cp, min = 2, c % 0x20, 0x80
    elseif c >= 0xE0 and c <= 0xEF then len, cp, min = 3, c % 0x10, 0x800
    elseif c >= 0xF0 and c <= 0xF4 then len, cp, min = 4, c % 0x08, 0x10000
    else return false, "invalid_utf8", p end
    if p + len - 1 > n then return false, "invalid_utf8", p end
    for k = 1, len - 1 do
      local b = s:byte(p + k)
      if b < 0x80 or b > 0xBF then return false, "invalid_utf8", p end
      cp = cp * 64 + (b - 0x80)
    end
    if cp < min or cp > 0x10FFFF or (cp >= 0xD800 and cp <= 0xDFFF) then return false, "invalid_utf8", p end
    from = p + len
  end
end

local has_core, core = pcall(require, "ragops.core")
local utf8_check = has_core and core.utf8_check or M.lua_utf8_check

M.key_text = keys.text
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

local TEXT_PROBLEM = { nul = "um byte nulo (\\0)", invalid_utf8 = "uma sequência que não é UTF-8 válido" }

-- pt-BR reason why `what` (text) cannot be stored, or nil. Names the byte,
-- never the text (row content stays out of dead letters).
local function text_problem(text, what)
  local ok, kind, pos = utf8_check(text)
  if ok then return nil end
  return ("%s tem %s no byte %d"):format(what, TEXT_PROBLEM[kind], pos)
end

-- Whether JSON text holds a \u0000 escape (a backslash that escapes
-- nothing before "u0000"): jsonb refuses it.
local function has_nul_escape(json)
  local from = 1
  while true do
    local at = json:find("\\u0000", from, true)
    if not at then return false end
    local first = at
    while first > 1 and json:byte(first - 1) == 92 do first = first - 1 end
    if (at - first) % 2 == 0 then return true end
    from = at + 1
  end
end

-- The metadata's JSON text, or nil, pt-BR reason, class.
local function check_metadata(metadata)
  if metadata ~= nil and type(metadata) ~= "table" then
    return nil, ("metadata deve ser uma tabela (ou nil); document() devolveu um valor %s"):format(type(metadata)),
      M.INVALID
  end
  local text, err = encode_metadata(metadata)
  if not text then return nil, err, "transform" end
  local problem = text_problem(text, "os metadados (uma chave ou um valor)")
  if problem then return nil, problem .. " depois de convertidos em JSON", M.INVALID end
  if has_nul_escape(text) then
    return nil, "os metadados (uma chave ou um valor) têm um byte nulo (\\0), que o PostgreSQL recusa em jsonb",
      M.INVALID
  end
  return text
end

-- What a document may be: what document() returned for a row, checked
-- before anything is embedded. doc: nil or false (no document), or
-- { content = text | nil, metadata = table | nil }; content blank: no
-- document. Content at most max_bytes bytes (M.MAX_CONTENT_BYTES by
-- default), valid UTF-8 without NUL; metadata representable in jsonb.
-- Returns content (nil: no document), metadata JSON text, or nil, nil,
-- pt-BR reason (never the row's content), class.
function M.check_document(doc, max_bytes)
  if doc == nil or doc == false then return nil end
  if type(doc) ~= "table" then
    return nil, nil, ("document() deve devolver uma tabela { content = ..., metadata = ... } ou nil; devolveu um "
      .. "valor %s"):format(type(doc)), M.INVALID
  end
  local content = doc.content
  if content ~= nil and type(content) ~= "string" then
    return nil, nil, ("content deve ser um texto (ou nil: sem documento); document() devolveu um valor %s")
      :format(type(content)), M.INVALID
  end
  if content == nil or not content:find("%S") then return nil end
  max_bytes = max_bytes or M.MAX_CONTENT_BYTES
  if #content > max_bytes then
    return nil, nil, ("o conteúdo tem %d bytes, acima do máximo de %d por documento (chunking.max_content_bytes); "
      .. "nada foi enviado ao provedor"):format(#content, max_bytes), M.INVALID
  end
  local problem = text_problem(content, "o conteúdo")
  if problem then return nil, nil, problem, M.INVALID end
  local metadata, reason, class = check_metadata(doc.metadata)
  if not metadata then return nil, nil, reason, class end
  return content, metadata
end

-- The text of an entity key that is not storable text, for its dead
-- letter: bytes outside printable ASCII as \xNN.
local function printable_key(id)
  return (id:gsub("[%z\1-\31\127-\255]", function(c) return ("\\x%02x"):format(c:byte()) end))
end

-- One row -> entity { id, updated_at, chunks }, or nil, dead letter.
local function build_entity(ctx, source, row)
  local plan, env = ctx.plan, ctx.env
  local id = key_text(row[source.key])
  local bad_key = text_problem(id, "a chave da entidade")
  if bad_key then return nil, transform_failure(source, printable_key(id), bad_key, M.INVALID) end
  -- document() runs under the sandbox's time and memory budget; a breach or
  -- an error dead-letters the row (class time/memory/transform), and past
  -- sandbox.max_breaches budget breaches the run stops (code 2).
  local ok, doc, class = sandbox.call(ctx.hook_budget, source.document, row)
  if not ok then
    local too_many = sandbox.breach_limit_reached(ctx.hook_budget)
    if too_many then ctx:abort(exit.usage, too_many) end
    return nil, transform_failure(source, id, "document() falhou: " .. doc, class ~= "error" and class or nil)
  end
  local e = { id = id, chunks = {} }
  local updated = source.updated_at and row[source.updated_at]
  e.updated_at = updated ~= nil and tostring(updated) or nil
  local content, metadata, reason, rclass = M.check_document(doc, plan.chunking.max_content_bytes)
  if reason then return nil, transform_failure(source, id, reason, rclass) end
  if content then
    for i, text in ipairs(chunk.split(content, plan.chunking.max_chars, plan.chunking.overlap)) do
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

-- True when no entity has anything stored (existing_is_complete: the store said
-- so for every entity) and each one's updated_at has its µs form: the unit's
-- documents can be copied straight into the target.
local function all_new(entities, existing, existing_is_complete)
  if not existing_is_complete or #entities == 0 then return false end
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

-- Queues for an update in place the chunks of e that keep their content
-- (all but those in `embedding`, a set of chunk indexes) and whose stored
-- metadata or source_updated_at may differ. Each carries the row's
-- fingerprint (e.fp, "" for none: cleared), which the store puts on chunk 0
-- when it updates it: a document written from a row holds that row's
-- fingerprint. When chunk 0 is not among them, e goes to d.refit (its
-- fingerprint is set apart, see ragops.run.stages.write fingerprints).
local function refresh_chunks(d, e, old, decoded, embedding)
  local r, listed, first = d.refresh, false, false
  for _, c in ipairs(e.chunks) do
    if not (embedding and embedding[c.index]) and needs_refresh(old, c, decoded) then
      r.entity_ids[#r.entity_ids + 1] = e.id
      r.chunk_indexes[#r.chunk_indexes + 1] = c.index
      r.metadata[#r.metadata + 1] = c.metadata
      r.updated_at[#r.updated_at + 1] = e.updated_at or ""
      r.fps[#r.fps + 1] = e.fp or ""
      listed, first = true, first or c.index == 0
    end
  end
  if listed and not first then d.refit[e.id] = true end
end

-- An unchanged entity: chunks to refresh in place, and the entity among
-- those whose dead letters are resolved unless the store says it has none.
local function keep_unchanged(d, e, old, existing_is_complete, decoded)
  d.skipped = d.skipped + 1
  if not existing_is_complete or (old and old.open_failure) then d.unchanged_ids[#d.unchanged_ids + 1] = e.id end
  refresh_chunks(d, e, old, decoded)
end

-- A changed entity that was stored: the chunks it keeps (same content) get
-- the entity's metadata and source_updated_at too.
local function refresh_kept(d, e, old, to_embed, decoded)
  if not old or #to_embed == #e.chunks then return end
  local embedding = {}
  for _, c in ipairs(to_embed) do embedding[c.index] = true end
  refresh_chunks(d, e, old, decoded, embedding)
end

-- An entity the plan gave no document (document() returned nil or blank
-- content): not skipped, not indexed, counted apart; what it had stored is
-- pruned and its dead letters resolved (the plan decided, nothing failed).
local function keep_no_document(d, e, old, existing_is_complete)
  d.no_document = d.no_document + 1
  d.no_document_entities[#d.no_document_entities + 1] = e
  if not existing_is_complete or (old and old.open_failure) then d.unchanged_ids[#d.unchanged_ids + 1] = e.id end
  if old and old.count > 0 then
    d.prune.entity_ids[#d.prune.entity_ids + 1] = e.id
    d.prune.counts[#d.prune.counts + 1] = 0
  end
end

-- Decides per entity against existing = { [id] = { count, hashes } }; existing_is_complete:
-- existing came from ragops.store.pg fetch_page_existing (with metadata,
-- same_updated_at and open_failure, and every entity with an open dead
-- letter present), so unchanged chunks that match are not refreshed and
-- unchanged entities without a dead letter are not resolved.
-- unchanged_ids: the unchanged entities whose dead letters are resolved.
function M.decide(ctx, entities, failures, existing, existing_is_complete)
  local d = { entities = entities, failures = failures, items = {}, changed = {},
              refresh = { entity_ids = {}, chunk_indexes = {}, metadata = {}, updated_at = {}, fps = {} },
              refit = {}, prune = { entity_ids = {}, counts = {} }, unchanged_ids = {}, skipped = 0,
              no_document = 0, no_document_entities = {},
              all_new = all_new(entities, existing, existing_is_complete) }
  local mode = ctx.plan.mode
  local decoded = {} -- metadata text -> decoded, once per unit
  for _, e in ipairs(entities) do
    local old = existing[e.id]
    local to_embed = chunks_to_embed(mode, e, old)
    local dirty = mode == "overwrite" or #to_embed > 0 or (old and old.count or 0) ~= #e.chunks
    if #e.chunks == 0 then
      keep_no_document(d, e, old, existing_is_complete)
    elseif not dirty then
      keep_unchanged(d, e, old, existing_is_complete, decoded)
    else
      -- may_have_failure: its open dead letters are resolved once it is
      -- indexed (unknown when the store did not say).
      d.changed[e.id] = { entity = e, failed = false,
                          may_have_failure = not existing_is_complete or (old ~= nil and old.open_failure == true) }
      for _, c in ipairs(to_embed) do d.items[#d.items + 1] = { text = c.content, chunk = c, entity = e } end
      refresh_kept(d, e, old, to_embed, decoded)
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
-- to a document is harmless: a document wins (ragops.report.status).
local function marker_state(ctx, entity_type)
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
  if #ids == 0 then return {} end
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
    ctx:abort(exit.unreachable, "falha ao consultar as entidades sem documento: " .. tostring(err))
    return nil
  end
  local state = ctx.no_document_state[entity_type]
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
