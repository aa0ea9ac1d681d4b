-- ragops.vector.validate: the library of `ragops validate GOLDEN.lua` (the command
-- itself is ragops.cli.commands.validate), semantic quality of the
-- index measured against a golden query set: each query is embedded with the
-- configured provider, its top-k chunks are retrieved (pgvector `<=>`, one
-- timed query per golden query, the plan checked with EXPLAIN; or an exact
-- cosine scan in C over real[]), hits are deduplicated per entity, and
-- recall@k, MRR, nDCG@k, hit rate and latency p50/p95/p99 are compared with
-- the thresholds and the SLO; a sweep of ivfflat.probes / hnsw.ef_search
-- measures the index's recall against exact search. Exit codes: 0 aprovado;
-- 1 qualidade abaixo do limite; 2 uso ou arquivo golden inválido;
-- 4 banco ou provedor inalcançável.
--
-- Pure parts (golden validation, metrics, SQL text, formatting) call no C
-- module and are unit-tested in tests/lua/validate_spec.lua.
local cjson = require "cjson"
local plan_mod = require "ragops.plan"
local format = require "ragops.util.format"
local retry = require "ragops.provider.retry"
local sandbox = require "ragops.plan.sandbox"
local vecsearch = require "ragops.vecsearch"

local M = {}

M.DEFAULTS = {
  k = 10,
  probes = 10,
  page_size = 1000,         -- rows per keyset page of the real[] scan
  queries_per_request = 128, -- golden queries per embedding request
  slo_p95_ms = 250,          -- the seed's SLO: retrieval p95 <= 250 ms at top_k = 10
  target_recall = 0.95,      -- index recall (vs exact search) a sweep recommends for
  retry = { attempts = 4, base_ms = 500, max_ms = 10000, timeout_s = 60 },
}

M.MAX_K = 1000
M.DEFAULT_GOLDEN = "plans/validate_quality.lua"

local show = plan_mod.show_value

-- Private cjson instance. lua-cjson 2.1.0 encodes {} as an object; lists
-- that may be empty go through array() and come out as [].
local json = cjson.new()
json.encode_sparse_array(true)
local EMPTY_ARRAY = "__ragops_empty_array_" .. tostring({}):gsub("%W", "") .. "__"
local function array(list)
  if #list == 0 then return EMPTY_ARRAY end
  return list
end
local function encode(value)
  return (json.encode(value):gsub('"' .. EMPTY_ARRAY .. '"', "[]"))
end

---------------------------------------------------------------------------
-- Golden file: loading and validation
---------------------------------------------------------------------------

local ROOT_KEYS = { "name", "description", "k", "min_recall", "min_mrr", "min_ndcg", "min_hit_rate", "slo",
                    "queries", "compare" }
local SLO_KEYS = { "p95_ms", "enforce" }
M.MAX_SLO_MS = 600000
local QUERY_KEYS = { "query", "expect", "note" }
local EXPECT_KEYS = { "entity_type", "entity_id" }
local QUERY_LINE = "%f[%w_]query%s*="

-- Line of the nth line (1-based) of text matching pattern, or nil.
local function nth_line(text, pattern, nth)
  if not text then return nil end
  local number, seen = 0, 0
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    number = number + 1
    if line:find(pattern) then
      seen = seen + 1
      if seen == nth then return number end
    end
  end
  return nil
end

local function count_lines(text, pattern)
  local seen = 0
  for line in ((text or "") .. "\n"):gmatch("([^\n]*)\n") do
    if line:find(pattern) then seen = seen + 1 end
  end
  return seen
end

-- Validation context: raises "golden FILE[:LINE]: chave "path": message".
local function new_checker(path, text, nqueries)
  local checker = {}
  -- Line numbers of the i-th query are trusted only when the file spells out
  -- exactly one `query =` per query (a generated list has no useful line).
  local query_lines = nqueries ~= nil and count_lines(text, QUERY_LINE) == nqueries

  function checker.where(query_index, root_key)
    local line
    if query_index and query_lines then
      line = nth_line(text, QUERY_LINE, query_index)
    elseif root_key then
      line = nth_line(text, "^%s*" .. root_key .. "%s*=", 1)
    end
    return line and (path .. ":" .. line) or path
  end

  function checker.fail(where, key, message)
    error(("golden %s: chave \"%s\": %s"):format(where, key, message), 0)
  end

  function checker.only_keys(tbl, allowed, prefix, where)
    local unknown = plan_mod.first_unknown_key(tbl, allowed)
    if unknown == nil then return end
    unknown = tostring(unknown)
    local key = prefix and (prefix .. "." .. unknown) or unknown
    checker.fail(where, key, "desconhecida; chaves válidas: " .. table.concat(allowed, ", "))
  end
  return checker
end

local is_integer = plan_mod.is_integer

local function check_fraction(c, where, key, value)
  if value == nil then return nil end
  if type(value) ~= "number" or value ~= value or value < 0 or value > 1 then
    c.fail(where, key, ("valor %s inválido; esperado um número entre 0 e 1"):format(show(value)))
  end
  return value
end

