-- Integration: the blue/green model change end to end (ragops model prepare,
-- backfill/index --target shadow, compare, switch, rollback, drop-previous)
-- on a real PostgreSQL with two embed-servers (the live model at 1536
-- dimensions, the new one at 256), once per storage, while a client queries
-- the live name in a loop: it never sees an error or two models in one answer.
-- Each refusal: exit code 2 and its pt-BR text.
local H = require "tests.integration.helper"

local LIVE_MODEL, NEW_MODEL = "ragops-hash-1536", "ragops-hash-256"

-- text as a Lua pattern matching itself.
local function plain(text) return (text:gsub("%p", "%%%0")) end

-- A golden file whose queries are exactly some stored verses' text.
local function golden_file(url, ids, compare)
  local parts = { "return {", "  k = 5,", "  compare = " .. compare .. ",", "  queries = {" }
  for _, id in ipairs(ids) do
    parts[#parts + 1] = ("    { query = %q, expect = { { entity_type = \"verse\", entity_id = %q } } },")
      :format(H.scalar(url, "select text from verses where id = " .. id), tostring(id))
  end
  parts[#parts + 1] = "  },\n}\n"
  return H.plan_file(table.concat(parts, "\n"))
end

-- A shell loop querying the live name until `stop` exists; one line per
-- answer: its distinct models, comma-separated, or ERRO and psql's message.
local function start_reader(url)
  local log, stop = os.tmpname(), os.tmpname()
  os.remove(stop)
  local sql = "select coalesce(string_agg(distinct embedding_model, ','), '-') from "
    .. "(select entity_id, embedding_model from rag_documents order by entity_type, entity_id, chunk_index limit 10) s"
  local loop = ("while [ ! -f %s ]; do psql -X -At -d %s -c %s >>%s 2>&1 || echo ERRO >>%s; done")
    :format(H.q(stop), H.q(url), H.q(sql), H.q(log), H.q(log))
  os.execute(("sh -c %s >/dev/null 2>&1 &"):format(H.q(loop)))
  return { log = log, stop = stop }
end

-- Holds the advisory lock (key1, key2) from a psql session in the
-- background (for 10 s at most) until release() terminates it.
local function hold_lock(url, key1, key2)
  os.execute(("psql -X -q -d %s -c %s >/dev/null 2>&1 &"):format(H.q(url),
    H.q(("select pg_advisory_lock(%s, %s), pg_sleep(10)"):format(key1, key2))))
  local held = ("from pg_locks where locktype = 'advisory' and granted and classid = %d"):format(key1)
  for _ = 1, 200 do
    if H.scalar(url, "select count(*) " .. held) > 0 then break end
    H.sleep(0.05)
  end
  return function() H.psql(url, "select pg_terminate_backend(pid) " .. held) end
end

-- Stops the reader; returns its answers (lines).
local function stop_reader(reader)
  local f = io.open(reader.stop, "w"); f:close()
  H.sleep(0.3)
  local lines = {}
  for line in H.read_all(reader.log):gmatch("[^\n]+") do lines[#lines + 1] = line end
  os.remove(reader.log); os.remove(reader.stop)
  return lines
end

H.each_storage(function(storage)
  describe("ragops model", function()
    local url, server, new_cfg

    local function ragops(args, opts) return H.ragops(url, args, opts) end

    local function refused(args, pattern)
      local code, out, err = ragops(args)
      assert.are.equal(2, code, out .. err)
      assert.matches(pattern, err)
      return err
    end

    setup(function()
      url = H.migrated_db("ragops_it_model", 120, 10)
      local code, _, err = ragops("backfill --quiet")
      assert.are.equal(0, code, err)
      server = H.start_embed_server("--dim 256")
      new_cfg = H.config_file(([[provider = { model = %q, dim = 256 }]]):format(NEW_MODEL))
    end)

    teardown(function()
      H.stop_embed_server(server)
      os.remove(new_cfg)
    end)

    it("sem sombra: --target shadow, switch, rollback e drop-previous recusam", function()
      refused("backfill --target shadow", "%-%-target shadow: não há sombra preparada para a tabela rag_documents")
      refused("index status --target shadow", "não há sombra preparada")
      refused("model switch", "troca recusada: não há sombra preparada")
      refused("model rollback", "rollback recusado: não há tabela anterior")
      refused("model drop-previous", "drop%-previous recusado: não há tabela anterior")
      refused("backfill --target azul", "%-%-target espera live ou shadow")
      refused("model prepare --model novo --dim abc", "%-%-dim espera um inteiro entre 1 e 16000")
      refused("model prepare --model novo", "%-%-dim é obrigatório")
      refused("model prepare --model novo --dim 8 --set provider.url=ftp://x", "provider.url espera um endereço http")
      refused("model prepare --model novo --dim 8 --set provider.api_key=k", "chave desconhecida para `model prepare`")
      local golden = golden_file(url, { 3 }, "{ max_recall_drop = 0.02 }")
      refused("model compare " .. H.q(golden), "não há sombra preparada")
      refused("model compare " .. H.q(golden) .. " --k x", "%-%-k espera um inteiro")
      refused("model compare " .. H.q(golden) .. " --ef-search 0", "%-%-ef%-search espera um inteiro entre 1 e 1000")
      os.remove(golden)
      golden = golden_file(url, { 3 }, "{ max_recal_drop = 0.02 }")
      refused("model compare " .. H.q(golden), 'chave "compare%.max_recal_drop": desconhecida; chaves válidas')
      os.remove(golden)
    end)

    it("prepare -> backfill da sombra -> compare -> switch -> rollback -> switch, com a API lendo", function()
      local live_fp = H.fingerprint(url)
      local code, out, err = ragops(("model prepare --model %s --dim 256 --set provider.url=%s")
        :format(NEW_MODEL, server.url))
      assert.are.equal(0, code, out .. err)
      assert.matches("sombra rag_documents__shadow criada", out)
      assert.are.equal(storage == "vector" and "vector(256)" or "real[]", H.column_type(url, "rag_documents__shadow"))
      refused("model prepare --model outro --dim 8", "já existe uma sombra")

      -- Gates: an empty shadow covers nothing.
      refused("model switch", "a sombra não cobre 130 de 130 entidade%(s%)")

      -- Dry run first, then the shadow's backfill through the same runner.
      local _, _, _, dry = ragops("backfill --target shadow --dry-run --quiet", { report = true })
      assert.is_true(dry.dry_run)
      assert.are.equal(0, H.scalar(url, "select count(*) from rag_documents__shadow"))
      local rep
      code, out, err, rep = ragops("backfill --target shadow --quiet", { report = true })
      assert.are.equal(0, code, out .. err)
      assert.are.equal(0, rep.failed)
      assert.is_true(rep.embedded > 0)
      assert.are.equal(NEW_MODEL, H.scalar(url, "select string_agg(distinct embedding_model, ',') from rag_documents__shadow"))
      assert.are.equal(live_fp, H.fingerprint(url), "a tabela atual não muda")
      assert.are.equal(1, H.scalar(url, [[select count(*) from ragops_runs where params ->> 'target' = 'shadow'
                                            and status = 'done']]))
      if storage == "vector" then
        code, out, err = ragops("index create --target shadow --lists 4 --dim 256")
        assert.are.equal(0, code, out .. err)
        assert.matches("rag_documents__shadow_embedding_ivfflat criado", out)
      end
      refused("model switch", "nunca foi comparada")

      -- A worse shadow fails the compare (exit 1) and the switch.
      H.psql(url, [[create table saved as select id, embedding from rag_documents__shadow;
        update rag_documents__shadow set embedding = (select embedding from rag_documents__shadow
          where entity_type = 'fortune' limit 1) where entity_type = 'verse' and entity_id in ('3', '7')]])
      local golden = golden_file(url, { 3, 7, 11, 40 }, "{ max_recall_drop = 0.1, max_mrr_drop = 0.1, max_p95_ms = 60000 }")
      local report
      code, out, err, report = ragops("model compare " .. H.q(golden), { report = true })
      assert.are.equal(1, code, out .. err)
      assert.is_false(report.passed)
      assert.matches("recall@k caiu 0,500", out)
      assert.matches("resultado: reprovado", out)
      refused("model switch", "a última comparação reprovou a sombra")

      -- Fixed, but written after the compare: compare again.
      H.psql(url, [[update rag_documents__shadow d set embedding = s.embedding, indexed_at = now()
        from saved s where s.id = d.id; drop table saved]])
      refused("model switch", "gravada depois da última comparação")
      code, out, err, report = ragops("model compare " .. H.q(golden), { report = true })
      assert.are.equal(0, code, out .. err)
      assert.is_true(report.passed)
      assert.are.equal(1, report.live.summary.mrr or report.live.summary.recall_at_k)
      assert.matches("resultado: aprovado", out)
      -- Each side's search plan is shown (real[]: the exact scan in C).
      assert.matches("busca na atual: ", out, 1, true)
      assert.matches("busca na sombra: ", out, 1, true)
      assert.is_table(report.shadow.plan)

      -- Source changes applied to the live table only (as the sync does): the
      -- shadow is stale; the catch-up pass applies the change and the deletion.
      H.psql(url, [[update verses set text = 'And the new word came', updated_at = now() where id = 5;
                    delete from verses where id = 6]])
      code, _, err = ragops("backfill --quiet")
      assert.are.equal(0, code, err)
      refused("model switch", "desatualizada em 1 entidade")
      _, _, _, rep = ragops("backfill --target shadow --quiet", { report = true })
      assert.are.equal(1, rep.embedded, "a passada de alcance só regera o que mudou")
      assert.are.equal(1, rep.deleted)
      assert.are.equal(0, H.scalar(url, "select count(*) from rag_documents__shadow where entity_id = '6' "
        .. "and entity_type = 'verse'"))
      code, out, err = ragops("model compare " .. H.q(golden))
      assert.are.equal(0, code, out .. err)

      -- Another model command holds the lock: the switch is refused.
      local release = hold_lock(url, 7265680, "hashtext('rag_documents')")
      refused("model switch", "outro comando `ragops model` está em andamento")
      release()
      -- A run in progress on the live table (a sync follower): refused too.
      local run_id = H.scalar(url, [[insert into ragops_runs (plan, status) values ('sync', 'running')
                                      returning id]])
      release = hold_lock(url, 7265677, run_id)
      refused("model switch", "1 execução%(ões%) em andamento na tabela atual")
      release()
      H.psql(url, "update ragops_runs set status = 'interrupted' where id = " .. run_id)

      local reader = start_reader(url)
      H.sleep(0.3)
      code, out, err = ragops("model switch")
      assert.are.equal(0, code, out .. err)
      assert.matches("troca concluída: rag_documents agora serve o modelo " .. plain(NEW_MODEL), out)
      assert.matches(plain('provider.model = "' .. NEW_MODEL .. '", provider.dim = 256'), out)
      H.sleep(0.3)
      code, out, err = ragops("model rollback")
      assert.are.equal(0, code, out .. err)
      assert.matches("rollback concluído: rag_documents volta a servir o modelo " .. plain(LIVE_MODEL), out)
      -- The configuration already names the model the table serves again.
      assert.matches("a configuração já usa esse modelo", out, 1, true)
      assert.is_nil(out:find("ajuste a configuração", 1, true))
      H.sleep(0.3)
      code, out, err = ragops("model switch")
      assert.are.equal(0, code, out .. err)
      H.sleep(0.3)
      local answers = stop_reader(reader)
      assert.is_true(#answers > 3, "o cliente consultou durante as trocas")
      local seen = {}
      for _, line in ipairs(answers) do
        assert.is_nil(line:find("ERRO", 1, true), "erro no cliente: " .. line)
        assert.is_nil(line:find(",", 1, true), "resposta com dois modelos: " .. line)
        seen[line] = true
      end
      assert.is_true(seen[NEW_MODEL], "o cliente viu o modelo novo")

      -- The live name serves the new model, with the live index names.
      assert.are.equal(NEW_MODEL, H.scalar(url, "select string_agg(distinct embedding_model, ',') from rag_documents"))
      assert.are.equal(LIVE_MODEL, H.scalar(url, "select string_agg(distinct embedding_model, ',') from rag_documents__previous"))
      assert.are.equal("rag_documents", H.scalar(url, [[select conrelid::regclass::text from pg_constraint
                                                        where conname = 'rag_documents_pkey']]))
      assert.are.equal(0, H.scalar(url, "select count(*) from pg_class where relname like 'rag_documents__shadow%'"))
      if storage == "vector" then
        assert.are.equal("rag_documents", H.scalar(url, [[select indrelid::regclass::text from pg_index
          where indexrelid = 'rag_documents_embedding_ivfflat'::regclass]]))
      end

      -- The old configuration would mix two models: refused; the new one runs.
      refused("backfill", storage == "vector" and "provider.dim = 1536" or "misturaria dois modelos")
      if storage == "vector" then refused("backfill", "`ragops model status` mostra qual é") end
      code, _, err = H.ragops(url, "backfill --quiet --config " .. H.q(new_cfg),
        { env = { RAGOPS_EMBED_URL = server.url } })
      assert.are.equal(0, code, err)

      code, out, err = ragops("model status")
      assert.are.equal(0, code, err)
      assert.matches("atual%s+rag_documents: modelo " .. plain(NEW_MODEL), out)
      assert.matches("anterior rag_documents__previous: modelo " .. plain(LIVE_MODEL), out)

      code, out, err = ragops("model drop-previous")
      assert.are.equal(0, code, out .. err)
      assert.are.equal(0, H.scalar(url, "select count(*) from pg_class where relname = 'rag_documents__previous'"))
      refused("model drop-previous", "não há tabela anterior")

      -- --force skips the gates (an empty shadow here), in the log and the record.
      code, out, err = ragops(("model prepare --model %s --dim 1536 --config %s"):format(LIVE_MODEL, H.q(new_cfg)))
      assert.are.equal(0, code, out .. err)
      refused("model switch --config " .. H.q(new_cfg), "não cobre")
      code, out, err = ragops("model switch --force --config " .. H.q(new_cfg))
      assert.are.equal(0, code, out .. err)
      assert.matches("troca forçada %(%-%-force%) na tabela rag_documents, apesar de: a sombra não cobre", err)
      assert.are.equal("t", H.scalar(url, [[select forced from ragops_model_targets
                                             where live_table = 'rag_documents' and role = 'live']]))
      os.remove(golden)
    end)
  end)
end)
