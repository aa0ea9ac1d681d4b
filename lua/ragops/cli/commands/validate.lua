-- ragops.cli.commands.validate: `ragops validate [GOLDEN.lua]` for the operator:
-- flags, the golden set's queries embedded and searched (ragops.vector.validate),
-- the plan the search used (index or exact, EXPLAIN, real settings), the
-- probes/ef_search sweep, the pt-BR report and --report-json. Exports
-- measure(cfg, golden, k, opts) for `ragops model compare`. Exit codes:
-- ragops.util.exit (below_threshold when the quality is below the limits).
local store_target = require "ragops.store.target"
local provider_client = require "ragops.provider.client"
local core = require "ragops.core"
local exit = require "ragops.util.exit"
local prelude = require "ragops.cli.prelude"
local index = require "ragops.vector.index"
local log = require "ragops.obs.log"
local plan_mod = require "ragops.plan"
local report = require "ragops.report"
local sqlname = require "ragops.util.sqlname"
local validate = require "ragops.vector.validate"

local M = {}

M.FLAGS = {
  config = "string", k = "string", ["min-recall"] = "string", ["min-mrr"] = "string",
  ["min-ndcg"] = "string", ["min-hit-rate"] = "string", probes = "string", ["ef-search"] = "string",
  ["target-recall"] = "string", ["report-json"] = "string", quiet = "bool",
}

M.MAX_SETTING = 100000

local USAGE = "uso: ragops validate [GOLDEN.lua] [--k K] [--min-recall R] [--min-mrr M] [--min-ndcg N] "
  .. "[--probes N|LISTA] [--ef-search N|LISTA] [--target-recall R] [--report-json ARQUIVO]"