-- The golden's `slo = { p95_ms = 250, enforce = false }`, normalised with
-- the seed's defaults (absent = p95 <= 250 ms, reported, not enforced).
local function check_slo(c, slo)
  local out = { p95_ms = M.DEFAULTS.slo_p95_ms, enforce = false }
  if slo == nil then return out end
  local where = c.where(nil, "slo")
  if type(slo) ~= "table" then
    c.fail(where, "slo", ("valor %s inválido; esperado { p95_ms = 250, enforce = true }"):format(show(slo)))
  end
  c.only_keys(slo, SLO_KEYS, "slo", where)
  local p95 = slo.p95_ms
  if p95 ~= nil and (type(p95) ~= "number" or p95 ~= p95 or p95 <= 0 or p95 > M.MAX_SLO_MS) then
    c.fail(where, "slo.p95_ms", ("valor %s inválido; esperado um número de milissegundos maior que 0 e até %d")
      :format(show(p95), M.MAX_SLO_MS))
  end
  if slo.enforce ~= nil and type(slo.enforce) ~= "boolean" then
    c.fail(where, "slo.enforce", ("valor %s inválido; esperado true ou false"):format(show(slo.enforce)))
  end
  out.p95_ms = p95 or out.p95_ms
  out.enforce = slo.enforce == true
  return out
end

-- Validates the table returned by a golden file. Returns a normalised copy:
-- { name, k, min_recall, min_mrr, min_ndcg, min_hit_rate, slo = { p95_ms,
-- enforce }, queries = { { query, note,
-- expect = { { entity_type, entity_id }, ... } } } }. Raises a pt-BR error
-- naming the file, the line (when it can be told) and the key.
function M.check_golden(value, path, text)
  path = path or "(golden)"
  if type(value) ~= "table" then
    error(("golden %s: o arquivo deve retornar uma tabela { k = 10, queries = { ... } } (retornou valor %s)")
      :format(path, show(value)), 0)
  end
  local nqueries = type(value.queries) == "table" and #value.queries or nil
  local c = new_checker(path, text, nqueries)
  c.only_keys(value, ROOT_KEYS, nil, c.where(nil, nil))
  local out = { name = value.name, description = value.description, compare = value.compare } -- compare: ragops.vector.model
  if value.name ~= nil and (type(value.name) ~= "string" or value.name == "") then
    c.fail(c.where(nil, "name"), "name", ("valor %s inválido; esperado um texto não vazio"):format(show(value.name)))
  end
  if value.k ~= nil then
    if not is_integer(value.k) or value.k < 1 or value.k > M.MAX_K then
      c.fail(c.where(nil, "k"), "k", ("valor %s inválido; esperado um inteiro entre 1 e %d")
        :format(show(value.k), M.MAX_K))
    end
    out.k = value.k
  end
  for _, key in ipairs(M.THRESHOLD_KEYS) do
    out[key] = check_fraction(c, c.where(nil, key), key, value[key])
  end
  out.slo = check_slo(c, value.slo)
  local queries = value.queries
  if type(queries) ~= "table" or #queries == 0 then
    c.fail(c.where(nil, "queries"), "queries", ("valor %s inválido; esperada uma lista não vazia de consultas { query = ..., expect = { ... } }")
      :format(show(queries)))
  end
  for key in pairs(queries) do
    if not is_integer(key) or key < 1 or key > #queries then
      c.fail(c.where(nil, "queries"), "queries", ("chave %s inesperada; esperada uma lista sem buracos"):format(show(key)))
    end
  end
  out.queries = {}
  for i, q in ipairs(queries) do
    local where = c.where(i, "queries")
    local prefix = ("queries[%d]"):format(i)
    if type(q) ~= "table" then
      c.fail(where, prefix, ("valor %s inválido; esperado { query = \"...\", expect = { ... } }"):format(show(q)))
    end
    c.only_keys(q, QUERY_KEYS, prefix, where)
    if type(q.query) ~= "string" or not q.query:find("%S") then
      c.fail(where, prefix .. ".query", ("valor %s inválido; esperado o texto da consulta"):format(show(q.query)))
    end
    if q.note ~= nil and type(q.note) ~= "string" then
      c.fail(where, prefix .. ".note", ("valor %s inválido; esperado um texto"):format(show(q.note)))
    end
    if type(q.expect) ~= "table" or #q.expect == 0 then
      c.fail(where, prefix .. ".expect", ("valor %s inválido; esperada uma lista não vazia { { entity_type = ..., entity_id = ... } }")
        :format(show(q.expect)))
    end
    local expect, seen = {}, {}
    for j, e in ipairs(q.expect) do
      local eprefix = ("%s.expect[%d]"):format(prefix, j)
      if type(e) ~= "table" then
        c.fail(where, eprefix, ("valor %s inválido; esperado { entity_type = \"verse\", entity_id = \"1\" }"):format(show(e)))
      end
      c.only_keys(e, EXPECT_KEYS, eprefix, where)
      if type(e.entity_type) ~= "string" or e.entity_type == "" then
        c.fail(where, eprefix .. ".entity_type", ("valor %s inválido; esperado o tipo de entidade, como \"verse\"")
          :format(show(e.entity_type)))
      end
      local id = e.entity_id
      if is_integer(id) then id = ("%d"):format(id) end
      if type(id) ~= "string" or id == "" then
        c.fail(where, eprefix .. ".entity_id", ("valor %s inválido; esperado o id da entidade (texto ou inteiro)")
          :format(show(e.entity_id)))
      end
      local key = e.entity_type .. "\0" .. id
      if seen[key] then
        c.fail(where, eprefix, ("entidade %s %s repetida na mesma consulta"):format(e.entity_type, id))
      end
      seen[key] = true
      expect[j] = { entity_type = e.entity_type, entity_id = id }
    end
    out.queries[i] = { query = q.query, note = q.note, expect = expect }
  end
  return out
end

