-- Integration (issue 19, Trust III): scale-out and resumed runs count what
-- was committed, once; the exit code follows the failures queue; the budget
-- is the run's, whoever spends it; a worker whose lease expired or whose run
-- ended writes nothing. Real PostgreSQL, real embed-servers (hang and
-- latency switches), kill -9, SIGSTOP and a commit slowed by a trigger.
local H = require "tests.integration.helper"
local cjson = require "cjson"

local N_VERSES, N_FORTUNES = 400, 20
local TOTAL = N_VERSES + N_FORTUNES

local function plan_text(extra)
  return ([[
  local verses = source "verse" { sql = "select id, book, text, updated_at from verses",
    key = "id", updated_at = "updated_at",
    document = function(r) return { content = r.text, metadata = { livro = r.book } } end }
  local fortunes = source "fortune" { sql = "select id, text, updated_at from fortunes",
    key = "id", updated_at = "updated_at",
    document = function(r) return { content = r.text } end }
  return plan { name = "escala3", sources = { verses, fortunes }, batch = { size = 4, in_flight = 2 },
    retry = { attempts = 5, base_ms = 20, max_ms = 200, timeout_s = 30 }, %s }]]):format(extra or "")
end

local function server_stats(server)
  local code, out = H.sh("curl -fsS " .. H.q(server.base .. "/stats"))
  assert(code == 0, "GET /stats falhou")
  return cjson.decode(out)
end

local function read_report(path)
  local text = H.read_all(path)
  os.remove(path)
  assert(text ~= "", "relatório JSON vazio: " .. path)
  return cjson.decode(text)
end

local wait_for = H.wait_for

local function docs(url) return H.scalar(url, "select count(*) from rag_documents") end

-- Starts n scale-out processes of plan on url against server; returns jobs
-- and their report paths.
local function scale_out(url, plan, n, server, extra)
  local jobs, reports = {}, {}
  for i = 1, n do
    reports[i] = os.tmpname()
    jobs[i] = H.ragops_background(url, "run " .. H.q(plan) .. " --scale-out --report-json " .. reports[i]
      .. " " .. (extra or ""), { env = { RAGOPS_EMBED_URL = server.url } })
  end
  return jobs, reports
end

