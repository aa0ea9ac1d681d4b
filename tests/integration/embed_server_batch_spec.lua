-- embed_server_batch_spec.lua: the embed-server's OpenAI Batch API (issue
-- 24) end to end over HTTP with curl: upload (multipart) -> create -> poll
-- through the simulated states -> output and error files; the vectors are
-- those of POST /v1/embeddings for the same bodies; the output order is
-- shuffled; --batch-error-rate, --reject-pattern, --batch-expire-rate,
-- --batch-fail, the enqueued-token limit, every refusal over a limit,
-- cancel, /stats, and nothing of the inputs in the server's log. No
-- database.
local cjson = require "cjson"
local H = require "tests.integration.helper"

local DIM = 16
local SECRET = "segredo-do-lote"

local B = require "tests.integration.batch_http"
local call, upload, create = B.call, B.upload, B.create

-- A JSONL line asking to embed body.
local function line(custom_id, body, url)
  return cjson.encode({ custom_id = custom_id, method = "POST", url = url or "/v1/embeddings", body = body })
end

local FINAL = { completed = true, failed = true, expired = true, cancelled = true }
local ORDER = { validating = 1, in_progress = 2, finalizing = 3, completed = 4, expired = 4, failed = 4,
                cancelling = 2, cancelled = 4 }

