-- ragops.cli.commands.index: `ragops index create | drop | status` for the operator:
-- flags, pt-BR output, the cancel on signal; the SQL, the validation and the
-- catalog queries are ragops.vector.index.
local store_target = require "ragops.store.target"
local core = require "ragops.core"
local exit = require "ragops.util.exit"
local prelude = require "ragops.cli.prelude"
local index = require "ragops.vector.index"
local log = require "ragops.obs.log"
local metrics_mod = require "ragops.obs.metrics"
local scrub = require "ragops.util.scrub"

local M = {}

local fail = exit.fail

-- finish(rc[, fmt, ...]) for a command holding conn: closes it, prints the
-- pt-BR error when given, and returns the exit code.
local function closing(conn)
  return function(rc, fmt, ...)
    conn:close()
    if fmt then return fail(rc, fmt, ...) end
    return rc
  end
end

-- `inprogress_index_builds` (the seed runbook's name), in the metrics
-- textfile (metrics.file) while the build runs: 1 during it, 0 after.
local function index_builds_gauge(cfg, value)
  local file = cfg.metrics.file
  if not file then return end
  local registry = metrics_mod.new()
  registry:gauge("inprogress_index_builds"):set(value)
  local ok, err = registry:write_file(file)
  if not ok then log.warn("não foi possível gravar as métricas em %s: %s", file, tostring(err)) end
end

-- The configuration, of the shadow's table with --target shadow.
local function load_context(opts, cli)
  local start, code = prelude.start(opts, { target = true })
  if not start then return nil, code end
  return start.cfg
end

local function print_sql(statements, heading, footer)
  local out = { "-- " .. heading }
  for _, sql in ipairs(statements) do out[#out + 1] = sql .. ";" end
  for _, line in ipairs(footer or {}) do out[#out + 1] = "-- " .. line end
  io.stdout:write(table.concat(out, "\n"), "\n")
end

-- pt-BR sentence on what a failed or cancelled build left of index `name`.
local function leftover(conn, table_name, name)
  local rel, err = index.find_relation(conn, table_name, name)
  if rel == nil then
    return ("não foi possível conferir o que ficou do índice %s (%s); veja `ragops index status`")
      :format(name, tostring(err))
  end
  if not rel then return "nenhum índice ficou para trás" end
  if rel.valid == false then
    return ("o índice %s ficou INVALID (não serve às consultas, mas pesa nas escritas); remova com: %s; "
      .. "(ou `ragops index drop --name %s`)"):format(name, index.drop_sql(name), name)
  end
  return ("o índice %s ficou criado e válido"):format(name)
end

-- Until the build ends, the first SIGINT/SIGTERM sets interrupt.signal and
-- cancels the statement `conn` is running, from a second session
-- (pg_cancel_backend); a second signal exits at once (ragops.core).
-- Returns interrupt.
local function cancel_on_signal(conn, cfg)
  local interrupt = {}
  local rows = conn:query("select pg_backend_pid() as pid")
  local pid = rows and rows[1] and rows[1].pid
  core.trap_signals(function(name)
    interrupt.signal = name
    log.warn("sinal %s recebido: cancelando o comando em andamento no servidor; um segundo sinal encerra na hora",
      name)
    local other, cerr = store_target.connect(cfg)
    if not other or not pid then
      return log.error("não foi possível cancelar no servidor: %s", tostring(cerr or "sessão desconhecida"))
    end
    local cancelled, err = other:query("select pg_cancel_backend($1)", pid)
    other:close()
    if not cancelled then log.error("não foi possível cancelar no servidor: %s", tostring(err)) end
  end)
  return interrupt
end

-- Logs the server's notices of the last statement in pt-BR (libpq no
-- longer prints them to stderr in the server's language).
local function log_notices(conn)
  local notes, dropped = conn:notices()
  for _, n in ipairs(notes) do log.warn("%s", index.describe_notice(n)) end
  if dropped > 0 then log.warn("mais %d aviso(s) do PostgreSQL omitidos", dropped) end
end

-- Runs the statements one by one, stopping before the next one once
-- interrupt.signal is set; returns true or nil, err, sqlstate, sql.
local function run_statements(conn, statements, interrupt)
  for _, sql in ipairs(statements) do
    if interrupt.signal then return nil, "interrompido", nil, sql end
    log.info("executando: %s", sql)
    local rows, err, state = conn:query(sql)
    log_notices(conn)
    if not rows then return nil, err, state, sql end
  end
  return true
end

local CREATE_FLAGS = {
  config = "string", lists = "string", dim = "string", method = "string", m = "string",
  ["ef-construction"] = "string", ["maintenance-work-mem"] = "string", concurrently = "bool",
  ["alter-dim"] = "bool", opclass = "string", name = "string", ["dry-run"] = "bool", quiet = "bool",
  target = "string",
}

-- The start of create and status: flags parsed (no positional argument),
-- the defaults of plans/create_index.lua and the configuration. Returns
-- opts, defaults, cfg or nil, exit code (the error already printed).
local function start_index(args, cli, flags)
  local a = cli.parse(args, flags)
  if #a.positional > 0 then cli.usage_error("argumento inesperado: %s", a.positional[1]) end
  local opts = a.options
  log.quiet = opts.quiet or false
  local defaults, derr = index.load_defaults(cli.home_path(index.DEFAULTS_PLAN))
  if not defaults then return nil, fail(exit.usage, "%s", derr) end
  local cfg, code = load_context(opts, cli)
  if not cfg then return nil, code end
  return opts, defaults, cfg
end

-- `index create --dry-run`: prints the SQL, checked against the database
-- when conn is there (warnings on stderr). Returns the exit code.
local function print_create_plan(conn, cerr, spec, defaults, table_name)
  local info, notes = nil, {}
  if conn then
    info = index.inspect(conn, table_name)
    conn:close()
  else
    notes[#notes + 1] = "aviso: " .. cerr .. "; o SQL abaixo não foi conferido com o banco"
  end
  if info and not info.column then
    notes[#notes + 1] = ("aviso: a tabela %s não existe ou não tem a coluna embedding; execute `ragops "
      .. "migrate` antes"):format(table_name)
  elseif info then
    local problem = index.storage_problem(info, spec)
    if problem then notes[#notes + 1] = "aviso: este SQL falharia agora: " .. problem end
  end
  local sql = index.create_sql(spec, table_name, info and info.column)
  local footer = { "depois, nas sessões de consulta: " .. index.session_setting(spec.method, defaults) .. ";" }
  if spec.method == "ivfflat" then
    local range = defaults.probes_range or { 10, 20 }
    footer[1] = footer[1] .. (" (runbook: %d–%d)"):format(range[1], range[2])
  end
  if sql.alter then
    footer[#footer + 1] = "atenção: o ALTER TABLE reescreve a tabela sob bloqueio exclusivo (leituras e escritas param)"
  end
  print_sql(sql.statements, "simulação (--dry-run): SQL que seria executado; nada foi executado", footer)
  for _, note in ipairs(notes) do io.stderr:write("ragops: ", scrub.text(note, 8192), "\n") end
  return exit.ok
end

local function create(args, cli)
  local opts, defaults, cfg = start_index(args, cli, CREATE_FLAGS)
  if not opts then return defaults end
  local table_name = cfg.database.table
  local spec, verr = index.validate_create(opts, defaults, table_name, cfg.database.storage)
  if not spec then cli.usage_error("%s", verr) end
  if spec.dim ~= cfg.provider.dim then
    cli.usage_error("--dim %d difere de provider.dim = %d na configuração: o índice e os embeddings gravados "
      .. "precisam ter a mesma dimensão", spec.dim, cfg.provider.dim)
  end
  local conn, cerr = store_target.connect(cfg)

  if spec.dry_run then return print_create_plan(conn, cerr, spec, defaults, table_name) end

  if not conn then return fail(exit.unreachable, "%s", cerr) end
  local finish = closing(conn)
  local info, icode, imsg = index.inspect_target(conn, table_name)
  if not info then return finish(icode, "%s", imsg) end
  local problem = index.storage_problem(info, spec)
  if problem then return finish(exit.usage, "%s", problem) end

  local existing, ferr, fstate = index.find_relation(conn, table_name, spec.name)
  if existing == nil then return finish(index.code_for(fstate), "falha ao consultar o catálogo: %s", tostring(ferr)) end
  if existing then
    return finish(exit.usage, "já existe uma relação chamada %q; escolha outro --name ou remova o índice com "
      .. "`ragops index drop --name %s` (rollback do runbook)", spec.name, spec.name)
  end

  local sql = index.create_sql(spec, table_name, info.column)
  local target_type = ("%s(%d)"):format(index.index_type(spec, info.column), spec.dim)
  if sql.alter then
    -- Friendly pre-check; the ALTER itself also fails on another dimension.
    local count_sql = info.column == "real[]"
      and "select count(*) as n from %s where %s is not null and coalesce(array_length(%s, 1), 0) <> $1"
      or "select count(*) as n from %s where %s is not null and vector_dims(%s) <> $1"
    local col = index.quote_ident(index.EMBEDDING_COLUMN)
    local rows, cerr2, cstate = conn:query(count_sql:format(index.quote_table(table_name), col, col), spec.dim)
    if not rows then return finish(index.code_for(cstate), "falha ao conferir as dimensões: %s", tostring(cerr2)) end
    if rows[1].n > 0 then
      return finish(exit.usage, "--alter-dim recusado: %d linha(s) têm embedding com dimensão diferente de %d; "
        .. "reindexe-as (ragops reindex --overwrite) ou apague-as antes de mudar a coluna", rows[1].n, spec.dim)
    end
    log.warn("--alter-dim: a coluna embedding (%s) vai virar %s; a tabela é reescrita sob bloqueio "
      .. "exclusivo", tostring(info.column), target_type)
  elseif spec.alter_dim then
    log.info("--alter-dim: a coluna já é %s; nada a alterar", target_type)
  end
  if spec.method == "ivfflat" then
    local rows = conn:query(("select count(*) as n from (select 1 from %s where %s is not null limit $1) s")
      :format(index.quote_table(table_name), index.quote_ident(index.EMBEDDING_COLUMN)), spec.lists)
    if rows and rows[1].n < spec.lists then
      log.warn("a tabela tem menos linhas com embedding (%d) que listas (%d): o IVFFlat treina as listas com os "
        .. "dados existentes e a recall fica ruim; crie-o depois do backfill (runbook, seção 5)", rows[1].n, spec.lists)
    end
  end

  log.info("criando o índice %s (%s, %s%s) em %s; acompanhe em outra sessão com: select phase, blocks_done, "
    .. "blocks_total, tuples_done, tuples_total from pg_stat_progress_create_index",
    spec.name, spec.method, sql.opclass, spec.concurrently and ", CONCURRENTLY" or "", table_name)
  local started = os.time()
  local interrupt = cancel_on_signal(conn, cfg)
  index_builds_gauge(cfg, 1)
  local ok, err, state, failed_sql = run_statements(conn, sql.statements, interrupt)
  index_builds_gauge(cfg, 0)
  if interrupt.signal then
    return finish(exit.interrupted, "interrompido por %s: o comando em andamento foi cancelado no servidor; %s",
      interrupt.signal, leftover(conn, table_name, spec.name))
  end
  if not ok then
    local hint = ""
    if spec.concurrently and failed_sql == sql.create then hint = "; " .. leftover(conn, table_name, spec.name) end
    return finish(index.code_for(state), "falhou: %s: %s%s", failed_sql, tostring(err), hint)
  end
  io.stdout:write(("índice %s criado em %s (%s, %s) em %d s\n"):format(spec.name, table_name, spec.method,
    sql.opclass, os.time() - started))
  io.stdout:write(("nas sessões de consulta, use: %s; (operador %s)\n")
    :format(index.session_setting(spec.method, defaults), index.OPERATORS[spec.opclass]))
  return finish(exit.ok)
end

local function drop(args, cli)
  local a = cli.parse(args, { config = "string", name = "string", method = "string",
                              ["dry-run"] = "bool", quiet = "bool", target = "string" })
  if #a.positional > 0 then cli.usage_error("argumento inesperado: %s", a.positional[1]) end
  local opts = a.options
  log.quiet = opts.quiet or false
  if opts.method and not index.METHODS[opts.method] then
    cli.usage_error("--method deve ser ivfflat ou hnsw, recebi %q", opts.method)
  end
  local cfg, code = load_context(opts, cli)
  if not cfg then return code end
  local table_name = cfg.database.table
  local name = opts.name or index.default_name(table_name, opts.method or "ivfflat")
  local _, nerr = index.check_name(name)
  if nerr then cli.usage_error("%s", nerr) end
  local sql = index.drop_sql(name)
  if opts["dry-run"] then
    print_sql({ sql }, "simulação (--dry-run): SQL que seria executado; nada foi executado")
    return exit.ok
  end
  local conn, cerr = store_target.connect(cfg)
  if not conn then return fail(exit.unreachable, "%s", cerr) end
  local finish = closing(conn)
  local info, ierr, istate = index.inspect(conn, table_name)
  if not info then return finish(index.code_for(istate), "falha ao inspecionar a tabela: %s", tostring(ierr)) end
  if not info.extension then return finish(exit.usage, "%s", index.storage_problem(info, nil)) end
  local rel, ferr, fstate = index.find_relation(conn, table_name, name)
  if rel == nil then return finish(index.code_for(fstate), "falha ao consultar o catálogo: %s", tostring(ferr)) end
  if not rel then
    io.stdout:write(("o índice %s não existe; nada a fazer\n"):format(name))
    return finish(exit.ok)
  end
  if rel.on_target ~= true or (rel.method ~= "ivfflat" and rel.method ~= "hnsw") then
    return finish(exit.usage, "%q não é um índice vetorial (ivfflat/hnsw) da tabela %s; nada foi removido",
      name, table_name)
  end
  log.info("executando: %s", sql)
  local rows, err, state = conn:query(sql)
  if not rows then return finish(index.code_for(state), "falhou: %s: %s", sql, tostring(err)) end
  io.stdout:write(("índice %s removido\n"):format(name))
  return finish(exit.ok)
end

local function status(args, cli)
  local opts, defaults, cfg = start_index(args, cli, { config = "string", quiet = "bool", target = "string" })
  if not opts then return defaults end
  local table_name = cfg.database.table
  local conn, cerr = store_target.connect(cfg)
  if not conn then return fail(exit.unreachable, "%s", cerr) end
  local finish = closing(conn)
  local info, icode, imsg = index.inspect_target(conn, table_name)
  if not info then return finish(icode, "%s", imsg) end
  local lines = {}
  local function say(fmt, ...) lines[#lines + 1] = fmt:format(...) end
  say("tabela: %s (coluna embedding: %s%s)", table_name, info.column, index.type_note(info.column))
  if info.extension then
    say("pgvector: instalado (extensão vector %s)", info.extension)
  elseif info.available then
    say("pgvector: disponível no servidor, mas não criado neste banco (CREATE EXTENSION vector)")
  else
    say("pgvector: não instalado (extensão \"vector\" ausente no servidor)")
  end
  local problem = index.storage_problem(info, nil)
  if problem then say("índice vetorial indisponível: %s", problem) end

  local indexes, xerr, xstate = index.vector_indexes(conn, table_name)
  if not indexes then return finish(index.code_for(xstate), "falha ao listar os índices: %s", tostring(xerr)) end
  if #indexes == 0 then
    say("índices vetoriais: nenhum")
  else
    say("índices vetoriais:")
    for _, idx in ipairs(indexes) do
      say("  %s (%s, %s%s): %s", idx.name, idx.method, idx.size, idx.valid and "" or ", INVALID: remova com "
        .. "`ragops index drop --name " .. idx.name .. "`", idx.definition)
    end
  end
  local progress = conn:query([[
    select phase, blocks_done, blocks_total, tuples_done, tuples_total
      from pg_stat_progress_create_index where relid = to_regclass($1)]], index.quote_table(table_name))
  for _, p in ipairs(progress or {}) do
    say("construção em andamento: fase %q, blocos %s/%s, tuplas %s/%s", tostring(p.phase),
      tostring(p.blocks_done), tostring(p.blocks_total), tostring(p.tuples_done), tostring(p.tuples_total))
  end

  local counted = conn:query(("select count(*) as n from %s where %s is not null")
    :format(index.quote_table(table_name), index.quote_ident(index.EMBEDDING_COLUMN)))
  local rows = counted and counted[1].n or 0
  local lists_by_profile = type(defaults.lists) == "table" and defaults.lists or {}
  local range = defaults.probes_range or { 10, 20 }
  say("recomendado (plans/create_index.lua): %s %s, lists %s (desenvolvimento) / %s (produção), "
    .. "probes %s (runbook: %d–%d)", tostring(defaults.method), tostring(defaults.opclass),
    tostring(lists_by_profile.dev), tostring(lists_by_profile.prod), tostring(defaults.probes), range[1], range[2])
  local lists, probes = index.recommend(rows)
  say("pela contagem atual (%d linha(s) com embedding), o pgvector sugere lists ≈ %d e probes ≈ %d", rows, lists, probes)
  say("nas sessões de consulta: %s; (hnsw: %s;)", index.session_setting("ivfflat", defaults),
    index.session_setting("hnsw", defaults))
  io.stdout:write(table.concat(lines, "\n"), "\n")
  return finish(exit.ok)
end

local USAGE = "uso: ragops index create --lists N --dim N [--method ivfflat|hnsw] [--m 16] [--ef-construction 64] "
  .. "[--maintenance-work-mem 2GB] [--concurrently] [--alter-dim] [--opclass cosine|l2|ip] [--name NOME] "
  .. "[--dry-run] [--config ARQUIVO] | ragops index drop [--name NOME] [--method M] [--dry-run] | ragops index status"

-- Entry point from ragops.cli: returns the exit code.
function M.main(args, cli)
  local sub = table.remove(args, 1)
  if sub == "create" then return create(args, cli) end
  if sub == "drop" then return drop(args, cli) end
  if sub == "status" then return status(args, cli) end
  cli.usage_error("%s", USAGE)
end


return M
