-- documents_spec.lua: what a document may be (issue 20, points 6 and 11) and
-- fingerprints kept true by every write (issue 19, point 18), on the decide
-- and write stages with ragops.testing's fakes. What document() returns is
-- checked before anything is embedded: content and metadata PostgreSQL
-- would refuse, or content past chunking.max_content_bytes, become a dead
-- letter of class invalid_document whose reason never quotes the row, and
-- the rest of the unit is written. A document written from a row (embedded,
-- refreshed or pruned) carries that row's fingerprint, or none.
require "tests.lua.c_stubs"

local decide = require "ragops.run.stages.decide"
local plan = require "ragops.plan"
local testing = require "ragops.testing"
local write = require "ragops.run.stages.write"

local check = decide.lua_utf8_check

describe("texto que o PostgreSQL guarda (decide.lua_utf8_check, o mesmo que core.utf8_check)", function()
  it("aceita ASCII, acentos, 3 e 4 bytes e o texto vazio", function()
    for _, s in ipairs({ "", "abc", "ação coração", "€ ✓", "\240\159\152\128 emoji", ("x"):rep(1000) .. "é" }) do
      assert.is_true(check(s), s)
    end
  end)

  it("recusa o byte nulo e as sequências inválidas, dizendo qual e em que byte", function()
    local cases = {
      { "a\0b", "nul", 2 },
      { "\255abc", "invalid_utf8", 1 },
      { "ab\195", "invalid_utf8", 3 },              -- truncated 2-byte sequence
      { "a\192\128", "invalid_utf8", 2 },           -- overlong NUL
      { "a\224\128\128", "invalid_utf8", 2 },       -- overlong 3-byte
      { "a\237\160\128", "invalid_utf8", 2 },       -- UTF-16 surrogate U+D800
      { "a\244\144\128\128", "invalid_utf8", 2 },   -- past U+10FFFF
      { "é\128", "invalid_utf8", 3 },               -- lone continuation byte
      { "ção\0", "nul", 6 },
    }
    for _, c in ipairs(cases) do
      local ok, kind, pos = check(c[1])
      assert.is_false(ok, c[1])
      assert.are.equal(c[2], kind, c[1])
      assert.are.equal(c[3], pos, c[1])
    end
  end)
end)

describe("o que um documento pode ser (decide.check_document)", function()
  local function reason_of(doc, max)
    local content, metadata, reason, class = decide.check_document(doc, max)
    assert.is_nil(content)
    assert.is_nil(metadata)
    return reason, class
  end

  it("nil, false e conteúdo vazio ou em branco: sem documento, sem falha", function()
    for _, doc in ipairs({ false, {}, { content = "" }, { content = "  \n" } }) do
      local content, metadata, reason = decide.check_document(doc)
      assert.is_nil(content); assert.is_nil(metadata); assert.is_nil(reason)
    end
    assert.is_nil((decide.check_document(nil)))
  end)

  it("um documento válido devolve o conteúdo e o JSON dos metadados", function()
    local content, metadata = decide.check_document({ content = "texto", metadata = { livro = "Gênesis" } })
    assert.are.equal("texto", content)
    assert.are.equal('{"livro":"Gênesis"}', metadata)
    -- A literal backslash before u0000 is text, not a NUL escape.
    local _, literal = decide.check_document({ content = "x", metadata = { caminho = "C:\\u0000" } })
    assert.are.equal('{"caminho":"C:\\\\u0000"}', literal)
  end)

  it("recusa o que o PostgreSQL recusaria, sem citar o conteúdo da linha", function()
    local secret = "SEGREDO-DA-LINHA"
    local cases = {
      { { content = secret .. "\255" }, "o conteúdo tem uma sequência que não é UTF%-8 válido no byte 17" },
      { { content = secret .. "\0" }, "o conteúdo tem um byte nulo %(\\0%) no byte 17" },
      { { content = "ok", metadata = { x = secret .. "\0" } }, "os metadados .* têm um byte nulo" },
      { { content = "ok", metadata = { ["\255" .. secret] = 1 } }, "os metadados %(uma chave ou um valor%) tem uma sequência" },
      { { content = "ok", metadata = { x = { secret .. "\237\160\128" } } }, "não é UTF%-8 válido" },
      { { content = 42 }, "content deve ser um texto .* valor number" },
      { { content = "ok", metadata = secret }, "metadata deve ser uma tabela .* valor string" },
      { secret, "document%(%) deve devolver uma tabela .* valor string" },
    }
    for _, c in ipairs(cases) do
      local reason, class = reason_of(c[1])
      assert.are.equal("invalid_document", class)
      assert.matches(c[2], reason)
      assert.is_nil(reason:find(secret, 1, true), reason)
    end
  end)

  it("metadados que o JSON não representa continuam falha de transformação", function()
    local reason, class = reason_of({ content = "ok", metadata = { x = { [1] = 1, [20] = 2 } } })
    assert.are.equal("transform", class)
    assert.matches("JSON", reason)
  end)

  it("conteúdo acima do máximo (1 MiB por padrão, ou chunking.max_content_bytes)", function()
    assert.are.equal(1024 * 1024, decide.MAX_CONTENT_BYTES)
    local reason, class = reason_of({ content = ("a"):rep(decide.MAX_CONTENT_BYTES + 1) })
    assert.are.equal("invalid_document", class)
    assert.matches("o conteúdo tem 1048577 bytes, acima do máximo de 1048576 por documento", reason)
    assert.matches("chunking.max_content_bytes", reason, 1, true)
    assert.are.equal(("a"):rep(decide.MAX_CONTENT_BYTES), (decide.check_document({ content = ("a"):rep(decide.MAX_CONTENT_BYTES) })))
    assert.matches("tem 11 bytes, acima do máximo de 10", (reason_of({ content = "12345678901" }, 10)))
  end)

  it("o plano valida chunking.max_content_bytes", function()
    local source = plan.source "item" { sql = "select 1", key = "id", document = function() end }
    local p = plan.new { name = "x", sources = { source }, chunking = { max_content_bytes = 4096 } }
    assert.are.equal(4096, p.chunking.max_content_bytes)
    local ok, err = pcall(plan.new, { name = "x", sources = { source }, chunking = { max_content_bytes = 0 } })
    assert.is_false(ok)
    assert.matches('chave "chunking.max_content_bytes": valor 0 inválido', tostring(err))
  end)
end)

