-- Integration: `ragops index create|drop|status` through the ragops binary.
-- On real[] storage (no extension in the database) everything but status and
-- --dry-run must refuse with exit 2 and explain that pgvector is missing;
-- --dry-run prints the SQL and creates nothing; status works. On vector
-- storage (when the server has pgvector) IVFFlat and HNSW are built, listed
-- and dropped, with and without CONCURRENTLY, and a build interrupted by a
-- signal is cancelled on the server.
local H = require "tests.integration.helper"

H.each_storage(function()
  describe("ragops index em armazenamento real[] (sem a extensão no banco)", function()
    local url
    -- What the server offers decides the wording of the refusal.
    local server_has_pgvector

    local function index_count()
      return H.scalar(url, "select count(*) from pg_indexes where tablename = 'rag_documents'")
    end
    local function column_type()
      return H.scalar(url, [[select format_type(atttypid, atttypmod) from pg_attribute
        where attrelid = 'rag_documents'::regclass and attname = 'embedding']])
    end

    setup(function()
      url = H.fresh_db("ragops_it_index")
      local code, _, err = H.ragops(url, "migrate")
      assert.are.equal(0, code, err)
      server_has_pgvector = H.scalar(url, "select count(*) from pg_available_extensions where name = 'vector'") == 1
    end)

    it("create recusa com código 2 e explica como migrar para pgvector", function()
      local before = index_count()
      local code, out, err = H.ragops(url, "index create --lists 64 --dim 1536 --concurrently --maintenance-work-mem 2GB")
      assert.are.equal(2, code, err)
      assert.are.equal("", out)
      assert.matches("pgvector", err)
      if server_has_pgvector then
        assert.matches('o pgvector está disponível no servidor, mas a extensão "vector" não foi criada neste banco', err)
      else
        assert.matches('extensão pgvector %("vector"%) não está instalada', err)
      end
      assert.matches("real%[%]", err)
      assert.matches('database.storage = "vector"', err)
      assert.matches("ragops migrate", err)
      assert.are.equal(before, index_count())
    end)

    it("--alter-dim também não mexe na coluna sem a extensão", function()
      local code, _, err = H.ragops(url, "index create --lists 64 --dim 1536 --alter-dim")
      assert.are.equal(2, code, err)
      assert.matches("pgvector", err)
      assert.are.equal("real[]", column_type())
    end)

    it("--dry-run imprime o SQL exato, sai com 0 e não cria nada", function()
      local before = index_count()
      local code, out, err = H.ragops(url, "index create --lists 64 --dim 1536 --concurrently "
        .. "--maintenance-work-mem 2gb --alter-dim --name idx_teste --dry-run")
      assert.are.equal(0, code, err)
      assert.matches("%-%- simulação %(%-%-dry%-run%): SQL que seria executado; nada foi executado", out)
      assert.matches('ALTER TABLE "rag_documents" ALTER COLUMN "embedding" TYPE vector%(1536%) '
        .. 'USING "embedding"::vector%(1536%);', out)
      assert.matches("SET maintenance_work_mem = '2GB';", out, 1, true)
      assert.matches('CREATE INDEX CONCURRENTLY "idx_teste" ON "rag_documents" USING ivfflat '
        .. '%("embedding" vector_cosine_ops%) WITH %(lists = 64%);', out)
      assert.matches("SET ivfflat.probes = 10", out)
      -- The storage problem is reported, but it does not fail a simulation.
      assert.matches("falharia agora", err)
      assert.are.equal(before, index_count())
      assert.are.equal(0, H.scalar(url, "select count(*) from pg_class where relname = 'idx_teste'"))
      assert.are.equal("real[]", column_type())
    end)

    it("--dry-run com hnsw gera m e ef_construction", function()
      local code, out, err = H.ragops(url, "index create --method hnsw --m 24 --ef-construction 100 "
        .. "--dim 1536 --opclass l2 --dry-run")
      assert.are.equal(0, code, err)
      assert.matches('USING hnsw %("embedding" vector_l2_ops%) WITH %(m = 24, ef_construction = 100%);', out)
      assert.matches("SET hnsw.ef_search = 40", out)
    end)

    it("flags inválidas: código 2 com mensagem em pt-BR, antes de tocar no banco", function()
      local cases = {
        { "index create --lists 0 --dim 1536", "entre 1 e 32768" },
        { "index create --lists 64 --dim 4001", "nem halfvec %(o tipo de maior alcance%) indexa mais de 4000" },
        { "index create --lists 64 --dim 1536 --maintenance-work-mem 2XB", "64MB, 2GB ou 4GB" },
        { "index create --method hnsw --m 40 --dim 1536", "pelo menos 2 × %-%-m" },
        { "index create --dim 1536", "%-%-lists é obrigatório" },
        { "index create --lists 64 --dim 768", "provider.dim = 1536" },
        { "index create --lists 64 --dim 1536 --opclass hamming", "cosine, l2 ou ip" },
        { "index create --lists 64 --dim 1536 --desconhecida", "opção desconhecida" },
        { "index recriar", "uso: ragops index" },
      }
      for _, case in ipairs(cases) do
        local code, _, err = H.ragops(url, case[1] .. " --dry-run")
        assert.are.equal(2, code, case[1] .. ": " .. err)
        assert.matches(case[2], err)
      end
    end)

    it("drop recusa com código 2 sem pgvector; --dry-run mostra o DROP CONCURRENTLY", function()
      local code, _, err = H.ragops(url, "index drop")
      assert.are.equal(2, code, err)
      assert.matches("pgvector", err)
      local out
      code, out, err = H.ragops(url, "index drop --name idx_teste --dry-run")
      assert.are.equal(0, code, err)
      assert.matches('DROP INDEX CONCURRENTLY IF EXISTS "idx_teste";', out)
    end)

    it("status funciona: coluna, extensão ausente, nenhum índice e probes recomendados", function()
      H.psql(url, [[insert into rag_documents (entity_type, entity_id, content, content_hash, embedding, embedding_model)
        select 'verse', i::text, 'x', 'h', array_fill(0.1::real, array[1536]), 'm' from generate_series(1, 3000) i]])
      local code, out, err = H.ragops(url, "index status")
      assert.are.equal(0, code, err)
      assert.matches("coluna embedding: real%[%]", out)
      assert.matches(server_has_pgvector and "pgvector: disponível no servidor, mas não criado neste banco"
        or "pgvector: não instalado", out)
      assert.matches("índices vetoriais: nenhum", out)
      assert.matches("lists 64 %(desenvolvimento%) / 2000 %(produção%)", out)
      assert.matches("probes 10", out)
      assert.matches("3000 linha%(s%) com embedding%), o pgvector sugere lists ≈ 3 e probes ≈ 2", out)
    end)

    it("status sem a tabela pede o migrate", function()
      local empty = H.fresh_db("ragops_it_index_vazio")
      local code, _, err = H.ragops(empty, "index status")
      assert.are.equal(2, code)
      assert.matches("ragops migrate", err)
    end)
  end)
end, "real[]")
