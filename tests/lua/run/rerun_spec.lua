-- rerun_spec.lua: the re-run over unchanged data (issue 11) with
-- ragops.testing's fakes and a store that, like ragops.store.pg, reads the
-- stored hashes with the page (fetch_page_existing): a unit that changes
-- nothing opens no write, the committed prefix is recorded in batches
-- (every write.FLUSH_UNITS units and at the end of the source), a resume
-- from a batched checkpoint counts each row once, several units are read
-- per query (read.PAGE_UNITS).

local plan = require "ragops.plan"
local read = require "ragops.run.stages.read"
local testing = require "ragops.testing"
local write = require "ragops.run.stages.write"
local key_text = require("ragops.run.pipeline").key_text

local function make_plan(batch, document)
  return plan.new {
    name = "reexecucao",
    sources = { plan.source "item" {
      sql = "select id, text, updated_at from items", key = "id", updated_at = "updated_at",
      document = document or function(row) return { content = row.text, metadata = { n = row.id } } end,
    } },
    batch = batch or { size = 2, in_flight = 2 },
    chunking = { max_chars = 100, overlap = 10 },
    retry = { attempts = 3, base_ms = 100, max_ms = 1000 },
  }
end

local function rows(n)
  local out = {}
  for i = 1, n do out[i] = { id = i, text = "texto número " .. i, updated_at = ("2024-01-%02d"):format(i) } end
  return out
end

-- Gives a fake store the page query of ragops.store.pg: the rows, and per
-- entity its stored hashes, metadata, whether source_updated_at matches and
-- whether it has an open dead letter.
local function with_page_existing(store)
  function store:fetch_page_existing(source, scope, after, limit, upto)
    local page = self:fetch_page(source, scope, after, limit, upto)
    local ids, updated_of = {}, {}
    for i, row in ipairs(page) do
      ids[i] = key_text(row[source.key])
      local u = row[source.updated_at]
      updated_of[ids[i]] = u ~= nil and tostring(u) or nil
    end
    local existing = self:existing_hashes(source.entity_type, ids)
    local open = self.open_dead_letters[source.entity_type] or {}
    for _, id in ipairs(ids) do
      if open[id] and not existing[id] then existing[id] = { count = 0, hashes = {} } end
    end
    for id, e in pairs(existing) do
      e.metadata, e.same_updated_at, e.open_failure = {}, {}, open[id] ~= nil
      for index in pairs(e.hashes) do
        local d = self:document(source.entity_type, id, index)
        e.metadata[index], e.same_updated_at[index] = d.metadata, d.source_updated_at == updated_of[id]
      end
    end
    return page, existing
  end
  return store
end

-- A store indexed by a first run over `n` rows, with the page query.
local function indexed_store(n, batch)
  local first = testing.run(make_plan(batch), { sources = { item = rows(n) } })
  assert.are.equal(n, first.stats.embedded)
  local store = with_page_existing(first.store)
  store.writes = {}
  return store
end

-- The writes that carried documents, refreshes, dead letters or resolutions
-- (the others only record progress).
local function data_writes(store)
  local out = {}
  for _, w in ipairs(store.writes) do
    if #w.docs > 0 or (w.refreshed or 0) > 0 or #(w.failures or {}) > 0 then out[#out + 1] = w end
  end
  return out
end

