-- Integration (issue 14): calibrated token estimates and the spend budget,
-- against the real embed-server, whose usage.prompt_tokens counts words and
-- punctuation (not bytes/4) on English verses and Portuguese fortunes.
local H = require "tests.integration.helper"

-- Price high enough that budgets are in whole dollars: US$ 1 per 1000 tokens.
local PRICED = [[provider = { price_per_1m_tokens = { ["ragops-hash-1536"] = 1000 } }]]

local function off_by(estimate, actual) return math.abs(estimate - actual) / actual end

describe("custo: calibração e orçamento", function()
  after_each(function() H.cleanup() end)
  local cfg
  setup(function() cfg = H.config_file(PRICED) end)
  teardown(function() os.remove(cfg) end)

  it("depois de uma execução real, a estimativa por tipo fica a até 3% do que o provedor cobra", function()
    -- Each type past the calibration's minimum sample (1,000 verses; the
    -- fortunes, over 100,000 bytes).
    local url = H.migrated_db("ragops_it_cost_calib", 1000, 200)
    local args = " --config " .. H.q(cfg)
    -- Before any real run: bytes/4, more than 3% away from the provider's count.
    local _, _, _, before = H.ragops(url, "backfill --dry-run" .. args, { report = true })
    local code, _, err, first = H.ragops(url, "backfill" .. args, { report = true })
    assert.are.equal(0, code, err)
    for t, item in pairs(before.estimate.per_entity_type) do
      assert.are.equal("bytes_per_4", item.token_basis)
      assert.is_true(off_by(item.tokens, first.per_entity_type[t].tokens) > 0.03,
        ("bytes/4 já acertava %s: a regra do embed-server deveria diferir"):format(t))
    end
    local dcode, _, derr, dry = H.ragops(url, "backfill --dry-run --overwrite" .. args, { report = true })
    assert.are.equal(0, dcode, derr)
    local rcode, _, rerr, real = H.ragops(url, "backfill --overwrite" .. args, { report = true })
    assert.are.equal(0, rcode, rerr)
    for t, item in pairs(dry.estimate.per_entity_type) do
      assert.are.equal("calibrated", item.token_basis)
      assert.matches("calibrado pela execução %d+, [%d.]+ documentos", item.token_basis_text)
      assert.is_true(off_by(item.tokens, real.per_entity_type[t].tokens) <= 0.03,
        ("%s: estimado %d, cobrado %d"):format(t, item.tokens, real.per_entity_type[t].tokens))
    end
    local _, text = H.ragops(url, "backfill --dry-run --overwrite" .. args)
    assert.matches("tokens: calibrado pela execução", text)
  end)

  it("--budget-usd para a um lote do limite (código 3), mantém o checkpoint; retomar com mais orçamento conclui", function()
    local url = H.migrated_db("ragops_it_cost_budget", 300, 60)
    local args = " --config " .. H.q(cfg)
    local _, _, _, dry = H.ragops(url, "backfill --dry-run" .. args, { report = true })
    local total = dry.estimate.cost_usd
    local per_request = total / dry.estimate.requests
    local budget = math.floor(total / 2)
    local code, out, err, stopped = H.ragops(url, "backfill --budget-usd " .. budget .. args, { report = true })
    assert.are.equal(3, code, err)
    assert.matches("orçamento de US%$", err)
    assert.matches("gasto:", out)
    assert.is_true(stopped.spend.spent_usd <= budget, "passou do orçamento")
    assert.is_true(stopped.spend.spent_usd >= budget - 3 * per_request, "parou cedo demais")
    assert.are.near(budget - stopped.spend.spent_usd, stopped.spend.left_usd, 1e-6)
    assert.are.equal("aborted", H.scalar(url, "select status from ragops_runs order by id desc limit 1"))
    local rcode, _, rerr, resumed = H.ragops(url, "backfill --budget-usd " .. (budget * 4) .. args, { report = true })
    assert.are.equal(0, rcode, rerr)
    assert.is_true(resumed.resumed)
    assert.are.equal(360, resumed.processed)
    assert.are.equal(1, H.scalar(url, "select count(*) from ragops_runs where not dry_run"))
    assert.are.equal(360, H.scalar(url, "select count(distinct (entity_type, entity_id)) from rag_documents"))
  end)

  it("simulação cuja estimativa passa do orçamento diz isso e sai com 3; sem preço, orçamento é erro de uso", function()
    local url = H.migrated_db("ragops_it_cost_refuse", 50, 5)
    local code, _, err = H.ragops(url, "backfill --dry-run --budget-usd 0.5 --config " .. H.q(cfg))
    assert.are.equal(3, code, err)
    assert.matches("passa do orçamento", err)
    local ucode, _, uerr = H.ragops(url, "backfill --budget-usd 5", { env = { RAGOPS_EMBED_MODEL = "modelo-sem-preco" } })
    assert.are.equal(2, ucode, uerr)
    assert.matches("price_per_1m_tokens", uerr)
    assert.are.equal(0, H.scalar(url, "select count(*) from rag_documents"))
  end)
end)
