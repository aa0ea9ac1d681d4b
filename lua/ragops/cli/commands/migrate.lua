-- ragops.cli.commands.migrate: `ragops migrate`, creates or upgrades the engine's
-- tables (ragops.store.migrate) and says what it did, in pt-BR.
local exit = require "ragops.util.exit"
local migrate = require "ragops.store.migrate"
local prelude = require "ragops.cli.prelude"

local M = {}

M.FLAGS = { config = "string", quiet = "bool" }

-- What the migration did, as one line for stdout.
local function summary(result)
  if #result.applied == 0 then
    return ("esquema já está atualizado (versão %d)\n"):format(result.current)
  end
  return ("migrações aplicadas: %s; esquema na versão %d; coluna embedding: %s\n")
    :format(table.concat(result.applied, ", "), result.current,
      result.storage == "real[]" and "real[] (sem pgvector: sem índice IVFFlat/HNSW)"
        or ("%s (pgvector)"):format(result.embedding_type))
end

-- `ragops migrate [--config F] [--quiet]`; returns the exit code.
function M.main(args, cli)
  local a = cli.parse(args, M.FLAGS)
  if #a.positional > 0 then cli.usage_error("migrate não aceita argumentos: %s", a.positional[1]) end
  local opts = a.options
  local cfg, code = prelude.config(opts)
  if not cfg then return code end
  local conn, ccode = prelude.session(cfg)
  if not conn then return ccode end
  local result, merr, kind = migrate.run(conn, cfg)
  conn:close()
  if not result then return exit.fail(exit[kind] or exit.unreachable, "migração falhou: %s", tostring(merr)) end
  io.stdout:write(summary(result))
  return exit.ok
end

return M
