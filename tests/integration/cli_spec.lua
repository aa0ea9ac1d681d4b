-- Integration: the command line through the ragops binary on real services:
-- empty filters, --set keys, operating limits, missing engine tables, the
-- help of each subcommand. "Nothing written" is checked on the database.
local H = require "tests.integration.helper"

describe("linha de comando", function()
  local url

  -- Documents, their hashes and the run records: what a refused command must not change.
  local function snapshot()
    return H.psql(url, [[select (select count(*) from rag_documents), (select count(*) from ragops_runs),
      (select md5(coalesce(string_agg(content_hash || entity_id || indexed_at::text, ','
                  order by entity_type, entity_id, chunk_index), '')) from rag_documents)]])[1]
  end

  setup(function()
    url = H.migrated_db("ragops_it_cli", 40, 12)
    local code, _, err = H.ragops(url, "backfill")
    assert.are.equal(0, code, err)
  end)

  after_each(H.cleanup)

  describe("filtros vazios saem com 2 sem gravar nada", function()
    for _, args in ipairs({
      [[reindex --entity-type verse --entity-id '' --overwrite]],
      [[reindex --entity-type verse --entity-id , --overwrite]],
      [[reindex --entity-type verse --entity-id= --overwrite]],
      [[reindex --entity-type '' --overwrite]],
      [[reindex --entity-type , --overwrite]],
      [[backfill --set entity_type=verse --set entity_id= --overwrite]],
      [[run plans/reindex.lua --set entity_type=, --overwrite]],
      [[failures list --entity-type '']],
      [[failures retry --entity-type ,]],
    }) do
      it(args, function()
        local before = snapshot()
        local code, _, err = H.ragops(url, args)
        assert.are.equal(2, code, err)
        assert.matches("ragops: %-%-entity%-[a-z]+ vazio", err)
        assert.same(before, snapshot())
      end)
    end
  end)

  it("--set com chave desconhecida sai com 2 listando as válidas, sem gravar nada", function()
    local before = snapshot()
    local code, _, err = H.ragops(url, "backfill --overwrite --set nonsense=1")
    assert.are.equal(2, code, err)
    assert.matches("--set nonsense: chave desconhecida", err, 1, true)
    assert.matches("chaves válidas: batch.in_flight, batch.size, budget.usd, embed.mode, entity_id", err, 1, true)
    assert.same(before, snapshot())
  end)

  it("limite de operação inválido sai com 2 com a mensagem da chave do plano", function()
    local before = snapshot()
    local code, _, err = H.ragops(url, "backfill --overwrite --in-flight 0")
    assert.are.equal(2, code, err)
    assert.matches('chave "batch.in_flight": valor 0 inválido; esperado um inteiro entre 1 e 64', err, 1, true)
    assert.same(before, snapshot())
  end)

  it("--set batch.in_flight e as flags valem, e aparecem no log e no relatório", function()
    local code, _, err, report = H.ragops(url,
      "backfill --set batch.in_flight=3 --batch-size 7 --max-retries 2 --timeout 30", { report = true })
    assert.are.equal(0, code, err)
    assert.matches("lotes de 7, 3 em paralelo, sem limite de entidades, 2 tentativa%(s%) por pedido, "
      .. "tempo limite de 30 s", err)
    assert.are.equal(7, report.limits.batch_size)
    assert.are.equal(3, report.limits.in_flight)
    assert.are.equal(2, report.limits.max_retries)
    assert.are.equal(30, report.limits.timeout_s)
  end)

  it("--limit N: no máximo N entidades por fonte, sem remover órfãos, numa execução própria", function()
    H.psql(url, "delete from verses where id = 40")
    local runs_before = H.scalar(url, "select count(*) from ragops_runs")
    local code, out, err, report = H.ragops(url, "backfill --overwrite --limit 5 --batch-size 2", { report = true })
    assert.are.equal(0, code, err)
    assert.are.equal(10, report.processed) -- 5 verses + 5 fortunes
    assert.are.equal(5, report.per_entity_type.verse.processed)
    assert.are.equal(0, report.deleted)
    assert.are.equal(5, report.limits.limit)
    assert.matches("no máximo 5 entidade%(s%) por fonte", out)
    assert.are.equal(1, H.scalar(url, "select count(*) from rag_documents where entity_type = 'verse' and entity_id = '40'"))
    assert.are.equal(runs_before + 1, H.scalar(url, "select count(*) from ragops_runs"))
    assert.are.equal(5, H.scalar(url, "select params->>'limit' from ragops_runs order by id desc limit 1"))
    -- the full run afterwards removes the orphan
    code, _, err, report = H.ragops(url, "backfill", { report = true })
    assert.are.equal(0, code, err)
    assert.are.equal(1, report.deleted)
  end)

  it("--limit não combina com --scale-out", function()
    local code, _, err = H.ragops(url, "backfill --limit 5 --scale-out")
    assert.are.equal(2, code)
    assert.matches("--scale-out não combina com --limit", err, 1, true)
  end)

  it("failures retry --overwrite é aceito (como diz o runbook)", function()
    local code, out, err = H.ragops(url, "failures retry --overwrite")
    assert.are.equal(0, code, err)
    assert.matches("nenhuma falha em aberto", out)
  end)

  describe("ajuda", function()
    for _, args in ipairs({ "migrate", "run", "backfill", "reindex", "failures", "failures list",
                            "failures retry", "index", "index create", "index drop", "index status",
                            "validate" }) do
      it(("ragops %s --help sai com 0 e mostra a ajuda do comando"):format(args), function()
        local code, out, err = H.ragops(url, args .. " --help")
        assert.are.equal(0, code, err)
        assert.matches("^Uso: ragops " .. args:gsub("%-", "%%-"), out)
      end)
    end

    it("ragops sem argumentos mostra a ajuda no stderr e sai com 2", function()
      local code, out, err = H.ragops(url, "")
      assert.are.equal(2, code)
      assert.are.equal("", out)
      assert.matches("ragops COMANDO --help", err, 1, true)
    end)

    it("failures list --help lista --id; failures retry --help lista --run", function()
      local _, list = H.ragops(url, "failures list --help")
      local _, retry = H.ragops(url, "failures retry -h")
      assert.matches("--id N", list, 1, true)
      assert.matches("--run ID", retry, 1, true)
    end)
  end)
end)

