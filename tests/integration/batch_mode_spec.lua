-- batch_mode_spec.lua (issue 24): the Batch API mode end to end, on both
-- storages, against the embed-server's simulated Batch API. A backfill in
-- batch mode gives the table of the online backfill (keys, hashes,
-- vectors); a kill -9 while batches are in progress, then the same command,
-- uploads no part twice (the server's duplicate_uploads and files_uploaded)
-- and ends with the same table; expired lines are resubmitted and refused
-- ones become dead letters; a row updated between submission and collection
-- ends with the vector of its new text; --detach exits 0 and `ragops batch
-- collect` finishes the run.
local H = require "tests.integration.helper"
local cjson = require "cjson"

local PLAN = [[
return plan { name = "lotes", batch = { size = 16, in_flight = 2 }, chunking = { max_chars = 1500, overlap = 100 },
  embed = { mode = %q, poll_s = 0.1, poll_max_s = 0.3, max_resubmissions = %d },
  sources = {
    source "verse" { sql = "select id, text, updated_at from verses", key = "id", updated_at = "updated_at",
      document = function(r) return { content = r.text } end },
    source "fortune" { sql = "select id, text, updated_at from fortunes", key = "id", updated_at = "updated_at",
      document = function(r) return { content = r.text } end },
  } }
]]

local function stats(server)
  local code, out = H.sh("curl -fsS " .. H.q(server.base .. "/stats"))
  assert(code == 0, "GET /stats falhou")
  return cjson.decode(out)
end

-- A config whose parts hold at most max_inputs inputs (several parts).
local function config(server, max_inputs, extra)
  return H.config_file(([[provider = { api = "openai", url = %q, model = "ragops-hash-1536", dim = 1536,
    limits = { batch_max_inputs = %d }%s }]]):format(server.url, max_inputs or 60, extra and (", " .. extra) or ""))
end

local function env_for(server, dir)
  return { RAGOPS_EMBED_URL = server.url, RAGOPS_BATCH_DIR = dir }
end

local function new_dir()
  local dir = os.tmpname()
  os.remove(dir)
  return dir
end

local function command(mode, resubmissions, cfg, extra)
  local plan = H.plan_file(PLAN:format(mode, resubmissions or 2))
  return ("backfill --plan %s --config %s %s"):format(H.q(plan), H.q(cfg), extra or ""), plan
end

H.each_storage(function()
  describe("modo de lotes (issue 24)", function()
    local reference
    after_each(H.cleanup)

    setup(function()
      local server = H.start_embed_server("")
      local cfg = config(server)
      local url = H.migrated_db("lote_ref", 120, 40)
      local args = command("online", 2, cfg)
      local code, _, err = H.ragops(url, args, { env = { RAGOPS_EMBED_URL = server.url } })
      assert.are.equal(0, code, err)
      reference = H.fingerprint(url)
      H.stop_embed_server(server)
    end)

    it("um backfill em lotes dá a mesma tabela do online, em várias partes, cada uma enviada uma vez", function()
      local server = H.start_embed_server("--batch-latency-s 0.3")
      local cfg, dir = config(server, 60), new_dir()
      local url = H.migrated_db("lote_igual", 120, 40)
      local report = os.tmpname()
      local code, _, err = H.ragops(url, (command("batch", 2, cfg, "--report-json " .. H.q(report))),
        { env = env_for(server, dir) })
      local s = stats(server)
      H.stop_embed_server(server)
      assert.are.equal(0, code, err)
      -- The report counts what the collections wrote (processed = succeeded + ...).
      local r = cjson.decode(io.open(report):read("*a"))
      os.remove(report)
      assert.are.equal(160, r.processed)
      assert.are.equal(160, r.succeeded)
      assert.are.equal(tonumber(H.scalar(url, "select count(*) from rag_documents")), r.embedded)
      assert.is_true(r.tokens > 0, "tokens " .. tostring(r.tokens))
      assert.are.equal(s.batches_created, r.batch.uploads)
      assert.are.equal(reference, H.fingerprint(url), "a tabela difere da do backfill online")
      local parts = tonumber(H.scalar(url, "select count(*) from ragops_batches where batch_id is not null"))
      assert.is_true(parts >= 3, "partes: " .. parts)
      assert.are.equal(parts, s.files_uploaded)
      assert.are.equal(parts, s.batches_created)
      assert.are.equal(0, s.duplicate_uploads)
      assert.are.equal(0, tonumber(H.scalar(url, "select count(*) from ragops_batches where state <> 'collected'")))
      assert.are.equal("done", H.scalar(url, "select status from ragops_runs order by id desc limit 1"))
      assert.truthy(err:find("lote", 1, true), err)
    end)

    it("kill -9 com lotes em andamento: o mesmo comando não envia parte duas vezes e termina a tabela", function()
      local server = H.start_embed_server("--batch-latency-s 2")
      local cfg, dir = config(server, 60), new_dir()
      local url = H.migrated_db("lote_kill", 120, 40)
      local args = command("batch", 2, cfg)
      local job = H.ragops_background(url, args, { env = env_for(server, dir) })
      local seen = false
      for _ = 1, 300 do
        if stats(server).batches_created >= 2 then seen = true; break end
        H.sleep(0.05)
      end
      assert.is_true(seen, "nenhum lote criado")
      H.sh("kill -9 " .. job.pid)
      H.wait_gone(job.pid, 10)
      local in_flight = tonumber(H.scalar(url, [[select count(*) from ragops_batches
        where state in ('validating', 'in_progress', 'finalizing')]]))
      assert.is_true(in_flight >= 1, "nenhum lote em andamento no banco")
      local code, _, err = H.ragops(url, args, { env = env_for(server, dir) })
      local s = stats(server)
      H.stop_embed_server(server)
      assert.are.equal(0, code, err)
      assert.are.equal(0, s.duplicate_uploads, "uma parte foi enviada duas vezes")
      local uploaded = tonumber(H.scalar(url, "select count(*) from ragops_batches where input_file_id is not null"))
      assert.are.equal(uploaded, s.files_uploaded)
      assert.are.equal(reference, H.fingerprint(url))
    end)

    it("linhas expiradas voltam num lote novo; recusadas viram fila de falhas", function()
      local server = H.start_embed_server("--batch-latency-s 0.2 --batch-expire-rate 0.3 --reject-pattern 'verse 1[0-9] of'")
      local cfg, dir = config(server, 200), new_dir()
      local url = H.migrated_db("lote_expira", 120, 40)
      local code, _, err = H.ragops(url, (command("batch", 10, cfg)), { env = env_for(server, dir) })
      local s = stats(server)
      H.stop_embed_server(server)
      local rejected = tonumber(H.scalar(url, [[select count(*) from verses where text ~ 'verse 1[0-9] of']]))
      assert.are.equal(rejected > 0 and 1 or 0, code, err)
      assert.is_true((s.batches_by_status.expired or 0) >= 1, "nenhum lote expirou")
      assert.is_true(tonumber(H.scalar(url, "select count(*) from ragops_batches")) > s.batches_by_status.expired,
        "nada reenviado")
      assert.are.equal(rejected, tonumber(H.scalar(url, [[select count(*) from ragops_failures
        where resolved_at is null and error_class = 'permanent' and http_status = 400]])))
      assert.are.equal(160 - rejected, tonumber(H.scalar(url, "select count(distinct (entity_type, entity_id)) from rag_documents")))
      -- failures retry reprocesses them online (a problem document does not wait 24 h), even in a batch plan.
      local online = H.start_embed_server("")
      local plan = H.plan_file(PLAN:format("batch", 10))
      local fcode, _, ferr = H.ragops(url, ("failures retry --plan %s --config %s"):format(H.q(plan), H.q(cfg)),
        { env = env_for(online, dir) })
      local o = stats(online)
      H.stop_embed_server(online)
      assert.are.equal(0, fcode, ferr)
      assert.are.equal(0, o.files_uploaded)
      assert.is_true(o.requests > 0)
      assert.are.equal(0, tonumber(H.scalar(url, "select count(*) from ragops_failures where resolved_at is null")))
    end)

    it("sem reenvios, o que expirou vai para a fila de falhas como batch_expired (o recusado ainda é isolado)", function()
      local server = H.start_embed_server("--batch-latency-s 0.2 --batch-expire-rate 0.3 --reject-pattern 'verse 1[0-9] of'")
      local cfg, dir = config(server, 500), new_dir()
      local url = H.migrated_db("lote_sem_reenvio", 60, 20)
      local code, _, err = H.ragops(url, (command("batch", 0, cfg)), { env = env_for(server, dir) })
      H.stop_embed_server(server)
      assert.are.equal(1, code, err)
      local expired = tonumber(H.scalar(url, [[select count(*) from ragops_failures
        where resolved_at is null and error_class = 'batch_expired']]))
      local refused = tonumber(H.scalar(url, [[select count(*) from ragops_failures
        where resolved_at is null and error_class = 'permanent' and http_status = 400]]))
      assert.is_true(expired >= 1, "nenhuma falha batch_expired")
      assert.is_true(refused >= 1 and refused <= 10, "recusados isolados: " .. refused)
      assert.are.equal(80, expired + refused
        + tonumber(H.scalar(url, "select count(distinct (entity_type, entity_id)) from rag_documents")))
    end)

    it("--batch-fail: o lote failed explica em pt-BR e os documentos vão para a fila de falhas", function()
      local server = H.start_embed_server("--batch-latency-s 0.2 --batch-fail")
      local cfg, dir = config(server, 500), new_dir()
      local url = H.migrated_db("lote_falha", 10, 5)
      local code, _, err = H.ragops(url, (command("batch", 2, cfg)), { env = env_for(server, dir) })
      H.stop_embed_server(server)
      assert.are.equal(1, code, err)
      local message = H.scalar(url, "select message from ragops_failures where error_class = 'batch_failed' limit 1")
      assert.truthy(message and message:find("falhou no provedor", 1, true), tostring(message))
      assert.are.equal(15, tonumber(H.scalar(url, "select count(*) from ragops_failures where resolved_at is null")))
    end)

    it("--detach sai com 0; uma linha alterada antes da coleta fica com o vetor do texto novo", function()
      local server = H.start_embed_server("--batch-latency-s 1")
      local cfg, dir = config(server, 60), new_dir()
      local url = H.migrated_db("lote_detach", 120, 40)
      local args, plan = command("batch", 2, cfg, "--detach")
      local code, _, err = H.ragops(url, args, { env = env_for(server, dir) })
      assert.are.equal(0, code, err)
      assert.truthy(err:find("ragops batch collect", 1, true), err)
      assert.are.equal("waiting", H.scalar(url, "select status from ragops_runs order by id desc limit 1"))
      local scode, sout = H.ragops(url, ("status --plan %s --config %s"):format(H.q(plan), H.q(cfg)),
        { env = env_for(server, dir) })
      assert.are.equal(0, scode, sout)
      assert.truthy(sout:find("Lotes da API de lotes em aberto", 1, true), sout)
      assert.are.equal(0, tonumber(H.scalar(url, "select count(*) from rag_documents")))
      H.psql(url, "update verses set text = 'um texto novo depois do envio', updated_at = now() where id = 7")
      local ccode, _, cerr = H.ragops(url, ("batch collect --plan %s --config %s"):format(H.q(plan), H.q(cfg)),
        { env = env_for(server, dir) })
      assert.are.equal(0, ccode, cerr)
      assert.truthy(cerr:find("coletado", 1, true), cerr)
      assert.are.equal("done", H.scalar(url, "select status from ragops_runs order by id desc limit 1"))
      assert.are.equal("um texto novo depois do envio",
        H.scalar(url, "select content from rag_documents where entity_type = 'verse' and entity_id = '7'"))
      -- The table equals an online backfill of the same (changed) source.
      local other = H.migrated_db("lote_detach_ref", 120, 40)
      H.psql(other, "update verses set text = 'um texto novo depois do envio', updated_at = now() where id = 7")
      local ocode, _, oerr = H.ragops(other, (command("online", 2, cfg)), { env = { RAGOPS_EMBED_URL = server.url } })
      H.stop_embed_server(server)
      assert.are.equal(0, ocode, oerr)
      assert.are.equal(H.fingerprint(other), H.fingerprint(url))
    end)

    it("retomada sem --embed-mode batch: a execução com lotes por coletar segue no modo de lotes", function()
      local server = H.start_embed_server("--batch-latency-s 0.5")
      local cfg, dir = config(server, 60), new_dir()
      local url = H.migrated_db("lote_retoma_online", 120, 40)
      local code, _, err = H.ragops(url, (command("batch", 2, cfg, "--detach")), { env = env_for(server, dir) })
      assert.are.equal(0, code, err)
      local ocode, _, oerr = H.ragops(url, (command("online", 2, cfg)), { env = env_for(server, dir) })
      H.stop_embed_server(server)
      assert.are.equal(0, ocode, oerr)
      assert.truthy(oerr:find("segue no modo de lotes", 1, true), oerr)
      assert.are.equal(1, tonumber(H.scalar(url, "select count(*) from ragops_runs")))
      assert.are.equal(reference, H.fingerprint(url))
    end)

    it("SIGINT deixa os lotes no provedor; batch cancel os cancela e a coleta põe o resto na fila de falhas", function()
      local server = H.start_embed_server("--batch-latency-s 30")
      local cfg, dir = config(server, 60), new_dir()
      local url = H.migrated_db("lote_cancel", 60, 20)
      local args, plan = command("batch", 2, cfg)
      local job = H.ragops_background(url, args, { env = env_for(server, dir) })
      local created = false
      for _ = 1, 300 do
        local n = tonumber(H.scalar(url, [[select count(*) from ragops_batches where state = 'in_progress']]) or 0)
        if n >= 1 and stats(server).batches_created >= 2 then created = true; break end
        H.sleep(0.05)
      end
      assert.is_true(created, "nenhum lote em andamento")
      H.sh("kill -INT " .. job.pid)
      assert.are.equal(130, H.exit_code(job, 30))
      local err = io.open(job.err):read("*a")
      assert.truthy(err:find("ragops batch cancel", 1, true), err)
      local ccode, _, cerr = H.ragops(url, ("batch cancel --plan %s --config %s"):format(H.q(plan), H.q(cfg)),
        { env = env_for(server, dir) })
      assert.are.equal(0, ccode, cerr)
      local code, _, rerr = H.ragops(url, args, { env = env_for(server, dir) })
      local s = stats(server)
      H.stop_embed_server(server)
      assert.are.equal(1, code, rerr)
      assert.are.equal(0, s.duplicate_uploads)
      local cancelled = tonumber(H.scalar(url, [[select count(*) from ragops_failures
        where resolved_at is null and error_class = 'batch_cancelled']]))
      assert.is_true(cancelled >= 1, "nenhuma falha batch_cancelled")
      assert.are.equal(80, cancelled + tonumber(H.scalar(url,
        "select count(distinct (entity_type, entity_id)) from rag_documents")))
    end)

    it("--budget-usd vale antes de cada envio, ao preço de lote; o dry-run mostra os dois preços", function()
      local server = H.start_embed_server("--batch-latency-s 0.2")
      local prices = [[price_per_1m_tokens = { ["ragops-hash-1536"] = 2000 }]]
      local cfg, dir = config(server, 60, prices), new_dir()
      local url = H.migrated_db("lote_budget", 60, 20)
      local args = command("batch", 2, cfg, "--dry-run")
      local dcode, dout, derr = H.ragops(url, args, { env = env_for(server, dir) })
      assert.are.equal(0, dcode, derr)
      local online = (dout .. derr):match("custo estimado:%s+US%$ ([%d%.,]+)")
      local batch = (dout .. derr):match("custo na API de lotes:%s+US%$ ([%d%.,]+)")
      assert.is_string(batch, dout .. derr)
      local function n(t) return tonumber((t:gsub("%.", ""):gsub(",", "."))) end
      assert.is_true(math.abs(n(online) / 2 - n(batch)) <= 0.01, online .. " / " .. batch)
      local code, _, err = H.ragops(url, (command("batch", 2, cfg, "--budget-usd 0.05")), { env = env_for(server, dir) })
      local s = stats(server)
      H.stop_embed_server(server)
      assert.are.equal(3, code, err)
      assert.truthy(err:find("não foi enviada", 1, true), err)
      assert.are.equal(0, s.files_uploaded)
    end)

    it("a parte que não chegou ao provedor e cujo arquivo sumiu (outra máquina) é remontada da fonte", function()
      local server = H.start_embed_server("--batch-latency-s 0.2")
      local prices = [[price_per_1m_tokens = { ["ragops-hash-1536"] = 2000 }]]
      local cfg, dir = config(server, 60, prices), new_dir()
      local url = H.migrated_db("lote_perdido", 60, 20)
      local code, _, err = H.ragops(url, (command("batch", 2, cfg, "--budget-usd 0.05")), { env = env_for(server, dir) })
      assert.are.equal(3, code, err)
      assert.are.equal(1, tonumber(H.scalar(url, "select count(*) from ragops_batches where state = 'ready'")))
      H.sh("rm -rf " .. H.q(dir))
      local rcode, _, rerr = H.ragops(url, (command("batch", 2, cfg, "--budget-usd 1000000")), { env = env_for(server, dir) })
      local s = stats(server)
      assert.are.equal(0, rcode, rerr)
      assert.truthy(rerr:find("não está nesta máquina", 1, true), rerr)
      assert.are.equal(0, s.duplicate_uploads)
      assert.are.equal(tonumber(H.scalar(url, "select count(*) from ragops_batches where input_file_id is not null")),
        s.files_uploaded)
      assert.are.equal(80, tonumber(H.scalar(url, "select count(distinct (entity_type, entity_id)) from rag_documents")))
      -- An online run over the same source finds nothing to embed: the hashes are the source's.
      local before = stats(server).requests or 0
      local ocode, _, oerr = H.ragops(url, (command("online", 2, cfg)), { env = { RAGOPS_EMBED_URL = server.url } })
      local after = stats(server).requests or 0
      H.stop_embed_server(server)
      assert.are.equal(0, ocode, oerr)
      assert.are.equal(before, after, "o backfill online embedou de novo")
    end)
  end)
end)
