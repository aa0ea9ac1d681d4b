-- model_dialect_spec.lua: a shadow served through another dialect (model
-- prepare --set provider.api=...) gets nothing of the configuration's
-- provider credentials or extra headers.
local model = require "ragops.vector.model"

describe("sombra em outro dialeto", function()
  it("não herda chave, cabeçalhos, limites nem chaves do Azure; a chave vem da variável do dialeto", function()
    local provider = { api = "voyage", api_key = "sk-openai", headers = { ["OpenAI-Organization"] = "org" },
                       limits = { max_inputs = 10 }, model = "voyage-3.5" }
    model.other_dialect(provider, function(name) return name == "VOYAGE_API_KEY" and "pa-voyage" or nil end)
    assert.are.equal("pa-voyage", provider.api_key)
    assert.are.same({}, provider.headers)
    assert.are.same({}, provider.limits)
    local without = { api = "cohere", api_key = "sk-openai", headers = {} }
    model.other_dialect(without, function() return nil end)
    assert.is_nil(without.api_key)
  end)

  it("target_cfg só troca as credenciais quando o dialeto muda", function()
    local cfg = { database = { table = "rag_documents" },
                  provider = { api = "openai", api_key = "sk-1", headers = { A = "b" }, limits = {} } }
    local same = model.target_cfg(cfg, { role = "shadow", storage = "real[]", model = "m2", dim = 8,
                                         provider = { url = "http://x/v1" } })
    assert.are.equal("sk-1", same.provider.api_key)
    local other = model.target_cfg(cfg, { role = "shadow", storage = "real[]", model = "m2", dim = 8,
                                          provider = { api = "ollama", url = "http://o:11434" } })
    assert.are.same({}, other.provider.headers)
    assert.are_not.equal("sk-1", other.provider.api_key)
  end)
end)
