-- ragops.provider.proxy: which proxy the provider's requests go through,
-- to name it (without credentials) in the first log line and in
-- connection errors: provider.proxy when set ("" = none), else the
-- standard variables libcurl follows (https_proxy / HTTPS_PROXY for https,
-- http_proxy for http, then ALL_PROXY), unless NO_PROXY covers the host.
local M = {}

-- The host of an http(s) URL, lower-cased, without port or credentials.
local function host_of(url)
  local authority = url:match("^%a[%w+.-]*://([^/?#]*)") or ""
  authority = authority:match("@([^@]*)$") or authority
  local host = authority:match("^%[([^%]]+)%]") or authority:match("^([^:]*)")
  return (host or ""):lower()
end

-- True when NO_PROXY's list ("*", "host", ".domain", "domain") covers host.
local function bypassed(host, no_proxy)
  if not no_proxy or no_proxy == "" then return false end
  for entry in no_proxy:gmatch("[^,%s]+") do
    entry = entry:lower():gsub("^%.", ""):gsub(":%d+$", "")
    if entry == "*" or host == entry or host:sub(-(#entry + 1)) == "." .. entry then return true end
  end
  return false
end

-- A URL as it may be shown: no user or password, no query string or
-- fragment (the path stays).
function M.display(url)
  local scheme, rest = url:match("^(%a[%w+.-]*://)(.*)$")
  if not scheme then scheme, rest = "", url end
  local authority, path = rest:match("^([^/?#]*)([^?#]*)")
  return scheme .. (authority:match("@([^@]*)$") or authority) .. path
end

-- The proxy of requests to url: proxy URL, where it came from (the
-- setting or the variable's name); nil when requests go direct.
function M.effective(url, configured, getenv)
  getenv = getenv or os.getenv
  if configured ~= nil then
    if configured == "" then return nil end
    return configured, "provider.proxy"
  end
  local host = host_of(url)
  if bypassed(host, getenv("NO_PROXY") or getenv("no_proxy")) then return nil end
  local https = url:lower():match("^https://") ~= nil
  local names = https and { "https_proxy", "HTTPS_PROXY", "ALL_PROXY", "all_proxy" }
    or { "http_proxy", "ALL_PROXY", "all_proxy" }
  for _, name in ipairs(names) do
    local value = getenv(name)
    if value and value ~= "" then return value, name end
  end
  return nil
end

-- "via proxy http://p:3128 (de HTTPS_PROXY)", or nil when direct.
function M.describe(url, configured, getenv)
  local proxy, origin = M.effective(url, configured, getenv)
  if not proxy then return nil end
  return ("via proxy %s (de %s)"):format(M.display(proxy), origin)
end

return M
