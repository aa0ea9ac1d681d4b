-- validate_spec.lua: the pure parts of `ragops validate`: metrics (entity
-- dedupe, recall@k, MRR, hit rate, thresholds), golden file validation with
-- file/line/key errors, the sandboxed loader, the pgvector SQL text, flag
-- parsing and the reports. The search itself is covered by
-- tests/integration/validate_spec.lua and tests/c/test_vecsearch.c.
require "tests.lua.c_stubs"

local cjson = require "cjson"
local validate = require "ragops.validate"

local function hit(entity_type, entity_id, chunk_index, score)
  return { entity_type = entity_type, entity_id = entity_id, chunk_index = chunk_index or 0, score = score or 0.5 }
end

local function query(...)
  local expect = {}
  for i, id in ipairs({ ... }) do expect[i] = { entity_type = "verse", entity_id = id } end
  return { query = "q", expect = expect }
end

local function write_file(text, name)
  local dir = os.tmpname()
  os.remove(dir)
  os.execute("mkdir -p " .. dir)
  local path = dir .. "/" .. (name or "golden.lua")
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path, dir
end

local function error_of(fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok)
  return tostring(err)
end

describe("validate.score_query", function()
  it("conta a entidade uma vez, na melhor posição, mesmo com vários chunks", function()
    local hits = {
      hit("verse", "7", 0, 0.9), hit("verse", "7", 1, 0.8), hit("verse", "9", 0, 0.7), hit("fortune", "9", 0, 0.6),
    }
    local s = validate.score_query({ query = "x", expect = { { entity_type = "fortune", entity_id = "9" } } }, hits)
    assert.are.same({ 3 }, s.ranks) -- verse 7, verse 9, fortune 9: tipo e id juntos
    assert.are.equal(1, s.recall)
    assert.are.equal(1 / 3, s.reciprocal_rank)
    assert.is_true(s.hit)
    assert.are.equal(3, #s.entities)
    assert.are.equal("7", s.best.entity_id)
  end)

  it("recall parcial e MRR pela primeira entidade esperada encontrada", function()
    local hits = { hit("verse", "1"), hit("verse", "2"), hit("verse", "3"), hit("verse", "4") }
    local s = validate.score_query(query("4", "2", "99"), hits)
    assert.are.same({ 4, 2, false }, s.ranks)
    assert.are.equal(2, s.found)
    assert.are.equal(2 / 3, s.recall)
    assert.are.equal(1 / 2, s.reciprocal_rank)
    assert.are.equal(2, s.first_rank)
  end)

  it("nada encontrado: recall 0, MRR 0, sem acerto; lista vazia também", function()
    local s = validate.score_query(query("5"), { hit("verse", "1") })
    assert.are.equal(0, s.recall)
    assert.are.equal(0, s.reciprocal_rank)
    assert.is_false(s.hit)
    s = validate.score_query(query("5"), {})
    assert.are.equal(0, s.recall)
    assert.is_nil(s.best)
  end)
end)

describe("validate.summarise", function()
  local scores = {
    { recall = 1, reciprocal_rank = 1, hit = true },
    { recall = 0.5, reciprocal_rank = 0.25, hit = true },
    { recall = 0, reciprocal_rank = 0, hit = false },
    { recall = 1, reciprocal_rank = 0.5, hit = true },
  }

  it("faz a média por consulta", function()
    local sum = validate.summarise(scores, 10, {})
    assert.are.equal(0.625, sum.recall_at_k)
    assert.are.equal(0.4375, sum.mrr)
    assert.are.equal(0.75, sum.hit_rate)
    assert.is_true(sum.passed)
    assert.are.same({}, sum.violations)
  end)

  it("reprova abaixo de cada limite e diz qual, em pt-BR", function()
    local sum = validate.summarise(scores, 5, { min_recall = 0.7, min_mrr = 0.4 })
    assert.is_false(sum.passed)
    assert.are.same({ "recall@5 0,625 < 0,700" }, sum.violations)
    sum = validate.summarise(scores, 5, { min_recall = 0.6, min_mrr = 0.5, min_hit_rate = 0.8 })
    assert.are.same({ "MRR 0,438 < 0,500", "taxa de acerto 0,750 < 0,800" }, sum.violations)
  end)

  it("limite exatamente igual ao medido passa (sem erro de arredondamento)", function()
    local thirds = { { recall = 1 / 3, reciprocal_rank = 1 / 3, hit = true },
                     { recall = 1 / 3, reciprocal_rank = 1 / 3, hit = true },
                     { recall = 1 / 3, reciprocal_rank = 1 / 3, hit = true } }
    assert.is_true(validate.summarise(thirds, 10, { min_recall = 1 / 3, min_mrr = 1 / 3 }).passed)
    assert.is_false(validate.summarise(thirds, 10, { min_recall = 0.34 }).passed)
  end)

  it("sem consultas: tudo 0", function()
    local sum = validate.summarise({}, 10, { min_recall = 0.1 })
    assert.are.equal(0, sum.recall_at_k)
    assert.is_false(sum.passed)
  end)
end)

describe("validate.check_golden", function()
  local function good()
    return { k = 5, min_recall = 0.8, min_mrr = 0.5,
             queries = { { query = "luz", expect = { { entity_type = "verse", entity_id = 3 } } } } }
  end

  it("normaliza: ids inteiros viram texto, limites e k preservados", function()
    local g = validate.check_golden(good(), "g.lua")
    assert.are.equal(5, g.k)
    assert.are.equal(0.8, g.min_recall)
    assert.are.equal("3", g.queries[1].expect[1].entity_id)
    assert.are.equal("luz", g.queries[1].query)
  end)

  it("recusa o que não é tabela, lista vazia e chaves desconhecidas", function()
    assert.matches("golden g.lua: o arquivo deve retornar uma tabela", error_of(validate.check_golden, 42, "g.lua"))
    local g = good(); g.queries = {}
    assert.matches('chave "queries": valor do tipo tabela inválido', error_of(validate.check_golden, g, "g.lua"))
    g = good(); g.min_recal = 0.9
    assert.matches('chave "min_recal": desconhecida; chaves válidas: name', error_of(validate.check_golden, g, "g.lua"))
    g = good(); g.queries[1].expected = {}
    assert.matches('chave "queries%[1%]%.expected": desconhecida', error_of(validate.check_golden, g, "g.lua"))
  end)

  it("valida k, limites e cada expectativa", function()
    local g = good(); g.k = 0
    assert.matches('chave "k": valor 0 inválido; esperado um inteiro entre 1 e 1000', error_of(validate.check_golden, g, "g.lua"))
    g = good(); g.min_mrr = 1.5
    assert.matches('chave "min_mrr": valor 1.5 inválido; esperado um número entre 0 e 1', error_of(validate.check_golden, g, "g.lua"))
    g = good(); g.queries[1].query = "   "
    assert.matches('chave "queries%[1%]%.query"', error_of(validate.check_golden, g, "g.lua"))
    g = good(); g.queries[1].expect = {}
    assert.matches('chave "queries%[1%]%.expect": valor do tipo tabela inválido', error_of(validate.check_golden, g, "g.lua"))
    g = good(); g.queries[1].expect[1].entity_id = nil
    assert.matches('chave "queries%[1%]%.expect%[1%]%.entity_id": valor ausente inválido', error_of(validate.check_golden, g, "g.lua"))
    g = good(); g.queries[1].expect[2] = { entity_type = "verse", entity_id = "3" }
    assert.matches("entidade verse 3 repetida", error_of(validate.check_golden, g, "g.lua"))
    g = good(); g.queries[3] = g.queries[1]
    assert.matches("lista sem buracos", error_of(validate.check_golden, g, "g.lua"))
  end)

  it("aponta a linha da consulta com problema quando o texto é conhecido", function()
    local text = table.concat({
      "return {",                                                           -- 1
      "  k = 10,",                                                          -- 2
      "  queries = {",                                                      -- 3
      "    { query = 'a', expect = { { entity_type = 'verse', entity_id = '1' } } },", -- 4
      "    { query = 'b',",                                                 -- 5
      "      expect = { { entity_type = 'verse' } } },",                    -- 6
      "  },",
      "}",
    }, "\n")
    local value = { k = 10, queries = {
      { query = "a", expect = { { entity_type = "verse", entity_id = "1" } } },
      { query = "b", expect = { { entity_type = "verse" } } } } }
    local err = error_of(validate.check_golden, value, "g.lua", text)
    assert.matches('^golden g%.lua:5: chave "queries%[2%]%.expect%[1%]%.entity_id"', err)
    value.k = 0
    assert.matches('^golden g%.lua:2: chave "k"', error_of(validate.check_golden, value, "g.lua", text))
  end)
end)

describe("validate.load_golden", function()
  it("carrega um arquivo válido", function()
    local path = write_file([[return { queries = { { query = "x", expect = { { entity_type = "t", entity_id = "1" } } } } }]])
    local g, err = validate.load_golden(path)
    assert.is_nil(err)
    assert.are.equal(path, g.file)
    assert.are.equal(1, #g.queries)
  end)

  it("erro de sintaxe nomeia arquivo e linha, em pt-BR", function()
    local path = write_file("return {\n  queries = {\n    { query = 'x' expect = {} },\n  }\n}\n")
    local g, err = validate.load_golden(path)
    assert.is_nil(g)
    assert.matches("^golden " .. path:gsub("%p", "%%%0") .. ":3: ", err)
    assert.matches("esperado perto de", err)
  end)

  it("ambiente restrito: sem io, os ou require", function()
    for _, code in ipairs({ "io.open('/etc/passwd')", "os.execute('true')", "require 'cjson'" }) do
      local path = write_file("local x = " .. code .. "\nreturn {}")
      local g, err = validate.load_golden(path)
      assert.is_nil(g)
      assert.matches(':1: "?[%a.]+"? não é permitido em arquivos golden', err)
    end
  end)

  it("recusa bytecode", function()
    local path = write_file(string.dump(function() return {} end))
    local g, err = validate.load_golden(path)
    assert.is_nil(g)
    assert.matches("bytecode", err)
  end)

  it("arquivo inexistente", function()
    local g, err = validate.load_golden("/nao/existe/golden.lua")
    assert.is_nil(g)
    assert.matches("^golden /nao/existe/golden.lua: não foi possível abrir o arquivo", err)
  end)

  it("import carrega outro golden da mesma pasta e permite ajustar limites", function()
    local _, dir = write_file([[return { min_recall = 0.5, queries = {
      { query = "x", expect = { { entity_type = "t", entity_id = "1" } } } } }]], "base.lua")
    local f = assert(io.open(dir .. "/gate.lua", "w"))
    f:write('local g = import "base.lua"\ng.min_recall = 0.9\nreturn g\n')
    f:close()
    local g, err = validate.load_golden(dir .. "/gate.lua")
    assert.is_nil(err)
    assert.are.equal(0.9, g.min_recall)
    assert.are.equal("x", g.queries[1].query)
    f = assert(io.open(dir .. "/bad.lua", "w"))
    f:write('return import "../fora.lua"\n')
    f:close()
    local bad, berr = validate.load_golden(dir .. "/bad.lua")
    assert.is_nil(bad)
    assert.matches("import: esperado o nome de um arquivo golden da mesma pasta", berr)
  end)

  it("os arquivos versionados do demo são válidos", function()
    local demo = assert(validate.load_golden("plans/golden_demo.lua"))
    assert.is_true(#demo.queries >= 15 and #demo.queries <= 30)
    local gate = assert(validate.load_golden("plans/validate_quality.lua"))
    assert.are.equal(#demo.queries, #gate.queries)
    assert.is_number(gate.min_recall)
    assert.is_number(gate.min_mrr)
  end)
end)

describe("SQL do pgvector", function()
  it("ordena pela distância de cosseno com o vetor como parâmetro", function()
    local sql = validate.pgvector_sql('"rag_documents"')
    assert.are.equal('select entity_type, entity_id, chunk_index, 1 - (embedding <=> $1::vector) as score'
      .. ' from "rag_documents" where embedding is not null order by embedding <=> $1::vector limit $2', sql)
  end)

  it("ivfflat.probes (e hnsw.ef_search opcional) por set_config parametrizado", function()
    assert.are.same({ { "select set_config('ivfflat.probes', $1, false)", "10" } }, validate.pgvector_settings(10))
    local s = validate.pgvector_settings(20, 80)
    assert.are.same({ "select set_config('hnsw.ef_search', $1, false)", "80" }, s[2])
  end)

  it("varredura real[] em páginas por id (keyset)", function()
    assert.matches('from "t" where id > %$1 and embedding is not null order by id limit %$2$', validate.scan_sql('"t"'))
  end)
end)

describe("cmd.validate.options", function()
  local cli = require "ragops.cli"
  local cmd_validate = require "ragops.cmd.validate"
  local function opts(...)
    return cmd_validate.options(cli.parse({ ... }, {
      config = "string", k = "string", ["min-recall"] = "string", ["min-mrr"] = "string",
      ["min-hit-rate"] = "string", probes = "string", ["ef-search"] = "string",
      ["report-json"] = "string", quiet = "bool" }), cli)
  end
  local function usage(...)
    local ok, err = pcall(opts, ...)
    assert.is_false(ok)
    return err.message
  end

  it("lê os valores e aplica o padrão de probes", function()
    local o = opts("g.lua", "--k", "5", "--min-recall", "0.75", "--min-mrr=0.5")
    assert.are.equal("g.lua", o.golden)
    assert.are.equal(5, o.k)
    assert.are.equal(0.75, o.min_recall)
    assert.are.equal(0.5, o.min_mrr)
    assert.are.equal(10, o.probes)
    assert.is_nil(opts().golden)
  end)

  it("recusa valores fora do intervalo com mensagem de uso", function()
    assert.matches("%-%-k espera um inteiro entre 1 e 1000", usage("--k", "0"))
    assert.matches("%-%-k espera um inteiro", usage("--k", "2.5"))
    assert.matches("%-%-min%-recall espera um número entre 0 e 1", usage("--min-recall", "80"))
    assert.matches("%-%-probes espera um inteiro", usage("--probes", "muitos"))
    assert.matches("^uso: ragops validate", usage("a.lua", "b.lua"))
  end)
end)

describe("relatórios", function()
  local golden = { file = "g.lua", name = "demo", queries = {
    { query = "luz\nno princípio", expect = { { entity_type = "verse", entity_id = "3" } } },
    { query = "nada", expect = { { entity_type = "verse", entity_id = "9" }, { entity_type = "verse", entity_id = "8" } } },
  } }
  local scores = {
    validate.score_query(golden.queries[1], { hit("verse", "3", 0, 0.91) }),
    validate.score_query(golden.queries[2], {}),
  }
  local function result(thresholds)
    return { golden = golden, k = 10, storage = "real[]", rows = 2, model = "m", scores = scores,
             summary = validate.summarise(scores, 10, thresholds), thresholds = thresholds,
             missing = { [2] = { [2] = true } }, missing_count = 1, elapsed_s = 1.5 }
  end

  it("texto em pt-BR com posição, melhor resultado, métricas e veredito", function()
    local text = validate.format(result({ min_recall = 0.9 }))
    assert.matches("Validação de qualidade: g%.lua %(demo%)", text)
    assert.matches("luz no princípio", text) -- quebra de linha vira espaço
    assert.matches("verse 3 %(0,910%)", text)
    assert.matches("%-,ausente", text)
    assert.matches("%(nenhum resultado%)", text)
    assert.matches("recall@10: 0,500   MRR: 0,500   taxa de acerto: 0,500", text)
    assert.matches("resultado: REPROVADO %(recall@10 0,500 < 0,900%)", text)
    assert.matches("1 entidade%(s%) esperada%(s%) não existem", text)
    assert.matches("resultado: aprovado", validate.format(result({})))
  end)

  it("JSON com as chaves pedidas; listas vazias continuam listas", function()
    local doc = cjson.decode(validate.json(result({})))
    assert.are.equal(10, doc.k)
    assert.are.equal(2, doc.queries)
    assert.are.equal(0.5, doc.recall_at_k)
    assert.are.equal(0.5, doc.mrr)
    assert.are.equal(0.5, doc.hit_rate)
    assert.is_true(doc.passed)
    assert.are.equal(2, #doc.per_query)
    assert.are.equal(1, doc.per_query[1].ranks[1])
    assert.are.equal(cjson.null, doc.per_query[2].ranks[1])
    assert.is_true(doc.per_query[2].expect[2].missing)
    local raw = validate.json(result({}))
    assert.matches('"violations":%[%]', raw)
    assert.matches('"top":%[%]', raw)
  end)

  it("clip corta por caractere, sem quebrar UTF-8", function()
    local text, len = validate.clip("ação ação ação", 6)
    assert.are.equal("ação …", text)
    assert.are.equal(6, len)
  end)
end)
