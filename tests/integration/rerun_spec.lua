-- Integration (issue 11): the re-run over unchanged data on the real
-- PostgreSQL. The stored hashes, metadata and open dead letters come with
-- the page (one query for several units), a unit that changes nothing opens
-- no write transaction (counted by the updates of the run's row, which every
-- write transaction makes), and what did change is still found: metadata
-- alone, source_updated_at alone, a chunked text, an open dead letter.
local H = require "tests.integration.helper"

local PLAN = [[
  local verses = source "verse" { sql = "select id, book, chapter, verse, text, updated_at from verses",
    key = "id", updated_at = "updated_at",
    document = function(r) return { content = r.text, metadata = { livro = r.book, capitulo = r.chapter } } end }
  local fortunes = source "fortune" { sql = "select id, text, updated_at from fortunes",
    key = "id", updated_at = "updated_at",
    document = function(r) return { content = r.text, metadata = { n = r.id, tags = { "a", "b" } } } end }
  return plan { name = "reexecucao", sources = { verses, fortunes },
    batch = { size = 2, in_flight = 2 }, chunking = { max_chars = 400, overlap = 40 } }]]

local N_VERSES, N_FORTUNES = 120, 20
local UNITS = (N_VERSES + N_FORTUNES) / 2

-- Updates of ragops_runs rows so far (the statistics of a backend arrive
-- when it ends: read until two reads agree).
local function run_row_updates(url)
  local sql = "select n_tup_upd from pg_stat_user_tables where relname = 'ragops_runs'"
  local last, n = nil, H.scalar(url, sql)
  for _ = 1, 30 do
    if n == last then break end
    H.sleep(0.2)
    last, n = n, H.scalar(url, sql)
  end
  return n
end

describe("reexecução sobre dados inalterados", function()
  local url, plan
  setup(function()
    url = H.migrated_db("ragops_it_rerun", N_VERSES, N_FORTUNES)
    plan = H.plan_file(PLAN)
    local code, _, err = H.ragops(url, "run " .. H.q(plan))
    assert.are.equal(0, code, err)
  end)
  teardown(function() os.remove(plan) end)
  after_each(function() H.cleanup() end)

  it("nenhuma unidade abre transação de gravação e nada é pedido ao provedor", function()
    local requests, before = H.embed_requests(), run_row_updates(url)
    local code, _, err, report = H.ragops(url, "run " .. H.q(plan), { report = true })
    assert.are.equal(0, code, err)
    assert.are.equal(N_VERSES + N_FORTUNES, report.skipped)
    assert.are.equal(0, report.refreshed or 0)
    assert.are.equal(requests, H.embed_requests())
    -- Before, every unit's transaction updated the run's row (its checkpoint).
    local updates = run_row_updates(url) - before
    assert.is_true(updates < UNITS / 4, ("%d atualizações da linha da execução para %d unidades"):format(updates, UNITS))
  end)

  it("metadados sozinhos, updated_at sozinho e um texto em chunks mudados são encontrados", function()
    H.psql(url, [[update verses set book = 'Rev' where id = 7;
                  update verses set updated_at = '2025-02-02' where id = 8;
                  update fortunes set updated_at = '2025-03-03' where id = 10]])
    local chunks = H.scalar(url, "select count(*) from rag_documents where entity_type = 'fortune' and entity_id = '10'")
    assert.is_true(chunks > 1)
    local requests = H.embed_requests()
    local code, _, err, report = H.ragops(url, "run " .. H.q(plan), { report = true })
    assert.are.equal(0, code, err)
    assert.are.equal(requests, H.embed_requests())
    assert.are.equal(2 + chunks, report.refreshed)
    assert.are.equal("Rev", H.scalar(url, "select metadata->>'livro' from rag_documents where entity_type = 'verse' and entity_id = '7'"))
    assert.matches("^2025%-02%-02", H.scalar(url, "select source_updated_at::text from rag_documents where entity_type = 'verse' and entity_id = '8'"))
    assert.are.equal(chunks, H.scalar(url, [[select count(*) from rag_documents where entity_type = 'fortune'
                                              and entity_id = '10' and source_updated_at = '2025-03-03']]))
  end)

  it("a falha aberta de uma entidade inalterada é resolvida", function()
    H.psql(url, [[insert into ragops_failures (run_id, entity_type, entity_id, error_class, message, attempts)
                  values (null, 'verse', '33', 'transient', 'teste', 1)]])
    local code, _, err = H.ragops(url, "run " .. H.q(plan))
    assert.are.equal(0, code, err)
    assert.are.equal(0, H.scalar(url, "select count(*) from ragops_failures where resolved_at is null"))
  end)
end)
