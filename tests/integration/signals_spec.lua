-- Integration: SIGINT/SIGTERM cut every wait short. A first signal ends the
-- database retry window, the pause between retry rounds and the loop of
-- `failures retry` at once (exit 130); a second one exits immediately (143).
-- The bounds below (10 s) only tell "stopped at the signal" from "waited the
-- whole window" (36 s for the database, 30 s for the pause): not speed tests.
local H = require "tests.integration.helper"

local PROMPT_S = 10

local function plan_with(retry)
  return H.plan_file(([[
    local verses = source "verse" { sql = "select id, book, chapter, verse, text, updated_at from verses",
      key = "id", updated_at = "updated_at",
      document = function(r) return { content = r.text } end }
    local fortunes = source "fortune" { sql = "select id, text, updated_at from fortunes",
      key = "id", updated_at = "updated_at",
      document = function(r) return { content = r.text } end }
    return plan { name = "sinais", sources = { verses, fortunes },
      batch = { size = 4, in_flight = 4 }, retry = %s }]]):format(retry))
end

-- Waits until stderr of job matches pattern (true) or timeout_s passes (false).
local function wait_log(job, pattern, timeout_s)
  for _ = 1, timeout_s * 20 do
    if H.read_all(job.err):find(pattern) then return true end
    H.sleep(0.05)
  end
  return false
end

