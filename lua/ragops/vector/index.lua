-- ragops.vector.index: the library of `ragops index create|drop|status` (the command
-- itself is ragops.cli.commands.index): the pgvector index on the target table
-- (IVFFlat or HNSW) over a vector(N) or halfvec(N) column, following
-- pgvector's documented behaviour:
--   CREATE INDEX [CONCURRENTLY] name ON t USING ivfflat (embedding vector_cosine_ops) WITH (lists = N)
--   CREATE INDEX ... USING hnsw (embedding halfvec_l2_ops) WITH (m = 16, ef_construction = 64)
--   SET maintenance_work_mem = '2GB' before the build (session setting);
--   ivfflat.probes / hnsw.ef_search are query-session settings, only advised here.
-- Defaults come from plans/create_index.lua; flags override them.
-- Every statement is sent alone (simple protocol, no transaction block), as
-- CREATE/DROP INDEX CONCURRENTLY require. Numbers are validated and formatted
-- from Lua numbers; identifiers go through ragops.pg.quote_ident; user text
-- is never interpolated. On real[] storage (no pgvector) only `status` and
-- `--dry-run` work; everything else exits 2 with an explanation. A signal
-- during `create` cancels the running statement on the server and says what
-- was left (an INVALID index and its DROP, or nothing); exit 130.
local exit = require "ragops.util.exit"
local migrate = require "ragops.store.migrate"
local pg = require "ragops.pg"
local plan_mod = require "ragops.plan"
local sandbox = require "ragops.plan.sandbox"

local M = {}


-- pgvector limits (v0.5+ README and source: ivfflat.c, hnsw.h).
M.LIMITS = {
  lists = { 1, 32768 },          -- ivfflat WITH (lists)
  m = { 2, 100 },                -- hnsw WITH (m)
  ef_construction = { 4, 1000 }, -- hnsw WITH (ef_construction), and >= 2 * m
  dim = { 1, 16000 },            -- vector(N) / halfvec(N) column
  index_dim = migrate.INDEX_DIM, -- ivfflat/hnsw: vector up to 2000, halfvec up to 4000
  memory_kb = { 1024, 2147483647 }, -- maintenance_work_mem (PostgreSQL)
}

-- Operator class suffixes; the column type is the prefix (vector_cosine_ops,
-- halfvec_cosine_ops, ...: M.opclass_name).
M.OPCLASSES = { cosine = "cosine_ops", l2 = "l2_ops", ip = "ip_ops" }
M.OPERATORS = { cosine = "<=>", l2 = "<->", ip = "<#>" }
M.METHODS = { ivfflat = true, hnsw = true }
-- HNSW needs pgvector 0.5.0 or newer; halfvec, 0.7.0.
M.HNSW_MIN_VERSION = { 0, 5, 0 }
M.HALFVEC_MIN_VERSION = { 0, 7, 0 }

M.EMBEDDING_COLUMN = "embedding"
-- The plan with the defaults, under RAGOPS_HOME.
M.DEFAULTS_PLAN = "plans/create_index.lua"

-- Overridable for unit tests.
function M.quote_ident(name)
  return pg.quote_ident(name)
end

-- The target table, "table" or "schema.table", each part quoted.
function M.quote_table(name)
  local schema, rel = name:match("^([^%.]+)%.([^%.]+)$")
  if schema then return M.quote_ident(schema) .. "." .. M.quote_ident(rel) end
  return M.quote_ident(name)
end

-- Parses a non-negative integer flag value within [min, max].
-- Returns n or nil.
local function parse_int(text, min, max)
  if type(text) == "number" then text = tostring(text) end
  if type(text) ~= "string" or not text:match("^%d+$") or #text > 9 then return nil end
  local n = tonumber(text)
  if n < min or n > max then return nil end
  return n
end

local MEMORY_UNITS = { kb = { "kB", 1 }, mb = { "MB", 1024 }, gb = { "GB", 1024 * 1024 },
                       tb = { "TB", 1024 * 1024 * 1024 } }

