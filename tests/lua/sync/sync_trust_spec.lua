-- sync_trust_spec.lua: the pure parts of issue 19 (points 9 and 16) and
-- issue 20 (points 1 and 2): the soft-delete declaration of a watermark
-- source, the TRUNCATE triggers a plan asks for, the hardened trigger
-- functions (SECURITY DEFINER, fixed search_path, nothing for PUBLIC), the
-- claim that never takes a TRUNCATE marker nor passes one, and the list of
-- relations whose owner migrate checks.
require "tests.lua.c_stubs"

local migrate = require "ragops.store.migrate"
local plan = require "ragops.plan"
local sync_queue = require "ragops.sync.queue"

local function source_with(sync, extra)
  local spec = { sql = "select id, text, updated_at from fortunes where not deleted", key = "id",
                 updated_at = "updated_at", document = function(r) return { content = r.text } end, sync = sync }
  for k, v in pairs(extra or {}) do spec[k] = v end
  return plan.source("fortune")(spec)
end

local function source_error(sync)
  local ok, err = pcall(source_with, sync)
  assert.is_false(ok, "esperava erro de validação")
  return err
end

describe("sync.soft_delete no plano (estratégia watermark)", function()
  it("declara a tabela e a coluna; chave e updated_at vêm da fonte", function()
    local s = source_with({ strategy = "watermark", soft_delete = { table = "fortunes", column = "deleted" } }).sync
    assert.same({ table = "fortunes", column = "deleted", key_column = "id", updated_at = "updated_at" }, s.soft_delete)
    s = source_with({ strategy = "watermark", soft_delete = { table = "public.fortunes", column = "deleted_at",
                                                              key_column = "fortune_id", updated_at = "changed_at" } }).sync
    assert.same({ table = "public.fortunes", column = "deleted_at", key_column = "fortune_id",
                  updated_at = "changed_at" }, s.soft_delete)
  end)

  it("sem soft_delete, nada muda nos padrões", function()
    assert.is_nil(source_with({ strategy = "watermark" }).sync.soft_delete)
  end)

  it("recusa o que não faz sentido, em pt-BR, citando a chave", function()
    assert.matches('chave "sync.soft_delete"', source_error({ strategy = "watermark", soft_delete = "deleted" }))
    assert.matches('chave "sync.soft_delete.column"',
      source_error({ strategy = "watermark", soft_delete = { table = "fortunes" } }))
    assert.matches('chave "sync.soft_delete.table"',
      source_error({ strategy = "watermark", soft_delete = { table = "fortunes; drop table x", column = "deleted" } }))
    assert.matches('chave "sync.soft_delete.coluna" desconhecida',
      source_error({ strategy = "watermark", soft_delete = { table = "fortunes", coluna = "deleted" } }))
    -- the trigger strategy sees soft deletes already (the UPDATE is queued; the row is gone from the query)
    assert.matches('chave "sync.soft_delete" desconhecida',
      source_error({ strategy = "trigger", table = "fortunes", soft_delete = { table = "fortunes", column = "deleted" } }))
  end)
end)

describe("gatilhos de TRUNCATE e funções endurecidas", function()
  local function hash(...)
    local h = 0
    for i, b in ipairs({ table.concat({ ... }, "|"):byte(1, -1) }) do h = (h * 31 + b * i) % 4294967291 end
    return ("%08x%08x"):format(h, (h * 7) % 4294967291)
  end
  local function wanted(sync)
    return sync_queue.wanted(plan.new { name = "p", sources = { source_with(sync) } }, hash)
  end

  it("cada tabela ganha um gatilho de linha e um de TRUNCATE: marcador 'T' na fonte, 'R' na relacionada", function()
    local list = wanted({ strategy = "trigger", table = "fortunes",
      related = { { table = "authors", column = "id", entities = "select id from fortunes where author_id = $1" } } })
    assert.equal(4, #list)
    local by = {}
    for _, t in ipairs(list) do by[t.table .. ":" .. t.kind] = t end
    assert.matches("values %(%$q%$fortune%$q%$, '', 'T'%)", by["fortunes:truncate"].body)
    assert.matches("values %(%$q%$fortune%$q%$, '', 'R'%)", by["authors:truncate"].body)
    assert.is_true(by["authors:row"].related)
    assert.is_false(by["fortunes:row"].related)
    assert.is_false(by["authors:truncate"].related)
    local seen = {}
    for _, t in ipairs(list) do
      assert.is_nil(seen[t.trigger_name], "nome repetido: " .. t.trigger_name)
      seen[t.trigger_name] = true
      -- every name in a body is schema-qualified (the function's search_path is pg_catalog, pg_temp)
      assert.matches("pg_catalog%.pg_notify%('ragops_sync'", t.body)
      for table_ref in t.body:gmatch("insert into ([%w_%.]+)") do assert.equal("ragops_sync.changes", table_ref) end
    end
  end)

  it("a função é SECURITY DEFINER com search_path fixo e sem EXECUTE para PUBLIC", function()
    local t = wanted({ strategy = "trigger", table = "fortunes" })[1]
    local sql = sync_queue.function_sql(t, "pg_catalog, pg_temp")
    assert.matches("security definer set search_path = pg_catalog, pg_temp as ", sql[1], 1, true)
    assert.matches("^create or replace function ragops_sync%.\"f_%x+\"%(%) returns trigger", sql[1])
    assert.matches("^revoke all on function ragops_sync%.\"f_%x+\"%(%) from public$", sql[2])
  end)

  it("a tomada nunca pega um marcador e, com um pendente, só escolhe mudanças de antes dele", function()
    local free = sync_queue.CLAIM_SQL:match("free as %((.-)%),%s*chosen")
    assert.matches("q.op in ('I', 'U', 'D')", free, 1, true)
    assert.matches("($5::bigint is null or q.id < $5)", free, 1, true)
    local locked = sync_queue.CLAIM_SQL:match("locked as %((.-)for update")
    assert.matches("q.op in ('I', 'U', 'D')", locked, 1, true)
    assert.matches("op in ('T', 'R')", sync_queue.MARKER_SQL, 1, true)
  end)
end)

describe("relações cujo dono o migrate confere", function()
  it("todas as tabelas e índices que as migrações criam, a tabela de versão e o alvo", function()
    local names = migrate.engine_relations("rag_documents")
    local set = {}
    for _, n in ipairs(names) do set[n] = true end
    assert.equal("ragops_schema_version", names[1])
    for _, n in ipairs({ "ragops_runs", "ragops_failures", "ragops_failures_open", "ragops_work_units",
                         "ragops_run_units", "ragops_token_usage", "ragops_sync_watermarks", "ragops_model_targets",
                         '"rag_documents"', '"rag_documents_type_updated"' }) do
      assert.is_true(set[n], "faltou " .. n .. " em " .. table.concat(names, ", "))
    end
  end)

  it("sem alvo (comandos que não o conhecem), só as relações ragops_*", function()
    for _, n in ipairs(migrate.engine_relations(nil)) do
      assert.matches("^ragops_", n)
    end
  end)

  it("uma migração nova no fim entra na lista sem mais nada", function()
    table.insert(migrate.migrations, { version = 999, description = "teste", sql = function()
      return { "create table if not exists ragops_nova (id int)" }
    end })
    local ok, names = pcall(migrate.engine_relations, "rag.documentos")
    table.remove(migrate.migrations)
    assert.is_true(ok, names)
    assert.equal("ragops_nova", names[#names])
    local quoted = false
    for _, n in ipairs(names) do quoted = quoted or n == '"rag"."documentos"' end
    assert.is_true(quoted, table.concat(names, ", "))
  end)
end)
