-- ragops.store.migrate: creates and upgrades rag_documents and the engine's own
-- tables. Migrations are numbered, applied in order inside one transaction
-- under an advisory lock, and recorded in ragops_schema_version; a current
-- schema is only read. Also the ownership check of the engine's database
-- objects (M.check_owned), shared with the sync queue: nothing owned by a
-- role the session cannot trust is used or adopted.
local pg = require "ragops.pg"
local sqlname = require "ragops.util.sqlname"

local M = {}

local LOCK_KEY = 7265676 -- advisory lock id for "ragops migrate"

-- The target table's statements (migration 1, and `ragops model prepare`
-- for the shadow table); ctx as in M.migrations.
function M.target_statements(ctx)
  return {
        ([[create table if not exists %s (
             id bigserial primary key,
             entity_type text not null,
             entity_id text not null,
             chunk_index int not null default 0,
             content text not null,
             content_hash text not null,
             metadata jsonb not null default '{}',
             embedding %s,
             embedding_model text not null,
             source_updated_at timestamptz,
             source_hash bigint,
             indexed_at timestamptz not null default now(),
             unique (entity_type, entity_id, chunk_index))]]):format(ctx.table, ctx.embedding_type),
        ([[create index if not exists %s on %s (entity_type, source_updated_at)]])
          :format(ctx.index_name("type_updated"), ctx.table),
  }
end

