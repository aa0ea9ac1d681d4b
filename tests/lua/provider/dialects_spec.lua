-- dialects_spec.lua: what each provider dialect asks of the C client
-- (endpoint, headers, body fields, answer layout), the limits and their
-- layers, the credential's environment variable, the proxy named.
local cjson = require "cjson"
local config = require "ragops.plan.config"
local dialects = require "ragops.provider.dialects"
local proxy = require "ragops.provider.proxy"

local function cfg_of(provider, env)
  local path = os.tmpname() .. "_dialect.lua"
  local f = assert(io.open(path, "wb"))
  f:write("return { provider = " .. provider .. " }")
  f:close()
  local cfg, err = config.load(path, function(name) return (env or {})[name] end)
  os.remove(path)
  return cfg, err
end

-- The body's fixed fields decoded (they are JSON members).
local function fields_of(opts)
  return cjson.decode("{" .. opts.body_fields .. "}")
end

describe("dialetos do provedor", function()
  it("openai: {url}/embeddings, Bearer, model e dimensions, answer data", function()
    local cfg = assert(cfg_of('{ url = "https://api.openai.com/v1/", model = "text-embedding-3-small", '
      .. 'dimensions = 512 }', { OPENAI_API_KEY = "sk-abc" }))
    local o = dialects.client_options(cfg.provider, "document", 30)
    assert.are.equal("https://api.openai.com/v1/embeddings", o.endpoint)
    assert.are.same({ "Authorization: Bearer sk-abc" }, o.headers)
    assert.are.same({ model = "text-embedding-3-small", dimensions = 512 }, fields_of(o))
    assert.are.equal("input", o.inputs_key)
    assert.are.equal("data", o.answer)
    assert.are.equal(30000, o.timeout_ms)
    assert.are.same({ max_inputs = 2048, max_request_tokens = 300000, max_input_tokens = 8192,
                      request_tokens = "bytes", truncate = false, tokens_per_byte = 0.25 },
      dialects.limits(cfg.provider))
  end)

  it("azure clássico: deployment na rota, api-version na query, cabeçalho api-key", function()
    local cfg = assert(cfg_of('{ api = "azure", url = "https://r.openai.azure.com", model = "text-embedding-3-small", '
      .. 'deployment = "emb prod", api_version = "2024-10-21" }', { AZURE_OPENAI_API_KEY = "az-key" }))
    local o = dialects.client_options(cfg.provider, "document", 30)
    assert.are.equal("https://r.openai.azure.com/openai/deployments/emb%20prod/embeddings?api-version=2024-10-21",
      o.endpoint)
    assert.are.same({ "api-key: az-key" }, o.headers)
  end)

  it("azure v1 com Entra: sem api-version, model = deployment, Bearer de AZURE_OPENAI_AD_TOKEN", function()
    local cfg = assert(cfg_of('{ api = "azure", url = "https://r.openai.azure.com", model = "m", '
      .. 'azure_auth = "entra" }', { AZURE_OPENAI_AD_TOKEN = "entra-token", AZURE_OPENAI_API_KEY = "other" }))
    local o = dialects.client_options(cfg.provider, "document", 30)
    assert.are.equal("https://r.openai.azure.com/openai/v1/embeddings", o.endpoint)
    assert.are.same({ "Authorization: Bearer entra-token" }, o.headers)
    assert.are.equal("m", fields_of(o).model)
  end)

  it("azure sem credencial é erro de configuração que diz a variável", function()
    local cfg, err = cfg_of('{ api = "azure", url = "https://r.openai.azure.com", model = "m" }')
    assert.is_nil(cfg)
    assert.truthy(err:find("AZURE_OPENAI_API_KEY", 1, true), err)
  end)

  it("a chave da OpenAI não vai para outro provedor", function()
    local cfg = assert(cfg_of('{ api = "cohere", url = "https://api.cohere.com", model = "embed-english-v3.0", '
      .. 'dim = 1024 }', { OPENAI_API_KEY = "sk-openai", CO_API_KEY = "co-key" }))
    assert.are.equal("co-key", cfg.provider.api_key)
    local o = dialects.client_options(cfg.provider, "document", 30)
    assert.are.same({ "Authorization: Bearer co-key" }, o.headers)
  end)

  it("ollama: /api/embed, truncate false, floats, linhas em embeddings e prompt_eval_count", function()
    local cfg = assert(cfg_of('{ api = "ollama", url = "http://localhost:11434", model = "nomic-embed-text:latest", dim = 768 }'))
    local o = dialects.client_options(cfg.provider, "document", 30)
    assert.are.equal("http://localhost:11434/api/embed", o.endpoint)
    assert.are.same({ model = "nomic-embed-text:latest", truncate = false }, fields_of(o))
    assert.are.same({}, o.headers)
    assert.are.equal("float", o.encoding)
    assert.are.equal("none", o.encoding_field)
    assert.are.same({ "embeddings" }, o.rows_path)
    assert.are.same({ "prompt_eval_count" }, o.usage_path)
    assert.are.equal(8192, dialects.limits(cfg.provider).max_input_tokens)
  end)

  it("tei: /embed com inputs, raiz é a lista, limites do /info sobre os padrões e provider.limits sobre tudo", function()
    local cfg = assert(cfg_of('{ api = "tei", url = "http://tei:8080", model = "bge", dim = 384, '
      .. 'limits = { max_inputs = 16 } }'))
    local o = dialects.client_options(cfg.provider, "document", 30)
    assert.are.equal("http://tei:8080/embed", o.endpoint)
    assert.are.equal("inputs", o.inputs_key)
    assert.are.same({}, o.rows_path)
    local tei = dialects.get("tei")
    local found = tei.limits_from_info({ max_client_batch_size = 64, max_input_length = 256, max_batch_tokens = 16384 })
    local limits = dialects.limits(cfg.provider, found)
    assert.are.equal(16, limits.max_inputs) -- the operator's setting wins
    assert.are.equal(256, limits.max_input_tokens)
    assert.are.equal(512, dialects.limits(cfg.provider).max_input_tokens)
  end)

  it("voyage e cohere: input_type de documento ao indexar e de consulta nas consultas de validação", function()
    local voyage = assert(cfg_of('{ api = "voyage", url = "https://api.voyageai.com/v1", model = "voyage-3.5", dim = 1024 }',
      { VOYAGE_API_KEY = "pa-key" }))
    assert.are.equal("document", fields_of(dialects.client_options(voyage.provider, "document", 1)).input_type)
    assert.are.equal("query", fields_of(dialects.client_options(voyage.provider, "query", 1)).input_type)
    assert.are.equal("base64_only", dialects.client_options(voyage.provider, "document", 1).encoding_field)
    assert.are.equal(320000, dialects.limits(voyage.provider).max_request_tokens)
    local cohere = assert(cfg_of('{ api = "cohere", url = "https://api.cohere.com", model = "embed-english-v3.0", dim = 1024 }'))
    local doc = fields_of(dialects.client_options(cohere.provider, "document", 1))
    assert.are.equal("search_document", doc.input_type)
    assert.are.same({ "float" }, doc.embedding_types)
    assert.are.equal("NONE", doc.truncate)
    assert.are.equal("search_query", fields_of(dialects.client_options(cohere.provider, "query", 1)).input_type)
    assert.are.equal("https://api.cohere.com/v2/embed", dialects.client_options(cohere.provider, "query", 1).endpoint)
    assert.are.equal(96, dialects.limits(cohere.provider).max_inputs)
  end)

  it("cabeçalhos extras vão depois da autenticação, em ordem de nome", function()
    local cfg = assert(cfg_of('{ headers = { ["OpenAI-Project"] = "p1", ["OpenAI-Organization"] = "org" } }',
      { OPENAI_API_KEY = "sk-x" }))
    assert.are.same({ "Authorization: Bearer sk-x", "OpenAI-Organization: org", "OpenAI-Project: p1" },
      dialects.client_options(cfg.provider, "document", 1).headers)
  end)
end)

