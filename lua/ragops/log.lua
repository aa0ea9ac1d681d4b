-- ragops.log: operator log lines (pt-BR) on stderr, with a timestamp and a
-- level. Secrets never reach here: callers pass redacted values.
local M = { quiet = false, sink = io.stderr }

local LEVELS = { debug = "DEPURAÇÃO", info = "INFO", warn = "AVISO", error = "ERRO" }

function M.write(level, fmt, ...)
  if M.quiet and level ~= "error" then return end
  local msg = select("#", ...) > 0 and fmt:format(...) or fmt
  M.sink:write(("[%s] %s %s\n"):format(os.date("%Y-%m-%d %H:%M:%S"), LEVELS[level] or level, msg))
end

function M.info(fmt, ...) M.write("info", fmt, ...) end
function M.warn(fmt, ...) M.write("warn", fmt, ...) end
function M.error(fmt, ...) M.write("error", fmt, ...) end

return M
