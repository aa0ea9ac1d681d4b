-- ragops.obs.log: operator log lines (pt-BR) on stderr, as text
-- ("[data hora] NÍVEL mensagem") or as JSON lines (M.format = "json":
-- { ts, level, msg, ...context, ...fields }). The wiring sets the run's
-- context once (log.context{ run_id =, plan = }); a call adds its own
-- fields with log.event(level, fields, fmt, ...) (entity_type, batch,
-- request_id, counts). A text line shows only the message, so the message
-- must say by itself what matters. Callers pass redacted values; as a last
-- line of defence every line goes through ragops.util.scrub: configured
-- secrets masked, the message capped (scrub.MAX_LINE) and, in text lines,
-- control characters escaped (a line is one line, whatever a source key or
-- a plan's error() holds); JSON lines rely on cjson's escaping plus C1.
local cjson = require "cjson"
local scrub = require "ragops.util.scrub"

local M = {
  quiet = false,     -- only errors are written
  sink = io.stderr,  -- where lines go (anything with :write)
  format = "text",   -- "text" | "json"
  fields = {},       -- context of every JSON line (log.context)
}

M.FORMATS = { text = true, json = true }

local LEVELS = { debug = "DEPURAÇÃO", info = "INFO", warn = "AVISO", error = "ERRO" }
local RESERVED = { ts = true, level = true, msg = true }

-- Private cjson instance so options do not leak to other modules.
local json = cjson.new()

-- Replaces the context every JSON line carries (nil clears it).
function M.context(fields)
  M.fields = fields or {}
end

-- Copies the loggable fields of from into into: strings (masked and
-- capped), booleans and finite numbers; reserved keys (ts, level, msg) are
-- never overwritten.
local function copy_fields(into, from)
  for key, value in pairs(from or {}) do
    local kind = type(value)
    local finite = kind == "number" and value == value and value ~= math.huge and value ~= -math.huge
    if type(key) == "string" and not RESERVED[key] and (kind == "string" or kind == "boolean" or finite) then
      into[key] = kind == "string" and scrub.cap(scrub.mask(value), scrub.MAX_LINE) or value
    end
  end
end

-- C1 controls (U+0080 to U+009F) pass cjson as they are; a terminal may obey them.
local function escape_c1(text)
  return (text:gsub("\194([\128-\159])", function(c) return ("\\u%04x"):format(c:byte()) end))
end

local function json_line(level, fields, msg)
  local line = { ts = os.date("!%Y-%m-%dT%H:%M:%SZ"), level = level,
                 msg = scrub.cap(scrub.mask(msg), scrub.MAX_LINE) }
  copy_fields(line, M.fields)
  copy_fields(line, fields)
  return escape_c1(json.encode(line))
end

-- Writes one line at level with extra fields (JSON only) and the pt-BR
-- message fmt:format(...).
function M.event(level, fields, fmt, ...)
  if M.quiet and level ~= "error" then return end
  local msg = select("#", ...) > 0 and fmt:format(...) or fmt
  if M.format == "json" then
    M.sink:write(json_line(level, fields, msg), "\n")
  else
    M.sink:write(("[%s] %s %s\n"):format(os.date("%Y-%m-%d %H:%M:%S"), LEVELS[level] or level, scrub.line(msg)))
  end
end

function M.write(level, fmt, ...) M.event(level, nil, fmt, ...) end
function M.info(fmt, ...) M.event("info", nil, fmt, ...) end
function M.warn(fmt, ...) M.event("warn", nil, fmt, ...) end
function M.error(fmt, ...) M.event("error", nil, fmt, ...) end

return M
