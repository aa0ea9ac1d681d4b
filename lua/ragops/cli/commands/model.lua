-- ragops.cli.commands.model: `ragops model prepare | compare | switch | rollback |
-- drop-previous | drop-shadow | status` for the operator: flags, the
-- transactions (ragops.vector.model holds the record, the gates and the renames),
-- the pt-BR output and --report-json. Exit codes: 0 done; 1 compare
-- reproved; 2 refusal or usage; 4 PostgreSQL or the provider unreachable.
local cjson = require "cjson"
local cmd_validate = require "ragops.cli.commands.validate"
local config = require "ragops.plan.config"
local dialects = require "ragops.provider.dialects"
local exit = require "ragops.util.exit"
local prelude = require "ragops.cli.prelude"
local log = require "ragops.obs.log"
local migrate = require "ragops.store.migrate"
local model = require "ragops.vector.model"
local report = require "ragops.report"
local sqlname = require "ragops.util.sqlname"
local validate = require "ragops.vector.validate"

local M = {}

local fail = exit.fail

-- Flags of each subcommand (the help lists them all: cli_help_spec).
M.FLAGS = {
  prepare = { config = "string", model = "string", dim = "string", storage = "string", set = "list", quiet = "bool" },
  compare = { config = "string", k = "string", ["report-json"] = "string", probes = "string",
              ["ef-search"] = "string", quiet = "bool" },
  switch = { config = "string", force = "bool", quiet = "bool" },
  rollback = { config = "string", force = "bool", quiet = "bool" },
  ["drop-previous"] = { config = "string", quiet = "bool" },
  ["drop-shadow"] = { config = "string", quiet = "bool" },
  status = { config = "string", quiet = "bool" },
}

-- Provider settings `model prepare --set` records for the shadow's runs.
local PROVIDER_SETS = { ["provider.url"] = "url", ["provider.encoding"] = "encoding", ["provider.api"] = "api" }

local KIND_CODE = { usage = exit.usage, unreachable = exit.unreachable }

-- The configuration and one session checked for the engine's tables. Returns
-- cfg, conn or nil, exit code (the error already printed).
local function open(opts, cli)
  local cfg, code = prelude.config(opts)
  if not cfg then return nil, code end
  local conn, ccode = prelude.session(cfg, true)
  if not conn then return nil, ccode end
  return cfg, conn
end

-- The record of cfg's live table, or nil, exit code (printed).
local function record(conn, cfg)
  local ok, rows = pcall(model.read, conn, cfg.database.table)
  if not ok then return nil, fail(exit.unreachable, "falha ao ler ragops_model_targets: %s", tostring(rows.message)) end
  return rows
end

local function no_shadow(cfg) return model.no_shadow(cfg.database.table) end

-- Parses the subcommand's flags (no positional argument unless `positional`).
local function parse(args, cli, sub, positional)
  local a = cli.parse(args, M.FLAGS[sub])
  if #a.positional > (positional or 0) then cli.usage_error("argumento inesperado: %s", a.positional[#a.positional]) end
  return a.options, a.positional, a.sets
end

-- Runs body inside model.transaction and prints its refusal; returns true or
-- nil, exit code.
local function locked(conn, cfg, body)
  local ok, err, kind = model.transaction(conn, cfg.database.table, body)
  if ok then return true end
  return nil, fail(KIND_CODE[kind], "%s", err)
end

local function refuse(message)
  error({ message = message, kind = "usage" }, 0)
end

-- A subcommand that changes the targets: parses its flags, opens a session,
-- runs body(conn, cfg, opts) under the targets' lock (locked) and closes.
-- Returns cfg, or nil, exit code (printed).
local function under_lock(args, cli, sub, body)
  local opts = parse(args, cli, sub)
  local cfg, conn = open(opts, cli)
  if not cfg then return nil, conn end
  local ok, code = locked(conn, cfg, function() body(conn, cfg, opts) end)
  conn:close()
  if not ok then return nil, code end
  return cfg
end

---------------------------------------------------------------------------
-- prepare
---------------------------------------------------------------------------

