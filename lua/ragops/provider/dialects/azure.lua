-- ragops.provider.dialects.azure: Azure OpenAI. provider.url is the
-- resource's endpoint ("https://NOME.openai.azure.com"). With
-- provider.api_version: the classic route
-- POST {url}/openai/deployments/{deployment}/embeddings?api-version=...;
-- without it, the v1 API POST {url}/openai/v1/embeddings, where "model" is
-- the deployment's name. The key goes in the api-key header, or, with
-- provider.azure_auth = "entra", a Microsoft Entra token as Bearer. The
-- deployment defaults to provider.model. Limits as OpenAI's models.
local openai = require "ragops.provider.dialects.openai"
local url = require "ragops.provider.dialects.url"

local M = { name = "azure", request_tokens = "bytes", requires_key = true }

M.wire = openai.wire
M.limits = openai.limits

-- The environment variable of the credential (an api-key or an Entra token).
function M.key_env(provider)
  return provider.azure_auth == "entra" and "AZURE_OPENAI_AD_TOKEN" or "AZURE_OPENAI_API_KEY"
end

local function deployment(provider)
  return provider.deployment or provider.model
end

function M.endpoint(provider)
  if provider.api_version then
    local path = "/openai/deployments/" .. url.encode(deployment(provider)) .. "/embeddings"
    return url.with_query(url.join(provider.url, path), "api-version", provider.api_version)
  end
  return url.join(provider.url, "/openai/v1/embeddings")
end

function M.auth(provider)
  if not provider.api_key then return {} end
  if provider.azure_auth == "entra" then return { "Authorization: Bearer " .. provider.api_key } end
  return { "api-key: " .. provider.api_key }
end

function M.fields(provider)
  return { { "model", deployment(provider) },
           provider.dimensions and { "dimensions", provider.dimensions } or nil }
end

return M
