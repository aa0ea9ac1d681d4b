-- Integration: controlled reindex (entity, date range, entity type), dry-run
-- and the plan sandbox, through the ragops binary on real services, once per
-- storage (real[] and, with pgvector, vector).
local H = require "tests.integration.helper"

H.each_storage(function()
  describe("reindex controlado e dry-run", function()
    local url

    -- entity_id -> indexed_at (text) for one entity type.
    local function indexed_at(entity_type)
      local out = {}
      for _, r in ipairs(H.psql(url, ("select entity_id || ':' || chunk_index, indexed_at::text from rag_documents where entity_type = '%s'"):format(entity_type))) do
        out[r[1]] = r[2]
      end
      return out
    end
    local function changed_keys(before, after)
      local keys = {}
      for k, v in pairs(after) do if before[k] ~= v then keys[#keys + 1] = k end end
      table.sort(keys)
      return keys
    end
    local function snapshot()
      return H.psql(url, [[select (select count(*) from rag_documents), (select max(indexed_at)::text from rag_documents),
        (select count(*) from ragops_runs), (select count(*) from ragops_failures), (select count(*) from verses),
        (select md5(string_agg(content_hash || entity_id, ',' order by entity_type, entity_id, chunk_index)) from rag_documents)]])[1]
    end

    setup(function()
      url = H.fresh_db("ragops_it_reindex")
      H.load_sources(url, 200, 30)
      assert.are.equal(0, (H.ragops(url, "migrate")))
      local code, _, err = H.ragops(url, "backfill")
      assert.are.equal(0, code, err)
    end)

    it("reindex de um versículo toca exatamente os seus chunks", function()
      local verses, fortunes = indexed_at("verse"), indexed_at("fortune")
      local code, _, err, report = H.ragops(url, "reindex --entity-type verse --entity-id 42 --overwrite", { report = true })
      assert.are.equal(0, code, err)
      assert.are.equal(1, report.processed)
      assert.are.equal(1, report.embedded)
      assert.are.same({ "42:0" }, changed_keys(verses, indexed_at("verse")))
      assert.are.same({}, changed_keys(fortunes, indexed_at("fortune")))
    end)

    it("sem --overwrite, um versículo inalterado não é reembedado", function()
      local before = H.embed_requests()
      local code, _, err, report = H.ragops(url, "reindex --entity-type verse --entity-id 42", { report = true })
      assert.are.equal(0, code, err)
      assert.are.equal(1, report.skipped)
      assert.are.equal(0, report.embedded)
      assert.are.equal(before, H.embed_requests())
    end)

    it("intervalo de datas toca exatamente as entidades com updated_at no intervalo", function()
      local expected = {}
      for _, r in ipairs(H.psql(url, [[select id || ':0' from verses
          where updated_at >= '2024-03-01' and updated_at < '2024-04-01' order by 1]])) do
        expected[#expected + 1] = r[1]
      end
      table.sort(expected)
      assert.is_true(#expected > 3, "a amostra precisa ter versículos em março")
      local before, fortunes = indexed_at("verse"), indexed_at("fortune")
      local code, _, err, report = H.ragops(url,
        "reindex --entity-type verse --since 2024-03-01 --until 2024-04-01 --overwrite", { report = true })
      assert.are.equal(0, code, err)
      assert.are.equal(#expected, report.processed)
      assert.are.same(expected, changed_keys(before, indexed_at("verse")))
      assert.are.same({}, changed_keys(fortunes, indexed_at("fortune")))
    end)

    it("reindex de um tipo deixa o outro tipo intacto", function()
      local verses, fortunes = indexed_at("verse"), indexed_at("fortune")
      local code, _, err, report = H.ragops(url, "reindex --entity-type fortune --overwrite", { report = true })
      assert.are.equal(0, code, err)
      assert.are.equal(30, report.processed)
      assert.are.same({}, changed_keys(verses, indexed_at("verse")))
      local touched = changed_keys(fortunes, indexed_at("fortune"))
      local total = 0
      for _ in pairs(fortunes) do total = total + 1 end
      assert.are.equal(total, #touched)
    end)

    it("entidade que sumiu da fonte tem os documentos removidos e o relatório diz", function()
      H.psql(url, "delete from verses where id = 7")
      local code, out, err, report = H.ragops(url, "reindex --entity-type verse --entity-id 7,8", { report = true })
      assert.are.equal(0, code, err)
      assert.are.equal(1, report.deleted)
      assert.are.equal("7", report.missing_entities[1].entity_id)
      assert.matches("7", out .. err)
      assert.are.equal(0, H.scalar(url, "select count(*) from rag_documents where entity_type='verse' and entity_id='7'"))
      assert.are.equal(1, H.scalar(url, "select count(*) from rag_documents where entity_type='verse' and entity_id='8'"))
    end)

    it("dry-run: estimativa no JSON, nenhuma tabela muda, nenhuma requisição ao provedor", function()
      H.psql(url, "update verses set text = text || ' novo' where id between 20 and 24")
      local before, requests = snapshot(), H.embed_requests()
      local code, out, err, report = H.ragops(url, "backfill --dry-run", { report = true })
      assert.are.equal(0, code, err)
      assert.are.equal(true, report.dry_run)
      local e = report.estimate
      assert.are.equal(199 + 30, e.documents)
      assert.are.equal(5, e.per_entity_type.verse.would_embed)
      assert.is_true(e.tokens > 0)
      assert.are.equal(1, e.requests)
      assert.are.equal(1, e.batches)
      assert.are.equal(199 + 30 - 5, e.skipped_unchanged)
      assert.is_number(e.cost_usd)
      assert.is_number(e.duration_s)
      assert.is_true(e.chunks > e.documents)
      assert.matches("SIMULAÇÃO", out)
      assert.are.same(before, snapshot())
      assert.are.equal(requests, H.embed_requests())
    end)

    it("dry-run com preço: custo = tokens x preço", function()
      local cfg = H.config_file([[provider = { model = "text-embedding-3-small", price_per_1m_tokens = { ["text-embedding-3-small"] = 0.02 } }]])
      local code, _, err, report = H.ragops(url, "reindex --overwrite --dry-run --config " .. H.q(cfg), { report = true })
      os.remove(cfg)
      assert.are.equal(0, code, err)
      assert.is_true(report.estimate.tokens > 1000)
      assert.are.near(report.estimate.tokens / 1e6 * 0.02, report.estimate.cost_usd, 1e-9)
    end)

    it("dry-run de um plano cujo SQL tenta gravar: código 2 e nada gravado", function()
      H.psql(url, [[create table if not exists spy(x int);
        create or replace function grava() returns int language sql as 'insert into spy values (1) returning 1']])
      local path = H.plan_file([[
        return plan { name = "espiao", sources = { source "verse" {
          sql = "select v.id, v.text, grava() as g from verses v", key = "id",
          document = function(r) return { content = r.text } end } } }]])
      local before = snapshot()
      local code, _, err = H.ragops(url, "run " .. H.q(path) .. " --dry-run")
      os.remove(path)
      assert.are.equal(2, code)
      assert.matches("tentou gravar", err)
      assert.are.equal(0, H.scalar(url, "select count(*) from spy"))
      assert.are.same(before, snapshot())
    end)

    describe("filtros inválidos: código 2, mensagem em pt-BR, nada gravado", function()
      local cases = {
        { "reindex --entity-type livro", "livro" },
        { "reindex --entity-id 5", "exige %-%-entity%-type" },
        { "reindex --entity-type verse --since 2024-02-30", "dia inválido" },
        { "reindex --entity-type verse --since ontem", "ISO 8601" },
        { "reindex --entity-type verse --since 2024-05-01 --until 2024-02-01", "anterior" },
        { "reindex --overwrite --only-missing", "mutuamente exclusivas" },
      }
      for _, case in ipairs(cases) do
        it(case[1], function()
          local before = snapshot()
          local code, _, err = H.ragops(url, case[1])
          assert.are.equal(2, code)
          assert.matches(case[2], err)
          assert.are.same(before, snapshot())
        end)
      end
    end)

    describe("sandbox do plano", function()
      local escapes = {
        { "os.execute", [[os.execute("touch /tmp/ragops-escape")]] },
        { "io", [[io.open("/tmp/ragops-escape", "w")]] },
        { "require", [[require("ffi")]] },
        { "load", [[load("return 1")]] },
        { "debug", [[debug.getinfo(1)]] },
        { "package", [[package.loadlib("libc.so.6", "system")]] },
        { "dentro de document()", nil },
      }
      for _, case in ipairs(escapes) do
        it("bloqueia " .. case[1], function()
          os.remove("/tmp/ragops-escape")
          local body
          if case[2] then
            body = case[2] .. "\nreturn plan { name = 'x', sources = { source 'verse' { sql = 'select id, text from verses', key = 'id', document = function(r) return { content = r.text } end } } }"
          else
            body = [[return plan { name = 'x', sources = { source 'verse' { sql = 'select id, text from verses where id = 1', key = 'id',
              document = function(r) os.execute("touch /tmp/ragops-escape"); return { content = r.text } end } } }]]
          end
          local path = H.plan_file(body)
          local code, _, err = H.ragops(url, "run " .. H.q(path) .. " --dry-run")
          os.remove(path)
          assert.is_nil(io.open("/tmp/ragops-escape", "r"), "o plano escapou do sandbox")
          if case[2] then
            assert.are.equal(2, code)
            assert.matches("não é permitido", err)
          else
            -- A hook that misbehaves fails its entity (dead letter in real runs), never escapes.
            assert.matches("não é permitido", err)
          end
        end)
      end
      it("recusa plano em bytecode", function()
        local path = os.tmpname() .. ".lua"
        local f = assert(io.open(path, "wb"))
        f:write(string.dump(function() return 1 end))
        f:close()
        local code, _, err = H.ragops(url, "run " .. H.q(path))
        os.remove(path)
        assert.are.equal(2, code)
        assert.matches("bytecode", err)
      end)
    end)
  end)
end)