-- The shadow's model, dim, storage and provider from the flags.
local function prepare_spec(opts, sets, cli)
  if not opts.model or opts.model == "" then cli.usage_error("--model é obrigatório (o modelo novo)") end
  if opts.dim == nil then cli.usage_error("--dim é obrigatório (a dimensão do modelo novo)") end
  local dim = cli.integer_option(opts, "dim", 1, 16000)
  local storage = opts.storage
  if storage and storage ~= "real[]" and migrate.embedding_type(storage, dim):match("^[%w_]+") ~= storage then
    cli.usage_error("--storage espera real[], vector ou halfvec (o que esta versão cria), recebi %q", storage)
  end
  local provider = {}
  for key, value in pairs(sets) do
    if not PROVIDER_SETS[key] then
      cli.usage_error("--set %s: chave desconhecida para `model prepare`; chaves válidas: provider.api, provider.encoding, provider.url", key)
    end
    provider[PROVIDER_SETS[key]] = value
  end
  if provider.api and not dialects.get(provider.api) then
    cli.usage_error("--set provider.api espera um destes: %s; recebi %q", table.concat(dialects.NAMES, ", "), provider.api)
  end
  if provider.url and not provider.url:match("^https?://[^/]") then
    cli.usage_error("--set provider.url espera um endereço http:// ou https://, recebi %q", config.redact_url(provider.url))
  end
  return { model = opts.model, dim = dim, storage = storage, provider = provider }
end

-- The shadow's storage without --storage: the live table's, except that a
-- pgvector table gets halfvec when dim passes what an index on vector takes
-- (migrate.auto_type: a 3072-d model stays indexable).
local function default_storage(live_type, dim)
  local live = model.storage_of(live_type)
  if live == "real[]" then return live end
  return migrate.auto_type(dim, live)
end

-- Creates the shadow table and records it (live row refreshed from cfg).
local function create_shadow(conn, cfg, spec, live_type)
  local live = cfg.database.table
  local shadow = model.table_for(live, "shadow")
  if model.read(conn, live).shadow or model.exists(conn, shadow) then
    refuse(("já existe uma sombra para a tabela %s (%s); troque com `ragops model switch` ou descarte com "
      .. "`ragops model drop-shadow`"):format(live, shadow))
  end
  local ctx = migrate.target_context(shadow)
  ctx.embedding_type = migrate.embedding_type(spec.storage or default_storage(live_type, spec.dim), spec.dim)
  model.q(conn, "set local client_min_messages = warning")
  for _, stmt in ipairs(migrate.target_statements(ctx)) do model.q(conn, stmt) end
  model.q(conn, [[insert into ragops_model_targets (live_table, role, model, dim, storage)
      values ($1, 'live', $2, $3, $4)
      on conflict (live_table, role) do update set model = excluded.model, dim = excluded.dim,
        storage = excluded.storage]], live, cfg.provider.model, cfg.provider.dim, live_type)
  model.q(conn, [[insert into ragops_model_targets (live_table, role, model, dim, storage, provider)
      values ($1, 'shadow', $2, $3, $4, $5::jsonb)]], live, spec.model, spec.dim, ctx.embedding_type,
    next(spec.provider) and cjson.encode(spec.provider) or "{}")
  return shadow, ctx.embedding_type
end

local function prepare(args, cli)
  local opts, _, sets = parse(args, cli, "prepare")
  local spec = prepare_spec(opts, sets, cli)
  local cfg, conn = open(opts, cli)
  if not cfg then return conn end
  local live_type = migrate.embedding_column(conn, cfg.database.table)
  if not live_type then
    conn:close()
    return fail(exit.usage, "a tabela %q não existe; execute `ragops migrate` antes", cfg.database.table)
  end
  local shadow, shadow_type
  local ok, code = locked(conn, cfg, function() shadow, shadow_type = create_shadow(conn, cfg, spec, live_type) end)
  conn:close()
  if not ok then return code end
  log.info("sombra %s preparada para o modelo %s (dim %d, %s)", shadow, spec.model, spec.dim, shadow_type)
  io.stdout:write(("sombra %s criada (modelo %s, dim %d, coluna %s); a API continua lendo %s.\n"
    .. "próximos passos: ragops backfill --target shadow --dry-run; ragops backfill --target shadow; "
    .. "ragops index create --target shadow ...; ragops model compare GOLDEN.lua; ragops model switch\n")
    :format(shadow, spec.model, spec.dim, shadow_type, cfg.database.table))
  return exit.ok
