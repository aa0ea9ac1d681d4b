-- Integration: the production storage (pgvector) end to end, only when the
-- test server has the extension: index create/status/drop with IVFFlat and
-- HNSW (with and without CONCURRENTLY), an index build interrupted by a
-- signal, migrate by a role that may not create extensions, and the same
-- stored vectors on both storages.
local H = require "tests.integration.helper"

local DIM = 1536

H.each_storage(function()
  describe("índice vetorial com pgvector", function()
    local url

    local function index_row(name)
      return H.psql(url, ([[select am.amname, i.indisvalid from pg_index i
        join pg_class c on c.oid = i.indexrelid join pg_am am on am.oid = c.relam
        where c.relname = '%s']]):format(name))[1]
    end

    setup(function()
      url = H.migrated_db("ragops_it_pgvector", 200, 20)
      local code, _, err = H.ragops(url, "backfill --quiet")
      assert.are.equal(0, code, err)
    end)

    it("status: coluna vector(1536), extensão instalada e nenhum índice", function()
      local code, out, err = H.ragops(url, "index status")
      assert.are.equal(0, code, err)
      assert.matches("coluna embedding: vector%(1536%)", out)
      assert.matches("pgvector: instalado %(extensão vector 0%.8%.%d+%)", out)
      assert.matches("índices vetoriais: nenhum", out)
      assert.is_nil(out:find("índice vetorial indisponível", 1, true))
    end)

    it("IVFFlat: create, status mostra o índice válido, drop remove", function()
      local code, out, err = H.ragops(url, ("index create --lists 4 --dim %d"):format(DIM))
      assert.are.equal(0, code, err)
      assert.matches("índice rag_documents_embedding_ivfflat criado", out)
      assert.matches("SET ivfflat.probes = 10", out)
      assert.are.same({ "ivfflat", "t" }, index_row("rag_documents_embedding_ivfflat"))
      code, out, err = H.ragops(url, "index status")
      assert.are.equal(0, code, err)
      assert.matches("rag_documents_embedding_ivfflat %(ivfflat, [^)]+%): CREATE INDEX", out)
      assert.is_nil(out:find("INVALID", 1, true))
      code, out, err = H.ragops(url, "index drop")
      assert.are.equal(0, code, err)
      assert.matches("índice rag_documents_embedding_ivfflat removido", out)
      assert.is_nil(index_row("rag_documents_embedding_ivfflat"))
    end)

    it("HNSW com --concurrently e --maintenance-work-mem: índice válido; drop pelo método", function()
      local code, out, err = H.ragops(url, ("index create --method hnsw --m 8 --ef-construction 32 --dim %d "
        .. "--concurrently --maintenance-work-mem 64MB"):format(DIM))
      assert.are.equal(0, code, err)
      assert.matches("índice rag_documents_embedding_hnsw criado", out)
      assert.matches("SET hnsw.ef_search = 40", out)
      assert.are.same({ "hnsw", "t" }, index_row("rag_documents_embedding_hnsw"))
      assert.matches("WITH %(m='8', ef_construction='32'%)", H.scalar(url,
        "select pg_get_indexdef('rag_documents_embedding_hnsw'::regclass)"))
      code, _, err = H.ragops(url, "index drop --method hnsw")
      assert.are.equal(0, code, err)
      assert.is_nil(index_row("rag_documents_embedding_hnsw"))
    end)

    it("HNSW com maintenance_work_mem pequena: o aviso do pgvector sai em pt-BR, não no inglês do servidor", function()
      -- 220 vectors of 1536 floats (~1.4 MB) do not fit in 1MB: pgvector sends a NOTICE.
      local code, _, err = H.ragops(url, ("index create --method hnsw --m 4 --ef-construction 8 --dim %d "
        .. "--maintenance-work-mem 1MB --name idx_grafo_grande"):format(DIM))
      assert.are.equal(0, code, err)
      assert.matches("o grafo HNSW deixou de caber em maintenance_work_mem depois de %d+ vetores", err)
      assert.is_nil(err:find("NOTICE", 1, true), err)
      assert.is_nil(err:find("Increase maintenance_work_mem", 1, true), err)
      code, _, err = H.ragops(url, "index drop --name idx_grafo_grande")
      assert.are.equal(0, code, err)
    end)

    it("IVFFlat --concurrently com mais listas que linhas: avisa e cria", function()
      local code, _, err = H.ragops(url, ("index create --lists 300 --dim %d --concurrently --name idx_poucas"):format(DIM))
      assert.are.equal(0, code, err)
      assert.matches("menos linhas com embedding %(%d+%) que listas %(300%)", err)
      assert.is_nil(err:find("NOTICE", 1, true), err)
      assert.are.same({ "ivfflat", "t" }, index_row("idx_poucas"))
      code, _, err = H.ragops(url, "index drop --name idx_poucas")
      assert.are.equal(0, code, err)
    end)

    it("--concurrently que falha no servidor diz que o índice ficou INVALID e dá o DROP exato", function()
      -- 1000 lists of 1536 floats do not fit in 1MB of maintenance_work_mem.
      local code, _, err = H.ragops(url, ("index create --lists 1000 --dim %d --concurrently "
        .. "--maintenance-work-mem 1MB --name idx_sem_memoria"):format(DIM))
      assert.are.equal(2, code, err)
      assert.matches("maintenance_work_mem", err)
      assert.matches("o índice idx_sem_memoria ficou INVALID", err)
      assert.matches('DROP INDEX CONCURRENTLY IF EXISTS "idx_sem_memoria";', err, 1, true)
      assert.are.same({ "ivfflat", "f" }, index_row("idx_sem_memoria"))
      local out
      code, out, err = H.ragops(url, "index status")
      assert.are.equal(0, code, err)
      assert.matches("idx_sem_memoria %(ivfflat, [^)]+, INVALID", out)
      code, _, err = H.ragops(url, "index drop --name idx_sem_memoria")
      assert.are.equal(0, code, err)
      assert.is_nil(index_row("idx_sem_memoria"))
    end)

    it("nome já usado, índice que não é vetorial e índice inexistente", function()
      local code, _, err = H.ragops(url, ("index create --lists 4 --dim %d --name rag_documents_type_updated"):format(DIM))
      assert.are.equal(2, code, err)
      assert.matches("já existe uma relação chamada", err)
      code, _, err = H.ragops(url, "index drop --name rag_documents_type_updated")
      assert.are.equal(2, code, err)
      assert.matches("não é um índice vetorial", err)
      assert.are.equal(1, H.scalar(url, "select count(*) from pg_class where relname = 'rag_documents_type_updated'"))
      local out
      code, out, err = H.ragops(url, "index drop --name nao_existe")
      assert.are.equal(0, code, err)
      assert.matches("não existe; nada a fazer", out)
    end)

    describe("sinal durante a construção", function()
      -- An open transaction that has written to the table: CREATE INDEX waits
      -- for its lock, CREATE INDEX CONCURRENTLY (after registering the index)
      -- waits for it to end.
      local function hold_writer()
        local sql = [[begin; insert into rag_documents (entity_type, entity_id, content, content_hash,
          embedding_model) values ('segura', '1', 'x', 'h', 'm'); select pg_sleep(60)]]
        os.execute(("PGAPPNAME=ragops_it_holder psql -X -q -d %s -c %s >/dev/null 2>&1 &")
          :format(H.q(url), H.q(sql)))
        for _ = 1, 100 do
          if H.scalar(url, "select count(*) from pg_stat_activity where application_name = 'ragops_it_holder' "
            .. "and wait_event = 'PgSleep'") == 1 then return end
          H.sleep(0.05)
        end
        error("a transação que segura a tabela não começou")
      end
      local function release_writer()
        H.psql(url, "select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'ragops_it_holder'")
      end
      local function builds_running()
        return H.scalar(url, [[select count(*) from pg_stat_activity
          where pid <> pg_backend_pid() and query ilike 'create index%']])
      end
      local function wait_build_waiting()
        for _ = 1, 200 do
          if H.scalar(url, [[select count(*) from pg_stat_activity where pid <> pg_backend_pid()
            and query ilike 'create index%' and wait_event_type = 'Lock']]) == 1 then return end
          H.sleep(0.05)
        end
        error("a construção do índice não começou a esperar")
      end

      after_each(function()
        release_writer()
        H.cleanup()
      end)

      it("SIGINT no --concurrently: cancela no servidor, aponta o índice INVALID e o DROP, código 130", function()
        hold_writer()
        local job = H.ragops_background(url, ("index create --lists 4 --dim %d --concurrently --name idx_cancelado")
          :format(DIM))
        wait_build_waiting()
        H.sh("kill -INT " .. job.pid)
        local code = H.exit_code(job, 15)
        local err = H.read_all(job.err)
        assert.are.equal(130, code, err)
        assert.are.equal(0, builds_running())
        assert.matches("SIGINT", err)
        assert.matches("INVALID", err)
        assert.matches('DROP INDEX CONCURRENTLY IF EXISTS "idx_cancelado";', err, 1, true)
        assert.are.same({ "ivfflat", "f" }, index_row("idx_cancelado"))
        release_writer()
        local dcode, _, derr = H.ragops(url, "index drop --name idx_cancelado")
        assert.are.equal(0, dcode, derr)
        assert.is_nil(index_row("idx_cancelado"))
      end)

      it("inprogress_index_builds no arquivo de métricas: 1 durante a construção, 0 depois", function()
        local metrics_path = os.tmpname()
        local cfg = H.config_file(("metrics = { file = %q }"):format(metrics_path))
        hold_writer()
        local job = H.ragops_background(url, ("index create --lists 4 --dim %d --name idx_metrica --config %s")
          :format(DIM, H.q(cfg)))
        wait_build_waiting()
        assert.matches("inprogress_index_builds 1", H.read_all(metrics_path))
        release_writer()
        local code = H.exit_code(job, 30)
        assert.are.equal(0, code, H.read_all(job.err))
        assert.matches("inprogress_index_builds 0", H.read_all(metrics_path))
        os.remove(metrics_path); os.remove(cfg)
        H.ragops(url, "index drop --name idx_metrica")
      end)

      it("SIGTERM sem --concurrently: cancela, nada fica para trás, código 130", function()
        hold_writer()
        local job = H.ragops_background(url, ("index create --method hnsw --dim %d --name idx_sigterm"):format(DIM))
        wait_build_waiting()
        H.sh("kill -TERM " .. job.pid)
        local code = H.exit_code(job, 15)
        local err = H.read_all(job.err)
        assert.are.equal(130, code, err)
        assert.are.equal(0, builds_running())
        assert.matches("SIGTERM", err)
        assert.matches("nenhum índice ficou para trás", err)
        assert.is_nil(index_row("idx_sigterm"))
      end)
    end)
  end)

  describe("migrate por um papel sem permissão para criar extensões", function()
    local url, role_url

    setup(function()
      url = H.fresh_db("ragops_it_semsuper")
      H.load_sources(url, 10, 2)
      H.psql(url, [[do $$ begin
        if not exists (select 1 from pg_roles where rolname = 'ragops_semsuper') then
          create role ragops_semsuper login nosuperuser;
        end if; end $$]])
      H.psql(url, ("alter database %s owner to ragops_semsuper"):format(url:match("/([^/]+)$")))
      H.psql(url, "grant select on verses, fortunes to ragops_semsuper")
      role_url = url:gsub("//postgres@", "//ragops_semsuper@")
    end)

    it("auto e vector: código 2 com o CREATE EXTENSION exato para um superusuário; nada gravado", function()
      for _, storage in ipairs({ "auto", "vector" }) do
        local cfg = H.config_file(('database = { storage = "%s" }'):format(storage))
        local code, _, err = H.ragops(role_url, "migrate --config " .. H.q(cfg))
        os.remove(cfg)
        assert.are.equal(2, code, storage .. ": " .. err)
        assert.matches("CREATE EXTENSION vector;", err, 1, true)
        assert.matches("superusuário", err)
        assert.matches("ragops_semsuper", err)
        assert.is_nil(err:find("permission denied", 1, true))
        assert.are.equal(0, H.scalar(url, [[select count(*) from pg_tables
          where tablename in ('rag_documents', 'ragops_schema_version')]]))
      end
    end)

    it("depois que o superusuário cria a extensão, o mesmo papel migra para vector(N)", function()
      H.psql(url, "create extension vector")
      local cfg = H.config_file('database = { storage = "auto" }')
      local code, out, err = H.ragops(role_url, "migrate --config " .. H.q(cfg))
      os.remove(cfg)
      assert.are.equal(0, code, err)
      assert.matches("vector%(1536%)", out)
      assert.are.equal("vector(1536)", H.column_type(url))
    end)
  end)

  describe("os mesmos vetores nos dois armazenamentos", function()
    it("backfill em real[] e em vector grava chaves, hashes e embeddings idênticos", function()
      local fingerprints = {}
      for _, storage in ipairs({ "real[]", "vector" }) do
        local db = H.fresh_db("ragops_it_fp_" .. storage:match("^%a+"))
        H.load_sources(db, 120, 12)
        local cfg = H.config_file(('database = { storage = "%s" }'):format(storage))
        local code, _, err = H.ragops(db, "migrate --config " .. H.q(cfg))
        assert.are.equal(0, code, err)
        code, _, err = H.ragops(db, "backfill --quiet --config " .. H.q(cfg))
        os.remove(cfg)
        assert.are.equal(0, code, err)
        assert.are.equal(storage == "vector" and "vector(1536)" or "real[]", H.column_type(db))
        fingerprints[storage] = H.fingerprint(db)
      end
      assert.is_string(fingerprints["real[]"])
      assert.are.equal(fingerprints["real[]"], fingerprints.vector)
    end)
  end)
end, "vector")