-- Runs a golden file (text only, in ragops.plan.sandbox like plans) and returns
-- the raw table it returns, or nil, err. `import "outro.lua"` loads a golden
-- file of the same folder (its raw table, so the importer may adjust thresholds).
local function run_golden_file(path, depth)
  if depth > 8 then return nil, ("golden %s: import em ciclo"):format(path) end
  local text, rerr = sandbox.read_file(path, "golden")
  if not text then return nil, rerr end
  local env = sandbox.environment("golden")
  env.import = function(name)
    if type(name) ~= "string" or not name:match("^[%w_][%w_%-%.]*%.lua$") then
      error(('import: esperado o nome de um arquivo golden da mesma pasta, como "golden_demo.lua" (recebi %s)')
        :format(show(name)), 2)
    end
    local dir = path:match("^(.*)/[^/]*$") or "."
    local value, err = run_golden_file(dir .. "/" .. name, depth + 1)
    if value == nil then error(err, 0) end
    return value
  end
  local result, err = sandbox.run_text(text, path, "golden", env)
  if err then return nil, err end
  return result, nil, text
end

-- Loads and validates a golden file. Returns the normalised golden set or
-- nil, pt-BR message naming the file (and line/key when known).
function M.load_golden(path)
  local value, err, text = run_golden_file(path, 0)
  if err then return nil, err end
  local ok, result = pcall(M.check_golden, value, path, text)
  if not ok then return nil, tostring(result) end
  result.file = path
  return result
end

---------------------------------------------------------------------------
-- Metrics
---------------------------------------------------------------------------

local function entity_key(entity_type, entity_id)
  return tostring(entity_type) .. "\0" .. tostring(entity_id)
end

local function log2(x) return math.log(x) / math.log(2) end

