-- embed_server_batch_list_spec.lua: the embed-server's list endpoints of
-- OpenAI's Batch API (issue 24), over HTTP with curl: GET /v1/files
-- (purpose=, limit=, after=, newest first, has_more) and GET /v1/batches
-- (limit= default 20 max 100, after= as a cursor, first_id/last_id,
-- has_more, the same batch objects as GET /v1/batches/{id}), and the
-- /stats counters duplicate_uploads, file_lists and batch_lists. No
-- database.
local cjson = require "cjson"
local H = require "tests.integration.helper"

local B = require "tests.integration.batch_http"
local call = B.call

local LINE = '{"custom_id":"a","method":"POST","url":"/v1/embeddings","body":{"model":"m","input":["x"]}}\n'

-- Uploads a one-request input file called filename; returns its id.
local function upload(server, filename)
  local status, body, text = B.upload(server, LINE, "batch", filename)
  assert.are.equal(200, status, text)
  return body.id
end

local function create(server, file_id)
  local status, body, text = B.create(server, file_id)
  assert.are.equal(200, status, text)
  return body.id
end

local function ids(list)
  local out = {}
  for i, item in ipairs(list.data) do out[i] = item.id end
  return out
end

local start, stop_all = B.servers(8)

describe("embed-server: listas da Batch API (GET /v1/files, GET /v1/batches)", function()
  after_each(stop_all)

  it("GET /v1/files: arquivos de lote do mais novo ao mais antigo, no formato da OpenAI", function()
    local server = start()
    local a, b = upload(server, "parte-a.jsonl"), upload(server, "parte-b.jsonl")
    local status, list, text = call(server, "/v1/files?purpose=batch")
    assert.are.equal(200, status, text)
    assert.are.equal("list", list.object)
    assert.are.equal(false, list.has_more)
    assert.are.same({ b, a }, ids(list))
    local first = list.data[1]
    assert.are.same({ "file", #LINE, "parte-b.jsonl", "batch" }, { first.object, first.bytes, first.filename, first.purpose })
    assert.are.equal("number", type(first.created_at))
  end)

  it("GET /v1/files: purpose filtra (saídas são batch_output), limit e after paginam", function()
    local server = start("--batch-latency-s 0.1")
    local a = upload(server, "a.jsonl")
    local batch = create(server, a)
    local b, c = upload(server, "b.jsonl"), upload(server, "c.jsonl")
    for _ = 1, 100 do
      local _, got = call(server, "/v1/batches/" .. batch)
      if got.status == "completed" then break end
      H.sleep(0.05)
    end
    local _, all = call(server, "/v1/files")
    assert.are.equal(4, #all.data, cjson.encode(ids(all))) -- the output file too
    local _, outputs = call(server, "/v1/files?purpose=batch_output")
    assert.are.equal(1, #outputs.data)
    assert.are.equal("batch_output", outputs.data[1].purpose)
    local _, page = call(server, "/v1/files?purpose=batch&limit=2")
    assert.are.same({ c, b }, ids(page))
    assert.are.equal(true, page.has_more)
    local _, rest = call(server, "/v1/files?purpose=batch&limit=2&after=" .. b)
    assert.are.same({ a }, ids(rest))
    assert.are.equal(false, rest.has_more)
    local status, bad = call(server, "/v1/files?limit=10001")
    assert.are.equal(400, status)
    assert.are.equal("invalid_limit", bad.error.code)
  end)

  it("GET /v1/batches: lotes como GET /v1/batches/{id}, limit padrão 20, after como cursor", function()
    local server = start("--batch-latency-s 60")
    local file = upload(server, "lote.jsonl")
    local made = {}
    for i = 1, 23 do made[i] = create(server, file) end
    local status, page, text = call(server, "/v1/batches")
    assert.are.equal(200, status, text)
    assert.are.equal("list", page.object)
    assert.are.equal(20, #page.data)
    assert.are.equal(true, page.has_more)
    assert.are.same({ made[23], made[4] }, { page.first_id, page.last_id })
    local _, one = call(server, "/v1/batches/" .. made[23])
    assert.are.same(one, page.data[1])
    assert.are.equal(file, page.data[1].input_file_id)
    local _, rest = call(server, "/v1/batches?limit=100&after=" .. page.last_id)
    assert.are.same({ made[3], made[2], made[1] }, ids(rest))
    assert.are.equal(false, rest.has_more)
    local _, two = call(server, "/v1/batches?limit=2&after=" .. made[2])
    assert.are.same({ made[1] }, ids(two))
    local _, none = call(server, "/v1/batches?after=" .. made[1])
    assert.are.same({}, ids(none))
    assert.are.same({ cjson.null, cjson.null, false }, { none.first_id, none.last_id, none.has_more })
    for _, q in ipairs({ "limit=0", "limit=101", "limit=x" }) do
      local s, bad = call(server, "/v1/batches?" .. q)
      assert.are.equal(400, s, q)
      assert.are.equal("invalid_limit", bad.error.code, q)
    end
  end)

  it("/stats: duplicate_uploads conta nomes já enviados; file_lists e batch_lists contam as listas", function()
    local server = start()
    upload(server, "p1.jsonl")
    upload(server, "p2.jsonl")
    upload(server, "p1.jsonl")
    upload(server, "p1.jsonl")
    call(server, "/v1/files?purpose=batch")
    call(server, "/v1/files")
    call(server, "/v1/batches")
    local _, s = call(server, "/stats")
    assert.are.same({ 4, 2, 2, 1 }, { s.files_uploaded, s.duplicate_uploads, s.file_lists, s.batch_lists })
  end)

  it("listas exigem a chave como as demais rotas", function()
    local server = start("--api-key chave-das-listas")
    local status = call(server, "/v1/files?purpose=batch")
    assert.are.equal(401, status)
    status = call(server, "/v1/batches")
    assert.are.equal(401, status)
  end)
end)