describe("sinais cortam as esperas", function()
  after_each(function() H.cleanup() end)

  it("PostgreSQL parado no meio: SIGINT sai com 130 sem esperar a janela de reconexão", function()
    local pgdata, pgport = os.getenv("RAGOPS_TEST_PGDATA"), os.getenv("RAGOPS_TEST_PGPORT")
    assert.is_not_nil(pgdata, "RAGOPS_TEST_PGDATA ausente (rode com tests/run_all.sh)")
    local url = H.migrated_db("ragops_it_sig_pgdown", 160, 20)
    local server = H.start_embed_server("--latency-ms 250")
    local plan = plan_with("{ attempts = 5, base_ms = 20, max_ms = 300, timeout_s = 5 }")
    local job = H.ragops_background(url, "run " .. H.q(plan), { env = { RAGOPS_EMBED_URL = server.url } })
    finally(function()
      H.sh(("cd %s && scripts/pg.sh start --fast %s %s ragops_test"):format(H.q(H.source_dir), H.q(pgdata), pgport))
      H.stop_embed_server(server)
      os.remove(plan)
    end)
    H.sleep(0.6)
    assert.is_true(H.alive(job.pid), "a execução terminou antes de o PostgreSQL parar")
    assert.are.equal(0, (H.sh(("cd %s && scripts/pg.sh stop %s"):format(H.q(H.source_dir), H.q(pgdata)))))
    assert.is_true(wait_log(job, "PostgreSQL %(", 10), "a execução deveria estar tentando reconectar")
    H.sh("kill -INT " .. job.pid)
    local code = H.exit_code(job, PROMPT_S)
    local err = H.read_all(job.err)
    assert.are.equal(130, code, err)
    assert.matches("SIGINT", err)
  end)

  it("provedor sempre falhando: SIGINT na pausa entre rodadas sai com 130 e nada vai para a fila de falhas", function()
    local url = H.migrated_db("ragops_it_sig_pause", 40, 4)
    local server = H.start_embed_server("--fail-rate 1")
    local plan = plan_with("{ attempts = 2, rounds = 2, base_ms = 10, max_ms = 30000, timeout_s = 5 }")
    local job = H.ragops_background(url, "run " .. H.q(plan), { env = { RAGOPS_EMBED_URL = server.url } })
    finally(function() H.stop_embed_server(server); os.remove(plan) end)
    -- The second failed attempt of a round announces the 30 s cool-down.
    assert.is_true(wait_log(job, "nova tentativa em 30000 ms", 10), H.read_all(job.err))
    H.sh("kill -INT " .. job.pid)
    local code = H.exit_code(job, PROMPT_S)
    assert.are.equal(130, code, H.read_all(job.err))
    assert.are.equal("interrupted", H.scalar(url, "select status from ragops_runs order by id desc limit 1"))
    assert.are.equal(0, H.scalar(url, "select count(*) from ragops_failures"))
  end)

  it("failures retry: SIGINT durante o primeiro tipo sai com 130 e não começa o segundo", function()
    local url = H.migrated_db("ragops_it_sig_failures", 40, 20)
    local rejecting = H.start_embed_server("--reject-pattern '(verse 3[0-9] of|petisca 1[1-9]$)'")
    local plan = plan_with("{ attempts = 2, base_ms = 10, max_ms = 10, timeout_s = 5 }")
    local slow = H.start_embed_server("--latency-ms 3000")
    finally(function() H.stop_embed_server(rejecting); H.stop_embed_server(slow); os.remove(plan) end)
    local code, _, err = H.ragops(url, "run " .. H.q(plan), { env = { RAGOPS_EMBED_URL = rejecting.url } })
    assert.are.equal(1, code, err)
    assert.are.equal(10, H.scalar(url, "select count(*) from ragops_failures where entity_type = 'verse' and resolved_at is null"))
    assert.are.equal(9, H.scalar(url, "select count(*) from ragops_failures where entity_type = 'fortune' and resolved_at is null"))
    local runs_before = H.scalar(url, "select count(*) from ragops_runs")
    -- Types go in name order: fortune first, verse second.
    local job = H.ragops_background(url, "failures retry", { env = { RAGOPS_EMBED_URL = slow.url } })
    assert.is_true(wait_log(job, 'de "fortune"', 10), H.read_all(job.err))
    H.sleep(0.5)
    H.sh("kill -INT " .. job.pid)
    local rcode = H.exit_code(job, PROMPT_S)
    local rerr = H.read_all(job.err)
    assert.are.equal(130, rcode, rerr)
    assert.is_nil(rerr:find('de "verse"', 1, true), "o segundo tipo não deveria ter começado:\n" .. rerr)
    assert.matches("não reprocessado", rerr)
    assert.are.equal(runs_before + 1, H.scalar(url, "select count(*) from ragops_runs"))
    assert.are.equal(10, H.scalar(url, "select count(*) from ragops_failures where entity_type = 'verse' and resolved_at is null"))
  end)

  it("segundo sinal encerra na hora (código 128+15) enquanto o relatório espera o banco", function()
    local url = H.migrated_db("ragops_it_sig_second", 40, 4)
    local server = H.start_embed_server("--latency-ms 400")
    local plan = plan_with("{ attempts = 2, base_ms = 10, max_ms = 10, timeout_s = 30 }")
    local job = H.ragops_background(url, "run " .. H.q(plan), { env = { RAGOPS_EMBED_URL = server.url } })
    local locker = "pg_sleep(20.5)"
    finally(function()
      H.psql(url, ("select pg_terminate_backend(pid) from pg_stat_activity where query like '%%%s%%' "
        .. "and pid <> pg_backend_pid()"):format(locker))
      H.stop_embed_server(server)
      os.remove(plan)
    end)
    -- Another session holds the run's row: the final report write blocks on it.
    for _ = 1, 100 do
      if H.scalar(url, "select count(*) from ragops_runs") == 1 then break end
      H.sleep(0.05)
    end
    os.execute(("psql -X -q -d %s -c %s >/dev/null 2>&1 &"):format(H.q(url),
      H.q("begin; select id from ragops_runs for update; select " .. locker .. "; commit")))
    for _ = 1, 100 do
      if H.scalar(url, ("select count(*) from pg_stat_activity where query like '%%%s%%' and state = 'active' "
        .. "and pid <> pg_backend_pid()"):format(locker)) == 1 then break end
      H.sleep(0.05)
    end
    H.sh("kill -TERM " .. job.pid)
    assert.is_true(wait_log(job, "SIGTERM", 5), H.read_all(job.err))
    H.sleep(0.3)
    assert.is_true(H.alive(job.pid), "o primeiro sinal deveria esperar a gravação do relatório")
    H.sh("kill -TERM " .. job.pid)
    local code = H.exit_code(job, 5)
    assert.are.equal(143, code)
    assert.matches("segundo sinal", H.read_all(job.err))
  end)
end)
