-- Integration: `ragops validate` end to end on a real PostgreSQL and the real
-- embed-server, through the ragops binary, once per storage: real[] (the
-- exact C scan) and, with pgvector, vector (the <=> search, also through an
-- IVFFlat and an HNSW index). Exit codes: 0 aprovado, 1 abaixo do limite,
-- 2 golden inválido, 4 dependência inalcançável.
local H = require "tests.integration.helper"

local function golden_file(k, queries, extra)
  local parts = { "return {", ("  k = %d,"):format(k) }
  for key, value in pairs(extra or {}) do parts[#parts + 1] = ("  %s = %s,"):format(key, tostring(value)) end
  parts[#parts + 1] = "  queries = {"
  for _, q in ipairs(queries) do
    parts[#parts + 1] = ("    { query = %q, expect = { { entity_type = %q, entity_id = %q } } },")
      :format(q[1], q[2], q[3])
  end
  parts[#parts + 1] = "  },"
  parts[#parts + 1] = "}"
  return H.plan_file(table.concat(parts, "\n") .. "\n")
end

H.each_storage(function(storage)
  describe("ragops validate", function()
    local url

    -- Queries whose text is exactly that of a stored document.
    local function exact_queries()
      local queries = {}
      for _, id in ipairs({ 5, 17, 150, 199 }) do
        queries[#queries + 1] = { H.scalar(url, "select text from verses where id = " .. id), "verse", tostring(id) }
      end
      queries[#queries + 1] = { H.scalar(url, "select text from fortunes where id = 3"), "fortune", "3" }
      return queries
    end

    setup(function()
      url = H.fresh_db("ragops_it_validate")
      H.load_sources(url, 200, 20)
      local code, _, err = H.ragops(url, "migrate")
      assert.are.equal(0, code, err)
      code, _, err = H.ragops(url, "run plans/backfill.lua --quiet")
      assert.are.equal(0, code, err)
    end)

    it("consultas com o texto exato de documentos: recall@k = 1 e MRR = 1", function()
      local queries = exact_queries()
      local path = golden_file(5, queries, { min_recall = 1, min_mrr = 1 })
      local code, out, err, report = H.ragops(url, "validate " .. H.q(path), { report = true })
      os.remove(path)
      assert.are.equal(0, code, err .. out)
      assert.are.equal(1, report.recall_at_k)
      assert.are.equal(1, report.mrr)
      assert.are.equal(1, report.hit_rate)
      assert.is_true(report.passed)
      assert.are.equal(5, report.k)
      assert.are.equal(5, report.queries)
      assert.are.equal(storage, report.storage)
      if storage == "real[]" then
        assert.are.equal(H.scalar(url, "select count(*) from rag_documents"), report.rows_scanned)
      end
      for i, q in ipairs(report.per_query) do
        assert.are.equal(1, q.ranks[1], "consulta " .. i)
        assert.are.equal(queries[i][3], q.top[1].entity_id)
        assert.is_true(q.top[1].score > 0.999, "o próprio documento tem cosseno 1")
        assert.is_true(#q.top <= 5)
      end
      assert.matches("recall@5: 1,000   MRR: 1,000", out)
      assert.matches("resultado: aprovado", out)
    end)

    it("chunks da mesma entidade contam uma vez (posição entre entidades distintas)", function()
      -- Fortunes 10 and 20 are long (several chunks of the same sentence).
      local path = golden_file(6, { { "Texto longo número 20 com pão, ação e coração.", "fortune", "20" } })
      local code, out, err, report = H.ragops(url, "validate " .. H.q(path), { report = true })
      os.remove(path)
      assert.are.equal(0, code, err .. out)
      local q = report.per_query[1]
      assert.are.equal(1, q.found)
      local seen = {}
      for _, t in ipairs(q.top) do
        local key = t.entity_type .. ":" .. t.entity_id
        assert.is_nil(seen[key], "entidade repetida no top: " .. key)
        seen[key] = true
      end
      assert.is_true(#q.top < 6, "seis chunks, menos entidades distintas")
      assert.is_true(H.scalar(url, "select count(*) from rag_documents where entity_type = 'fortune' and entity_id = '20'") > 1)
    end)

    it("consultas sem sentido ficam abaixo do limite: código 1", function()
      local path = golden_file(1, {
        { "zzqx wvvk plmq", "verse", "1" },
        { "xyzzy qwfp jjrr", "verse", "2" },
      })
      local code, out, err, report = H.ragops(url, "validate " .. H.q(path) .. " --min-recall 0.5", { report = true })
      os.remove(path)
      assert.are.equal(1, code, err .. out)
      assert.is_false(report.passed)
      assert.are.equal(0, report.recall_at_k)
      assert.are.equal(0.5, report.thresholds.min_recall)
      assert.matches("qualidade abaixo do limite: recall@1 0,000 < 0,500", err)
      assert.matches("REPROVADO", out)
    end)

    it("o portão versionado (sem argumento) aponta entidades ausentes e reprova aqui", function()
      local code, out, err = H.ragops(url, "validate")
      assert.are.equal(1, code, err .. out)
      assert.matches("validate_quality%.lua", out)
      assert.matches("ausente", out)
      assert.matches("não existem na tabela", out)
    end)

    it("golden quebrado: código 2 com arquivo, linha e chave", function()
      local path = H.plan_file("return {\n  k = 10,\n  queries = {\n    { query = 'a' expect = {} },\n  },\n}\n")
      local code, out, err = H.ragops(url, "validate " .. H.q(path))
      assert.are.equal(2, code, out)
      assert.matches("golden " .. path:gsub("%p", "%%%0") .. ":4: ", err)
      os.remove(path)

      path = H.plan_file("return {\n  k = 10,\n  queries = {\n    { query = 'a', expect = { { entity_type = 'verse' } } },\n  },\n}\n")
      code, out, err = H.ragops(url, "validate " .. H.q(path))
      assert.are.equal(2, code, out)
      assert.matches(":4: chave \"queries%[1%]%.expect%[1%]%.entity_id\": valor ausente", err)
      os.remove(path)

      code, _, err = H.ragops(url, "validate /nao/existe.lua")
      assert.are.equal(2, code)
      assert.matches("não foi possível abrir o arquivo", err)
      code, _, err = H.ragops(url, "validate plans/golden_demo.lua --k 0")
      assert.are.equal(2, code)
      assert.matches("%-%-k espera um inteiro entre 1 e 1000", err)
    end)

    it("banco sem a tabela: código 2 pedindo o migrate", function()
      local empty = H.fresh_db("ragops_it_validate_empty")
      local code, _, err = H.ragops(empty, "validate plans/golden_demo.lua")
      assert.are.equal(2, code)
      assert.matches("execute `ragops migrate`", err)
    end)

    it("banco ou provedor inalcançável: código 4, sem vazar a senha", function()
      local code, _, err = H.ragops("postgresql://ragops:segredo123@127.0.0.1:1/nada", "validate plans/golden_demo.lua")
      assert.are.equal(4, code)
      assert.matches("não foi possível conectar ao PostgreSQL", err)
      assert.is_nil(err:find("segredo123", 1, true))

      code, _, err = H.ragops(url, "validate plans/golden_demo.lua",
        { env = { RAGOPS_EMBED_URL = "http://127.0.0.1:1/v1", OPENAI_API_KEY = "sk-chave-secreta" } })
      assert.are.equal(4, code)
      assert.matches("não foi possível gerar os embeddings das consultas", err)
      assert.is_nil(err:find("sk-chave-secreta", 1, true))
    end)

    if storage == "vector" then
      describe("ragops validate com índice vetorial", function()
        for _, index in ipairs({ { "ivfflat", "--lists 4 --concurrently" }, { "hnsw", "--m 8 --ef-construction 32" } }) do
          it(("com %s: recall@k = 1 nas consultas exatas e o índice continua válido"):format(index[1]), function()
            local code, _, err = H.ragops(url, ("index create --method %s %s --dim 1536"):format(index[1], index[2]))
            assert.are.equal(0, code, err)
            local path = golden_file(5, exact_queries(), { min_recall = 1, min_mrr = 1 })
            local out, report
            code, out, err, report = H.ragops(url, "validate " .. H.q(path) .. " --probes 4 --ef-search 80", { report = true })
            os.remove(path)
            assert.are.equal(0, code, err .. out)
            assert.are.equal(1, report.recall_at_k)
            assert.are.equal("vector", report.storage)
            assert.matches("pgvector %(vector%(1536%), ivfflat%.probes = 4%)", out)
            assert.are.equal("t", H.scalar(url, ([[select indisvalid from pg_index
              where indexrelid = 'rag_documents_embedding_%s'::regclass]]):format(index[1])))
            code, _, err = H.ragops(url, "index drop --method " .. index[1])
            assert.are.equal(0, code, err)
          end)
        end
      end)
    end
  end)
end)
