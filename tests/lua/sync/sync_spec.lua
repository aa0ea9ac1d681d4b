-- sync_spec.lua: the pure parts of `ragops sync`: the plan's sync = { ... }
-- validation (pt-BR errors, defaults), the coalescing of claimed changes
-- and the triggers a plan asks for (names that change with the plan).
require "tests.lua.c_stubs"

local changes = require "ragops.sync.changes"
local plan = require "ragops.plan"
local sync_queue = require "ragops.sync.queue"

local function source_with(sync, extra)
  local spec = { sql = "select id, text, updated_at from verses", key = "id", updated_at = "updated_at",
                 document = function(r) return { content = r.text } end, sync = sync }
  for k, v in pairs(extra or {}) do spec[k] = v end
  return plan.source("verse")(spec)
end

local function source_error(sync, extra)
  local ok, err = pcall(source_with, sync, extra)
  assert.is_false(ok, "esperava erro de validação")
  return err
end

describe("sync no plano", function()
  it("preenche os padrões de cada estratégia", function()
    assert.same({ strategy = "watermark", overlap_s = 300, deletes_every_s = 600, poll_s = 2 },
      source_with({ strategy = "watermark" }).sync)
    assert.same({ strategy = "trigger", table = "verses", key_column = "id", related = {}, drain_every_s = 30 },
      source_with({ strategy = "trigger", table = "verses" }).sync)
  end)

  it("aceita a declaração de tabela relacionada", function()
    local s = source_with({ strategy = "trigger", table = "public.verses", key_column = "id",
      related = { { table = "books", column = "id", entities = "select id from verses where book_id = $1" } } }).sync
    assert.same({ { table = "books", column = "id", entities = "select id from verses where book_id = $1" } }, s.related)
  end)

  it("recusa o que não faz sentido, em pt-BR, citando a chave", function()
    assert.matches('chave "sync.strategy".*"watermark", "trigger"', source_error({ strategy = "cdc" }))
    assert.matches('chave "sync.table"', source_error({ strategy = "trigger" }))
    assert.matches('chave "sync.table"', source_error({ strategy = "trigger", table = "verses; drop table x" }))
    assert.matches('chave "sync.overlap_s"', source_error({ strategy = "watermark", overlap_s = -1 }))
    assert.matches('chave "sync.deletes_every_s"', source_error({ strategy = "watermark", deletes_every_s = 0 }))
    assert.matches('chave "sync.tabela" desconhecida', source_error({ strategy = "trigger", tabela = "verses" }))
    assert.matches('sync.related%[1%].entities.*%$1', source_error({ strategy = "trigger", table = "verses",
      related = { { table = "books", column = "id", entities = "select id from verses" } } }))
    assert.matches('sync.related%[1%].column', source_error({ strategy = "trigger", table = "verses",
      related = { { table = "books", entities = "select id from verses where book_id = $1" } } }))
  end)

  it("watermark sem updated_at na fonte aponta a estratégia trigger", function()
    local err = source_error({ strategy = "watermark" }, { updated_at = false })
    assert.matches("updated_at", err)
  end)
end)

describe("coalescência das mudanças tomadas", function()
  it("cada entidade uma vez, na ordem da mudança mais antiga, com todos os ids", function()
    local keys, ids = changes.coalesce({
      { id = 1, entity_key = "7", op = "U" }, { id = 2, entity_key = "3", op = "I" },
      { id = 3, entity_key = "7", op = "U" }, { id = 4, entity_key = "7", op = "D" },
      { id = 5, entity_key = "9", op = "U" } })
    assert.same({ "7", "3", "9" }, keys)
    assert.same({ 1, 2, 3, 4, 5 }, ids)
  end)
end)

describe("gatilhos pedidos pelo plano", function()
  -- A stand-in for core.hash: any change of the text changes the hex.
  local function hash(...)
    local h = 0
    for i, b in ipairs({ table.concat({ ... }, "|"):byte(1, -1) }) do h = (h * 31 + b * i) % 4294967291 end
    return ("%08x%08x"):format(h, (h * 7) % 4294967291)
  end
  local function wanted(sync)
    return sync_queue.wanted(plan.new { name = "p", sources = { source_with(sync) } }, hash)
  end

  it("um por tabela (a da fonte e cada relacionada), com nomes que mudam com o que fazem", function()
    local base = wanted({ strategy = "trigger", table = "verses" })
    local again = wanted({ strategy = "trigger", table = "verses" })
    local related = wanted({ strategy = "trigger", table = "verses",
      related = { { table = "books", column = "id", entities = "select id from verses where book_id = $1" } } })
    assert.equal(2, #base) -- row and TRUNCATE triggers
    assert.equal(4, #related)
    assert.equal(base[1].trigger_name, again[1].trigger_name)
    assert.equal("books", related[3].table)
    assert.matches("ragops_sync%.changes", related[3].body)
    assert.matches("pg_notify%('ragops_sync'", base[1].body)
    local other_key = wanted({ strategy = "trigger", table = "verses", key_column = "verse_id" })
    assert.are_not.equal(base[1].trigger_name, other_key[1].trigger_name)
  end)

  it("um plano sem fontes trigger não pede gatilhos", function()
    assert.same({}, wanted({ strategy = "watermark" }))
  end)
end)
