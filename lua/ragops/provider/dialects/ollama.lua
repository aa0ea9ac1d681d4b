-- ragops.provider.dialects.ollama: Ollama's native POST /api/embed
-- ({ model, input, truncate, dimensions }; answers "embeddings", arrays of
-- floats, and "prompt_eval_count"). provider.url is the server's root
-- ("http://localhost:11434"). truncate goes false unless the operator asks
-- (provider.truncate = true): an input longer than the model's context is
-- then an error, not a vector of its first part. No request caps; the
-- per-input limit is the model's context (known models below, else 2,048
-- tokens, Ollama's default context).
local url = require "ragops.provider.dialects.url"

local M = { name = "ollama", request_tokens = "tokens" }

M.wire = { inputs_key = "input", encoding_field = "none", answer = "rows",
           rows_path = { "embeddings" }, usage_path = { "prompt_eval_count" } }

local CONTEXT = {
  ["nomic-embed-text"] = 8192, ["mxbai-embed-large"] = 512, ["all-minilm"] = 256,
  ["bge-m3"] = 8192, ["snowflake-arctic-embed"] = 512, ["snowflake-arctic-embed2"] = 8192,
}

function M.limits(model)
  local base = tostring(model):match("^([^:]+)") -- "nomic-embed-text:latest"
  return { max_input_tokens = CONTEXT[base] or 2048 }
end

function M.endpoint(provider)
  return url.join(provider.url, "/api/embed")
end

function M.auth(provider)
  return provider.api_key and { "Authorization: Bearer " .. provider.api_key } or {}
end

function M.fields(provider)
  return { { "model", provider.model }, { "truncate", provider.truncate == true },
           provider.dimensions and { "dimensions", provider.dimensions } or nil }
end

return M
