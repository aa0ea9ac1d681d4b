-- ragops.validate: the library of `ragops validate GOLDEN.lua` (the command
-- itself is ragops.cmd.validate), semantic quality of the
-- index measured against a golden query set: each query is embedded with the
-- configured provider, its top-k chunks are retrieved (pgvector `<=>` with
-- ivfflat.probes, or an exact cosine scan in C over real[]), hits are
-- deduplicated per entity, and recall@k, MRR and hit rate are compared with
-- the thresholds. Exit codes: 0 aprovado; 1 qualidade abaixo do limite;
-- 2 uso ou arquivo golden inválido; 4 banco ou provedor inalcançável.
--
-- Pure parts (golden validation, metrics, SQL text, formatting) call no C
-- module and are unit-tested in tests/lua/validate_spec.lua.
local cjson = require "cjson"
local plan_mod = require "ragops.plan"
local report = require "ragops.report"
local retry = require "ragops.retry"
local sandbox = require "ragops.sandbox"
local vecsearch = require "ragops.vecsearch"

local M = {}

M.EXIT = { ok = 0, below_threshold = 1, usage = 2, unreachable = 4 }

M.DEFAULTS = {
  k = 10,
  probes = 10,
  page_size = 1000,         -- rows per keyset page of the real[] scan
  queries_per_request = 128, -- golden queries per embedding request
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

local ROOT_KEYS = { "name", "description", "k", "min_recall", "min_mrr", "min_hit_rate", "queries", "compare" }
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

-- Validates the table returned by a golden file. Returns a normalised copy:
-- { name, k, min_recall, min_mrr, min_hit_rate, queries = { { query, note,
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
  local out = { name = value.name, description = value.description, compare = value.compare } -- compare: ragops.model
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
  for _, key in ipairs({ "min_recall", "min_mrr", "min_hit_rate" }) do
    out[key] = check_fraction(c, c.where(nil, key), key, value[key])
  end
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

-- Runs a golden file (text only, in ragops.sandbox like plans) and returns
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

-- Scores one query. hits: the top-k chunks, best first, each
-- { entity_type, entity_id, chunk_index, score }. Chunks of the same entity
-- count once, at the best rank; ranks are 1-based positions among distinct
-- entities. Returns { ranks (per expectation, false when not found), found,
-- recall, reciprocal_rank, hit, first_rank, best, entities }.
function M.score_query(query, hits)
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
    reciprocal_rank = first and 1 / first or 0, hit = first ~= nil, first_rank = first,
    best = hits[1], entities = entities,
  }
end

-- Averages per-query scores and checks thresholds. thresholds: { min_recall,
-- min_mrr, min_hit_rate } (nil = not checked). Returns { recall_at_k, mrr,
-- hit_rate, passed, violations = { pt-BR text, ... } }.
function M.summarise(scores, k, thresholds)
  local n = #scores
  local recall, rr, hits = 0, 0, 0
  for _, s in ipairs(scores) do
    recall = recall + s.recall
    rr = rr + s.reciprocal_rank
    if s.hit then hits = hits + 1 end
  end
  local out = {
    recall_at_k = n > 0 and recall / n or 0,
    mrr = n > 0 and rr / n or 0,
    hit_rate = n > 0 and hits / n or 0,
    violations = {},
  }
  thresholds = thresholds or {}
  local EPS = 1e-9
  local checks = {
    { "min_recall", out.recall_at_k, ("recall@%d"):format(k) },
    { "min_mrr", out.mrr, "MRR" },
    { "min_hit_rate", out.hit_rate, "taxa de acerto" },
  }
  for _, check in ipairs(checks) do
    local limit = thresholds[check[1]]
    if limit and check[2] + EPS < limit then
      out.violations[#out.violations + 1] = ("%s %s < %s"):format(check[3],
        report.format_number(check[2], 3), report.format_number(limit, 3))
    end
  end
  out.passed = #out.violations == 0
  return out
end

---------------------------------------------------------------------------
-- SQL (pgvector path; the real[] scan is in search_real)
---------------------------------------------------------------------------

-- Top-k by cosine distance; $1 = query vector text "[...]", $2 = k.
function M.pgvector_sql(quoted_table)
  return ("select entity_type, entity_id, chunk_index, 1 - (embedding <=> $1::vector) as score"
    .. " from %s where embedding is not null order by embedding <=> $1::vector limit $2"):format(quoted_table)
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
  return ("%s (%s)"):format(label, report.format_number(h.score, 3))
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

-- pt-BR text report. result: { golden, k, storage, rows, model, scores,
-- summary, thresholds, missing, elapsed_s }.
function M.format(result)
  local lines = {}
  local golden = result.golden
  lines[#lines + 1] = ("Validação de qualidade: %s%s"):format(golden.file or "(golden)",
    golden.name and (" (" .. golden.name .. ")") or "")
  lines[#lines + 1] = ("  %d consultas, k = %d, %s, modelo %s"):format(#golden.queries, result.k,
    result.storage_label or result.storage, tostring(result.model))
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
  lines[#lines + 1] = ("recall@%d: %s   MRR: %s   taxa de acerto: %s"):format(result.k,
    report.format_number(sum.recall_at_k, 3), report.format_number(sum.mrr, 3),
    report.format_number(sum.hit_rate, 3))
  local limits = {}
  local t = result.thresholds
  if t.min_recall then limits[#limits + 1] = ("recall@%d ≥ %s"):format(result.k, report.format_number(t.min_recall, 3)) end
  if t.min_mrr then limits[#limits + 1] = ("MRR ≥ %s"):format(report.format_number(t.min_mrr, 3)) end
  if t.min_hit_rate then limits[#limits + 1] = ("taxa de acerto ≥ %s"):format(report.format_number(t.min_hit_rate, 3)) end
  if #limits > 0 then
    lines[#lines + 1] = "limites: " .. table.concat(limits, ", ")
  else
    lines[#lines + 1] = "limites: nenhum definido (min_recall/min_mrr no arquivo ou --min-recall/--min-mrr)"
  end
  if sum.passed then
    lines[#lines + 1] = "resultado: aprovado"
  else
    lines[#lines + 1] = "resultado: REPROVADO (" .. table.concat(sum.violations, "; ") .. ")"
  end
  if result.missing_count and result.missing_count > 0 then
    lines[#lines + 1] = ("atenção: %d entidade(s) esperada(s) não existem na tabela (posição \"ausente\"); "
      .. "rode o backfill ou corrija o arquivo golden"):format(result.missing_count)
  end
  lines[#lines + 1] = ("tempo: %s"):format(report.format_duration(result.elapsed_s or 0))
  return table.concat(lines, "\n")
end

-- JSON report (stable English keys).
function M.json(result)
  local per_query = {}
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
    per_query[i] = {
      query = q.query, note = q.note, expect = expect, ranks = ranks, found = s.found,
      recall = s.recall, reciprocal_rank = s.reciprocal_rank, hit = s.hit,
      first_rank = s.first_rank or cjson.null, top = array(top),
    }
  end
  local t = result.thresholds
  return encode({
    golden = result.golden.file, name = result.golden.name, k = result.k,
    queries = #result.golden.queries, recall_at_k = result.summary.recall_at_k,
    mrr = result.summary.mrr, hit_rate = result.summary.hit_rate, passed = result.summary.passed,
    violations = array(result.summary.violations),
    thresholds = { min_recall = t.min_recall or cjson.null, min_mrr = t.min_mrr or cjson.null,
                   min_hit_rate = t.min_hit_rate or cjson.null },
    storage = result.storage, rows_scanned = result.rows or cjson.null, model = result.model,
    elapsed_s = result.elapsed_s or 0, per_query = per_query,
  })
end

---------------------------------------------------------------------------
-- Database and provider side (runs inside the CLI coroutine)
---------------------------------------------------------------------------

-- Embeds the golden queries; returns a list of { batch, first } (first =
-- index of the batch's first query) or nil, err.
function M.embed_queries(client, queries, sleep, log)
  local out = {}
  local per = M.DEFAULTS.queries_per_request
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

-- pgvector search: one indexed query per golden query.
function M.search_pgvector(conn, quoted_table, batches, k, opts)
  for _, setting in ipairs(M.pgvector_settings(opts.probes, opts.ef_search)) do
    local rows, err = conn:query(setting[1], setting[2])
    if not rows then return nil, err end
  end
  local sql = M.pgvector_sql(quoted_table)
  local hits = {}
  for _, b in ipairs(batches) do
    for j = 1, b.batch:count() do
      local rows, err = conn:query(sql, vecsearch.vector_literal(b.batch, j), k)
      if not rows then return nil, err end
      local list = {}
      for r, row in ipairs(rows) do
        list[r] = { entity_type = row.entity_type, entity_id = row.entity_id,
                    chunk_index = tonumber(row.chunk_index) or 0, score = tonumber(row.score) or 0 }
      end
      hits[b.first + j - 1] = list
    end
  end
  return hits
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
