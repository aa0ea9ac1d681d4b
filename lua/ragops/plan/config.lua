-- ragops.plan.config: loads the configuration file (a text Lua chunk returning a
-- table, run by ragops.plan.sandbox with env() added), fills defaults, applies
-- environment overrides, validates with pt-BR errors, hands the `sandbox`
-- limits to ragops.plan.sandbox, and renders it safely for logs (passwords and
-- API keys redacted). Loading registers the configured secrets with
-- ragops.util.scrub, which masks them in every text that leaves the process.

local dialects = require "ragops.provider.dialects"
local messages = require "ragops.util.messages"
local metrics_endpoint = require "ragops.obs.metrics_endpoint"
local plan = require "ragops.plan"
local sandbox = require "ragops.plan.sandbox"
local scrub = require "ragops.util.scrub"
-- libpq's check of database.url, inside the ragops binary (not under busted).
local has_pg, pg = pcall(require, "ragops.pg")

local M = {}

-- Environment variables that override configuration keys.
M.ENV_OVERRIDES = {
  { "DATABASE_URL", "database", "url" },
  { "RAGOPS_EMBED_URL", "provider", "url" },
  { "RAGOPS_EMBED_API", "provider", "api" },
  { "RAGOPS_EMBED_MODEL", "provider", "model" },
  { "RAGOPS_PLANS", "plans", "dir" },
  { "RAGOPS_BATCH_DIR", "batch", "dir" },
}

-- Limits of plan/config code (ragops.plan.sandbox), one fresh table per call.
local function sandbox_defaults()
  local out = {}
  for key, value in pairs(sandbox.DEFAULTS) do out[key] = value end
  return out
end

-- Fresh copy of the defaults: their one definition (config.example.lua
-- shows the same values, checked by tests/lua/config_spec.lua; nil-valued
-- keys are listed in KEYS below).
function M.defaults()
  return {
    database = { url = "postgresql://localhost/ragops", pool_size = 8, table = "rag_documents", storage = "auto" },
    provider = {
      api = "openai",
      url = "http://127.0.0.1:8080/v1",
      model = "ragops-hash-1536",
      dimensions = nil,
      dim = 1536,
      api_key = nil,
      encoding = "base64",
      timeout_s = 60,
      expected_latency_ms = 500,
      price_per_1m_tokens = {
        ["text-embedding-3-small"] = 0.02,
        ["text-embedding-3-large"] = 0.13,
        ["ragops-hash-1536"] = 0,
      },
      -- The Batch API's price; a model without one costs half its online price.
      price_per_1m_tokens_batch = {},
      tokens_per_byte = {},
      rate_limits = { requests_per_min = nil, tokens_per_min = nil, max_concurrency = nil },
      limits = {},
      headers = {},
      truncate = false,
      ca_file = nil, proxy = nil, api_version = nil, deployment = nil, azure_auth = nil,
    },
    metrics = { file = nil, listen = nil, push_url = nil },
    alerts = { webhook_url = nil },
    log = { progress_every_s = 5, format = "text" },
    plans = { dir = nil, default = nil },
    batch = { dir = nil },
    sandbox = sandbox_defaults(),
  }
end

-- Allowed keys per section (for unknown-key errors).
local KEYS = {
  [""] = { "database", "provider", "metrics", "alerts", "log", "plans", "batch", "sandbox" },
  database = { "url", "pool_size", "table", "storage" },
  provider = { "api", "url", "model", "dimensions", "dim", "api_key", "encoding", "timeout_s",
               "expected_latency_ms", "price_per_1m_tokens", "price_per_1m_tokens_batch", "tokens_per_byte", "rate_limits", "limits",
               "headers", "truncate", "ca_file", "proxy", "api_version", "deployment", "azure_auth", "endpoints" },
  ["provider.endpoints[]"] = { "name", "url", "api_key_env", "weight", "rate_limits" },
  ["provider.rate_limits"] = { "requests_per_min", "tokens_per_min", "max_concurrency" },
  ["provider.limits"] = dialects.LIMIT_KEYS,
  metrics = { "file", "listen", "push_url" },
  alerts = { "webhook_url" },
  log = { "progress_every_s", "format" },
  plans = { "dir", "default" },
  batch = { "dir" },
  sandbox = sandbox.KEYS,
}
M.KEYS = KEYS

-- Accepted database.storage values: "auto" detects the column (ragops.store.migrate
-- picks one for a new table), the others name the embedding column's type.
local STORAGES = { auto = true, ["real[]"] = true, vector = true, halfvec = true }

-- Accepted ranges of the sandbox limits.
local SANDBOX_RANGES = {
  load_ms = { 10, 600000 }, load_memory_mb = { 1, 65536 }, hook_ms = { 1, 60000 },
  hook_memory_mb = { 1, 65536 }, max_breaches = { 1, 1000000 }, memory_mb = { 64, 1048576 },
}

