-- Integration (issue 19, point 17): a model rollback never silently serves a
-- table that missed the changes written to the live one since the switch.
-- After `model switch`, the previous table (the rollback target) is not
-- written; `model status` says whether it is in step with the live table
-- (entities new, deleted or changed since the switch), `model rollback`
-- refuses (exit 2) while it is not and says what to run, `backfill --target
-- previous` catches it up with the previous model (its provider recorded at
-- the switch, whatever the configuration says now), and `--force` rolls back
-- anyway, in the operator's log. Once per storage.
local H = require "tests.integration.helper"

local LIVE_MODEL, NEW_MODEL = "ragops-hash-1536", "ragops-hash-256"

-- Requests an extra embed-server answered (GET /stats).
local function requests_of(server)
  local code, out = H.sh("curl -fsS " .. H.q(server.base .. "/stats"))
  assert(code == 0, "GET /stats falhou")
  return require("cjson").decode(out).requests
end

H.each_storage(function()
  describe("model rollback com a tabela anterior desatualizada", function()
    local url, server, new_cfg

    local function ragops(args, opts) return H.ragops(url, args, opts) end
    -- ragops with the configuration of the new model (after the switch).
    local function as_new(args, opts)
      opts = opts or {}
      opts.env = { RAGOPS_EMBED_URL = server.url }
      return H.ragops(url, args .. " --config " .. H.q(new_cfg), opts)
    end
    local function ok(code, out, err)
      assert.are.equal(0, code, (out or "") .. (err or ""))
      return out, err
    end
    local function model_of(table_name)
      return H.scalar(url, ("select string_agg(distinct embedding_model, ',') from %s"):format(table_name))
    end

    setup(function()
      url = H.migrated_db("ragops_it_model_rollback", 40, 4)
      ok(ragops("backfill --quiet"))
      server = H.start_embed_server("--dim 256")
      new_cfg = H.config_file(([[provider = { model = %q, dim = 256 }]]):format(NEW_MODEL))
      ok(ragops(("model prepare --model %s --dim 256 --set provider.url=%s"):format(NEW_MODEL, server.url)))
      ok(ragops("backfill --target shadow --quiet"))
      ok(ragops("model switch --force"))
    end)

    teardown(function()
      H.stop_embed_server(server)
      os.remove(new_cfg)
    end)

    it("recusa o rollback enquanto a anterior não alcança a atual, e o backfill --target previous a alcança", function()
      local out = ok(as_new("model status"))
      assert.matches("anterior em dia com a atual: sim", out, 1, true)

      -- Changes the new model's follower would apply to the live table only.
      H.psql(url, [[update verses set text = 'Texto novo do versiculo cinco', updated_at = now() where id = 5;
                    update verses set book = 'Rev', updated_at = now() where id = 6;
                    delete from verses where id = 8;
                    insert into verses values (1000, 'Gen', 9, 9, 'Versiculo novo mil', now())]])
      ok(as_new("backfill --quiet"))
      assert.are.equal(NEW_MODEL, model_of("rag_documents"))

      out = ok(as_new("model status"))
      assert.matches("anterior em dia com a atual: não: 4 entidade%(s%) diferem entre a atual e a anterior desde "
        .. "a troca de %d%d%d%d%-%d%d%-%d%d", out)
      assert.matches("(1 nova(s) na atual, 1 apagada(s) da atual, 2 com conteúdo, metadados ou data diferentes)",
        out, 1, true)

      local code, rout, rerr = as_new("model rollback")
      assert.are.equal(2, code, rout .. rerr)
      assert.matches("rollback recusado: a tabela anterior rag_documents__previous não acompanhou", rerr, 1, true)
      assert.matches("`ragops backfill --target previous`", rerr, 1, true)
      assert.matches("nada foi alterado", rerr, 1, true)
      assert.are.equal(NEW_MODEL, model_of("rag_documents"))
      assert.are.equal(LIVE_MODEL, model_of("rag_documents__previous"))

      -- The catch-up runs with the previous model and its own server (the
      -- configuration and RAGOPS_EMBED_URL now point at the new one).
      local new_requests = requests_of(server)
      local _, _, _, report = as_new("backfill --target previous --quiet", { report = true })
      assert.is_table(report)
      assert.are.equal(0, report.failed)
      assert.are.equal(2, report.embedded)
      assert.are.equal(1, report.deleted)
      assert.are.equal(new_requests, requests_of(server), "nenhum pedido ao servidor do modelo novo")
      assert.are.equal(LIVE_MODEL, model_of("rag_documents__previous"))
      assert.are.equal(1536, H.scalar(url, [[select array_length(embedding::real[], 1) from rag_documents__previous
                                               where entity_type = 'verse' and entity_id = '1000']]))
      out = ok(as_new("model status"))
      assert.matches("anterior em dia com a atual: sim", out, 1, true)

      out = ok(as_new("model rollback"))
      assert.matches("rollback concluído: rag_documents volta a servir o modelo " .. LIVE_MODEL, out, 1, true)
      assert.are.equal(LIVE_MODEL, model_of("rag_documents"))
      assert.are.equal("Texto novo do versiculo cinco", H.scalar(url, [[select content from rag_documents
                                                                          where entity_type = 'verse' and entity_id = '5']]))
      assert.are.equal(0, H.scalar(url, "select count(*) from rag_documents where entity_type = 'verse' and entity_id = '8'"))
    end)

    it("--force volta mesmo assim, e diz isso no log do operador", function()
      ok(ragops("model switch --force"))
      assert.are.equal(NEW_MODEL, model_of("rag_documents"))
      H.psql(url, "update verses set text = 'Outra mudança', updated_at = now() where id = 9")
      ok(as_new("backfill --quiet"))
      local code, _, err = as_new("model rollback")
      assert.are.equal(2, code, err)
      assert.matches("1 entidade(s) diferem entre a atual e a anterior", err, 1, true)
      local _, ferr = ok(as_new("model rollback --force"))
      assert.matches("rollback forçado (--force) na tabela rag_documents, apesar de: a tabela anterior", ferr, 1, true)
      assert.are.equal(LIVE_MODEL, model_of("rag_documents"))
    end)

    it("--target previous sem tabela anterior recusa com 2", function()
      local code, _, err = ragops("backfill --target previous")
      assert.are.equal(2, code, err)
      assert.matches("--target previous: não há tabela anterior guardada para rag_documents", err, 1, true)
    end)
  end)
end)
