-- ragops.provider.client: the embedding client of the configuration's
-- provider (ragops.embed, in C), as every command opens it. The provider
-- policy (retries, backoff, circuit) is ragops.provider.retry, applied by
-- the embed stage; the rate limit is ragops.provider.ratelimit.
local embed = require "ragops.embed"

local M = {}

-- The embedding client of cfg.provider, requests timing out after timeout_s.
function M.new(cfg, timeout_s)
  return embed.client {
    url = cfg.provider.url, model = cfg.provider.model, dimensions = cfg.provider.dimensions,
    expected_dim = cfg.provider.dim, api_key = cfg.provider.api_key,
    timeout_ms = timeout_s * 1000, encoding = cfg.provider.encoding,
  }
end

return M