-- "1,5,10" -> ascending distinct integers in [1, MAX_SETTING]; nil when
-- the flag is absent. Raises a usage error naming the flag.
local function setting_list(cli, o, flag)
  local text = o[flag]
  if text == nil then return nil end
  local values, seen = {}, {}
  for item in (text .. ","):gmatch("([^,]*),") do
    local n = tonumber(item)
    if not plan_mod.is_integer(n) or n < 1 or n > M.MAX_SETTING then
      cli.usage_error("--%s espera um inteiro entre 1 e %d ou uma lista como 1,5,10, recebi %q",
        flag, M.MAX_SETTING, text)
    end
    if not seen[n] then values[#values + 1], seen[n] = n, true end
  end
  table.sort(values)
  return values
end

-- The sweep the flags ask for (a list of two or more values), or nil.
local function sweep_of(cli, probes, ef_search)
  local many_probes, many_ef = probes and #probes > 1, ef_search and #ef_search > 1
  if many_probes and many_ef then
    cli.usage_error("varra um ajuste por vez: --probes 1,5,10 (IVFFlat) ou --ef-search 20,40,100 (HNSW)")
  end
  if many_probes then return { flag = "--probes", method = "ivfflat", setting = "ivfflat.probes", values = probes } end
  if many_ef then return { flag = "--ef-search", method = "hnsw", setting = "hnsw.ef_search", values = ef_search } end
  return nil
end

-- Turns parsed flags into options, raising usage errors through cli.
function M.options(parsed, cli)
  local o = parsed.options
  local out = { config = o.config, report_json = o["report-json"], quiet = o.quiet or false }
  local function fraction(flag)
    local v = o[flag]
    if v == nil then return nil end
    local n = tonumber(v)
    if not n or n ~= n or n < 0 or n > 1 then
      cli.usage_error("--%s espera um número entre 0 e 1 (ex.: 0.8), recebi %q", flag, v)
    end
    return n
  end
  out.k = cli.integer_option(o, "k", 1, validate.MAX_K)
  local probes, ef_search = setting_list(cli, o, "probes"), setting_list(cli, o, "ef-search")
  out.sweep = sweep_of(cli, probes, ef_search)
  out.probes = probes and #probes == 1 and probes[1] or validate.DEFAULTS.probes
  out.ef_search = ef_search and #ef_search == 1 and ef_search[1] or nil
  out.min_recall = fraction("min-recall")
  out.min_mrr = fraction("min-mrr")
  out.min_ndcg = fraction("min-ndcg")
  out.min_hit_rate = fraction("min-hit-rate")
  out.target_recall = fraction("target-recall")
  if out.target_recall and not out.sweep then
    cli.usage_error("--target-recall só vale numa varredura: --probes 1,5,10,20,40 ou --ef-search 20,40,100,200")
  end
  out.target_recall = out.target_recall or validate.DEFAULTS.target_recall
  if #parsed.positional > 1 then cli.usage_error("%s", USAGE) end
  out.golden = parsed.positional[1]
  return out
end

-- Warns when documents were indexed with another model than the queries'.
local function warn_other_models(conn, quoted_table, model)
  local models = conn:query(("select embedding_model, count(*) as n from %s group by 1 order by 2 desc")
    :format(quoted_table))
  for _, row in ipairs(models or {}) do
    if row.embedding_model ~= model then
      log.warn("%s documento(s) foram indexados com o modelo %q, mas as consultas usam %q: "
        .. "as similaridades não são comparáveis", report.format_count(tonumber(row.n)),
        tostring(row.embedding_model), model)
    end
  end
end

-- Connects and reads the target named by cfg.database.table. Returns
-- { conn, coltype, column_type ("vector"/"halfvec"/nil), storage,
-- quoted_table, table_name, indexes (valid ivfflat/hnsw) } or nil, err, code.
local function open_target(cfg)
  local conn, connect_err = store_target.connect(cfg)
  if not conn then return nil, connect_err, exit.unreachable end
  local coltype, terr, tcode = store_target.check_target(conn, cfg)
  if not coltype then conn:close(); return nil, terr, tcode end
  local base = coltype:match("^(%a+)")
  local target = { conn = conn, coltype = coltype, table_name = cfg.database.table,
                   quoted_table = sqlname.quote_table(cfg.database.table), indexes = {},
                   column_type = (base == "vector" or base == "halfvec") and base or nil }
  target.storage = target.column_type or "real[]"
  if not target.column_type then return target end
  local rows, ierr, istate = index.vector_indexes(conn, cfg.database.table)
  if not rows then
    conn:close()
    return nil, "falha ao listar os índices da tabela: " .. tostring(ierr), index.code_for(istate)
  end
  for _, row in ipairs(rows) do
    if row.valid then target.indexes[#target.indexes + 1] = { name = row.name, method = row.method } end
  end
  return target
end

-- Embeds the golden queries and finds the expected entities missing from
-- the table: { batches, missing, missing_count } or nil, err, code.
local function prepare(target, cfg, golden)
  warn_other_models(target.conn, target.quoted_table, cfg.provider.model)
  log.info("gerando embeddings de %d consulta(s) com o modelo %s", #golden.queries, cfg.provider.model)
  local client = provider_client.new(cfg, cfg.provider.timeout_s, "query", log.warn)
  local batches, eerr = validate.embed_queries(client, golden.queries, core.sleep, log)
  client:close()
  if not batches then
    return nil, "não foi possível gerar os embeddings das consultas: " .. tostring(eerr), exit.unreachable
  end
  local missing, missing_count = validate.find_missing(target.conn, target.quoted_table, golden.queries)
  if not missing then
    return nil, "falha ao consultar a tabela: " .. tostring(missing_count), exit.unreachable
  end
  return { batches = batches, missing = missing, missing_count = missing_count }
end

-- The plan a pgvector search used: the index EXPLAIN saw (or the table's
-- first one) and the real value of its setting. real: SETTINGS_SQL's row.
local function describe_plan(target, explained, real)
  local plan = { storage = target.storage, column = target.coltype, used = explained.used, total = explained.total }
  for _, ix in ipairs(target.indexes) do
    if ix.name == explained.index then plan.index = ix end
  end
  plan.index = plan.index or target.indexes[1]
  if plan.index then
    local name = validate.SETTING_OF[plan.index.method]
    plan.setting = { name = name, value = name == "hnsw.ef_search" and real.ef_search or real.probes }
  end
  return plan
end

-- One pgvector search with settings { probes, ef_search }: EXPLAIN first
-- (it also loads pgvector and warms the catalog), then each query timed.
-- Returns { hits, latencies, plan } or nil, err.
local function timed_pgvector_search(target, batches, k, settings)
  local conn = target.conn
  local ok, err = validate.apply_settings(conn, validate.pgvector_settings(settings.probes, settings.ef_search))
  if not ok then return nil, err end
  local explained, eerr = validate.explain_queries(conn, target.quoted_table, target.column_type, batches, k)
  if not explained then return nil, eerr end
  local real, rerr = conn:query(validate.SETTINGS_SQL)
  if not real then return nil, rerr end
  local hits, latencies = validate.search_pgvector(conn, target.quoted_table, target.column_type, batches, k, core.now)
  if not hits then return nil, latencies end
  return { hits = hits, latencies = latencies, latency_basis = "per_query",
           plan = describe_plan(target, explained, real[1]) }
end

-- Exact search over real[]: one scan for every query, so each query is
-- charged the whole scan. Returns { hits, latencies, plan } or nil, err.
local function timed_real_search(target, batches, k, nqueries)
  local started = core.now()
  local hits, rows = validate.search_real(target.conn, target.quoted_table, batches, k, nqueries)
  if not hits then return nil, rows end
  local latencies, elapsed = {}, core.now() - started
  for i = 1, nqueries do latencies[i] = elapsed end
  return { hits = hits, latencies = latencies, latency_basis = "shared_scan",
           plan = { storage = "real[]", column = target.coltype, rows = rows } }
end

-- Scores a search against the golden set: the result ragops.vector.validate
-- formats (summary with recall, mrr, ndcg, hit_rate, latency_ms, slo).
local function scored(golden, k, thresholds, prepared, found)
  local scores = {}
  for i, q in ipairs(golden.queries) do scores[i] = validate.score_query(q, found.hits[i], k) end
  local summary = validate.summarise(scores, k, thresholds)
  local slo = golden.slo or { p95_ms = validate.DEFAULTS.slo_p95_ms, enforce = false }
  validate.apply_slo(summary, validate.percentiles(found.latencies), slo)
  return {
    golden = golden, k = k, storage = found.plan.storage, plan = found.plan, hits = found.hits,
    latencies = found.latencies, latency_basis = found.latency_basis, scores = scores, summary = summary,
    thresholds = thresholds, missing = prepared.missing, missing_count = prepared.missing_count,
  }
end

-- Thresholds: the flags' (opts.min_*) over the golden file's.
local function thresholds_of(golden, opts)
  local out = {}
  for _, key in ipairs(validate.THRESHOLD_KEYS) do
    out[key] = opts[key] or golden[key]
  end
  return out
end

-- Runs fn(target) on the opened target and closes it.
local function with_target(cfg, fn)
  local target, err, code = open_target(cfg)
  if not target then return nil, err, code end
  local result, ferr, fcode = fn(target)
  target.conn:close()
  return result, ferr, fcode
end

-- Measures the target named by cfg.database.table with the provider
-- cfg.provider. opts: { probes, ef_search, min_recall, min_mrr, min_ndcg,
-- min_hit_rate } (all optional). Returns the result (result.summary:
-- recall, mrr, ndcg, hit_rate, latency_ms = { p50, p95, p99 }, passed,
-- violations; result.plan: the search plan) or nil, pt-BR err, exit code.
function M.measure(cfg, golden, k, opts)
  opts = opts or {}
  return with_target(cfg, function(target)
    local prepared, perr, pcode = prepare(target, cfg, golden)
    if not prepared then return nil, perr, pcode end
    local found, serr
    if target.column_type then
      log.info("buscando top-%d com pgvector, uma consulta por vez", k)
      found, serr = timed_pgvector_search(target, prepared.batches, k,
        { probes = opts.probes or validate.DEFAULTS.probes, ef_search = opts.ef_search })
    else
      log.info("coluna embedding é real[] (sem pgvector): busca exata por similaridade de cosseno")
      found, serr = timed_real_search(target, prepared.batches, k, #golden.queries)
    end
    if not found then return nil, "falha na busca vetorial: " .. tostring(serr), exit.unreachable end
    local result = scored(golden, k, thresholds_of(golden, opts), prepared, found)
    result.model = cfg.provider.model
    return result
  end)
end

-- One row of a sweep: the search with value, scored against the golden
-- set and against the exact top-k. Returns row, result or nil, err.
local function sweep_row(target, prepared, golden, k, opts, value, exact)
  local sweep = opts.sweep
  local settings = { probes = sweep.method == "ivfflat" and value or opts.probes,
                     ef_search = sweep.method == "hnsw" and value or opts.ef_search }
  local found, err = timed_pgvector_search(target, prepared.batches, k, settings)
  if not found then return nil, err end
  local result = scored(golden, k, thresholds_of(golden, opts), prepared, found)
  local sum = result.summary
  return { value = value, index_recall = validate.index_recall(found.hits, exact), recall = sum.recall,
           mrr = sum.mrr, ndcg = sum.ndcg, latency_ms = sum.latency_ms, used = found.plan.used,
           total = found.plan.total }, result
end

-- The sweep of opts.sweep on the target: the exact top-k once (indexes off),
-- then one row per value. The result is the measurement at the recommended
-- value (the largest when none meets the target), with result.sweep.
-- Returns it or nil, pt-BR err, exit code.
function M.sweep(cfg, golden, k, opts)
  return with_target(cfg, function(target)
    local problem = validate.sweep_problem(target.storage, target.indexes, opts.sweep, target.table_name)
    if problem then return nil, problem, exit.usage end
    local prepared, perr, pcode = prepare(target, cfg, golden)
    if not prepared then return nil, perr, pcode end
    log.info("busca exata (índices desligados) para a referência da varredura")
    local exact, latencies = validate.search_exact_pgvector(target.conn, target.quoted_table, target.column_type,
      prepared.batches, k, core.now)
    if not exact then return nil, "falha na busca exata: " .. tostring(latencies), exit.unreachable end
    local reference = scored(golden, k, {}, prepared, { hits = exact, latencies = latencies, plan = {} }).summary
    local sweep = { setting = opts.sweep.setting, target_recall = opts.target_recall, k = k, rows = {},
                    exact = { recall = reference.recall, ndcg = reference.ndcg, latency_ms = reference.latency_ms } }
    local results = {}
    for i, value in ipairs(opts.sweep.values) do
      log.info("varredura: %s = %d", sweep.setting, value)
      local row, result = sweep_row(target, prepared, golden, k, opts, value, exact)
      if not row then return nil, "falha na busca vetorial: " .. tostring(result), exit.unreachable end
      sweep.rows[i], results[value] = row, result
    end
    sweep.recommended = validate.recommend(sweep.rows, opts.target_recall)
    local result = results[sweep.recommended or opts.sweep.values[#opts.sweep.values]]
    result.sweep, result.model = sweep, cfg.provider.model
    return result
  end)
end


-- `ragops validate [GOLDEN.lua] [flags]`; returns the exit code.
function M.main(args, cli)
  local opts = M.options(cli.parse(args, M.FLAGS), cli)
  local started = core.now()
  local cfg, ccode = prelude.config(opts)
  if not cfg then return ccode end
  local golden, gerr = validate.load_golden(opts.golden or cli.home_path(validate.DEFAULT_GOLDEN))
  if not golden then return exit.fail(exit.usage, "%s", gerr) end
  local k = opts.k or golden.k or validate.DEFAULTS.k
  local result, err, code = (opts.sweep and M.sweep or M.measure)(cfg, golden, k, opts)
  if not result then return exit.fail(code, "%s", err) end
  result.elapsed_s = (core.now() - started) / 1000
  io.stdout:write(validate.format(result), "\n")
  if result.sweep then io.stdout:write(validate.format_sweep(result.sweep), "\n") end
  local summary = result.summary
  local passed = summary.passed and (not result.sweep or result.sweep.recommended ~= nil)
  code = passed and exit.ok or exit.below_threshold
  if opts.report_json then code = report.write_json_file(opts.report_json, validate.json(result), code) end
  if not summary.passed then
    log.error("qualidade abaixo do limite: %s", table.concat(summary.violations, "; "))
  elseif not passed then
    log.error("varredura: nenhum valor de %s chegou a recall do índice ≥ %s", result.sweep.setting,
      report.format_number(result.sweep.target_recall, 2))
  end
  return code
end

return M
