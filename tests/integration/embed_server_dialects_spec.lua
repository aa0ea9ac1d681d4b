-- embed_server_dialects_spec.lua: the embed-server speaks each provider's
-- dialect (--api openai|azure|ollama|tei|voyage|cohere, issue 23) end to end
-- over HTTP: the happy answer's shape, each limit's refusal (status, error
-- body, size_errors), authentication (Azure's api-version and keys),
-- TEI's /info, truncation, the same vectors as the OpenAI dialect for the
-- same texts, fault injection in every dialect, and /stats. No database.
local cjson = require "cjson"
local H = require "tests.integration.helper"

local DIM = 16
local TEXTS = { "No princípio era o Verbo", "zebra", "Quem não arrisca, não petisca." }

-- "w1 w2 ... wn": n tokens, each a different word (first..last).
local function words(first, last)
  local out = {}
  for i = first, last do out[#out + 1] = "w" .. i end
  return table.concat(out, " ")
end

-- n copies of text.
local function copies(text, n)
  local out = {}
  for i = 1, n do out[i] = text end
  return out
end

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

-- An HTTP call to server (body: a table sent as JSON, or nil for a GET).
-- Returns status (0 when nothing came back), the decoded body (nil when it
-- is not JSON), the raw body and the response head.
local function call(server, path, body, opts)
  opts = opts or {}
  local req, out, head = os.tmpname(), os.tmpname(), os.tmpname()
  local args = { "curl -sS --max-time " .. (opts.max_time or 60), "-o", H.q(out), "-D", H.q(head),
                 "-w", H.q("%{http_code}") }
  if body then
    write(req, type(body) == "string" and body or cjson.encode(body))
    args[#args + 1] = "-H 'Content-Type: application/json' --data-binary @" .. H.q(req)
  end
  for _, h in ipairs(opts.headers or {}) do args[#args + 1] = "-H " .. H.q(h) end
  args[#args + 1] = H.q(server.base .. path)
  local _, status = H.sh(table.concat(args, " "))
  local text, head_text = H.read_all(out), H.read_all(head)
  os.remove(req); os.remove(out); os.remove(head)
  local ok, decoded = pcall(cjson.decode, text)
  return tonumber(status) or 0, ok and decoded or nil, text, head_text
end

local function stats(server)
  local status, body = call(server, "/stats")
  assert.are.equal(200, status)
  return body
end

-- How each dialect is asked to embed texts, where its vectors are in the
-- answer and where the message of its errors is.
local DIALECTS = {
  openai = {
    path = "/v1/embeddings",
    body = function(texts) return { model = "m", input = texts } end,
    vectors = function(r) local v = {} for i, d in ipairs(r.data) do v[i] = d.embedding end return v end,
    message = function(r) return r.error.message end,
  },
  azure = {
    path = "/openai/deployments/implantacao-1/embeddings?api-version=2024-10-21",
    headers = { "api-key: chave-azure" },
    body = function(texts) return { input = texts } end,
    vectors = function(r) local v = {} for i, d in ipairs(r.data) do v[i] = d.embedding end return v end,
    message = function(r) return r.error.message end,
  },
  ollama = {
    path = "/api/embed",
    body = function(texts) return { model = "m", input = texts } end,
    vectors = function(r) return r.embeddings end,
    message = function(r) return r.error end,
  },
  tei = {
    path = "/embed",
    body = function(texts) return { inputs = texts } end,
    vectors = function(r) return r end,
    message = function(r) return r.error end,
  },
  voyage = {
    path = "/v1/embeddings",
    body = function(texts) return { model = "voyage-3", input = texts } end,
    vectors = function(r) local v = {} for i, d in ipairs(r.data) do v[i] = d.embedding end return v end,
    message = function(r) return r.detail end,
  },
  cohere = {
    path = "/v2/embed",
    body = function(texts)
      return { model = "embed-v4.0", texts = texts, input_type = "search_document", embedding_types = { "float" } }
    end,
    vectors = function(r) return r.embeddings.float end,
    message = function(r) return r.message end,
  },
}
local NAMES = { "openai", "azure", "ollama", "tei", "voyage", "cohere" }

-- Starts a server of dialect name (with more flags); stopped by stop_all.
local started = {}
local function start(name, flags)
  local server = H.start_embed_server(("--api %s --dim %d %s"):format(name, DIM, flags or ""))
  started[#started + 1] = server
  return server
end

local function stop_all()
  for _, server in ipairs(started) do H.stop_embed_server(server) end
  started = {}
end

-- Embeds texts through dialect name (extra fields merged into the body).
local function embed(server, name, texts, extra, opts)
  local d = DIALECTS[name]
  local body = d.body(texts)
  for k, v in pairs(extra or {}) do body[k] = v end
  opts = opts or {}
  opts.headers = opts.headers or d.headers
  return call(server, opts.path or d.path, body, opts)
end

describe("embed-server: dialetos dos provedores (--api)", function()
  local reference -- an OpenAI-dialect server: the vectors every dialect must give

  -- The OpenAI dialect's vectors of texts.
  local function expected(texts)
    local status, body = embed(reference, "openai", texts)
    assert.are.equal(200, status)
    return DIALECTS.openai.vectors(body)
  end

  setup(function()
    reference = H.start_embed_server(("--dim %d --max-inputs 0 --max-input-tokens 0 --max-request-tokens 0"):format(DIM))
  end)
  teardown(function() H.stop_embed_server(reference) end)
  after_each(stop_all)

  it("cada dialeto devolve os mesmos vetores que o da OpenAI para os mesmos textos", function()
    local want = expected(TEXTS)
    assert.are.equal(#TEXTS, #want)
    for _, name in ipairs(NAMES) do
      local server = start(name)
      local status, body, raw = embed(server, name, TEXTS)
      assert.are.equal(200, status, name .. ": " .. raw)
      assert.are.same(want, DIALECTS[name].vectors(body), name)
      assert.are.equal(name, stats(server).api)
      local missing
      status, missing = call(server, "/nao-existe", {})
      assert.are.equal(404, status, name)
      assert.are.equal("string", type(DIALECTS[name].message(missing)), name)
    end
  end)

  it("openai: forma da resposta e limites padrão (2048 entradas, 8192 tokens por entrada, 300000 por pedido em bytes/4)", function()
    local server = start("openai")
    local status, body = embed(server, "openai", TEXTS)
    assert.are.equal(200, status)
    assert.are.equal("list", body.object)
    assert.are.equal("m", body.model)
    assert.are.equal(0, body.data[1].index)
    assert.are.equal(13, body.usage.prompt_tokens) -- 5 + 1 + 7 (words and punctuation)

    local message
    status, body = embed(server, "openai", copies("a", 2049))
    assert.are.equal(400, status)
    message = body.error.message
    assert.are.equal("too_many_inputs", body.error.code)
    assert.truthy(message:find("2049", 1, true) and message:find("2048", 1, true), message)

    status, body = embed(server, "openai", { "ok", words(1, 8193) })
    assert.are.equal(400, status)
    message = body.error.message
    assert.are.equal("context_length_exceeded", body.error.code)
    assert.truthy(message:find("entrada 1", 1, true) and message:find("8193", 1, true)
      and message:find("8192", 1, true), message)
    status = embed(server, "openai", { words(1, 8192) })
    assert.are.equal(200, status)

    -- two one-token inputs of 700000 bytes: the tokenizer says 2, OpenAI's
    -- estimate ceil(bytes/4) says 350000 > 300000
    local long = string.rep("a", 700000)
    status, body = embed(server, "openai", { long, long })
    assert.are.equal(400, status)
    message = body.error.message
    assert.are.equal("max_tokens_per_request", body.error.type)
    assert.are.equal("max_tokens_per_request", body.error.code)
    assert.truthy(message:find("350000", 1, true) and message:find("300000", 1, true), message)
    status = embed(server, "openai", { long })
    assert.are.equal(200, status)

    local s = stats(server)
    assert.are.equal(3, s.size_errors)
    assert.are.equal(3, s.bad_requests)
    assert.are.equal(2049, s.max_inputs_seen)
    assert.are.equal("", s.last_input_type)
  end)

  it("os limites se trocam por --max-inputs, --max-input-tokens e --max-request-tokens (0 = sem limite)", function()
    local server = start("openai", "--max-inputs 2 --max-input-tokens 3 --max-request-tokens 2")
    assert.are.equal(400, (embed(server, "openai", { "a", "b", "c" })))
    assert.are.equal(400, (embed(server, "openai", { "a b c d" })))
    assert.are.equal(400, (embed(server, "openai", { "abcdefgh", "ijklmnop", })))  -- 2 + 2 estimated > 2
    assert.are.equal(200, (embed(server, "openai", { "abcd", "efgh" })))          -- 1 + 1
    assert.are.equal(3, stats(server).size_errors)
    local free = start("openai", "--max-inputs 0 --max-input-tokens 0 --max-request-tokens 0")
    assert.are.equal(200, (embed(free, "openai", copies("a", 2100))))
    assert.are.equal(200, (embed(free, "openai", { words(1, 9000) })))
    assert.are.equal(0, stats(free).size_errors)
  end)

  it("azure: rota clássica com api-version, rota v1, api-key ou Bearer; sem chave é sempre 401", function()
    local server = start("azure", "--api-key chave-azure")
    local status, body = embed(server, "azure", TEXTS)
    assert.are.equal(200, status)
    assert.are.equal("implantacao-1", body.model)
    assert.are.equal("list", body.object)
    assert.are.equal(200, (embed(server, "azure", TEXTS, nil, { headers = { "Authorization: Bearer chave-azure" } })))
    assert.are.equal(401, (embed(server, "azure", TEXTS, nil, { headers = { "api-key: errada" } })))
    assert.are.equal(401, (embed(server, "azure", TEXTS, nil, { headers = {} })))
    status, body = embed(server, "azure", TEXTS, nil,
      { path = "/openai/deployments/implantacao-1/embeddings" })
    assert.are.equal(400, status)
    assert.truthy(body.error.message:find("api-version", 1, true), body.error.message)
    status, body = embed(server, "azure", TEXTS, { model = "implantacao-2" }, { path = "/openai/v1/embeddings" })
    assert.are.equal(200, status)
    assert.are.equal("implantacao-2", body.model)
    assert.are.equal(400, (embed(server, "azure", TEXTS, nil, { path = "/openai/v1/embeddings" }))) -- no model
    assert.are.equal(400, (embed(server, "azure", copies("a", 2049))))
    assert.are.equal(1, stats(server).size_errors)

    local open = start("azure") -- no --api-key: any key goes, none is still 401
    assert.are.equal(401, (embed(open, "azure", TEXTS, nil, { headers = {} })))
    assert.are.equal(200, (embed(open, "azure", TEXTS, nil, { headers = { "api-key: qualquer" } })))
    assert.are.equal(200, (embed(open, "azure", TEXTS, nil, { headers = { "Authorization: Bearer token-entra" } })))
  end)

  it("ollama: /api/embed, truncate (padrão true) contra o comprimento de contexto, sem limite de entradas", function()
    local server = start("ollama")
    local status, body = embed(server, "ollama", TEXTS, { keep_alive = "5m" })
    assert.are.equal(200, status)
    assert.are.equal("m", body.model)
    assert.are.equal(#TEXTS, #body.embeddings)
    assert.is_nil(body.data)
    assert.are.equal(13, body.prompt_eval_count)
    assert.are.equal("number", type(body.total_duration))
    assert.are.equal("number", type(body.load_duration))

    status, body = embed(server, "ollama", { words(1, 8193) }, { truncate = false })
    assert.are.equal(400, status)
    assert.are.same({ error = "the input length exceeds the context length" }, body)
    status, body = embed(server, "ollama", { words(1, 8193) }) -- truncated: its first 8192 tokens
    assert.are.equal(200, status)
    assert.are.equal(8192, body.prompt_eval_count)
    assert.are.same(expected({ words(1, 8192) }), body.embeddings)
    assert.are_not.same(expected({ words(1, 8193) }), body.embeddings)
    assert.are.equal(200, (embed(server, "ollama", copies("a", 3000))))
    local s = stats(server)
    assert.are.equal(1, s.size_errors)
    assert.are.equal(3000, s.max_inputs_seen)
    assert.are.equal(400, (embed(server, "ollama", TEXTS, { truncate = "sim" })))

    local locked = start("ollama", "--api-key chave-ollama")
    assert.are.equal(401, (embed(locked, "ollama", TEXTS)))
    assert.are.equal(200, (embed(locked, "ollama", TEXTS, nil, { headers = { "Authorization: Bearer chave-ollama" } })))
    local bad_usage = start("ollama", "--bad-usage-rate 1")
    status, body = embed(bad_usage, "ollama", TEXTS)
    assert.are.equal(200, status)
    assert.are.equal(-1, body.prompt_eval_count)
  end)

  it("tei: /embed responde uma lista de vetores, GET /info mostra os limites, 413 Validation acima deles", function()
    local server = start("tei")
    local status, info = call(server, "/info")
    assert.are.equal(200, status)
    assert.are.equal(512, info.max_input_length)
    assert.are.equal(16384, info.max_batch_tokens)
    assert.are.equal(32, info.max_client_batch_size)
    assert.are.equal(false, info.auto_truncate)
    assert.are.equal("string", type(info.model_id))
    assert.are.equal("string", type(info.version))
    assert.are.equal("table", type(info.model_type))

    local body
    status, body = embed(server, "tei", TEXTS, { normalize = true })
    assert.are.equal(200, status)
    assert.are.equal(#TEXTS, #body)
    assert.are.equal(DIM, #body[1])
    status, body = embed(server, "tei", copies("a", 33))
    assert.are.equal(413, status)
    assert.are.same({ error = "batch size 33 > maximum allowed batch size 32", error_type = "Validation" }, body)
    status, body = embed(server, "tei", { words(1, 513) })
    assert.are.equal(413, status)
    assert.are.same({ error = "Input validation error: `inputs` must have less than 512 tokens. Given: 513",
                      error_type = "Validation" }, body)
    status, body = embed(server, "tei", { words(1, 513) }, { truncate = true })
    assert.are.equal(200, status)
    assert.are.same(expected({ words(1, 512) }), body)
    status, body = embed(server, "tei", { words(1, 513) }, { truncate = true, truncation_direction = "Left" })
    assert.are.equal(200, status)
    assert.are.same(expected({ words(2, 513) }), body)
    local s = stats(server)
    assert.are.equal(2, s.size_errors)
    assert.are.equal(2, s.bad_requests)

    local small = start("tei", "--max-inputs 4 --max-input-tokens 10 --max-request-tokens 30 --api-key chave-tei")
    status, info = call(small, "/info")
    assert.are.equal(4, info.max_client_batch_size)
    assert.are.equal(10, info.max_input_length)
    assert.are.equal(30, info.max_batch_tokens)
    local auth = { headers = { "Authorization: Bearer chave-tei" } }
    assert.are.equal(401, (embed(small, "tei", TEXTS)))
    status, body = embed(small, "tei", copies("a", 5), nil, auth)
    assert.are.equal(413, status)
    assert.are.equal("batch size 5 > maximum allowed batch size 4", body.error)
    status, body = embed(small, "tei", copies(words(1, 10), 4), nil, auth) -- 40 tokens > 30
    assert.are.equal(413, status)
    assert.are.equal("Validation", body.error_type)
    assert.truthy(body.error:find("40", 1, true) and body.error:find("30", 1, true), body.error)
    assert.are.equal(200, (embed(small, "tei", copies(words(1, 10), 3), nil, auth)))
    assert.are.equal(2, stats(small).size_errors)
    local bad_usage = start("tei", "--bad-usage-rate 1") -- no usage in TEI: one vector too many
    status, body = embed(bad_usage, "tei", TEXTS)
    assert.are.equal(200, status)
    assert.are.equal(#TEXTS + 1, #body)
  end)

  it("voyage: forma da resposta, input_type, truncation (padrão true), base64 e os limites (1000, 32000, 320000)", function()
    local server = start("voyage")
    local status, body = embed(server, "voyage", TEXTS, { input_type = "document" })
    assert.are.equal(200, status)
    assert.are.equal("list", body.object)
    assert.are.equal("voyage-3", body.model)
    assert.are.equal("embedding", body.data[1].object)
    assert.are.equal(0, body.data[1].index)
    assert.are.equal(13, body.usage.total_tokens)
    assert.is_nil(body.usage.prompt_tokens)
    assert.are.equal("document", stats(server).last_input_type)
    assert.are.equal(200, (embed(server, "voyage", TEXTS, { input_type = cjson.null })))
    assert.are.equal("", stats(server).last_input_type)
    assert.are.equal(200, (embed(server, "voyage", TEXTS, { input_type = "query" })))
    assert.are.equal("query", stats(server).last_input_type)
    status, body = embed(server, "voyage", TEXTS, { input_type = "passage" })
    assert.are.equal(400, status)
    assert.truthy(body.detail:find("input_type", 1, true), body.detail)

    local _, ref64 = embed(reference, "openai", TEXTS, { encoding_format = "base64" })
    status, body = embed(server, "voyage", TEXTS, { encoding_format = "base64" })
    assert.are.equal(200, status)
    for i = 1, #TEXTS do
      assert.are.equal(ref64.data[i].embedding, body.data[i].embedding)
    end
    assert.are.equal(400, (embed(server, "voyage", TEXTS, { encoding_format = "float" })))

    status, body = embed(server, "voyage", copies("a", 1001))
    assert.are.equal(400, status)
    assert.truthy(body.detail:find("1001", 1, true) and body.detail:find("1000", 1, true), body.detail)
    status, body = embed(server, "voyage", { words(1, 32001) }, { truncation = false })
    assert.are.equal(400, status)
    assert.truthy(body.detail:find("32001", 1, true) and body.detail:find("32000", 1, true), body.detail)
    status, body = embed(server, "voyage", { words(1, 32001) })
    assert.are.equal(200, status)
    assert.are.equal(32000, body.usage.total_tokens)
    assert.are.same(expected({ words(1, 32000) }), DIALECTS.voyage.vectors(body))
    status, body = embed(server, "voyage", copies(string.rep("a ", 29101), 11)) -- 320111 tokens
    assert.are.equal(400, status)
    assert.truthy(body.detail:find("320111", 1, true) and body.detail:find("320000", 1, true), body.detail)
    assert.are.equal(3, stats(server).size_errors)
  end)

  it("cohere: /v2/embed, input_type obrigatório, embedding_types com float, truncate (NONE, START, END) e 96 textos", function()
    local server = start("cohere")
    local status, body = embed(server, "cohere", TEXTS)
    assert.are.equal(200, status)
    assert.are.equal("string", type(body.id))
    assert.are.equal("embeddings_by_type", body.response_type)
    assert.are.same(TEXTS, body.texts)
    assert.are.equal("2", body.meta.api_version.version)
    assert.are.equal(13, body.meta.billed_units.input_tokens)
    assert.are.equal(#TEXTS, #body.embeddings.float)
    assert.are.equal("search_document", stats(server).last_input_type)

    status, body = embed(server, "cohere", TEXTS, { input_type = cjson.null })
    assert.are.equal(400, status)
    assert.truthy(body.message:find("input_type", 1, true), body.message)
    assert.are.equal(400, (embed(server, "cohere", TEXTS, { input_type = "search" })))
    assert.are.equal(400, (embed(server, "cohere", TEXTS, { embedding_types = { "int8" } })))
    assert.are.equal(200, (embed(server, "cohere", TEXTS, { embedding_types = { "int8", "float" },
                                                            input_type = "search_query" })))
    assert.are.equal("search_query", stats(server).last_input_type)
    assert.are.equal(400, (embed(server, "cohere", TEXTS[2]))) -- texts must be a list

    status, body = embed(server, "cohere", copies("a", 97))
    assert.are.equal(400, status)
    assert.truthy(body.message:find("97", 1, true) and body.message:find("96", 1, true), body.message)
    status, body = embed(server, "cohere", { words(1, 513) }, { truncate = "NONE" })
    assert.are.equal(400, status)
    assert.truthy(body.message:find("513", 1, true) and body.message:find("512", 1, true), body.message)
    status, body = embed(server, "cohere", { words(1, 513) }, { truncate = "START" })
    assert.are.equal(200, status)
    assert.are.same(expected({ words(2, 513) }), body.embeddings.float)
    assert.are.equal(512, body.meta.billed_units.input_tokens)
    status, body = embed(server, "cohere", { words(1, 513) }) -- END by default
    assert.are.same(expected({ words(1, 512) }), body.embeddings.float)
    assert.are.same({ words(1, 513) }, body.texts) -- the texts come back as sent
    assert.are.equal(2, stats(server).size_errors)
  end)

  it("as falhas injetadas valem em todos os dialetos, com o erro no formato de cada um", function()
    for _, name in ipairs(NAMES) do
      local d = DIALECTS[name]
      local server = start(name, "--reject-pattern PROIBIDO --hang-pattern TRAVA --latency-ms 1")
      local status, body = embed(server, name, { "ok", "texto PROIBIDO" })
      assert.are.equal(name == "tei" and 422 or 400, status, name)
      assert.truthy(d.message(body):find("entrada rejeitada", 1, true), name)
      status = embed(server, name, { "isto TRAVA" }, nil, { max_time = 1 })
      assert.are.equal(0, status, name) -- never answered
      assert.are.equal(200, (embed(server, name, TEXTS)), name)
      local s = stats(server)
      assert.are.same({ 1, 1, 1 }, { s.rejected, s.timeouts, s.ok }, name)

      local head
      status, body, _, head = embed(start(name, "--rate-429 1 --retry-after 3"), name, TEXTS)
      assert.are.equal(429, status, name)
      assert.truthy(head:find("Retry-After: 3", 1, true), name)
      assert.are.equal("string", type(d.message(body)), name)
      status, body = embed(start(name, "--fail-rate 1"), name, TEXTS)
      assert.truthy(status >= 500 and status <= 503, name)
      assert.are.equal("string", type(d.message(body)), name)
      local broken = start(name, "--malformed-rate 1")
      for _ = 1, 3 do -- cut JSON, a vector too many or vectors too short
        status, body = embed(broken, name, TEXTS)
        assert.are.equal(200, status, name)
        local vectors = body and d.vectors(body)
        local valid = vectors ~= nil and #vectors == #TEXTS
        for _, v in ipairs(vectors or {}) do valid = valid and #v == DIM end
        assert.is_false(valid, name)
      end
      stop_all()
    end
  end)

  it("/stats: api, size_errors, max_inputs_seen e last_input_type, zerados por POST /stats/reset", function()
    local server = start("cohere", "--max-inputs 2")
    assert.are.equal(400, (embed(server, "cohere", { "a", "b", "c" })))
    assert.are.equal(200, (embed(server, "cohere", { "a", "b" }, { input_type = "clustering" })))
    local s = stats(server)
    assert.are.same({ "cohere", 2, 1, 1, 1, 3, "clustering" },
      { s.api, s.requests, s.ok, s.bad_requests, s.size_errors, s.max_inputs_seen, s.last_input_type })
    local status, zeroed = call(server, "/stats/reset", "")
    assert.are.equal(200, status)
    assert.are.same({ "cohere", 0, 0, 0, "" },
      { zeroed.api, zeroed.requests, zeroed.size_errors, zeroed.max_inputs_seen, zeroed.last_input_type })
  end)

  it("nenhum texto de entrada vai para o log do servidor, nem nas recusas", function()
    local no_truncation = { ollama = { truncate = false }, voyage = { truncation = false }, cohere = { truncate = "NONE" } }
    for _, name in ipairs(NAMES) do
      local server = start(name, "--max-input-tokens 3 --reject-pattern PROIBIDO")
      assert.are.equal(name == "tei" and 413 or 400,
        (embed(server, name, { "SEGREDO-DA-LINHA um dois tres" }, no_truncation[name])), name)
      assert.is_true((embed(server, name, { "SEGREDO-DA-LINHA PROIBIDO" })) >= 400, name)
      assert.is_true((embed(server, name, { "SEGREDO-DA-LINHA", "" })) >= 400, name)
      local log = H.read_all(server.log)
      assert.truthy(log:find("X-Request-Id", 1, true), name .. ": " .. log)
      assert.is_nil(log:find("SEGREDO", 1, true), name .. ": " .. log)
      stop_all()
    end
  end)

  it("--api inválida: mensagem em pt-BR e código 2; a ajuda lista os dialetos e os limites", function()
    local code, _, err = H.sh(H.q(H.bin) .. " embed-server --api gemini")
    assert.are.equal(2, code)
    assert.truthy(err:find("--api inválida 'gemini'", 1, true), err)
    assert.truthy(err:find("openai, azure, ollama, tei, voyage, cohere", 1, true), err)
    local out
    code, out = H.sh(H.q(H.bin) .. " embed-server --help")
    assert.are.equal(0, code)
    for _, text in ipairs({ "--api NOME", "--max-input-tokens", "--max-request-tokens", "POST /v2/embed", "GET /info" }) do
      assert.truthy(out:find(text, 1, true), text)
    end
  end)
end)