-- Parses a PostgreSQL memory size like "64MB", "2GB", "512kB" (unit
-- required, case-insensitive). Returns the canonical text ("2GB") and the
-- size in kB, or nil, pt-BR error.
function M.parse_memory(text)
  local bad = ("--maintenance-work-mem espera um tamanho como 64MB, 2GB ou 4GB (de 1MB a 2047GB), recebi %q")
    :format(tostring(text))
  if type(text) ~= "string" then return nil, bad end
  local digits, unit = text:match("^(%d+)%s*(%a+)$")
  if not digits or #digits > 10 then return nil, bad end
  local u = MEMORY_UNITS[unit:lower()]
  if not u then return nil, bad end
  local n = tonumber(digits)
  local kb = n * u[2]
  if kb < M.LIMITS.memory_kb[1] or kb > M.LIMITS.memory_kb[2] then return nil, bad end
  return ("%d%s"):format(n, u[1]), kb
end

-- Compares dotted versions ("0.4.4") against { major, minor, patch }.
function M.version_at_least(text, wanted)
  local parts = {}
  for piece in tostring(text or ""):gmatch("%d+") do parts[#parts + 1] = tonumber(piece) end
  for i = 1, #wanted do
    local have = parts[i] or 0
    if have ~= wanted[i] then return have > wanted[i] end
  end
  return true
end

-- Default index name: <table>_embedding_<method>.
function M.default_name(table_name, method)
  -- The index lives in the table's schema: name it after the relation only.
  local relation = table_name:match("%.([^%.]+)$") or table_name
  return ("%s_%s_%s"):format(relation, M.EMBEDDING_COLUMN, method or "ivfflat")
end

-- Checks an index name given by the operator. Returns name or nil, err.
function M.check_name(name)
  if type(name) ~= "string" or name == "" or #name > 63 or name:find("%z") then
    return nil, ("--name espera um nome de índice de 1 a 63 bytes, recebi %q"):format(tostring(name))
  end
  return name
end

-- Recommended lists/probes for a row count (pgvector README: rows / 1000
-- up to 1M rows, sqrt(rows) above; probes = sqrt(lists)).
function M.recommend(rows)
  rows = math.max(0, math.floor(tonumber(rows) or 0))
  local lists
  if rows <= 1000000 then lists = math.floor(rows / 1000) else lists = math.floor(math.sqrt(rows)) end
  lists = math.max(1, math.min(lists, M.LIMITS.lists[2]))
  local probes = math.max(1, math.floor(math.sqrt(lists) + 0.5))
  return lists, probes
end

-- Why an index of column type `kind` cannot take `dim` dimensions.
local function dim_limit_message(kind, dim)
  local limits = M.LIMITS.index_dim
  if kind == "vector" then
    return ("--dim %d passa do limite do pgvector para índices em colunas vector: ivfflat e hnsw indexam vector "
      .. "de até %d dimensões. Use database.storage = \"halfvec\" (meia precisão: índices até %d dimensões, "
      .. "metade do tamanho em disco) e converta a coluna com `ragops index create --alter-dim` ou crie uma tabela "
      .. "nova com `ragops migrate`; veja docs/indice-vetorial.md"):format(dim, limits.vector, limits.halfvec)
  end
  return ("--dim %d passa do limite do pgvector para índices: nem halfvec (o tipo de maior alcance) indexa mais de "
    .. "%d dimensões. Reduza a dimensão dos embeddings (provider.dimensions, por exemplo text-embedding-3-large "
    .. "com dimensions = 3072) ou consulte sem índice (busca exata)"):format(dim, limits.halfvec)
end

-- The operator class of an index of column type `kind` ("vector" or
-- "halfvec") for opclass "cosine" | "l2" | "ip".
function M.opclass_name(kind, opclass)
  return ("%s_%s"):format(kind, M.OPCLASSES[opclass])
end

-- For `index status`: what the column type means for indexing ("" for
-- types without an index).
function M.type_note(column)
  local base = migrate.parse_column(column)
  if base == "halfvec" then
    return ("; halfvec: meia precisão, índices até %d dimensões"):format(M.LIMITS.index_dim.halfvec)
  elseif base == "vector" then
    return ("; índices até %d dimensões, acima use halfvec"):format(M.LIMITS.index_dim.vector)
  end
  return ""
end

-- The pgvector type the index is built on, "vector" or "halfvec": the
-- column's own; with --alter-dim (or a column that is not pgvector's, or
-- unknown: nil) the one database.storage names, "auto" deciding by
-- ragops.store.migrate.auto_type.
function M.index_type(spec, column)
  local base = migrate.parse_column(column)
  if not spec.alter_dim and (base == "vector" or base == "halfvec") then return base end
  if spec.storage == "vector" or spec.storage == "halfvec" then return spec.storage end
  return migrate.auto_type(spec.dim, base)
