-- runner_spec.lua: ragops.run.pipeline driven by ragops.testing's fakes (fake clock,
-- in-memory store, fake embedder): idempotency, chunks, deletes, batching,
-- concurrency, retries, bisection, aborts, transform errors, checkpoints.

local plan = require "ragops.plan"
local testing = require "ragops.testing"

-- A plan with one source "item" (rows: id, text, updated_at); `spec` patches it.
local function make_plan(spec, document)
  local source = plan.source "item" {
    sql = "select id, text, updated_at from items", key = "id", updated_at = "updated_at",
    document = document or function(row)
      return { content = row.text, metadata = { n = row.id } }
    end,
  }
  local full = {
    name = "teste", sources = { source },
    batch = { size = 4, in_flight = 1 },
    chunking = { max_chars = 100, overlap = 10 },
    retry = { attempts = 3, base_ms = 100, max_ms = 1000 },
  }
  for k, v in pairs(spec or {}) do full[k] = v end
  return plan.new(full)
end

local function rows(n, prefix)
  local out = {}
  for i = 1, n do
    out[i] = { id = i, text = (prefix or "texto número ") .. i, updated_at = ("2024-01-%02d"):format(i) }
  end
  return out
end

local function total_texts(embedder)
  local n = 0
  for _, c in ipairs(embedder.calls) do n = n + #c.texts end
  return n
end

-- A long text made of distinct sentences (so chunks differ).
local function long_text(sentences)
  local parts = {}
  for i = 1, sentences do parts[i] = ("Frase número %d do documento longo."):format(i) end
  return table.concat(parts, " ")
end

