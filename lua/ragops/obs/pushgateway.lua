-- ragops.obs.pushgateway: pushes the final values of a metrics registry to a
-- Prometheus Pushgateway, for batch runs that end before a scrape:
--
--   local ok, err = pushgateway.push(registry, "http://127.0.0.1:9091",
--     { job = "ragops", instance = host, plan = "backfill" })
--
-- PUT <url>/metrics/job/<job>/instance/<instance>/<label>/<value>... with the
-- text exposition as body: the group (job, instance and the other labels)
-- is replaced as a whole. Values made only of letters, digits and "-._~"
-- go as they are; any other (empty, "/", spaces, accents) goes with the
-- Pushgateway's "@base64" form (RFC 4648 URL-safe alphabet). Failures
-- return nil, pt-BR message (without the URL, which may carry credentials;
-- what the server answered goes through ragops.util.scrub: configured
-- secrets, such as echoed Basic credentials, masked; one line of at most
-- 200 bytes, control characters escaped).
local M = {}

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

-- URL-safe base64 of s, with "=" padding ("=" alone for the empty string).
function M.base64url(s)
  if s == "" then return "=" end
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local idx = { math.floor(n / 262144) % 64, math.floor(n / 4096) % 64, math.floor(n / 64) % 64, n % 64 }
    for k = 1, 4 do out[#out + 1] = B64:sub(idx[k] + 1, idx[k] + 1) end
    if not b then out[#out - 1], out[#out] = "=", "=" elseif not c then out[#out] = "=" end
  end
  return table.concat(out)
end

-- "name/value" or "name@base64/encoded" path segment of one grouping label.
function M.segment(name, value)
  value = tostring(value)
  if value:match("^[%w%-%._~]+$") then return name .. "/" .. value end
  return name .. "@base64/" .. M.base64url(value)
end

-- The push URL of grouping (job first, then instance, then the others by name).
function M.group_url(base, grouping)
  local names = {}
  for name in pairs(grouping) do
    if name ~= "job" and name ~= "instance" then names[#names + 1] = name end
  end
  table.sort(names)
  if grouping.instance ~= nil then table.insert(names, 1, "instance") end
  local parts = { (base:gsub("/+$", "")), "metrics", M.segment("job", grouping.job) }
  for _, name in ipairs(names) do parts[#parts + 1] = M.segment(name, grouping[name]) end
  return table.concat(parts, "/")
end

-- This machine's host name (the default instance label).
function M.hostname()
  local f = io.open("/proc/sys/kernel/hostname", "r")
  local name = f and f:read("*l")
  if f then f:close() end
  return (name and name ~= "") and name or (os.getenv("HOSTNAME") or "localhost")
end

-- Pushes registry:render(). opts.request (default ragops.http.request) and
-- opts.timeout_ms (default 10000). Returns true or nil, pt-BR message.
function M.push(registry, url, grouping, opts)
  if type(url) ~= "string" or not url:match("^[Hh][Tt][Tt][Pp][Ss]?://") then
    error("pushgateway.push: URL http:// ou https:// ausente", 2)
  end
  if type(grouping) ~= "table" or grouping.job == nil then
    error("pushgateway.push: o agrupamento precisa do rótulo job", 2)
  end
  opts = opts or {}
  local request = opts.request or require("ragops.http").request
  local resp, err = request { method = "PUT", url = M.group_url(url, grouping),
    headers = { ["Content-Type"] = "text/plain; version=0.0.4; charset=utf-8" },
    body = registry:render(), timeout_ms = opts.timeout_ms or 10000 }
  local scrub = require "ragops.util.scrub"
  if not resp then
    return nil, ("falha ao enviar as métricas ao Pushgateway: %s"):format(scrub.line(tostring(err)))
  end
  if resp.status < 200 or resp.status >= 300 then
    local detail = scrub.mask(tostring(resp.body or "")):match("^[^\n]*")
    return nil, ("o Pushgateway recusou as métricas: HTTP %d %s"):format(resp.status,
      scrub.escape(scrub.cap(detail, 200)))
  end
  return true
end

return M
