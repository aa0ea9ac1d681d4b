-- model_spec.lua: the pure parts of the blue/green model change
-- (ragops.vector.model): target names and cfg, the golden's compare thresholds,
-- the live x shadow comparison and the switch's refusals.
require "tests.lua.c_stubs"

local model = require "ragops.vector.model"

describe("ragops.vector.model: alvos", function()
  it("nomes da sombra e da anterior ao lado da tabela atual (com esquema)", function()
    assert.are.equal("rag_documents__shadow", model.table_for("rag_documents", "shadow"))
    assert.are.equal("rag.docs__previous", model.table_for("rag.docs", "previous"))
    assert.are.equal("rag.docs", model.table_for("rag.docs", "live"))
  end)

  it("--target: live e ausente são a tabela atual; outro valor é recusado", function()
    assert.is_nil(model.parse_target(nil))
    assert.is_nil(model.parse_target("live"))
    assert.are.equal("shadow", model.parse_target("shadow"))
    local target, err = model.parse_target("blue")
    assert.is_nil(target)
    assert.matches("%-%-target espera live ou shadow", err)
  end)

  it("a configuração da sombra vem do registro, sem mudar a original", function()
    local cfg = { database = { table = "rag.docs", storage = "auto", url = "postgresql://x" },
                  provider = { model = "m-1536", dim = 1536, dimensions = 1536, url = "http://a/v1", api_key = "k" },
                  log = {} }
    local out = model.target_cfg(cfg, { role = "shadow", model = "m-256", dim = 256, storage = "vector(256)",
                                        provider = { url = "http://b/v1" } })
    assert.are.equal("rag.docs__shadow", out.database.table)
    assert.are.equal("vector", out.database.storage)
    assert.are.same({ "m-256", 256, "http://b/v1", "k" },
      { out.provider.model, out.provider.dim, out.provider.url, out.provider.api_key })
    assert.is_nil(out.provider.dimensions, "dimensions do modelo antigo não vai para o novo")
    assert.are.equal("rag.docs", cfg.database.table)
    assert.are.equal("m-1536", cfg.provider.model)
    assert.are.equal("real[]", model.storage_of("real[]"))
    assert.are.equal("halfvec", model.storage_of("halfvec(3072)"))
  end)
end)

describe("ragops.vector.model: limites de compare do golden", function()
  local function check(value)
    return pcall(model.check_compare, value, function(key, message) error(key .. ": " .. message, 0) end)
  end

  it("aceita os limites conhecidos e nenhum", function()
    local ok, out = check({ max_recall_drop = 0.02, max_mrr_drop = 0, max_ndcg_drop = 1, max_p95_ms = 250 })
    assert.is_true(ok)
    assert.are.same({ max_recall_drop = 0.02, max_mrr_drop = 0, max_ndcg_drop = 1, max_p95_ms = 250 }, out)
    assert.are.same(model.COMPARE_DEFAULTS, select(2, check(nil)))
  end)

  it("sem a chave compare (ou sem um limite), vale o padrão: a troca nunca fica sem portão", function()
    assert.are.same({ max_recall_drop = 0.02, max_mrr_drop = 0.02, max_ndcg_drop = 0.02, max_p95_ms = 250 },
                    select(2, check(nil)))
    local _, out = check({ max_recall_drop = 0.1 })
    assert.are.same({ max_recall_drop = 0.1, max_mrr_drop = 0.02, max_ndcg_drop = 0.02, max_p95_ms = 250 }, out)
  end)

  it("recusa chave desconhecida, valor fora da faixa e não-tabela, nomeando a chave", function()
    local ok, err = check({ max_recal_drop = 0.1 })
    assert.is_false(ok)
    assert.matches("^compare%.max_recal_drop: desconhecida; chaves válidas: max_recall_drop", err)
    ok, err = check({ max_mrr_drop = 1.5 })
    assert.is_false(ok)
    assert.matches("^compare%.max_mrr_drop: valor 1.5 inválido", err)
    ok, err = check({ max_p95_ms = -1 })
    assert.is_false(ok)
    assert.matches("^compare%.max_p95_ms:", err)
    ok, err = check(0.1)
    assert.is_false(ok)
    assert.matches("^compare: esperada uma tabela", err)
  end)
end)

describe("ragops.vector.model: comparação atual x sombra", function()
  local live = { recall_at_k = 0.9, mrr = 0.8, hit_rate = 1, latency_ms = { p50 = 5, p95 = 10, p99 = 20 } }

  it("lado a lado com a diferença; aprovada dentro dos limites", function()
    local shadow = { recall = 0.89, mrr = 0.85, hit_rate = 1, latency_ms = { p95 = 12 } }
    local result = model.compare(live, shadow, { max_recall_drop = 0.02, max_p95_ms = 250 })
    assert.is_true(result.passed)
    assert.are.equal("recall@k", result.rows[1].label)
    assert.is_true(math.abs(result.rows[1].diff + 0.01) < 1e-9)
    assert.are.equal("latência p95 (ms)", result.rows[#result.rows].label)
    local text = model.format_compare(result, "docs (m-1536)", "docs__shadow (m-256)")
    assert.matches("recall@k%s+0,900%s+0,890%s+%-0,010", text)
    assert.matches("MRR%s+0,800%s+0,850%s+%+0,050", text)
    assert.matches("resultado: aprovado", text)
  end)

  it("reprovada quando uma queda passa do limite ou a p95 da sombra passa do teto", function()
    local shadow = { recall_at_k = 0.8, mrr = 0.8, ndcg = 0.5, hit_rate = 1, latency_ms = { p95 = 300 } }
    local result = model.compare(live, shadow, { max_recall_drop = 0.05, max_ndcg_drop = 0.01, max_p95_ms = 250 })
    assert.is_false(result.passed)
    assert.are.equal(2, #result.violations, "o nDCG da atual falta: não há queda a medir")
    assert.matches("recall@k caiu 0,100 %(de 0,900 para 0,800%), mais que max_recall_drop = 0,050", result.violations[1])
    assert.matches("latência p95 da sombra 300,0 ms acima de max_p95_ms = 250,0", result.violations[2])
    assert.matches("resultado: reprovado: recall@k caiu", model.format_compare(result, "a", "b"))
  end)

  it("uma queda exatamente no limite passa", function()
    assert.is_true(model.compare({ mrr = 0.5 }, { mrr = 0.48 }, { max_mrr_drop = 0.02 }).passed)
  end)
end)

describe("ragops.vector.model: portões da troca", function()
  local covered = { entities = 10, missing = 0, stale = 0 }

  it("cobertura, frescor e comparação, nesta ordem", function()
    assert.matches("não cobre 3 de 10 entidade", model.switch_refusal({ entities = 10, missing = 3, stale = 2 },
      { compare_passed = true }, false))
    assert.matches("desatualizada em 2 entidade%(s%).*ragops backfill %-%-target shadow",
      model.switch_refusal({ entities = 10, missing = 0, stale = 2 }, { compare_passed = true }, false))
    assert.matches("nunca foi comparada", model.switch_refusal(covered, {}, false))
    assert.matches("gravada depois da última comparação", model.switch_refusal(covered, { compare_passed = false }, true))
    assert.matches("reprovou a sombra", model.switch_refusal(covered, { compare_passed = false }, false))
    assert.is_nil(model.switch_refusal(covered, { compare_passed = true }, false))
  end)
end)
