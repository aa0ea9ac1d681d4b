-- dialect_wire_spec.lua: the provider dialects on the wire (issue 23),
-- through the real C client (ragops.embed) inside the ragops binary, against
-- canned_server.lua (a tiny HTTP server answering each path in one
-- provider's shape: dialect_answers.lua) that records every request. Checks
-- that the headers arrive and their values never appear in a failure, even
-- when the provider echoes them; that an endpoint is used as is; that
-- body_fields, inputs_key and encoding_field reach the body; that rows
-- answers and usage paths decode; the base64 fallback per encoding_field;
-- a nonexistent ca_file; proxy "" against a dead proxy in the environment;
-- and the option refusals of embed.client.
--
-- Two modes, one file: under busted (describe exists) it is the spec; run by
-- the binary (global RAGOPS_HOME, args: group, base URL, dead port) it is the
-- driver and prints `RESULT <name>\t<json>` lines.
local cjson = require "cjson"

-- Secrets sent as header values; they must never come back in a message.
local SECRETS = { "TOPSECRET-TOKEN-1", "EXTRA-SECRET-2", "AZURE-KEY-3333", "ORG-SECRET-4444", "CO-TOKEN-5555",
                  "PROXY-PASS-6666", "cmFnb3BzOlBST1hZLVBBU1MtNjY2Ng==" }

if describe == nil and RAGOPS_HOME then
  ---------------------------------------------------------------------------
  -- The driver, inside the binary.
  ---------------------------------------------------------------------------
  local embed = require "ragops.embed"
  local group, base, dead_port = ...

  local function emit(name, value) io.write("RESULT ", name, "\t", cjson.encode(value), "\n") end

  -- Runs client:embed(texts) with opts; emits what came back.
  local function run(name, opts, texts)
    opts.timeout_ms = opts.timeout_ms or 10000
    local ok, client = pcall(embed.client, opts)
    if not ok then return emit(name, { raised = tostring(client) }) end
    local batch, err, info = client:embed(texts or { "um", "dois" })
    local r = { err = err, info = info, encoding = client:encoding() }
    if batch then
      r.count, r.dim, r.tokens, r.vectors = batch:count(), batch:dim(), batch:tokens(), {}
      for i = 1, batch:count() do r.vectors[i] = batch:vector(i) end
    end
    client:close()
    emit(name, r)
  end

  local function refuse(name, opts)
    local ok, err = pcall(embed.client, opts)
    emit(name, { raised = not ok and tostring(err) or nil })
  end

  if group == "proxy" then
    run("proxy_env", { endpoint = base .. "/tei/embed", body_fields = "", inputs_key = "inputs",
                       encoding_field = "none", answer = "rows", rows_path = {} })
    run("proxy_none", { endpoint = base .. "/tei/embed", body_fields = "", inputs_key = "inputs",
                        encoding_field = "none", answer = "rows", rows_path = {}, proxy = "" })
    run("proxy_dead", { endpoint = base .. "/tei/embed", body_fields = "", inputs_key = "inputs",
                        encoding_field = "none", answer = "rows", rows_path = {},
                        proxy = "http://127.0.0.1:" .. dead_port })
    return
  end

  run("azure", { endpoint = base .. "/azure/openai/deployments/d/embeddings?api-version=2024-02-01", model = "d",
                 headers = { "api-key: AZURE-KEY-3333", "OpenAI-Organization: ORG-SECRET-4444" } })
  run("legacy", { url = base .. "/legacy/v1", model = "m", api_key = "legacy-key-0000", encoding = "float" })
  run("tei", { endpoint = base .. "/tei/embed", body_fields = '"truncate":true', inputs_key = "inputs",
               encoding_field = "none", answer = "rows", rows_path = {}, expected_dim = 3 })
  run("ollama", { endpoint = base .. "/api/embed", body_fields = '"model":"nomic","truncate":true',
                  encoding_field = "none", answer = "rows", rows_path = { "embeddings" },
                  usage_path = { "prompt_eval_count" }, expected_dim = 3 })
  run("cohere", { endpoint = base .. "/v2/embed", model = "embed-v4.0",
                  body_fields = '"model":"embed-v4.0","input_type":"search_document","embedding_types":["float"]',
                  inputs_key = "texts", encoding_field = "none", answer = "rows",
                  rows_path = { "embeddings", "float" }, usage_path = { "meta", "billed_units", "input_tokens" },
                  headers = { "Authorization: Bearer CO-TOKEN-5555" } }, { "a", "b", "c" })
  run("cohere_no_usage_path", { endpoint = base .. "/v2/embed", body_fields = '"model":"x"', inputs_key = "texts",
                                encoding_field = "none", answer = "rows", rows_path = { "embeddings", "float" } })
  run("voyage_base64", { endpoint = base .. "/voyage/v1/embeddings", body_fields = '"model":"voyage-3"',
                         encoding_field = "base64_only" })
  run("voyage_float", { endpoint = base .. "/voyage/v1/embeddings", body_fields = '"model":"voyage-3"',
                        encoding_field = "base64_only", encoding = "float" })
  run("echo400", { endpoint = base .. "/echo", model = "m",
                   headers = { "Authorization: Bearer TOPSECRET-TOKEN-1", "X-Extra: EXTRA-SECRET-2" } })
  run("echo401", { endpoint = base .. "/echo401", model = "m",
                   headers = { "Authorization: Bearer TOPSECRET-TOKEN-1", "X-Extra: EXTRA-SECRET-2" } })
  run("echo_proxy", { endpoint = base .. "/echo", model = "m",
                      proxy = base:gsub("^http://", "http://ragops:PROXY-PASS-6666@") })
  run("nob64_base64_only", { endpoint = base .. "/nob64", body_fields = '"model":"v"',
                             encoding_field = "base64_only" })
  run("nob64_none", { endpoint = base .. "/nob64", body_fields = '"model":"v"', encoding_field = "none",
                      encoding = "base64" })
  run("nob64_always", { endpoint = base .. "/nob64", model = "v" })
  run("wrong_dim", { endpoint = base .. "/ollama_wrongdim", body_fields = '"model":"n"', encoding_field = "none",
                     answer = "rows", rows_path = { "embeddings" }, expected_dim = 3 })
  run("old_shape", { endpoint = base .. "/ollama_oldshape", body_fields = '"model":"n"', encoding_field = "none",
                     answer = "rows", rows_path = { "embeddings" } }, { "um" })
  run("tei424", { endpoint = base .. "/tei424", body_fields = "", inputs_key = "inputs", encoding_field = "none",
                  answer = "rows", rows_path = {} })
  run("ca_missing", { endpoint = base:gsub("^http:", "https:") .. "/tei/embed", body_fields = "",
                      inputs_key = "inputs", encoding_field = "none", answer = "rows", rows_path = {},
                      ca_file = "/nonexistent/ragops-ca.pem" })

  local ok_opts = { endpoint = base .. "/x", model = "m" }
  local function with(extra)
    local t = {}
    for k, v in pairs(ok_opts) do t[k] = v end
    for k, v in pairs(extra) do t[k] = v end
    return t
  end
  local many, long = {}, "X-Long: " .. ("v"):rep(8 * 1024)
  for i = 1, 33 do many[i] = "X-H" .. i .. ": v" end
  refuse("refuse_both_urls", with({ url = base }))
  refuse("refuse_no_url", { model = "m" })
  refuse("refuse_crlf", with({ headers = { "X-A: a\r\nX-B: b" } }))
  refuse("refuse_no_colon", with({ headers = { "X-A a" } }))
  refuse("refuse_nul", with({ headers = { "X-A: a\0b" } }))
  refuse("refuse_many", with({ headers = many }))
  refuse("refuse_long", with({ headers = { long } }))
  refuse("refuse_engine_header", with({ headers = { "Content-Type: text/plain" } }))
  refuse("refuse_map_headers", with({ headers = { Authorization = "Bearer x" } }))
  refuse("refuse_body_fields_nul", with({ body_fields = '"a":1\0' }))
  refuse("refuse_body_fields_big", with({ body_fields = '"a":"' .. ("x"):rep(64 * 1024) .. '"' }))
  refuse("refuse_inputs_key", with({ inputs_key = "prompts" }))
  refuse("refuse_encoding_field", with({ encoding_field = "sometimes" }))
  refuse("refuse_answer", with({ answer = "tree" }))
  refuse("refuse_rows_without_path", with({ answer = "rows" }))
  refuse("refuse_usage_with_data", with({ usage_path = { "x" } }))
  refuse("refuse_model_missing", { endpoint = base .. "/x" })
  refuse("refuse_auth_twice", with({ api_key = "k-1234", headers = { "authorization: Bearer other" } }))
  refuse("accept_body_fields_without_model", { endpoint = base .. "/x", body_fields = '"model":"m"' })
  return
end

-------------------------------------------------------------------------------
-- The spec, under busted.
-------------------------------------------------------------------------------
local D = require "tests.lua.embed.driver"
local ROOT, q, sh = D.ROOT, D.q, D.sh
local HERE = ROOT .. "/tests/lua/embed"

-- A loopback port where nothing listens (a dead proxy).
local function dead_port()
  for _ = 1, 100 do
    local port = 20000 + math.random(0, 9999)
    if sh(("bash -c 'exec 3<>/dev/tcp/127.0.0.1/%d' 2>/dev/null"):format(port)) ~= 0 then return port end
  end
  error("nenhuma porta livre")
end

local NO_PROXY_ENV = D.NO_PROXY_ENV .. " -u no_proxy -u NO_PROXY"

describe("dialetos do provedor no fio (ragops.embed)", function()
  local bin, home, server, dead
  local results, outputs, codes, requests = {}, {}, {}, {}

  -- Runs the driver's group; fills results[name] and keeps its whole output.
  local function drive(group, env)
    local code, output, got = D.run(bin, home, HERE .. "/dialect_wire_spec.lua", { group, q(server.base), dead }, env)
    codes[group], outputs[group] = code, output
    for name, value in pairs(got) do results[name] = value end
  end

  -- The requests the server saw on path, in order.
  local function requests_to(path)
    local out = {}
    for _, r in ipairs(requests) do if r.path == path then out[#out + 1] = r end end
    return out
  end

  local function result(name)
    local r = results[name]
    assert(r, ("sem resultado de %s; saída do driver:\n%s"):format(name, outputs.main or "?"))
    return r
  end

  local function succeeded(name)
    local r = result(name)
    assert(r.vectors, ("%s falhou: %s"):format(name, tostring(r.err or r.raised)))
    return r
  end

  local function failed(name)
    local r = result(name)
    assert(r.err, ("%s deveria falhar: %s"):format(name, cjson.encode(r)))
    return r
  end

  setup(function()
    math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000)
    bin, home, server, dead = D.find_bin(), D.shim_home(), D.start_canned(HERE .. "/dialect_answers.lua"), dead_port()
    drive("main", NO_PROXY_ENV)
    local proxy = "http://127.0.0.1:" .. dead
    drive("proxy", ("%s http_proxy=%s https_proxy=%s HTTPS_PROXY=%s"):format(NO_PROXY_ENV, proxy, proxy, proxy))
    requests = D.requests(server)
  end)

  teardown(function()
    D.stop_canned(server)
    if home then sh("rm -rf " .. q(home)) end
  end)

  it("o driver roda inteiro, sem erros do ASan", function()
    for _, group in ipairs({ "main", "proxy" }) do
      assert.are.equal(0, codes[group], ("grupo %s saiu com %s:\n%s"):format(group, tostring(codes[group]),
        outputs[group]))
    end
  end)

  it("o endpoint é usado como está e os cabeçalhos chegam (Azure)", function()
    local r = succeeded("azure")
    assert.are.same({ { 1.5, -1, 0.25 }, { 2.5, -1, 0.5 } }, r.vectors)
    assert.are.equal(5, r.tokens)
    local seen = requests_to("/azure/openai/deployments/d/embeddings")
    assert.are.equal(1, #seen)
    assert.are.equal("api-version=2024-02-01", seen[1].query)
    assert.are.equal("AZURE-KEY-3333", seen[1].headers["api-key"])
    assert.are.equal("ORG-SECRET-4444", seen[1].headers["openai-organization"])
    assert.are.equal("application/json", seen[1].headers["content-type"])
    assert.truthy(tostring(seen[1].headers["x-request-id"]):match("^rg%-%x+%-%d+$"), seen[1].headers["x-request-id"])
    assert.is_nil(seen[1].headers["authorization"])
    assert.are.same({ model = "d", input = { "um", "dois" }, encoding_format = "base64" }, cjson.decode(seen[1].body))
  end)

  it("url continua a base com /embeddings acrescentado e a chave como Bearer", function()
    local r = succeeded("legacy")
    assert.are.equal(3, r.tokens)
    local seen = requests_to("/legacy/v1/embeddings")
    assert.are.equal(1, #seen)
    assert.are.equal("Bearer legacy-key-0000", seen[1].headers["authorization"])
    assert.are.same({ model = "m", input = { "um", "dois" }, encoding_format = "float" }, cjson.decode(seen[1].body))
  end)

  it("TEI: body_fields e inputs_key no corpo, sem encoding_format; a raiz é a lista de vetores", function()
    local r = succeeded("tei")
    assert.are.same({ { 1.5, -1, 0.25 }, { 2.5, -1, 0.5 } }, r.vectors)
    assert.are.equal(0, r.tokens)
    assert.are.equal("float", r.encoding)
    local seen = requests_to("/tei/embed")
    assert.are.equal('{"truncate":true,"inputs":["um","dois"]}', seen[1].body)
  end)

  it("Ollama: vetores em embeddings e tokens em prompt_eval_count", function()
    local r = succeeded("ollama")
    assert.are.same({ { 1.5, -1, 0.25 }, { 2.5, -1, 0.5 } }, r.vectors)
    assert.are.equal(11, r.tokens)
    assert.are.equal('{"model":"nomic","truncate":true,"input":["um","dois"]}', requests_to("/api/embed")[1].body)
  end)

  it("Cohere: texts, vetores em embeddings.float e tokens em meta.billed_units.input_tokens", function()
    local r = succeeded("cohere")
    assert.are.same({ { 1.5, -1, 0.25 }, { 2.5, -1, 0.5 }, { 3.5, -1, 0.75 } }, r.vectors)
    assert.are.equal(13, r.tokens)
    local seen = requests_to("/v2/embed")[1]
    assert.are.equal('{"model":"embed-v4.0","input_type":"search_document","embedding_types":["float"],'
      .. '"texts":["a","b","c"]}', seen.body)
    assert.are.equal("Bearer CO-TOKEN-5555", seen.headers["authorization"])
    assert.are.equal(0, succeeded("cohere_no_usage_path").tokens)
  end)

  it("Voyage: encoding_format só com base64; tokens de usage.total_tokens", function()
    local b64, float = succeeded("voyage_base64"), succeeded("voyage_float")
    assert.are.same({ { 1.5, -1, 0.25 }, { 2.5, -1, 0.5 } }, b64.vectors)
    assert.are.same(b64.vectors, float.vectors)
    assert.are.equal(17, b64.tokens)
    assert.are.equal(17, float.tokens)
    local seen = requests_to("/voyage/v1/embeddings")
    assert.are.equal(2, #seen)
    assert.are.equal('{"model":"voyage-3","input":["um","dois"],"encoding_format":"base64"}', seen[1].body)
    assert.are.equal('{"model":"voyage-3","input":["um","dois"]}', seen[2].body)
  end)

  it("nenhum valor de cabeçalho aparece numa falha, nem quando o provedor os ecoa", function()
    for _, name in ipairs({ "echo400", "echo401" }) do
      local r = failed(name)
      local text = r.err .. " " .. tostring(r.info.provider_request_id)
      for _, secret in ipairs(SECRETS) do
        assert.is_nil(text:find(secret, 1, true), ("%s vazou em %s: %s"):format(secret, name, text))
      end
      assert.truthy(r.err:find("***", 1, true), r.err)
      assert.truthy(r.info.provider_request_id, name .. ": sem provider_request_id")
    end
    -- through a proxy that echoes its credentials: the proxy's user:password is a secret too
    local proxied = failed("echo_proxy")
    assert.is_nil(proxied.err:find("PROXY-PASS-6666", 1, true), proxied.err)
    assert.is_nil(proxied.err:find("cmFnb3BzOlBST1hZLVBBU1MtNjY2Ng==", 1, true), proxied.err) -- its Basic credential
    assert.truthy(proxied.err:find("proxy: ***", 1, true), proxied.err)
    local via_proxy = requests_to("/echo")
    assert.truthy(via_proxy[#via_proxy].headers["proxy-authorization"], "o pedido não passou pelo proxy")
    assert.are.equal("permanent", results.echo400.info.class)
    assert.are.equal("fatal", results.echo401.info.class)
    -- the server did get them (the echo is real)
    assert.are.equal("EXTRA-SECRET-2", requests_to("/echo")[1].headers["x-extra"])
    for group, text in pairs(outputs) do
      for _, secret in ipairs(SECRETS) do
        assert.is_nil(text:find(secret, 1, true), ("%s na saída do grupo %s"):format(secret, group))
      end
    end
  end)

  it("base64 recusado: nova tentativa com float em always e base64_only, nunca em none", function()
    local only, always = succeeded("nob64_base64_only"), succeeded("nob64_always")
    assert.are.equal("float", only.encoding)
    assert.are.equal("float", always.encoding)
    local seen = requests_to("/nob64")
    local bodies = {}
    for i, r in ipairs(seen) do bodies[i] = r.body end
    -- base64_only: base64 then nothing; none: once, without the member (so the answer is floats); always: base64 then float
    assert.are.same({ '{"model":"v","input":["um","dois"],"encoding_format":"base64"}',
                      '{"model":"v","input":["um","dois"]}',
                      '{"model":"v","input":["um","dois"]}',
                      '{"model":"v","input":["um","dois"],"encoding_format":"base64"}',
                      '{"model":"v","input":["um","dois"],"encoding_format":"float"}' }, bodies)
    assert.are.equal("float", succeeded("nob64_none").encoding)
  end)

  it("respostas em linhas com defeito: dimensão errada, caminho ausente; 424 é transitório", function()
    local wrong = failed("wrong_dim")
    assert.are.equal("dimension", wrong.info.kind)
    assert.truthy(wrong.err:find("dimensão 4, esperada 3", 1, true), wrong.err)
    local old = failed("old_shape")
    assert.are.equal("malformed", old.info.kind)
    assert.truthy(old.err:find('campo "embeddings" ausente', 1, true), old.err)
    local busy = failed("tei424")
    assert.are.equal("transient", busy.info.class)
    assert.are.equal(424, busy.info.status)
    assert.truthy(busy.err:find("backend failed", 1, true), busy.err)
  end)

  it("ca_file inexistente: falha fatal e clara, nomeando o arquivo", function()
    local r = failed("ca_missing")
    assert.are.equal("fatal", r.info.class)
    assert.are.equal("connection", r.info.kind)
    assert.truthy(r.err:find("/nonexistent/ragops-ca.pem", 1, true), r.err)
    assert.truthy(r.err:find("ca_file", 1, true), r.err)
  end)

  it('proxy "" dispensa o proxy do ambiente; sem proxy, o do ambiente vale; um proxy morto é "connection"', function()
    local env = failed("proxy_env")
    assert.are.equal("connection", env.info.kind)
    assert.are.equal("transient", env.info.class)
    assert.are.same({ { 1.5, -1, 0.25 }, { 2.5, -1, 0.5 } }, succeeded("proxy_none").vectors)
    local dead_proxy = failed("proxy_dead")
    assert.are.equal("connection", dead_proxy.info.kind)
    assert.are.equal("transient", dead_proxy.info.class)
  end)

  it("embed.client recusa opções erradas com mensagem em pt-BR", function()
    local want = {
      refuse_both_urls = "exatamente um de \"url\"", refuse_no_url = "exatamente um de \"url\"",
      refuse_crlf = "cabeçalho 1 contém quebra de linha", refuse_no_colon = "não tem a forma \"Nome: valor\"",
      refuse_nul = "byte nulo", refuse_many = "passa de 32 linhas", refuse_long = "passa de 8192 bytes",
      refuse_engine_header = "content-type é enviado pelo motor", refuse_map_headers = "lista de linhas",
      refuse_body_fields_nul = "byte nulo", refuse_body_fields_big = "passa de 65536 bytes",
      refuse_inputs_key = "\"input\", \"inputs\" ou \"texts\"",
      refuse_encoding_field = "\"always\", \"base64_only\" ou \"none\"", refuse_answer = "\"data\" ou \"rows\"",
      refuse_rows_without_path = "rows_path", refuse_usage_with_data = "só vale com answer = \"rows\"",
      refuse_model_missing = "campo \"model\"", refuse_auth_twice = "Authorization já vem de \"api_key\"",
    }
    for name, fragment in pairs(want) do
      local r = result(name)
      assert.truthy(r.raised, name .. ": não recusou")
      assert.truthy(r.raised:find(fragment, 1, true), ("%s: %s (esperado trecho %s)"):format(name, r.raised, fragment))
    end
    assert.is_nil(result("accept_body_fields_without_model").raised)
  end)
end)
