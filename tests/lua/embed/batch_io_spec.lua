-- batch_io_spec.lua: the engine pieces of the Batch API mode (issue 24),
-- through the real C modules inside the ragops binary: http.upload (a
-- multipart/form-data POST of a file streamed from disk, checked on the
-- server side; a missing, non-regular or oversized file refused before
-- sending), http.download (a 2xx body into a new 0600 file; an existing path
-- or a symlink refused; past max_bytes or on a non-2xx answer no file is
-- left) against canned_server.lua (batch_answers.lua), and
-- embed.decode_answer (an answer given as text through the client's strict
-- decoder: base64 and float, wrong count, wrong dimension, malformed JSON).
--
-- Two modes, one file: under busted (describe exists) it is the spec; run by
-- the binary (global RAGOPS_HOME, args: base URL, work folder) it is the
-- driver and prints `RESULT <name>\t<json>` lines.
local cjson = require "cjson"

if describe == nil and RAGOPS_HOME then
  ---------------------------------------------------------------------------
  -- The driver, inside the binary.
  ---------------------------------------------------------------------------
  local http = require "ragops.http"
  local embed = require "ragops.embed"
  local base, work = ...

  local function emit(name, value) io.write("RESULT ", name, "\t", cjson.encode(value), "\n") end

  local function call(name, fn, opts)
    local r, err, kind = fn(opts)
    emit(name, { r = r, err = err, kind = kind })
  end

  local function upload(extra)
    local opts = { url = base .. "/v1/files", headers = { Authorization = "Bearer sk-batch-1" },
                   fields = { purpose = "batch" }, file_field = "file", path = work .. "/part-1.jsonl",
                   filename = "part-1.jsonl", content_type = "application/jsonl", timeout_ms = 10000 }
    for k, v in pairs(extra or {}) do opts[k] = v end
    return opts
  end

  call("upload_ok", http.upload, upload())
  call("upload_missing", http.upload, upload({ path = work .. "/nope.jsonl" }))
  call("upload_folder", http.upload, upload({ path = work }))
  call("upload_too_big", http.upload, upload({ max_file_bytes = 10 }))

  local function download(id, path, extra)
    local opts = { url = base .. "/v1/files/" .. id .. "/content", path = work .. "/" .. path,
                   headers = { Authorization = "Bearer sk-batch-1" }, timeout_ms = 10000 }
    for k, v in pairs(extra or {}) do opts[k] = v end
    return opts
  end

  call("download_ok", http.download, download("file-out", "out.jsonl"))
  call("download_exists", http.download, download("file-out", "existing.jsonl"))
  call("download_symlink", http.download, download("file-out", "link.jsonl"))
  call("download_dangling", http.download, download("file-out", "dangling.jsonl"))
  call("download_too_big", http.download, download("file-big", "big.jsonl", { max_bytes = 100 }))
  call("download_at_limit", http.download, download("file-big", "limit.jsonl", { max_bytes = 10000 }))
  call("download_404", http.download, download("file-gone", "gone.jsonl"))
  call("download_no_folder", http.download, download("file-out", "no/such/folder.jsonl"))

  local function decode(name, body, count, dim)
    local batch, err, kind = embed.decode_answer(body, count, dim)
    local r = { err = err, kind = kind }
    if batch then
      r.count, r.dim, r.tokens, r.vectors = batch:count(), batch:dim(), batch:tokens(), {}
      for i = 1, batch:count() do r.vectors[i] = batch:vector(i) end
    end
    emit(name, r)
  end

  local b64 = '{"object":"list","data":[{"object":"embedding","index":1,"embedding":"AAAgQAAAgL8AAAA/"},' ..
    '{"object":"embedding","index":0,"embedding":"AADAPwAAgL8AAIA+"}],"model":"m",' ..
    '"usage":{"prompt_tokens":7,"total_tokens":7}}'
  local float = '{"data":[{"index":0,"embedding":[1.5,-1,0.25]},{"index":1,"embedding":[2.5,-1,0.5]}],' ..
    '"usage":{"prompt_tokens":4,"total_tokens":4}}'
  decode("decode_base64", b64, 2, 3)
  decode("decode_float", float, 2, 3)
  decode("decode_any_dim", float, 2, 0)
  decode("decode_wrong_count", float, 3, 3)
  decode("decode_wrong_dim", float, 2, 4)
  decode("decode_malformed", '{"data":[{"index":0,"embedding":[1.5,-1', 2, 3)
  decode("decode_not_finite", '{"data":[{"index":0,"embedding":[1e999,-1,0.25]}]}', 1, 3)
  decode("decode_bad_index", '{"data":[{"index":5,"embedding":[1.5,-1,0.25]}]}', 1, 3)
  local ok, raised = pcall(embed.decode_answer, float, 0, 3)
  emit("decode_zero_count", { raised = not ok and tostring(raised) or nil })
  return
