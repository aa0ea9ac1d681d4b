-- ragops.provider.dialects.openai: OpenAI's POST /v1/embeddings (also the
-- embed-server's and any OpenAI-compatible server's). provider.url is the
-- API base ("https://api.openai.com/v1"); the key goes as a Bearer token.
-- Limits from OpenAI's API reference: at most 2,048 inputs per request,
-- 8,192 tokens per input and 300,000 tokens per request, the last checked
-- by OpenAI with an estimate of 0.25 tokens per UTF-8 byte (so bytes/4 is
-- the exact pre-check: request_tokens = "bytes").
local url = require "ragops.provider.dialects.url"

local M = { name = "openai", key_env = "OPENAI_API_KEY", request_tokens = "bytes" }

M.wire = { inputs_key = "input", encoding_field = "always", answer = "data" }

function M.limits()
  return { max_inputs = 2048, max_request_tokens = 300000, max_input_tokens = 8192 }
end

function M.endpoint(provider)
  return url.join(provider.url, "/embeddings")
end

function M.auth(provider)
  return provider.api_key and { "Authorization: Bearer " .. provider.api_key } or {}
end

function M.fields(provider)
  return { { "model", provider.model }, provider.dimensions and { "dimensions", provider.dimensions } or nil }
end

return M
