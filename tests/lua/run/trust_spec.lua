-- trust_spec.lua: issue 7 on the runner with ragops.testing's fakes: a run
-- never touches what its scope did not select, a resumed run counts each
-- row once, and no error leaves the run hanging.

local plan = require "ragops.plan"
local testing = require "ragops.testing"

local function make_plan(spec, document)
  local source = plan.source "item" {
    sql = "select id, text, updated_at from items", key = "id", updated_at = "updated_at",
    document = document or function(row) return { content = row.text, metadata = { n = row.id } } end,
  }
  local full = { name = "teste", sources = { source }, batch = { size = 2, in_flight = 1 },
                 chunking = { max_chars = 100, overlap = 10 },
                 retry = { attempts = 2, base_ms = 10, max_ms = 100 } }
  for k, v in pairs(spec or {}) do full[k] = v end
  return plan.new(full)
end

local function rows(n)
  local out = {}
  for i = 1, n do
    out[i] = { id = i, text = "texto " .. i, updated_at = ("2024-%02d-01"):format(i) }
  end
  return out
end

local function ids_of(docs)
  local out = {}
  for _, d in ipairs(docs) do out[#out + 1] = d.entity_id end
  return out
end

describe("escopo: o que uma execução pode apagar", function()
  it("--entity-id com --since não apaga a entidade que existe fora da janela de datas (7.1)", function()
    local first = testing.run(make_plan(), { sources = { item = rows(6) } })
    assert.are.equal(6, #first:documents("item"))
    local r = testing.run(make_plan(), { store = first.store,
      overrides = { scope = { entity_types = { "item" }, entity_ids = { "1", "5" }, since = "2024-04-15" } } })
    assert.is_nil(r.stats.aborted)
    assert.are.equal(0, r.stats.deleted)
    assert.are.same({ "1", "2", "3", "4", "5", "6" }, ids_of(r:documents("item")))
  end)

  it("apaga só a entidade pedida por id que a fonte não tem mais", function()
    local first = testing.run(make_plan(), { sources = { item = rows(6) } })
    table.remove(first.store.sources.item, 5) -- id 5 gone
    local r = testing.run(make_plan(), { store = first.store,
      overrides = { scope = { entity_types = { "item" }, entity_ids = { "1", "5" } } } })
    assert.are.equal(1, r.stats.deleted)
    assert.are.same({ "1", "2", "3", "4", "6" }, ids_of(r:documents("item")))
  end)

  it("retomar uma execução por ids não apaga as entidades processadas antes da interrupção (7.2)", function()
    local first = testing.run(make_plan(), { sources = { item = rows(6) } })
    local scope = { entity_types = { "item" }, entity_ids = { "1", "2", "3", "4", "5", "6" } }
    -- Resumed after the unit with ids 1 and 2 committed.
    local r = testing.run(make_plan(), { store = first.store, overrides = { scope = scope },
      checkpoint = { item = { seq = 1, after = "2", stats = { processed = 2, skipped = 2 } } } })
    assert.are.equal(0, r.stats.deleted)
    assert.are.equal(6, r.stats.processed)
    assert.are.same({ "1", "2", "3", "4", "5", "6" }, ids_of(r:documents("item")))
  end)

  it("chave não única: código 2 antes de gravar qualquer coisa, nomeando a fonte e a chave (7.4)", function()
    local src = { { id = "a", text = "A" }, { id = "b", text = "B1" }, { id = "b", text = "B2" },
                  { id = "c", text = "C" } }
    local r = testing.run(make_plan(), { sources = { item = src } })
    assert.are.equal(2, r.stats.aborted.code)
    assert.matches('"item"', r.stats.aborted.reason)
    assert.matches("b", r.stats.aborted.reason)
    assert.are.equal(0, #r.store.writes)
    assert.are.equal(0, #r.embedder.calls)
  end)
end)

describe("nada se perde entre duas gravações", function()
  it("dead letters vão na mesma gravação da unidade e do checkpoint (7.5)", function()
    local r = testing.run(make_plan(), { sources = { item = rows(4) }, run_id = 1,
      embedder = { fail = function(texts)
        for _, t in ipairs(texts) do
          if t == "texto 3" then return { status = 400, class = "permanent", message = "recusado" } end
        end
      end } })
    assert.are.equal(1, r.stats.failed)
    local with_failure
    for _, w in ipairs(r.store.writes) do
      if w.failures and #w.failures > 0 then with_failure = w end
    end
    assert.is_not_nil(with_failure, "a falha deveria estar na mesma gravação")
    assert.are.equal("3", with_failure.failures[1].entity_id)
    assert.is_not_nil(with_failure.checkpoint)
  end)

  it("retomada conta cada linha uma vez: unidades gravadas além do checkpoint não viram 'ignorados' (7.6)", function()
    local p = make_plan({ batch = { size = 2, in_flight = 3 } })
    -- Unit 1 (ids 1-2) is slow; units 2 and 3 commit past it; then the run stops.
    local first = testing.run(p, { sources = { item = rows(10) }, run_id = 1, stop_after_ms = 5000,
      embedder = { latency_ms = function(texts) return texts[1] == "texto 1" and 10000 or 1000 end } })
    assert.are.equal(130, first.stats.aborted.code)
    local cp = first.store:resume_checkpoint()
    assert.is_true(#(cp.item.ahead or {}) >= 1, "unidades além do checkpoint deveriam estar registradas")
    local resumed = testing.run(p, { store = first.store, run_id = 1, checkpoint = cp })
    assert.is_nil(resumed.stats.aborted)
    assert.are.equal(10, resumed.stats.processed)
    assert.are.equal(10, resumed.stats.embedded)
    assert.are.equal(0, resumed.stats.skipped)
    -- Rows of the units committed past the checkpoint were not read again.
    for _, c in ipairs(resumed.embedder.calls) do
      for _, t in ipairs(c.texts) do assert.is_nil(t:match("^texto [34]$"), t) end
    end
  end)
end)

describe("qualquer erro termina a execução de forma limpa", function()
  it("metadados que o JSON não representa (array esparso, NaN) viram falha de transformação (7.10)", function()
    local r = testing.run(make_plan(nil, function(row)
      if row.id == 2 then return { content = row.text, metadata = { x = { [1] = 1, [20] = 2 } } } end
      if row.id == 3 then return { content = row.text, metadata = { x = 0 / 0 } } end
      return { content = row.text }
    end), { sources = { item = rows(4) } })
    assert.is_nil(r.stats.aborted)
    assert.are.equal(2, r.stats.failed)
    assert.are.equal(2, r.stats.succeeded)
    local classes = {}
    for _, f in ipairs(r.store.failures) do classes[#classes + 1] = f.error_class end
    assert.are.same({ "transform", "transform" }, classes)
    assert.matches("JSON", r.store.failures[1].message)
  end)

  it("um erro fora de document() num worker termina a execução com código 2 sem travar o leitor (7.10)", function()
    local embedder = testing.embedder()
    local real_embed = embedder.embed
    embedder.embed = function(self, texts)
      local b = real_embed(self, texts)
      return setmetatable({}, { __index = function() error("defeito simulado") end, __len = function() return #b end })
    end
    local r = testing.run(make_plan({ batch = { size = 2, in_flight = 2 } }),
      { sources = { item = rows(20) }, embedder = embedder })
    assert.are.equal(2, r.stats.aborted.code)
    assert.matches("erro interno", r.stats.aborted.reason)
  end)
end)