describe("banco sem as tabelas do ragops", function()
  local url

  setup(function()
    url = H.fresh_db("ragops_it_cli_nomigrate")
    H.load_sources(url, 5, 2)
  end)

  for _, args in ipairs({ "failures list", "failures retry", "backfill", "reindex --entity-type verse",
                          "run plans/backfill.lua", "validate" }) do
    it(("ragops %s sai com 2 pedindo ragops migrate"):format(args), function()
      local code, _, err = H.ragops(url, args)
      assert.are.equal(2, code, err)
      assert.matches("as tabelas do ragops não existem neste banco; execute `ragops migrate` antes", err, 1, true)
      assert.are.equal(0, H.scalar(url, "select count(*) from pg_tables where tablename like 'ragops%' or tablename = 'rag_documents'"))
    end)
  end

  it("ragops index status sai com 2 pedindo ragops migrate", function()
    local code, _, err = H.ragops(url, "index status")
    assert.are.equal(2, code, err)
    assert.matches("execute `ragops migrate` antes", err, 1, true)
  end)

  it("uma versão antiga do esquema também pede ragops migrate", function()
    local old = H.fresh_db("ragops_it_cli_oldschema")
    H.psql(old, [[create table ragops_schema_version (version int primary key, description text not null,
                   applied_at timestamptz not null default now());
                  insert into ragops_schema_version values (1, 'v1', now())]])
    local code, _, err = H.ragops(old, "failures list")
    assert.are.equal(2, code, err)
    assert.matches("estão na versão 1, mas esta versão do ragops precisa da %d+; execute `ragops migrate` antes", err)
  end)
end)
