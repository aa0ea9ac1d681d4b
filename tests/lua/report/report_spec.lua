-- report_spec.lua: pt-BR text report, number formatting and JSON report.

local cjson = require "cjson"
local report = require "ragops.report"

local RUN = {
  plan = "backfill", run_id = 12,
  processed = 33612, succeeded = 33600, failed = 12, skipped = 5, embedded = 33595, deleted = 3,
  elapsed_s = 72.4, tokens = 1234567, requests = 526,
  per_entity_type = {
    verse = { processed = 31102, succeeded = 31090, failed = 12, skipped = 5, deleted = 1 },
    fortune = { processed = 2510, succeeded = 2510, failed = 0, skipped = 0, deleted = 2 },
  },
}

local DRY = {
  plan = "backfill", dry_run = true, processed = 0, elapsed_s = 1.5,
  estimate = { documents = 33612, chunks = 34001, tokens = 2500000, requests = 526, batches = 526,
               cost_usd = 0.05, duration_s = 3725, skipped_unchanged = 10,
               per_entity_type = { verse = { documents = 31102, chunks = 31500, tokens = 2000000 } } },
}

local function line_with(text, label)
  for line in text:gmatch("[^\n]+") do
    if line:find(label, 1, true) then return line end
  end
  return nil
end

describe("report number formatting", function()
  it("uses pt-BR separators", function()
    assert.equal("33.612", report.format_count(33612))
    assert.equal("1.234.567", report.format_count(1234567))
    assert.equal("0", report.format_count(0))
    assert.equal("999", report.format_count(999))
    assert.equal("466,8", report.format_number(466.8, 1))
    assert.equal("1.234,50", report.format_number(1234.5, 2))
    assert.equal("-1.000", report.format_number(-1000))
    assert.equal("0,0", report.format_number(-0.01, 1))
    assert.equal("0", report.format_count(nil))
  end)

  it("formats durations", function()
    assert.equal("12,4 s", report.format_duration(12.4))
    assert.equal("1 min 12,4 s", report.format_duration(72.4))
    assert.equal("2 min 0,0 s", report.format_duration(119.97))
    assert.equal("1 h 02 min 05 s", report.format_duration(3725))
  end)

  it("formats US$", function()
    assert.equal("US$ 0,67", report.format_usd(0.67))
    assert.equal("US$ 1.234,00", report.format_usd(1234))
    assert.equal("US$ 0,0042", report.format_usd(0.0042))
    assert.equal("US$ 0,00", report.format_usd(0))
  end)
end)

