-- ragops.provider.dialects.voyage: Voyage AI's POST /v1/embeddings
-- (OpenAI's answer shape, usage.total_tokens). provider.url is
-- "https://api.voyageai.com/v1". input_type is "document" when indexing and
-- "query" for golden queries; truncation false unless provider.truncate.
-- Limits from Voyage's reference: 1,000 inputs, a per-request token cap by
-- model (tokenizer counts: request_tokens = "tokens") and 32,000 tokens per
-- input for the voyage-3 family.
local url = require "ragops.provider.dialects.url"

local M = { name = "voyage", key_env = "VOYAGE_API_KEY", request_tokens = "tokens" }

M.wire = { inputs_key = "input", encoding_field = "base64_only", answer = "data" }

local REQUEST_TOKENS = {
  ["voyage-3.5-lite"] = 1000000, ["voyage-3-lite"] = 1000000,
  ["voyage-3.5"] = 320000, ["voyage-3"] = 320000, ["voyage-2"] = 320000,
}
local INPUT_TOKENS = { ["voyage-2"] = 4000, ["voyage-law-2"] = 16000 }

function M.limits(model)
  return { max_inputs = 1000, max_request_tokens = REQUEST_TOKENS[model] or 120000,
           max_input_tokens = INPUT_TOKENS[model] or 32000 }
end

function M.endpoint(provider)
  return url.join(provider.url, "/embeddings")
end

function M.auth(provider)
  return provider.api_key and { "Authorization: Bearer " .. provider.api_key } or {}
end

function M.fields(provider, purpose)
  return { { "model", provider.model }, { "input_type", purpose == "query" and "query" or "document" },
           { "truncation", provider.truncate == true },
           provider.dimensions and { "output_dimension", provider.dimensions } or nil }
end

return M
