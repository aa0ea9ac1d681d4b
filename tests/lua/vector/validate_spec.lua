-- validate_spec.lua: the pure parts of `ragops validate`: metrics (entity
-- dedupe, recall@k, MRR, nDCG@k, hit rate, thresholds, latency percentiles
-- and the SLO), golden file validation with file/line/key errors, the
-- sandboxed loader, the pgvector SQL text, EXPLAIN reading, the sweep (index
-- recall, recommendation, refusals), flag parsing and the reports. The search itself is covered by
-- tests/integration/validate_spec.lua and tests/c/test_vecsearch.c.
require "tests.lua.c_stubs"

local cjson = require "cjson"
local validate = require "ragops.vector.validate"

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
    assert.are.equal(0.625, sum.recall)
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
    assert.are.equal(0, sum.recall)
    assert.are.equal(0, sum.ndcg)
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
  local cmd_validate = require "ragops.cli.commands.validate"
  local function opts(...)
    return cmd_validate.options(cli.parse({ ... }, {
      config = "string", k = "string", ["min-recall"] = "string", ["min-mrr"] = "string",
      ["min-ndcg"] = "string", ["min-hit-rate"] = "string", probes = "string", ["ef-search"] = "string",
      ["target-recall"] = "string", ["report-json"] = "string", quiet = "bool" }), cli)
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

  it("uma lista de valores em --probes ou --ef-search pede a varredura", function()
    local o = opts("--probes", "1,5,10,20,40")
    assert.are.same({ 1, 5, 10, 20, 40 }, o.sweep.values)
    assert.are.equal("ivfflat", o.sweep.method)
    assert.are.equal("ivfflat.probes", o.sweep.setting)
    assert.are.equal(10, o.probes)
    assert.are.equal(0.95, o.target_recall)
    o = opts("--ef-search", "200,20,40,20", "--target-recall", "0.9")
    assert.are.same({ 20, 40, 200 }, o.sweep.values)
    assert.are.equal("hnsw", o.sweep.method)
    assert.are.equal(0.9, o.target_recall)
    o = opts("--probes", "4", "--ef-search", "80")
    assert.is_nil(o.sweep)
    assert.are.equal(4, o.probes)
    assert.are.equal(80, o.ef_search)
  end)

  it("recusa listas inválidas, duas varreduras juntas e --target-recall sem varredura", function()
    assert.matches("%-%-probes espera um inteiro entre 1 e 100000 ou uma lista", usage("--probes", "1,x"))
    assert.matches("%-%-ef%-search espera um inteiro", usage("--ef-search", "20,,40"))
    assert.matches("varra um ajuste por vez", usage("--probes", "1,5", "--ef-search", "20,40"))
    assert.matches("%-%-target%-recall só vale numa varredura", usage("--target-recall", "0.9"))
    assert.matches("%-%-target%-recall espera um número entre 0 e 1", usage("--probes", "1,5", "--target-recall", "95"))
    assert.matches("%-%-min%-ndcg espera um número entre 0 e 1", usage("--min-ndcg", "2"))
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
  local function result(thresholds, latencies, slo)
    local summary = validate.summarise(scores, 10, thresholds)
    validate.apply_slo(summary, validate.percentiles(latencies or { 3, 5 }), slo or { p95_ms = 250, enforce = false })
    return { golden = golden, k = 10, plan = { storage = "real[]", column = "real[]", rows = 2 }, model = "m",
             scores = scores, summary = summary, thresholds = thresholds, latencies = latencies or { 3, 5 },
             latency_basis = "per_query", missing = { [2] = { [2] = true } }, missing_count = 1, elapsed_s = 1.5 }
  end

  it("texto em pt-BR com posição, melhor resultado, métricas e veredito", function()
    local text = validate.format(result({ min_recall = 0.9 }))
    assert.matches("Validação de qualidade: g%.lua %(demo%)", text)
    assert.matches("luz no princípio", text) -- quebra de linha vira espaço
    assert.matches("verse 3 %(0,910%)", text)
    assert.matches("%-,ausente", text)
    assert.matches("%(nenhum resultado%)", text)
    assert.matches("recall@10: 0,500   MRR: 0,500   nDCG@10: 0,500   taxa de acerto: 0,500", text)
    assert.matches("busca: busca exata em C %(real%[%], 2 vetores; sem pgvector%)", text)
    assert.matches("latência da busca: p50 3,0 ms   p95 5,0 ms   p99 5,0 ms   %(cada consulta sozinha", text)
    assert.matches("SLO: p95 ≤ 250 ms: atendido", text)
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
    assert.are.equal(0.5, doc.ndcg)
    assert.are.equal(1, doc.per_query[1].ndcg)
    assert.are.same({ p50 = 3, p95 = 5, p99 = 5, max = 5, queries = 2 }, doc.latency_ms)
    assert.are.equal(5, doc.per_query[2].latency_ms)
    assert.are.same({ p95_ms = 250, enforce = false, met = true }, doc.slo)
    assert.are.equal("real[]", doc.storage)
    assert.are.equal("busca exata em C (real[], 2 vetores; sem pgvector)", doc.plan.description)
    assert.are.equal(cjson.null, doc.plan.index)
    assert.is_nil(doc.sweep)
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

describe("validate.ndcg (relevância binária, ideal sobre min(#esperadas, k))", function()
  local function log2(x) return math.log(x) / math.log(2) end

  it("casos calculados à mão", function()
    assert.are.equal(1, validate.ndcg({ 1 }, 10))
    assert.are.equal(0.5, validate.ndcg({ 3 }, 10)) -- 1/log2(4)
    -- duas esperadas nas posições 1 e 3: (1 + 1/2) / (1 + 1/log2(3))
    assert.is_true(math.abs(validate.ndcg({ 1, 3 }, 10) - 1.5 / (1 + 1 / log2(3))) < 1e-12)
    assert.is_true(math.abs(validate.ndcg({ 1, 3 }, 10) - 0.919720) < 1e-6)
    -- três esperadas, k = 2: o ideal só tem 2 posições; uma achada na 2ª
    assert.is_true(math.abs(validate.ndcg({ false, 2, false }, 2) - 0.386853) < 1e-6)
    assert.are.equal(0, validate.ndcg({ false, false }, 10))
    assert.are.equal(0, validate.ndcg({ 5 }, 3)) -- além do k não conta
  end)

  it("score_query calcula o nDCG pelas posições entre entidades distintas", function()
    local hits = { hit("verse", "1"), hit("verse", "1", 1), hit("verse", "2"), hit("verse", "3") }
    local s = validate.score_query(query("4", "3"), hits, 4)
    assert.are.same({ false, 3 }, s.ranks)
    assert.is_true(math.abs(s.ndcg - 0.5 / (1 + 1 / log2(3))) < 1e-12)
    assert.are.equal(1, validate.score_query(query("1"), hits, 4).ndcg)
  end)

  it("summarise faz a média e reprova abaixo de min_ndcg", function()
    local sum = validate.summarise({ { ndcg = 1 }, { ndcg = 0.5 } }, 5, { min_ndcg = 0.8 })
    assert.are.equal(0.75, sum.ndcg)
    assert.are.same({ "nDCG@5 0,750 < 0,800" }, sum.violations)
  end)
end)

describe("validate.percentiles e o SLO", function()
  it("percentil pelo método do posto mais próximo", function()
    local samples = {}
    for i = 100, 1, -1 do samples[#samples + 1] = i end
    assert.are.same({ p50 = 50, p95 = 95, p99 = 99, max = 100, n = 100 }, validate.percentiles(samples))
    local twenty = {}
    for i = 1, 20 do twenty[i] = i end
    assert.are.equal(19, validate.percentiles(twenty).p95)
    assert.are.same({ p50 = 3, p95 = 5, p99 = 5, max = 5, n = 3 }, validate.percentiles({ 5, 1, 3 }))
    assert.are.equal(7, validate.percentiles({ 7 }).p99)
    assert.is_nil(validate.percentiles({}))
  end)

  it("p95 acima do SLO é relatado; só reprova com enforce = true", function()
    local lat = validate.percentiles({ 100, 300 })
    local sum = validate.apply_slo(validate.summarise({}, 10, {}), lat, { p95_ms = 250, enforce = false })
    assert.is_true(sum.passed)
    assert.is_false(sum.slo.met)
    assert.are.same({}, sum.violations)
    sum = validate.apply_slo(validate.summarise({}, 10, {}), lat, { p95_ms = 250, enforce = true })
    assert.is_false(sum.passed)
    assert.are.same({ "latência p95 300,0 ms > SLO 250 ms" }, sum.violations)
    sum = validate.apply_slo(validate.summarise({}, 10, {}), validate.percentiles({ 250 }), { p95_ms = 250, enforce = true })
    assert.is_true(sum.passed)
    assert.is_true(sum.slo.met)
  end)

  it("o golden pode trocar o SLO, validado como as outras chaves", function()
    local function golden(slo)
      return { slo = slo, queries = { { query = "luz", expect = { { entity_type = "verse", entity_id = 3 } } } } }
    end
    assert.are.same({ p95_ms = 250, enforce = false }, validate.check_golden(golden(nil), "g.lua").slo)
    assert.are.same({ p95_ms = 80, enforce = true }, validate.check_golden(golden({ p95_ms = 80, enforce = true }), "g.lua").slo)
    assert.matches('chave "slo%.p95": desconhecida; chaves válidas: p95_ms, enforce',
      error_of(validate.check_golden, golden({ p95 = 80 }), "g.lua"))
    assert.matches('chave "slo%.p95_ms": valor 0 inválido', error_of(validate.check_golden, golden({ p95_ms = 0 }), "g.lua"))
    assert.matches('chave "slo%.enforce": valor "sim" inválido; esperado true ou false',
      error_of(validate.check_golden, golden({ enforce = "sim" }), "g.lua"))
    assert.matches('chave "slo": valor 250 inválido', error_of(validate.check_golden, golden(250), "g.lua"))
  end)

  it("relatório: SLO não atendido sem enforce diz que não reprova; com k ≠ 10 lembra o top_k do SLO", function()
    local golden = { file = "g.lua", queries = { { query = "a", expect = { { entity_type = "verse", entity_id = "1" } } } } }
    local scores = { validate.score_query(golden.queries[1], { hit("verse", "1") }, 5) }
    local summary = validate.apply_slo(validate.summarise(scores, 5, {}), validate.percentiles({ 400 }),
      { p95_ms = 250, enforce = false })
    local text = validate.format({ golden = golden, k = 5, plan = { storage = "vector", column = "vector(8)" },
      model = "m", scores = scores, summary = summary, thresholds = {} })
    assert.matches("SLO: p95 ≤ 250 ms %(definido para top_k = 10%): NÃO atendido %(p95 400,0 ms%); não reprova", text)
    assert.matches("resultado: aprovado", text)
  end)
end)

describe("plano da busca: cabeçalho e EXPLAIN", function()
  local base = { storage = "vector", column = "vector(1536)" }
  local function with(fields)
    local plan = {}
    for k, v in pairs(base) do plan[k] = v end
    for k, v in pairs(fields) do plan[k] = v end
    return plan
  end

  it("mostra o ajuste que vale para o índice, ou busca exata", function()
    local hnsw = validate.plan_label(with({ index = { name = "ix_h", method = "hnsw" },
      setting = { name = "hnsw.ef_search", value = "40" } }))
    assert.are.equal("pgvector (vector(1536)), índice ix_h (hnsw, hnsw.ef_search = 40)", hnsw)
    local ivf = validate.plan_label(with({ index = { name = "ix_i", method = "ivfflat" },
      setting = { name = "ivfflat.probes", value = "10" } }))
    assert.are.equal("pgvector (vector(1536)), índice ix_i (ivfflat, ivfflat.probes = 10)", ivf)
    assert.are.equal("pgvector (vector(1536)), busca exata (sem índice)", validate.plan_label(with({})))
    assert.are.equal("busca exata em C (real[], 33.608 vetores; sem pgvector)",
      validate.plan_label({ storage = "real[]", column = "real[]", rows = 33608 }))
  end)

  it("diz se o índice foi usado pelo EXPLAIN", function()
    local ix = { name = "ix_h", method = "hnsw" }
    assert.matches("^plano: índice usado %(EXPLAIN, 5 de 5", validate.plan_usage(with({ index = ix, used = 5, total = 5 })))
    local unused = validate.plan_usage(with({ index = ix, used = 0, total = 5 }))
    assert.matches("^plano: índice não usado", unused)
    assert.matches("busca exata, não do hnsw", unused)
    assert.matches("usado em 2 de 5 consultas", validate.plan_usage(with({ index = ix, used = 2, total = 5 })))
    assert.is_nil(validate.plan_usage(with({ used = 0, total = 5 })))
  end)

  it("lê o índice do plano em JSON do EXPLAIN", function()
    local index_scan = [[ [{"Plan": {"Node Type": "Limit", "Plans": [{"Node Type": "Index Scan",
      "Index Name": "rag_documents_embedding_hnsw", "Relation Name": "rag_documents"}]}}] ]]
    assert.are.equal("rag_documents_embedding_hnsw", validate.plan_index(index_scan))
    local seq = [[ [{"Plan": {"Node Type": "Limit", "Plans": [{"Node Type": "Sort",
      "Plans": [{"Node Type": "Seq Scan", "Relation Name": "rag_documents"}]}]}}] ]]
    assert.is_false(validate.plan_index(seq))
    assert.is_nil(validate.plan_index("não é json"))
    assert.matches("^explain %(format json%) select ", validate.explain_sql('"t"', "vector"))
  end)
end)

describe("varredura de probes/ef_search", function()
  local function h(id, score) return { entity_type = "verse", entity_id = id, chunk_index = 0, score = score } end

  it("recall do índice contra a busca exata, por chunk, com empate no corte", function()
    local exact = { { h("a", 0.9), h("b", 0.8), h("c", 0.7) } }
    assert.are.equal(2 / 3, validate.index_recall({ { h("a", 0.9), h("c", 0.7), h("z", 0.5) } }, exact))
    -- "d" está à mesma distância que o 3º exato: conta como acerto
    assert.are.equal(1, validate.index_recall({ { h("a", 0.9), h("b", 0.8), h("d", 0.7) } }, exact))
    -- consultas sem resultado exato não entram na média
    assert.are.equal(0.5, validate.index_recall({ { h("a", 0.9) }, {} }, { { h("a", 0.9), h("b", 0.8) }, {} }))
    assert.is_nil(validate.index_recall({ {} }, { {} }))
  end)

  local function row(value, index_recall, used)
    return { value = value, index_recall = index_recall, used = used or 28, total = 28 }
  end

  it("recomenda o menor valor que atinge o recall alvo", function()
    local rows = { row(1, 0.6), row(5, 0.9), row(10, 0.95), row(20, 0.99) }
    assert.are.equal(10, validate.recommend(rows, 0.95))
    assert.are.equal(20, validate.recommend(rows, 0.99))
    assert.are.equal(1, validate.recommend(rows, 0.5))
    assert.is_nil(validate.recommend(rows, 1))
  end)

  it("não recomenda um valor em que o planejador não usou o índice (o recall 1 ali é de busca exata)", function()
    -- visto no demo: HNSW com ef_search = 100 em varredura sequencial nas 28 consultas
    local rows = { row(20, 0.864), row(40, 0.939), row(100, 1, 0), row(200, 0.982) }
    assert.are.equal(200, validate.recommend(rows, 0.95))
    assert.is_nil(validate.recommend({ row(20, 0.9), row(40, 1, 27) }, 0.95))
  end)

  it("recusa real[], índice do outro tipo e tabela sem índice", function()
    local probes = { flag = "--probes", method = "ivfflat" }
    local ef = { flag = "--ef-search", method = "hnsw" }
    local real = validate.sweep_problem("real[]", {}, probes, "rag_documents")
    assert.matches("a coluna embedding de rag_documents é real%[%]: sem a extensão vector não há índice", real)
    local ivf = { { name = "ix_i", method = "ivfflat" } }
    assert.matches("%-%-ef%-search é ajuste de índice hnsw, mas o índice de rag_documents é ivfflat %(ix_i%): use %-%-probes",
      validate.sweep_problem("vector", ivf, ef, "rag_documents"))
    assert.matches("não tem índice vetorial", validate.sweep_problem("vector", {}, ef, "rag_documents"))
    assert.is_nil(validate.sweep_problem("vector", ivf, probes, "rag_documents"))
    assert.is_nil(validate.sweep_problem("halfvec", { { name = "ix_h", method = "hnsw" } }, ef, "t"))
  end)

  it("tabela com uma linha por valor, a busca exata de referência, a recomendação e o aviso das construções", function()
    local lat = { p50 = 1.5, p95 = 2.4, p99 = 3 }
    local sweep = { setting = "hnsw.ef_search", target_recall = 0.95, recommended = 40, k = 10,
      rows = { { value = 20, index_recall = 0.9, recall = 0.8, ndcg = 0.7, latency_ms = lat, used = 5, total = 5 },
               { value = 40, index_recall = 0.97, recall = 0.85, ndcg = 0.75, latency_ms = lat, used = 5, total = 5 } },
      exact = { recall = 0.86, ndcg = 0.76, latency_ms = lat } }
    local text = validate.format_sweep(sweep)
    assert.matches("\n  20%s+0,900%s+0,800%s+0,700%s+1,5 ms%s+2,4 ms%s+5 de 5", text)
    assert.matches("\n  40%s+0,970", text)
    assert.matches("\n  busca exata%s+1,000%s+0,860", text)
    assert.matches("recomendação: hnsw%.ef_search = 40, o menor valor com recall do índice ≥ 0,95", text)
    assert.matches("0,696 e 0,786", text)
    assert.is_nil(text:find("o planejador não usou", 1, true))
    sweep.recommended = nil
    sweep.rows[2].used = 0
    text = validate.format_sweep(sweep)
    assert.matches("nenhum valor testado chega a recall do índice ≥ 0,95 com o índice em uso", text)
    assert.matches("atenção: com hnsw%.ef_search = 40 o planejador não usou o índice em 5 de 5 consultas", text)
  end)
end)
