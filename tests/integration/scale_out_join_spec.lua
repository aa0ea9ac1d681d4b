-- Integration: scale-out, finished (issue 25). A process whose plan has
-- another fingerprint refuses to join a run in progress (code 2, nothing
-- written); --join helps a run in progress and never starts (nor resumes)
-- one; each process's worker label is recorded on the units it claims, shown
-- by `ragops status` and carried by its scale-out metrics. Real PostgreSQL,
-- real embed-server (slowed down, so the runs overlap).
local H = require "tests.integration.helper"
local cjson = require "cjson"

local N_VERSES, N_FORTUNES = 400, 20

local PLAN_TEXT = [[
  local verses = source "verse" { sql = "select id, book, text, updated_at from verses",
    key = "id", updated_at = "updated_at",
    document = function(r) return { content = r.text, metadata = { livro = r.book } } end }
  local fortunes = source "fortune" { sql = "select id, text, updated_at from fortunes",
    key = "id", updated_at = "updated_at",
    document = function(r) return { content = r.text } end }
  return plan { name = "escala", sources = { verses, fortunes }, batch = { size = 4, in_flight = 2 },
    retry = { attempts = 5, base_ms = 20, max_ms = 200, timeout_s = 30 } }]]

-- Polls until sql (a count) reaches at least n; false after timeout_s.
local function wait_count(url, sql, n, timeout_s)
  for _ = 1, (timeout_s or 60) * 10 do
    if H.scalar(url, sql) >= n then return true end
    H.sleep(0.1)
  end
  return false
end

local function units_of(worker)
  return ("select count(*) from ragops_work_units where worker = '%s'"):format(worker)
end

