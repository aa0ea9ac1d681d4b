-- ragops.vector.model: the engine side of the blue/green model change. The three
-- targets of a live table (live, shadow, previous) and their names, the
-- record in ragops_model_targets (one row per role, migration 7), the cfg of
-- a target (--target shadow | previous), the switch's gates (coverage,
-- freshness, last compare), what the previous table missed since the switch
-- (the rollback's gate), the compare's thresholds and differences, and the
-- renames that switch and roll back in one transaction. SQL is parameterised or
-- identifier-quoted; errors are pt-BR. The commands are ragops.cli.commands.model.
local dialects = require "ragops.provider.dialects"
local exit = require "ragops.util.exit"
local scrub = require "ragops.util.scrub"
local sqlname = require "ragops.util.sqlname"
local store_runs = require "ragops.store.runs"

local M = {}

-- The suffix of each role's table: the live one keeps the configured name
-- (the retrieval API's query never changes).
M.SUFFIX = { live = "", shadow = "__shadow", previous = "__previous" }

-- Advisory lock class (second key: hashtext(live table)) held by prepare,
-- switch, rollback and the drops for their transaction (7265676-7265679
-- are migrate's, the runs', the work units' and the sync queue's).
M.LOCK_KEY = 7265680

-- How long the switch waits for the tables' exclusive lock before giving up
-- (queries on the live name queue behind it meanwhile).
M.LOCK_TIMEOUT = "5s"

-- Golden file `compare` keys: the worst the shadow may be against the live
-- target. Drops are fractions (0 to 1) of recall@k, MRR and nDCG@k; max_p95_ms
-- caps the shadow's p95 retrieval latency.
M.COMPARE_KEYS = { "max_recall_drop", "max_mrr_drop", "max_ndcg_drop", "max_p95_ms" }

-- The table of `role` for live table name `live` ("s.t" -> "s.t__shadow").
function M.table_for(live, role)
  return live .. M.SUFFIX[role]
end

local function usage_error(message)
  return nil, message, "usage"
end

-- The refusal of a command that needs a shadow.
function M.no_shadow(live)
  return ("não há sombra preparada para a tabela %s; crie uma com `ragops model prepare --model MODELO "
    .. "--dim N`"):format(live)
end

-- The refusal of a command that needs the previous table.
function M.no_previous(live)
  return ("não há tabela anterior guardada para %s (nenhuma troca, ou ela já foi removida com drop-previous)")
    :format(live)
end

-- "--target" value: nil or "live" -> nil (the live table), "shadow" ->
-- "shadow", "previous" -> "previous" (the rollback target, to catch it up).
-- Returns target or nil, err.
function M.parse_target(value)
  if value == nil or value == "live" then return nil end
  if value == "shadow" or value == "previous" then return value end
  return nil, ("--target espera live ou shadow (ou previous: a tabela anterior, depois de `ragops model switch`), "
    .. "recebi %q"):format(tostring(value))
end

local copy = require("ragops.util.tables").shallow_copy

-- The storage family of a column type: "vector(256)" -> "vector".
function M.storage_of(coltype)
  return tostring(coltype):match("^[%w_]+") == "real" and "real[]" or tostring(coltype):match("^[%w_]+")
end

-- cfg for the target recorded in row (a ragops_model_targets row): its table,
-- model, dimension, storage and provider overrides (e.g. url). Pure.
function M.target_cfg(cfg, row)
  local out = copy(cfg)
  out.database = copy(cfg.database)
  out.provider = copy(cfg.provider)
  out.database.table = M.table_for(cfg.database.table, row.role)
  out.database.storage = M.storage_of(row.storage)
  out.provider.model, out.provider.dim, out.provider.dimensions = row.model, row.dim, nil
  for key, value in pairs(row.provider or {}) do out.provider[key] = value end
  if out.provider.api ~= cfg.provider.api then M.other_dialect(out.provider) end
  return out
end

-- A target served through another dialect than the configuration's (model
-- prepare --set provider.api=...): nothing of the configuration's provider
-- credentials or extras goes to it; its key comes from its own variable
-- (VOYAGE_API_KEY...), registered as a secret.
function M.other_dialect(provider, getenv)
  provider.headers, provider.limits = {}, {}
  provider.api_version, provider.deployment, provider.azure_auth = nil, nil, nil
  local name = dialects.key_env(provider)
  local key = name and (getenv or os.getenv)(name)
  provider.api_key = key ~= "" and key or nil
  if provider.api_key then scrub.register(provider.api_key) end
end

-- The gates of `model compare` where the golden sets none: the shadow may
-- lose at most 0.02 of recall@k, MRR and nDCG@k, and its p95 must meet the
-- runbook's SLO (250 ms at top_k = 10). A switch is never gated on nothing.
M.COMPARE_DEFAULTS = { max_recall_drop = 0.02, max_mrr_drop = 0.02, max_ndcg_drop = 0.02, max_p95_ms = 250 }

-- Checks the golden file's `compare` table. fail(key, message) raises.
-- Returns the thresholds: the golden's, and COMPARE_DEFAULTS for the keys
-- it leaves out.
function M.check_compare(value, fail)
  if value == nil then value = {} end
  if type(value) ~= "table" then fail("compare", "esperada uma tabela { max_recall_drop = 0.02, ... }") end
  local allowed = {}
  for _, key in ipairs(M.COMPARE_KEYS) do allowed[key] = true end
  for key in pairs(value) do
    if not allowed[key] then
      fail("compare." .. tostring(key), "desconhecida; chaves válidas: " .. table.concat(M.COMPARE_KEYS, ", "))
    end
  end
  local out = {}
  for _, key in ipairs(M.COMPARE_KEYS) do
    local v = value[key]
    local high = key == "max_p95_ms" and math.huge or 1
    if v ~= nil and (type(v) ~= "number" or v ~= v or v < 0 or v > high) then
      fail("compare." .. key, ("valor %s inválido; esperado um número entre 0 e %s")
        :format(tostring(v), key == "max_p95_ms" and "infinito (milissegundos)" or "1"))
    end
    if v == nil then v = M.COMPARE_DEFAULTS[key] end
    out[key] = v
  end
  return out
end

-- The metrics compared, in display order: summary field(s), label, the
-- threshold on its drop (nil: shown only).
local METRICS = {
  { fields = { "recall", "recall_at_k" }, label = "recall@k", drop = "max_recall_drop" },
  { fields = { "mrr" }, label = "MRR", drop = "max_mrr_drop" },
  { fields = { "ndcg", "ndcg_at_k" }, label = "nDCG@k", drop = "max_ndcg_drop" },
  { fields = { "hit_rate" }, label = "taxa de acerto" },
}

-- x formatted with fmt, decimal comma (pt-BR).
local function num(fmt, x) return (fmt:format(x):gsub("%.", ",")) end

local function field(summary, names)
  for _, name in ipairs(names) do
    if type(summary[name]) == "number" then return summary[name] end
  end
  return nil
end

local function p95(summary)
  local latency = summary.latency_ms
  return type(latency) == "table" and type(latency.p95) == "number" and latency.p95 or nil
end

-- Compares the live and shadow summaries (ragops.cli.commands.validate measure's
-- result.summary; missing metrics are skipped) under thresholds (the golden's
-- `compare`). Returns { rows = { { label, live, shadow, diff } }, violations,
-- passed }. Pure.
function M.compare(live, shadow, thresholds)
  local rows, violations, EPS = {}, {}, 1e-9
  for _, m in ipairs(METRICS) do
    local a, b = field(live, m.fields), field(shadow, m.fields)
    if a and b then
      rows[#rows + 1] = { label = m.label, live = a, shadow = b, diff = b - a }
      local limit = m.drop and thresholds[m.drop]
      if limit and a - b > limit + EPS then
        violations[#violations + 1] = ("%s caiu %s (de %s para %s), mais que %s = %s"):format(m.label,
          num("%.3f", a - b), num("%.3f", a), num("%.3f", b), m.drop, num("%.3f", limit))
      end
    end
  end
  local a, b = p95(live), p95(shadow)
  if a and b then rows[#rows + 1] = { label = "latência p95 (ms)", live = a, shadow = b, diff = b - a } end
  if thresholds.max_p95_ms and b and b > thresholds.max_p95_ms then
    violations[#violations + 1] = ("latência p95 da sombra %s ms acima de max_p95_ms = %s")
      :format(num("%.1f", b), num("%.1f", thresholds.max_p95_ms))
  end
  return { rows = rows, violations = violations, passed = #violations == 0 }
end

-- The pt-BR side-by-side table of a comparison (M.compare) and its verdict.
function M.format_compare(result, live_label, shadow_label)
  local lines = { ("%-20s %14s %14s %10s"):format("métrica", "atual", "sombra", "diferença") }
  for _, r in ipairs(result.rows) do
    lines[#lines + 1] = ("%-20s %14s %14s %10s"):format(r.label, num("%.3f", r.live), num("%.3f", r.shadow),
      num("%+.3f", r.diff))
  end
  lines[#lines + 1] = ("atual: %s; sombra: %s"):format(live_label, shadow_label)
  if result.passed then
    lines[#lines + 1] = "resultado: aprovado (a sombra não é pior que os limites de compare do golden)"
  else
    lines[#lines + 1] = "resultado: reprovado: " .. table.concat(result.violations, "; ")
  end
  return table.concat(lines, "\n")
end

-- Why the switch may not run, from what the gates measured: coverage
-- { entities, missing, stale }, shadow row (compare_passed), newer_write (the
-- shadow was written after the last compare). Returns nil when it may, else
-- the pt-BR refusal. Pure.
function M.switch_refusal(coverage, shadow, newer_write)
  if coverage.missing > 0 then
    return ("a sombra não cobre %d de %d entidade(s) da tabela atual; rode `ragops backfill --target shadow` "
      .. "(só o que falta é gerado) e compare de novo"):format(coverage.missing, coverage.entities)
  end
  if coverage.stale > 0 then
    return ("a sombra está desatualizada em %d entidade(s) (source_updated_at mais antigo que na tabela atual); "
      .. "rode `ragops backfill --target shadow` para alcançá-la (a idempotência por hash só regera o que "
      .. "mudou) e compare de novo"):format(coverage.stale)
  end
  if shadow.compare_passed == nil then
    return "a sombra nunca foi comparada com a tabela atual; rode `ragops model compare GOLDEN.lua` antes"
  end
  if newer_write then
    return "a sombra foi gravada depois da última comparação; rode `ragops model compare GOLDEN.lua` de novo"
  end
  if shadow.compare_passed == false then
    return "a última comparação reprovou a sombra (veja `ragops model status`); corrija e rode "
      .. "`ragops model compare GOLDEN.lua` de novo, ou use --force"
  end
  return nil
end

---------------------------------------------------------------------------
-- The record (ragops_model_targets) and the catalog
---------------------------------------------------------------------------

-- Runs sql on conn raising { message } on failure (inside M.transaction).
local function q(conn, sql, ...)
  local rows, err, state = conn:query(sql, ...)
  if not rows then error({ message = tostring(err), state = state }, 0) end
  return rows
end
M.q = q

-- The rows of live table `live` by role ({ live = row, shadow = row, ... });
-- provider decoded. Raises { message } (see q).
function M.read(conn, live)
  local rows = q(conn, [[select role, model, dim, storage, provider::text as provider,
      prepared_at::text as prepared_at, switched_at::text as switched_at, forced, compare_passed,
      compare_at::text as compare_at, compare_report::text as compare_report
      from ragops_model_targets where live_table = $1]], live)
  local cjson = require "cjson"
  local out = {}
  for _, r in ipairs(rows) do
    r.provider = cjson.decode(r.provider)
    out[r.role] = r
  end
  return out
end

-- Runs body() inside one transaction holding the live table's advisory lock
-- (refused when another model command holds it). Returns true or nil,
-- pt-BR err, kind ("usage" | "unreachable"); body raises { message, kind }.
function M.transaction(conn, live, body)
  local ok, a = pcall(function()
    q(conn, "begin")
    local got = q(conn, "select pg_try_advisory_xact_lock($1, hashtext($2)) as ok", M.LOCK_KEY, live)
    if not got[1].ok then
      error({ message = ("outro comando `ragops model` está em andamento na tabela %s (a trava do modelo está "
        .. "tomada); nada foi feito: espere ele terminar e tente de novo"):format(live), kind = "usage" }, 0)
    end
    body()
    q(conn, "commit")
  end)
  if ok then return true end
  if conn:is_ok() then conn:query("rollback") end
  if type(a) ~= "table" then error(a, 0) end
  local kind = a.kind or (a.state == "55P03" and "usage") or (a.state and a.state:match("^08") and "unreachable")
    or "usage"
  if a.state == "55P03" then
    a.message = ("a tabela não ficou livre em %s (consultas ou gravações longas a seguram); nada foi feito, "
      .. "tente de novo"):format(M.LOCK_TIMEOUT)
  end
  return nil, a.message, kind
end

-- Whether relation `name` exists (to_regclass).
function M.exists(conn, name)
  return q(conn, "select to_regclass($1) is not null as present", sqlname.quote_table(name))[1].present
end

local function qualified(schema, name)
  local pg = require "ragops.pg"
  return schema and (pg.quote_ident(schema) .. "." .. pg.quote_ident(name)) or pg.quote_ident(name)
end

-- Renames table `from` to `to` (same schema) and the indexes and owned
-- sequences whose names start with from's name (constraints follow their
-- index), so the live name's index names stay the live ones.
function M.rename(conn, from, to)
  local pg = require "ragops.pg"
  local schema = from:match("^([^%.]+)%.")
  local from_rel, to_rel = sqlname.relation(from), sqlname.relation(to)
  local owned = q(conn, [[
    select c.relname, c.relkind from pg_class c
     where c.oid in (select indexrelid from pg_index where indrelid = to_regclass($1))
        or c.oid in (select objid from pg_depend where refobjid = to_regclass($1)
                        and classid = 'pg_class'::regclass and deptype in ('a', 'i'))
     order by c.relname]], sqlname.quote_table(from))
  q(conn, ("alter table %s rename to %s"):format(sqlname.quote_table(from), pg.quote_ident(to_rel)))
  for _, rel in ipairs(owned) do
    if rel.relname:sub(1, #from_rel) == from_rel then
      local kind = rel.relkind == "S" and "sequence" or "index"
      q(conn, ("alter %s %s rename to %s"):format(kind, qualified(schema, rel.relname),
        pg.quote_ident(to_rel .. rel.relname:sub(#from_rel + 1))))
    end
  end
end

-- Entities of the live table missing from the shadow, and those whose
-- shadow source_updated_at is older. Returns { entities, missing, stale }.
function M.coverage(conn, live, shadow)
  local row = q(conn, ([[
    with l as (select entity_type, entity_id, max(source_updated_at) as updated from %s group by 1, 2),
         s as (select entity_type, entity_id, max(source_updated_at) as updated from %s group by 1, 2)
    select count(*) as entities,
           count(*) filter (where s.entity_id is null) as missing,
           count(*) filter (where s.entity_id is not null and l.updated is not null
                              and (s.updated is null or s.updated < l.updated)) as stale
      from l left join s using (entity_type, entity_id)]]):format(sqlname.quote_table(live),
    sqlname.quote_table(shadow)))[1]
  return { entities = tonumber(row.entities), missing = tonumber(row.missing), stale = tonumber(row.stale) }
end

-- What the previous table (the rollback target) misses of what the live
-- table serves, per entity: missing (in the live table only), deleted (in
-- the previous table only) and changed (a chunk whose content, metadata or
-- source_updated_at differs, or that only one side has). The embeddings are
-- not compared (each table has its own model). Returns { missing, deleted,
-- changed, behind = their sum }.
function M.drift(conn, live, previous)
  local row = q(conn, ([[
    with j as (
      select coalesce(l.entity_type, p.entity_type) as entity_type, coalesce(l.entity_id, p.entity_id) as entity_id,
             p.entity_id is null as live_only, l.entity_id is null as previous_only,
             (l.content is distinct from p.content or l.metadata is distinct from p.metadata
              or l.source_updated_at is distinct from p.source_updated_at) as differs
        from %s l full join %s p
          on p.entity_type = l.entity_type and p.entity_id = l.entity_id and p.chunk_index = l.chunk_index),
    e as (select bool_and(live_only) as missing, bool_and(previous_only) as deleted,
                 bool_or(differs) as differs
            from j group by entity_type, entity_id)
    select count(*) filter (where missing) as missing,
           count(*) filter (where deleted) as deleted,
           count(*) filter (where differs and not missing and not deleted) as changed
      from e]]):format(sqlname.quote_table(live), sqlname.quote_table(previous)))[1]
  local d = { missing = tonumber(row.missing), deleted = tonumber(row.deleted), changed = tonumber(row.changed) }
  d.behind = d.missing + d.deleted + d.changed
  return d
end

-- "N entidade(s) ... desde a troca de <when>": what the previous table
-- misses (M.drift), in pt-BR, or nil when it is in step.
function M.describe_drift(drift, switched_at)
  if drift.behind == 0 then return nil end
  return ("%d entidade(s) diferem entre a atual e a anterior desde a troca%s (%d nova(s) na atual, %d "
    .. "apagada(s) da atual, %d com conteúdo, metadados ou data diferentes)"):format(drift.behind,
    switched_at and (" de " .. switched_at:gsub("%.%d+", "")) or "", drift.missing, drift.deleted, drift.changed)
end

-- Why a rollback may not run, from what the previous table misses (M.drift),
-- or nil when it is in step. Pure.
function M.rollback_refusal(drift, switched_at, previous)
  local what = M.describe_drift(drift, switched_at)
  if not what then return nil end
  return ("a tabela anterior %s não acompanhou as mudanças gravadas na atual: %s; voltar a ela agora "
    .. "serviria documentos desatualizados, sem aviso. Alcance-a com `ragops backfill --target previous` "
    .. "(com o modelo anterior: gera embeddings só do que mudou e remove o que sumiu da origem) e tente de "
    .. "novo; se a atual também está atrás da origem (um seguidor parado com fila), rode antes `ragops sync`"
    .. " nela"):format(previous, what)
end

-- Runs in progress on the live table (not --target shadow; those on the
-- previous table count too: a rollback must not rename it under them), the sync
-- followers included: they hold their run's advisory lock (store_runs).
function M.live_runs(conn)
  return tonumber(q(conn, [[select count(*) as n from ragops_runs r
     where r.status = 'running' and coalesce(r.params ->> 'target', '') <> 'shadow'
       and exists (select 1 from pg_locks l where l.locktype = 'advisory' and l.granted
                     and l.classid = $1 and l.objid = r.id and l.objsubid = 2)]], store_runs.RUN_LOCK_CLASS)[1].n)
end

-- Whether the shadow was written (indexed_at) after timestamp `at`.
function M.written_since(conn, shadow, at)
  if not at then return false end
  return q(conn, ("select coalesce(max(indexed_at) > $1::timestamptz, false) as newer from %s")
    :format(sqlname.quote_table(shadow)), at)[1].newer
end

-- Moves the record's role `from` to `to` (update of the primary key).
function M.move_role(conn, live, from, to)
  q(conn, "update ragops_model_targets set role = $3 where live_table = $1 and role = $2", live, from, to)
end

-- cfg for --target `value` ("shadow" or "previous"; nil or "live": the live
-- table) of cfg's table, the target's from its record. Returns cfg or nil,
-- pt-BR err, exit code.
function M.target_config(cfg, value)
  local target, terr = M.parse_target(value)
  if terr then return nil, terr, exit.usage end
  if not target then return cfg end
  local store_target = require "ragops.store.target"
  local conn, err = store_target.connect(cfg)
  if not conn then return nil, err, exit.unreachable end
  local ok, serr, scode = store_target.check_schema(conn)
  if not ok then conn:close(); return nil, serr, scode end
  local rok, rows = pcall(M.read, conn, cfg.database.table)
  conn:close()
  if not rok then return nil, "falha ao ler ragops_model_targets: " .. tostring(rows.message), exit.unreachable end
  if not rows[target] then
    local missing = target == "shadow" and M.no_shadow(cfg.database.table) or M.no_previous(cfg.database.table)
    return nil, ("--target %s: %s"):format(target, missing), exit.usage
  end
  return M.target_cfg(cfg, rows[target])
end

-- Refuses a run that would mix two models in cfg's table (one the
-- retrieval API may be reading): rows indexed with a model other than
-- provider.model, unless mode is "overwrite". Returns true or nil, err, code.
function M.check_table_model(conn, cfg, mode)
  if mode == "overwrite" then return true end
  local rows, err = conn:query(("select embedding_model from %s where embedding_model <> $1 limit 1")
    :format(sqlname.quote_table(cfg.database.table)), cfg.provider.model)
  if not rows then return nil, "falha ao conferir o modelo da tabela: " .. tostring(err), exit.unreachable end
  if #rows == 0 then return true end
  return nil, ("a tabela %s tem documentos do modelo %q, mas provider.model = %q: esta execução misturaria dois "
    .. "modelos na mesma tabela. Depois de `ragops model switch`/`rollback`, ajuste provider.model e "
    .. "provider.dim ao modelo da tabela; para trocar de modelo, use `ragops model prepare` (sem mistura) ou "
    .. "--overwrite (reembeda tudo no lugar)"):format(cfg.database.table, rows[1].embedding_model,
    cfg.provider.model), exit.usage
end

return M