end

-------------------------------------------------------------------------------
-- The spec, under busted.
-------------------------------------------------------------------------------
local D = require "tests.lua.embed.driver"
local ROOT, q, read_all, write_all, sh = D.ROOT, D.q, D.read_all, D.write_all, D.sh
local HERE = ROOT .. "/tests/lua/embed"

-- The bytes of the part the driver uploads: JSONL with UTF-8 and a long line.
local PART = '{"custom_id":"u-1","method":"POST","url":"/v1/embeddings","body":{"input":["ação"]}}\n' ..
  '{"custom_id":"u-2","method":"POST","url":"/v1/embeddings","body":{"input":["' .. ("z"):rep(5000) .. '"]}}\n'

describe("Batch API: envio, download e decodificação no motor (ragops.http, ragops.embed)", function()
  local bin, home, server, work, code, output
  local results, requests = {}, {}
  local answers = dofile(HERE .. "/batch_answers.lua")

  local function result(name)
    local r = results[name]
    assert(r, ("sem resultado de %s; saída do driver:\n%s"):format(name, output or "?"))
    return r
  end

  local function requests_to(path)
    local out = {}
    for _, r in ipairs(requests) do if r.path == path then out[#out + 1] = r end end
    return out
  end

  local function mode(path)
    local _, out = sh("stat -c %a " .. q(path))
    return out:match("%d+")
  end

  setup(function()
    bin, home, server, work = D.find_bin(), D.shim_home(), D.start_canned(HERE .. "/batch_answers.lua"), D.temp_dir()
    write_all(work .. "/part-1.jsonl", PART)
    write_all(work .. "/existing.jsonl", "antes")
    write_all(work .. "/target.jsonl", "alvo")
    sh(("ln -s %s %s"):format(q(work .. "/target.jsonl"), q(work .. "/link.jsonl")))
    sh(("ln -s %s %s"):format(q(work .. "/created-by-symlink.jsonl"), q(work .. "/dangling.jsonl")))
    code, output, results = D.run(bin, home, HERE .. "/batch_io_spec.lua", { q(server.base), q(work) }, D.NO_PROXY_ENV)
    requests = D.requests(server)
  end)

  teardown(function()
    D.stop_canned(server)
    if home then sh("rm -rf " .. q(home)) end
    if work then sh("rm -rf " .. q(work)) end
  end)

  it("o driver roda inteiro, sem erros do ASan", function()
    assert.are.equal(0, code, output)
  end)

  it("upload: multipart/form-data com os campos e os bytes do arquivo; a resposta como em http.request", function()
    local r = result("upload_ok")
    assert.is_nil(r.err, r.err)
    assert.are.equal(200, r.r.status)
    assert.are.equal("file-abc", cjson.decode(r.r.body).id)
    local seen = requests_to("/v1/files")
    assert.are.equal(1, #seen)
    local req = seen[1]
    assert.are.equal("POST", req.method)
    assert.are.equal("Bearer sk-batch-1", req.headers["authorization"])
    local boundary = tostring(req.headers["content-type"]):match("^multipart/form%-data; boundary=(%S+)$")
    assert.truthy(boundary, req.headers["content-type"])
    local expected = "--" .. boundary .. "\r\n" ..
      'Content-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n' ..
      "--" .. boundary .. "\r\n" ..
      'Content-Disposition: form-data; name="file"; filename="part-1.jsonl"\r\n' ..
      "Content-Type: application/jsonl\r\n\r\n" .. PART .. "\r\n" ..
      "--" .. boundary .. "--\r\n"
    assert.are.equal(expected, req.body)
  end)

  it("upload: arquivo ausente, pasta ou acima de max_file_bytes é recusado antes de enviar", function()
    for name, kind in pairs({ upload_missing = "file", upload_folder = "file", upload_too_big = "file_too_large" }) do
      local r = result(name)
      assert.is_nil(r.r, name)
      assert.are.equal(kind, r.kind, name .. ": " .. tostring(r.err))
      assert.truthy(r.err:find("envio de arquivo", 1, true), r.err)
    end
    assert.truthy(result("upload_too_big").err:find("limite de 10 bytes", 1, true), result("upload_too_big").err)
    assert.are.equal(1, #requests_to("/v1/files")) -- only upload_ok reached the server
  end)

  it("download: os bytes num arquivo novo 0600; status e bytes", function()
    local r = result("download_ok")
    assert.is_nil(r.err, r.err)
    local _, expected = answers["/v1/files/file-out/content"]()
    assert.are.same({ status = 200, bytes = #expected }, r.r)
    assert.are.equal(expected, read_all(work .. "/out.jsonl"))
    assert.are.equal("600", mode(work .. "/out.jsonl"))
    assert.are.equal("Bearer sk-batch-1", requests_to("/v1/files/file-out/content")[1].headers["authorization"])
  end)

  it("download: caminho existente ou link simbólico é recusado sem tocar o alvo", function()
    for _, name in ipairs({ "download_exists", "download_symlink", "download_dangling" }) do
      local r = result(name)
      assert.is_nil(r.r, name)
      assert.are.equal("exists", r.kind, name .. ": " .. tostring(r.err))
    end
    assert.are.equal("antes", read_all(work .. "/existing.jsonl"))
    assert.are.equal("alvo", read_all(work .. "/target.jsonl"))
    assert.is_nil(read_all(work .. "/created-by-symlink.jsonl"))
    -- refused before any request: only download_ok fetched file-out
    assert.are.equal(1, #requests_to("/v1/files/file-out/content"))
  end)

  it("download: além de max_bytes para e apaga o arquivo; no limite exato grava tudo", function()
    local r = result("download_too_big")
    assert.is_nil(r.r)
    assert.are.equal("body_too_large", r.kind, r.err)
    assert.is_nil(read_all(work .. "/big.jsonl"), "o arquivo parcial ficou no disco")
    local at = result("download_at_limit")
    assert.are.same({ status = 200, bytes = 10000 }, at.r)
    assert.are.equal(("x"):rep(10000), read_all(work .. "/limit.jsonl"))
  end)

  it("download: resposta não 2xx devolve status e corpo e não deixa arquivo", function()
    local r = result("download_404")
    assert.is_nil(r.err, r.err)
    assert.are.equal(404, r.r.status)
    assert.truthy(r.r.body:find("No such File object", 1, true), r.r.body)
    assert.is_nil(r.r.bytes)
    assert.is_nil(read_all(work .. "/gone.jsonl"), "ficou um arquivo de uma resposta 404")
  end)

  it("download: pasta inexistente é falha de arquivo", function()
    local r = result("download_no_folder")
    assert.is_nil(r.r)
    assert.are.equal("file", r.kind, r.err)
    assert.truthy(r.err:find("não foi possível criar", 1, true), r.err)
  end)

  it("decode_answer: base64 e float dão o lote pelo index, com os tokens de usage", function()
    local b64, float = result("decode_base64"), result("decode_float")
    assert.is_nil(b64.err, b64.err)
    assert.are.same({ { 1.5, -1, 0.25 }, { 2.5, -1, 0.5 } }, b64.vectors)
    assert.are.same({ 2, 3, 7 }, { b64.count, b64.dim, b64.tokens })
    assert.are.same(b64.vectors, float.vectors)
    assert.are.equal(4, float.tokens)
    assert.are.same(float.vectors, result("decode_any_dim").vectors)
  end)

  it("decode_answer: contagem, dimensão, JSON, valor não finito e index fora do intervalo são recusados", function()
    local cases = { decode_wrong_count = "malformed", decode_wrong_dim = "dimension", decode_malformed = "malformed",
                    decode_not_finite = "malformed", decode_bad_index = "malformed" }
    for name, kind in pairs(cases) do
      local r = result(name)
      assert.is_nil(r.vectors, name)
      assert.are.equal(kind, r.kind, name .. ": " .. tostring(r.err))
      assert.truthy(r.err:find("resposta malformada", 1, true), name .. ": " .. r.err)
    end
    assert.truthy(result("decode_wrong_dim").err:find("dimensão 3, esperada 4", 1, true), result("decode_wrong_dim").err)
    assert.truthy(result("decode_zero_count").raised, "quantidade 0 deveria ser recusada")
  end)
end)