-- A plan over items whose document() is `document`.
local function make_plan(document, chunking)
  local source = plan.source "item" {
    sql = "select id, text from items", key = "id",
    document = document or function(row) return { content = row.text, metadata = row.meta } end,
  }
  return plan.new { name = "docs", sources = { source }, batch = { size = 8, in_flight = 1 },
                    chunking = chunking or { max_chars = 100, overlap = 10 } }
end

describe("um documento ruim vira falha e não bloqueia a unidade (20.11, 20.6)", function()
  local rows = {
    { id = 1, text = "primeiro" },
    { id = 2, text = "conteúdo \255 inválido" },
    { id = 3, text = "terceiro", meta = { x = "a\0b" } },
    { id = 4, text = "quarto", meta = { ["\255"] = 1 } },
    { id = 5, text = ("grande "):rep(300) },
    { id = 6, text = "sexto" },
  }
  local chunking = { max_chars = 100, overlap = 10, max_content_bytes = 1000 }

  it("grava o resto, registra invalid_document e não pede embedding do documento ruim", function()
    local r = testing.run(make_plan(nil, chunking), { sources = { item = rows } })
    assert.is_nil(r.stats.aborted)
    assert.are.equal(4, r.stats.failed)
    assert.are.equal(2, r.stats.succeeded)
    local failed = {}
    for _, f in ipairs(r.store.failures) do failed[f.entity_id] = f.error_class end
    assert.are.same({ ["2"] = "invalid_document", ["3"] = "invalid_document", ["4"] = "invalid_document",
                      ["5"] = "invalid_document" }, failed)
    assert.are.same({ "primeiro", "sexto" }, r.embedder:embedded_texts())
    assert.is_not_nil(r:document("item", 1, 0))
    assert.is_nil(r:document("item", 2, 0))
  end)

  it("uma reexecução não gasta pedidos com eles (a falha soma tentativas)", function()
    local first = testing.run(make_plan(nil, chunking), { sources = { item = rows } })
    local again = testing.run(make_plan(nil, chunking), { store = first.store })
    assert.are.equal(0, #again.embedder.calls)
    assert.are.equal(4, again.stats.failed)
    assert.are.equal(2, again.stats.skipped)
  end)

  it("um documento de 14 MiB não gera nenhum pedido (o máximo padrão é 1 MiB)", function()
    local huge = { { id = 1, text = ("palavra "):rep(14 * 1024 * 1024 / 8) }, { id = 2, text = "pequeno" } }
    local r = testing.run(make_plan(nil, { max_chars = 2000, overlap = 200 }), { sources = { item = huge } })
    assert.are.equal(1, #r.embedder.calls)
    assert.are.same({ "pequeno" }, r.embedder:embedded_texts())
    assert.are.equal("invalid_document", r.store.failures[1].error_class)
  end)

  it("um documento que fica inválido mantém o que estava gravado", function()
    local first = testing.run(make_plan(), { sources = { item = { { id = 1, text = "bom" } } } })
    first.store.sources.item[1].text = "ruim \0"
    local r = testing.run(make_plan(), { store = first.store })
    assert.are.equal(1, r.stats.failed)
    assert.are.equal("bom", r:document("item", 1, 0).content)
  end)
end)

-- The decide and write stages of one unit: entities from `docs` (id ->
-- { chunks = { content... }, metadata, fp }) against `existing` (known).
local function decided(docs, existing, opts)
  opts = opts or {}
  local entities = {}
  for _, id in ipairs(docs.order) do
    local d = docs[id]
    local e = { id = id, chunks = {}, fp = d.fp, updated_at = d.updated_at }
    for i, text in ipairs(d.chunks) do
      e.chunks[i] = { index = i - 1, content = text, metadata = d.metadata or "{}", hash = "h:" .. text }
    end
    entities[#entities + 1] = e
  end
  local ctx = { plan = { mode = "only_missing" }, env = { model = "m", run_id = 1 } }
  local d = decide.decide(ctx, entities, {}, existing, true)
  return d, write.payload(ctx, { source = { entity_type = "item" }, fingerprinted = opts.fast }, d, {},
    opts.failed_groups or {}, { chunks = 0, tokens = 0, bytes = 0 })
end

-- What the target holds for an entity: chunk contents, metadata (decoded), same updated_at.
local function stored(contents, metadata)
  local e = { count = #contents, hashes = {}, metadata = {}, same_updated_at = {}, open_failure = false }
  for i, text in ipairs(contents) do
    e.hashes[i - 1], e.metadata[i - 1], e.same_updated_at[i - 1] = "h:" .. text, metadata or {}, true
  end
  return e
end

describe("toda gravação de um documento mantém a impressão digital verdadeira (19.18)", function()
  it("um refresh de metadados grava no chunk 0 a impressão da linha de que veio (mesmo fora da reexecução rápida)", function()
    local _, p = decided({ order = { "7" }, ["7"] = { chunks = { "a", "b" }, metadata = '{"book":"Exo"}', fp = "123" } },
      { ["7"] = stored({ "a", "b" }, { book = "Gen" }) })
    assert.are.same({ "7", "7" }, p.refresh.entity_ids)
    assert.are.same({ "123", "123" }, p.refresh.fps)
  end)

  it("sem impressão calculada (sync), o refresh a limpa: a reexecução rápida confere a linha", function()
    local _, p = decided({ order = { "7" }, ["7"] = { chunks = { "a" }, metadata = '{"book":"Exo"}' } },
      { ["7"] = stored({ "a" }, { book = "Gen" }) })
    assert.are.same({ "" }, p.refresh.fps)
  end)

  it("uma entidade mudada cujo chunk 0 não é regravado tem a impressão gravada à parte", function()
    local d, p = decided({ order = { "7" }, ["7"] = { chunks = { "a", "c" }, fp = "55" } },
      { ["7"] = stored({ "a", "b" }) })
    assert.are.equal(1, #d.items)
    assert.are.equal(1, d.items[1].chunk.index)
    assert.are.same({ entity_ids = { "7" }, fps = { "55" } }, p.fingerprints)
  end)

  it("uma entidade que encolheu (só poda) também", function()
    local _, p = decided({ order = { "7" }, ["7"] = { chunks = { "a" } } }, { ["7"] = stored({ "a", "b" }) })
    assert.are.same({ "7" }, p.chunk_counts.entity_ids)
    assert.are.same({ entity_ids = { "7" }, fps = { "" } }, p.fingerprints)
  end)

  it("os chunks que uma entidade mudada mantém ganham os metadados novos", function()
    local _, p = decided({ order = { "7" }, ["7"] = { chunks = { "a", "c" }, metadata = '{"book":"Exo"}', fp = "9" } },
      { ["7"] = stored({ "a", "b" }, { book = "Gen" }) })
    assert.are.same({ "7" }, p.refresh.entity_ids)
    assert.are.same({ 0 }, p.refresh.chunk_indexes)
    assert.are.same({ '{"book":"Exo"}' }, p.refresh.metadata)
  end)

  it("um refresh que não alcança o chunk 0 tem a impressão gravada à parte", function()
    local old = stored({ "a", "b" }, { book = "Exo" })
    old.metadata[1] = { book = "Gen" }
    local d, p = decided({ order = { "7" }, ["7"] = { chunks = { "a", "b" }, metadata = '{"book":"Exo"}', fp = "31" } },
      { ["7"] = old })
    assert.are.same({ 1 }, p.refresh.chunk_indexes)
    assert.is_true(d.refit["7"])
    assert.are.same({ entity_ids = { "7" }, fps = { "31" } }, p.fingerprints)
  end)

  it("uma entidade inalterada fora da reexecução rápida não é tocada", function()
    local _, p = decided({ order = { "7" }, ["7"] = { chunks = { "a" }, fp = "1" } }, { ["7"] = stored({ "a" }) })
    assert.are.equal(0, #p.refresh.entity_ids)
    assert.are.equal(0, #p.fingerprints.entity_ids)
  end)

  it("uma entidade que falhou não tem nem refresh nem impressão gravados", function()
    local d = decided({ order = { "7" }, ["7"] = { chunks = { "a", "c" }, metadata = '{"book":"Exo"}', fp = "9" } },
      { ["7"] = stored({ "a", "b" }, { book = "Gen" }) })
    local failed = { { items = d.items, info = { class = "permanent", status = 400 }, err = "recusado", attempts = 1 } }
    local _, p = decided({ order = { "7" }, ["7"] = { chunks = { "a", "c" }, metadata = '{"book":"Exo"}', fp = "9" } },
      { ["7"] = stored({ "a", "b" }, { book = "Gen" }) }, { failed_groups = failed })
    assert.are.equal(0, #p.refresh.entity_ids)
    assert.are.equal(0, #p.fingerprints.entity_ids)
  end)
end)
