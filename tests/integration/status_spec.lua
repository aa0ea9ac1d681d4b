-- Integration (issue 10): `ragops status` on a real database after real runs:
-- recent runs with totals, coverage and lag per entity type, open failures
-- by class, vector indexes; text in pt-BR, JSON with stable keys.
local H = require "tests.integration.helper"
local cjson = require "cjson"

describe("ragops status", function()
  after_each(function() H.cleanup() end)

  it("mostra execuções, cobertura, atraso e falhas em aberto", function()
    local url = H.migrated_db("ragops_it_status", 40, 6)
    local server = H.start_embed_server("--reject-pattern 'verse 1[0-2] of'")
    local code = H.ragops(url, "backfill", { env = { RAGOPS_EMBED_URL = server.url } })
    H.stop_embed_server(server)
    assert.are.equal(1, code)
    -- One indexed verse changes in the source after the run.
    H.psql(url, "update verses set text = text || ' (revisto)', updated_at = now() - interval '90 seconds' where id = 20")
    local scode, out, err = H.ragops(url, "status --json")
    assert.are.equal(0, scode, err)
    local st = cjson.decode(out)
    local run = st.runs[1]
    assert.are.equal("backfill", run.plan)
    assert.are.equal("done_with_failures", run.status)
    assert.are.equal(46, run.processed)
    assert.are.equal(3, run.failed)
    assert.is_false(run.alive)
    local by_type = {}
    for _, c in ipairs(st.coverage) do by_type[c.entity_type] = c end
    assert.are.equal(40, by_type.verse.source_rows)
    assert.are.equal(37, by_type.verse.indexed)
    assert.are.near(37 / 40, by_type.verse.coverage, 1e-9)
    assert.are.equal(4, by_type.verse.pending) -- 3 never indexed + 1 changed
    assert.is_true(by_type.verse.lag_s >= 90, "a mudança mais antiga tem ao menos 90 s")
    assert.are.equal(1, by_type.fortune.coverage)
    assert.are.equal(0, by_type.fortune.pending)
    assert.are.same({ { entity_type = "verse", error_class = "permanent", open = 3 } }, st.open_failures)
    local tcode, text = H.ragops(url, "status")
    assert.are.equal(0, tcode)
    assert.matches("Execuções recentes:", text)
    assert.matches("verse: 37 de 40 entidades indexadas %(92,5%%%)", text)
    assert.matches("verse / permanente: 3", text, 1, true)
    -- Empty lists stay lists in the JSON (no vector index here).
    assert.matches('"indexes":%[%]', out)
  end)

  it("sem as tabelas do ragops pede ragops migrate (código 2)", function()
    local url = H.fresh_db("ragops_it_status_empty")
    local code, _, err = H.ragops(url, "status")
    assert.are.equal(2, code)
    assert.matches("ragops migrate", err)
  end)
end)
