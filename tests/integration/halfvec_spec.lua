-- Integration: 3072 dimensions on pgvector's halfvec storage end to end, only
-- when the test server has the extension: migrate creates halfvec(3072),
-- backfill (a second embed-server at --dim 3072) writes it, a re-run embeds
-- nothing, reindex rewrites it, `index create --method hnsw` builds the
-- index, validate passes through it, sync applies changes; and the refusals: a vector(3072) index,
-- --alter-dim conversions that work (vector, real[] -> halfvec) and those that
-- cannot (vector(3072) as the target, rows of another dimension).
local H = require "tests.integration.helper"

local DIM = 3072
local PROVIDER = ('provider = { dim = %d, model = "ragops-hash-3072" }'):format(DIM)

-- A configuration for `table_name` on `storage` at 3072 dimensions.
local function config(storage, table_name)
  return H.config_file(('database = { storage = %q, table = %q }, %s'):format(storage, table_name, PROVIDER))
end

-- A golden file whose queries are the exact texts of verses `ids`.
local function golden_file(url, ids)
  local parts = { "return {", "  k = 5, min_recall = 1, min_mrr = 1,", "  queries = {" }
  for _, id in ipairs(ids) do
    parts[#parts + 1] = ("    { query = %q, expect = { { entity_type = \"verse\", entity_id = \"%d\" } } },")
      :format(H.scalar(url, "select text from verses where id = " .. id), id)
  end
  parts[#parts + 1] = "  },\n}\n"
  return H.plan_file(table.concat(parts, "\n"))
end

if not (" " .. table.concat(H.storages, " ") .. " "):find(" vector ", 1, true) then
  describe("halfvec (3072 dimensões)", function()
    pending("pgvector ausente no servidor de teste: os testes de halfvec não rodam (veja tests/run_all.sh)")
  end)
end

H.each_storage(function()
  describe("halfvec com 3072 dimensões", function()
    local url, server, cfg

    local function ragops(args, opts)
      opts = opts or {}
      opts.env = { RAGOPS_EMBED_URL = server.url }
      return H.ragops(url, args, opts)
    end

    local function requests()
      local code, out = H.sh("curl -fsS " .. H.q(server.base .. "/stats"))
      assert.are.equal(0, code)
      return tonumber(out:match('"requests"%s*:%s*(%d+)'))
    end

    setup(function()
      server = H.start_embed_server("--dim " .. DIM)
      url = H.fresh_db("ragops_it_halfvec")
      H.load_sources(url, 3000, 30)
      cfg = config("halfvec", "rag_documents")
    end)

    teardown(function()
      os.remove(cfg)
      H.stop_embed_server(server)
    end)

    it("migrate cria a coluna halfvec(3072)", function()
      local code, out, err = ragops("migrate --config " .. H.q(cfg))
      assert.are.equal(0, code, err)
      assert.matches("coluna embedding: halfvec%(3072%) %(pgvector%)", out)
      assert.are.equal("halfvec(3072)", H.column_type(url))
    end)

    it("backfill grava 3072 dimensões em halfvec; a reexecução não gera nenhum embedding", function()
      local code, _, err, report = ragops("backfill --quiet --config " .. H.q(cfg), { report = true })
      assert.are.equal(0, code, err)
      local documents = H.scalar(url, "select count(*) from rag_documents")
      assert.is_true(documents >= 3030, tostring(documents))
      assert.are.equal(documents, report.embedded)
      assert.are.equal(0, H.scalar(url, "select count(*) from rag_documents where vector_dims(embedding) <> 3072"))
      -- The stored vectors are the provider's, normalised (half precision keeps the norm near 1).
      assert.are.equal(0, H.scalar(url, "select count(*) from rag_documents "
        .. "where abs(l2_norm(embedding) - 1) > 0.01"))
      local before = requests()
      code, _, err, report = ragops("backfill --quiet --config " .. H.q(cfg), { report = true })
      assert.are.equal(0, code, err)
      assert.are.equal(0, report.embedded)
      assert.are.equal(before, requests())
      assert.are.equal(documents, H.scalar(url, "select count(*) from rag_documents"))
    end)

    it("reindex --overwrite de uma entidade regrava a linha halfvec", function()
      H.psql(url, "update rag_documents set embedding = null where entity_type = 'verse' and entity_id = '7'")
      local code, _, err, report = ragops("reindex --overwrite --entity-type verse --entity-id 7 --quiet --config "
        .. H.q(cfg), { report = true })
      assert.are.equal(0, code, err)
      assert.are.equal(1, report.embedded)
      assert.are.equal(3072, H.scalar(url, "select vector_dims(embedding) from rag_documents "
        .. "where entity_type = 'verse' and entity_id = '7'"))
    end)

    it("index create --method hnsw em halfvec(3072): halfvec_cosine_ops, status mostra o tipo", function()
      local code, out, err = ragops(("index create --method hnsw --dim %d --config %s"):format(DIM, H.q(cfg)))
      assert.are.equal(0, code, err)
      assert.matches("índice rag_documents_embedding_hnsw criado em rag_documents %(hnsw, halfvec_cosine_ops%)", out)
      assert.matches("USING hnsw %(embedding halfvec_cosine_ops%)", H.scalar(url,
        "select pg_get_indexdef('rag_documents_embedding_hnsw'::regclass)"))
      assert.are.equal("true", H.scalar(url, "select indisvalid::text from pg_index "
        .. "where indexrelid = 'rag_documents_embedding_hnsw'::regclass"))
      code, out, err = ragops("index status --config " .. H.q(cfg))
      assert.are.equal(0, code, err)
      assert.matches("coluna embedding: halfvec%(3072%); halfvec: meia precisão, índices até 4000 dimensões", out)
      assert.matches("rag_documents_embedding_hnsw %(hnsw", out)
      code, out, err = ragops("status --config " .. H.q(cfg))
      assert.are.equal(0, code, err)
      assert.matches("Armazenamento: coluna embedding halfvec%(3072%); halfvec: meia precisão", out)
      code, out, err = ragops("status --json --config " .. H.q(cfg))
      assert.are.equal(0, code, err)
      assert.are.equal("halfvec(3072)", require("cjson").decode(out).storage)
    end)

    it("validate passa pelo índice hnsw (o parâmetro vai como halfvec)", function()
      local golden = golden_file(url, { 11, 222, 1333, 2444 })
      H.psql(url, "select pg_stat_reset()")
      local code, out, err, report = ragops("validate " .. H.q(golden) .. " --config " .. H.q(cfg), { report = true })
      os.remove(golden)
      assert.are.equal(0, code, err .. out)
      assert.are.equal(1, report.recall_at_k)
      assert.are.equal("halfvec", report.storage)
      assert.matches("pgvector %(halfvec%(3072%)", out)
      -- The statistics collector reports the index scans of the 4 queries.
      local scans = 0
      for _ = 1, 50 do
        scans = H.scalar(url, "select coalesce(sum(idx_scan), 0) from pg_stat_user_indexes "
          .. "where indexrelname = 'rag_documents_embedding_hnsw'")
        if scans >= 4 then break end
        H.sleep(0.1)
      end
      assert.is_true(scans >= 4, "o índice hnsw não foi usado: " .. tostring(scans) .. " varreduras")
    end)

    it("sync (marca d'água) aplica mudanças na tabela halfvec com o índice hnsw no lugar", function()
      local plan = H.plan_file([[
local function doc(r) return { content = r.text } end
local every = { strategy = "watermark", overlap_s = 1, deletes_every_s = 0.001 }
return plan { name = "sinc_halfvec",
  sources = {
    source "verse" { sql = "select id, text, updated_at from verses", key = "id", updated_at = "updated_at",
                     document = doc, sync = every },
    source "fortune" { sql = "select id, text, updated_at from fortunes", key = "id", updated_at = "updated_at",
                       document = doc, sync = every },
  },
  batch = { size = 64, in_flight = 4 },
  retry = { attempts = 5, base_ms = 20, max_ms = 200, timeout_s = 30 } }]])
      local code, _, err = ragops("sync " .. H.q(plan) .. " --quiet --config " .. H.q(cfg))
      assert.are.equal(0, code, err)
      H.psql(url, "update verses set text = text || ' revisto', updated_at = now() + interval '1 day' where id <= 5")
      local report
      code, _, err, report = ragops("sync " .. H.q(plan) .. " --quiet --config " .. H.q(cfg), { report = true })
      os.remove(plan)
      assert.are.equal(0, code, err)
      assert.are.equal(5, report.embedded)
      assert.are.equal(5, H.scalar(url, "select count(*) from rag_documents where entity_type = 'verse' "
        .. "and content like '% revisto' and vector_dims(embedding) = 3072"))
      assert.are.equal("halfvec(3072)", H.column_type(url))
    end)
  end)

  describe("recusas e conversões com --alter-dim em 3072 dimensões", function()
    local url, server
    local files = {}

    local function ragops(args)
      return H.ragops(url, args, { env = { RAGOPS_EMBED_URL = server.url } })
    end
    local function cfg_for(storage, table_name)
      local path = config(storage, table_name)
      files[#files + 1] = path
      return H.q(path)
    end

    setup(function()
      server = H.start_embed_server("--dim " .. DIM)
      url = H.fresh_db("ragops_it_halfvec_alter")
      H.load_sources(url, 40, 4)
    end)

    teardown(function()
      for _, path in ipairs(files) do os.remove(path) end
      H.stop_embed_server(server)
    end)

    it("índice em vector(3072): código 2, em pt-BR, apontando halfvec; --alter-dim converte para halfvec(3072)", function()
      local as_vector = cfg_for("vector", "docs_vector")
      local code, out, err = ragops("migrate --config " .. as_vector)
      assert.are.equal(0, code, err)
      assert.matches("vector%(3072%)", out)
      code, _, err = ragops("backfill --quiet --config " .. as_vector)
      assert.are.equal(0, code, err)
      code, _, err = ragops(("index create --method hnsw --dim %d --config %s"):format(DIM, as_vector))
      assert.are.equal(2, code, err)
      assert.matches("limite do pgvector para índices em colunas vector", err)
      assert.matches('database.storage = "halfvec"', err, 1, true)
      assert.are.equal("vector(3072)", H.column_type(url, "docs_vector"))
      -- --alter-dim toward vector(3072) is refused the same way, nothing changed.
      code, _, err = ragops(("index create --method hnsw --dim %d --alter-dim --config %s"):format(DIM, as_vector))
      assert.are.equal(2, code, err)
      assert.matches('database.storage = "halfvec"', err, 1, true)
      local rows = H.scalar(url, "select count(*) from docs_vector")
      local as_halfvec = cfg_for("halfvec", "docs_vector")
      code, _, err = ragops(("index create --method hnsw --dim %d --alter-dim --config %s"):format(DIM, as_halfvec))
      assert.are.equal(0, code, err)
      assert.matches("vai virar halfvec%(3072%)", err)
      assert.are.equal("halfvec(3072)", H.column_type(url, "docs_vector"))
      assert.are.equal(rows, H.scalar(url, "select count(*) from docs_vector where vector_dims(embedding) = 3072"))
      assert.matches("halfvec_cosine_ops", H.scalar(url, "select pg_get_indexdef('docs_vector_embedding_hnsw'::regclass)"))
      -- The converted table keeps working: a re-run embeds nothing.
      code, _, err = ragops("backfill --quiet --config " .. as_halfvec)
      assert.are.equal(0, code, err)
    end)

    it('database.storage = "auto" com provider.dim = 3072: migrate cria halfvec(3072), não vector', function()
      url = H.fresh_db("ragops_it_halfvec_auto")
      H.load_sources(url, 10, 2)
      local code, out, err = ragops("migrate --config " .. cfg_for("auto", "rag_documents"))
      assert.are.equal(0, code, err)
      assert.matches("coluna embedding: halfvec%(3072%) %(pgvector%)", out)
      assert.are.equal("halfvec(3072)", H.column_type(url))
    end)

    it("real[] -> halfvec(3072) com --alter-dim; linhas de outra dimensão recusam a conversão", function()
      -- ragops migrate creates the target table only on a new schema: a database of its own.
      url = H.fresh_db("ragops_it_halfvec_real")
      H.load_sources(url, 40, 4)
      local as_real = cfg_for("real[]", "docs_real")
      local code, _, err = ragops("migrate --config " .. as_real)
      assert.are.equal(0, code, err)
      code, _, err = ragops("backfill --quiet --config " .. as_real)
      assert.are.equal(0, code, err)
      assert.are.equal("real[]", H.column_type(url, "docs_real"))
      -- The operator installs pgvector on the real[] database before converting.
      H.psql(url, "create extension vector")
      H.psql(url, [[insert into docs_real (entity_type, entity_id, content, content_hash, embedding, embedding_model)
        values ('curto', '1', 'x', 'h', array_fill(0.1::real, array[1536]), 'outro')]])
      local as_halfvec = cfg_for("halfvec", "docs_real")
      local alter = ("index create --method hnsw --dim %d --alter-dim --config %s"):format(DIM, as_halfvec)
      code, _, err = ragops(alter)
      assert.are.equal(2, code, err)
      assert.matches("%-%-alter%-dim recusado: 1 linha%(s%) têm embedding com dimensão diferente de 3072", err)
      assert.are.equal("real[]", H.column_type(url, "docs_real"))
      H.psql(url, "delete from docs_real where entity_type = 'curto'")
      code, _, err = ragops(alter)
      assert.are.equal(0, code, err)
      assert.are.equal("halfvec(3072)", H.column_type(url, "docs_real"))
    end)
  end)
end, "vector")