describe("configuração dos dialetos", function()
  local function fails(provider, env, expected)
    local cfg, err = cfg_of(provider, env)
    assert.is_nil(cfg, "deveria falhar: " .. provider)
    assert.truthy(err:find(expected, 1, true), ("esperado %q em %q"):format(expected, err))
    return err
  end

  it("recusa dialeto desconhecido, chave do Azure em outro dialeto e limite inválido", function()
    fails('{ api = "bedrock" }', nil, '"openai", "azure", "ollama", "tei", "voyage", "cohere"')
    fails('{ api_version = "2024-10-21" }', nil, 'provider.api_version" só vale com provider.api = "azure"')
    fails('{ limits = { max_inputs = 0 } }', nil, "provider.limits.max_inputs")
    fails('{ limits = { max_batch = 3 } }', nil, 'chave "provider.limits.max_batch" desconhecida')
    fails('{ truncate = "sim" }', nil, "provider.truncate")
    fails('{ proxy = "proxy:3128" }', nil, "provider.proxy")
    fails('{ ca_file = "/nao/existe.pem" }', nil, "não foi possível ler o arquivo /nao/existe.pem")
  end)

  it("um cabeçalho inválido é recusado sem mostrar o valor (segredo)", function()
    local err = fails('{ headers = { ["X-Token"] = "segredo-123\\nX-Evil: 1" } }', nil, "provider.headers.X-Token")
    assert.is_nil(err:find("segredo-123", 1, true), err)
    fails('{ headers = { ["Content-Type"] = "text/plain" } }', nil, 'cabeçalho "Content-Type" não pode ser definido')
    fails('{ headers = { ["Má Nome"] = "x" } }', nil, "nomes de cabeçalho HTTP")
  end)

  it("valores de cabeçalhos são segredos mascarados e não aparecem na descrição", function()
    local cfg = assert(cfg_of('{ headers = { ["OpenAI-Organization"] = "org-secreta-777" } }'))
    local text = table.concat(config.describe(cfg), "\n")
    assert.truthy(text:find("OpenAI-Organization (valores ocultos)", 1, true), text)
    assert.is_nil(text:find("org-secreta-777", 1, true), text)
    local found = false
    for _, s in ipairs(config.secrets(cfg)) do found = found or s == "org-secreta-777" end
    assert.is_true(found, "o valor do cabeçalho deveria estar entre os segredos")
  end)
end)

