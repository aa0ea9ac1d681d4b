-- ragops.util.exit: the process exit codes (one definition for every command)
-- and the one way a command stops with a pt-BR message on stderr.
--   0 concluído; 1 concluído com itens na fila de falhas (ou simulação com
--   documentos falhando); 2 uso, plano, SQL do plano, configuração ou URL
--   inválidos (nada gravado), ou erro interno; 3 abortado por alerta ou
--   orçamento; 4 dependência inalcançável; 130 interrompido por sinal.
local M = {
  ok = 0,            -- done
  dead_letters = 1,  -- done, some items went to the failure queue
  below_threshold = 1, -- ragops validate / model compare: quality below the thresholds
  usage = 2,         -- usage or plan error (nothing written)
  internal = 2,      -- a defect of ragops (a Lua error nothing handled): the
                     -- operator's to report; same code as usage (DESIGN.md
                     -- has no code of its own for it; docs/runbook.md)
  alert = 3,         -- aborted by an alert threshold
  unreachable = 4,   -- PostgreSQL or the provider could not be reached
  interrupted = 130, -- SIGINT/SIGTERM
}

-- The code of a database operation that failed with SQLSTATE state after
-- the retry policy: class 42 (syntax error or access rule violation: syntax,
-- undefined table, column or function, insufficient privilege) is the
-- operator's to fix in the plan's SQL or the grants (2); anything else is a
-- dependency that may come back (4). The kind travels as the SQLSTATE,
-- never as message text.
function M.for_sqlstate(state)
  if type(state) == "string" and state:sub(1, 2) == "42" then return M.usage end
  return M.unreachable
end

-- Writes "ragops: <message>" to stderr (secrets masked, control characters
-- escaped, at most 64 KiB: ragops.util.scrub) and returns code.
function M.fail(code, fmt, ...)
  io.stderr:write("ragops: " .. require("ragops.util.scrub").text(fmt:format(...), 65536) .. "\n")
  return code
end

return M
