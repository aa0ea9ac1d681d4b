-- Integration (issue 19, points 5 and 8): numbers that must add up, with
-- the real binary and PostgreSQL. Entities whose document() gives nothing
-- are counted apart in the report (text, JSON, HTML), the metrics and
-- `ragops status` (text and JSON), out of coverage's denominator and of
-- the lag, remembered in ragops_no_document (set, kept, cleared); the
-- concurrency shown is the effective one; a dry-run shows one token total
-- and a tiny run does not calibrate it; an id the source never had is not
-- logged as removed.
local cjson = require "cjson"
local H = require "tests.integration.helper"

-- Verses; an empty text has no document (the plan's decision).
local PLAN = [[
  local verses = source "verse" { sql = "select id, book, chapter, verse, text, updated_at from verses",
    key = "id", updated_at = "updated_at",
    document = function(r)
      if r.text == "" then return nil end
      return { content = r.text }
    end }
  return plan { name = "numeros", sources = { verses }, batch = { size = 8, in_flight = 4 } }]]

local function coverage_of(url, plan, entity_type)
  local code, out, err = H.ragops(url, "status --json --plan " .. H.q(plan))
  assert.are.equal(0, code, err)
  for _, c in ipairs(cjson.decode(out).coverage) do
    if c.entity_type == entity_type then return c end
  end
  error("sem cobertura de " .. entity_type .. ": " .. out)
end

-- The source's rows add up: up to date + no document + pending.
local function assert_adds_up(c)
  assert.are.equal(c.source_rows, c.up_to_date + c.no_document + c.pending,
    ("em dia %s + sem documento %s + pendentes %s ~= linhas %s"):format(c.up_to_date, c.no_document,
      c.pending, c.source_rows))
end

describe("números que fecham (issue 19)", function()
  local url, plan, dir, cfg

  setup(function()
    url = H.migrated_db("ragops_it_numbers", 40, 0)
    H.psql(url, "update verses set text = '' where id % 5 = 0") -- 8 verses without a document
    plan = H.plan_file(PLAN)
    dir = os.tmpname(); os.remove(dir); H.sh("mkdir -p " .. H.q(dir))
    cfg = H.plan_file(("return { metrics = { file = %q } }"):format(dir .. "/metrics.prom"))
  end)

  teardown(function()
    H.cleanup()
    H.sh("rm -rf " .. H.q(dir))
    os.remove(plan); os.remove(cfg)
  end)

  local function run(args)
    return H.ragops(url, ("run %s %s"):format(H.q(plan), args or ""), { report = true })
  end

  it("sem documento por decisão do plano: à parte no relatório, nas métricas, no HTML e no status", function()
    local code, out, err, report = H.ragops(url, ("run %s --config %s --report-html %s"):format(H.q(plan),
      H.q(cfg), H.q(dir .. "/r.html")), { report = true })
    assert.are.equal(0, code, err)
    assert.are.equal(8, report.no_document, "no_document no JSON")
    assert.are.equal(0, report.skipped, "nada foi ignorado por estar inalterado")
    assert.are.equal(32, report.succeeded)
    assert.are.equal(report.processed, report.succeeded + report.failed + report.skipped + report.no_document)
    assert.matches("sem documento por decisão do plano: +8\n", out)
    assert.matches("sem documento por decisão do plano", H.read_all(dir .. "/r.html"), 1, true)
    local prom = H.read_all(dir .. "/metrics.prom")
    assert.matches('ragops_coverage_ratio{entity_type="verse",plan="numeros"} 1\n', prom, 1, true)
    assert.matches('ragops_no_document_entities{entity_type="verse",plan="numeros"} 8\n', prom, 1, true)
    assert.are.equal(8, H.scalar(url, "select count(*) from ragops_no_document where entity_type = 'verse'"))
    local c = coverage_of(url, plan, "verse")
    assert.are.same({ 40, 32, 32, 8, 0, 0, 1, 0 }, { c.source_rows, c.indexed, c.up_to_date, c.no_document,
      c.pending, c.stale, c.coverage, c.lag_s })
    assert_adds_up(c)
    local scode, text = H.ragops(url, "status --plan " .. H.q(plan))
    assert.are.equal(0, scode, text)
    assert.matches("verse: 32 de 32 entidades indexadas (100,0%); na fonte 40 = 32 em dia + 8 sem documento "
      .. "por decisão do plano + 0 pendente(s)", text, 1, true)
  end)

  it("a reexecução conta as mesmas 8 sem regravar as marcas", function()
    local first = H.scalar(url, "select max(run_id) from ragops_no_document")
    local code, _, err, report = run()
    assert.are.equal(0, code, err)
    assert.are.equal(8, report.no_document)
    assert.are.equal(32, report.skipped)
    assert.are.equal(8, H.scalar(url, ("select count(*) from ragops_no_document where run_id = %d"):format(first)))
  end)

  it("as marcas acompanham a fonte: ganhou texto, perdeu texto, mudou sem texto", function()
    H.psql(url, "update verses set text = 'agora com texto', updated_at = now() where id = 5")
    local code, _, err = run()
    assert.are.equal(0, code, err)
    assert.are.equal(0, H.scalar(url, "select count(*) from ragops_no_document where entity_id = '5'"))
    local c = coverage_of(url, plan, "verse")
    assert.are.same({ 33, 7, 0 }, { c.up_to_date, c.no_document, c.pending })
    -- An indexed verse loses its text: pending (its document is stale) until a run.
    H.psql(url, "update verses set text = '', updated_at = now() - interval '90 seconds' where id = 1")
    c = coverage_of(url, plan, "verse")
    assert.are.same({ 32, 7, 1, 1 }, { c.up_to_date, c.no_document, c.pending, c.stale })
    assert.is_true(c.lag_s >= 90, "atraso " .. tostring(c.lag_s))
    assert_adds_up(c)
    code, _, err = run()
    assert.are.equal(0, code, err)
    assert.are.equal(0, H.scalar(url, "select count(*) from rag_documents where entity_id = '1'"))
    c = coverage_of(url, plan, "verse")
    assert.are.same({ 32, 8, 0, 1 }, { c.up_to_date, c.no_document, c.pending, c.coverage })
    -- A verse without text changes (still without): pending again, with its lag.
    H.psql(url, "update verses set updated_at = now() - interval '60 seconds' where id = 10")
    c = coverage_of(url, plan, "verse")
    assert.are.same({ 32, 7, 1, 0 }, { c.up_to_date, c.no_document, c.pending, c.stale })
    assert.is_true(c.lag_s >= 60, "atraso " .. tostring(c.lag_s))
    code, _, err = run()
    assert.are.equal(0, code, err)
    c = coverage_of(url, plan, "verse")
    assert.are.same({ 32, 8, 0, 0 }, { c.up_to_date, c.no_document, c.pending, c.lag_s })
  end)

  it("id pedido que a fonte não tem: o log só diz removido quando removeu, e a marca sai", function()
    H.psql(url, "delete from verses where id = 15") -- had no document, only a marker
    local code, out, err, report = run("--entity-type verse --entity-id 15,99999")
    assert.are.equal(0, code, err)
    assert.are.equal(0, report.deleted)
    assert.is_nil(err:find("removido(s)", 1, true), err)
    assert.matches("entidade verse 99999 não existe na fonte e não tinha documentos no índice; nada removido",
      out .. err, 1, true)
    assert.are.equal(0, H.scalar(url, "select count(*) from ragops_no_document where entity_id = '15'"))
    H.psql(url, "delete from verses where id = 2")
    code, _, err, report = run("--entity-type verse --entity-id 2")
    assert.are.equal(0, code, err)
    assert.are.equal(1, report.deleted)
    assert.matches("entidade verse 2 não existe mais na fonte; 1 documento(s) removido(s)", err, 1, true)
  end)

  it("a concorrência mostrada é a efetiva (janela do limitador dentro de in_flight)", function()
    local slow = H.start_embed_server("--latency-ms 30")
    local lcfg = H.plan_file("return { log = { progress_every_s = 0.05 }, "
      .. "provider = { rate_limits = { max_concurrency = 8 } } }")
    H.psql(url, "truncate rag_documents")
    local code, _, err, report = H.ragops(url, ("run %s --config %s"):format(H.q(plan), H.q(lcfg)),
      { report = true, env = { RAGOPS_EMBED_URL = slow.url } })
    H.stop_embed_server(slow); os.remove(lcfg)
    assert.are.equal(0, code, err)
    assert.are.equal(4, report.limits.in_flight)
    assert.are.equal(4, report.rate_limit.concurrency, "rate_limit.concurrency com in_flight 4")
    assert.is_truthy(err:find("concorrência 4", 1, true), err)
    assert.is_nil(err:find("concorrência 8", 1, true), err)
  end)

  it("simulação: um só total de tokens, e uma execução pequena não calibra a estimativa", function()
    local code, out, err, report = run("--dry-run --overwrite")
    assert.are.equal(0, code, err)
    local est = report.estimate
    assert.are.equal(est.tokens, report.tokens, "tokens do relatório x da estimativa")
    assert.are.equal(est.per_entity_type.verse.tokens, report.per_entity_type.verse.tokens)
    local totals = {}
    for n in out:gmatch("\n +tokens: +([%d.]+)") do totals[n] = true end
    assert.are.equal(1, #(function() local l = {} for n in pairs(totals) do l[#l + 1] = n end return l end)(),
      "mais de um total de tokens:\n" .. out)
    -- The real runs so far billed a few dozen verses: not a sample.
    assert.are.equal("bytes_per_4", est.per_entity_type.verse.token_basis)
    assert.matches("abaixo do mínimo de 1.000 documentos ou 100.000 bytes", est.per_entity_type.verse.token_basis_text,
      1, true)
    assert.is_nil(out:find("calibrado pela", 1, true), out)
  end)
end)
