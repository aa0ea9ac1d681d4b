-- ragops.provider.dialects.url: endpoint URLs from the operator's base URL
-- (a path appended before any query string, so "https://h/v1?x=1" becomes
-- "https://h/v1/embeddings?x=1") and query parameters, percent-encoded.
local M = {}

-- base without trailing slashes on its path, suffix (starting with "/")
-- appended to the path, the query string and fragment kept after it.
function M.join(base, suffix)
  local path, rest = base:match("^([^?#]*)(.*)$")
  return path:gsub("/+$", "") .. suffix .. rest
end

-- text percent-encoded for a URL path segment or query value.
function M.encode(text)
  return (tostring(text):gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

-- url with "name=value" added to its query string.
function M.with_query(base, name, value)
  local without_fragment, fragment = base:match("^([^#]*)(.*)$")
  local sep = without_fragment:find("?", 1, true) and "&" or "?"
  return without_fragment .. sep .. M.encode(name) .. "=" .. M.encode(value) .. fragment
end

return M
