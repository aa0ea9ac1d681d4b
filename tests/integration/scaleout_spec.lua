-- Integration: --scale-out. Several ragops processes split one run into
-- work units (FOR UPDATE SKIP LOCKED under a lease); a killed process's unit
-- is taken over when its lease expires. Real PostgreSQL, real embed-server.
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
    retry = { attempts = 5, base_ms = 20, max_ms = 200, timeout_s = 5 } }]]

local function digest(url)
  return H.psql(url, [[select count(*), md5(string_agg(entity_type || entity_id || ':' || chunk_index || content_hash
    || md5(embedding::text), ',' order by entity_type, entity_id, chunk_index)) from rag_documents]])[1]
end

local function read_report(path)
  local text = H.read_all(path)
  os.remove(path)
  return text ~= "" and cjson.decode(text) or nil
end

describe("scale-out com unidades de trabalho", function()
  local plan, clean
  after_each(function() H.cleanup() end)

  setup(function()
    plan = H.plan_file(PLAN_TEXT)
    local url = H.migrated_db("ragops_it_scale_clean", N_VERSES, N_FORTUNES)
    local code, _, err = H.ragops(url, "run " .. H.q(plan))
    assert(code == 0, err)
    clean = digest(url)
  end)

  teardown(function() os.remove(plan) end)

  it("dois processos dividem a execução: cada unidade feita uma vez, resultado igual ao de um processo", function()
    local url = H.migrated_db("ragops_it_scale_two", N_VERSES, N_FORTUNES)
    local server = H.start_embed_server("--latency-ms 60")
    local reports, jobs = {}, {}
    for i = 1, 2 do
      reports[i] = os.tmpname()
      jobs[i] = H.ragops_background(url, "run " .. H.q(plan) .. " --scale-out --report-json " .. reports[i],
        { env = { RAGOPS_EMBED_URL = server.url } })
    end
    local codes = { H.exit_code(jobs[1]), H.exit_code(jobs[2]) }
    H.stop_embed_server(server)
    assert.are.same({ 0, 0 }, codes, H.read_all(jobs[1].err) .. H.read_all(jobs[2].err))
    local r1, r2 = read_report(reports[1]), read_report(reports[2])
    assert.is_true(r1.processed > 0 and r2.processed > 0, "os dois processos deveriam ter trabalhado")
    assert.are.equal(N_VERSES + N_FORTUNES, r1.processed + r2.processed)
    assert.are.equal(1, (r1.scale_out.finished_run and 1 or 0) + (r2.scale_out.finished_run and 1 or 0))
    local finisher = r1.scale_out.finished_run and r1 or r2
    assert.are.equal(N_VERSES + N_FORTUNES, finisher.scale_out.run_totals.processed)
    assert.are.equal(1, H.scalar(url, "select count(*) from ragops_runs"))
    assert.are.equal("done", H.scalar(url, "select status from ragops_runs"))
    assert.are.equal(0, H.scalar(url, "select count(*) from ragops_work_units where status <> 'done' or attempts <> 1"))
    assert.is_true(H.scalar(url, "select count(*) from ragops_work_units") >= 8)
    assert.are.same(clean, digest(url))
  end)

  it("kill -9 de um processo: o outro assume a unidade quando o lease expira", function()
    local url = H.migrated_db("ragops_it_scale_kill", N_VERSES, N_FORTUNES)
    local server = H.start_embed_server("--latency-ms 150")
    local report_b = os.tmpname()
    local a = H.ragops_background(url, "run " .. H.q(plan) .. " --scale-out --lease-s 2",
      { env = { RAGOPS_EMBED_URL = server.url } })
    H.sleep(0.4)
    local b = H.ragops_background(url, "run " .. H.q(plan) .. " --scale-out --lease-s 2 --report-json " .. report_b,
      { env = { RAGOPS_EMBED_URL = server.url } })
    H.sleep(0.6)
    assert.is_true(H.alive(a.pid), "o processo A terminou antes de ser morto")
    H.sh("kill -9 " .. a.pid)
    H.exit_code(a)
    local code = H.exit_code(b, 120)
    H.stop_embed_server(server)
    assert.are.equal(0, code, H.read_all(b.err))
    local rb = read_report(report_b)
    assert.is_true(rb.scale_out.finished_run)
    assert.matches("retomada de outro processo", H.read_all(b.err))
    assert.is_true(H.scalar(url, "select count(*) from ragops_work_units where attempts > 1") >= 1)
    assert.are.equal(0, H.scalar(url, "select count(*) from ragops_work_units where status <> 'done'"))
    assert.are.equal("done", H.scalar(url, "select status from ragops_runs"))
    assert.are.same(clean, digest(url))
  end)

  it("--scale-out recusa --entity-id e --dry-run (código 2)", function()
    local url = H.migrated_db("ragops_it_scale_usage", 10, 1)
    local code, _, err = H.ragops(url, "reindex --scale-out --entity-type verse --entity-id 3")
    assert.are.equal(2, code)
    assert.matches("entity%-id", err)
    code, _, err = H.ragops(url, "backfill --scale-out --dry-run")
    assert.are.equal(2, code)
    assert.matches("dry%-run", err)
  end)
end)
