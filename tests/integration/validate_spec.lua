-- Integration: `ragops validate` end to end on a real PostgreSQL and the real
-- embed-server, through the ragops binary, once per storage: real[] (the
-- exact C scan) and, with pgvector, vector (the <=> search, also through an
-- IVFFlat and an HNSW index). Exit codes: 0 aprovado, 1 abaixo do limite,
-- 2 golden inválido, 4 dependência inalcançável.
local cjson = require "cjson"
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

    it("relata nDCG, latência p50/p95/p99 e o SLO; slo.enforce = true reprova acima do p95", function()
      -- p95_ms = 0.001: nenhuma ida e volta ao PostgreSQL leva menos de 1 µs.
      local queries = exact_queries()
      local path = golden_file(5, queries, { slo = "{ p95_ms = 0.001 }" })
      local code, out, err, report = H.ragops(url, "validate " .. H.q(path), { report = true })
      os.remove(path)
      assert.are.equal(0, code, err .. out)
      assert.are.equal(1, report.ndcg)
      assert.is_true(report.latency_ms.p50 > 0 and report.latency_ms.p50 <= report.latency_ms.p95)
      assert.is_true(report.latency_ms.p95 <= report.latency_ms.p99)
      assert.are.equal(#queries, report.latency_ms.queries)
      assert.are.same({ p95_ms = 0.001, enforce = false, met = false }, report.slo)
      assert.are.equal(storage == "real[]" and "shared_scan" or "per_query", report.latency_basis)
      for _, q in ipairs(report.per_query) do assert.is_true(q.latency_ms > 0) end
      assert.matches("nDCG@5: 1,000", out)
      assert.matches("latência da busca: p50 [%d,]+ ms   p95 [%d,]+ ms   p99 [%d,]+ ms", out)
      assert.matches("SLO: p95 ≤ 0,001 ms %(definido para top_k = 10%): NÃO atendido %(p95 [%d,]+ ms%); não reprova", out)

      path = golden_file(5, queries, { slo = "{ p95_ms = 0.001, enforce = true }" })
      code, out, err, report = H.ragops(url, "validate " .. H.q(path), { report = true })
      os.remove(path)
      assert.are.equal(1, code, err .. out)
      assert.is_false(report.passed)
      assert.matches("^latência p95 [%d,]+ ms > SLO 0,001 ms$", report.violations[1])
      assert.matches("resultado: REPROVADO %(latência p95", out)
    end)

    if storage == "real[]" then
      it("varredura em real[]: recusada (sem pgvector não há índice), código 2, sem embeddings", function()
        local before = H.embed_requests()
        local code, out, err = H.ragops(url, "validate plans/golden_demo.lua --probes 1,5,10")
        assert.are.equal(2, code, out)
        assert.matches("%-%-probes varre um ajuste de índice do pgvector, mas a coluna embedding de rag_documents é real%[%]", err)
        assert.matches("sem a extensão vector não há índice ivfflat/hnsw", err)
        assert.are.equal(before, H.embed_requests())
        code, _, err = H.ragops(url, "validate plans/golden_demo.lua --ef-search 20,40")
        assert.are.equal(2, code)
        assert.matches("real%[%]", err)
      end)
    end

    if storage == "vector" then
      describe("ragops validate com índice vetorial", function()
        -- Database-level planner settings reach ragops's own session.
        local function planner(setting)
          H.psql(url, ("do $$ begin execute format('alter database %%I %s', current_database()); end $$")
            :format(setting))
        end

        it("sem índice: o cabeçalho diz busca exata (sem índice) e não cita probes nem ef_search", function()
          local path = golden_file(5, exact_queries())
          local code, out, err, report = H.ragops(url, "validate " .. H.q(path), { report = true })
          os.remove(path)
          assert.are.equal(0, code, err .. out)
          assert.matches("busca: pgvector %(vector%(1536%)%), busca exata %(sem índice%)", out)
          assert.is_nil(out:find("probes", 1, true))
          assert.is_nil(out:find("ef_search", 1, true))
          assert.are.equal(cjson.null, report.plan.index)
        end)

        for _, index in ipairs({ { "ivfflat", "--lists 4 --concurrently", "ivfflat%.probes = 4", "ef_search" },
                                 { "hnsw", "--m 8 --ef-construction 32", "hnsw%.ef_search = 80", "probes" } }) do
          it(("com %s: o cabeçalho mostra o índice e o ajuste dele; recall@k = 1 e o índice continua válido")
            :format(index[1]), function()
            local code, _, err = H.ragops(url, ("index create --method %s %s --dim 1536"):format(index[1], index[2]))
            assert.are.equal(0, code, err)
            local path = golden_file(5, exact_queries(), { min_recall = 1, min_mrr = 1 })
            local out, report
            code, out, err, report = H.ragops(url, "validate " .. H.q(path) .. " --probes 4 --ef-search 80", { report = true })
            os.remove(path)
            assert.are.equal(0, code, err .. out)
            assert.are.equal(1, report.recall_at_k)
            assert.are.equal("vector", report.storage)
            local name = "rag_documents_embedding_" .. index[1]
            assert.matches(("índice %s %%(%s, %s%%)"):format(name, index[1], index[3]), out)
            assert.is_nil(out:find(index[4], 1, true), "só o ajuste do método do índice")
            assert.matches("plano: índice [nãousado ]+", out)
            assert.are.equal(name, report.plan.index)
            assert.are.equal(index[1], report.plan.method)
            assert.are.equal(5, report.plan.explained_queries)
            assert.are.equal("t", H.scalar(url, ([[select indisvalid from pg_index
              where indexrelid = '%s'::regclass]]):format(name)))
            code, _, err = H.ragops(url, "index drop --method " .. index[1])
            assert.are.equal(0, code, err)
          end)
        end

        describe("com HNSW", function()
          setup(function()
            local code, _, err = H.ragops(url, "index create --method hnsw --m 8 --ef-construction 32 --dim 1536")
            assert.are.equal(0, code, err)
          end)
          teardown(function()
            planner("reset all")
            H.ragops(url, "index drop --method hnsw")
          end)

          it("EXPLAIN diz se o índice foi usado: usado com enable_seqscan = off, não usado com enable_indexscan = off", function()
            local path = golden_file(5, exact_queries())
            planner("set enable_seqscan = off")
            local code, out, err, report = H.ragops(url, "validate " .. H.q(path), { report = true })
            assert.are.equal(0, code, err .. out)
            assert.matches("índice rag_documents_embedding_hnsw %(hnsw, hnsw%.ef_search = 40%)", out) -- padrão do servidor
            assert.matches("plano: índice usado %(EXPLAIN, 5 de 5 consultas%)", out)
            assert.are.equal(5, report.plan.index_used_queries)
            assert.are.equal(40, report.plan.setting_value)
            planner("reset enable_seqscan")
            planner("set enable_indexscan = off")
            code, out, err, report = H.ragops(url, "validate " .. H.q(path), { report = true })
            planner("reset enable_indexscan")
            os.remove(path)
            assert.are.equal(0, code, err .. out)
            assert.matches("plano: índice não usado %(EXPLAIN: varredura sequencial nas 5 consultas%); o resultado é de busca exata", out)
            assert.are.equal(0, report.plan.index_used_queries)
          end)

          it("varredura --ef-search: uma linha por valor, a busca exata de referência e a recomendação", function()
            local path = golden_file(5, exact_queries())
            planner("set enable_seqscan = off")
            local code, out, err, report = H.ragops(url,
              "validate " .. H.q(path) .. " --ef-search 40,10,20 --target-recall 0.5", { report = true })
            planner("reset enable_seqscan")
            os.remove(path)
            assert.are.equal(report.sweep.recommended ~= cjson.null and 0 or 1, code, err .. out)
            assert.matches("Varredura de hnsw%.ef_search", out)
            for _, value in ipairs({ 10, 20, 40 }) do
              assert.matches(("\n  %d%%s+[%%d,]+%%s+[%%d,]+%%s+[%%d,]+%%s+[%%d,]+ ms%%s+[%%d,]+ ms%%s+%%d+ de %%d+\n")
                :format(value), out)
            end
            assert.matches("\n  busca exata%s+1,000", out)
            assert.matches("varia entre construções", out)
            local sweep = report.sweep
            assert.are.equal("hnsw.ef_search", sweep.setting)
            assert.are.equal(0.5, sweep.target_recall)
            assert.are.equal(3, #sweep.rows)
            for i, value in ipairs({ 10, 20, 40 }) do
              local row = sweep.rows[i]
              assert.are.equal(value, row.value)
              assert.is_true(row.index_recall >= 0 and row.index_recall <= 1)
              assert.are.equal(row.explained_queries, row.index_used_queries, "índice usado em todas")
              assert.is_true(row.latency_ms.p95 > 0)
            end
            -- the recommendation is the first row meeting the target
            local first
            for _, row in ipairs(sweep.rows) do
              if not first and row.index_recall >= 0.5 and row.index_used_queries == row.explained_queries then
                first = row.value
              end
            end
            assert.are.equal(first, sweep.recommended ~= cjson.null and sweep.recommended or nil)
            if first then
              assert.matches(("recomendação: hnsw%%.ef_search = %d, o menor valor"):format(first), out)
              assert.are.equal(first, report.plan.setting_value)
            end
          end)

          it("varredura em que o planejador não usa o índice: nada recomendado (a busca foi exata), código 1", function()
            local path = golden_file(5, exact_queries())
            planner("set enable_indexscan = off")
            local code, out, err, report = H.ragops(url, "validate " .. H.q(path) .. " --ef-search 20,40", { report = true })
            planner("reset enable_indexscan")
            os.remove(path)
            assert.are.equal(1, code, err .. out)
            assert.are.equal(cjson.null, report.sweep.recommended)
            for _, row in ipairs(report.sweep.rows) do
              assert.are.equal(0, row.index_used_queries)
              assert.are.equal(1, row.index_recall) -- varredura sequencial = busca exata
            end
            assert.matches("com hnsw%.ef_search = 20 o planejador não usou o índice em 5 de 5 consultas", out)
            assert.matches("nenhum valor testado chega a recall do índice ≥ 0,95 com o índice em uso", out)
            assert.matches("varredura: nenhum valor de hnsw%.ef_search", err)
          end)

          it("flag do outro tipo de índice ou tabela sem o índice: erro de uso (código 2)", function()
            local code, out, err = H.ragops(url, "validate plans/golden_demo.lua --probes 1,5,10")
            assert.are.equal(2, code, out)
            assert.matches("%-%-probes é ajuste de índice ivfflat, mas o índice de rag_documents é hnsw " ..
              "%(rag_documents_embedding_hnsw%): use %-%-ef%-search", err)
            code, _, err = H.ragops(url, "validate plans/golden_demo.lua --probes 1,5 --ef-search 20,40")
            assert.are.equal(2, code)
            assert.matches("varra um ajuste por vez", err)
          end)
        end)

        it("varredura sem índice vetorial: código 2 pedindo o index create", function()
          local code, out, err = H.ragops(url, "validate plans/golden_demo.lua --ef-search 20,40")
          assert.are.equal(2, code, out)
          assert.matches("não tem índice vetorial", err)
          assert.matches("ragops index create %-%-method hnsw", err)
        end)
      end)
    end
  end)
end)
