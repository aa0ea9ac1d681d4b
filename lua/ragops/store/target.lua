-- ragops.store.target: the database as the commands open it: a PostgreSQL
-- session and the checks before anything is written (that `ragops migrate`
-- ran, that the target table matches the configuration, that PostgreSQL
-- accepts the plan's SQL). Errors are pt-BR, without secrets (URLs
-- redacted). The embedding client is ragops.provider.client.
local config = require "ragops.plan.config"
local exit = require "ragops.util.exit"
local messages = require "ragops.util.messages"
local migrate = require "ragops.store.migrate"
local pg = require "ragops.pg"

local M = {}

-- "não foi possível conectar ..." for a failed connection to cfg's database.
function M.connect_error(cfg, err)
  return ("não foi possível conectar ao PostgreSQL em %s: %s")
    :format(config.redact_url(cfg.database.url), messages.translate(err))
end

-- Connects one session or returns nil, pt-BR message without secrets.
function M.connect(cfg)
  local conn, err = pg.connect(cfg.database.url)
  if not conn then return nil, M.connect_error(cfg, err) end
  return conn
end

-- Checks that the engine's tables (and target, when given) belong to roles
-- this one trusts (ragops.store.migrate.check_owned) and that `ragops migrate` has
-- created them (at the latest version). Returns true or nil, err, exit code.
function M.check_schema(conn, target)
  local owned, oerr, okind = migrate.check_engine_owned(function(sql, ...) return conn:query(sql, ...) end, target)
  if not owned then return nil, oerr, okind == "usage" and exit.usage or exit.unreachable end
  local version, err = migrate.schema_version(conn)
  if not version then return nil, ("falha ao ler o esquema do ragops: %s"):format(tostring(err)), exit.unreachable end
  if version == 0 then
    return nil, "as tabelas do ragops não existem neste banco; execute `ragops migrate` antes", exit.usage
  end
  if version < migrate.latest_version() then
    return nil, ("as tabelas do ragops estão na versão %d, mas esta versão do ragops precisa da %d; "
      .. "execute `ragops migrate` antes"):format(version, migrate.latest_version()), exit.usage
  end
  return true
end

-- Checks that the target table exists and matches the configured dimension.
-- Returns the embedding column type or nil, err, exit code.
function M.check_target(conn, cfg)
  local schema_ok, serr, scode = M.check_schema(conn, cfg.database.table)
  if not schema_ok then return nil, serr, scode end
  local coltype, err = migrate.embedding_column(conn, cfg.database.table)
  if err then return nil, err, exit.unreachable end
  if not coltype then
    return nil, ("a tabela %q não existe ou não tem a coluna embedding; execute `ragops migrate` antes")
      :format(cfg.database.table), exit.usage
  end
  local _, dim = migrate.parse_column(coltype)
  if dim and dim ~= cfg.provider.dim then
    return nil, ("a coluna embedding é %s, mas provider.dim = %d; ajuste provider.dim e provider.model ao que "
      .. "a tabela guarda (depois de uma troca de modelo, `ragops model status` mostra qual é) ou converta a "
      .. "coluna com `ragops index create --alter-dim`"):format(coltype, cfg.provider.dim), exit.usage
  end
  return coltype
end

-- Checks since < until in the database (its time zone applies to dates
-- without zone). Returns true or nil, err.
function M.check_date_range(conn, scope)
  if not scope or not scope.since or not scope["until"] then return true end
  local rows, err = conn:query("select $1::timestamptz < $2::timestamptz as ok", scope.since, scope["until"])
  if not rows then return nil, "intervalo de datas inválido: " .. tostring(err) end
  if not rows[1].ok then
    return nil, ("--since (%s) deve ser anterior a --until (%s)"):format(scope.since, scope["until"])
  end
  return true
end

-- The query that checks one source before anything is recorded: its SQL,
-- key and updated_at, planned and started by PostgreSQL (privileges too)
-- but returning no row (limit 0: document() and the row functions never run).
local function source_probe(source)
  local columns = { "src." .. pg.quote_ident(source.key) }
  if source.updated_at then columns[2] = "src." .. pg.quote_ident(source.updated_at) end
  return ("select %s from (%s) as src limit 0"):format(table.concat(columns, ", "), source.sql)
end

-- pt-BR: PostgreSQL refused the SQL of source (SQLSTATE class 42): which
-- source, where the plan declares it, PostgreSQL's text and what to check.
function M.source_sql_error(source, err, state)
  return ('o SQL da fonte "%s" (plano %s) foi recusado pelo PostgreSQL: %s; confira no plano a consulta '
    .. "dessa fonte (nomes de tabelas e colunas, key = %q%s, sintaxe) e as permissões do usuário do banco "
    .. "sobre as tabelas que ela lê"):format(source.entity_type, source.declared_at or "?",
    messages.postgres(err, state), source.key,
    source.updated_at and (", updated_at = %q"):format(source.updated_at) or "")
end

-- Checks the SQL of sources (default: all of p's) against the database
-- before a run is recorded or a follower starts. query(sql) -> rows | nil,
-- err, sqlstate (through the retry policy where the caller has a pool).
-- Returns true, or nil, exit code, err: 2 when PostgreSQL refused the SQL
-- (class 42), 4 when the database could not answer.
function M.check_sources(query, p, sources)
  for _, source in ipairs(sources or p.sources) do
    local rows, err, state = query(source_probe(source))
    if not rows then
      local code = exit.for_sqlstate(state)
      if code == exit.usage then return nil, code, M.source_sql_error(source, err, state) end
      return nil, code, ('falha ao conferir o SQL da fonte "%s": %s'):format(source.entity_type, tostring(err))
    end
  end
  return true
end

return M