describe("scale-out: impressão digital do plano, --join e workers", function()
  local plan, plan_v2, server
  -- H.cleanup stops every process a test started, the embed-server too: one per test.
  before_each(function() server = H.start_embed_server("--latency-ms 150") end)
  after_each(function()
    H.stop_embed_server(server)
    H.cleanup()
  end)

  setup(function()
    plan = H.plan_file(PLAN_TEXT)
    -- The same plan, another version (its text changed): another fingerprint.
    plan_v2 = H.plan_file(PLAN_TEXT .. "\n-- versão 2 do plano: mesmo nome, mesmos parâmetros\n")
  end)

  teardown(function()
    os.remove(plan)
    os.remove(plan_v2)
  end)

  local function start(url, args)
    return H.ragops_background(url, "run " .. args, { env = { RAGOPS_EMBED_URL = server.url } })
  end

  it("um processo com outra versão do plano é recusado (código 2) antes de pegar unidade, sem gravar nada", function()
    local url = H.migrated_db("ragops_it_join_fp", N_VERSES, N_FORTUNES)
    local a = start(url, H.q(plan) .. " --scale-out --worker a")
    assert.is_true(wait_count(url, units_of("a"), 1), "o processo A não pegou unidade: " .. H.read_all(a.err))
    local theirs = H.scalar(url, "select left(plan_fingerprint, 12) from ragops_runs")
    assert.matches("^%x+$", theirs)
    local runs_before = H.scalar(url, "select count(*) from ragops_runs")
    local code, _, err = H.ragops(url, "run " .. H.q(plan_v2) .. " --scale-out --worker b",
      { env = { RAGOPS_EMBED_URL = server.url } })
    assert.are.equal(2, code, err)
    assert.matches("outra versão do plano", err)
    assert.is_truthy(err:find("impressão digital " .. theirs, 1, true), err)
    local mine = err:match("a deste processo é (%x+)")
    assert.is_truthy(mine, err)
    assert.are.equal(12, #mine)
    assert.are_not.equal(theirs, mine)
    assert.matches("implante a mesma versão do plano", err)
    assert.matches("espere a execução terminar", err)
    assert.matches("Nada foi gravado", err)
    -- Nothing of B: no unit claimed under its label, no run, the run's fingerprint is A's.
    assert.are.equal(0, H.scalar(url, units_of("b")))
    assert.are.equal(runs_before, H.scalar(url, "select count(*) from ragops_runs"))
    assert.are.equal(theirs, H.scalar(url, "select left(plan_fingerprint, 12) from ragops_runs"))
    -- --join with the other version: refused the same way.
    code, _, err = H.ragops(url, "run " .. H.q(plan_v2) .. " --join --worker b",
      { env = { RAGOPS_EMBED_URL = server.url } })
    assert.are.equal(2, code, err)
    assert.matches("outra versão do plano", err)
    assert.are.equal(0, H.scalar(url, units_of("b")))
    -- A is unharmed and does the whole run.
    assert.are.equal(0, H.exit_code(a), H.read_all(a.err))
    assert.are.equal("done", H.scalar(url, "select status from ragops_runs"))
    assert.are.equal(0, H.scalar(url, "select count(*) from ragops_work_units where worker is distinct from 'a'"))
  end)

  it("--join sem execução em andamento: nada a fazer (código 0), nada gravado, nem retoma uma interrompida", function()
    local url = H.migrated_db("ragops_it_join_none", N_VERSES, N_FORTUNES)
    local code, _, err = H.ragops(url, "run " .. H.q(plan) .. " --join --worker b")
    assert.are.equal(0, code, err)
    assert.matches("nada a fazer: nenhuma execução %-%-scale%-out em andamento do plano \"escala\"", err)
    assert.are.equal(0, H.scalar(url, "select count(*) from ragops_runs"))
    assert.are.equal(0, H.scalar(url, "select count(*) from rag_documents"))
    -- A run interrupted (its only process killed): --join does not resume it.
    local a = start(url, H.q(plan) .. " --scale-out --worker a")
    assert.is_true(wait_count(url, units_of("a"), 1), "o processo A não pegou unidade: " .. H.read_all(a.err))
    H.sh("kill -9 " .. a.pid)
    H.exit_code(a)
    -- Its session (and the run's lock) ends once PostgreSQL sees the connection closed.
    for _ = 1, 100 do
      if H.scalar(url, "select count(*) from pg_locks where locktype = 'advisory' and objsubid = 2 "
        .. "and classid = 7265677 and database = (select oid from pg_database where datname = current_database())") == 0 then
        break
      end
      H.sleep(0.1)
    end
    local units = H.scalar(url, "select count(*) from ragops_work_units where status = 'pending'")
    code, _, err = H.ragops(url, "run " .. H.q(plan) .. " --join --worker b",
      { env = { RAGOPS_EMBED_URL = server.url } })
    assert.are.equal(0, code, err)
    assert.matches("nada a fazer", err)
    assert.are.equal(0, H.scalar(url, units_of("b")))
    assert.are.equal(units, H.scalar(url, "select count(*) from ragops_work_units where status = 'pending'"))
  end)

  it("--join ajuda uma execução em andamento: os dois pegam unidades, o status mostra os workers, as métricas têm o rótulo", function()
    local url = H.migrated_db("ragops_it_join_help", N_VERSES, N_FORTUNES)
    local prom_b = os.tmpname()
    local cfg_b = H.config_file(("metrics = { file = %q }"):format(prom_b))
    local a = start(url, H.q(plan) .. " --scale-out --worker a")
    assert.is_true(wait_count(url, units_of("a"), 1), "o processo A não pegou unidade: " .. H.read_all(a.err))
    local b = start(url, H.q(plan) .. " --join --worker b --config " .. H.q(cfg_b))
    assert.is_true(wait_count(url, units_of("b"), 1), "o processo B não pegou unidade: " .. H.read_all(b.err)
      .. "\nA: " .. H.read_all(a.err))
    -- Both stopped while status reads: the run is in progress, each holds a unit.
    H.sh("kill -STOP " .. a.pid .. " " .. b.pid)
    local code, out, err = H.ragops(url, "status --plan " .. H.q(plan))
    local jcode, jout = H.ragops(url, "status --json --plan " .. H.q(plan))
    H.sh("kill -CONT " .. a.pid .. " " .. b.pid)
    assert.are.equal(0, code, err)
    assert.matches("Processos do %-%-scale%-out em andamento %(por worker%):", out)
    assert.is_truthy(out:match("worker a: "), out .. "\nA: " .. H.read_all(a.err))
    assert.matches("worker a: %d+ unidade%(s%) concluída%(s%); em andamento: %a+ #%d+", out)
    assert.matches("worker b: %d+ unidade%(s%) concluída%(s%); em andamento: %a+ #%d+", out)
    assert.matches("último sinal há %d+ s", out)
    assert.matches("impressão digital do plano: %x+", out)
    assert.are.equal(0, jcode)
    local st = cjson.decode(jout)
    local seen = {}
    for _, w in ipairs(st.workers) do seen[w.worker] = w end
    assert.is_truthy(seen.a, jout)
    assert.is_truthy(seen.b, jout)
    assert.matches("#%d+", seen.b.in_progress)

    assert.are.equal(0, H.exit_code(a), H.read_all(a.err))
    assert.are.equal(0, H.exit_code(b), H.read_all(b.err))
    assert.matches("participando da execução", H.read_all(b.err))
    assert.are.equal("done", H.scalar(url, "select status from ragops_runs"))
    assert.are.equal(1, H.scalar(url, "select count(*) from ragops_runs"))
    assert.are.equal(0, H.scalar(url, "select count(*) from ragops_work_units where status <> 'done'"))
    assert.are.equal("a,b", H.scalar(url, "select string_agg(distinct worker, ',' order by worker) from ragops_work_units"))
    assert.are.equal(N_VERSES + N_FORTUNES, H.scalar(url, "select count(distinct entity_type || entity_id) from rag_documents"))
    -- B's metrics: the worker label on its scale-out counters only.
    local prom = H.read_all(prom_b)
    os.remove(prom_b)
    os.remove(cfg_b)
    local claimed = tonumber(prom:match('ragops_scale_out_units_claimed_total{plan="escala",worker="b"} (%d+)'))
    local done = tonumber(prom:match('ragops_scale_out_units_done_total{plan="escala",worker="b"} (%d+)'))
    assert.is_truthy(claimed and claimed >= 1, prom)
    assert.are.equal(H.scalar(url, units_of("b")), done)
    assert.is_nil(prom:match('ragops_documents_total{[^}]*worker='), "worker só nas métricas do scale-out")
  end)
end)