end

-- --lists of an ivfflat index into spec. Returns true or nil, pt-BR error.
local function ivfflat_options(spec, opts, defaults)
  local L = M.LIMITS
  if opts.m ~= nil or opts["ef-construction"] ~= nil then
    return nil, "--m e --ef-construction só valem para --method hnsw"
  end
  if opts.lists == nil then
    local lists = type(defaults.lists) == "table" and defaults.lists or {}
    return nil, ("--lists é obrigatório com --method ivfflat (o runbook usa %s em desenvolvimento e %s em "
      .. "produção, depois que a tabela estiver populada; veja plans/create_index.lua e `ragops index status`)")
      :format(tostring(lists.dev or 64), tostring(lists.prod or 2000))
  end
  spec.lists = parse_int(opts.lists, L.lists[1], L.lists[2])
  if not spec.lists then
    return nil, ("--lists deve ser um inteiro entre %d e %d (limite do pgvector), recebi %q")
      :format(L.lists[1], L.lists[2], tostring(opts.lists))
  end
  return true
end

-- --m and --ef-construction of an hnsw index into spec. Returns true or
-- nil, pt-BR error.
local function hnsw_options(spec, opts, defaults)
  local L = M.LIMITS
  if opts.lists ~= nil then
    return nil, "--lists só vale para --method ivfflat (hnsw usa --m e --ef-construction)"
  end
  local m_text = opts.m or defaults.m or 16
  spec.m = parse_int(m_text, L.m[1], L.m[2])
  if not spec.m then
    return nil, ("--m deve ser um inteiro entre %d e %d (limite do pgvector), recebi %q")
      :format(L.m[1], L.m[2], tostring(m_text))
  end
  local ef_text = opts["ef-construction"] or defaults.ef_construction or 64
  spec.ef_construction = parse_int(ef_text, L.ef_construction[1], L.ef_construction[2])
  if not spec.ef_construction then
    return nil, ("--ef-construction deve ser um inteiro entre %d e %d (limite do pgvector), recebi %q")
      :format(L.ef_construction[1], L.ef_construction[2], tostring(ef_text))
  end
  if spec.ef_construction < 2 * spec.m then
    return nil, ("--ef-construction (%d) deve ser pelo menos 2 × --m (%d × 2 = %d): o pgvector recusa "
      .. "ef_construction < 2 * m"):format(spec.ef_construction, spec.m, 2 * spec.m)
  end
  return true
end

-- Validates `index create` options (flag strings, as parsed by ragops.cli)
-- against the plan defaults. Returns a spec:
--   { method, opclass, lists, m, ef_construction, dim, maintenance_work_mem,
--     concurrently, alter_dim, name, dry_run, storage }
-- or nil, pt-BR error. table_name gives the default index name; storage is
-- database.storage (default "auto"), for M.index_type.
function M.validate_create(opts, defaults, table_name, storage)
  defaults = defaults or {}
  local spec = {
    concurrently = opts.concurrently == true,
    alter_dim = opts["alter-dim"] == true,
    dry_run = opts["dry-run"] == true,
    storage = storage or "auto",
  }
  spec.method = opts.method or defaults.method or "ivfflat"
  if not M.METHODS[spec.method] then
    return nil, ("--method deve ser ivfflat ou hnsw, recebi %q"):format(tostring(spec.method))
  end
  spec.opclass = opts.opclass or defaults.opclass or "cosine"
  if not M.OPCLASSES[spec.opclass] then
    return nil, ("--opclass deve ser cosine, l2 ou ip, recebi %q"):format(tostring(spec.opclass))
  end

  if opts.dim == nil then
    return nil, "--dim é obrigatório: a dimensão dos embeddings (a mesma de provider.dim na configuração)"
  end
  local L = M.LIMITS
  spec.dim = parse_int(opts.dim, L.dim[1], L.dim[2])
  if not spec.dim then
    return nil, ("--dim deve ser um inteiro entre %d e %d (limite do tipo vector do pgvector), recebi %q")
      :format(L.dim[1], L.dim[2], tostring(opts.dim))
  end
  if spec.dim > L.index_dim.halfvec then return nil, dim_limit_message("halfvec", spec.dim) end

  local ok, err = (spec.method == "ivfflat" and ivfflat_options or hnsw_options)(spec, opts, defaults)
  if not ok then return nil, err end

  if opts["maintenance-work-mem"] ~= nil then
    local mem, err = M.parse_memory(opts["maintenance-work-mem"])
    if not mem then return nil, err end
    spec.maintenance_work_mem = mem
  end

  if opts.name ~= nil then
    local name, err = M.check_name(opts.name)
    if not name then return nil, err end
    spec.name = name
  else
    spec.name = M.default_name(table_name or "rag_documents", spec.method)
    if #spec.name > 63 then
      return nil, ("o nome padrão do índice (%s) passa de 63 bytes; escolha um com --name"):format(spec.name)
    end
  end
  return spec