end

---------------------------------------------------------------------------
-- compare
---------------------------------------------------------------------------

-- One side measured by ragops.cli.commands.validate (result.summary: recall, mrr,
-- ndcg, hit_rate, latency_ms; result.plan) or nil, err, code. settings:
-- { probes, ef_search } of the sessions, as the retrieval API sets them.
local function measure(cfg, golden, k, settings)
  return cmd_validate.measure(cfg, golden, k,
    { probes = settings.probes or validate.DEFAULTS.probes, ef_search = settings.ef_search })
end

-- --probes / --ef-search of compare: one integer each (the API's setting).
local function search_settings(opts, cli)
  return { probes = cli.integer_option(opts, "probes", 1, 32768),
           ef_search = cli.integer_option(opts, "ef-search", 1, 1000) }
end

-- "busca na atual: ...; plano: índice usado ..." for one side.
local function plan_lines(sides)
  local out = {}
  for _, name in ipairs({ "live", "shadow" }) do
    local plan = sides[name].plan
    if plan then
      local usage = validate.plan_usage(plan)
      out[#out + 1] = ("busca na %s: %s%s"):format(name == "live" and "atual" or "sombra",
        validate.plan_label(plan), usage and ("; " .. usage) or "")
    end
  end
  return table.concat(out, "\n")
end

-- The golden set and its `compare` thresholds, or nil, pt-BR err.
local function load_golden(path)
  local golden, err = validate.load_golden(path)
  if not golden then return nil, err end
  local ok, thresholds = pcall(model.check_compare, golden.compare, function(key, message)
    error(("golden %s: chave \"%s\": %s"):format(path, key, message), 0)
  end)
  if not ok then return nil, tostring(thresholds) end
  return golden, thresholds
end

-- The compare's JSON document (report and record).
local function compare_json(k, thresholds, sides, result)
  local function side(s) return { table = s.cfg.database.table, model = s.cfg.provider.model,
                                   dim = s.cfg.provider.dim, summary = s.summary, plan = s.plan } end
  return cjson.encode({ k = k, thresholds = thresholds, live = side(sides.live), shadow = side(sides.shadow),
    metrics = result.rows, violations = result.violations, passed = result.passed })
end

local function compare(args, cli)
  local opts, positional = parse(args, cli, "compare", 1)
  if not positional[1] then
    cli.usage_error("uso: ragops model compare GOLDEN.lua [--k K] [--probes N] [--ef-search N] [--report-json ARQUIVO]")
  end
  local settings = search_settings(opts, cli)
  local golden, thresholds = load_golden(positional[1])
  if not golden then return fail(exit.usage, "%s", thresholds) end
  local k = cli.integer_option(opts, "k", 1, validate.MAX_K) or golden.k or validate.DEFAULTS.k
  local cfg, conn = open(opts, cli)
  if not cfg then return conn end
  local rows = record(conn, cfg)
  if not rows then conn:close(); return exit.unreachable end
  if not rows.shadow then conn:close(); return fail(exit.usage, "%s", no_shadow(cfg)) end
  local now, nerr = conn:query("select now()::text as at")
  if not now then conn:close(); return fail(exit.unreachable, "falha ao ler o relógio do banco: %s", tostring(nerr)) end
  local sides = { live = { cfg = cfg }, shadow = { cfg = model.target_cfg(cfg, rows.shadow) } }
  for _, name in ipairs({ "live", "shadow" }) do
    local found, err, code = measure(sides[name].cfg, golden, k, settings)
    if not found then conn:close(); return fail(code or exit.unreachable, "%s", tostring(err)) end
    sides[name].summary, sides[name].plan = found.summary, found.plan
  end
  local result = model.compare(sides.live.summary, sides.shadow.summary, thresholds)
  local json = compare_json(k, thresholds, sides, result)
  local saved, serr = conn:query([[update ragops_model_targets set compare_passed = $2, compare_at = $3::timestamptz,
      compare_report = $4::jsonb where live_table = $1 and role = 'shadow']], cfg.database.table, result.passed,
    now[1].at, json)
  conn:close()
  if not saved then return fail(exit.unreachable, "falha ao registrar a comparação: %s", tostring(serr)) end
  io.stdout:write(model.format_compare(result, ("%s (%s)"):format(cfg.database.table, cfg.provider.model),
    ("%s (%s)"):format(sides.shadow.cfg.database.table, sides.shadow.cfg.provider.model)), "\n")
  local plans = plan_lines(sides)
  if plans ~= "" then io.stdout:write(plans, "\n") end
  local code = result.passed and exit.ok or exit.dead_letters
  if opts["report-json"] then code = report.write_json_file(opts["report-json"], json, code) end
  if not result.passed then log.error("sombra reprovada: %s", table.concat(result.violations, "; ")) end
  return code
end

---------------------------------------------------------------------------
-- switch, rollback, drops
---------------------------------------------------------------------------

-- The config change the operator must make for the new live target row,
-- or a confirmation when cfg already names its model and dimension.
local function config_hint(cfg, row)
  if cfg.provider.model == row.model and cfg.provider.dim == row.dim then
    return ("a configuração já usa esse modelo (provider.model = %q, provider.dim = %d)"):format(row.model, row.dim)
  end
  local url, api = row.provider and row.provider.url, row.provider and row.provider.api
  return ("ajuste a configuração para o modelo que a tabela serve agora: provider.model = %q, provider.dim = %d%s%s; "
    .. "até lá `ragops backfill` nesta tabela é recusado (misturaria dois modelos)")
    :format(row.model, row.dim, api and (", provider.api = " .. api) or "",
      url and (", provider.url = " .. config.redact_url(url)) or "")
end

-- Refuses while runs write to the live table: a sync follower or backfill
-- started with the old model would go on writing into the renamed table.
local function refuse_live_runs(conn, what)
  local n = model.live_runs(conn)
  if n > 0 then
    refuse(("%s recusado: %d execução(ões) em andamento na tabela atual (ragops sync --follow, backfill...); "
      .. "pare-as antes (depois da troca, elas gravariam o modelo antigo na tabela nova) e reinicie-as com a "
      .. "configuração nova depois; nada foi alterado"):format(what, n))
  end
end

-- The gates of the switch (inside its transaction, writes to both tables
-- blocked): refuses unless forced.
local function check_gates(conn, cfg, rows, force)
  local live, shadow = cfg.database.table, model.table_for(cfg.database.table, "shadow")
  model.q(conn, ("lock table %s, %s in share mode"):format(sqlname.quote_table(live), sqlname.quote_table(shadow)))
  refuse_live_runs(conn, "troca")
  local refusal = model.switch_refusal(model.coverage(conn, live, shadow), rows.shadow,
    model.written_since(conn, shadow, rows.shadow.compare_at))
  if refusal and not force then refuse("troca recusada: " .. refusal .. "; nada foi alterado") end
  if refusal then log.warn("troca forçada (--force) na tabela %s, apesar de: %s", live, refusal) end
end

-- In the caller's transaction: the live table becomes role `outgoing`
-- and the table of role `incoming` takes the live name (tables and
-- records together). switch: shadow in, live -> previous; rollback:
-- previous in, live -> shadow.
local function bring_in(conn, live, incoming, outgoing)
  model.rename(conn, live, model.table_for(live, outgoing))
  model.rename(conn, model.table_for(live, incoming), live)
  model.move_role(conn, live, "live", outgoing)
  model.move_role(conn, live, incoming, "live")
end

-- The provider settings of the outgoing live row, from cfg when cfg names
-- its model (the configuration in use until the switch): after the switch
-- the operator points cfg at the new model, and `--target previous` (the
-- catch-up before a rollback) must still reach the previous model's server.
local function keep_live_provider(conn, cfg, rows)
  local row = rows.live
  if not row or row.provider.url or cfg.provider.model ~= row.model then return end
  local provider = {}
  for _, field in pairs(PROVIDER_SETS) do provider[field] = cfg.provider[field] end
  model.q(conn, [[update ragops_model_targets set provider = provider || $2::jsonb
                   where live_table = $1 and role = 'live']], cfg.database.table, cjson.encode(provider))
end

local function switch(args, cli)
  local rows, forced
  local cfg, code = under_lock(args, cli, "switch", function(conn, c, o)
    forced = o.force
    local live = c.database.table
    rows = model.read(conn, live)
    if not rows.shadow then refuse("troca recusada: " .. no_shadow(c)) end
    if rows.previous or model.exists(conn, model.table_for(live, "previous")) then
      refuse(("troca recusada: a tabela anterior %s ainda existe; remova-a com `ragops model drop-previous` "
        .. "(ou volte a ela com `ragops model rollback`)"):format(model.table_for(live, "previous")))
    end
    model.q(conn, "set local lock_timeout = '" .. model.LOCK_TIMEOUT .. "'")
    check_gates(conn, c, rows, o.force)
    keep_live_provider(conn, c, rows)
    bring_in(conn, live, "shadow", "previous")
    model.q(conn, [[update ragops_model_targets set switched_at = now(), forced = $2
                     where live_table = $1 and role = 'live']], live, o.force or false)
  end)
  if not cfg then return code end
  local live = cfg.database.table
  log.info("troca de modelo: %s agora serve %s (dim %d); a anterior (%s) ficou em %s%s", live, rows.shadow.model,
    rows.shadow.dim, rows.live and rows.live.model or cfg.provider.model, model.table_for(live, "previous"),
    forced and " (forçada com --force)" or "")
  io.stdout:write(("troca concluída: %s agora serve o modelo %s (dim %d); a tabela anterior ficou em %s "
    .. "(`ragops model rollback` volta a ela; `ragops model drop-previous` libera o disco).\n%s\n")
    :format(live, rows.shadow.model, rows.shadow.dim, model.table_for(live, "previous"), config_hint(cfg, rows.shadow)))
  return exit.ok
end

-- The rollback's gate (inside its transaction, writes to both tables
-- blocked): the previous table must serve what the live one does (it is
-- not written while it waits: M.drift says what it missed); refuses
-- unless forced.
local function check_previous(conn, cfg, rows, force)
  local live, previous = cfg.database.table, model.table_for(cfg.database.table, "previous")
  model.q(conn, ("lock table %s, %s in share mode"):format(sqlname.quote_table(live), sqlname.quote_table(previous)))
  refuse_live_runs(conn, "rollback")
  local refusal = model.rollback_refusal(model.drift(conn, live, previous), rows.live.switched_at, previous)
  if refusal and not force then
    refuse("rollback recusado: " .. refusal .. "; ou use --force para voltar mesmo assim; nada foi alterado")
  end
  if refusal then log.warn("rollback forçado (--force) na tabela %s, apesar de: %s", live, refusal) end
