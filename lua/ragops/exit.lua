-- ragops.exit: the process exit codes (one definition for every command)
-- and the one way a command stops with a pt-BR message on stderr.
--   0 concluído; 1 concluído com itens na fila de falhas; 2 uso ou plano
--   inválido (nada gravado), ou erro interno; 3 abortado por alerta;
--   4 dependência inalcançável; 130 interrompido por sinal.
local M = {
  ok = 0,            -- done
  dead_letters = 1,  -- done, some items went to the failure queue
  usage = 2,         -- usage or plan error (nothing written); internal error
  alert = 3,         -- aborted by an alert threshold
  unreachable = 4,   -- PostgreSQL or the provider could not be reached
  interrupted = 130, -- SIGINT/SIGTERM
}

-- Writes "ragops: <message>" to stderr (secrets masked, control characters
-- escaped, at most 64 KiB: ragops.util.scrub) and returns code.
function M.fail(code, fmt, ...)
  io.stderr:write("ragops: " .. require("ragops.util.scrub").text(fmt:format(...), 65536) .. "\n")
  return code
end

return M
