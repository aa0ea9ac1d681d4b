-- ragops.cmd.validate: `ragops validate [GOLDEN.lua]` for the operator:
-- flags, the golden set's queries embedded and searched (ragops.validate),
-- the pt-BR report and --report-json. Exit codes: validate.EXIT.
local backends = require "ragops.backends"
local config = require "ragops.config"
local core = require "ragops.core"
local exit = require "ragops.exit"
local log = require "ragops.log"
local plan_mod = require "ragops.plan"
local report = require "ragops.report"
local sqlname = require "ragops.sqlname"
local validate = require "ragops.validate"

local M = {}

M.FLAGS = {
  config = "string", k = "string", ["min-recall"] = "string", ["min-mrr"] = "string",
  ["min-hit-rate"] = "string", probes = "string", ["ef-search"] = "string",
  ["report-json"] = "string", quiet = "bool",
}

-- Turns parsed flags into options, raising usage errors through cli.
function M.options(parsed, cli)
  local o = parsed.options
  local out = { config = o.config, report_json = o["report-json"], quiet = o.quiet or false }
  local function integer(flag, low, high)
    local v = o[flag]
    if v == nil then return nil end
    local n = tonumber(v)
    if not plan_mod.is_integer(n) or n < low or n > high then
      cli.usage_error("--%s espera um inteiro entre %d e %d, recebi %q", flag, low, high, v)
    end
    return n
  end
  local function fraction(flag)
    local v = o[flag]
    if v == nil then return nil end
    local n = tonumber(v)
    if not n or n ~= n or n < 0 or n > 1 then
      cli.usage_error("--%s espera um número entre 0 e 1 (ex.: 0.8), recebi %q", flag, v)
    end
    return n
  end
  out.k = integer("k", 1, validate.MAX_K)
  out.probes = integer("probes", 1, 100000) or validate.DEFAULTS.probes
  out.ef_search = integer("ef-search", 1, 100000)
  out.min_recall = fraction("min-recall")
  out.min_mrr = fraction("min-mrr")
  out.min_hit_rate = fraction("min-hit-rate")
  if #parsed.positional > 1 then
    cli.usage_error("uso: ragops validate [GOLDEN.lua] [--k K] [--min-recall R] [--min-mrr M] "
      .. "[--probes N] [--report-json ARQUIVO]")
  end
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

-- Embeds the golden queries and searches their top-k on the target.
-- Returns { hits, rows, missing, missing_count } or nil, pt-BR err.
local function search(conn, client, quoted_table, storage, golden, k, opts, model)
  log.info("gerando embeddings de %d consulta(s) com o modelo %s", #golden.queries, model)
  local batches, eerr = validate.embed_queries(client, golden.queries, core.sleep, log)
  if not batches then return nil, "não foi possível gerar os embeddings das consultas: " .. tostring(eerr) end
  local hits, rows, serr
  if storage == "vector" then
    log.info("buscando top-%d com pgvector (ivfflat.probes = %d)", k, opts.probes)
    hits, serr = validate.search_pgvector(conn, quoted_table, batches, k, opts)
  else
    log.info("coluna embedding é real[] (sem pgvector): busca exata por similaridade de cosseno")
    hits, rows = validate.search_real(conn, quoted_table, batches, k, #golden.queries)
    if not hits then serr = rows end
  end
  if not hits then return nil, "falha na busca vetorial: " .. tostring(serr) end
  local missing, missing_count = validate.find_missing(conn, quoted_table, golden.queries)
  if not missing then return nil, "falha ao consultar a tabela: " .. tostring(missing_count) end
  return { hits = hits, rows = rows, missing = missing, missing_count = missing_count }
end

-- Connects, checks the target and searches. Returns the search result,
-- the embedding column type, or nil, exit code, pt-BR err.
local function measure(cfg, golden, k, opts)
  local conn, connect_err = backends.connect(cfg)
  if not conn then return nil, validate.EXIT.unreachable, connect_err end
  local coltype, terr, tcode = backends.check_target(conn, cfg)
  if not coltype then conn:close(); return nil, tcode, terr end
  local storage = coltype:match("^vector") and "vector" or "real[]"
  local quoted_table = sqlname.quote_table(cfg.database.table)
  warn_other_models(conn, quoted_table, cfg.provider.model)
  local client = backends.embed_client(cfg, cfg.provider.timeout_s)
  local found, serr = search(conn, client, quoted_table, storage, golden, k, opts, cfg.provider.model)
  conn:close()
  client:close()
  if not found then return nil, validate.EXIT.unreachable, serr end
  found.storage = storage
  return found, coltype
end

M.measure = measure -- `ragops model compare` measures live and shadow with it

-- `ragops validate [GOLDEN.lua] [flags]`; returns the exit code.
function M.main(args, cli)
  local opts = M.options(cli.parse(args, M.FLAGS), cli)
  log.quiet = opts.quiet
  local started = core.now()
  local cfg, cerr = config.load(opts.config, os.getenv)
  if not cfg then return exit.fail(validate.EXIT.usage, "%s", cerr) end
  local golden, gerr = validate.load_golden(opts.golden or cli.home_path(validate.DEFAULT_GOLDEN))
  if not golden then return exit.fail(validate.EXIT.usage, "%s", gerr) end
  local k = opts.k or golden.k or validate.DEFAULTS.k
  local thresholds = {
    min_recall = opts.min_recall or golden.min_recall,
    min_mrr = opts.min_mrr or golden.min_mrr,
    min_hit_rate = opts.min_hit_rate or golden.min_hit_rate,
  }
  local found, coltype, merr = measure(cfg, golden, k, opts)
  if not found then return exit.fail(coltype, "%s", merr) end

  local scores = {}
  for i, q in ipairs(golden.queries) do scores[i] = validate.score_query(q, found.hits[i]) end
  local summary = validate.summarise(scores, k, thresholds)
  local result = {
    golden = golden, k = k, storage = found.storage, rows = found.rows, model = cfg.provider.model,
    storage_label = found.storage == "vector"
      and ("pgvector (%s, ivfflat.probes = %d)"):format(coltype, opts.probes)
      or ("busca exata em real[] (%s vetores)"):format(report.format_count(found.rows or 0)),
    scores = scores, summary = summary, thresholds = thresholds, missing = found.missing,
    missing_count = found.missing_count, elapsed_s = (core.now() - started) / 1000,
  }
  io.stdout:write(validate.format(result), "\n")
  local code = summary.passed and validate.EXIT.ok or validate.EXIT.below_threshold
  if opts.report_json then code = report.write_json_file(opts.report_json, validate.json(result), code) end
  if not summary.passed then
    log.error("qualidade abaixo do limite: %s", table.concat(summary.violations, "; "))
  end
  return code
end

return M
