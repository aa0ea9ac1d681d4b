-- batch_http.lua: what the embed-server Batch API specs
-- (embed_server_batch_spec.lua, embed_server_batch_list_spec.lua) share:
-- embed-servers started per test and stopped after each one, and the HTTP
-- calls over curl (a JSON call, an upload of a batch input file, a batch
-- creation).
local cjson = require "cjson"
local H = require "tests.integration.helper"

local B = {}

function B.write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

-- An HTTP call (body: a table sent as JSON, a string sent as is, nil for a
-- GET; or a string of curl arguments in opts.form; opts.post forces POST).
-- Returns status, decoded body, raw body.
function B.call(server, path, body, opts)
  opts = opts or {}
  local req, out = os.tmpname(), os.tmpname()
  local args = { "curl -sS --max-time 60", "-o", H.q(out), "-w", H.q("%{http_code}") }
  if opts.form then
    args[#args + 1] = opts.form
  elseif body then
    B.write(req, type(body) == "string" and body or cjson.encode(body))
    args[#args + 1] = "-H 'Content-Type: application/json' --data-binary @" .. H.q(req)
  end
  if opts.post then args[#args + 1] = "-X POST" end
  args[#args + 1] = H.q(server.base .. path)
  local _, status = H.sh(table.concat(args, " "))
  local text = H.read_all(out)
  os.remove(req); os.remove(out)
  local ok, decoded = pcall(cjson.decode, text)
  return tonumber(status) or 0, ok and decoded or nil, text
end

-- Uploads text as an input file named filename (default lote.jsonl) with
-- purpose (default batch). Returns status, decoded body, raw body.
function B.upload(server, text, purpose, filename)
  local path = os.tmpname()
  B.write(path, text)
  local status, body, raw = B.call(server, "/v1/files", nil, {
    form = ("-F purpose=%s -F %s"):format(purpose or "batch",
      H.q("file=@" .. path .. ";filename=" .. (filename or "lote.jsonl"))) })
  os.remove(path)
  return status, body, raw
end

-- Creates the batch of file_id on /v1/embeddings. Returns status, decoded body, raw body.
function B.create(server, file_id)
  return B.call(server, "/v1/batches",
    { input_file_id = file_id, endpoint = "/v1/embeddings", completion_window = "24h" })
end

-- start(flags): an embed-server started with "--dim <dim> <flags>", kept
-- for stop_all (call it in after_each).
function B.servers(dim)
  local started = {}
  local function start(flags)
    local server = H.start_embed_server(("--dim %d %s"):format(dim, flags or ""))
    started[#started + 1] = server
    return server
  end
  local function stop_all()
    for _, server in ipairs(started) do H.stop_embed_server(server) end
    started = {}
  end
  return start, stop_all
end

return B
