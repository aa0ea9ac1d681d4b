-- ragops.provider.dialects: the provider dialects, one ops table per file
-- (openai, azure, ollama, tei, voyage, cohere), and what every command
-- derives from the configuration's provider section through them: the
-- options of the C client (endpoint, auth and extra headers, the body's
-- fixed fields, how the answer is laid out), the limits known before
-- sending (the dialect's defaults for the model, what the provider says
-- where it says it (TEI's /info), the operator's provider.limits on top)
-- and the estimates of tokens that forming requests uses.
--
-- A dialect is a table: name; key_env (a name, or a function of the
-- provider section) of the environment variable holding its credential;
-- requires_key; request_tokens ("bytes": the provider caps a request by
-- bytes/4, OpenAI's rule, so the check is exact; "tokens": by its
-- tokenizer, so the check keeps a margin); wire (inputs_key,
-- encoding_field, answer, rows_path, usage_path: see ragops.embed);
-- limits(model); endpoint(provider); auth(provider) -> header lines;
-- fields(provider, purpose) -> { { key, value } ... }; and optionally
-- info_url/limits_from_info (discovery).
local cjson = require "cjson"

local M = {}

M.NAMES = { "openai", "azure", "ollama", "tei", "voyage", "cohere" }
local KNOWN = {}
for _, name in ipairs(M.NAMES) do KNOWN[name] = true end

-- Tokens per byte assumed when the model has no provider.tokens_per_byte.
M.DEFAULT_TOKENS_PER_BYTE = 0.25
M.LIMIT_KEYS = { "max_inputs", "max_request_tokens", "max_input_tokens",
                 -- the Batch API's (ragops.run.batch.part): per input file and
                 -- the model's queue of enqueued tokens (by the account's tier)
                 "batch_max_requests", "batch_max_inputs", "batch_max_file_bytes", "batch_enqueued_tokens" }

-- The dialect named name, or nil when there is none.
function M.get(name)
  if not KNOWN[name] then return nil end
  return require("ragops.provider.dialects." .. name)
end

-- The environment variable of the credential of provider's dialect.
function M.key_env(provider)
  local dialect = M.get(provider.api)
  if not dialect then return nil end
  local env = dialect.key_env
  if type(env) == "function" then return env(provider) end
  return env
end

-- The limits of provider (section of the configuration): the dialect's
-- for the model, then discovered (a table or nil), then provider.limits;
-- with how the request cap counts (request_tokens), truncate and the
-- model's tokens_per_byte, everything forming requests needs.
function M.limits(provider, discovered)
  local dialect = assert(M.get(provider.api), "dialeto desconhecido")
  local out = dialect.limits(provider.model) or {}
  for _, layer in ipairs({ discovered or {}, provider.limits or {} }) do
    for _, key in ipairs(M.LIMIT_KEYS) do
      if layer[key] ~= nil then out[key] = layer[key] end
    end
  end
  out.request_tokens = dialect.request_tokens
  out.truncate = provider.truncate == true
  out.tokens_per_byte = M.tokens_per_byte(provider)
  return out
end

-- Tokens per byte of provider's model (the configured ratio, or bytes/4).
function M.tokens_per_byte(provider)
  return (provider.tokens_per_byte or {})[provider.model] or M.DEFAULT_TOKENS_PER_BYTE
end

-- The body's fixed members as JSON text ("k":v,...), in the dialect's order.
local function body_fields(list)
  local out = {}
  for _, pair in ipairs(list) do
    out[#out + 1] = cjson.encode(pair[1]) .. ":" .. cjson.encode(pair[2])
  end
  return table.concat(out, ",")
end

-- "Name: value" lines of provider.headers, sorted by name (values secret).
local function extra_headers(provider, into)
  local names = {}
  for name in pairs(provider.headers or {}) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do into[#into + 1] = name .. ": " .. provider.headers[name] end
  return into
end

-- The headers of every call to provider as name = value: the dialect's
-- credential, then provider.headers (values secret).
function M.headers(provider)
  local dialect = assert(M.get(provider.api), "dialeto desconhecido")
  local out = {}
  for _, line in ipairs(extra_headers(provider, dialect.auth(provider))) do
    local name, value = line:match("^([^:]+): (.*)$")
    out[name] = value
  end
  return out
end

-- The options of ragops.embed's client for provider, embedding for purpose
-- ("document" when indexing, "query" for golden queries).
function M.client_options(provider, purpose, timeout_s)
  local dialect = assert(M.get(provider.api), "dialeto desconhecido")
  local wire = dialect.wire
  return {
    endpoint = dialect.endpoint(provider), model = provider.model, expected_dim = provider.dim,
    headers = extra_headers(provider, dialect.auth(provider)),
    body_fields = body_fields(dialect.fields(provider, purpose or "document")),
    inputs_key = wire.inputs_key, encoding_field = wire.encoding_field,
    encoding = wire.encoding_field == "none" and "float" or provider.encoding,
    answer = wire.answer, rows_path = wire.rows_path, usage_path = wire.usage_path,
    timeout_ms = timeout_s * 1000, ca_file = provider.ca_file, proxy = provider.proxy,
  }
end

return M
