-- Integration (issue 7): scope safety and fault survival on the real
-- PostgreSQL and embed-server. Each case reproduces a defect found by
-- independent testing; the chaos case terminates the run's sessions every
-- second and restarts PostgreSQL once.
local H = require "tests.integration.helper"

local function plan_text(extra, batch)
  return ([[
    local verses = source "verse" { sql = "select id, book, chapter, verse, text, updated_at from verses",
      key = "id", updated_at = "updated_at",
      document = function(r) return { content = r.text, metadata = { livro = r.book } } end }
    local fortunes = source "fortune" { sql = "select id, text, updated_at from fortunes",
      key = "id", updated_at = "updated_at",
      document = function(r) return { content = r.text } end }
    return plan { name = "confianca", sources = { verses, fortunes },
      batch = %s,
      retry = { attempts = 10, base_ms = 20, max_ms = 300, timeout_s = 2 },
      %s }]]):format(batch or "{ size = 4, in_flight = 4 }", extra or "")
end

local function digest(url)
  return H.psql(url, [[select count(*), md5(string_agg(entity_type || entity_id || ':' || chunk_index || content_hash
    || md5(embedding::text), ',' order by entity_type, entity_id, chunk_index)) from rag_documents]])[1]
end

local function pg_env()
  local pgdata, pgport = os.getenv("RAGOPS_TEST_PGDATA"), os.getenv("RAGOPS_TEST_PGPORT")
  assert(pgdata, "RAGOPS_TEST_PGDATA ausente (rode com tests/run_all.sh)")
  return pgdata, pgport
end

local function restart_pg()
  local pgdata, pgport = pg_env()
  local code = H.sh(("cd %s && scripts/pg.sh stop %s"):format(H.q(H.source_dir), H.q(pgdata)))
  assert.are.equal(0, code)
  H.sleep(0.5)
  local start_code, _, start_err = H.sh(("cd %s && scripts/pg.sh start --fast %s %s ragops_test"):format(
    H.q(H.source_dir), H.q(pgdata), pgport))
  assert.are.equal(0, start_code, start_err)
end