describe("reexecução sobre dados inalterados", function()
  local flush_units
  before_each(function() flush_units = write.FLUSH_UNITS end)
  after_each(function() write.FLUSH_UNITS = flush_units end)

  it("nenhuma unidade abre gravação; o progresso é gravado uma vez, no fim da fonte", function()
    local store = indexed_store(20)
    local r = testing.run(make_plan(), { store = store })
    assert.are.equal(20, r.stats.skipped)
    assert.are.equal(0, #r.embedder.calls)
    assert.are.equal(1, #store.writes)
    local cp = store.writes[1].checkpoint
    assert.are.same({ 10, "20", 20, 20 }, { cp.seq, cp.after, cp.stats.processed, cp.stats.skipped })
    assert.are.same({ seq = 10, after = "20" }, { seq = store.checkpoints.item.seq, after = store.checkpoints.item.after })
  end)

  it("o progresso é gravado a cada FLUSH_UNITS unidades sem gravação", function()
    write.FLUSH_UNITS = 3
    local store = indexed_store(20)
    testing.run(make_plan({ size = 2, in_flight = 1 }), { store = store })
    local seqs = {}
    for i, w in ipairs(store.writes) do seqs[i] = w.checkpoint.seq end
    assert.are.same({ 3, 6, 9, 10 }, seqs)
    assert.are.equal(0, #data_writes(store))
  end)

  it("retomar de um progresso em lote (kill -9 depois dele) conta cada linha uma vez", function()
    write.FLUSH_UNITS = 3
    local store = indexed_store(20)
    testing.run(make_plan({ size = 2, in_flight = 1 }), { store = store })
    local first_flush = store.writes[1].checkpoint -- what a kill -9 right after it leaves
    local resumed = testing.run(make_plan({ size = 2, in_flight = 1 }),
      { store = store, checkpoint = { item = { seq = first_flush.seq, after = first_flush.after,
                                               stats = first_flush.stats } } })
    assert.are.equal(20, resumed.stats.processed)
    assert.are.equal(20, resumed.stats.skipped)
    assert.are.equal(0, resumed.stats.embedded)
  end)

  it("só os chunks com metadados ou updated_at mudados são atualizados, numa só gravação", function()
    local store = indexed_store(20)
    store.sources.item[7].updated_at = "2025-06-01"
    local r = testing.run(make_plan(nil, function(row)
      return { content = row.text, metadata = { n = row.id, extra = row.id == 12 or nil } }
    end), { store = store })
    assert.are.equal(2, r.stats.refreshed)
    assert.are.equal(20, r.stats.skipped)
    local writes = data_writes(store)
    assert.are.equal(2, #writes) -- the units of ids 7 and 12
    assert.are.equal(true, store:document("item", 12, 0).metadata.extra)
    assert.are.equal("2025-06-01", store:document("item", 7, 0).source_updated_at)
  end)

  it("a falha aberta de uma entidade inalterada é resolvida; as outras unidades não gravam", function()
    local store = indexed_store(20)
    store:record_failures(1, { { entity_type = "item", entity_id = "5", error_class = "transient", message = "x" } })
    store.writes = {}
    local r = testing.run(make_plan(), { store = store })
    assert.is_nil(store.open_dead_letters.item["5"])
    assert.are.equal("5", store.resolved[1].entity_id)
    assert.are.equal(20, r.stats.processed)
    assert.are.equal(2, #store.writes) -- the unit of id 5, and the final progress
  end)

  it("entidade alterada: a falha aberta é resolvida; sem falha aberta (o destino disse), nada a resolver", function()
    local store = indexed_store(20)
    store:record_failures(1, { { entity_type = "item", entity_id = "5", error_class = "transient", message = "x" } })
    store.sources.item[5].text = "texto novo 5"
    store.sources.item[9].text = "texto novo 9"
    store.writes = {}
    local r = testing.run(make_plan(), { store = store })
    assert.are.equal(2, r.stats.embedded)
    assert.is_nil(store.open_dead_letters.item["5"])
    local resolved = {}
    for _, w in ipairs(data_writes(store)) do
      for _, id in ipairs(w.resolved_ids) do resolved[#resolved + 1] = id end
    end
    assert.are.same({ "5" }, resolved)
  end)

  it("uma unidade que grava leva o checkpoint das unidades sem gravação antes dela", function()
    local store = indexed_store(20)
    store.sources.item[9].text = "texto novo"
    testing.run(make_plan({ size = 2, in_flight = 1 }), { store = store })
    local writes = data_writes(store)
    assert.are.equal(1, #writes)
    assert.are.same({ 5, "10" }, { writes[1].checkpoint.seq, writes[1].checkpoint.after })
  end)

  it("lê PAGE_UNITS unidades por consulta, e as unidades continuam de batch.size linhas", function()
    local r = testing.run(make_plan({ size = 2, in_flight = 1 }), { sources = { item = rows(20) } })
    local pages = {} -- the key census reads without a limit
    for _, f in ipairs(r.store.fetches) do if f.limit then pages[#pages + 1] = f.limit end end
    assert.are.same({ 2 * read.PAGE_UNITS, 2 * read.PAGE_UNITS }, pages)
    assert.are.equal(10, #r.store.writes)
    for _, w in ipairs(r.store.writes) do assert.are.equal(2, #w.docs) end
  end)
end)
