-- batch_api_spec.lua: ragops.provider.batch, the Batch API client (issue
-- 24). Pure part: base URLs and routes of each dialect (openai; azure
-- classic with ?api-version= on every route; azure v1), describe without
-- credentials or query, no Batch API outside openai/azure, how answers are
-- classified into kinds. Engine part: the module driven INSIDE the ragops
-- binary against a real embed-server (upload, find_file, create,
-- find_batch, get until completed, download, cancel; a wrong key) and
-- canned_server.lua (batch_api_answers.lua: 5xx retried then given up,
-- retried upload/create that find what the failed attempt made, refusals
-- with the provider's code, answers that are not the API's objects,
-- Azure's routes and headers).
--
-- Two modes, one file: under busted (describe exists) it is the spec; run by
-- the binary (global RAGOPS_HOME, args: embed-server base, canned base,
-- work folder) it is the driver and prints `RESULT <name>\t<json>` lines.
local cjson = require "cjson"

if describe == nil and RAGOPS_HOME then
  ---------------------------------------------------------------------------
  -- The driver, inside the binary.
  ---------------------------------------------------------------------------
  local batch_api = require "ragops.provider.batch"
  local sched = require("ragops.util.sched").real()
  local server, canned, work = ...
  local POLICY = { attempts = 3, base_ms = 1, max_ms = 5 }

  local function emit(name, value) io.write("RESULT ", name, "\t", cjson.encode(value), "\n") end
  local function result(name, r, err, kind, extra)
    local out = { r = r, err = err, kind = kind }
    for k, v in pairs(extra or {}) do out[k] = v end
    emit(name, out)
    return r
  end

  local retries = 0
  local function open(provider)
    local api = assert(batch_api.new(provider, { policy = POLICY, sched = sched,
                                                 on_retry = function() retries = retries + 1 end }))
    return api
  end

  -- Against the embed-server.
  local api = open({ api = "openai", url = server .. "/v1", api_key = "sk-test-batch-1" })
  emit("describe", { r = api:describe() })
  local file_id = result("upload", api:upload(work .. "/part.jsonl", "parte-1.jsonl", 1024 * 1024))
  result("find_file", api:find_file("parte-1.jsonl"))
  result("find_file_unknown", api:find_file("nao-existe.jsonl"))
  result("upload_too_large", api:upload(work .. "/part.jsonl", "grande.jsonl", 10))
  local batch = result("create", api:create(file_id, { run = "r-1" }))
  result("find_batch", api:find_batch(file_id))
  result("find_batch_unknown", api:find_batch("file-999999"))
  local polls = 0
  repeat
    polls = polls + 1
    batch = api:get(batch.id)
    if batch.status ~= "completed" then sched.sleep(100) end
  until batch.status == "completed" or polls > 100
  result("completed", batch, nil, nil, { has_error_file = batch.error_file_id ~= nil })
  result("download", api:download(batch.output_file_id, work .. "/out.jsonl", 1024 * 1024))
  result("download_exists", api:download(batch.output_file_id, work .. "/out.jsonl", 1024 * 1024))
  result("download_too_big", api:download(batch.output_file_id, work .. "/small.jsonl", 10))
  result("get_unknown", api:get("batch_999999"))
  result("download_unknown", api:download("file-999999", work .. "/none.jsonl", 1024))
  local second = api:create(api:upload(work .. "/part.jsonl", "parte-2.jsonl", 1024 * 1024))
  result("cancel", api:cancel(second.id))
  repeat sched.sleep(100) until api:get(second.id).status == "cancelled"
  result("cancel_again", api:cancel(second.id))
  local wrong = open({ api = "openai", url = server .. "/v1", api_key = "sk-wrong-key-777" })
  result("wrong_key", wrong:find_file("parte-1.jsonl"))
  result("wrong_key_upload", wrong:upload(work .. "/part.jsonl", "x.jsonl", 1024 * 1024))

  -- Against the canned server.
  local c = open({ api = "openai", url = canned .. "/v1", api_key = "sk-canned-1" })
  local function counted(name, fn, ...)
    retries = 0
    local r, err, kind = fn(...)
    result(name, r, err, kind, { retries = retries })
  end
  counted("flaky", c.get, c, "batch_flaky")
  counted("down", c.get, c, "batch_down")
  result("garbage", c:get("batch_garbage"))
  result("noid", c:get("batch_noid"))
  result("upload_dedup", c:upload(work .. "/part.jsonl", "dedup.jsonl", 1024 * 1024))
  result("create_dedup", c:create("file-dedup"))
  local r = open({ api = "openai", url = canned .. "/r", api_key = "sk-canned-1" })
  result("refused", r:create("file-x"))
  local q = open({ api = "openai", url = canned .. "/q", api_key = "sk-canned-1" })
  result("rate_limited", q:create("file-x"))
  local az = open({ api = "azure", url = canned, api_key = "az-key-secret-1", api_version = "2024-10-21",
                    model = "emb" })
  result("azure_find", az:find_file("az.jsonl"))
  result("azure_create", az:create("file-az"))
  emit("azure_describe", { r = az:describe() })
  local v1 = open({ api = "azure", url = canned .. "/", api_key = "az-key-secret-1" })
  result("azure_v1_find", v1:find_file("az.jsonl"))
  return
end

-------------------------------------------------------------------------------
-- The spec, under busted.
-------------------------------------------------------------------------------
local batch_api = require "ragops.provider.batch"

local OPTS = { policy = { attempts = 3, base_ms = 1, max_ms = 5 }, sched = function() end }

describe("provider.batch: URLs, descrição e classificação (puro)", function()
  it("openai: a base é provider.url; as rotas vêm abaixo dela", function()
    local api = assert(batch_api.new({ api = "openai", url = "https://api.openai.com/v1/", api_key = "sk-1234" },
                                     OPTS))
    assert.are.equal("https://api.openai.com/v1/files?purpose=batch", api:route("/files", { { "purpose", "batch" } }))
    assert.are.equal("https://api.openai.com/v1/batches/b%2F1", api:route("/batches/b%2F1"))
    assert.are.equal("/v1/embeddings", api.endpoint)
    assert.are.equal("API de lotes da openai em https://api.openai.com/v1", api:describe())
  end)

  it("azure clássico: {url}/openai e ?api-version= em toda rota; v1 sem api-version", function()
    local classic = assert(batch_api.new({ api = "azure", url = "https://r.openai.azure.com", api_key = "k-1234",
                                           api_version = "2024-10-21" }, OPTS))
    assert.are.equal("https://r.openai.azure.com/openai/files?api-version=2024-10-21&purpose=batch",
      classic:route("/files", { { "purpose", "batch" } }))
    assert.are.equal("https://r.openai.azure.com/openai/batches/x/cancel?api-version=2024-10-21",
      classic:route("/batches/x/cancel"))
    assert.are.equal("/embeddings", classic.endpoint)
    local v1 = assert(batch_api.new({ api = "azure", url = "https://r.openai.azure.com/", api_key = "k-1234" },
                                    OPTS))
    assert.are.equal("https://r.openai.azure.com/openai/v1/batches", v1:route("/batches"))
    assert.are.equal("/v1/embeddings", v1.endpoint)
    assert.are.equal("API de lotes da azure em https://r.openai.azure.com/openai/v1", v1:describe())
  end)

  it("describe não mostra credenciais da URL nem a query", function()
    local api = assert(batch_api.new({ api = "openai", url = "https://user:senha-da-url@h.example/v1?key=abc" },
                                     OPTS))
    assert.are.equal("API de lotes da openai em https://h.example/v1", api:describe())
  end)

  it("dialetos sem API de lotes: nil, mensagem em pt-BR e kind usage", function()
    for _, name in ipairs({ "ollama", "tei", "voyage", "cohere" }) do
      local api, err, kind = batch_api.new({ api = name, url = "http://h" }, OPTS)
      assert.is_nil(api)
      assert.are.equal("usage", kind, name)
      assert.truthy(err:find("não tem API de lotes", 1, true), err)
    end
  end)

  it("classifica as respostas: 401 fatal com a variável, 404 conforme a rota, 429, 5xx, outros 4xx", function()
    local key = "sk-classify-secret-9"
    local api = assert(batch_api.new({ api = "openai", url = "http://h/v1", api_key = key }, OPTS))
    local spec = { what = "consultar o lote b1" }
    local body = cjson.encode({ error = { message = "Incorrect API key provided: " .. key, code = "invalid_api_key" } })
    local _, err, info = api:status_failure(spec, 401, body)
    assert.are.same({ "fatal", "fatal" }, { info.class, info.kind })
    assert.truthy(err:find("OPENAI_API_KEY", 1, true), err)
    assert.is_nil(err:find(key, 1, true), err)
    assert.truthy(err:find("invalid_api_key", 1, true), err)
    _, _, info = api:status_failure(spec, 404, "{}")
    assert.are.same({ "permanent", "not_found" }, { info.class, info.kind })
    _, err, info = api:status_failure({ what = "listar", on_404 = "fatal" }, 404, "{}")
    assert.are.same({ "fatal", "fatal" }, { info.class, info.kind })
    assert.truthy(err:find("provider.url", 1, true), err)
    _, _, info = api:status_failure(spec, 429, "{}", 1500)
    assert.are.same({ "transient", "unreachable", 1500 }, { info.class, info.kind, info.retry_after_ms })
    _, _, info = api:status_failure({ what = "criar", on_429 = "refused" }, 429, "{}")
    assert.are.same({ "transient", "refused" }, { info.class, info.kind })
    _, _, info = api:status_failure(spec, 503, "<html>")
    assert.are.same({ "transient", "unreachable", 503 }, { info.class, info.kind, info.status })
    _, _, info = api:status_failure(spec, 301, "")
    assert.are.same({ "fatal", "fatal" }, { info.class, info.kind })
    _, err = api:status_failure(spec, 400, '{"error":{"message":"linha 1\\n\\u001b[31mfalsa"}}')
    assert.truthy(err:find("linha 1\\n\\x1b[31mfalsa", 1, true), err)
    _, err, info = api:status_failure(spec, 400, '{"error":{"message":"ruim","code":"invalid_state"}}')
    assert.are.same({ "permanent", "refused" }, { info.class, info.kind })
    assert.truthy(err:find("HTTP 400: ruim (código invalid_state)", 1, true), err)
  end)

  it("azure: a mensagem de 401 nomeia AZURE_OPENAI_API_KEY (ou o token Entra)", function()
    local api = assert(batch_api.new({ api = "azure", url = "http://h", api_key = "k-1234" }, OPTS))
    local _, err = api:status_failure({ what = "x" }, 403, "")
    assert.truthy(err:find("AZURE_OPENAI_API_KEY", 1, true), err)
    api = assert(batch_api.new({ api = "azure", url = "http://h", api_key = "k-1234", azure_auth = "entra" },
                               OPTS))
    _, err = api:status_failure({ what = "x" }, 401, "")
    assert.truthy(err:find("AZURE_OPENAI_AD_TOKEN", 1, true), err)
  end)
end)

-------------------------------------------------------------------------------
-- Inside the binary.
-------------------------------------------------------------------------------
local D = require "tests.lua.embed.driver"
local ROOT, q, read_all, write_all, sh = D.ROOT, D.q, D.read_all, D.write_all, D.sh
local HERE = ROOT .. "/tests/lua/provider"

-- An embed-server on a free port below the ephemeral range (20000-29999).
local function start_embed_server(bin, flags)
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000)
  for _ = 1, 20 do
    local port = 20000 + math.random(0, 9999)
    local log = os.tmpname()
    local p = io.popen(("%s embed-server --port %d %s >%s 2>&1 & echo $!"):format(q(bin), port, flags, q(log)))
    local pid = p:read("*l")
    p:close()
    for _ = 1, 100 do
      local text = read_all(log) or ""
      local base = text:match("escutando em (http://[%d%.:]+)")
      if base then return { pid = pid, base = base, log = log } end
      if (sh("kill -0 " .. pid)) ~= 0 then break end -- the port was taken: try another
      sh("sleep 0.05")
    end
    sh("kill " .. pid .. " 2>/dev/null")
    os.remove(log)
  end
  error("o embed-server não subiu em nenhuma porta livre")