-- Keys whose values are secrets or may embed secrets.
local SECRET_KEYS = { ["provider.api_key"] = true }
local URL_KEYS = { ["database.url"] = true, ["provider.url"] = true, ["alerts.webhook_url"] = true,
                   ["provider.proxy"] = true }

---------------------------------------------------------------------------
-- Redaction
---------------------------------------------------------------------------

-- Calls fn(value_start, value_end) for the value of each key=value
-- conninfo pair whose key contains "password" ('quoted values' with \'
-- escapes included), in order.
local function each_conninfo_password(text, fn)
  local position = 1
  while true do
    local _, e = text:find("[%w_]*[Pp][Aa][Ss][Ss][Ww][Oo][Rr][Dd]%s*=%s*", position)
    if not e then return end
    local value_end
    if text:sub(e + 1, e + 1) == "'" then
      local i = e + 2
      while i <= #text do
        local char = text:sub(i, i)
        if char == "\\" then
          i = i + 2
        elseif char == "'" then
          break
        else
          i = i + 1
        end
      end
      value_end = math.min(i, #text)
    else
      value_end = (text:find("%s", e + 1) or (#text + 1)) - 1
    end
    fn(e + 1, value_end)
    position = value_end + 1
  end
end

-- Replaces the value of key=value conninfo pairs whose key contains
-- "password" by "***".
local function redact_conninfo(text)
  local out, position = {}, 1
  each_conninfo_password(text, function(value_start, value_end)
    out[#out + 1] = text:sub(position, value_start - 1)
    out[#out + 1] = "***"
    position = value_end + 1
  end)
  out[#out + 1] = text:sub(position)
  return table.concat(out)
end

-- The userinfo of the part of a URL after "scheme://": it ends at the
-- LAST "@" of the URL, since a password may hold "?", "#", "/", ":" or "@"
-- unencoded (libpq takes "?" and "#" as they are); a stray "@" in a path
-- or query only hides more. Returns user, password (nil without ":"), the
-- position of that "@", or nil.
local function split_userinfo(rest)
  local at = rest:match(".*()@")
  if not at then return nil end
  local userinfo = rest:sub(1, at - 1)
  local colon = userinfo:find(":", 1, true)
  if not colon then return userinfo, nil, at end
  return userinfo:sub(1, colon - 1), userinfo:sub(colon + 1), at
end

-- Hides passwords in URLs ("postgresql://u:***@h/db", whatever characters
-- the password holds), in URL query parameters (password=, api_key=, key=,
-- token=...) and in key=value conninfo strings ("password=***").
-- Non-strings are returned unchanged.
function M.redact_url(url)
  if type(url) ~= "string" then return url end
  local scheme_end = url:find("://", 1, true)
  if not scheme_end then
    return redact_conninfo(url)
  end
  local prefix = url:sub(1, scheme_end + 2)
  local rest = url:sub(scheme_end + 3)
  local user, password, at = split_userinfo(rest)
  if password then rest = user .. ":***" .. rest:sub(at) end
  -- Secrets passed as query parameters.
  rest = rest:gsub("([?&;][%w_%-]*[Pp][Aa][Ss][Ss][Ww][Oo][Rr][Dd]=)[^&#]*", "%1***")
  rest = rest:gsub("([?&;][%w_%-]*[Kk][Ee][Yy]=)[^&#]*", "%1***")
  rest = rest:gsub("([?&;][%w_%-]*[Tt][Oo][Kk][Ee][Nn]=)[^&#]*", "%1***")
  rest = rest:gsub("([?&;][%w_%-]*[Ss][Ee][Cc][Rr][Ee][Tt]=)[^&#]*", "%1***")
  return prefix .. rest
end

-- Webhook URLs usually carry their secret in the path: keep scheme://host.
function M.redact_webhook(url)
  if type(url) ~= "string" then return url end
  local base = url:match("^(%a[%w+.-]*://[^/?#]+)")
  if not base then return "***" end
  base = M.redact_url(base)
  if #base < #url then return base .. "/***" end
  return base
end

---------------------------------------------------------------------------
-- Secrets
---------------------------------------------------------------------------

local function percent_decode(text)
  return (text:gsub("%%(%x%x)", function(hex) return string.char(tonumber(hex, 16)) end))
end

-- Standard base64 (what an Authorization: Basic header carries).
local function base64(text)
  return (require("ragops.obs.pushgateway").base64url(text):gsub("[-_]", { ["-"] = "+", ["_"] = "/" }))
end

-- Adds to out the secrets of a database URL, a conninfo string or an HTTP
-- URL: the password (as written and percent-decoded), the user:password
-- pair and its base64 (a server may echo Basic credentials), and the
-- values of query parameters named like password, key, token or secret.
local function url_secrets(url, out)
  if type(url) ~= "string" then return end
  local scheme_end = url:find("://", 1, true)
  if not scheme_end then
    each_conninfo_password(url, function(value_start, value_end)
      local value = url:sub(value_start, value_end)
      out[#out + 1] = value
      out[#out + 1] = value:match("^'(.*)'$")
    end)
    return
  end
  local user, password = split_userinfo(url:sub(scheme_end + 3))
  if password then
    for _, pair in ipairs({ { user, password }, { percent_decode(user), percent_decode(password) } }) do
      out[#out + 1] = pair[2]
      out[#out + 1] = pair[1] .. ":" .. pair[2]
      out[#out + 1] = base64(pair[1] .. ":" .. pair[2])
    end
  end
  for name, value in url:gmatch("[?&;]([%w_%-]+)=([^&#]*)") do
    local lower = name:lower()
    if lower:find("password", 1, true) or lower:find("key", 1, true) or lower:find("token", 1, true)
        or lower:find("secret", 1, true) then
      out[#out + 1] = value
      out[#out + 1] = percent_decode(value)
    end
  end
end

-- The configured secrets of cfg (a list; short values included: the
-- masker skips them): the API key, what the database, provider,
-- Pushgateway and webhook URLs carry, the webhook's path (its secret) and
-- PGPASSWORD from env_getter.
function M.secrets(cfg, env_getter)
  local out = { cfg.provider.api_key }
  for _, value in pairs(cfg.provider.headers or {}) do out[#out + 1] = value end
  url_secrets(cfg.database.url, out)
  url_secrets(cfg.provider.url, out)
  url_secrets(cfg.provider.proxy, out)
  for _, endpoint in ipairs(type(cfg.provider.endpoints) == "table" and cfg.provider.endpoints or {}) do
    if type(endpoint) == "table" then
      url_secrets(endpoint.url, out)
      if type(endpoint.api_key_env) == "string" and env_getter then out[#out + 1] = env_getter(endpoint.api_key_env) end
    end
  end
  url_secrets(cfg.metrics.push_url, out)
  local webhook = cfg.alerts.webhook_url
  url_secrets(webhook, out)
  if type(webhook) == "string" then
    out[#out + 1] = webhook:match("^%a[%w+.-]*://[^/?#]+([/?#].+)$")
    out[#out + 1] = webhook
  end
  out[#out + 1] = env_getter and env_getter("PGPASSWORD") or nil
  local list = {}
  for _, secret in pairs(out) do list[#list + 1] = secret end
  return list
end

---------------------------------------------------------------------------
-- Validation
---------------------------------------------------------------------------

local function show(path, value)
  if value ~= nil and SECRET_KEYS[path] then return "(oculto)" end
  if type(value) == "string" and (URL_KEYS[path] or path:match("%.url$")) then
    value = path == "alerts.webhook_url" and M.redact_webhook(value) or M.redact_url(value)
  end
  return plan.show_value(value)
end

-- Raises a validation error; `origin(path)` says where the value came from.
local function new_checker(where, origins)
  local checker = {}
  local function origin(path)
    local variable = origins[path]
    if variable then
      return string.format("configuração %s (variável de ambiente %s)", where, variable)
    end
    return "configuração " .. where
  end
  function checker.fail(path, message)
    error(string.format("%s: %s", origin(path), message), 0)
  end
  function checker.bad(path, value, expected)
    if value == nil then
      checker.fail(path, string.format('chave "%s": valor ausente; esperado %s', path, expected))
    end
    checker.fail(path, string.format('chave "%s": valor %s inválido; esperado %s', path, show(path, value), expected))
  end
  function checker.only_keys(tbl, section)
    if type(tbl) ~= "table" then
      checker.bad(section == "" and "(raiz)" or section, tbl, "uma tabela { ... }")
    end
    local allowed = KEYS[section]
    local unknown = plan.first_unknown_key(tbl, allowed)
    if unknown ~= nil then
      unknown = tostring(unknown)
      local path = section == "" and unknown or (section .. "." .. unknown)
      checker.fail(path, string.format('chave "%s" desconhecida; chaves válidas: %s', path, table.concat(allowed, ", ")))
    end
  end
  return checker
end

local is_integer = plan.is_integer

-- text without the password of url (its userinfo or a password= pair):
-- libpq's parse errors may quote a piece of the URL.
local function without_password(text, url)
  local secrets = { url:match("^%a[%w+.-]*://[^:/@]*:([^@]+)@") }
  for value in url:gmatch("[Pp][Aa][Ss][Ss][Ww][Oo][Rr][Dd]%s*=%s*'?([^%s'&]+)") do secrets[#secrets + 1] = value end
  for _, secret in ipairs(secrets) do
    local s, e = text:find(secret, 1, true)
    while s do
      text = text:sub(1, s - 1) .. "***" .. text:sub(e + 1)
      s, e = text:find(secret, s + 3, true)
    end
  end
  return text
end

-- database.url as libpq reads it (syntax, option names, sslmode), without
-- connecting: a malformed URL is the operator's to fix (exit 2), not a
-- database that may come back.
local function check_conninfo(checker, url)
  if not (has_pg and type(pg) == "table" and type(pg.conninfo_error) == "function") then return end
  local err = pg.conninfo_error(url)
  if not err then return end
  checker.fail("database.url", string.format('chave "database.url": valor %s inválido: %s; esperado uma URL '
    .. '"postgresql://usuario@host/banco?sslmode=require" ou um texto de conexão "host=... dbname=..."',
    show("database.url", url), without_password(messages.translate(err), url)))
end

local function check_integer(checker, path, value, low, high)
  if not is_integer(value) or value < low or value > high then
    checker.bad(path, value, string.format("um inteiro entre %d e %d", low, high))
  end
end

local function check_positive(checker, path, value, optional)
  if value == nil and optional then return end
  if type(value) ~= "number" or value ~= value or value <= 0 or value == math.huge then
    checker.bad(path, value, "um número maior que 0" .. (optional and " (ou nil para desativar)" or ""))
  end
end

local function check_string(checker, path, value, optional, expected)
  if value == nil and optional then return end
  if value == "" then
    -- Said as it is: "(oculto)" would hide that a secret is merely empty.
    checker.fail(path, string.format('chave "%s": valor vazio; esperado %s%s', path, expected or "um texto não vazio",
      optional and " (ou omita a chave)" or ""))
  end
  if type(value) ~= "string" then
    checker.bad(path, value, expected or "um texto não vazio")
  end
end

local function check_http_url(checker, path, value, optional)
  if value == nil and optional then return end
  if type(value) ~= "string" or not value:match("^[Hh][Tt][Tt][Pp][Ss]?://[^/%s]+") then
    checker.bad(path, value, "uma URL http:// ou https://")
  end
end

-- A { ["model"] = number } table: a table, text keys, numbers that pass ok.
local function check_model_map(checker, path, map, what, ok, expected)
  if type(map) ~= "table" then checker.bad(path, map, what); return end
  for model, value in pairs(map) do
    if type(model) ~= "string" then checker.bad(path, model, "nomes de modelo (texto) como chaves") end
    if type(value) ~= "number" or value ~= value or not ok(value) then
      checker.bad(path .. "." .. tostring(model), value, expected)
    end
  end
end

-- The plans section: the operator's plans folder and the default plan
-- (a NAME of that folder or a FILE; ragops.plan.locate resolves both).
local function check_plans(checker, plans)
  checker.only_keys(plans, "plans")
  check_string(checker, "plans.dir", plans.dir, true, "o caminho da pasta dos planos")
  check_string(checker, "plans.default", plans.default, true,
    'o nome de um plano da pasta (como "artigos") ou o caminho de um arquivo .lua')
end

-- plans.dir relative to the configuration file's folder (RAGOPS_PLANS,
-- from the environment, stays relative to the working directory).
local function resolve_plans_dir(cfg, path, origins)
  local dir = cfg.plans.dir
  if not dir or origins["plans.dir"] or dir:sub(1, 1) == "/" or not path then return end
  local folder = path:match("^(.*)/[^/]*$")
  if folder == "" then folder = "/" end
  if folder then cfg.plans.dir = folder .. "/" .. dir end
end

-- The header names ragops writes itself (provider.headers may not set them).
local RESERVED_HEADERS = { ["content-type"] = true, ["content-length"] = true, ["accept"] = true,
                           ["host"] = true, ["x-request-id"] = true, ["transfer-encoding"] = true }

-- provider.headers: at most 32 "Name" = "value" pairs; values are secrets
-- (never shown, not even in this error).
local function check_headers(checker, headers)
  if type(headers) ~= "table" then checker.bad("provider.headers", headers, 'uma tabela { ["Nome"] = "valor" }') end
  local count = 0
  for name, value in pairs(headers) do
    count = count + 1
    if type(name) ~= "string" or not name:match("^[%w!#$%%&'*+.^_`|~-]+$") or #name > 256 then
      checker.bad("provider.headers", name, "nomes de cabeçalho HTTP (letras, dígitos e - _ .)")
    end
    if RESERVED_HEADERS[name:lower()] then
      checker.fail("provider.headers", ('cabeçalho "%s" não pode ser definido: o ragops o escreve'):format(name))
    end
    if type(value) ~= "string" or value == "" or value:find("[%z\r\n]") or #value > 8192 then
      checker.fail("provider.headers." .. name, ('chave "provider.headers.%s": valor (oculto) inválido; esperado '
        .. "um texto não vazio de até 8192 bytes, sem quebra de linha"):format(name))
    end
  end
  if count > 32 then checker.fail("provider.headers", "chave \"provider.headers\": no máximo 32 cabeçalhos") end
end

-- The keys that only Azure OpenAI reads.
local AZURE_ONLY = { "api_version", "deployment", "azure_auth" }

-- The dialect's keys: provider.api, limits, headers, truncate, ca_file,
-- proxy and Azure's; a dialect that needs a key has one.
local function check_dialect(checker, provider)
  local names = table.concat(dialects.NAMES, '", "')
  if not dialects.get(provider.api) then checker.bad("provider.api", provider.api, 'um destes: "' .. names .. '"') end
  checker.only_keys(provider.limits, "provider.limits")
  for _, key in ipairs(dialects.LIMIT_KEYS) do
    if provider.limits[key] ~= nil then check_integer(checker, "provider.limits." .. key, provider.limits[key], 1, 1e9) end
  end
  check_headers(checker, provider.headers)
  if type(provider.truncate) ~= "boolean" then checker.bad("provider.truncate", provider.truncate, "true ou false") end
  check_string(checker, "provider.ca_file", provider.ca_file, true, "o caminho de um arquivo de certificados (PEM)")
  if provider.ca_file and not io.open(provider.ca_file, "r") then
    checker.fail("provider.ca_file", ('chave "provider.ca_file": não foi possível ler o arquivo %s'):format(provider.ca_file))
  end
  if provider.proxy ~= nil and (type(provider.proxy) ~= "string"
      or not (provider.proxy == "" or provider.proxy:match("^%a[%w+.-]*://[^/%s]+"))) then
    checker.bad("provider.proxy", provider.proxy, 'uma URL como "http://proxy:3128" (ou "" para não usar proxy)')
  end
  for _, key in ipairs(AZURE_ONLY) do
    if provider[key] ~= nil and provider.api ~= "azure" then
      checker.fail("provider." .. key, ('chave "provider.%s" só vale com provider.api = "azure"'):format(key))
    end
  end
  check_string(checker, "provider.api_version", provider.api_version, true, 'a versão da API (ex.: "2024-10-21")')
  check_string(checker, "provider.deployment", provider.deployment, true, "o nome da implantação (deployment)")
  if provider.azure_auth ~= nil and provider.azure_auth ~= "api_key" and provider.azure_auth ~= "entra" then
    checker.bad("provider.azure_auth", provider.azure_auth, 'um destes: "api_key", "entra"')
  end
  if dialects.get(provider.api).requires_key and not provider.api_key then
    checker.fail("provider.api_key", ('provider.api = "%s" exige uma credencial: provider.api_key ou a variável %s')
      :format(provider.api, dialects.key_env(provider)))
  end
end

-- One provider.rate_limits-shaped table at path.
local function check_rate_limits(checker, path, limits)
  checker.only_keys(limits, "provider.rate_limits")
  check_positive(checker, path .. ".requests_per_min", limits.requests_per_min, true)
  check_positive(checker, path .. ".tokens_per_min", limits.tokens_per_min, true)
  if limits.max_concurrency ~= nil then
    check_integer(checker, path .. ".max_concurrency", limits.max_concurrency, 1, 256)
  end
end

-- Most endpoints of a pool.
M.MAX_ENDPOINTS = 16

-- One entry of provider.endpoints (i: its position); names: labels seen.
local function check_endpoint(checker, endpoint, i, names)
  local path = ("provider.endpoints[%d]"):format(i)
  if type(endpoint) ~= "table" then checker.bad(path, endpoint, "uma tabela { url = ..., weight = ... }"); return end
  checker.only_keys(endpoint, "provider.endpoints[]")
  check_http_url(checker, path .. ".url", endpoint.url, false)
  local name = endpoint.name
  if name ~= nil and (type(name) ~= "string" or not name:match("^[%w_.-]+$") or #name > 32) then
    checker.bad(path .. ".name", name, "até 32 letras, dígitos ou _ . - (o rótulo nas métricas e no status)")
  end
  name = name or ("e" .. i)
  if names[name] then checker.fail(path .. ".name", ('chave "%s.name": o nome "%s" já foi usado'):format(path, name)) end
  names[name] = true
  local key_env = endpoint.api_key_env
  if key_env ~= nil and (type(key_env) ~= "string" or not key_env:match("^[%a_][%w_]*$") or #key_env > 128) then
    checker.bad(path .. ".api_key_env", key_env, "o nome de uma variável de ambiente (letras, dígitos e _)")
  end
  local weight = endpoint.weight
  if weight ~= nil and (type(weight) ~= "number" or weight ~= weight or weight <= 0 or weight > 1000) then
    checker.bad(path .. ".weight", weight, "um número maior que 0 e até 1000")
  end
  if endpoint.rate_limits ~= nil then
    if type(endpoint.rate_limits) ~= "table" then checker.bad(path .. ".rate_limits", endpoint.rate_limits, "uma tabela")
    else check_rate_limits(checker, path .. ".rate_limits", endpoint.rate_limits) end
  end
end

-- provider.endpoints: nil, or a list of 1 to MAX_ENDPOINTS endpoints.
local function check_endpoints(checker, endpoints)
  if endpoints == nil then return end
  if type(endpoints) ~= "table" or #endpoints == 0 or #endpoints > M.MAX_ENDPOINTS then
    checker.bad("provider.endpoints", endpoints, ("uma lista de 1 a %d endpoints { url = ..., weight = ... }")
      :format(M.MAX_ENDPOINTS))
  end
  local names = {}
  for i, endpoint in ipairs(endpoints) do check_endpoint(checker, endpoint, i, names) end
end

local function validate(cfg, checker)
  checker.only_keys(cfg, "")
  local db = cfg.database
  checker.only_keys(db, "database")
  check_string(checker, "database.url", db.url, false,
    'uma URL "postgresql://usuario@host/banco" ou texto de conexão "host=... dbname=..."')
  check_conninfo(checker, db.url)
  check_integer(checker, "database.pool_size", db.pool_size, 1, 256)
  if type(db.table) ~= "string" or not (db.table:match("^[%a_][%w_]*$") or db.table:match("^[%a_][%w_]*%.[%a_][%w_]*$")) then
    checker.bad("database.table", db.table, 'um nome de tabela simples, opcionalmente com esquema ("rag_documents" ou "public.rag_documents")')
  end
  if not STORAGES[db.storage] then
    checker.bad("database.storage", db.storage, 'um destes: "auto", "real[]", "vector", "halfvec"')
  end

  local provider = cfg.provider
  checker.only_keys(provider, "provider")
  check_dialect(checker, provider)
  check_http_url(checker, "provider.url", provider.url, false)
  check_string(checker, "provider.model", provider.model, false, "o nome do modelo de embedding")
  if provider.dimensions ~= nil then
    check_integer(checker, "provider.dimensions", provider.dimensions, 1, 16000)
  end
  check_integer(checker, "provider.dim", provider.dim, 1, 16000)
  if provider.dimensions ~= nil and provider.dimensions ~= provider.dim then
    checker.bad("provider.dim", provider.dim,
      string.format("o mesmo valor de provider.dimensions (%d)", provider.dimensions))
  end
  check_string(checker, "provider.api_key", provider.api_key, true, "um texto (a chave de API)")
  if provider.encoding ~= "base64" and provider.encoding ~= "float" then
    checker.bad("provider.encoding", provider.encoding, 'um destes: "base64", "float"')
  end
  -- Per-request limit of every embedding call (plans may override it with retry.timeout_s).
  local timeout = provider.timeout_s
  if type(timeout) ~= "number" or not (timeout > 0 and timeout <= 3600) then
    checker.bad("provider.timeout_s", timeout, "um número de segundos maior que 0 e até 3600 (ex.: 1.5)")
  end
  check_positive(checker, "provider.expected_latency_ms", provider.expected_latency_ms, false)
  checker.only_keys(cfg.log, "log")
  check_positive(checker, "log.progress_every_s", cfg.log.progress_every_s, false)
  if cfg.log.format ~= "text" and cfg.log.format ~= "json" then
    checker.bad("log.format", cfg.log.format, 'um destes: "text", "json"')
  end
  check_model_map(checker, "provider.price_per_1m_tokens", provider.price_per_1m_tokens,
    'uma tabela { ["modelo"] = preço em US$ por 1 milhão de tokens }',
    function(v) return v >= 0 and v ~= math.huge end, "um preço em US$ maior ou igual a 0")
  check_model_map(checker, "provider.price_per_1m_tokens_batch", provider.price_per_1m_tokens_batch,
    'uma tabela { ["modelo"] = preço em US$ por 1 milhão de tokens na API de lotes }',
    function(v) return v >= 0 and v ~= math.huge end, "um preço em US$ maior ou igual a 0")
  check_model_map(checker, "provider.tokens_per_byte", provider.tokens_per_byte,
    'uma tabela { ["modelo"] = tokens por byte de texto }',
    function(v) return v > 0 and v <= 10 end, "um número maior que 0 e até 10")
  check_rate_limits(checker, "provider.rate_limits", provider.rate_limits)
  check_endpoints(checker, provider.endpoints)

  checker.only_keys(cfg.metrics, "metrics")
  check_string(checker, "metrics.file", cfg.metrics.file, true, "o caminho do arquivo de métricas Prometheus (textfile)")
  if cfg.metrics.listen ~= nil and not metrics_endpoint.parse_listen(cfg.metrics.listen) then
    checker.bad("metrics.listen", cfg.metrics.listen, '"ENDEREÇO:PORTA", "[::1]:PORTA" ou ":PORTA" (IP, não nome)')
  end
  check_http_url(checker, "metrics.push_url", cfg.metrics.push_url, true)
  checker.only_keys(cfg.alerts, "alerts")
  check_http_url(checker, "alerts.webhook_url", cfg.alerts.webhook_url, true)
  check_plans(checker, cfg.plans)
  checker.only_keys(cfg.batch, "batch")
  check_string(checker, "batch.dir", cfg.batch.dir, true, "o caminho da pasta dos arquivos de lote")
  checker.only_keys(cfg.sandbox, "sandbox")
  for _, key in ipairs(sandbox.KEYS) do
    local range = SANDBOX_RANGES[key]
    check_integer(checker, "sandbox." .. key, cfg.sandbox[key], range[1], range[2])
  end
end

-- Overlays `user` (the file's table) on `defaults`, section by section.
local function merge(defaults, user, checker)
  checker.only_keys(user, "")
  local cfg = defaults
  for section, values in pairs(user) do
    checker.only_keys(values, section)
    for key, value in pairs(values) do
      if section == "provider" and key == "rate_limits" then
        checker.only_keys(value, "provider.rate_limits")
        for limit, amount in pairs(value) do cfg.provider.rate_limits[limit] = amount end
      elseif section == "provider" and (key == "price_per_1m_tokens" or key == "tokens_per_byte"
          or key == "price_per_1m_tokens_batch")
          and type(value) == "table" then
        for model, v in pairs(value) do cfg.provider[key][model] = v end
      else
        cfg[section][key] = value
      end
    end
  end
  -- dim follows dimensions unless set explicitly.
  local provider = user.provider
  if provider and provider.endpoints ~= nil and provider.url ~= nil then
    checker.fail("provider.endpoints", 'chaves "provider.url" e "provider.endpoints": use uma ou outra '
      .. "(com provider.endpoints, cada endpoint tem a sua url)")
  end
  if provider and provider.dimensions ~= nil and provider.dim == nil then
    cfg.provider.dim = provider.dimensions
  end
  return cfg
end

-- Runs the configuration file in the sandbox; returns its table or nil, err.
local function run_file(path, env_getter)
  local text, read_err = sandbox.read_file(path, "configuração")
  if not text then return nil, read_err end
  -- The safe functions, plus env("NAME") to read environment variables.
  local env = sandbox.environment("configuração")
  env.env = function(name) return env_getter(name) end
  local result, err = sandbox.run_text(text, path, "configuração", env)
  if err then return nil, err end
  if type(result) ~= "table" then
    return nil, string.format("configuração %s: o arquivo deve terminar com return { ... } (retornou valor %s)",
      path, plan.show_value(result))
  end
  return result
end

-- Each provider.endpoints entry with api_key_env gets its key (api_key,
-- a secret like provider.api_key); an unset variable is the operator's to fix.
-- What talks to one endpoint only (the Batch API, search, check) talks to
-- the first: provider.url (and the key) are its.
local function resolve_endpoint_keys(cfg, checker, env_getter)
  local endpoints = cfg.provider.endpoints
  if not endpoints then return end
  for i, endpoint in ipairs(endpoints) do
    if endpoint.api_key_env then
      local key = env_getter(endpoint.api_key_env)
      if type(key) ~= "string" or key == "" then
        checker.fail("provider.endpoints", ('chave "provider.endpoints[%d].api_key_env": a variável de ambiente %s '
          .. "não está definida (ou está vazia)"):format(i, endpoint.api_key_env))
      end
      endpoint.api_key = key
    end
  end
  cfg.provider.url = endpoints[1].url
  cfg.provider.api_key = endpoints[1].api_key or cfg.provider.api_key
end

-- Loads the configuration. `path` may be nil (defaults + environment);
-- `env_getter(name)` defaults to os.getenv. Returns cfg or nil, err.
function M.load(path, env_getter)
  if path ~= nil and type(path) ~= "string" then
    error("config.load: path deve ser um texto ou nil", 2)
  end
  env_getter = env_getter or os.getenv
  if type(env_getter) ~= "function" then
    error("config.load: env_getter deve ser uma função", 2)
  end
  local where = path or "(padrão)"
  local origins = {}
  local checker = new_checker(where, origins)
  local ok, result = pcall(function()
    local cfg = M.defaults()
    if path then
      local user, err = run_file(path, env_getter)
      if not user then error(err, 0) end
      cfg = merge(cfg, user, checker)
    end
    for _, override in ipairs(M.ENV_OVERRIDES) do
      local value = env_getter(override[1])
      if type(value) == "string" and value ~= "" then
        cfg[override[2]][override[3]] = value
        origins[override[2] .. "." .. override[3]] = override[1]
      end
    end
    -- The credential of the dialect (OPENAI_API_KEY, AZURE_OPENAI_API_KEY...).
    local key_env = dialects.key_env(cfg.provider)
    local key = key_env and env_getter(key_env)
    if type(key) == "string" and key ~= "" then
      cfg.provider.api_key = key
      origins["provider.api_key"] = key_env
    end
    validate(cfg, checker)
    resolve_endpoint_keys(cfg, checker, env_getter)
    resolve_plans_dir(cfg, path, origins)
    for _, secret in ipairs(M.secrets(cfg, env_getter)) do scrub.register(secret) end
    cfg.file = path
    -- The limits apply to every plan and golden file this process loads next.
    sandbox.configure(cfg.sandbox)
    return cfg
  end)
  if not ok then return nil, tostring(result) end
  return result
end

-- Price in US$ per 1M tokens for the configured model, or nil if unknown.
function M.price_per_1m(cfg)
  local provider = cfg.provider
  return provider.price_per_1m_tokens[provider.model]
end

-- The folder of the Batch API's files (ragops.run.batch): batch.dir
-- (RAGOPS_BATCH_DIR), else the service's state folder (systemd's
-- STATE_DIRECTORY), else $XDG_STATE_HOME/ragops/lotes, else
-- ~/.local/state/ragops/lotes.
function M.batch_dir(cfg, getenv)
  getenv = getenv or os.getenv
  if cfg.batch.dir then return cfg.batch.dir end
  local state = getenv("STATE_DIRECTORY")
  if state and state ~= "" then return (state:match("^[^:]+")) .. "/lotes" end
  local xdg = getenv("XDG_STATE_HOME")
  if xdg and xdg:sub(1, 1) == "/" then return xdg .. "/ragops/lotes" end
  return (getenv("HOME") or ".") .. "/.local/state/ragops/lotes"
end

-- Price in US$ per 1M tokens through the Batch API: the configured one, or
-- half the online price; nil when neither is known.
function M.price_per_1m_batch(cfg)
  local provider = cfg.provider
  local batch = (provider.price_per_1m_tokens_batch or {})[provider.model]
  if batch then return batch end
  local online = provider.price_per_1m_tokens[provider.model]
  return online and online / 2 or nil
end

local function format_price(value)
  local text = string.format("%.4f", value):gsub("0+$", ""):gsub("%.$", ""):gsub("%.", ",")
  return text
end

-- The dialect, the limits set by the operator and the extra headers (names
-- only: their values are secrets), in one pt-BR line.
function M.describe_dialect(provider)
  local set, names = {}, {}
  for _, key in ipairs(dialects.LIMIT_KEYS) do
    if provider.limits[key] then set[#set + 1] = key .. " = " .. provider.limits[key] end
  end
  for name in pairs(provider.headers) do names[#names + 1] = name end
  table.sort(names)
  return ("dialeto: %s; limites: %s; cabeçalhos extras: %s%s"):format(provider.api,
    #set > 0 and table.concat(set, ", ") or "os padrões do dialeto",
    #names > 0 and (table.concat(names, ", ") .. " (valores ocultos)") or "nenhum",
    provider.truncate and "; entradas longas truncadas pelo provedor" or "")
end

-- pt-BR lines describing `cfg`, safe to log: no API key, passwords and
-- webhook paths redacted.
function M.describe(cfg)
  local db, provider = cfg.database, cfg.provider
  local limits = provider.rate_limits
  local lines = {}
  lines[#lines + 1] = string.format("configuração: %s", cfg.file or "(padrão, sem arquivo)")
  lines[#lines + 1] = string.format("banco de dados: %s (pool %d conexões, tabela %s, armazenamento %s)",
    M.redact_url(db.url), db.pool_size, db.table, db.storage)
  lines[#lines + 1] = string.format("provedor de embeddings: %s, modelo %s, dimensão %d%s, codificação %s, timeout %s s",
    M.redact_url(provider.url), provider.model, provider.dim,
    provider.dimensions and " (enviada como dimensions)" or "", provider.encoding, tostring(provider.timeout_s))
  lines[#lines + 1] = "chave de API: " .. (provider.api_key and "definida (oculta)" or "não definida")
  lines[#lines + 1] = M.describe_dialect(provider)
  local price = M.price_per_1m(cfg)
  lines[#lines + 1] = price and string.format("preço: US$ %s por 1 milhão de tokens", format_price(price))
    or string.format('preço: desconhecido para o modelo "%s" (custo estimado não disponível)', provider.model)
  lines[#lines + 1] = string.format("limites: requisições/min: %s; tokens/min: %s; requisições simultâneas: %s",
    limits.requests_per_min and tostring(limits.requests_per_min) or "sem limite",
    limits.tokens_per_min and tostring(limits.tokens_per_min) or "sem limite",
    limits.max_concurrency and ("até " .. limits.max_concurrency) or "as do plano (batch.in_flight)")
  lines[#lines + 1] = "métricas: " .. (cfg.metrics.file and ("arquivo " .. cfg.metrics.file) or "desativadas")
  lines[#lines + 1] = "alertas: " .. (cfg.alerts.webhook_url and ("webhook " .. M.redact_webhook(cfg.alerts.webhook_url))
    or "sem webhook (só no log)")
  -- Defence in depth: a secret must never survive in any line.
  for _, secret in ipairs(M.secrets(cfg)) do scrub.register(secret) end
  for i, line in ipairs(lines) do lines[i] = scrub.mask(line) end
  return lines
end

return M