describe("confiança I: escopo e faltas", function()
  after_each(function() H.cleanup() end)
  local N_VERSES, N_FORTUNES = 120, 12
  local clean

  setup(function()
    local url = H.migrated_db("ragops_it_trust_clean", N_VERSES, N_FORTUNES)
    local plan = H.plan_file(plan_text())
    local code, _, err = H.ragops(url, "run " .. H.q(plan))
    os.remove(plan)
    assert.are.equal(0, code, err)
    clean = digest(url)
  end)

  it("reindex --entity-id 1,5 --since não apaga a entidade 5 fora da janela (7.1)", function()
    local url = H.migrated_db("ragops_it_trust_since", N_VERSES, N_FORTUNES)
    assert.are.equal(0, (H.ragops(url, "backfill")))
    H.psql(url, "update verses set updated_at = '2023-01-01' where id = 5; update verses set updated_at = '2025-01-01' where id = 1")
    local code, _, err, report = H.ragops(url, "reindex --entity-type verse --entity-id 1,5 --since 2024-05-01",
      { report = true })
    assert.are.equal(0, code, err)
    assert.are.equal(0, report.deleted)
    assert.are.equal(1, H.scalar(url, "select count(*) from rag_documents where entity_type = 'verse' and entity_id = '5'"))
  end)

  it("retomar um recorte por ids após SIGINT não apaga o que já foi processado (7.2)", function()
    local url = H.migrated_db("ragops_it_trust_ids", N_VERSES, N_FORTUNES)
    local server = H.start_embed_server("--latency-ms 700")
    local plan = H.plan_file(plan_text(nil, "{ size = 2, in_flight = 1 }"))
    local args = "run " .. H.q(plan) .. " --set entity_type=verse --set entity_id=1,2,3,4,5,6"
    local job = H.ragops_background(url, args, { env = { RAGOPS_EMBED_URL = server.url } })
    for _ = 1, 100 do
      if H.scalar(url, "select count(*) from rag_documents") > 0 then break end
      H.sleep(0.05)
    end
    H.sh("kill -INT " .. job.pid)
    assert.are.equal(130, H.exit_code(job), H.read_all(job.err))
    H.stop_embed_server(server)
    local code, _, err, report = H.ragops(url, args, { report = true })
    os.remove(plan)
    assert.are.equal(0, code, err)
    assert.is_nil(err:find("não existe mais na fonte", 1, true), err)
    assert.are.equal(0, report.deleted)
    assert.are.equal(6, report.processed)
    assert.are.equal(6, H.scalar(url, "select count(*) from rag_documents where entity_type = 'verse'"))
  end)

  it("chave não única na fonte: código 2, mensagem com a fonte e a chave, nada gravado (7.4)", function()
    local url = H.migrated_db("ragops_it_trust_dup", 10, 0)
    local plan = H.plan_file([[return plan { name = "dup", sources = { source "letra" {
      sql = "select * from (values ('a', 'um'), ('b', 'dois'), ('b', 'dois de novo'), ('c', 'tres')) as t(k, txt)",
      key = "k", document = function(r) return { content = r.txt } end } }, batch = { size = 2, in_flight = 1 } }]])
    local code, _, err = H.ragops(url, "run " .. H.q(plan))
    os.remove(plan)
    assert.are.equal(2, code, err)
    assert.matches('"letra"', err)
    assert.matches("não é única", err)
    assert.matches('"?b"?', err)
    assert.are.equal(0, H.scalar(url, "select count(*) from rag_documents"))
  end)

  it("dead letters na mesma transação: se gravá-los falha, o checkpoint não passa das entidades (7.5)", function()
    local url = H.migrated_db("ragops_it_trust_dlq", N_VERSES, N_FORTUNES)
    H.psql(url, [[create function no_dlq() returns trigger language plpgsql as
      $$ begin raise exception 'fila de falhas indisponível'; end $$;
      create trigger no_dlq before insert on ragops_failures for each row execute function no_dlq()]])
    local server = H.start_embed_server("--reject-pattern 'verse 3[0-9] of'")
    local plan = H.plan_file(plan_text(nil, "{ size = 4, in_flight = 1 }"))
    local code, _, err = H.ragops(url, "run " .. H.q(plan), { env = { RAGOPS_EMBED_URL = server.url } })
    H.stop_embed_server(server)
    os.remove(plan)
    assert.are.equal(4, code, err)
    -- No verse past the checkpoint's key is missing from both the index and the queue.
    local lost = H.scalar(url, [[
      select count(*) from verses v
       where v.id <= coalesce((select (checkpoint -> 'verse' ->> 'after')::bigint from ragops_runs), 0)
         and not exists (select 1 from rag_documents d where d.entity_type = 'verse' and d.entity_id = v.id::text)
         and not exists (select 1 from ragops_failures f where f.entity_type = 'verse' and f.entity_id = v.id::text)]])
    assert.are.equal(0, lost)
  end)

  -- One try of 7.6 on a fresh database: ragops killed while it writes,
  -- until one process ends the run by itself (on a loaded machine that may
  -- be the third or the fourth). Returns killed, code, err, report of that
  -- process, or nil when a kill -9 landed after the run had already ended
  -- (marked done, not yet exited): then no process ended an interrupted run
  -- and the try says nothing (the next process would start a new run).
  local function kill_until_done(url, plan, env)
    local killed = 0
    for _ = 1, 8 do
      local before = H.scalar(url, "select count(*) from rag_documents")
      local report_path = os.tmpname()
      local job = H.ragops_background(url, "run " .. H.q(plan) .. " --report-json " .. H.q(report_path),
                                      { env = env })
      for _ = 1, 200 do
        if H.scalar(url, "select count(*) from rag_documents") > before + 8 or not H.alive(job.pid) then break end
        H.sleep(0.02)
      end
      local was_killed = H.alive(job.pid) and killed < 4
      if was_killed then H.sh("kill -9 " .. job.pid); killed = killed + 1 end
      local code = H.exit_code(job)
      if was_killed and H.scalar(url, "select count(*) from ragops_runs where status = 'done'") > 0 then
        os.remove(report_path)
        return nil
      end
      if not was_killed then
        local err = H.read_all(job.err)
        local text = H.read_all(report_path)
        os.remove(report_path)
        return killed, code, err, text ~= "" and require("cjson").decode(text) or nil, url
      end
      os.remove(report_path)
    end
  end

  it("kill -9 repetido: o relatório final é o de uma execução sem interrupção (7.6)", function()
    -- 200 ms a wave of 16 documents: a kill after the first writes lands
    -- mid-run (at 60 ms the faster engine ended the whole run between the
    -- poll and the kill in every try).
    local server = H.start_embed_server("--latency-ms 200")
    local plan = H.plan_file(plan_text(nil, "{ size = 4, in_flight = 4 }"))
    local env = { RAGOPS_EMBED_URL = server.url }
    local killed, code, err, report, url
    for try = 1, 3 do
      killed, code, err, report, url =
        kill_until_done(H.migrated_db("ragops_it_trust_kill" .. try, N_VERSES, N_FORTUNES), plan, env)
      if killed then break end
    end
    H.stop_embed_server(server)
    os.remove(plan)
    assert.is_number(killed, "em 3 tentativas, toda morte caiu depois do fim da execução")
    assert.are.equal(0, code, err)
    assert.is_true(killed >= 2, "as mortes deveriam acontecer no meio da execução")
    assert.is_table(report, "a execução que terminou deveria gravar o relatório")
    assert.are.equal(N_VERSES + N_FORTUNES, report.processed)
    assert.are.equal(0, report.skipped)
    assert.are.equal(report.processed, report.succeeded)
    assert.is_true(report.requests_spent >= report.requests, "requests_spent conta todas as tentativas")
    assert.are.same(clean, digest(url))
    assert.are.equal(0, H.scalar(url, "select count(*) from ragops_run_units"))
  end)

  it("depois de reiniciar o PostgreSQL, um segundo processo não roda a mesma execução junto (7.8)", function()
    local url = H.migrated_db("ragops_it_trust_twice", N_VERSES, N_FORTUNES)
    local server = H.start_embed_server("--latency-ms 150")
    local plan = H.plan_file(plan_text(nil, "{ size = 4, in_flight = 2 }"))
    local first = H.ragops_background(url, "run " .. H.q(plan), { env = { RAGOPS_EMBED_URL = server.url } })
    H.sleep(0.8)
    restart_pg()
    local second = H.ragops_background(url, "run " .. H.q(plan), { env = { RAGOPS_EMBED_URL = server.url } })
    local c1, c2 = H.exit_code(first), H.exit_code(second)
    H.stop_embed_server(server)
    os.remove(plan)
    local e1, e2 = H.read_all(first.err), H.read_all(second.err)
    -- Exactly one of them finished the run; the other stopped and said why.
    assert.is_true((c1 == 0) ~= (c2 == 0), ("códigos %d e %d\n%s\n---\n%s"):format(c1, c2, e1, e2))
    assert.matches("outro processo", c1 == 0 and e2 or e1)
    assert.are.equal(1, H.scalar(url, "select count(*) from ragops_runs"))
    assert.are.same(clean, digest(url))
  end)

  it("abortado por alerta, o mesmo comando sempre avança até concluir (7.9)", function()
    local url = H.migrated_db("ragops_it_trust_abort", N_VERSES, N_FORTUNES)
    -- ~8% of the verses refused for good, clustered: the failure-rate alert aborts.
    local server = H.start_embed_server("--reject-pattern 'verse (1[0-9]|5[0-9]|9[0-9]) of'")
    local plan = H.plan_file(plan_text(
      [[alerts = { failure_rate = { above = 0.05, window = 40, min_samples = 10, action = "abort" } },]]))
    local code, attempts, last_cp = 3, 0, -1
    while code == 3 and attempts < 15 do
      attempts = attempts + 1
      local err
      code, _, err = H.ragops(url, "run " .. H.q(plan), { env = { RAGOPS_EMBED_URL = server.url } })
      if code == 3 then
        local committed = H.scalar(url, "select (select count(*) from rag_documents) + (select count(*) from ragops_failures)")
        assert.is_true(committed > last_cp, "a retomada não avançou: " .. err)
        last_cp = committed
      end
    end
    H.stop_embed_server(server)
    os.remove(plan)
    assert.are.equal(1, code)
    assert.is_true(attempts > 1, "o alerta deveria ter abortado ao menos uma vez")
    assert.are.equal(N_VERSES - 30, H.scalar(url, "select count(*) from rag_documents where entity_type = 'verse'"))
    assert.are.equal(30, H.scalar(url, "select count(*) from ragops_failures where resolved_at is null"))
  end)

  it("progresso no log enquanto todos os workers esperam um provedor lento (7.15)", function()
    local url = H.migrated_db("ragops_it_trust_progress", 8, 0)
    local server = H.start_embed_server("--latency-ms 1600")
    local cfg = H.plan_file("return { log = { progress_every_s = 0.5 } }")
    local plan = H.plan_file(plan_text(nil, "{ size = 8, in_flight = 1 }"))
    local code, _, err = H.ragops(url, "run " .. H.q(plan) .. " --config " .. H.q(cfg),
      { env = { RAGOPS_EMBED_URL = server.url } })
    H.stop_embed_server(server)
    os.remove(plan); os.remove(cfg)
    assert.are.equal(0, code, err)
    local lines = 0
    for _ in err:gmatch("progresso:") do lines = lines + 1 end
    assert.is_true(lines >= 2, "esperava linhas de progresso durante a espera:\n" .. err)
  end)

  it("caos: sessões encerradas a cada segundo e um reinício do PostgreSQL; termina com 0 e a tabela igual", function()
    local url = H.migrated_db("ragops_it_trust_chaos", N_VERSES, N_FORTUNES)
    local server = H.start_embed_server("--latency-ms 300")
    local plan = H.plan_file(plan_text(nil, "{ size = 4, in_flight = 2 }"))
    local job = H.ragops_background(url, "run " .. H.q(plan), { env = { RAGOPS_EMBED_URL = server.url } })
    local admin = H.db_url("postgres")
    local terminated, restarted = 0, false
    for tick = 1, 60 do
      if not H.alive(job.pid) then break end
      H.sleep(1)
      local ok = pcall(function()
        terminated = terminated + H.scalar(admin, [[select count(*) from (select pg_terminate_backend(pid)
          from pg_stat_activity where datname = 'ragops_it_trust_chaos' and pid <> pg_backend_pid()) t]])
      end)
      if ok and tick == 2 and not restarted then restart_pg(); restarted = true end
    end
    local code = H.exit_code(job)
    H.stop_embed_server(server)
    os.remove(plan)
    assert.are.equal(0, code, H.read_all(job.err))
    assert.is_true(restarted and terminated >= 2, "o caos deveria ter acontecido durante a execução")
    assert.are.same(clean, digest(url))
  end)
end)
