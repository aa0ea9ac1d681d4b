-- ragops.provider.dialects.tei: HuggingFace Text Embeddings Inference,
-- native POST /embed ({ inputs, truncate }; answers a bare array of float
-- arrays). provider.url is the server's root. Its limits are discovered
-- from GET /info (max_client_batch_size: inputs per request,
-- max_input_length: tokens per input); 32 and 512 are TEI's defaults when
-- /info does not answer. TEI batches by tokens on its side: no request cap.
local url = require "ragops.provider.dialects.url"

local M = { name = "tei", key_env = "HF_TOKEN", request_tokens = "tokens" }

M.wire = { inputs_key = "inputs", encoding_field = "none", answer = "rows", rows_path = {} }

function M.limits()
  return { max_inputs = 32, max_input_tokens = 512 }
end

function M.endpoint(provider)
  return url.join(provider.url, "/embed")
end

function M.info_url(provider)
  return url.join(provider.url, "/info")
end

function M.auth(provider)
  return provider.api_key and { "Authorization: Bearer " .. provider.api_key } or {}
end

function M.fields(provider)
  return { { "truncate", provider.truncate == true } }
end

-- Limits from the decoded /info answer (only positive integers).
function M.limits_from_info(info)
  local function positive(v) return type(v) == "number" and v >= 1 and v == math.floor(v) and v or nil end
  return { max_inputs = positive(info.max_client_batch_size), max_input_tokens = positive(info.max_input_length) }
end

return M