describe("runner (com os fakes de ragops.testing)", function()
  it("primeira execução gera embedding de todas as linhas", function()
    local r = testing.run(make_plan(), { sources = { item = rows(10) } })
    assert.are.equal(10, r.stats.processed)
    assert.are.equal(10, r.stats.succeeded)
    assert.are.equal(10, r.stats.embedded)
    assert.are.equal(0, r.stats.skipped)
    assert.are.equal(10, total_texts(r.embedder))
    local docs = r:documents("item")
    assert.are.equal(10, #docs)
    for i, d in ipairs(docs) do
      assert.are.equal(tostring(i), d.entity_id)
      assert.are.equal(0, d.chunk_index)
      assert.are.equal("texto número " .. i, d.content)
      assert.are.equal(i, d.metadata.n)
      assert.are.equal(8, #d.vector)
      assert.are.equal(testing.hash(d.content, "fake-model", "8"), d.content_hash)
      assert.are.equal("fake-model", d.embedding_model)
      assert.are.equal(("2024-01-%02d"):format(i), d.source_updated_at)
    end
    assert.is_nil(r.stats.aborted)
  end)

  it("segunda execução não gera embedding de nada e pula tudo", function()
    local first = testing.run(make_plan(), { sources = { item = rows(10) } })
    local hashes = {}
    for _, d in ipairs(first:documents("item")) do hashes[d.entity_id] = d.content_hash end
    local second = testing.run(make_plan(), { store = first.store })
    assert.are.equal(0, #second.embedder.calls)
    assert.are.equal(10, second.stats.skipped)
    assert.are.equal(0, second.stats.embedded)
    assert.are.equal(0, second.stats.deleted)
    assert.are.equal(10, #second:documents("item"))
    for _, d in ipairs(second:documents("item")) do
      assert.are.equal(hashes[d.entity_id], d.content_hash)
    end
  end)

  it("uma linha alterada refaz o embedding só dos seus chunks", function()
    local r = testing.run(make_plan(), { sources = { item = rows(10) } })
    r.store.sources.item[3].text = "texto novo da linha três"
    local r2 = testing.run(make_plan(), { store = r.store })
    assert.are.equal(1, r2.stats.embedded)
    assert.are.equal(9, r2.stats.skipped)
    assert.are.same({ "texto novo da linha três" }, r2.embedder:embedded_texts())
    assert.are.equal("texto novo da linha três", r2:document("item", 3, 0).content)
    assert.are.equal(10, #r2:documents("item"))
  end)

  it("linha removida da fonte apaga seus documentos (delete_missing), mas não com filtro de escopo", function()
    local r = testing.run(make_plan(), { sources = { item = rows(6) } })
    table.remove(r.store.sources.item, 5)
    -- With a since filter the run is partial: nothing may be deleted.
    local partial = testing.run(make_plan({ scope = { since = "2000-01-01" } }), { store = r.store })
    assert.are.equal(0, partial.stats.deleted)
    assert.is_not_nil(partial:document("item", 5, 0))
    -- With delete_missing = false nothing is deleted either.
    local kept = testing.run(make_plan({ delete_missing = false }), { store = r.store })
    assert.are.equal(0, kept.stats.deleted)
    assert.is_not_nil(kept:document("item", 5, 0))
    -- A full run removes it.
    local full = testing.run(make_plan(), { store = r.store })
    assert.are.equal(1, full.stats.deleted)
    assert.is_nil(full:document("item", 5, 0))
    assert.are.equal(5, #full:documents("item"))
  end)

  it("filtro until (escopo parcial) também não apaga órfãos", function()
    local r = testing.run(make_plan(), { sources = { item = rows(6) } })
    table.remove(r.store.sources.item, 5)
    local partial = testing.run(make_plan({ scope = { ["until"] = "2030-01-01" } }), { store = r.store })
    assert.are.equal(0, partial.stats.deleted)
    assert.is_not_nil(partial:document("item", 5, 0))
  end)

  it("texto longo gera vários chunks com chunk_index denso; encolher o texto remove os excedentes", function()
    local source_rows = { { id = 1, text = long_text(12), updated_at = "2024-01-01" } }
    local r = testing.run(make_plan(), { sources = { item = source_rows } })
    local docs = r:documents("item")
    assert.is_true(#docs >= 4, "esperava vários chunks, obtive " .. #docs)
    for i, d in ipairs(docs) do
      assert.are.equal(i - 1, d.chunk_index)
      assert.is_true(#d.content <= 100 + 10)
    end
    assert.are.equal(#docs, r.stats.chunks)
    local before = #docs

    r.store.sources.item[1].text = "Agora é curto."
    local r2 = testing.run(make_plan(), { store = r.store })
    local after = r2:documents("item")
    assert.are.equal(1, #after)
    assert.are.equal("Agora é curto.", after[1].content)
    assert.are.equal(before - 1, r2.stats.deleted)
  end)

  it("modo overwrite refaz o embedding de documentos inalterados", function()
    local r = testing.run(make_plan(), { sources = { item = rows(5) } })
    local r2 = testing.run(make_plan({ mode = "overwrite" }), { store = r.store })
    assert.are.equal(5, r2.stats.embedded)
    assert.are.equal(0, r2.stats.skipped)
    assert.are.equal(5, total_texts(r2.embedder))
  end)

  it("lotes nunca passam de batch.size textos", function()
    local source_rows = {}
    for i = 1, 6 do source_rows[i] = { id = i, text = long_text(5) .. " id " .. i, updated_at = "2024-01-01" } end
    local r = testing.run(make_plan({ batch = { size = 4, in_flight = 2 } }), { sources = { item = source_rows } })
    local biggest = 0
    for _, c in ipairs(r.embedder.calls) do
      assert.is_true(#c.texts <= 4, "lote com " .. #c.texts .. " textos")
      biggest = math.max(biggest, #c.texts)
    end
    assert.are.equal(4, biggest)
    assert.are.equal(r.stats.chunks, total_texts(r.embedder))
    assert.are.equal(r.stats.chunks, #r:documents("item"))
  end)

  it("in_flight > 1 sobrepõe chamadas ao provedor (pico == in_flight)", function()
    local opts = { sources = { item = rows(12) }, embedder = { latency_ms = 100 } }
    local serial = testing.run(make_plan({ batch = { size = 2, in_flight = 1 } }), opts)
    assert.are.equal(1, serial.embedder.peak)
    assert.are.equal(600, serial.clock)
    local parallel = testing.run(make_plan({ batch = { size = 2, in_flight = 3 } }), opts)
    assert.are.equal(3, parallel.embedder.peak)
    assert.are.equal(200, parallel.clock)
    assert.are.equal(12, #parallel:documents("item"))
  end)

  it("falha temporária é repetida com espera e depois dá certo", function()
    local r = testing.run(make_plan(), {
      sources = { item = rows(3) },
      embedder = { fail = function(_, call_no)
        if call_no <= 2 then return { status = 503, class = "transient", message = "HTTP 503" } end
      end },
    })
    assert.are.equal(3, #r.embedder.calls)
    assert.are.equal(2, r.stats.retries)
    assert.are.equal(3, r.stats.requests)
    assert.are.equal(0, r.stats.failed)
    assert.are.equal(3, #r:documents("item"))
    assert.are.equal(2, #r:logged("falha temporária no provedor"))
  end)

  it("Retry-After é respeitado (o relógio falso avança pelo menos esse tanto)", function()
    local r = testing.run(make_plan(), {
      sources = { item = rows(2) },
      embedder = { fail = function(_, call_no)
        if call_no == 1 then return { status = 429, class = "transient", retry_after_ms = 30000 } end
      end },
    })
    assert.are.equal(2, #r.embedder.calls)
    assert.is_true(r.embedder.calls[2].started_at >= 30000)
    assert.is_true(r.clock >= 30000)
    assert.are.equal(2, #r:documents("item"))
  end)

  it("tentativas esgotadas mandam o lote inteiro para a fila de falhas", function()
    local r = testing.run(make_plan(), {
      sources = { item = rows(4) },
      embedder = { fail = function() return { status = 503, class = "transient", message = "indisponível" } end },
    })
    assert.are.equal(6, #r.embedder.calls) -- retry.attempts x retry.rounds (padrão 2)
    assert.are.equal(4, r.stats.failed)
    assert.are.equal(0, r.stats.succeeded)
    assert.are.equal(0, #r:documents("item"))
    assert.are.equal(4, #r.store.failures)
    for _, f in ipairs(r.store.failures) do
      assert.are.equal("transient", f.error_class)
      assert.are.equal(503, f.http_status)
      assert.are.equal(6, f.attempts)
      assert.are.equal("indisponível", f.message)
      assert.are.equal(1, f.run_id)
    end
    assert.is_nil(r.stats.aborted)
  end)

  it("falha permanente de um texto num lote de 8 é isolada por bisseção: 7 gravados, 1 na fila", function()
    local source_rows = rows(8)
    source_rows[6].text = "texto recusado"
    local r = testing.run(make_plan({ batch = { size = 8, in_flight = 1 } }), {
      sources = { item = source_rows },
      embedder = { fail = function(texts)
        for _, t in ipairs(texts) do
          if t == "texto recusado" then return { status = 400, class = "permanent", message = "entrada inválida" } end
        end
      end },
    })
    assert.are.equal(7, r.stats.succeeded)
    assert.are.equal(1, r.stats.failed)
    assert.are.equal(7, #r:documents("item"))
    assert.is_nil(r:document("item", 6, 0))
    assert.are.equal(1, #r.store.failures)
    assert.are.equal("6", r.store.failures[1].entity_id)
    assert.are.equal("permanent", r.store.failures[1].error_class)
    assert.are.equal(400, r.store.failures[1].http_status)
    -- No call mixes the bad text with others once bisection isolated it.
    assert.are.equal(8, #r.embedder.calls[1].texts)
  end)

  it("falha fatal interrompe a execução (código 4)", function()
    local r = testing.run(make_plan(), {
      sources = { item = rows(8) },
      embedder = { fail = function() return { status = 401, class = "fatal", message = "chave inválida" } end },
    })
    assert.are.equal(4, r.stats.aborted.code)
    assert.truthy(r.stats.aborted.reason:find("chave inválida", 1, true))
    assert.are.equal(1, #r.embedder.calls)
    assert.are.equal(0, #r:documents("item"))
  end)

  it("erro em document() vai para a fila com classe transform e arquivo:linha", function()
    local path = os.tmpname() .. "_plano.lua"
    local f = assert(io.open(path, "w"))
    f:write([[
local itens = source "item" {
  sql = "select * from items", key = "id",
  document = function(row)
    if row.id == 2 then error("linha corrompida") end
    return { content = row.text }
  end,
}
return plan { name = "erro", sources = { itens } }
]])
    f:close()
    local ok, r = pcall(testing.run, path, { sources = { item = rows(3) } })
    os.remove(path)
    assert.is_true(ok, tostring(r))
    assert.are.equal(1, r.stats.failed)
    assert.are.equal(2, r.stats.succeeded)
    assert.are.equal(1, #r.store.failures)
    local failure = r.store.failures[1]
    assert.are.equal("transform", failure.error_class)
    assert.are.equal("2", failure.entity_id)
    assert.truthy(failure.message:find(path .. ":4:", 1, true), failure.message)
    assert.truthy(failure.message:find("linha corrompida", 1, true))
    assert.is_nil(r:document("item", 2, 0))
    assert.is_not_nil(r:document("item", 3, 0))
  end)

  it("document() retornando nil não cria documentos e remove os existentes", function()
    local skip3 = function(row)
      if row.id == 3 then return nil end
      return { content = row.text }
    end
    local fresh = testing.run(make_plan(nil, skip3), { sources = { item = rows(4) } })
    assert.are.equal(3, #fresh:documents("item"))
    assert.is_nil(fresh:document("item", 3, 0))

    local r = testing.run(make_plan(), { sources = { item = rows(4) } })
    assert.is_not_nil(r:document("item", 3, 0))
    local r2 = testing.run(make_plan(nil, skip3), { store = r.store })
    assert.is_nil(r2:document("item", 3, 0))
    assert.are.equal(3, #r2:documents("item"))
    assert.are.equal(1, r2.stats.deleted)
    assert.are.equal(0, #r2.embedder.calls)
  end)

  it("checkpoint nunca passa de uma unidade ainda não gravada", function()
    -- Unit 1 (ids 1-2) is slow, unit 2 (ids 3-4) fast: unit 2 commits first.
    local r = testing.run(make_plan({ batch = { size = 2, in_flight = 2 } }), {
      sources = { item = rows(4) },
      embedder = { latency_ms = function(texts)
        return texts[1] == "texto número 1" and 1000 or 10
      end },
    })
    assert.are.equal(2, #r.store.writes)
    local w1, w2 = r.store.writes[1], r.store.writes[2]
    assert.are.equal("3", w1.docs[1].entity_id)
    assert.are.equal(0, w1.checkpoint.seq)
    assert.is_nil(w1.checkpoint.after)
    assert.are.equal("1", w2.docs[1].entity_id)
    assert.are.equal(2, w2.checkpoint.seq)
    assert.are.equal("4", w2.checkpoint.after)
    assert.are.same({ seq = 2, after = "4" }, { seq = r.store.checkpoints.item.seq, after = r.store.checkpoints.item.after })
  end)

  it("sequência de checkpoints é monótona e só cobre unidades gravadas (latências variadas)", function()
    local latencies = { 50, 5, 300, 20, 1, 80, 7, 200, 3, 40 }
    local r = testing.run(make_plan({ batch = { size = 2, in_flight = 4 } }), {
      sources = { item = rows(20) },
      embedder = { latency_ms = function(texts)
        local id = tonumber(texts[1]:match("(%d+)$"))
        return latencies[(id % #latencies) + 1]
      end },
    })
    assert.are.equal(10, #r.store.writes)
    local committed, last_seq = {}, -1
    for _, w in ipairs(r.store.writes) do
      for _, d in ipairs(w.docs) do committed[tonumber(d.entity_id)] = true end
      assert.is_true(w.checkpoint.seq >= last_seq, "checkpoint voltou atrás")
      last_seq = w.checkpoint.seq
      local upto = tonumber(w.checkpoint.after) or 0
      assert.are.equal(w.checkpoint.seq * 2, upto)
      for id = 1, upto do
        assert.is_true(committed[id] == true, ("checkpoint %d cobre o id %d ainda não gravado"):format(upto, id))
      end
    end
    assert.are.same({ seq = 10, after = "20" }, { seq = r.store.checkpoints.item.seq, after = r.store.checkpoints.item.after })
  end)

  it("scope.entity_ids com id ausente da fonte apaga seus documentos e o lista em missing_entities", function()
    local r = testing.run(make_plan(), { sources = { item = rows(3) } })
    r.store.sources.item[3] = nil
    local r2 = testing.run(make_plan({ scope = { entity_ids = { "2", "3" } } }), { store = r.store })
    assert.is_nil(r2:document("item", 3, 0))
    assert.is_not_nil(r2:document("item", 1, 0))
    assert.is_not_nil(r2:document("item", 2, 0))
    assert.are.same({ { entity_type = "item", entity_id = "3" } }, r2.stats.missing_entities)
    assert.are.equal(1, r2.stats.deleted)
    assert.are.equal(1, r2.stats.processed) -- only id 2 was read
  end)

  it("o checkpoint leva os contadores do prefixo gravado; a retomada soma a partir deles", function()
    local r = testing.run(make_plan({ batch = { size = 2, in_flight = 2 } }), { sources = { item = rows(6) } })
    local cp = r.store.checkpoints.item
    assert.are.equal(6, cp.stats.processed)
    assert.are.equal(6, cp.stats.succeeded)
    assert.are.equal(6, cp.stats.embedded)
    -- A crash after the first unit: resume from its checkpoint (2 rows done).
    local first = r.store.writes[1].checkpoint
    local fresh = testing.run(make_plan({ batch = { size = 2, in_flight = 1 } }), {
      sources = { item = rows(6) }, checkpoint = { item = first } })
    assert.are.equal(6, fresh.stats.processed)
    assert.are.equal(first.stats.processed + 4, fresh.stats.processed)
  end)

  it("retoma do checkpoint informado em env.checkpoint", function()
    local r = testing.run(make_plan({ batch = { size = 2, in_flight = 1 } }), {
      sources = { item = rows(6) }, checkpoint = { item = { seq = 1, after = "2" } },
    })
    assert.are.equal(4, r.stats.processed)
    assert.is_nil(r:document("item", 1, 0))
    assert.is_not_nil(r:document("item", 3, 0))
    assert.are.same({ seq = 3, after = "6" }, { seq = r.store.checkpoints.item.seq, after = r.store.checkpoints.item.after })
  end)

  it("falha anterior é resolvida quando a entidade é gravada depois", function()
    local source_rows = rows(2)
    local bad = true
    local r = testing.run(make_plan(), {
      sources = { item = source_rows },
      embedder = { fail = function() if bad then return { status = 400, class = "permanent" } end end },
    })
    assert.are.equal(2, r.stats.failed)
    bad = false
    local r2 = testing.run(make_plan(), { store = r.store, run_id = 2,
      embedder = { fail = function() return nil end } })
    assert.are.equal(2, r2.stats.succeeded)
    assert.are.equal(2, #r2.store.resolved)
    assert.are.equal(2, r2.store.resolved[1].resolved_run_id)
    assert.is_nil(next(r2.store.open_dead_letters.item))
  end)
end)

describe("ragops.testing: loja falsa", function()
  it("paginação por chave compara números como números e textos como textos", function()
    local numeric = { { id = 10, text = "dez" }, { id = 2, text = "dois" }, { id = 9, text = "nove" } }
    local r = testing.run(make_plan({ batch = { size = 1, in_flight = 1 } }), { sources = { item = numeric } })
    assert.are.equal(3, r.stats.processed)
    assert.are.equal(3, #r:documents("item"))
    local order = {}
    for _, w in ipairs(r.store.writes) do order[#order + 1] = w.docs[1].entity_id end
    assert.are.same({ "2", "9", "10" }, order)

    local text_keys = { { id = "b", text = "bê" }, { id = "a", text = "á" }, { id = "c", text = "cê" } }
    local rt = testing.run(make_plan({ batch = { size = 2, in_flight = 1 } }), { sources = { item = text_keys } })
    assert.are.equal(3, rt.stats.processed)
    assert.are.same({ seq = 2, after = "c" }, { seq = rt.store.checkpoints.item.seq, after = rt.store.checkpoints.item.after })
  end)

  it("filtros since/until comparam updated_at como texto ISO", function()
    local store = testing.store { sources = { item = rows(5) } }
    local src = { entity_type = "item", key = "id", updated_at = "updated_at" }
    local page = store:fetch_page(src, { since = "2024-01-02", ["until"] = "2024-01-04" }, nil, 10)
    assert.are.equal(2, #page)
    assert.are.equal(2, page[1].id)
    assert.are.equal(3, page[2].id)
    assert.are.equal(1, #store:fetch_page(src, { entity_ids = { "4" } }, nil, 10))
    assert.are.equal(2, #store:fetch_page(src, nil, 3, 10))
    assert.are.equal(1, #store:fetch_page(src, nil, 3, 1))
  end)

  it("hash é determinístico e sensível a cada argumento", function()
    assert.are.equal(testing.hash("a", "m", "8"), testing.hash("a", "m", "8"))
    assert.are_not.equal(testing.hash("a", "m", "8"), testing.hash("a", "m", "16"))
    assert.are_not.equal(testing.hash("ab", "c"), testing.hash("a", "bc"))
    assert.are.equal(16, #testing.hash("x"))
  end)

  it("vecbatch falso tem count/dim/tokens/vector e #", function()
    local e = testing.embedder { dim = 4 }
    local b = e:embed({ "abcd", "efghijkl" })
    assert.are.equal(2, #b)
    assert.are.equal(2, b:count())
    assert.are.equal(4, b:dim())
    assert.are.equal(3, b:tokens())
    assert.are.same(testing.vector("abcd", 4), b:vector(1))
    assert.are_not.same(b:vector(1), b:vector(2))
    assert.has_error(function() b:vector(3) end)
  end)
end)

describe("ragops.run.pipeline: faixa de chaves (unidade de trabalho do scale-out)", function()
  local function plan_for(size)
    return require("ragops.plan").new({ name = "faixa", batch = { size = size, in_flight = 2 },
      sources = { require("ragops.plan").source("item")({ sql = "select 1", key = "id",
        document = function(r) return { content = r.text } end }) } })
  end
  local function item_rows(n)
    local out = {}
    for i = 1, n do out[i] = { id = i, text = "texto número " .. i } end
    return out
  end

  it("processa só as chaves em (after, upto], sem checkpoint nem remoção de órfãos", function()
    local r = testing.run(plan_for(3), { sources = { item = item_rows(20) }, range = { after = "5", upto = "12" } })
    assert.are.equal(7, r.stats.processed)
    assert.is_nil(r:document("item", 5, 0))
    assert.is_not_nil(r:document("item", 6, 0))
    assert.is_not_nil(r:document("item", 12, 0))
    assert.is_nil(r:document("item", 13, 0))
    for _, w in ipairs(r.store.writes) do assert.is_nil(w.checkpoint) end
    assert.is_nil(r.store.checkpoints.item)
    -- Documents outside the range are not orphans of this unit.
    local r2 = testing.run(plan_for(3), { store = r.store, range = { after = "12" } })
    assert.are.equal(8, r2.stats.processed)
    assert.are.equal(0, r2.stats.deleted)
    assert.is_not_nil(r2:document("item", 6, 0))
  end)
end)