-- Polls batch id until a final state; returns it and the states seen, in order.
local function wait_final(server, id)
  local seen = {}
  for _ = 1, 600 do
    local status, b = call(server, "/v1/batches/" .. id)
    assert.are.equal(200, status)
    if seen[#seen] ~= b.status then seen[#seen + 1] = b.status end
    if FINAL[b.status] then return b, seen end
    H.sleep(0.1)
  end
  error("o lote " .. id .. " não terminou: " .. table.concat(seen, ","))
end

-- The lines of a file's content, decoded, in order.
local function content(server, file_id)
  local status, _, text = call(server, "/v1/files/" .. file_id .. "/content")
  assert.are.equal(200, status)
  local out = {}
  for l in text:gmatch("[^\n]+") do out[#out + 1] = cjson.decode(l) end
  return out
end

-- n request bodies, each with two inputs; line 1 asks base64 and a smaller dimension.
local function bodies(n, extra)
  local out = {}
  for i = 1, n do
    out[i] = { model = "m", input = { "texto número " .. i .. " " .. SECRET, "outro " .. i } }
  end
  out[1].encoding_format = "base64"
  out[1].dimensions = 8
  for i, text in pairs(extra or {}) do out[i].input[2] = text end
  return out
end

local function jsonl(list)
  local lines = {}
  for i, b in ipairs(list) do lines[i] = line("req-" .. i, b) end
  return table.concat(lines, "\n") .. "\n"
end

local start, stop_all = B.servers(DIM)

describe("embed-server: Batch API da OpenAI", function()
  after_each(stop_all)

  it("envio, criação, estados em ordem e saída igual a POST /v1/embeddings, embaralhada", function()
    local server = start("--batch-latency-s 2")
    local list = bodies(20)
    local status, file = upload(server, jsonl(list))
    assert.are.equal(200, status)
    assert.are.equal("batch", file.purpose)
    assert.are.equal("lote.jsonl", file.filename)
    assert.is_truthy(file.id:match("^file%-"))
    local status2, batch = create(server, file.id)
    assert.are.equal(200, status2)
    assert.are.equal("validating", batch.status)
    assert.are.equal(20, batch.request_counts.total)
    assert.are.equal(cjson.null, batch.output_file_id)
    local final, seen = wait_final(server, batch.id)
    assert.are.equal("completed", final.status, table.concat(seen, ","))
    for k = 2, #seen do assert.is_true(ORDER[seen[k - 1]] < ORDER[seen[k]], table.concat(seen, ",")) end
    assert.is_truthy(seen[1] == "validating" or seen[1] == "in_progress", table.concat(seen, ","))
    assert.are.same({ total = 20, completed = 20, failed = 0 }, final.request_counts)
    assert.are.equal(cjson.null, final.error_file_id)
    local lines = content(server, final.output_file_id)
    assert.are.equal(20, #lines)
    local order = {}
    for k, l in ipairs(lines) do
      order[k] = tonumber(l.custom_id:match("%d+"))
      assert.are.equal(200, l.response.status_code)
      assert.are.equal(cjson.null, l.error)
      local i = order[k]
      local s, online = call(server, "/v1/embeddings", list[i])
      assert.are.equal(200, s)
      assert.are.same(online.data, l.response.body.data)
    end
    local sorted = {}
    for k, v in ipairs(order) do sorted[k] = v end
    table.sort(sorted)
    for k = 1, 20 do assert.are.equal(k, sorted[k]) end
    assert.are_not.same(sorted, order) -- shuffled (deterministic by --seed)
    local first = lines[1].custom_id == "req-1" and lines[1] or nil
    for _, l in ipairs(lines) do if l.custom_id == "req-1" then first = l end end
    assert.are.equal("string", type(first.response.body.data[1].embedding)) -- base64
  end)

  it("a mesma semente dá a mesma ordem de saída", function()
    local orders = {}
    for k = 1, 2 do
      local server = start("--batch-latency-s 0.2 --seed 7")
      local _, file = upload(server, jsonl(bodies(12)))
      local _, batch = create(server, file.id)
      local final = wait_final(server, batch.id)
      local ids = {}
      for i, l in ipairs(content(server, final.output_file_id)) do ids[i] = l.custom_id end
      orders[k] = table.concat(ids, ",")
    end
    assert.are.equal(orders[1], orders[2])
  end)

  it("--batch-error-rate e --reject-pattern levam pedidos ao arquivo de erros", function()
    local server = start("--batch-latency-s 0.4 --batch-error-rate 0.3 --reject-pattern PROIBIDO")
    local list = bodies(30, { [5] = "texto PROIBIDO aqui" })
    local _, file = upload(server, jsonl(list))
    local _, batch = create(server, file.id)
    local final = wait_final(server, batch.id)
    assert.are.equal("completed", final.status)
    local out, err = content(server, final.output_file_id), content(server, final.error_file_id)
    assert.are.equal(#out, final.request_counts.completed)
    assert.are.equal(#err, final.request_counts.failed)
    assert.are.equal(30, #out + #err)
    assert.is_true(#err >= 2 and #out >= 5, ("erros %d, saídas %d"):format(#err, #out))
    local ids, rejected, injected = {}, false, 0
    for _, l in ipairs(out) do ids[l.custom_id] = (ids[l.custom_id] or 0) + 1 end
    for _, l in ipairs(err) do
      ids[l.custom_id] = (ids[l.custom_id] or 0) + 1
      assert.are.equal(400, l.response.status_code)
      local message = l.response.body.error.message
      if l.custom_id == "req-5" then rejected = message:find("rejei", 1, true) ~= nil end
      if message:find("injetado", 1, true) then injected = injected + 1 end
    end
    for i = 1, 30 do assert.are.equal(1, ids["req-" .. i], "req-" .. i) end
    assert.is_true(rejected, "req-5 deveria estar no arquivo de erros, recusado pelo padrão")
    assert.is_true(injected >= 1, "nenhum erro injetado")
  end)

  it("--batch-expire-rate: lote expired e linhas batch_expired", function()
    local server = start("--batch-latency-s 0.4 --batch-expire-rate 0.5")
    local _, file = upload(server, jsonl(bodies(20)))
    local _, batch = create(server, file.id)
    local final = wait_final(server, batch.id)
    assert.are.equal("expired", final.status)
    assert.are_not.equal(cjson.null, final.expired_at)
    local err = content(server, final.error_file_id)
    assert.is_true(#err >= 1)
    for _, l in ipairs(err) do
      assert.are.equal(cjson.null, l.response)
      assert.are.equal("batch_expired", l.error.code)
    end
    assert.are.equal(20, final.request_counts.completed + final.request_counts.failed)
    assert.are.equal(#content(server, final.output_file_id), final.request_counts.completed)
  end)

  it("--batch-fail: todo lote termina failed com errors", function()
    local server = start("--batch-latency-s 0.4 --batch-fail")
    local _, file = upload(server, jsonl(bodies(3)))
    local _, batch = create(server, file.id)
    assert.are.equal("validating", batch.status)
    local final = wait_final(server, batch.id)
    assert.are.equal("failed", final.status)
    assert.are.equal("batch_failed", final.errors.data[1].code)
    assert.are.equal(cjson.null, final.output_file_id)
  end)

  it("limite de tokens enfileirados por modelo: o lote novo termina failed (token_limit_exceeded)", function()
    local server = start("--batch-latency-s 4 --batch-max-enqueued-tokens 100")
    local small = jsonl({ { model = "m", input = { "abcdefgh" } } })              -- 2 tokens
    local big = jsonl({ { model = "m", input = { string.rep("x", 400) } } })      -- 100 tokens
    local other = jsonl({ { model = "outro", input = { string.rep("x", 400) } } }) -- other model
    local _, f1 = upload(server, small)
    local _, f2 = upload(server, big)
    local _, f3 = upload(server, other)
    local _, b1 = create(server, f1.id)
    local _, b2 = create(server, f2.id)
    local _, b3 = create(server, f3.id)
    assert.are.equal("token_limit_exceeded", b2.errors.data[1].code)
    assert.are.equal(cjson.null, b1.errors)
    assert.are.equal(cjson.null, b3.errors)
    assert.are.equal("failed", (wait_final(server, b2.id)).status)
    assert.are.equal("completed", (wait_final(server, b1.id)).status)
    local _, b4 = create(server, f2.id) -- b1 is done: its tokens left the queue
    assert.are.equal(cjson.null, b4.errors)
  end)

  it("recusa cada arquivo acima dos limites, com erro no formato da OpenAI", function()
    local server = start("--batch-max-file-bytes 2000 --batch-max-requests 3 --batch-max-inputs 5")
    local ok = line("a", { model = "m", input = { "x" } })
    local cases = {
      { jsonl(bodies(2)) .. string.rep(" ", 2000), "file_too_large" },
      { jsonl({ { model = "m", input = "a" }, { model = "m", input = "b" }, { model = "m", input = "c" },
                { model = "m", input = "d" } }), "too_many_requests_in_file" },
      { ok .. "\n{nao json\n", "invalid_json_line" },
      { ok .. "\n" .. ok .. "\n", "invalid_request", "repete" },
      { line("b", { model = "m", input = "x" }, "/v1/chat/completions") .. "\n", "invalid_request", "url" },
      { jsonl({ { model = "m", input = { "a", "b", "c" } }, { model = "m", input = { "d", "e", "f" } } }),
        "too_many_inputs" },
      { "", "empty_file" },
    }
    for _, c in ipairs(cases) do
      local status, body = upload(server, c[1])
      assert.are.equal(400, status, c[2])
      assert.are.equal(c[2], body.error.code)
      assert.are.equal("invalid_request_error", body.error.type)
      if c[3] then assert.is_truthy(body.error.message:find(c[3], 1, true), body.error.message) end
    end
    local status, body = upload(server, ok .. "\n", "fine-tune")
    assert.are.equal(400, status)
    assert.are.equal("invalid_purpose", body.error.code)
    status, body = call(server, "/v1/files", "nada", {})
    assert.are.equal(400, status)
    assert.are.equal("invalid_multipart", body.error.code)
  end)

  it("memória de arquivos cheia: 400 com mensagem clara", function()
    local server = start("--batch-max-store-bytes 3000")
    local big = jsonl({ { model = "m", input = string.rep("y", 1500) } })
    assert.are.equal(200, (upload(server, big)))
    local status, body = upload(server, big)
    assert.are.equal(400, status)
    assert.are.equal("storage_full", body.error.code)
    assert.is_truthy(body.error.message:find("--batch-max-store-bytes", 1, true), body.error.message)
  end)

  it("criação recusa arquivo desconhecido e campos inválidos", function()
    local server = start()
    local _, file = upload(server, jsonl(bodies(1)))
    local status, body = create(server, "file-999")
    assert.are.equal(404, status)
    assert.are.equal("file_not_found", body.error.code)
    status = call(server, "/v1/batches", { input_file_id = file.id, endpoint = "/v1/chat/completions",
                                           completion_window = "24h" })
    assert.are.equal(400, status)
    status = call(server, "/v1/batches", { input_file_id = file.id, endpoint = "/v1/embeddings",
                                           completion_window = "1h" })
    assert.are.equal(400, status)
    status = call(server, "/v1/batches/batch_999")
    assert.are.equal(404, status)
  end)

  it("cancelamento: cancelling, depois cancelled; cancelar de novo é 400", function()
    local server = start("--batch-latency-s 4")
    local _, file = upload(server, jsonl(bodies(2)))
    local _, batch = create(server, file.id)
    local status, b = call(server, "/v1/batches/" .. batch.id .. "/cancel", nil, { post = true })
    assert.are.equal(200, status)
    assert.are.equal("cancelling", b.status)
    local final = wait_final(server, batch.id)
    assert.are.equal("cancelled", final.status)
    assert.are.equal(cjson.null, final.output_file_id)
    status, b = call(server, "/v1/batches/" .. batch.id .. "/cancel", nil, { post = true })
    assert.are.equal(400, status)
    assert.are.equal("invalid_state", b.error.code)
  end)

  it("/stats conta envios, bytes, lotes, consultas, downloads e lotes por estado", function()
    local server = start("--batch-latency-s 0.2")
    local text = jsonl(bodies(3))
    local _, file = upload(server, text)
    local _, batch = create(server, file.id)
    local final = wait_final(server, batch.id)
    content(server, final.output_file_id)
    content(server, file.id)
    local _, s = call(server, "/stats")
    assert.are.equal(1, s.files_uploaded)
    assert.are.equal(#text, s.file_bytes_uploaded)
    assert.are.equal(1, s.batches_created)
    assert.is_true(s.batch_polls >= 1)
    assert.are.equal(2, s.file_downloads)
    assert.are.equal(1, s.batches_by_status.completed)
    assert.are.equal(0, s.batches_by_status.validating)
    assert.are.equal(0, s.requests) -- batch requests are not online requests
  end)

  it("nada das entradas no log do servidor, nem das recusadas", function()
    local server = start("--batch-latency-s 0.2 --batch-error-rate 0.5 --reject-pattern " .. SECRET)
    local _, file = upload(server, jsonl(bodies(6)))
    local _, batch = create(server, file.id)
    local final = wait_final(server, batch.id)
    assert.are.equal("completed", final.status)
    upload(server, line("x", { model = "m", input = SECRET }) .. "\n{" .. SECRET .. "\n")
    local log = H.read_all(server.log)
    assert.is_nil(log:find(SECRET, 1, true), log)
  end)

  it("arquivos e lotes só no dialeto openai", function()
    local server = start("--api voyage")
    local status = upload(server, jsonl(bodies(1)))
    assert.are.equal(404, status)
  end)
end)