local function stderr_of(jobs)
  local out = {}
  for _, job in ipairs(jobs) do out[#out + 1] = H.read_all(job.err) end
  return table.concat(out, "\n----\n")
end

-- The counters the run record's report and a --report-json must share.
local SHARED = { "processed", "succeeded", "failed", "skipped", "embedded", "tokens", "requests_spent", "status" }

local function assert_agree(stored, reported)
  for _, k in ipairs(SHARED) do
    assert.are.equal(reported[k], stored[k], ("%s: relatório %s, ragops_runs.report %s")
      :format(k, tostring(reported[k]), tostring(stored[k])))
  end
end

describe("confiança III: execuções retomadas e divididas (--scale-out)", function()
  after_each(function() H.cleanup() end)

  it("retomar com dois --scale-out uma execução abortada por alerta: totais de uma execução só, falhas uma vez, "
    .. "código conforme a fila (19.6)", function()
    local url = H.migrated_db("ragops_it_so3_resume", N_VERSES, N_FORTUNES)
    local plan = H.plan_file(plan_text([[alerts = { failure_rate = { above = 0.2, window = 40, action = "abort" } }]]))
    local bad = H.start_embed_server("--reject-pattern 'verse 1[0-4][0-9] of'")
    local code, _, err = H.ragops(url, "run " .. H.q(plan) .. " --overwrite", { env = { RAGOPS_EMBED_URL = bad.url } })
    H.stop_embed_server(bad)
    assert.are.equal(3, code, err)
    local open_before = H.scalar(url, "select count(*) from ragops_failures where resolved_at is null")
    assert.is_true(open_before > 0, "o alerta deveria ter parado a execução com falhas na fila")
    local prefix = H.scalar(url, "select (checkpoint -> 'verse' -> 'stats' ->> 'processed')::int from ragops_runs")

    local server = H.start_embed_server("--latency-ms 30")
    local jobs, reports = scale_out(url, plan, 2, server, "--overwrite")
    local codes = { H.exit_code(jobs[1]), H.exit_code(jobs[2]) }
    H.stop_embed_server(server)
    os.remove(plan)
    local open = H.scalar(url, "select count(*) from ragops_failures where resolved_at is null")
    assert.are.equal(open_before, open, "a retomada não reprocessa o prefixo gravado")
    -- The queue has open dead letters: both processes say so (exit 1).
    assert.are.same({ 1, 1 }, codes, stderr_of(jobs))
    local r1, r2 = read_report(reports[1]), read_report(reports[2])
    local finisher = r1.scale_out.finished_run and r1 or r2
    local t = finisher.scale_out.run_totals
    assert.are.equal(TOTAL, t.processed)
    assert.are.equal(open, t.failed)
    assert.are.equal(TOTAL - open, t.succeeded)
    assert.are.equal(0, t.skipped)
    assert.are.equal(docs(url), t.embedded)
    assert.are.equal("done_with_failures", t.status)
    -- Each process reports its share: together, the rows past the prefix.
    assert.are.equal(0, r1.failed + r2.failed)
    assert.is_true(prefix > 0 and r1.processed + r2.processed <= TOTAL - prefix,
      ("prefixo %d, processos %d + %d"):format(prefix, r1.processed, r2.processed))
    assert_agree(cjson.decode(H.scalar(url, "select report::text from ragops_runs")), t)
    local _, listed = H.ragops(url, "failures list")
    assert.matches("falhas em aberto: " .. open, listed)
  end)

  it("kill -9 no meio de uma unidade: quem assume pula o que foi gravado; totais iguais aos de uma execução só "
    .. "e pedidos iguais aos que o provedor recebeu (19.19)", function()
    local url = H.migrated_db("ragops_it_so3_kill", N_VERSES, N_FORTUNES)
    local plan = H.plan_file(plan_text())
    -- A's provider never answers the batch with verse 37: A is killed there,
    -- after committing the parts before it.
    local hang = H.start_embed_server("--hang-pattern 'verse 37 of'")
    local good = H.start_embed_server("--latency-ms 20")
    local a = H.ragops_background(url, "run " .. H.q(plan) .. " --scale-out --lease-s 1 --in-flight 1",
      { env = { RAGOPS_EMBED_URL = hang.url } })
    wait_for("o pedido travado no provedor de A", function() return server_stats(hang).timeouts >= 1 end)
    local committed_by_a = docs(url)
    assert.are.equal(36, committed_by_a)
    H.sh("kill -9 " .. a.pid)
    H.exit_code(a)
    local jobs, reports = scale_out(url, plan, 1, good, "--lease-s 1")
    local code = H.exit_code(jobs[1], 120)
    H.stop_embed_server(hang)
    local seen = server_stats(good).requests
    H.stop_embed_server(good)
    os.remove(plan)
    assert.are.equal(0, code, stderr_of(jobs))
    local rb = read_report(reports[1])
    local t = rb.scale_out.run_totals
    assert.are.equal(TOTAL, t.processed)
    assert.are.equal(0, t.skipped)
    assert.are.equal(docs(url), t.embedded)
    assert.are.equal(TOTAL - committed_by_a, rb.processed, "B não refaz as partes que A gravou")
    -- Every request either process sent, the hung one included.
    local sent = 10 + seen
    assert.are.equal(sent, t.requests_spent)
    assert.are.equal(sent, H.scalar(url, "select requests_spent from ragops_runs"))
    assert_agree(cjson.decode(H.scalar(url, "select report::text from ragops_runs")), t)
  end)

  it("lease expirado: o processo parado não grava depois que outro assumiu nem depois do fim; "
    .. "os relatórios dos processos somam o total (19.19)", function()
    local url = H.migrated_db("ragops_it_so3_zombie", N_VERSES, N_FORTUNES)
    local plan = H.plan_file(plan_text())
    local slow = H.start_embed_server("--latency-ms 300")
    local good = H.start_embed_server("--latency-ms 10")
    local ra, rb = os.tmpname(), os.tmpname()
    local a = H.ragops_background(url, "run " .. H.q(plan) .. " --scale-out --lease-s 1 --report-json " .. ra,
      { env = { RAGOPS_EMBED_URL = slow.url } })
    wait_for("A gravar parte da primeira unidade", function() return docs(url) >= 8 end)
    -- Stopped while it waits for the provider, never inside a transaction.
    local function in_transaction()
      return H.scalar(url, [[select count(*) from pg_stat_activity where datname = current_database()
                               and state like 'idle in transaction%' or (state = 'active' and query ilike '%work_units%'
                               and pid <> pg_backend_pid())]]) > 0
    end
    for _ = 1, 50 do
      H.sh("kill -STOP " .. a.pid)
      if not in_transaction() then break end
      H.sh("kill -CONT " .. a.pid)
      H.sleep(0.05)
    end
    local b = H.ragops_background(url, "run " .. H.q(plan) .. " --scale-out --lease-s 1 --report-json " .. rb,
      { env = { RAGOPS_EMBED_URL = good.url } })
    local code_b = H.exit_code(b, 120)
    assert.are.equal("done", H.scalar(url, "select status from ragops_runs"))
    local written = docs(url)
    H.sh("kill -CONT " .. a.pid)
    local code_a = H.exit_code(a, 60)
    H.stop_embed_server(slow)
    H.stop_embed_server(good)
    os.remove(plan)
    assert.are.equal(0, code_b, H.read_all(b.err))
    assert.are.equal(0, code_a, H.read_all(a.err))
    assert.matches("mudou de dono", H.read_all(a.err))
    assert.are.equal(0, H.scalar(url, [[select count(*) from rag_documents d, ragops_runs r
                                         where d.indexed_at > r.finished_at]]), "A gravou depois do fim da execução")
    assert.are.equal(written, docs(url))
    local repa, repb = read_report(ra), read_report(rb)
    assert.are.equal(TOTAL, repa.processed + repb.processed,
      ("A %d + B %d"):format(repa.processed, repb.processed))
    assert.are.equal(TOTAL, repb.scale_out.run_totals.processed)
    assert.are.equal(0, repb.scale_out.run_totals.skipped)
  end)

  it("SIGTERM com uma gravação em commit: o relatório traz o que o banco gravou, igual a ragops_runs.report "
    .. "(19.19)", function()
    local url = H.migrated_db("ragops_it_so3_term", N_VERSES, N_FORTUNES)
    -- Every unit's commit takes 0.4 s (a deferred trigger on the run's row).
    H.psql(url, [[
      create function slow_commit() returns trigger language plpgsql as $$
        begin perform pg_sleep(0.4); return null; end $$;
      create constraint trigger ragops_slow_commit after update on ragops_runs
        deferrable initially deferred for each row execute function slow_commit()]])
    local plan = H.plan_file(plan_text())
    local report = os.tmpname()
    local job = H.ragops_background(url, "run " .. H.q(plan) .. " --report-json " .. report)
    wait_for("um commit em andamento", function()
      return docs(url) >= 8 and H.scalar(url, [[select count(*) from pg_stat_activity
        where datname = current_database() and query = 'commit' and wait_event = 'PgSleep']]) > 0
    end)
    H.sh("kill -TERM " .. job.pid)
    assert.are.equal(130, H.exit_code(job), H.read_all(job.err))
    local r = read_report(report)
    local committed = H.scalar(url, [[
      select coalesce((select sum((v -> 'stats' ->> 'processed')::int) from ragops_runs, jsonb_each(checkpoint) as c(k, v)), 0)
           + coalesce((select sum((stats ->> 'processed')::int) from ragops_run_units), 0)]])
    assert.are.equal(committed, r.processed)
    assert.are.equal(docs(url), r.embedded)
    assert_agree(cjson.decode(H.scalar(url, "select report::text from ragops_runs")), r)
    H.psql(url, "drop trigger ragops_slow_commit on ragops_runs")
    local code, _, err, resumed = H.ragops(url, "run " .. H.q(plan), { report = true })
    os.remove(plan)
    assert.are.equal(0, code, err)
    assert.are.equal(TOTAL, resumed.processed)
    assert.are.equal(0, resumed.skipped)
  end)

  it("a primeira linha do log de um --scale-out diz que os limites de taxa são divididos entre os processos (19.20, 25)", function()
    local url = H.migrated_db("ragops_it_so3_limits", 20, 2)
    local plan = H.plan_file(plan_text())
    local code, _, err = H.ragops(url, "run " .. H.q(plan) .. " --scale-out")
    assert.are.equal(0, code, err)
    local first = err:match("^[^\n]*")
    assert.matches("iniciada", first)
    assert.matches("divididos entre os processos", first)
    local _, _, plain = H.ragops(H.migrated_db("ragops_it_so3_limits1", 20, 2), "run " .. H.q(plan))
    os.remove(plan)
    assert.is_nil(plain:match("divididos entre os processos"))
  end)
end)

