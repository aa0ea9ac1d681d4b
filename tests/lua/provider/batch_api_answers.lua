-- batch_api_answers.lua: the canned answers of canned_server.lua for
-- batch_api_spec.lua (paths without the query string): a batch that fails
-- twice with 500 then answers, one that always fails, an upload and a
-- create whose first attempt fails after storing (so the retry must find
-- them instead of sending again), 2xx answers that are not the API's
-- objects, a create refused with 400 and one always rate limited (429),
-- and Azure's routes (classic under /openai with ?api-version=, v1 under
-- /openai/v1). Any other path is a 404.
local cjson = require "cjson"

local function batch(id, status, file_id)
  return cjson.encode({ id = id, object = "batch", status = status, input_file_id = file_id or "file-x",
                        output_file_id = cjson.null, error_file_id = cjson.null, errors = cjson.null,
                        request_counts = { total = 1, completed = 0, failed = 0 } })
end

local function list(items)
  return cjson.encode({ object = "list", data = items, has_more = false })
end

local flaky = 0
local stored_file, stored_batch = nil, nil

return {
  ["/v1/batches/batch_flaky"] = function()
    flaky = flaky + 1
    if flaky <= 2 then return 500, '{"error":{"message":"falha interna","type":"server_error"}}' end
    return 200, batch("batch_flaky", "in_progress")
  end,
  ["/v1/batches/batch_down"] = function() return 503, '{"error":{"message":"indisponível"}}' end,
  ["/v1/batches/batch_garbage"] = function() return 200, "isto não é JSON" end,
  ["/v1/batches/batch_noid"] = function() return 200, '{"object":"batch"}' end,
  -- upload: the first POST stores the file and fails; the list shows it
  ["/v1/files"] = function(req)
    if req.method == "POST" then
      local content = req.body:match('filename="dedup%.jsonl"\r\nContent%-Type: [^\r]*\r\n\r\n(.-)\r\n%-%-')
      if stored_file then return 200, '{"id":"file-second","object":"file"}' end
      stored_file = { id = "file-dedup", object = "file", filename = "dedup.jsonl", bytes = #(content or ""),
                      purpose = "batch", created_at = 1 }
      return 500, '{"error":{"message":"caiu depois de gravar"}}'
    end
    local other = { id = "file-other", object = "file", filename = "dedup.jsonl", bytes = 1, purpose = "batch" }
    return 200, list(stored_file and { other, stored_file } or { other })
  end,
  -- create: the first POST makes the batch and fails; the list shows it
  ["/v1/batches"] = function(req)
    if req.method == "POST" then
      local body = cjson.decode(req.body)
      if stored_batch then return 200, batch("batch_second", "validating", body.input_file_id) end
      stored_batch = cjson.decode(batch("batch_dedup", "validating", body.input_file_id))
      return 502, "<html>bad gateway</html>"
    end
    local dead = cjson.decode(batch("batch_old", "failed", stored_batch and stored_batch.input_file_id))
    return 200, list(stored_batch and { dead, stored_batch } or {})
  end,
  ["/r/batches"] = function()
    return 400, '{"error":{"message":"Enqueued token limit reached for text-embedding-3-small",'
      .. '"type":"invalid_request_error","code":"token_limit_exceeded"}}'
  end,
  ["/q/batches"] = function()
    return 429, '{"error":{"message":"Too many batch creations","code":"rate_limit_exceeded"}}', { "Retry-After: 0" }
  end,
  ["/openai/files"] = function()
    return 200, list({ { id = "file-az", object = "file", filename = "az.jsonl", bytes = 3, purpose = "batch" } })
  end,
  ["/openai/batches"] = function(req)
    return 200, batch("batch_az", "validating", cjson.decode(req.body).input_file_id)
  end,
  ["/openai/v1/files"] = function() return 200, list({}) end,
}
