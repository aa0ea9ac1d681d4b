-- sandbox_trust_spec.lua: what a plan file cannot do to the engine, under
-- plain LuaJIT: source SQL is one statement (statements stacked after a
-- ";" outside quotes and comments are refused at load, in pt-BR); the plan
-- the engine runs is a fresh copy of what the file returned, validated
-- again (changes after plan{} are refused, changes made later from
-- document() never reach it); the defaults plan's run() of `index create`
-- runs under the load budget.
require "tests.lua.c_stubs"

local index = require "ragops.vector.index"
local plan = require "ragops.plan"
local sandbox = require "ragops.plan.sandbox"

local written = {}

local function plan_file(text)
  local path = os.tmpname() .. "_trust.lua"
  local handle = assert(io.open(path, "wb"))
  handle:write(text)
  handle:close()
  written[#written + 1] = path
  return path
end

after_each(function()
  for _, path in ipairs(written) do os.remove(path) end
  written = {}
end)

local SOURCE = [[
local s = source "fortune" {
  sql = "select id, text from fortunes", key = "id",
  document = function(row) return { content = row.text } end,
}
]]

describe("plan.statement_separator", function()
  -- { sql, position of the first separating ";" or nil }
  local CASES = {
    { "select 1", nil },
    { "select 1;", 9 },
    { "select id,text from fortunes) as src; commit; begin transaction read write", 37 },
    { "select ';' as x", nil },
    { "select 'it''s;' as x", nil },
    { [[select E'\';' as x]], nil },
    { [[select '\';' as x; select 2]], 11 },
    { 'select 1 as "a;b", 2 as "c"";d"', nil },
    { "select $$;$$, $tag$ ; $x$ ; $tag$ as y", nil },
    { "select a$b; select 2", 11 },
    { "select $1::int; select 2", 15 },
    { "select 1 -- ;\n from t", nil },
    { "select 1 /* ; /* ; */ ; */ from t", nil },
    { "select 1 /* x */ ; ", 18 },
    { "select 'aberto ;", nil },
  }
  for _, case in ipairs(CASES) do
    it(("%q -> %s"):format(case[1], tostring(case[2])), function()
      assert.are.equal(case[2], plan.statement_separator(case[1]))
    end)
  end
end)

describe("SQL de fonte com comandos empilhados", function()
  it("é recusado ao carregar, com arquivo, linha, fonte e chave", function()
    local path = plan_file([[
local s = source "fortune" {
  sql = [=[select id,text,updated_at from fortunes) as src; commit; begin transaction read write;
    create table pwned_dryrun(x text); commit; select count(*) as n from (select 1 as id]=],
  key = "id",
  document = function(row) return { content = row.text } end,
}
return plan { name = "empilhado", sources = { s } }
]])
    local p, err = plan.load(path)
    assert.is_nil(p)
    assert.are.equal(("plano %s:1: fonte \"fortune\": chave \"sql\": a consulta deve ser um único comando SELECT, "
      .. "sem \";\" (há um \";\" fora de textos e comentários no caractere 48, e comandos empilhados nunca são "
      .. "executados); o ragops a usa como subconsulta"):format(path), err)
  end)

  it("um \";\" no fim ganha a dica de tirá-lo; count_sql passa pela mesma regra", function()
    local _, err = plan.load(plan_file([[
return plan { name = "x", sources = { source "f" { sql = "select id from t;", key = "id",
  document = function() end } } }]]))
    assert.truthy(err:find('tire o ";" do fim', 1, true), err)
    local _, count_err = plan.load(plan_file([[
return plan { name = "x", sources = { source "f" { sql = "select id from t", key = "id",
  count_sql = "select count(*) from t; delete from t", document = function() end } } }]]))
    assert.truthy(count_err:find('chave "count_sql": a consulta deve ser um único comando', 1, true), count_err)
  end)

  it("\";\" dentro de textos, identificadores e comentários é aceito", function()
    local p = assert(plan.load(plan_file([[
return plan { name = "x", sources = { source "f" {
  sql = [=[select id, 'a;b' as t, "c;d" as u, $q$;$q$ as v from t -- ;
  /* ; */]=], key = "id", document = function() end } } }]])))
    assert.truthy(p.sources[1].sql:find("'a;b'", 1, true))
  end)
end)

describe("o plano devolvido pelo arquivo", function()
  local CHANGES = {
    { "p.batch.in_flight = 500", 'chave "batch.in_flight": valor 500 inválido; esperado um inteiro entre 1 e 64' },
    { "p.batch.size = -1", 'chave "batch.size": valor -1 inválido' },
    { 'p.mode = "apagar_tudo"', 'chave "mode": valor "apagar_tudo" inválido' },
    { 'p.sources[2] = { entity_type = "x", sql = "select 1 as id", key = "id", document = function() end }',
      'chave "sources[2]": valor do tipo tabela inválido; esperado uma fonte criada com source' },
    { 's.key = "id; drop table t"', 'fonte "fortune": chave "key": valor "id; drop table t" inválido' },
    { 's.sql = "select 1; drop table t"', 'fonte "fortune": chave "sql": a consulta deve ser um único comando' },
    { "p.extra = true", 'chave "extra" desconhecida' },
  }
  for _, case in ipairs(CHANGES) do
    it("alterado depois de plan { } é recusado: " .. case[1], function()
      local path = plan_file(SOURCE .. 'local p = plan { name = "mudado", sources = { s } }\n'
        .. case[1] .. "\nreturn p\n")
      local p, err = plan.load(path)
      assert.is_nil(p, "o plano alterado foi aceito")
      assert.truthy(err:find("plano " .. path .. ": ", 1, true), err)
      assert.truthy(err:find(case[2], 1, true), err)
      assert.truthy(err:find("alterado depois de plan { ... } ou source { ... }", 1, true), err)
    end)
  end

  it("é uma cópia: o que document() muda depois não chega ao plano carregado", function()
    local path = plan_file([[
local p
local s = source "fortune" {
  sql = "select id, text from fortunes", key = "id",
  document = function(row)
    p.batch.in_flight, p.batch.size, p.mode = 500, -1, "apagar_tudo"
    p.sources[1].sql = "select 1; drop table t"
    return { content = row.text }
  end,
}
p = plan { name = "copia", sources = { s }, batch = { size = 8, in_flight = 2 } }
return p
]])
    local loaded = assert(plan.load(path))
    local ok, doc = sandbox.call(sandbox.hook_budget(), loaded.sources[1].document, { id = 1, text = "oi" })
    assert.is_true(ok, doc)
    assert.are.same({ size = 8, in_flight = 2 }, loaded.batch)
    assert.are.equal("only_missing", loaded.mode)
    assert.are.equal("select id, text from fortunes", loaded.sources[1].sql)
    assert.is_true(plan.is_plan(loaded) and plan.is_source(loaded.sources[1]))
  end)

  it("um plano importado também é a cópia validada", function()
    local dir = os.tmpname() .. "_dir"
    assert(os.execute("mkdir -p " .. dir) == 0)
    local base = io.open(dir .. "/base.lua", "w")
    base:write(SOURCE .. 'local p = plan { name = "base", sources = { s } }\np.batch.size = 0\nreturn p\n')
    base:close()
    local main = dir .. "/main.lua"
    local handle = io.open(main, "w")
    handle:write('local b = import "base.lua"\nreturn plan { name = "main", sources = b.sources }\n')
    handle:close()
    local p, err = plan.load(main)
    os.execute("rm -rf " .. dir)
    assert.is_nil(p)
    assert.truthy(err:find('chave "batch.size": valor 0 inválido', 1, true), err)
  end)
end)

describe("run() do plano de padrões do index create", function()
  before_each(function() sandbox.configure({ load_ms = 200, load_memory_mb = 16 }) end)
  after_each(function() sandbox.configure(nil) end)

  it("laço infinito: estouro de tempo em pt-BR, com arquivo e linha", function()
    local path = plan_file('return plan { name = "idx", run = function(ctx)\n  while true do end\nend }\n')
    local defaults, err = index.load_defaults(path)
    assert.is_nil(defaults)
    assert.are.equal(("plano %s:2: excedeu o tempo limite de 200 ms (sandbox.load_ms) "
      .. "(em run(), que devolve os parâmetros do índice)"):format(path), err)
  end)

  it("tabela que cresce sem fim: estouro de memória em pt-BR", function()
    local path = plan_file('return plan { name = "idx", run = function(ctx)\n  local t = {}\n'
      .. '  for i = 1, 1e12 do t[i] = ("x"):rep(65536) .. i end\nend }\n')
    local defaults, err = index.load_defaults(path)
    assert.is_nil(defaults)
    assert.truthy(err:find("plano " .. path .. ":3: excedeu o limite de memória de 16 MiB (sandbox.load_memory_mb)",
      1, true), err)
  end)

  it("erro comum: pt-BR, sem traceback", function()
    local path = plan_file('return plan { name = "idx", run = function(ctx)\n  return ctx.x.y\nend }\n')
    local _, err = index.load_defaults(path)
    assert.truthy(err:find("plano " .. path .. ":2: tentativa de indexar", 1, true), err)
    assert.is_nil(err:find("traceback", 1, true), err)
  end)
end)