describe("confiança III: orçamento da execução", function()
  after_each(function() H.cleanup() end)
  -- US$ 1000 per 1M tokens; verses only (a batch of 4 costs ~44 tokens).
  local PRICED = [[provider = { price_per_1m_tokens = { ["ragops-hash-1536"] = 1000 } }]]
  local BATCH_USD = 60 * 1000 / 1e6
  local cfg
  setup(function() cfg = H.config_file(PRICED) end)
  teardown(function() os.remove(cfg) end)

  local function run_spend(url)
    return H.scalar(url, "select coalesce(sum(tokens), 0) from ragops_token_usage") * 1000 / 1e6
  end

  it("três processos --scale-out com --budget-usd param juntos no orçamento da execução, a menos de um lote; "
    .. "o que o provedor embutiu e foi descartado conta (19.14)", function()
    local url = H.migrated_db("ragops_it_so3_budget", N_VERSES, N_FORTUNES)
    local plan = H.plan_file(plan_text())
    local server = H.start_embed_server("--latency-ms 80")
    local budget = 1.5
    local jobs, reports = scale_out(url, plan, 3, server,
      "--set entity_type=verse --budget-usd " .. budget .. " --config " .. H.q(cfg))
    local codes = { H.exit_code(jobs[1]), H.exit_code(jobs[2]), H.exit_code(jobs[3]) }
    local embedded_inputs = server_stats(server).inputs
    assert.are.same({ 3, 3, 3 }, codes, stderr_of(jobs))
    local spent = run_spend(url)
    assert.is_true(spent <= budget + BATCH_USD, ("gasto US$ %.4f, orçamento %.2f"):format(spent, budget))
    assert.is_true(spent >= budget - 2 * BATCH_USD, ("parou cedo demais: US$ %.4f"):format(spent))
    assert.are.equal(embedded_inputs, H.scalar(url, "select coalesce(sum(chunks), 0) from ragops_token_usage"),
      "todo lote que o provedor embutiu está no gasto da execução")
    for i = 1, 3 do
      local r = read_report(reports[i])
      assert.are.near(spent, r.spend.spent_usd, 1e-9)
    end
    -- The same command with a larger budget finishes the run.
    local code, _, err, done = H.ragops(url, "run " .. H.q(plan) .. " --scale-out --set entity_type=verse "
      .. "--budget-usd 100 --config " .. H.q(cfg), { report = true, env = { RAGOPS_EMBED_URL = server.url } })
    local all_inputs = server_stats(server).inputs
    H.stop_embed_server(server)
    os.remove(plan)
    assert.are.equal(0, code, err)
    assert.are.equal(N_VERSES, done.scale_out.run_totals.processed)
    assert.are.equal(all_inputs, H.scalar(url, "select coalesce(sum(chunks), 0) from ragops_token_usage"))
    assert.are.near(run_spend(url), done.spend.spent_usd, 1e-9)
  end)

  it("um processo com 8 lotes em voo para a menos de um lote do orçamento (19.14)", function()
    local url = H.migrated_db("ragops_it_so3_budget1", N_VERSES, N_FORTUNES)
    local plan = H.plan_file(plan_text())
    local server = H.start_embed_server("--latency-ms 80")
    local code, _, err, r = H.ragops(url, "run " .. H.q(plan) .. " --set entity_type=verse --in-flight 8 "
      .. "--budget-usd 1 --config " .. H.q(cfg), { report = true, env = { RAGOPS_EMBED_URL = server.url } })
    local embedded_inputs = server_stats(server).inputs
    H.stop_embed_server(server)
    os.remove(plan)
    assert.are.equal(3, code, err)
    local spent = run_spend(url)
    assert.is_true(spent <= 1 + BATCH_USD, ("gasto US$ %.4f no orçamento de US$ 1"):format(spent))
    assert.are.near(spent, r.spend.spent_usd, 1e-9)
    assert.are.equal(embedded_inputs, H.scalar(url, "select coalesce(sum(chunks), 0) from ragops_token_usage"))
  end)
end)
