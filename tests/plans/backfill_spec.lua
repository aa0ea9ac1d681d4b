-- backfill_spec.lua: plans/backfill.lua run through ragops.testing with small
-- fake `verse` and `fortune` rows (no database, no provider).

local testing = require "ragops.testing"

-- plans/backfill.lua relative to this spec (works from any working directory).
local here = debug.getinfo(1, "S").source:sub(2):match("^(.*)/[^/]*$") or "."
local PLAN = here .. "/../../plans/backfill.lua"

local function verses()
  return {
    { id = 1, book = "Genesis", chapter = 1, verse = 1, updated_at = "2024-01-01",
      text = "In the beginning God created the heaven and the earth." },
    { id = 2, book = "Genesis", chapter = 1, verse = 2, updated_at = "2024-01-01",
      text = "And the earth was without form, and void." },
    { id = 3, book = "John", chapter = 11, verse = 35, updated_at = "2024-02-01",
      text = "Jesus wept." },
  }
end

local function fortunes()
  return {
    { id = 1, text = "Quem ri por último ri melhor.", updated_at = "2024-01-01" },
    { id = 2, text = "Devagar se vai ao longe.", updated_at = "2024-01-01" },
  }
end

local function sources() return { verse = verses(), fortune = fortunes() } end

describe("plans/backfill.lua", function()
  it("indexa versículos com conteúdo e metadados de referência", function()
    local r = testing.run(PLAN, { sources = sources() })
    assert.is_nil(r.stats.aborted)
    local docs = r:documents("verse")
    assert.are.equal(3, #docs)
    local d = r:document("verse", 3, 0)
    assert.are.equal("Jesus wept.", d.content)
    assert.are.same({ livro = "John", capitulo = 11, versiculo = 35, referencia = "John 11:35" }, d.metadata)
    assert.are.equal("Genesis 1:2", r:document("verse", 2, 0).metadata.referencia)
    assert.are.equal("2024-02-01", d.source_updated_at)
  end)

  it("indexa os textos do fortunes-br com a coleção nos metadados", function()
    local r = testing.run(PLAN, { sources = sources() })
    local docs = r:documents("fortune")
    assert.are.equal(2, #docs)
    assert.are.equal("Quem ri por último ri melhor.", docs[1].content)
    for _, d in ipairs(docs) do
      assert.are.same({ colecao = "fortunes-br" }, d.metadata)
    end
  end)

  it("usa só os tipos de entidade verse e fortune", function()
    local r = testing.run(PLAN, { sources = sources() })
    local types = {}
    for _, d in ipairs(r:documents()) do types[d.entity_type] = (types[d.entity_type] or 0) + 1 end
    assert.are.same({ verse = 3, fortune = 2 }, types)
    assert.are.same({ "verse", "fortune" }, { r.plan.sources[1].entity_type, r.plan.sources[2].entity_type })
    assert.are.equal(5, r.stats.succeeded)
  end)

  it("é idempotente: reexecutar não gera embeddings nem muda documentos", function()
    local r = testing.run(PLAN, { sources = sources() })
    local before = {}
    for _, d in ipairs(r:documents()) do before[#before + 1] = d.content_hash end
    local r2 = testing.run(PLAN, { store = r.store })
    assert.are.equal(0, #r2.embedder.calls)
    assert.are.equal(5, r2.stats.skipped)
    assert.are.equal(0, r2.stats.deleted)
    local after = {}
    for _, d in ipairs(r2:documents()) do after[#after + 1] = d.content_hash end
    assert.are.same(before, after)
  end)

  it("reindexa só o texto alterado e remove o que sumiu da fonte", function()
    local r = testing.run(PLAN, { sources = sources() })
    r.store.sources.fortune[2].text = "Água mole em pedra dura tanto bate até que fura."
    table.remove(r.store.sources.verse, 1)
    local r2 = testing.run(PLAN, { store = r.store })
    assert.are.same({ "Água mole em pedra dura tanto bate até que fura." }, r2.embedder:embedded_texts())
    assert.is_nil(r2:document("verse", 1, 0))
    assert.are.equal(1, r2.stats.deleted)
    assert.are.equal(2, #r2:documents("verse"))
  end)

  it("texto em branco não vira documento", function()
    local src = sources()
    src.fortune[3] = { id = 3, text = "   \n ", updated_at = "2024-01-01" }
    local r = testing.run(PLAN, { sources = src })
    assert.is_nil(r:document("fortune", 3, 0))
    assert.are.equal(2, #r:documents("fortune"))
  end)

  it("fortune longo é dividido em chunks de até 2000 caracteres", function()
    local words = {}
    for i = 1, 900 do words[i] = "palavra" .. i end
    local src = sources()
    src.fortune[1].text = table.concat(words, " ")
    local r = testing.run(PLAN, { sources = src })
    local chunks = 0
    for _, d in ipairs(r:documents("fortune")) do
      if d.entity_id == "1" then
        assert.are.equal(chunks, d.chunk_index)
        chunks = chunks + 1
        assert.is_true(#d.content <= 2000)
      end
    end
    assert.is_true(chunks >= 5, "esperava vários chunks, obtive " .. chunks)
  end)

  it("respeita lotes de 64 e 4 em paralelo com muitos versículos", function()
    local many = {}
    for i = 1, 600 do
      many[i] = { id = i, book = "Psalms", chapter = math.floor(i / 10) + 1, verse = i % 10 + 1,
                  text = "Verse text " .. i, updated_at = "2024-01-01" }
    end
    local r = testing.run(PLAN, { sources = { verse = many, fortune = {} },
                                  embedder = { latency_ms = 50 } })
    assert.are.equal(600, #r:documents("verse"))
    for _, c in ipairs(r.embedder.calls) do assert.is_true(#c.texts <= 64) end
    assert.are.equal(4, r.embedder.peak)
  end)

  it("429 com Retry-After é repetido conforme a política do plano", function()
    local r = testing.run(PLAN, {
      sources = sources(),
      embedder = { fail = function(_, call_no)
        if call_no <= 2 then return { status = 429, class = "transient", retry_after_ms = 2000 } end
      end },
    })
    assert.are.equal(0, r.stats.failed)
    assert.are.equal(5, #r:documents())
    assert.is_true(r.clock >= 4000)
  end)

  it("taxa de falhas acima de 5% interrompe a execução (alerta com ação abort, código 3)", function()
    local many = {}
    for i = 1, 100 do
      many[i] = { id = i, book = "Psalms", chapter = 1, verse = i,
                  text = (i % 5 == 0) and ("recusado " .. i) or ("Verse " .. i), updated_at = "2024-01-01" }
    end
    local bad = function(texts)
      for _, t in ipairs(texts) do
        if t:find("^recusado") then return { status = 400, class = "permanent" } end
      end
    end
    local r = testing.run(PLAN, { sources = { verse = many, fortune = {} }, alerts = true,
                                  embedder = { fail = bad } })
    assert.are.equal(3, r.stats.aborted.code)
    assert.truthy(r.stats.aborted.reason ~= "")
    assert.is_true(#r.alerts.fired >= 1)
    -- Without alerts the same run finishes with the failures dead-lettered.
    local r2 = testing.run(PLAN, { sources = { verse = many, fortune = {} }, embedder = { fail = bad } })
    assert.is_nil(r2.stats.aborted)
    assert.are.equal(20, r2.stats.failed)
    assert.are.equal(80, #r2:documents("verse"))
  end)

  it("scope.entity_types limita a execução aos tipos pedidos", function()
    local r = testing.run(PLAN, { sources = sources(), overrides = { scope = { entity_types = { "verse" } } } })
    assert.are.equal(3, #r:documents("verse"))
    assert.are.equal(0, #r:documents("fortune"))
  end)

  it("metadados alterados sem mudança de texto são atualizados sem novo embedding", function()
    local src = sources()
    local r = testing.run(PLAN, { sources = src })
    src.verse[3].book = "Joao"
    src.verse[3].updated_at = "2024-05-01"
    local again = testing.run(PLAN, { store = r.store })
    assert.are.equal(0, #again.embedder.calls)
    assert.are.equal(5, again.stats.skipped)
    assert.are.equal(1, again.stats.refreshed)
    local d = again:document("verse", 3, 0)
    assert.are.equal("Joao 11:35", d.metadata.referencia)
    assert.are.equal("2024-05-01", d.source_updated_at)
    local third = testing.run(PLAN, { store = r.store })
    assert.are.equal(0, third.stats.refreshed)
  end)
end)
