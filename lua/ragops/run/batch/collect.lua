-- ragops.run.batch.collect: collecting one part whose batch ended. Its
-- output and error files are downloaded (bounded) into batch.dir and
-- indexed by custom_id (offsets only: lines are read one unit at a time).
-- Each unit of the part is read again from the source by key and goes
-- through the runner's decide and write stages with a lookup of the
-- vectors by content hash (M.lookup): an entity whose every to-embed chunk
-- has a vector is written (the hash re-checked: a row changed since the
-- submission has new hashes, so no stale vector is written); an error
-- line is a dead letter with its class; what has no vector goes into a new
-- part (ragops.run.batch), or, past embed.max_resubmissions, a dead letter.
-- The unit is marked collected in its write transaction.
local batches = require "ragops.store.batches"
local cjson = require "cjson"
local exit = require "ragops.util.exit"
local instruments = require "ragops.obs.instruments"
local part = require "ragops.run.batch.part"
local pipeline = require "ragops.run.pipeline"
local requests = require "ragops.provider.requests"
local scrub = require "ragops.util.scrub"
local has_embed, embed = pcall(require, "ragops.embed")

local M = {}

-- Most bytes of a result file downloaded (OpenAI's output of a 50,000-input
-- batch of 3,072 dimensions in base64 is ~820 MB).
M.MAX_RESULT_BYTES = 2 * 1024 * 1024 * 1024