end

local function rollback(args, cli)
  local rows
  local cfg, code = under_lock(args, cli, "rollback", function(conn, c, o)
    local live = c.database.table
    rows = model.read(conn, live)
    if not rows.previous or not rows.live then
      refuse(("rollback recusado: não há tabela anterior guardada para %s (nenhuma troca, ou ela já foi removida "
        .. "com drop-previous)"):format(live))
    end
    if rows.shadow or model.exists(conn, model.table_for(live, "shadow")) then
      refuse(("rollback recusado: já existe uma sombra (%s); descarte-a com `ragops model drop-shadow` antes")
        :format(model.table_for(live, "shadow")))
    end
    model.q(conn, "set local lock_timeout = '" .. model.LOCK_TIMEOUT .. "'")
    check_previous(conn, c, rows, o.force)
    bring_in(conn, live, "previous", "shadow")
  end)
  if not cfg then return code end
  local live = cfg.database.table
  log.info("rollback da troca de modelo: %s volta a servir %s; %s ficou como sombra em %s", live,
    rows.previous.model, rows.live.model, model.table_for(live, "shadow"))
  io.stdout:write(("rollback concluído: %s volta a servir o modelo %s (dim %d); o modelo %s ficou como sombra "
    .. "em %s (`ragops model switch` troca de novo).\n%s\n"):format(live, rows.previous.model, rows.previous.dim,
    rows.live.model, model.table_for(live, "shadow"), config_hint(cfg, rows.previous)))
  return exit.ok