-- The migrations. Each is a function(ctx) returning a list of SQL statements;
-- ctx = { table = quoted target table, embedding_type = "real[]" | "vector(N)" | "halfvec(N)" }.
M.migrations = {
  { version = 1, description = "tabela de documentos, execuções e falhas",
    sql = function(ctx)
      local out = M.target_statements(ctx)
      for _, stmt in ipairs({
        [[create table if not exists ragops_runs (
            id bigserial primary key,
            plan text not null,
            params jsonb not null default '{}',
            dry_run boolean not null default false,
            status text not null default 'running',
            checkpoint jsonb not null default '{}',
            report jsonb,
            started_at timestamptz not null default now(),
            updated_at timestamptz not null default now(),
            finished_at timestamptz)]],
        [[create table if not exists ragops_failures (
            id bigserial primary key,
            run_id bigint references ragops_runs(id) on delete set null,
            entity_type text not null,
            entity_id text not null,
            chunk_index int,
            error_class text not null,
            http_status int,
            message text not null,
            attempts int not null default 1,
            first_seen timestamptz not null default now(),
            last_seen timestamptz not null default now(),
            resolved_at timestamptz,
            resolved_run_id bigint)]],
        [[create unique index if not exists ragops_failures_open
            on ragops_failures (entity_type, entity_id) where resolved_at is null]],
      }) do out[#out + 1] = stmt end
      return out
    end },
  { version = 2, description = "unidades de trabalho para rodar vários processos (--scale-out)",
    sql = function()
      return {
        [[create table if not exists ragops_work_units (
            id bigserial primary key,
            run_id bigint not null references ragops_runs(id) on delete cascade,
            entity_type text not null,
            seq int not null,
            after_key text,
            last_key text,
            status text not null default 'pending' check (status in ('pending', 'done')),
            lease_owner text,
            lease_expires_at timestamptz,
            attempts int not null default 0,
            stats jsonb,
            done_at timestamptz,
            unique (run_id, entity_type, seq))]],
        [[create index if not exists ragops_work_units_claim
            on ragops_work_units (run_id, status, lease_expires_at)]],
      }
    end },
  { version = 3, description = "posse das execuções (dono e heartbeat), unidades gravadas além do checkpoint e pedidos gastos",
    sql = function()
      return {
        [[alter table ragops_runs add column if not exists owner text,
            add column if not exists heartbeat_at timestamptz,
            add column if not exists requests_spent bigint not null default 0]],
        [[create table if not exists ragops_run_units (
            run_id bigint not null references ragops_runs(id) on delete cascade,
            entity_type text not null,
            first_key text not null,
            after_key text,
            last_key text not null,
            stats jsonb not null,
            primary key (run_id, entity_type, last_key))]],
      }
    end },
  { version = 4, description = "tokens cobrados pelo provedor por execução, modelo e tipo (calibração das estimativas)",
    sql = function()
      return {
        [[create table if not exists ragops_token_usage (
            run_id bigint not null references ragops_runs(id) on delete cascade,
            model text not null,
            entity_type text not null,
            documents bigint not null default 0,
            chunks bigint not null default 0,
            bytes bigint not null default 0,
            chars bigint not null default 0,
            tokens bigint not null default 0,
            updated_at timestamptz not null default now(),
            primary key (run_id, model, entity_type))]],
      }
    end },
  { version = 5, description = "ids do pedido e do provedor em cada item da fila de falhas",
    sql = function()
      return {
        [[alter table ragops_failures add column if not exists request_id text,
            add column if not exists provider_request_id text]],
      }
    end },
  { version = 6, description = "marcas d'água do ragops sync por plano e tipo (estratégia watermark)",
    sql = function()
      return {
        [[create table if not exists ragops_sync_watermarks (
            plan text not null,
            entity_type text not null,
            watermark timestamptz not null,
            deletes_checked_at timestamptz,
            updated_at timestamptz not null default now(),
            primary key (plan, entity_type))]],
      }
    end },
  { version = 7, description = "alvos da troca de modelo azul/verde (atual, sombra, anterior) por tabela",
    sql = function()
      return {
        -- live_table: the configured target name the retrieval API queries.
        -- role: 'live' (that name), 'shadow' (<name>__shadow, being filled),
        --   'previous' (<name>__previous, kept for rollback).
        -- model, dim, storage: the target's embedding model, dimension and
        --   column type ("vector(256)", "real[]").
        -- provider: provider settings the runs on this target override
        --   (e.g. {"url": ...}), from `model prepare --set provider.url=...`.
        -- prepared_at: when `model prepare` created it (or the record saw it).
        -- switched_at, forced: the last time it became live, and whether that
        --   switch skipped the gates (--force).
        -- compare_passed, compare_at, compare_report: the last `model compare`
        --   of this target as shadow: verdict, when it started, the report.
        [[create table if not exists ragops_model_targets (
            live_table text not null,
            role text not null check (role in ('live', 'shadow', 'previous')),
            model text not null,
            dim int not null,
            storage text not null,
            provider jsonb not null default '{}',
            prepared_at timestamptz not null default now(),
            switched_at timestamptz,
            forced boolean not null default false,
            compare_passed boolean,
            compare_at timestamptz,
            compare_report jsonb,
            primary key (live_table, role))]],
      }
    end },
  -- source_hash: on chunk 0, the fingerprint of the source row (and plan)
  -- the entity was indexed from (see ragops.run.stages.read, the re-run that
  -- skips unchanged rows without calling document()). Also on the blue/green
  -- tables `model prepare` already made.
  { version = 8, description = "impressão digital da linha de origem de cada documento (reexecução rápida)",
    sql = function(ctx)
      return {
        ("alter table %s add column if not exists source_hash bigint"):format(ctx.table),
        [[do $$
          declare t regclass;
          begin
            for t in select to_regclass(live_table || case role when 'shadow' then '__shadow'
                                                               when 'previous' then '__previous' end)
                       from ragops_model_targets where role <> 'live' loop
              if t is not null then
                execute format('alter table %s add column if not exists source_hash bigint', t);
              end if;
            end loop;
          end $$]],
      }
    end },
  -- One row per entity the plan decided has no document (document()
  -- returned nil or blank content): written with the unit that decided it,
  -- removed when the entity gets documents or leaves the source. `ragops
  -- status` takes them out of coverage's denominator and of the lag.
  -- source_updated_at: the row's updated_at when decided (a newer row is
  -- pending again).
  { version = 9, description = "entidades sem documento por decisão do plano (fora da cobertura e do atraso)",
    sql = function()
      return {
        [[create table if not exists ragops_no_document (
            entity_type text not null,
            entity_id text not null,
            source_updated_at timestamptz,
            run_id bigint,
            decided_at timestamptz not null default now(),
            primary key (entity_type, entity_id))]],
      }
    end },
  -- The Batch API mode (ragops.run.batch): one row per part (a JSONL file,
  -- then the provider's file and batch), one per unit of entities a part
  -- covers, with the content hash of every input it sent. Written in the
  -- transactions that move the run on, so a killed run picks its batches up.
  { version = 10, description = "lotes da API de lotes (arquivos, lotes do provedor e o que cada um cobre)",
    sql = function()
      return {
        [[create table if not exists ragops_batches (
            id bigserial primary key,
            run_id bigint not null references ragops_runs(id) on delete cascade,
            state text not null default 'building',
            file_name text not null unique,
            file_bytes bigint not null default 0,
            requests int not null default 0,
            inputs int not null default 0,
            tokens_est bigint not null default 0,
            input_file_id text,
            batch_id text,
            output_file_id text,
            error_file_id text,
            request_total int,
            request_completed int,
            request_failed int,
            detail text,
            created_at timestamptz not null default now(),
            submitted_at timestamptz,
            finished_at timestamptz,
            collected_at timestamptz,
            updated_at timestamptz not null default now())]],
        [[create table if not exists ragops_batch_units (
            batch bigint not null references ragops_batches(id) on delete cascade,
            unit_no int not null,
            entity_type text not null,
            round int not null default 0,
            entity_ids text[] not null,
            hashes text[] not null,
            request_sizes int[] not null,
            file_end bigint not null,
            collected boolean not null default false,
            stats jsonb,
            primary key (batch, unit_no))]],
      }
    end },
  -- The provider quota shared by every process (ragops.store.quota,
  -- ragops.provider.quota): one row per process holding a slice of an
  -- endpoint's quota (key), with its workers' demand and its lease (expired
  -- rows are deleted by the next renewal), and per key the pause every
  -- holder honours. Instants from the database clock only.
  { version = 11, description = "cota do provedor compartilhada entre processos (detentores, pausa e saúde por endpoint)",
    sql = function()
      return {
        [[create table if not exists ragops_quota_holders (
            key text not null,
            holder text not null,
            demand jsonb not null default '{}',
            expires_at timestamptz not null,
            primary key (key, holder))]],
        [[create table if not exists ragops_quota_state (
            key text primary key,
            paused_until timestamptz,
            endpoint text,
            down_since timestamptz,
            down_until timestamptz,
            down_reason text,
            updated_at timestamptz not null default now())]],
      }
    end },
  -- Scale-out (ragops.run.workunits): the plan's fingerprint on the run
  -- (processes with another plan version refuse to join it while it is in
  -- progress) and, on each unit, the worker label of its last claimer and
  -- that claimer's last sign of life (claim, lease renewal), for `ragops status`.
  { version = 12, description = "impressão digital do plano na execução e rótulo do processo (worker) nas unidades de trabalho",
    sql = function()
      return {
        [[alter table ragops_runs add column if not exists plan_fingerprint text]],
        [[alter table ragops_work_units add column if not exists worker text,
            add column if not exists heartbeat_at timestamptz]],
      }
    end },
}

-- Most dimensions pgvector indexes (ivfflat/hnsw) per column type.
M.INDEX_DIM = { vector = 2000, halfvec = 4000 }

-- Splits an embedding column type: "halfvec(3072)" -> "halfvec", 3072;
-- "vector" -> "vector", nil; "real[]" -> "real[]", nil; nil -> nil.
function M.parse_column(coltype)
  if coltype == nil then return nil end
  local base, dim = tostring(coltype):match("^(%a+)%((%d+)%)$")
  if base then return base, tonumber(dim) end
  return tostring(coltype), nil
end

-- The pgvector type for "auto": halfvec when the column already is one or
-- when dim passes what an index on vector takes; vector otherwise.
function M.auto_type(dim, current_base)
  if current_base == "halfvec" or dim > M.INDEX_DIM.vector then return "halfvec" end
  return "vector"
end

local function embedding_type(storage, dim)
  if storage == "vector" or storage == "halfvec" then return ("%s(%d)"):format(storage, dim) end
  return "real[]"
end
M.embedding_type = embedding_type

-- A problem that retrying cannot fix (configuration or privileges): run()
-- returns it with kind "usage" (exit 2) instead of "unreachable".
local function usage_error(message)
  error(setmetatable({ message = message }, { __tostring = function(e) return e.message end }), 0)
end

-- Ownership. ragops uses (reads, writes, creates in, alters) an engine
-- object only when its owner is trusted by the session's role: the role
-- itself, a superuser, or, for a role that is not superuser, a role whose
-- privileges it inherits (pg_has_role ... USAGE); pg_database_owner counts
-- as the database's owner. Anything else could run code with the
-- privileges of whoever uses it (a trigger, a view's function), so it is
-- refused, never adopted.
M.TRUSTED_CTE = [[
  me as (select oid, rolsuper from pg_roles where rolname = current_user),
  trusted_base as (
    select r.oid from pg_roles r, me
     where r.oid = me.oid or r.rolsuper or (not me.rolsuper and pg_has_role(me.oid, r.oid, 'USAGE'))),
  trusted as (
    select oid from trusted_base
    union all
    select to_regrole('pg_database_owner') from pg_database d
     where d.datname = current_database() and to_regrole('pg_database_owner') is not null
       and d.datdba in (select oid from trusted_base))]]

local function role_name(name)
  return name == "-" and "todos os papéis (PUBLIC)" or ('o papel "' .. name .. '"')
end

-- One refused object, in pt-BR.
local function refusal(r)
  if r.what == "create" then
    return ("%s %s dá o privilégio CREATE a %s"):format(r.kind, r.name, role_name(r.owner))
  elseif r.what == "foreign" then
    return ("%s %s não foi criado pelo ragops"):format(r.kind, r.name)
  end
  return ('%s %s pertence ao papel "%s"'):format(r.kind, r.name, r.owner)
end

-- Refuses the objects objects_sql lists (rows kind, name, owner oid, what =
-- "owner" | "create" (a grant of CREATE to owner) | "foreign" (refused
-- whoever owns it)) that are not trusted. query(sql, ...) -> rows or nil,
-- err (or raises). Returns true, or nil, pt-BR message, "usage", or nil,
-- err, "db".
function M.check_owned(query, objects_sql, ...)
  local rows, err = query(([[with %s, objs as (%s)
      select o.kind, o.name, coalesce(pg_get_userbyid(nullif(o.owner, 0)), '-') as owner, o.what,
             current_user::text as me
        from objs o
       where o.what = 'foreign' or o.owner not in (select oid from trusted)
       order by o.what = 'owner' desc, o.name]]):format(M.TRUSTED_CTE, objects_sql), ...)
  if not rows then return nil, err, "db" end
  if #rows == 0 then return true end
  local list = {}
  for i = 1, math.min(#rows, 5) do list[i] = refusal(rows[i]) end
  if #rows > 5 then list[#list + 1] = ("e mais %d objeto(s)"):format(#rows - 5) end
  return nil, ("%s. O papel desta conexão é %q, e o ragops não adota objetos que não criou: um objeto de outro "
    .. "papel pode executar código com os privilégios de quem o usa. Confira esses objetos e remova-os ou, se "
    .. "forem de confiança, passe-os para este papel (ALTER ... OWNER TO %s). Nada foi alterado")
    :format(table.concat(list, "; "), rows[1].me, pg.quote_ident(rows[1].me)), "usage"
end

-- "auto" picks pgvector when the server offers the extension (halfvec above
-- vector's index limit, M.auto_type), else real[]; "vector" and "halfvec"
-- require it; "real[]" never uses it.
local function resolve_storage(q, configured, dim)
  if configured == "real[]" then return "real[]" end
  local available = #q([[select 1 from pg_available_extensions where name = 'vector']]) > 0
  if configured ~= "auto" and not available then
    usage_error(("a extensão pgvector (vector) não está instalada neste servidor PostgreSQL, e database.storage "
      .. "= \"%s\" precisa dela; use database.storage = \"real[]\" ou instale o pgvector"):format(configured))
  end
  if not available then return "real[]" end
  return configured == "auto" and M.auto_type(dim) or configured
end

-- CREATE EXTENSION IF NOT EXISTS vector. A role that may not create it gets
-- the exact statement a superuser must run (we never fall back to real[]:
-- the operator asked for pgvector, and a real[] table cannot be indexed).
local function create_extension(conn, who)
  local rows, err, state = conn:query("create extension if not exists vector")
  if rows then return end
  if state == "42501" then
    usage_error(("o papel %s não tem permissão para criar a extensão vector no banco %s (só um superusuário "
      .. "pode). Peça a um superusuário que rode, conectado a esse banco:\n  CREATE EXTENSION vector;\n"
      .. "e rode `ragops migrate` de novo; ou, para seguir sem pgvector (sem índice IVFFlat/HNSW), defina "
      .. "database.storage = \"real[]\". Nada foi gravado"):format(who.role, who.db))
  end
  error(err, 0)
end

-- The ctx of the target statements for table `target` (embedding_type set
-- by the caller).
function M.target_context(target)
  return {
    table = sqlname.quote_table(target),
    index_name = function(suffix)
      return pg.quote_ident(sqlname.relation(target) .. "_" .. suffix)
    end,
  }
end

local NO_TARGET = "ragops_no_target" -- stands for the target in engine_relations(nil)

-- The relations the migrations create (tables and indexes, as their
-- statements name them; the target's quoted, left out when target is nil),
-- ragops_schema_version first.
function M.engine_relations(target)
  local ctx = M.target_context(target or NO_TARGET)
  ctx.embedding_type = "real[]"
  local names, seen = { "ragops_schema_version" }, { ragops_schema_version = true }
  for _, m in ipairs(M.migrations) do
    for _, stmt in ipairs(m.sql(ctx)) do
      for name in stmt:gmatch("create%s+[%a%s]-if%s+not%s+exists%s+([%w_%.\"]+)") do
        if not seen[name] and (target or not name:find(NO_TARGET, 1, true)) then
          seen[name], names[#names + 1] = true, name
        end
      end
    end
  end
  return names
end

-- For check_owned: the engine's relations that exist ($1, resolved by the
-- search_path as every statement resolves them) and, when $3 (something
-- will be created), the schemas new ones would be created in (the first of
-- the search_path, and the target's, $2).
M.ENGINE_OBJECTS_SQL = [[
  select case c.relkind when 'S' then 'a sequência' when 'i' then 'o índice' when 'v' then 'a visão'
                        else 'a tabela' end as kind,
         format('%I.%I', n.nspname, c.relname) as name, c.relowner as owner, 'owner' as what
    from unnest($1::text[]) x(name) join pg_class c on c.oid = to_regclass(x.name)
    join pg_namespace n on n.oid = c.relnamespace
  union all
  select 'o esquema', format('%I', n.nspname) || ', onde as tabelas do ragops seriam criadas,', n.nspowner, 'owner'
    from pg_namespace n where $3 and (n.nspname = current_schema() or n.nspname = $2)]]

-- Refuses (see check_owned) engine relations (the target's too, unless
-- nil), and with `creating` the schemas new ones would go to, of a role the
-- session cannot trust. Returns true or nil, err, kind.
function M.check_engine_owned(query, target, creating)
  local schema = target and target:match("^([^%.]+)%.[^%.]+$")
  return M.check_owned(query, M.ENGINE_OBJECTS_SQL, M.engine_relations(target), schema, creating == true)
end

-- A 42501 (insufficient_privilege) of statement `sql`, in pt-BR: what the
-- role could not do, which privilege it misses and the statement that
-- gives it.
local function privilege_message(who, sql, err)
  local stmt = sql:gsub("^%s+", "")
  local role = pg.quote_ident(who.role)
  local name = stmt:match("^create%s+[%a%s]-if%s+not%s+exists%s+([%w_%.\"]+)")
  local action, missing, fix
  if stmt:match("^alter") or stmt:match("^select") then
    name = stmt:match("^alter%s+table%s+[%a%s]-([%w_%.\"]+)") or stmt:match("from%s+([%w_%.\"]+)") or "?"
    local reading = stmt:match("^select") ~= nil
    action = (reading and "ler a tabela %s" or "alterar a tabela %s"):format(name)
    missing = reading and ("o privilégio SELECT na tabela %s"):format(name) or "ser dono da tabela (só o dono pode alterá-la)"
    fix = (reading and "GRANT SELECT ON %s TO %s;" or "ALTER TABLE %s OWNER TO %s;"):format(name, role)
  else
    local schema = name and name:match('^"?([^%."]+)"?%.') or who.schema or "public"
    action = name and ("criar %s"):format(name) or "criar as tabelas do ragops"
    missing = ("o privilégio CREATE no esquema %s"):format(schema)
    fix = ("GRANT CREATE ON SCHEMA %s TO %s;"):format(pg.quote_ident(schema), role)
  end
  return ("o papel %s não tem permissão para %s no banco %s (%s). Falta %s; peça a um administrador que "
    .. "rode, conectado a esse banco:\n  %s\nou rode `ragops migrate` com o papel dono das tabelas do ragops. "
    .. "Nada foi gravado"):format(who.role, action, who.db, tostring(err), missing, fix)
end

-- The version recorded in ragops_schema_version (0 when absent), read only.
local function recorded_version(q)
  if not q("select to_regclass('ragops_schema_version') is not null as present")[1].present then return 0 end
  return tonumber(q("select coalesce(max(version), 0) as v from ragops_schema_version")[1].v)
end

-- The migrations after `current`, applied with q. Returns the versions applied.
local function apply_pending(q, ctx, current)
  q([[create table if not exists ragops_schema_version (
        version int primary key, description text not null,
        applied_at timestamptz not null default now())]])
  local applied = {}
  for _, m in ipairs(M.migrations) do
    if m.version > current then
      for _, stmt in ipairs(m.sql(ctx)) do q(stmt) end
      q("insert into ragops_schema_version (version, description) values ($1, $2)", m.version, m.description)
      applied[#applied + 1] = m.version
    end
  end
  return applied
end

-- Applies pending migrations on conn, under an advisory lock, after
-- refusing engine objects the role cannot trust; a current schema is read
-- only (no CREATE needed). Returns { applied = {versions}, current = n,
-- storage, embedding_type } or nil, err, kind ("usage" when retrying
-- cannot help: configuration, ownership, privileges; else "unreachable").
function M.run(conn, cfg)
  local ctx = M.target_context(cfg.database.table)
  local who
  local function q(sql, ...)
    local rows, err, state = conn:query(sql, ...)
    if rows then return rows end
    if state == "42501" and who then usage_error(privilege_message(who, sql, err)) end
    error(err, 0)
  end
  local ok, result = pcall(function()
    local storage = resolve_storage(q, cfg.database.storage, cfg.provider.dim)
    ctx.embedding_type = embedding_type(storage, cfg.provider.dim)
    q("set client_min_messages = warning")
    q("begin")
    who = q("select current_user as role, current_database() as db, current_schema() as schema")[1]
    q("select pg_advisory_xact_lock($1)", LOCK_KEY)
    local owned, err = M.check_engine_owned(q, cfg.database.table)
    if not owned then usage_error(err) end
    local current, applied = recorded_version(q), {}
    if current < M.latest_version() then
      owned, err = M.check_engine_owned(q, cfg.database.table, true)
      if not owned then usage_error(err) end
      if storage ~= "real[]" then create_extension(conn, who) end
      applied = apply_pending(q, ctx, current)
      current = M.latest_version()
    end
    q("commit")
    return { applied = applied, current = current, storage = storage, embedding_type = ctx.embedding_type }
  end)
  if not ok then
    if conn:is_ok() then conn:query("rollback") end
    if type(result) == "table" then return nil, result.message, "usage" end
    return nil, result, "unreachable"
  end
  return result
end

-- The newest migration this ragops knows.
function M.latest_version()
  return M.migrations[#M.migrations].version
end

-- The schema version `ragops migrate` recorded (0 when it never ran on this
-- database), or nil, err.
function M.schema_version(conn)
  local rows, err = conn:query("select to_regclass('ragops_schema_version') is not null as present")
  if not rows then return nil, err end
  if not rows[1].present then return 0 end
  rows, err = conn:query("select coalesce(max(version), 0) as v from ragops_schema_version")
  if not rows then return nil, err end
  return tonumber(rows[1].v)
end

-- Describes the embedding column of the target table: "real[]", "vector(N)",
-- "halfvec(N)", or nil when the table does not exist.
function M.embedding_column(conn, table_name)
  local rows, err = conn:query([[
    select format_type(a.atttypid, a.atttypmod) as type
      from pg_attribute a
     where a.attrelid = to_regclass($1) and a.attname = 'embedding' and not a.attisdropped]],
    sqlname.quote_table(table_name))
  if not rows then return nil, err end
  if #rows == 0 then return nil end
  return rows[1].type
end

return M
