-- ragops.util.scrub: what every text leaving the process goes through.
--   mask: each registered secret (the API key, the database password, the
--         webhook path, Pushgateway credentials...: config.load registers
--         them) becomes "***", wherever the text came from (a provider's
--         x-request-id, an error body, a plan's error());
--   escape: control characters become visible ("\n", "\x1b", "\u009b"), so
--         a source key or an error() cannot forge log lines or drive the
--         operator's terminal: C0, DEL, C1 and bytes that are not UTF-8;
--   cap:  long texts keep their first bytes and say how many were left out.
-- Helpers for the exit points: message (a failure message stored or
-- listed), line (one log line), text (a multi-line output: reports, status).
local cjson = require "cjson"

local M = {}

M.MASK = "***"
M.MIN_SECRET = 4          -- shorter values are not masked (they would hide ordinary words)
M.MAX_MESSAGE = 2048      -- bytes of a failure message (ragops_failures.message)
M.MAX_LINE = 8192         -- bytes of the message of one log line

local secrets, ordered = {}, nil -- set of registered forms; their list, longest first

local json = cjson.new()

-- The forms a secret takes in what ragops writes: as is, inside JSON
-- (cjson escapes "/" and quotes) and inside HTML.
local function forms(secret)
  local out = { secret }
  local ok, encoded = pcall(json.encode, secret)
  if ok then out[#out + 1] = encoded:sub(2, -2) end
  out[#out + 1] = (secret:gsub("[&<>\"']", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;",
                                               ['"'] = "&quot;", ["'"] = "&#39;" }))
  return out
end

-- Registers secret (ignored unless a string of at least MIN_SECRET bytes).
function M.register(secret)
  if type(secret) ~= "string" or #secret < M.MIN_SECRET then return end
  for _, form in ipairs(forms(secret)) do
    if not secrets[form] then
      secrets[form] = true
      ordered = nil
    end
  end
end

-- Forgets every registered secret (tests).
function M.clear()
  secrets, ordered = {}, nil
end

local function secret_list()
  if not ordered then
    ordered = {}
    for form in pairs(secrets) do ordered[#ordered + 1] = form end
    table.sort(ordered, function(a, b) return #a > #b or (#a == #b and a < b) end)
  end
  return ordered
end

-- text with every registered secret replaced by MASK (non-strings go
-- through tostring).
function M.mask(text)
  text = tostring(text)
  for _, secret in ipairs(secret_list()) do
    local s, e = text:find(secret, 1, true)
    if s then
      local parts, position = {}, 1
      while s do
        parts[#parts + 1] = text:sub(position, s - 1)
        parts[#parts + 1] = M.MASK
        position = e + 1
        s, e = text:find(secret, position, true)
      end
      parts[#parts + 1] = text:sub(position)
      text = table.concat(parts)
    end
  end
  return text
end

local NAMED = { ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }

local function escape_byte(c)
  return NAMED[c] or ("\\x%02x"):format(c:byte())
end

-- Length of the valid UTF-8 sequence at position i of s, or nil.
local function utf8_at(s, i)
  local b1, b2, b3, b4 = s:byte(i, i + 3)
  local function cont(b) return b and b >= 0x80 and b <= 0xBF end
  if b1 >= 0xC2 and b1 <= 0xDF then return cont(b2) and 2 or nil end
  if b1 >= 0xE0 and b1 <= 0xEF then
    if not (cont(b2) and cont(b3)) then return nil end
    if (b1 == 0xE0 and b2 < 0xA0) or (b1 == 0xED and b2 > 0x9F) then return nil end
    return 3
  end
  if b1 >= 0xF0 and b1 <= 0xF4 then
    if not (cont(b2) and cont(b3) and cont(b4)) then return nil end
    if (b1 == 0xF0 and b2 < 0x90) or (b1 == 0xF4 and b2 > 0x8F) then return nil end
    return 4
  end
  return nil
end

-- A run of non-ASCII bytes: valid UTF-8 stays, C1 controls (U+0080 to
-- U+009F) become "\u00XX", any other byte "\xNN".
local function escape_run(run)
  local out, i = {}, 1
  while i <= #run do
    local n = utf8_at(run, i)
    if n == 2 and run:byte(i) == 0xC2 and run:byte(i + 1) <= 0x9F then
      out[#out + 1] = ("\\u%04x"):format(run:byte(i + 1))
    elseif n then
      out[#out + 1] = run:sub(i, i + n - 1)
    else
      n = 1
      out[#out + 1] = ("\\x%02x"):format(run:byte(i))
    end
    i = i + n
  end
  return table.concat(out)
end

-- text with control characters visible (see the file header); with
-- keep_newlines, "\n" stays a line break (multi-line outputs).
function M.escape(text, keep_newlines)
  text = tostring(text)
  if not text:find("[%z\1-\31\127-\255]") then return text end
  text = text:gsub(keep_newlines and "[%z\1-\9\11-\31\127]" or "[%z\1-\31\127]", escape_byte)
  return (text:gsub("[\128-\255]+", escape_run))
end

-- text cut to its first max bytes (at a UTF-8 boundary) followed by
-- " … (N bytes omitidos)"; shorter texts are returned as they are.
function M.cap(text, max)
  text = tostring(text)
  if #text <= max then return text end
  local cut = max
  while cut > 0 do
    local b = text:byte(cut + 1)
    if b < 0x80 or b >= 0xC0 then break end
    cut = cut - 1
  end
  return ("%s … (%d bytes omitidos)"):format(text:sub(1, cut), #text - cut)
end

-- A failure message as stored (ragops_failures.message): masked, at most
-- MAX_MESSAGE bytes (plus the marker), escaped with its line breaks kept
-- (so it is also valid UTF-8 without NUL bytes, as a text column needs).
function M.message(text)
  return M.escape(M.cap(M.mask(text), M.MAX_MESSAGE), true)
end

-- The message of one text log line: masked, capped at MAX_LINE, escaped.
function M.line(text)
  return M.escape(M.cap(M.mask(text), M.MAX_LINE))
end

-- A multi-line output for people (report, status, an error on stderr):
-- masked and escaped, line breaks kept; max (optional) caps it.
function M.text(text, max)
  text = M.mask(text)
  if max then text = M.cap(text, max) end
  return M.escape(text, true)
end

return M