end

local KEY = "sk-test-batch-1"
local PART = '{"custom_id":"d-1","method":"POST","url":"/v1/embeddings","body":{"model":"m","input":["ação"]}}\n' ..
  '{"custom_id":"d-2","method":"POST","url":"/v1/embeddings","body":{"model":"m","input":["b","c"]}}\n'

describe("provider.batch no motor, contra o embed-server e um servidor de respostas prontas", function()
  local bin, home, server, canned, work, code, output
  local results, requests = {}, {}

  local function result(name)
    local r = results[name]
    assert(r, ("sem resultado de %s; saída do driver:\n%s"):format(name, output or "?"))
    return r
  end

  local function requests_to(path, method)
    local out = {}
    for _, r in ipairs(requests) do
      if r.path == path and (method == nil or r.method == method) then out[#out + 1] = r end
    end
    return out
  end

  local function stats()
    local _, out = sh(("curl -sS %s"):format(q(server.base .. "/stats")))
    return cjson.decode(out)
  end

  setup(function()
    bin, home, work = D.find_bin(), D.shim_home(), D.temp_dir()
    server = start_embed_server(bin, "--dim 8 --api-key " .. KEY .. " --batch-latency-s 0.3")
    canned = D.start_canned(HERE .. "/batch_api_answers.lua")
    write_all(work .. "/part.jsonl", PART)
    code, output, results = D.run(bin, home, HERE .. "/batch_api_spec.lua",
      { q(server.base), q(canned.base), q(work) }, D.NO_PROXY_ENV)
    requests = D.requests(canned)
  end)

  teardown(function()
    if server then
      sh("kill " .. server.pid)
      os.remove(server.log)
    end
    D.stop_canned(canned)
    if home then sh("rm -rf " .. q(home)) end
    if work then sh("rm -rf " .. q(work)) end
  end)

  it("o driver roda inteiro, sem erros do ASan", function()
    assert.are.equal(0, code, output)
  end)

  it("upload, depois find_file acha o arquivo pelo nome; nome desconhecido é false", function()
    local id = result("upload").r
    assert.truthy(type(id) == "string" and id:match("^file%-"), tostring(id))
    assert.are.equal(id, result("find_file").r)
    assert.are.equal(false, result("find_file_unknown").r)
    local s = stats()
    assert.are.equal(2, s.files_uploaded) -- parte-1 and parte-2; grande.jsonl never left
    assert.are.equal(0, s.duplicate_uploads)
    assert.are.equal(2, s.file_lists) -- find_file twice; the upload looked for nothing (no failure)
  end)

  it("upload acima de max_bytes é recusado antes de enviar (file_too_large)", function()
    local r = result("upload_too_large")
    assert.is_nil(r.r)
    assert.are.equal("file_too_large", r.kind, r.err)
  end)

  it("create, depois find_batch acha o lote pelo arquivo de entrada; arquivo desconhecido é false", function()
    local b = result("create").r
    assert.are.same({ "validating", result("upload").r }, { b.status, b.input_file_id })
    assert.are.equal(b.id, result("find_batch").r.id)
    assert.are.equal(false, result("find_batch_unknown").r)
  end)

  it("get acompanha até completed; *_file_id nulos viram nil; download grava a saída com os bytes certos", function()
    local b = result("completed")
    assert.are.equal("completed", b.r.status)
    assert.are.same({ total = 2, completed = 2, failed = 0 }, b.r.request_counts)
    assert.are.equal(false, b.has_error_file)
    local bytes = result("download").r
    local text = read_all(work .. "/out.jsonl")
    assert.are.equal(#text, bytes)
    assert.are.equal(2, select(2, text:gsub("\n", "")))
    assert.truthy(text:find('"custom_id":"d-1"', 1, true), text)
  end)

  it("download: caminho existente é exists; acima de max_bytes é body_too_large sem arquivo", function()
    assert.are.equal("exists", result("download_exists").kind, result("download_exists").err)
    local r = result("download_too_big")
    assert.are.equal("body_too_large", r.kind, r.err)
    assert.is_nil(read_all(work .. "/small.jsonl"))
  end)

  it("404 em get e em download é not_found", function()
    for _, name in ipairs({ "get_unknown", "download_unknown" }) do
      local r = result(name)
      assert.is_nil(r.r)
      assert.are.equal("not_found", r.kind, name .. ": " .. tostring(r.err))
      assert.truthy(r.err:find("HTTP 404", 1, true), r.err)
    end
    assert.truthy(result("get_unknown").err:find("falha ao consultar o lote batch_999999", 1, true),
      result("get_unknown").err)
  end)

  it("cancel leva o lote a cancelling; cancelar um lote já cancelado é refused com o código do provedor", function()
    assert.are.equal("cancelling", result("cancel").r.status)
    local r = result("cancel_again")
    assert.are.equal("refused", r.kind, r.err)
    assert.truthy(r.err:find("invalid_state", 1, true), r.err)
  end)

  it("chave errada: fatal, nomeia OPENAI_API_KEY e não mostra a chave", function()
    for _, name in ipairs({ "wrong_key", "wrong_key_upload" }) do
      local r = result(name)
      assert.is_nil(r.r)
      assert.are.equal("fatal", r.kind, name .. ": " .. tostring(r.err))
      assert.truthy(r.err:find("OPENAI_API_KEY", 1, true), r.err)
      assert.truthy(r.err:find("HTTP 401", 1, true), r.err)
      assert.is_nil(r.err:find("sk-wrong-key-777", 1, true), r.err)
      assert.is_nil(r.err:find(KEY, 1, true), r.err)
    end
  end)

  it("5xx é tentado de novo pela política; sempre falhando termina unreachable", function()
    local flaky = result("flaky")
    assert.are.equal("in_progress", flaky.r.status, flaky.err)
    assert.are.equal(2, flaky.retries)
    assert.are.equal(3, #requests_to("/v1/batches/batch_flaky"))
    local down = result("down")
    assert.is_nil(down.r)
    assert.are.equal("unreachable", down.kind, down.err)
    assert.are.equal(3, #requests_to("/v1/batches/batch_down")) -- POLICY.attempts
    assert.are.equal(2, down.retries)
    assert.truthy(down.err:find("HTTP 503: indisponível", 1, true), down.err)
  end)

  it("2xx que não é o objeto da API é invalid_answer, sem nova tentativa", function()
    for _, name in ipairs({ "garbage", "noid" }) do
      assert.are.equal("invalid_answer", result(name).kind, result(name).err)
    end
    assert.are.equal(1, #requests_to("/v1/batches/batch_garbage"))
  end)

  it("upload e create repetidos acham o que a tentativa que falhou gravou, sem enviar de novo", function()
    assert.are.equal("file-dedup", result("upload_dedup").r, result("upload_dedup").err)
    assert.are.equal(1, #requests_to("/v1/files", "POST"))
    local b = result("create_dedup")
    assert.are.equal("batch_dedup", b.r and b.r.id, b.err)
    assert.are.equal(1, #requests_to("/v1/batches", "POST"))
    local post = cjson.decode(requests_to("/v1/batches", "POST")[1].body)
    assert.are.same({ input_file_id = "file-dedup", endpoint = "/v1/embeddings", completion_window = "24h" }, post)
    assert.are.equal("application/json", requests_to("/v1/batches", "POST")[1].headers["content-type"])
  end)

  it("create recusado (400, 429 depois das esperas): refused com a mensagem e o código do provedor", function()
    local r = result("refused")
    assert.are.equal("refused", r.kind, r.err)
    assert.truthy(r.err:find("Enqueued token limit reached", 1, true), r.err)
    assert.truthy(r.err:find("token_limit_exceeded", 1, true), r.err)
    assert.are.equal(1, #requests_to("/r/batches"))
    local limited = result("rate_limited")
    assert.are.equal("refused", limited.kind, limited.err)
    assert.truthy(limited.err:find("rate_limit_exceeded", 1, true), limited.err)
    assert.is_true(#requests_to("/q/batches") > 30, "429 não gasta tentativas: " .. #requests_to("/q/batches"))
    -- a 429 is a refusal, not an unknown outcome: no look-up for a batch it may have made
    assert.are.equal(#requests_to("/q/batches"), #requests_to("/q/batches", "POST"))
  end)

  it("azure: /openai/... com ?api-version= e o cabeçalho api-key; v1 em /openai/v1 sem api-version", function()
    assert.are.equal("file-az", result("azure_find").r, result("azure_find").err)
    local list = requests_to("/openai/files")[1]
    assert.are.equal("api-version=2024-10-21&purpose=batch", list.query)
    assert.are.equal("az-key-secret-1", list.headers["api-key"])
    assert.is_nil(list.headers["authorization"])
    assert.are.equal("batch_az", result("azure_create").r.id, result("azure_create").err)
    local create = requests_to("/openai/batches", "POST")[1]
    assert.are.equal("api-version=2024-10-21", create.query)
    assert.are.equal("/embeddings", cjson.decode(create.body).endpoint)
    assert.are.equal("API de lotes da azure em " .. canned.base .. "/openai", result("azure_describe").r)
    assert.are.equal(false, result("azure_v1_find").r, result("azure_v1_find").err)
    assert.are.equal("purpose=batch", requests_to("/openai/v1/files")[1].query)
  end)

  it("describe: a API e a base, sem a chave", function()
    assert.are.equal("API de lotes da openai em " .. server.base .. "/v1", result("describe").r)
  end)
end)