end

-- The SQL of `index create`, one statement per entry, in order.
-- column_type: the current embedding column type ("real[]", "vector(N)",
-- "halfvec(N)", "vector") or nil when unknown; the ALTER is emitted when
-- spec.alter_dim is set and the column is not already of the index's type
-- (M.index_type) with spec.dim dimensions.
-- Returns { alter = sql|nil, statements = { sql, ... }, create = sql,
--           opclass = operator class used }.
function M.create_sql(spec, table_name, column_type)
  local q = M.quote_ident
  local target, column = M.quote_table(table_name), q(M.EMBEDDING_COLUMN)
  local kind = M.index_type(spec, column_type)
  local vector_type = ("%s(%d)"):format(kind, spec.dim)
  local out = { statements = {}, opclass = M.opclass_name(kind, spec.opclass) }
  local function add(sql) out.statements[#out.statements + 1] = sql; return sql end
  if spec.alter_dim and column_type ~= vector_type then
    out.alter = add(("ALTER TABLE %s ALTER COLUMN %s TYPE %s USING %s::%s")
      :format(target, column, vector_type, column, vector_type))
  end
  if spec.maintenance_work_mem then
    add(("SET maintenance_work_mem = '%s'"):format(spec.maintenance_work_mem))
  end
  local with
  if spec.method == "ivfflat" then
    with = ("lists = %d"):format(spec.lists)
  else
    with = ("m = %d, ef_construction = %d"):format(spec.m, spec.ef_construction)
  end
  out.create = add(("CREATE INDEX %s%s ON %s USING %s (%s %s) WITH (%s)")
    :format(spec.concurrently and "CONCURRENTLY " or "", q(spec.name), target, spec.method, column,
      out.opclass, with))
  if spec.maintenance_work_mem then add("RESET maintenance_work_mem") end
  return out
end

-- DROP INDEX CONCURRENTLY IF EXISTS (the runbook's rollback).
function M.drop_sql(name)
  return ("DROP INDEX CONCURRENTLY IF EXISTS %s"):format(M.quote_ident(name))
end

-- The query-session setting advised after the build.
function M.session_setting(method, defaults)
  defaults = defaults or {}
  if method == "hnsw" then
    return ("SET hnsw.ef_search = %d"):format(tonumber(defaults.ef_search) or 40)
  end
  return ("SET ivfflat.probes = %d"):format(tonumber(defaults.probes) or 10)
end

-- What pgvector cannot do for an index of column type `kind` with spec:
-- the dimension limit of the type, halfvec before 0.7.0, hnsw before 0.5.0.
-- Returns nil or a pt-BR message.
local function type_problem(extension, kind, spec)
  if spec.dim > M.LIMITS.index_dim[kind] then return dim_limit_message(kind, spec.dim) end
  if kind == "halfvec" and not M.version_at_least(extension, M.HALFVEC_MIN_VERSION) then
    return ("o tipo halfvec exige pgvector 0.7.0 ou mais novo; este banco tem a versão %s (atualize com ALTER "
      .. "EXTENSION vector UPDATE)"):format(extension)
  end
  if spec.method == "hnsw" and not M.version_at_least(extension, M.HNSW_MIN_VERSION) then
    return ("o índice hnsw exige pgvector 0.5.0 ou mais novo; este banco tem a versão %s (use --method ivfflat "
      .. "ou atualize com ALTER EXTENSION vector UPDATE)"):format(extension)
  end
  return nil
end

-- Explains why the column itself cannot take an index (without
-- --alter-dim): real[], a pgvector type without fixed dimension, another
-- type, or another dimension than spec's. Returns nil or a pt-BR message.
local function column_problem(info, spec)
  local column = info.column
  local base, have = migrate.parse_column(column)
  local dim = spec and spec.dim
  if base == "real[]" then
    return ("a extensão vector %s está instalada, mas a coluna embedding é real[] (armazenamento sem pgvector, "
      .. "database.storage = \"real[]\"): o índice exige uma coluna vector(N) ou halfvec(N). Converta com "
      .. "--alter-dim (ALTER TABLE ... TYPE vector(%s), ou halfvec com database.storage = \"halfvec\"; reescreve "
      .. "a tabela) ou migre para uma tabela nova com database.storage = \"vector\" ou \"halfvec\"; veja "
      .. "docs/indice-vetorial.md"):format(info.extension, dim and tostring(dim) or "N")
  end
  if (base == "vector" or base == "halfvec") and not have then
    return ("a coluna embedding é %s sem dimensão fixa e o pgvector só indexa %s(N): use --alter-dim para fixar "
      .. "a dimensão"):format(base, base)
  end
  if base ~= "vector" and base ~= "halfvec" then
    return ("a coluna embedding é %s; o ragops só cria índices em colunas vector(N) ou halfvec(N)")
      :format(tostring(column))
  end
  if spec and have ~= dim then
    return ("a coluna embedding é %s, mas --dim é %d: use --dim %d ou --alter-dim para mudar a coluna (só "
      .. "funciona se nenhuma linha tiver outra dimensão)"):format(column, dim, have)
  end
  return nil
end

-- Explains why an index cannot be built on this storage. info:
--   { column = type text, extension = version|nil, available = bool }
-- spec: the validated create spec (nil for drop and status). Returns nil
-- when fine, or a pt-BR message.
function M.storage_problem(info, spec)
  local how = "Para migrar: instale o pgvector no servidor PostgreSQL (pacote postgresql-NN-pgvector ou "
    .. "compilado do código-fonte), crie a extensão com CREATE EXTENSION vector, defina database.storage = "
    .. "\"vector\" (ou \"halfvec\" acima de 2000 dimensões) e rode `ragops migrate` numa tabela nova "
    .. "(database.table), ou converta a coluna atual com `ragops index create --alter-dim` (ALTER TABLE ... TYPE "
    .. "vector(N)). Veja docs/indice-vetorial.md"
  if not info.extension then
    local where = info.available
      and "o pgvector está disponível no servidor, mas a extensão \"vector\" não foi criada neste banco"
      or "a extensão pgvector (\"vector\") não está instalada neste servidor PostgreSQL"
    return ("índices ivfflat/hnsw só existem com pgvector: a coluna embedding é %s e %s. %s")
      :format(tostring(info.column), where, how)
  end
  local kind = spec and M.index_type(spec, info.column)
  if spec and spec.alter_dim then
    local base = migrate.parse_column(info.column)
    if base ~= "real[]" and base ~= "vector" and base ~= "halfvec" then
      return ("--alter-dim recusado: a coluna embedding é %s, e o ragops só converte colunas real[], vector e "
        .. "halfvec para %s(%d)"):format(tostring(info.column), kind, spec.dim)
    end
    return type_problem(info.extension, kind, spec)
  end
  local problem = column_problem(info, spec)
  if problem or not spec then return problem end
  return type_problem(info.extension, kind, spec)
end

-- Loads the plan with the defaults (plans/create_index.lua). Returns the
-- defaults table or nil, err.
function M.load_defaults(path)
  local p, err = plan_mod.load(path)
  if not p then return nil, err end
  if type(p.run) ~= "function" then
    return nil, ("plano %s: esperado run = function(ctx) que devolve os parâmetros do índice"):format(path)
  end
  -- run() is plan code: it runs under the same budget as loading a plan.
  local ok, defaults = sandbox.call(sandbox.load_budget("plano"), p.run, {})
  if not ok then return nil, ("%s (em run(), que devolve os parâmetros do índice)"):format(defaults) end
  if type(defaults) ~= "table" then
    return nil, ("plano %s: run() deve devolver uma tabela com os parâmetros do índice (devolveu %s)")
      :format(path, plan_mod.show_value(defaults))
  end
  return defaults
end

-- A server notice ({ severity, sqlstate, message, hint } from
-- conn:notices()) as a pt-BR line for the operator: pgvector's known build
-- notices translated with what to do, anything else wrapped as it came.
function M.describe_notice(n)
  local tuples = n.message:match("^hnsw graph no longer fits into maintenance_work_mem after (%d+) tuples")
  if tuples then
    return ("o grafo HNSW deixou de caber em maintenance_work_mem depois de %s vetores: o resto da construção "
      .. "fica bem mais lento; recrie com --maintenance-work-mem maior (ex.: 2GB)"):format(tuples)
  end
  if n.message:match("^ivfflat index created with little data") then
    return "o pgvector avisa que o índice IVFFlat foi criado com poucos dados: as listas ficam ruins e o recall "
      .. "baixo; recrie o índice depois do backfill"
  end
  local hint = n.hint ~= "" and (" (dica do servidor: " .. n.hint .. ")") or ""
  return ("aviso do PostgreSQL (%s%s): %s%s"):format(n.severity, n.sqlstate ~= "" and (" " .. n.sqlstate) or "",
    n.message, hint)
end

---------------------------------------------------------------------------
-- Database side (runs inside the CLI coroutine).
---------------------------------------------------------------------------

-- Maps a failed query to an exit code: lost connection -> 4, else 2.
function M.code_for(sqlstate)
  if sqlstate and (sqlstate:sub(1, 2) == "08" or sqlstate:sub(1, 3) == "57P") then return exit.unreachable end
  if not sqlstate then return exit.unreachable end
  return exit.usage
end

-- Reads what `index` needs to know about the target. Returns info
-- { column, extension, available } or nil, err, sqlstate.
function M.inspect(conn, table_name)
  local column, err, state = migrate.embedding_column(conn, table_name)
  if err then return nil, err, state end
  local ext, eerr, estate = conn:query([[
    select (select extversion from pg_extension where extname = 'vector') as installed,
           exists (select 1 from pg_available_extensions where name = 'vector') as available]])
  if not ext then return nil, eerr, estate end
  return { column = column, extension = ext[1].installed, available = ext[1].available == true }
end

-- Vector indexes (ivfflat/hnsw) on the target table.
function M.vector_indexes(conn, table_name)
  return conn:query([[
    select c.relname as name, am.amname as method, i.indisvalid as valid,
           pg_get_indexdef(c.oid) as definition,
           pg_size_pretty(pg_relation_size(c.oid)) as size
      from pg_index i
      join pg_class c on c.oid = i.indexrelid
      join pg_am am on am.oid = c.relam
     where i.indrelid = to_regclass($1) and am.amname in ('ivfflat', 'hnsw')
     order by c.relname]], M.quote_table(table_name))
end

-- The relation named `name` in the target table's schema, if any:
-- { table_name = owning table or nil, method = access method or nil, kind,
--   on_target, valid = pg_index.indisvalid or nil }.
function M.find_relation(conn, table_name, name)
  local rows, err, state = conn:query([[
    select c.relkind::text as kind, am.amname as method, t.relname as table_name,
           i.indrelid = to_regclass($2) as on_target, i.indisvalid as valid
      from pg_class c
      left join pg_am am on am.oid = c.relam
      left join pg_index i on i.indexrelid = c.oid
      left join pg_class t on t.oid = i.indrelid
     where c.relname = $1
       and c.relnamespace = (select relnamespace from pg_class where oid = to_regclass($2))]],
    name, M.quote_table(table_name))
  if not rows then return nil, err, state end
  return rows[1] or false
end

-- Inspects the target table; returns info, or nil, exit code and a pt-BR
-- message when the catalog cannot be read or the table is not migrated.
function M.inspect_target(conn, table_name)
  local info, ierr, istate = M.inspect(conn, table_name)
  if not info then return nil, M.code_for(istate), "falha ao inspecionar a tabela: " .. tostring(ierr) end
  if not info.column then
    return nil, exit.usage, ("a tabela %q não existe ou não tem a coluna embedding; execute `ragops migrate` antes")
      :format(table_name)
  end
  return info
end

return M
