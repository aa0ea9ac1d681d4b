-- ragops.provider.dialects.cohere: Cohere's POST /v2/embed ({ model,
-- texts, input_type, embedding_types }; answers embeddings.float and
-- meta.billed_units.input_tokens). provider.url is "https://api.cohere.com".
-- input_type is "search_document" when indexing and "search_query" for
-- golden queries; truncate "NONE" unless provider.truncate ("END"). Limits
-- from Cohere's reference: 96 texts per call; 512 tokens per input for the
-- v3 models, 128,000 for embed-v4.0.
local url = require "ragops.provider.dialects.url"

local M = { name = "cohere", key_env = "CO_API_KEY", request_tokens = "tokens" }

M.wire = { inputs_key = "texts", encoding_field = "none", answer = "rows", rows_path = { "embeddings", "float" },
           usage_path = { "meta", "billed_units", "input_tokens" } }

function M.limits(model)
  return { max_inputs = 96, max_input_tokens = tostring(model):match("^embed%-v4") and 128000 or 512 }
end

function M.endpoint(provider)
  return url.join(provider.url, "/v2/embed")
end

function M.auth(provider)
  return provider.api_key and { "Authorization: Bearer " .. provider.api_key } or {}
end

function M.fields(provider, purpose)
  return { { "model", provider.model },
           { "input_type", purpose == "query" and "search_query" or "search_document" },
           { "embedding_types", { "float" } }, { "truncate", provider.truncate and "END" or "NONE" },
           provider.dimensions and { "output_dimension", provider.dimensions } or nil }
end

return M
