-- ragops.provider.client: the embedding client of the configuration's
-- provider, as every command opens it: ragops.embed (in C) speaking the
-- dialect of provider.api (ragops.provider.dialects), with the provider's
-- limits (discovered once per process where the provider says them: TEI's
-- GET /info) and the proxy named in connection errors. The provider
-- policy (retries, backoff, circuit) is ragops.provider.retry, applied by
-- the embed stage; the rate limit is ragops.provider.ratelimit.
local cjson = require "cjson"
local dialects = require "ragops.provider.dialects"
local proxy = require "ragops.provider.proxy"
local has_embed, embed = pcall(require, "ragops.embed")
local has_http, http = pcall(require, "ragops.http")

local M = {}

-- Most bytes read of a /info answer.
M.MAX_INFO_BYTES = 64 * 1024
local discovered_by_url = {}

-- What the provider says of its limits (TEI's /info), once per process;
-- nil (with a pt-BR warning through warn) when it does not say.
local function discover(provider, warn)
  local dialect = dialects.get(provider.api)
  if not (dialect.info_url and has_http) then return nil end
  local url = dialect.info_url(provider)
  if discovered_by_url[url] ~= nil then return discovered_by_url[url] or nil end
  local headers = {}
  for _, line in ipairs(dialect.auth(provider)) do
    local name, value = line:match("^([^:]+): (.*)$")
    headers[name] = value
  end
  local resp, err = http.request { method = "GET", url = url, headers = headers, timeout_ms = 10000,
                                   max_body_bytes = M.MAX_INFO_BYTES, ca_file = provider.ca_file,
                                   proxy = provider.proxy }
  local ok, info = false, nil
  if resp and resp.status == 200 then ok, info = pcall(cjson.decode, resp.body) end
  if not (ok and type(info) == "table") then
    if warn then
      warn(("não foi possível ler os limites do provedor em GET /info (%s); valem os padrões do dialeto %s "
        .. "ou provider.limits"):format(resp and ("HTTP " .. resp.status) or tostring(err), provider.api))
    end
    discovered_by_url[url] = false
    return nil
  end
  discovered_by_url[url] = dialect.limits_from_info(info)
  return discovered_by_url[url]
end

-- The limits of cfg's provider (see ragops.provider.dialects.limits).
function M.limits(cfg, warn)
  return dialects.limits(cfg.provider, discover(cfg.provider, warn))
end

-- An endpoint URL as people read it: no credentials, query string or fragment.
local function display_url(endpoint)
  return proxy.display(endpoint:match("^[^?#]*"))
end

-- "provedor openai em URL (via proxy ...)": names the endpoint (display_url)
-- and the proxy.
function M.describe(cfg)
  local endpoint = dialects.get(cfg.provider.api).endpoint(cfg.provider)
  local via = proxy.describe(endpoint, cfg.provider.proxy)
  return ("provedor %s em %s%s"):format(cfg.provider.api, display_url(endpoint), via and (" " .. via) or "")
end

local Client = {}
Client.__index = Client

-- Embeds texts: vecbatch, or nil, pt-BR message, info (see ragops.embed);
-- a connection failure names the proxy the request went through, and a
-- refused credential (401/403) the dialect's variable that holds it.
function Client:embed(texts)
  local batch, err, info = self.embedder:embed(texts)
  if batch or not info then return batch, err, info end
  if info.kind == "connection" and self.via then
    err = tostring(err) .. " (" .. self.via .. ")"
  elseif (info.status == 401 or info.status == 403) and self.key_env then
    err = ("%s; a credencial vem de provider.api_key ou da variável %s"):format(tostring(err), self.key_env)
  end
  return batch, err, info
end

function Client:close() self.embedder:close() end
function Client:encoding() return self.embedder:encoding() end

-- The embedding client of cfg.provider, requests timing out after
-- timeout_s, embedding for purpose ("document", the default, or "query").
-- (With provider.endpoints, the first endpoint's: see M.endpoints.)
function M.new(cfg, timeout_s, purpose, warn)
  assert(has_embed, "ragops.embed indisponível")
  local opts = dialects.client_options(cfg.provider, purpose, timeout_s)
  return setmetatable({
    embedder = embed.client(opts), limits = M.limits(cfg, warn),
    via = proxy.describe(opts.endpoint, cfg.provider.proxy), key_env = dialects.key_env(cfg.provider),
  }, Client)
end

-- cfg with its provider at one entry of provider.endpoints: the entry's
-- url, and the key its api_key_env named (ragops.plan.config resolved it;
-- without one, provider.api_key or the dialect's variable).
local function at_endpoint(cfg, entry)
  local provider = {}
  for k, v in pairs(cfg.provider) do provider[k] = v end
  provider.endpoints, provider.url = nil, entry.url
  if entry.api_key then provider.api_key = entry.api_key end
  local out = {}
  for k, v in pairs(cfg) do out[k] = v end
  out.provider = provider
  return out
end

-- The endpoints of cfg's provider, as ragops.provider.endpoints takes them
-- (without limiters): one for provider.url, or one per provider.endpoints
-- entry, each { name, display, key, weight, rate_limits, client }.
function M.endpoints(cfg, timeout_s, purpose, warn)
  local entries = cfg.provider.endpoints or { { name = "default", url = cfg.provider.url } }
  local list = {}
  for i, entry in ipairs(entries) do
    local ecfg = at_endpoint(cfg, entry)
    local endpoint = dialects.get(ecfg.provider.api).endpoint(ecfg.provider)
    local display = display_url(endpoint)
    list[i] = { name = entry.name or ("e" .. i), display = display, weight = entry.weight or 1,
                key = ("%s %s %s"):format(ecfg.provider.api, display, ecfg.provider.model),
                rate_limits = entry.rate_limits or cfg.provider.rate_limits or {},
                client = M.new(ecfg, timeout_s, purpose, warn) }
  end
  return list
end

return M