-- nDCG@k with binary relevance: DCG adds 1/log2(rank + 1) for each expected
-- entity found at rank <= k; the ideal DCG has min(#expected, k) of them at
-- ranks 1, 2, ... ranks: per expectation, a rank or false.
function M.ndcg(ranks, k)
  local dcg = 0
  for _, rank in ipairs(ranks) do
    if rank and rank <= k then dcg = dcg + 1 / log2(rank + 1) end
  end
  local ideal = 0
  for i = 1, math.min(#ranks, k) do ideal = ideal + 1 / log2(i + 1) end
  return ideal > 0 and dcg / ideal or 0
end

-- Scores one query. hits: the top-k chunks, best first, each
-- { entity_type, entity_id, chunk_index, score }. Chunks of the same entity
-- count once, at the best rank; ranks are 1-based positions among distinct
-- entities. k: the cut-off of nDCG (nil = no cut-off). Returns { ranks (per
-- expectation, false when not found), found, recall, reciprocal_rank, ndcg,
-- hit, first_rank, best, entities }.
function M.score_query(query, hits, k)
  local rank_of, entities = {}, {}
  for _, h in ipairs(hits) do
    local key = entity_key(h.entity_type, h.entity_id)
    if not rank_of[key] then
      entities[#entities + 1] = h
      rank_of[key] = #entities
    end
  end
  local ranks, found, first = {}, 0, nil
  for i, e in ipairs(query.expect) do
    local rank = rank_of[entity_key(e.entity_type, e.entity_id)]
    ranks[i] = rank or false
    if rank then
      found = found + 1
      if not first or rank < first then first = rank end
    end
  end
  return {
    ranks = ranks, found = found, recall = found / #query.expect,
    reciprocal_rank = first and 1 / first or 0, ndcg = M.ndcg(ranks, k or math.huge),
    hit = first ~= nil, first_rank = first, best = hits[1], entities = entities,
  }
end

local EPS = 1e-9

-- The metrics a threshold may limit: golden/threshold key, summary field,
-- pt-BR name.
local function limited_metrics(k)
  return {
    { key = "min_recall", field = "recall", name = ("recall@%d"):format(k) },
    { key = "min_mrr", field = "mrr", name = "MRR" },
    { key = "min_ndcg", field = "ndcg", name = ("nDCG@%d"):format(k) },
    { key = "min_hit_rate", field = "hit_rate", name = "taxa de acerto" },
  }
end
M.THRESHOLD_KEYS = {}
for i, metric in ipairs(limited_metrics(1)) do M.THRESHOLD_KEYS[i] = metric.key end

-- Averages per-query scores and checks thresholds. thresholds: { min_recall,
-- min_mrr, min_ndcg, min_hit_rate } (nil = not checked). Returns { recall,
-- mrr, ndcg, hit_rate, passed, violations = { pt-BR text, ... } }.
function M.summarise(scores, k, thresholds)
  local n = #scores
  local sums = { recall = 0, reciprocal_rank = 0, ndcg = 0, hit = 0 }
  for _, s in ipairs(scores) do
    for key in pairs(sums) do
      local v = s[key]
      sums[key] = sums[key] + (v == true and 1 or tonumber(v) or 0)
    end
  end
  local function mean(key) return n > 0 and sums[key] / n or 0 end
  local out = { recall = mean("recall"), mrr = mean("reciprocal_rank"), ndcg = mean("ndcg"),
                hit_rate = mean("hit"), violations = {} }
  thresholds = thresholds or {}
  for _, metric in ipairs(limited_metrics(k)) do
    local limit, value = thresholds[metric.key], out[metric.field]
    if limit and value + EPS < limit then
      out.violations[#out.violations + 1] = ("%s %s < %s"):format(metric.name,
        format.format_number(value, 3), format.format_number(limit, 3))
    end
  end
  out.passed = #out.violations == 0
  return out
end

-- The p-th percentile (0 < p <= 100) of a sorted list, nearest-rank method
-- (the smallest sample with at least p% of the samples at or below it).
local function nearest_rank(sorted, p)
  return sorted[math.max(1, math.ceil(p / 100 * #sorted - EPS))]
end

-- Latency samples (ms) -> { p50, p95, p99, max, n }, or nil with no sample.
function M.percentiles(samples)
  if #samples == 0 then return nil end
  local sorted = {}
  for i, v in ipairs(samples) do sorted[i] = v end
  table.sort(sorted)
  return { p50 = nearest_rank(sorted, 50), p95 = nearest_rank(sorted, 95), p99 = nearest_rank(sorted, 99),
           max = sorted[#sorted], n = #sorted }
end

-- A limit as written in the golden file, in pt-BR ("250", "0,5").
local function limit_text(value)
  if value % 1 == 0 then return format.format_number(value, 0) end
  return (tostring(value):gsub("%.", ","))
end

-- Adds latency and the SLO verdict to a summary: summary.latency_ms (or
-- nil), summary.slo = { p95_ms, enforce, met }; a p95 above the SLO fails the
-- summary only when slo.enforce is true.
function M.apply_slo(summary, latency, slo)
  summary.latency_ms = latency
  summary.slo = { p95_ms = slo.p95_ms, enforce = slo.enforce, met = true }
  if not latency or latency.p95 <= slo.p95_ms + EPS then return summary end
  summary.slo.met = false
  if slo.enforce then
    summary.violations[#summary.violations + 1] = ("latência p95 %s ms > SLO %s ms")
      :format(format.format_number(latency.p95, 1), limit_text(slo.p95_ms))
    summary.passed = false
  end
  return summary
end

---------------------------------------------------------------------------
-- SQL (pgvector path; the real[] scan is in search_real)
---------------------------------------------------------------------------

-- Top-k by cosine distance; $1 = query vector text "[...]", $2 = k.
-- The query parameter is cast to the column's own type (column_type
-- "vector", the default, or "halfvec"): a vector parameter against a
-- halfvec column would cast the column instead, and no index would serve.
function M.pgvector_sql(quoted_table, column_type)
  column_type = column_type or "vector"
  if column_type ~= "vector" and column_type ~= "halfvec" then
    error(("validate.pgvector_sql: column_type deve ser \"vector\" ou \"halfvec\", recebi %q")
      :format(tostring(column_type)), 2)
  end
  return ("select entity_type, entity_id, chunk_index, 1 - (embedding <=> $1::%s) as score"
    .. " from %s where embedding is not null order by embedding <=> $1::%s limit $2")
    :format(column_type, quoted_table, column_type)
end

-- Session settings before the pgvector queries: { sql, param } pairs
-- (set_config keeps the value parameterised; SET cannot take parameters).
function M.pgvector_settings(probes, ef_search)
  local out = { { "select set_config('ivfflat.probes', $1, false)", tostring(probes) } }
  if ef_search then
    out[#out + 1] = { "select set_config('hnsw.ef_search', $1, false)", tostring(ef_search) }
  end
  return out
end

-- Keyset page of the real[] scan; $1 = last id seen, $2 = page size.
function M.scan_sql(quoted_table)
  return ("select id, entity_type, entity_id, chunk_index, embedding::text as embedding from %s"
    .. " where id > $1 and embedding is not null order by id limit $2"):format(quoted_table)
end

-- The query-time setting of each index method.
M.SETTING_OF = { ivfflat = "ivfflat.probes", hnsw = "hnsw.ef_search" }

-- The session's real values, read back after the settings and a first
-- query (which loads pgvector, so its settings exist).
M.SETTINGS_SQL = "select current_setting('ivfflat.probes', true) as probes,"
  .. " current_setting('hnsw.ef_search', true) as ef_search"

-- Inside a transaction: the planner skips indexes, so <=> is exact search.
M.EXACT_SETTINGS = {
  { "select set_config($1, 'off', true)", "enable_indexscan" },
  { "select set_config($1, 'off', true)", "enable_bitmapscan" },
}

-- EXPLAIN of the retrieval query, with the same parameters.
function M.explain_sql(quoted_table, column_type)
  return "explain (format json) " .. M.pgvector_sql(quoted_table, column_type)
end

-- The index an EXPLAIN (format json) plan scans, false when it scans none,
-- nil when the text is not such a plan.
function M.plan_index(plan_json)
  local ok, doc = pcall(json.decode, plan_json)
  if not ok or type(doc) ~= "table" or type(doc[1]) ~= "table" or type(doc[1].Plan) ~= "table" then
    return nil
  end
  local function walk(node)
    if node["Index Name"] then return node["Index Name"] end
    for _, child in ipairs(node.Plans or {}) do
      local name = walk(child)
      if name then return name end
    end
    return false
  end
  return walk(doc[1].Plan)
end

local function chunk_key(h)
  return entity_key(h.entity_type, h.entity_id) .. "\0" .. tostring(h.chunk_index)
end

-- Recall of one query's index result against the exact one (chunks). A
-- hit as near as the exact k-th counts too: chunks at the same distance
-- (repeated text) may come in any order at the cut.
local function query_index_recall(got, want)
  local wanted = {}
  for _, h in ipairs(want) do wanted[chunk_key(h)] = true end
  local cut = want[#want].score - 1e-6
  local found = 0
  for _, h in ipairs(got) do
    if wanted[chunk_key(h)] or h.score >= cut then found = found + 1 end
  end
  return math.min(found, #want) / #want
end

-- Mean over queries of the index recall against exact search; ann, exact:
-- hits per query. nil when no query has an exact result.
function M.index_recall(ann, exact)
  local total, n = 0, 0
  for i, want in ipairs(exact) do
    if #want > 0 then
      total = total + query_index_recall(ann[i] or {}, want)
      n = n + 1
    end
  end
  return n > 0 and total / n or nil
end

-- Did the planner scan the index for every query of a sweep row? If not,
-- (part of) the row is exact search and says nothing about the index.
local function index_used_by_all(row)
  return row.total > 0 and row.used == row.total
end

-- The smallest value of a sweep (rows in ascending value) whose index
-- recall meets target with the index used by every query, or nil.
function M.recommend(rows, target)
  for _, row in ipairs(rows) do
    if index_used_by_all(row) and row.index_recall and row.index_recall + EPS >= target then return row.value end
  end
  return nil
end

-- Why a sweep cannot run on this target, or nil. storage: "vector",
-- "halfvec" or "real[]"; indexes: { { name, method } } (valid vector
-- indexes on the table); sweep: { flag, method }. pt-BR text.
function M.sweep_problem(storage, indexes, sweep, table_name)
  if storage == "real[]" then
    return ("%s varre um ajuste de índice do pgvector, mas a coluna embedding de %s é real[]: sem a extensão "
      .. "vector não há índice ivfflat/hnsw (a busca é exata em C). Veja docs/indice-vetorial.md para migrar")
      :format(sweep.flag, table_name)
  end
  local other
  for _, ix in ipairs(indexes) do
    if ix.method == sweep.method then return nil end
    other = other or ix
  end
  if other then
    local right = other.method == "hnsw" and "--ef-search" or "--probes"
    return ("%s é ajuste de índice %s, mas o índice de %s é %s (%s): use %s"):format(sweep.flag, sweep.method,
      table_name, other.method, other.name, right)
  end
  return ("%s é ajuste de índice %s, mas %s não tem índice vetorial (a busca é exata, não há o que varrer): "
    .. "crie um com `ragops index create --method %s`"):format(sweep.flag, sweep.method, table_name, sweep.method)
end

---------------------------------------------------------------------------
-- Report
---------------------------------------------------------------------------

-- Cuts text to at most `width` characters (UTF-8 aware), one line.
local function clip(text, width)
  text = tostring(text):gsub("%s+", " "):gsub("^ ", ""):gsub(" $", "")
  local chars = {}
  for ch in text:gmatch("[%z\1-\127\194-\244][\128-\191]*") do chars[#chars + 1] = ch end
  if #chars <= width then return text, #chars end
  return table.concat(chars, "", 1, width - 1) .. "…", width
end
M.clip = clip

local function pad(text, width)
  local shown, len = clip(text, width)
  return shown .. string.rep(" ", width - len)
end

local function describe_hit(h)
  if not h then return "(nenhum resultado)" end
  local label = ("%s %s"):format(h.entity_type, h.entity_id)
  if (tonumber(h.chunk_index) or 0) > 0 then label = label .. (" #%d"):format(h.chunk_index) end
  return ("%s (%s)"):format(label, format.format_number(h.score, 3))
end

local function describe_ranks(score, missing)
  local parts = {}
  for i, rank in ipairs(score.ranks) do
    if rank then
      parts[#parts + 1] = tostring(rank)
    elseif missing and missing[i] then
      parts[#parts + 1] = "ausente"
    else
      parts[#parts + 1] = "-"
    end
  end
  return table.concat(parts, ",")
end

-- Header text of the search plan. plan: { storage ("vector", "halfvec" or
-- "real[]"), column (its type), rows (real[] scan), index = { name, method }
-- or nil, setting = { name, value } or nil, used, total (EXPLAIN counts) }.
function M.plan_label(plan)
  if plan.storage == "real[]" then
    return ("busca exata em C (real[], %s vetores; sem pgvector)"):format(format.format_count(plan.rows or 0))
  end
  if not plan.index then return ("pgvector (%s), busca exata (sem índice)"):format(plan.column) end
  local setting = plan.setting and (", %s = %s"):format(plan.setting.name, tostring(plan.setting.value)) or ""
  return ("pgvector (%s), índice %s (%s%s)"):format(plan.column, plan.index.name, plan.index.method, setting)
end

-- The EXPLAIN verdict of a plan with an index, or nil.
function M.plan_usage(plan)
  if not plan.index or not plan.total or plan.total == 0 then return nil end
  if plan.used == plan.total then
    return ("plano: índice usado (EXPLAIN, %d de %d consultas)"):format(plan.used, plan.total)
  end
  if plan.used == 0 then
    return ("plano: índice não usado (EXPLAIN: varredura sequencial nas %d consultas); "
      .. "o resultado é de busca exata, não do %s"):format(plan.total, plan.index.method)
  end
  return ("plano: índice usado em %d de %d consultas (EXPLAIN); nas outras, varredura sequencial (busca exata)")
    :format(plan.used, plan.total)
end

local function ms(value) return format.format_number(value, 1) .. " ms" end

-- Latency and SLO lines of a summary.
local function latency_lines(result, lines)
  local lat, slo = result.summary.latency_ms, result.summary.slo
  if not lat then return end
  local basis = result.latency_basis == "shared_scan"
    and "uma varredura exata serve todas as consultas; cada uma conta a varredura inteira"
    or "cada consulta sozinha, sem o embedding"
  lines[#lines + 1] = ("latência da busca: p50 %s   p95 %s   p99 %s   (%s)"):format(ms(lat.p50), ms(lat.p95),
    ms(lat.p99), basis)
  local target = ("SLO: p95 ≤ %s ms"):format(limit_text(slo.p95_ms))
  if result.k ~= 10 then target = target .. " (definido para top_k = 10)" end
  if slo.met then
    lines[#lines + 1] = target .. ": atendido"
  elseif slo.enforce then
    lines[#lines + 1] = ("%s: NÃO atendido (p95 %s)"):format(target, ms(lat.p95))
  else
    lines[#lines + 1] = ("%s: NÃO atendido (p95 %s); não reprova a validação (slo.enforce = false no golden)")
      :format(target, ms(lat.p95))
  end
end

local function limit_lines(result, lines)
  local limits, t, k = {}, result.thresholds, result.k
  for _, metric in ipairs(limited_metrics(k)) do
    local limit = t[metric.key]
    if limit then limits[#limits + 1] = ("%s ≥ %s"):format(metric.name, format.format_number(limit, 3)) end
  end
  if #limits > 0 then
    lines[#lines + 1] = "limites: " .. table.concat(limits, ", ")
  else
    lines[#lines + 1] = "limites: nenhum definido (min_recall/min_mrr/min_ndcg no arquivo ou --min-recall/--min-mrr)"
  end
end

-- pt-BR text report. result: { golden, k, plan, model, scores, summary,
-- thresholds, missing, missing_count, latency_basis, elapsed_s }.
function M.format(result)
  local lines = {}
  local golden = result.golden
  lines[#lines + 1] = ("Validação de qualidade: %s%s"):format(golden.file or "(golden)",
    golden.name and (" (" .. golden.name .. ")") or "")
  lines[#lines + 1] = ("  %d consultas, k = %d, modelo %s"):format(#golden.queries, result.k, tostring(result.model))
  lines[#lines + 1] = "  busca: " .. M.plan_label(result.plan)
  local usage = M.plan_usage(result.plan)
  if usage then lines[#lines + 1] = "  " .. usage end
  lines[#lines + 1] = ""
  local ranks, width = {}, 8
  for i in ipairs(golden.queries) do
    ranks[i] = describe_ranks(result.scores[i], result.missing and result.missing[i])
    width = math.min(24, math.max(width, select(2, clip(ranks[i], 24))))
  end
  lines[#lines + 1] = ("  %3s  %s  %s  %s"):format("#", pad("posição", width), pad("consulta", 44), "melhor resultado")
  for i, q in ipairs(golden.queries) do
    lines[#lines + 1] = ("  %3d  %s  %s  %s"):format(i, pad(ranks[i], width), pad(q.query, 44),
      describe_hit(result.scores[i].best))
  end
  lines[#lines + 1] = ""
  local sum = result.summary
  lines[#lines + 1] = ("recall@%d: %s   MRR: %s   nDCG@%d: %s   taxa de acerto: %s"):format(result.k,
    format.format_number(sum.recall, 3), format.format_number(sum.mrr, 3), result.k,
    format.format_number(sum.ndcg, 3), format.format_number(sum.hit_rate, 3))
  latency_lines(result, lines)
  limit_lines(result, lines)
  if sum.passed then
    lines[#lines + 1] = "resultado: aprovado"
  else
    lines[#lines + 1] = "resultado: REPROVADO (" .. table.concat(sum.violations, "; ") .. ")"
  end
  if result.missing_count and result.missing_count > 0 then
    lines[#lines + 1] = ("atenção: %d entidade(s) esperada(s) não existem na tabela (posição \"ausente\"); "
      .. "rode o backfill ou corrija o arquivo golden"):format(result.missing_count)
  end
  lines[#lines + 1] = ("tempo: %s"):format(format.format_duration(result.elapsed_s or 0))
  return table.concat(lines, "\n")
end

-- The pt-BR table of a sweep: { setting, target_recall, recommended, k,
-- rows = { { value, index_recall, recall, ndcg, latency_ms, used, total } },
-- exact = { latency_ms } }.
function M.format_sweep(sweep)
  local lines = { "", ("Varredura de %s: recall do índice contra a busca exata (mesmos vetores, índice desligado), "
    .. "recall@%d do golden e latência por consulta"):format(sweep.setting, sweep.k) }
  local header = { sweep.setting, "recall do índice", ("recall@%d"):format(sweep.k), ("nDCG@%d"):format(sweep.k),
                   "p50", "p95", "índice usado" }
  local rows = { header }
  for _, r in ipairs(sweep.rows) do
    rows[#rows + 1] = { tostring(r.value), format.format_number(r.index_recall, 3), format.format_number(r.recall, 3),
      format.format_number(r.ndcg, 3), ms(r.latency_ms.p50), ms(r.latency_ms.p95), ("%d de %d"):format(r.used, r.total) }
  end
  local e = sweep.exact
  rows[#rows + 1] = { "busca exata", "1,000", format.format_number(e.recall, 3), format.format_number(e.ndcg, 3),
                      ms(e.latency_ms.p50), ms(e.latency_ms.p95), "-" }
  local widths = {}
  for _, row in ipairs(rows) do
    for i, cell in ipairs(row) do widths[i] = math.max(widths[i] or 0, select(2, clip(cell, 40))) end
  end
  for _, row in ipairs(rows) do
    local cells = {}
    for i, cell in ipairs(row) do cells[i] = pad(cell, widths[i]) end
    lines[#lines + 1] = ("  " .. table.concat(cells, "  ")):gsub("%s+$", "")
  end
  for _, r in ipairs(sweep.rows) do
    if not index_used_by_all(r) then
      lines[#lines + 1] = ("atenção: com %s = %s o planejador não usou o índice em %d de %d consultas (varredura "
        .. "sequencial): essa linha mede busca exata e fica fora da recomendação"):format(sweep.setting,
        tostring(r.value), r.total - r.used, r.total)
    end
  end
  local target = format.format_number(sweep.target_recall, 2)
  if sweep.recommended then
    lines[#lines + 1] = ("recomendação: %s = %s, o menor valor com recall do índice ≥ %s")
      :format(sweep.setting, tostring(sweep.recommended), target)
  else
    lines[#lines + 1] = ("recomendação: nenhum valor testado chega a recall do índice ≥ %s com o índice em uso; "
      .. "teste valores maiores ou recrie o índice com mais listas/conexões"):format(target)
  end
  lines[#lines + 1] = "atenção: o resultado de um índice aproximado varia entre construções do mesmo índice (no demo, "
    .. "IVFFlat com probes = 10 deu recall@10 de 0,696 e 0,786 em duas construções); repita a varredura depois de "
    .. "recriar o índice"
  return table.concat(lines, "\n")
end

local function null_or(value) if value == nil then return cjson.null end return value end

local function latency_json(lat)
  if not lat then return cjson.null end
  return { p50 = lat.p50, p95 = lat.p95, p99 = lat.p99, max = lat.max, queries = lat.n }
end

local function plan_json(plan)
  return {
    description = M.plan_label(plan), storage = plan.storage, column = plan.column,
    index = plan.index and plan.index.name or cjson.null, method = plan.index and plan.index.method or cjson.null,
    setting = plan.setting and plan.setting.name or cjson.null,
    setting_value = plan.setting and tonumber(plan.setting.value) or cjson.null,
    index_used_queries = null_or(plan.index and plan.used), explained_queries = null_or(plan.index and plan.total),
  }
end

local function sweep_json(sweep)
  local rows = {}
  for i, r in ipairs(sweep.rows) do
    rows[i] = { value = r.value, index_recall = null_or(r.index_recall), recall_at_k = r.recall, mrr = r.mrr,
                ndcg = r.ndcg, latency_ms = latency_json(r.latency_ms), index_used_queries = r.used,
                explained_queries = r.total }
  end
  return { setting = sweep.setting, target_recall = sweep.target_recall, recommended = null_or(sweep.recommended),
           rows = rows, exact = { recall_at_k = sweep.exact.recall, ndcg = sweep.exact.ndcg,
                                  latency_ms = latency_json(sweep.exact.latency_ms) } }
end

local function per_query_json(result)
  local out = {}
  for i, q in ipairs(result.golden.queries) do
    local s = result.scores[i]
    local ranks, expect = {}, {}
    for j, e in ipairs(q.expect) do
      expect[j] = { entity_type = e.entity_type, entity_id = e.entity_id,
                    missing = (result.missing and result.missing[i] and result.missing[i][j]) or false }
      ranks[j] = s.ranks[j] or cjson.null
    end
    local top = {}
    for j, h in ipairs(s.entities) do
      top[j] = { entity_type = h.entity_type, entity_id = h.entity_id, chunk_index = h.chunk_index,
                 score = h.score }
    end
    out[i] = {
      query = q.query, note = q.note, expect = expect, ranks = ranks, found = s.found,
      recall = s.recall, reciprocal_rank = s.reciprocal_rank, ndcg = s.ndcg, hit = s.hit,
      first_rank = s.first_rank or cjson.null, top = array(top),
      latency_ms = null_or(result.latencies and result.latencies[i]),
    }
  end
  return out
end

-- JSON report (stable English keys).
function M.json(result)
  local t, sum = result.thresholds, result.summary
  return encode({
    golden = result.golden.file, name = result.golden.name, k = result.k,
    queries = #result.golden.queries, recall_at_k = sum.recall, mrr = sum.mrr, ndcg = sum.ndcg,
    hit_rate = sum.hit_rate, passed = sum.passed, violations = array(sum.violations),
    thresholds = { min_recall = null_or(t.min_recall), min_mrr = null_or(t.min_mrr),
                   min_ndcg = null_or(t.min_ndcg), min_hit_rate = null_or(t.min_hit_rate) },
    latency_ms = latency_json(sum.latency_ms), latency_basis = null_or(result.latency_basis),
    slo = sum.slo and { p95_ms = sum.slo.p95_ms, enforce = sum.slo.enforce, met = sum.slo.met } or cjson.null,
    storage = result.plan.storage, plan = plan_json(result.plan), rows_scanned = null_or(result.plan.rows),
    model = result.model, elapsed_s = result.elapsed_s or 0, per_query = per_query_json(result),
    sweep = result.sweep and sweep_json(result.sweep) or nil,
  })
end

---------------------------------------------------------------------------
-- Database and provider side (runs inside the CLI coroutine)
---------------------------------------------------------------------------

-- Embeds the golden queries; returns a list of { batch, first } (first =
-- index of the batch's first query) or nil, err.
function M.embed_queries(client, queries, sleep, log)
  local out = {}
  local per = math.min(M.DEFAULTS.queries_per_request, client.limits and client.limits.max_inputs or math.huge)
  for first = 1, #queries, per do
    local texts = {}
    for i = first, math.min(#queries, first + per - 1) do texts[#texts + 1] = queries[i].query end
    local batch, err = retry.call(M.DEFAULTS.retry, sleep, function()
      return client:embed(texts)
    end, function(attempt, delay, e)
      log.warn("falha temporária no provedor de embeddings (%s); tentativa %d, nova tentativa em %d ms",
        tostring(e), attempt, delay)
    end)
    if not batch then return nil, err end
    out[#out + 1] = { batch = batch, first = first }
  end
  return out
end

-- Exact search on real[]: one keyset scan, every row scored in C against
-- every query. Returns hits per query (best first) and rows scanned, or nil, err.
function M.search_real(conn, quoted_table, batches, k, nqueries)
  local searchers = {}
  for i, b in ipairs(batches) do searchers[i] = vecsearch.new(b.batch, k) end
  local types, ids, chunks = {}, {}, {}
  local last_id, n = 0, 0
  local sql = M.scan_sql(quoted_table)
  while true do
    local rows, err = conn:query(sql, last_id, M.DEFAULTS.page_size)
    if not rows then return nil, err end
    for _, row in ipairs(rows) do
      n = n + 1
      types[n], ids[n], chunks[n] = row.entity_type, row.entity_id, row.chunk_index
      for _, s in ipairs(searchers) do
        local ok, perr = s:add(n, row.embedding)
        if not ok then
          return nil, ("documento id %s (%s %s): %s"):format(tostring(row.id), row.entity_type, row.entity_id, perr)
        end
      end
      last_id = row.id
    end
    if #rows < M.DEFAULTS.page_size then break end
  end
  local hits = {}
  for bi, b in ipairs(batches) do
    for j = 1, b.batch:count() do
      local list = {}
      for r, h in ipairs(searchers[bi]:results(j)) do
        list[r] = { entity_type = types[h.label], entity_id = ids[h.label],
                    chunk_index = tonumber(chunks[h.label]) or 0, score = h.score }
      end
      hits[b.first + j - 1] = list
    end
  end
  assert(#hits == nqueries)
  return hits, n
end

-- Calls fn(i, vector_text) for each golden query in order; stops at the
-- first nil, err and returns it.
local function each_vector(batches, fn)
  for _, b in ipairs(batches) do
    for j = 1, b.batch:count() do
      local ok, err = fn(b.first + j - 1, vecsearch.vector_literal(b.batch, j))
      if not ok then return nil, err end
    end
  end
  return true
end

-- Runs { sql, param } pairs (pgvector_settings, EXACT_SETTINGS). Returns
-- true or nil, err.
function M.apply_settings(conn, settings)
  for _, setting in ipairs(settings) do
    local rows, err = conn:query(setting[1], setting[2])
    if not rows then return nil, err end
  end
  return true
end

-- pgvector search: one query per golden query, each one's round trip timed
-- alone with now() (monotonic ms). Returns hits per query and latencies
-- (ms per query), or nil, err.
function M.search_pgvector(conn, quoted_table, column_type, batches, k, now)
  local sql = M.pgvector_sql(quoted_table, column_type)
  local hits, latencies = {}, {}
  local ok, err = each_vector(batches, function(i, vector)
    local started = now()
    local rows, qerr = conn:query(sql, vector, k)
    latencies[i] = now() - started
    if not rows then return nil, qerr end
    local list = {}
    for r, row in ipairs(rows) do
      list[r] = { entity_type = row.entity_type, entity_id = row.entity_id,
                  chunk_index = tonumber(row.chunk_index) or 0, score = tonumber(row.score) or 0 }
    end
    hits[i] = list
    return true
  end)
  if not ok then return nil, err end
  return hits, latencies
end

-- EXPLAIN of every golden query's retrieval with the session's settings.
-- Returns { used (queries whose plan scans an index), total, index (the
-- index name most used, or nil) } or nil, err.
function M.explain_queries(conn, quoted_table, column_type, batches, k)
  local sql = M.explain_sql(quoted_table, column_type)
  local out, times = { used = 0, total = 0 }, {}
  local ok, err = each_vector(batches, function(_, vector)
    local rows, qerr = conn:query(sql, vector, k)
    if not rows then return nil, qerr end
    local name = M.plan_index(rows[1] and rows[1]["QUERY PLAN"])
    out.total = out.total + 1
    if name then
      out.used = out.used + 1
      times[name] = (times[name] or 0) + 1
      if not out.index or times[name] > times[out.index] then out.index = name end
    end
    return true
  end)
  if not ok then return nil, err end
  return out
end

-- Exact search through pgvector: the same query in a transaction whose
-- planner may not scan an index. Returns hits and latencies, or nil, err.
function M.search_exact_pgvector(conn, quoted_table, column_type, batches, k, now)
  local began, err = conn:query("begin")
  if not began then return nil, err end
  local hits, latencies
  local set, serr = M.apply_settings(conn, M.EXACT_SETTINGS)
  if set then hits, latencies = M.search_pgvector(conn, quoted_table, column_type, batches, k, now) end
  if not hits then
    conn:query("rollback")
    return nil, serr or latencies
  end
  local done, cerr = conn:query("commit")
  if not done then return nil, cerr end
  return hits, latencies
end

-- Expected entities absent from the table: missing[i][j] = true.
function M.find_missing(conn, quoted_table, queries)
  local types, ids, seen = {}, {}, {}
  for _, q in ipairs(queries) do
    for _, e in ipairs(q.expect) do
      if not seen[e.entity_type] then types[#types + 1] = e.entity_type; seen[e.entity_type] = true end
      if not seen["\0" .. e.entity_id] then ids[#ids + 1] = e.entity_id; seen["\0" .. e.entity_id] = true end
    end
  end
  local rows, err = conn:query(("select distinct entity_type, entity_id from %s"
    .. " where entity_type = any($1::text[]) and entity_id = any($2::text[])"):format(quoted_table), types, ids)
  if not rows then return nil, err end
  local present = {}
  for _, row in ipairs(rows) do present[entity_key(row.entity_type, row.entity_id)] = true end
  local missing, count = {}, 0
  for i, q in ipairs(queries) do
    for j, e in ipairs(q.expect) do
      if not present[entity_key(e.entity_type, e.entity_id)] then
        missing[i] = missing[i] or {}
        missing[i][j] = true
        count = count + 1
      end
    end
  end
  return missing, count
end

return M