describe("report.format", function()
  it("renders the run report in pt-BR", function()
    local text = report.format(RUN)
    assert.equal('Relatório do plano "backfill" (execução 12)', text:match("^[^\n]+"))
    assert.matches("processados: +33%.612\n", text)
    assert.matches("sucesso: +33%.600\n", text)
    assert.matches("falhas: +12\n", text)
    assert.matches("ignorados %(inalterados%): +5\n", text)
    assert.matches("embeddings gerados: +33%.595\n", text)
    assert.matches("removidos: +3\n", text)
    assert.matches("tokens: +1%.234%.567\n", text)
    assert.matches("requisições de embedding: +526\n", text)
    -- 33612 / 72.4 = 464.25 docs/s
    assert.matches("tempo decorrido: +1 min 12,4 s   %(464,3 documentos/s%)", text)
    assert.matches("verse: processados 31%.102, sucesso 31%.090, falhas 12", text)
    assert.matches("fortune: processados 2%.510", text)
    assert.matches("ragops failures list", text, 1, true)
    assert.is_nil(text:find("SIMULAÇÃO", 1, true))
  end)

  it("aligns the values in one column", function()
    local text = report.format(RUN)
    local first = line_with(text, "processados:")
    local accented = line_with(text, "requisições de embedding:")
    -- Same display column (code points) for the value.
    local function value_column(line)
      local prefix = line:match("^(.-:%s+)%S")
      local _, count = prefix:gsub("[^\128-\191]", "")
      return count
    end
    assert.equal(value_column(first), value_column(accented))
  end)

  it("omits throughput when nothing elapsed", function()
    local text = report.format { plan = "x", processed = 10, elapsed_s = 0 }
    assert.is_nil(text:find("documentos/s", 1, true))
    assert.matches('^Relatório do plano "x"\n', text)
  end)

  it("says clearly that a dry run wrote nothing and shows the estimate", function()
    local text = report.format(DRY)
    assert.truthy(text:find("SIMULAÇÃO (dry-run): nada foi gravado, nenhuma chamada de embedding feita", 1, true))
    assert.matches("documentos: +33%.612\n", text)
    assert.matches("trechos %(chunks%): +34%.001\n", text)
    assert.matches("tokens: +2%.500%.000\n", text)
    assert.matches("lotes: +526\n", text)
    assert.matches("custo estimado: +US%$ 0,05\n", text)
    assert.matches("duração estimada: +1 h 02 min 05 s\n", text)
    assert.matches("verse: 31%.102 documentos, 31%.500 trechos", text)
    assert.is_nil(text:find("fila de falhas", 1, true))
  end)

  it("lists fired alerts and abort reason", function()
    local text = report.format { plan = "x", aborted = "taxa de falhas 12% acima de 5%",
      alerts = { "taxa de falhas 12% acima de 5%" } }
    assert.truthy(text:find("ABORTADO: taxa de falhas 12% acima de 5%", 1, true))
    assert.truthy(text:find("- taxa de falhas 12% acima de 5%", 1, true))
    -- the runner passes { code = 3, reason = ... }
    text = report.format { plan = "x", aborted = { code = 3, reason = "p95 acima de 5000 ms" } }
    assert.truthy(text:find("ABORTADO: p95 acima de 5000 ms", 1, true))
  end)
end)

describe("report.json", function()
  it("keeps the English keys", function()
    local decoded = cjson.decode(report.json(RUN))
    assert.equal(33612, decoded.processed)
    assert.equal(33600, decoded.succeeded)
    assert.equal(12, decoded.failed)
    assert.equal(5, decoded.skipped)
    assert.equal(33595, decoded.embedded)
    assert.equal(3, decoded.deleted)
    assert.equal(72.4, decoded.elapsed_s)
    assert.is_false(decoded.dry_run)
    assert.equal("backfill", decoded.plan)
    assert.equal(12, decoded.run_id)
    assert.equal(1234567, decoded.tokens)
    assert.equal(526, decoded.requests)
    assert.near(464.254, decoded.throughput, 0.001)
    assert.equal(31102, decoded.per_entity_type.verse.processed)
    assert.is_nil(decoded.estimate)
  end)

  it("fills missing counters with 0 and includes the estimate for dry runs", function()
    local decoded = cjson.decode(report.json(DRY))
    assert.is_true(decoded.dry_run)
    for _, key in ipairs({ "processed", "succeeded", "failed", "skipped", "embedded", "deleted" }) do
      assert.equal(0, decoded[key])
    end
    local estimate = decoded.estimate
    assert.same({ 33612, 34001, 2500000, 526, 526, 0.05, 3725 },
      { estimate.documents, estimate.chunks, estimate.tokens, estimate.requests, estimate.batches,
        estimate.cost_usd, estimate.duration_s })
    assert.equal(10, estimate.skipped_unchanged)
    assert.equal(31500, estimate.per_entity_type.verse.chunks)
  end)

  it("always emits an estimate object for a dry run, even without data", function()
    local decoded = cjson.decode(report.json { dry_run = true })
    assert.equal(0, decoded.estimate.cost_usd)
    assert.equal(0, decoded.estimate.batches)
    assert.equal(cjson.null, decoded.run_id)
  end)

  it("survives NaN, infinity and functions in stats", function()
    local decoded = cjson.decode(report.json { processed = 0 / 0, elapsed_s = math.huge, hook = print })
    assert.equal(0, decoded.processed)
    assert.equal(0, decoded.elapsed_s)
    assert.is_nil(decoded.hook)
  end)
end)