end

-- `drop-previous` / `drop-shadow`: drops the role's table and its record.
local function dropper(role, sub, label)
  return function(args, cli)
    local name
    local cfg, code = under_lock(args, cli, sub, function(conn, c)
      name = model.table_for(c.database.table, role)
      if not model.read(conn, c.database.table)[role] then
        refuse(("%s recusado: não há tabela %s registrada para %s; nada foi removido"):format(sub, label,
          c.database.table))
      end
      model.q(conn, "set local client_min_messages = warning")
      model.q(conn, ("drop table if exists %s"):format(sqlname.quote_table(name)))
      model.q(conn, "delete from ragops_model_targets where live_table = $1 and role = $2", c.database.table, role)
    end)
    if not cfg then return code end
    log.info("tabela %s %s removida", label, name)
    io.stdout:write(("tabela %s %s removida (o espaço em disco foi liberado)\n"):format(label, name))
    return exit.ok
  end
end

---------------------------------------------------------------------------
-- status
---------------------------------------------------------------------------

local ROLE_LABEL = { live = "atual", shadow = "sombra", previous = "anterior" }

-- One line per role present (table, model, dim, column, entities) and the
-- shadow's coverage and last compare.
local function status_lines(conn, cfg, rows)
  local live = cfg.database.table
  local lines = { ("troca de modelo da tabela %s:"):format(live) }
  for _, role in ipairs({ "live", "shadow", "previous" }) do
    local row, name = rows[role], model.table_for(live, role)
    if row and model.exists(conn, name) then
      local n = model.q(conn, ("select count(distinct (entity_type, entity_id)) as n from %s")
        :format(sqlname.quote_table(name)))[1].n
      lines[#lines + 1] = ("  %-8s %s: modelo %s, dim %d, coluna %s, %s entidade(s)"):format(ROLE_LABEL[role], name,
        row.model, row.dim, row.storage, report.format_count(n))
    end
  end
  local previous = model.table_for(live, "previous")
  if rows.previous and rows.live and model.exists(conn, previous) then
    local what = model.describe_drift(model.drift(conn, live, previous), rows.live.switched_at)
    lines[#lines + 1] = "  anterior em dia com a atual: " .. (what and ("não: " .. what
      .. "; um rollback é recusado até `ragops backfill --target previous` alcançá-la")
      or "sim (o rollback serve o que a atual serve)")
  end
  if rows.shadow and model.exists(conn, model.table_for(live, "shadow")) then
    local c = model.coverage(conn, live, model.table_for(live, "shadow"))
    lines[#lines + 1] = ("  cobertura da sombra: faltam %s e %s desatualizada(s) de %s entidade(s) da atual")
      :format(report.format_count(c.missing), report.format_count(c.stale), report.format_count(c.entities))
    local verdict = rows.shadow.compare_passed == nil and "nunca comparada"
      or (rows.shadow.compare_passed and "aprovada" or "reprovada") .. " em " .. rows.shadow.compare_at
    lines[#lines + 1] = "  última comparação: " .. verdict
  end
  if not rows.shadow and not rows.previous then lines[#lines + 1] = "  nenhuma sombra nem tabela anterior" end
  return lines
end

local function status(args, cli)
  local opts = parse(args, cli, "status")
  local cfg, conn = open(opts, cli)
  if not cfg then return conn end
  local rows = record(conn, cfg)
  if not rows then conn:close(); return exit.unreachable end
  local ok, lines = pcall(status_lines, conn, cfg, rows)
  conn:close()
  if not ok then return fail(exit.unreachable, "falha ao ler as tabelas: %s", tostring(lines.message or lines)) end
  io.stdout:write(table.concat(lines, "\n"), "\n")
  return exit.ok
end

local SUBCOMMANDS = {
  prepare = prepare, compare = compare, switch = switch, rollback = rollback, status = status,
  ["drop-previous"] = dropper("previous", "drop-previous", "anterior"),
  ["drop-shadow"] = dropper("shadow", "drop-shadow", "sombra"),
}

-- Entry point from ragops.cli: returns the exit code.
function M.main(args, cli)
  local sub = table.remove(args, 1)
  local command = SUBCOMMANDS[sub]
  if not command then
    cli.usage_error("uso: ragops model prepare|compare|switch|rollback|drop-previous|drop-shadow|status [opções] "
      .. "(veja ragops model --help)")
  end
  return command(args, cli)
end

return M