describe("proxy nomeado", function()
  local function env(values) return function(name) return values[name] end end

  it("provider.proxy vence as variáveis; \"\" é nenhum; credenciais nunca aparecem", function()
    assert.are.equal("via proxy http://p:3128 (de provider.proxy)",
      proxy.describe("https://api.openai.com/v1/embeddings", "http://user:senha@p:3128", env({ https_proxy = "http://o:1" })))
    assert.is_nil(proxy.describe("https://api.openai.com/v1/embeddings", "", env({ https_proxy = "http://o:1" })))
  end)

  it("segue https_proxy/HTTPS_PROXY, http_proxy e ALL_PROXY pelo esquema, e NO_PROXY", function()
    local e = env({ HTTPS_PROXY = "http://s:1", http_proxy = "http://h:2", NO_PROXY = "localhost,.interno" })
    assert.are.equal("via proxy http://s:1 (de HTTPS_PROXY)", proxy.describe("https://api.x.com/v1", nil, e))
    assert.are.equal("via proxy http://h:2 (de http_proxy)", proxy.describe("http://tei:8080/embed", nil, e))
    assert.is_nil(proxy.describe("http://localhost:11434/api/embed", nil, e))
    assert.is_nil(proxy.describe("http://tei.interno:8080/embed", nil, e))
    assert.are.equal("via proxy http://a:3 (de ALL_PROXY)", proxy.describe("http://x/v1", nil, env({ ALL_PROXY = "http://a:3" })))
  end)
end)