-- custom_id -> { path, offset, length } of every line of the file at path.
local function index_file(path, into)
  local f = io.open(path, "rb")
  if not f then return nil, "não foi possível ler o arquivo de resultados " .. path end
  local offset = 0
  for line in f:lines() do
    local id = line:match('^%s*{%s*"[^"]*"%s*:%s*"[^"]*"%s*,%s*"custom_id"%s*:%s*"([^"]*)"')
      or line:match('"custom_id"%s*:%s*"([^"]*)"')
    if id then into[id] = { path = path, offset = offset, length = #line } end
    offset = offset + #line + 1
  end
  f:close()
  return into
end
M.index_file = index_file

local function read_line(entry)
  local f = io.open(entry.path, "rb")
  if not f then return nil end
  f:seek("set", entry.offset)
  local text = f:read(entry.length)
  f:close()
  return text
end

-- The pt-BR dead letter of a request the provider refused inside the batch.
local function refused(status, body)
  local e = type(body) == "table" and type(body.error) == "table" and body.error or {}
  -- masked before it is cut: a secret across the cut must not leave a piece of itself
  local message = type(e.message) == "string" and scrub.mask(e.message):sub(1, 300) or "sem mensagem"
  return { err = scrub.text(("o provedor recusou o pedido dentro do lote (HTTP %s: %s)"):format(tostring(status), message)),
           info = { class = (status == 429 or (tonumber(status) or 0) >= 500) and "transient" or "permanent",
                    status = tonumber(status) } }
end

-- Fills lookup with one request's result line (hashes: its inputs').
local function add_line(lookup, text, hashes, dim)
  local ok, obj = pcall(cjson.decode, text)
  local response = ok and type(obj) == "table" and obj.response
  if type(response) ~= "table" then return end -- expired or malformed: no vector, resubmitted
  local status = response.status_code
  if status ~= 200 then
    if status == 429 or (tonumber(status) or 0) >= 500 then return end -- resubmitted
    if #hashes > 1 then
      -- One refused input fails its whole request: its inputs go again,
      -- each in a request of its own (the batch's bisection), so only the
      -- refused one ends a dead letter.
      for _, h in ipairs(hashes) do lookup.isolate[h] = true end
      return
    end
    lookup.errors[hashes[1]] = refused(status, response.body)
    return
  end
  local vb, err = embed.decode_answer(cjson.encode(response.body), #hashes, dim)
  if not vb then
    local r = { err = "resposta inválida no arquivo de saída do lote: " .. tostring(err), info = { class = "permanent" } }
    for _, h in ipairs(hashes) do lookup.errors[h] = r end
    return
  end
  lookup.tokens = lookup.tokens + vb:tokens()
  for i, h in ipairs(hashes) do lookup.vectors[h] = { batch = vb, row = i } end
end

-- What a missing vector means in a part that ended in state.
local function miss_of(row)
  if row.state == "failed" then
    return { class = "batch_failed", err = ("o lote %s falhou no provedor: %s"):format(tostring(row.batch_id),
      row.detail or "sem detalhe") }
  elseif row.state == "cancelled" then
    return { class = "batch_cancelled", err = ("o lote %s foi cancelado antes de embedar este documento; "
      .. "rode `ragops failures retry` para reprocessá-lo"):format(tostring(row.batch_id or row.file_name)) }
  end
  return nil
end

-- The lookup of one unit of part row: { vectors = { [hash] = { batch, row } },
-- errors = { [hash] = { err, info } }, isolate = { [hash] = true: resubmit
-- alone }, round, tokens, miss }.
function M.lookup(row, unit, index, dim)
  local lookup = { vectors = {}, errors = {}, isolate = {}, round = unit.round, tokens = 0, miss = miss_of(row),
                   by_batch = {}, rebuild = row.state == "lost" or nil }
  local position = 0
  for k, size in ipairs(unit.request_sizes) do
    local hashes = {}
    for i = 1, size do hashes[i] = unit.hashes[position + i] end
    position = position + size
    local entry = index[part.custom_id(row.id, unit.unit_no, k)]
    local text = entry and read_line(entry)
    if text then add_line(lookup, text, hashes, dim) end
  end
  return lookup
end

-- An entity's verdict: "hit" (every item has a vector), "failed" (a
-- refused item: its dead letter group) or "defer".
function M.classify(lookup, items)
  if not lookup then return "defer" end
  local all = true
  for _, it in ipairs(items) do
    if not lookup.vectors[it.chunk.hash] then
      all = false
      local e = lookup.errors[it.chunk.hash]
      if e then return "failed", { items = { it }, err = e.err, info = e.info, attempts = 1 } end
    end
  end
  return all and "hit" or "defer"
end

-- Adds items to the parts, one part per result line they come from.
function M.add_hits(parts, items, lookup)
  for _, it in ipairs(items) do
    local v = lookup.vectors[it.chunk.hash]
    local p = lookup.by_batch[v.batch]
    if not p then
      p = { items = {}, batch = v.batch, rows = {} }
      lookup.by_batch[v.batch] = p
      parts[#parts + 1] = p
    end
    p.items[#p.items + 1] = it
    p.rows[#p.rows + 1] = v.row
  end
end

-- What the unit's result lines cost (billed whether or not used), and the
-- sizes of what they embedded (the token calibration, counted as online).
function M.account(ctx, lookup, parts, delta, entity_type)
  if not lookup or lookup.tokens == 0 then return end
  delta.tokens = delta.tokens + lookup.tokens
  ctx.spent.tokens = ctx.spent.tokens + lookup.tokens
  for _, p in ipairs(parts) do
    for _, it in ipairs(p.items) do requests.add_sent(delta, it.text) end
  end
  instruments.batch_embedded(ctx, entity_type, lookup.tokens)
end

-- The dead letters of items that never got a vector.
function M.missing_group(lookup, items, round)
  local m = lookup.miss or { class = "batch_expired", err = ("sem vetor depois de %d reenvio(s) em lotes novos "
    .. "(o pedido expirou ou o texto mudou a cada coleta; embed.max_resubmissions); rode `ragops failures retry`")
    :format(round - 1) }
  return { items = items, err = m.err, info = { class = m.class }, attempts = round }
end

-- Downloads file_id of part row into path (an old copy removed first).
local function download(session, ctx, file_id, path)
  os.remove(path)
  local n, err = session.api:download(file_id, path, M.MAX_RESULT_BYTES)
  if not n then
    ctx:abort(exit.unreachable, ("falha ao baixar os resultados do lote %s: %s"):format(tostring(file_id), tostring(err)))
    return nil
  end
  return path
end

-- The part's result files, downloaded and indexed: index, paths; nil after stopping.
local function result_index(session, ctx, row)
  local index, paths = {}, {}
  for _, f in ipairs({ { row.output_file_id, ".saida" }, { row.error_file_id, ".erros" } }) do
    if f[1] then
      local path = download(session, ctx, f[1], session.dir .. "/" .. row.file_name .. f[2])
      if not path then return nil end
      paths[#paths + 1] = path
      local ok, err = index_file(path, index)
      if not ok then ctx:abort(exit.unreachable, err); return nil end
    end
  end
  return index, paths
end

-- The plan's source of entity_type, or nil (no longer in the plan).
local function source_of(plan, entity_type)
  for _, s in ipairs(plan.sources) do
    if s.entity_type == entity_type then return s end
  end
end

-- Hands each pending unit of part row, read again by key, to emit.
local function produce_units(session, ctx, row, index, emit)
  local units, err, state = batches.units(session.store, row.id, true)
  if not units then ctx:abort_db("falha ao ler as unidades do lote", err, state); return end
  for i, u in ipairs(units) do
    if ctx:halted() then return end
    local source = source_of(ctx.plan, u.entity_type)
    if not source then
      ctx.log.warn("o tipo de entidade %q não está mais no plano: %d entidade(s) do lote %s ficam sem coleta",
        u.entity_type, #u.entity_ids, tostring(row.batch_id or row.file_name))
    else
      local rows, rerr, rstate = ctx.store:rows_by_key(source, u.entity_ids)
      if not rows then ctx:abort_db("falha ao ler de novo as entidades do lote", rerr, rstate); return end
      emit({ seq = i, source = source, rows = rows, row_count = 0, first_key = u.entity_ids[1],
             last_key = u.entity_ids[#u.entity_ids], batch_lookup = M.lookup(row, u, index, ctx.env.dim),
             batch_collected = { batch = row.id, unit_no = u.unit_no } })
    end
  end
end

-- Collects part row (its batch ended, or its file was lost): true, or nil
-- after stopping the run.
function M.collect_part(session, ctx, row)
  assert(has_embed, "ragops.embed ausente")
  local index, paths = result_index(session, ctx, row)
  if not index then return nil end
  pipeline.process_units(ctx, nil, function(emit) return produce_units(session, ctx, row, index, emit) end, 1)
  if ctx:halted() then return nil end
  local ok, err, state = batches.update(session.store, row.id, { state = "collected" }, { "collected" })
  if ok == nil then ctx:abort_db("falha ao marcar o lote como coletado", err, state); return nil end
  for _, p in ipairs(paths) do os.remove(p) end
  os.remove(session.dir .. "/" .. row.file_name)
  session.counts.collected = session.counts.collected + 1
  ctx.log.info("lote %s coletado (%s)", tostring(row.batch_id or row.file_name), row.state)
  return true
end

return M
