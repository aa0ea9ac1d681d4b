-- dialect_answers.lua: the canned answers of canned_server.lua for
-- dialect_wire_spec.lua, one per path, in each provider's shape. Vector i
-- (1-based) of a batch is { i + 0.5, -1, 0.25 * i } (VECTOR below), so the
-- spec knows what every decode must give back.
local ffi = require "ffi"
local cjson = require "cjson"

local function vector(i) return { i + 0.5, -1, 0.25 * i } end

-- Standard base64 of the little-endian float32 values of v.
local function base64_floats(v)
  local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  local floats = ffi.new("float[?]", #v, v)
  local bytes = ffi.string(floats, 4 * #v)
  local out = {}
  for k = 1, #bytes, 3 do
    local a, b, c = bytes:byte(k, k + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local chars = {}
    for s = 3, 0, -1 do
      local x = math.floor(n / 64 ^ s) % 64
      chars[#chars + 1] = alphabet:sub(x + 1, x + 1)
    end
    if not b then chars[3], chars[4] = "=", "=" elseif not c then chars[4] = "=" end
    out[#out + 1] = table.concat(chars)
  end
  return table.concat(out)
end

-- Decodes standard base64 (for a Proxy-Authorization: Basic echo).
local function base64_decode(text)
  local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  local bits, out = {}, {}
  for ch in text:gsub("=", ""):gmatch(".") do
    local x = alphabet:find(ch, 1, true) - 1
    for b = 5, 0, -1 do bits[#bits + 1] = math.floor(x / 2 ^ b) % 2 end
  end
  for k = 1, #bits - 7, 8 do
    local byte = 0
    for b = 0, 7 do byte = byte * 2 + bits[k + b] end
    out[#out + 1] = string.char(byte)
  end
  return table.concat(out)
end

local function inputs(req, key) return #(cjson.decode(req.body)[key] or {}) end

local function rows(n, dim)
  local out = {}
  for i = 1, n do
    out[i] = vector(i)
    for j = 4, dim or 3 do out[i][j] = 0 end
  end
  return out
end

-- OpenAI's "data" items (base64 when asked for), with a usage object.
local function data_answer(req, usage, key)
  local body = cjson.decode(req.body)
  local data = {}
  for i = 1, #(body[key or "input"] or {}) do
    local v = vector(i)
    data[i] = { object = "embedding", index = i - 1,
                embedding = body.encoding_format == "base64" and base64_floats(v) or v }
  end
  return 200, cjson.encode({ object = "list", data = data, model = "m", usage = usage })
end

-- Every header of the request, values included (a provider echoing them;
-- a proxy's Basic credentials decoded, as a hostile proxy could).
local function echo(req)
  local lines = {}
  for name, value in pairs(req.headers) do lines[#lines + 1] = name .. ": " .. value end
  table.sort(lines)
  local basic = (req.headers["proxy-authorization"] or ""):match("^Basic (%S+)")
  if basic then table.insert(lines, 1, "proxy: " .. base64_decode(basic)) end
  return table.concat(lines, "; ")
end

local function echo_answer(status)
  return function(req)
    local id = ("id-%s-%s"):format(req.headers["x-extra"] or "", req.headers["authorization"] or "")
    return status, cjson.encode({ error = { message = "recebi " .. echo(req) } }), { "x-request-id: " .. id }
  end
end

return {
  ["/azure/openai/deployments/d/embeddings"] = function(req)
    return data_answer(req, { prompt_tokens = 5, total_tokens = 5 })
  end,
  ["/legacy/v1/embeddings"] = function(req) return data_answer(req, { prompt_tokens = 3, total_tokens = 3 }) end,
  ["/voyage/v1/embeddings"] = function(req) return data_answer(req, { total_tokens = 17 }) end,
  ["/tei/embed"] = function(req) return 200, cjson.encode(rows(inputs(req, "inputs"))) end,
  ["/api/embed"] = function(req)
    return 200, cjson.encode({ model = "nomic", embeddings = rows(inputs(req, "input")), total_duration = 99,
                               prompt_eval_count = 11 })
  end,
  ["/v2/embed"] = function(req)
    local n = inputs(req, "texts")
    return 200, cjson.encode({ id = "c1", embeddings = { float = rows(n) }, texts = cjson.decode(req.body).texts,
                               meta = { api_version = { version = "2" }, billed_units = { input_tokens = 13 } },
                               response_type = "embeddings_by_type" })
  end,
  ["/echo"] = echo_answer(400),
  ["/echo401"] = echo_answer(401),
  ["/nob64"] = function(req)
    if cjson.decode(req.body).encoding_format == "base64" then
      return 400, cjson.encode({ detail = "encoding_format base64 is not supported" })
    end
    return data_answer(req, { total_tokens = 2 })
  end,
  ["/ollama_wrongdim"] = function(req)
    return 200, cjson.encode({ embeddings = rows(inputs(req, "input"), 4), prompt_eval_count = 1 })
  end,
  ["/ollama_oldshape"] = function() return 200, cjson.encode({ embedding = vector(1) }) end,
  ["/tei424"] = function() return 424, cjson.encode({ error = "backend failed", error_type = "backend" }) end,
}
