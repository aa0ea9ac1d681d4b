-- store_conformance_spec.lua: the SAME behavioural checks of the Store
-- contract (ragops.store.contract) against its three implementations: the
-- PostgreSQL store, the fake (ragops.testing) and the dry-run store (whose
-- writes record and write nothing: counts come back, the database is left
-- as it was). The checks run inside the ragops binary (the real C modules:
-- libpq, COPY, fingerprints), through a stand-in for ragops.cli that runs
-- this file; busted reads one result per implementation and check.
--
-- Two modes, one file: under busted (describe exists) it is the spec; run
-- by the binary (global RAGOPS_HOME, args: kind, url, coltype, dim) it is
-- the driver and prints `RESULT <kind> <check> <ok|why>` lines.

-- The checks, in order (they share one run and build on each other).
local CHECKS = { "métodos", "colunas", "execução: iniciar e retomar", "ler uma página", "censo e chaves",
                 "gravar documentos", "caminho rápido", "falhas", "sem documento", "órfãos e remoções",
                 "cobrança", "término", "sessão" }

local ROWS = {
  { id = 1, body = "um", u = "2024-01-01 00:00:00+00" }, { id = 2, body = "dois", u = "2024-01-02 00:00:00+00" },
  { id = 3, body = "três", u = "2024-01-03 00:00:00+00" }, { id = 4, body = "quatro", u = "2024-01-04 00:00:00+00" },
  { id = 5, body = "cinco", u = "2024-01-05 00:00:00+00" },
}

if describe == nil and RAGOPS_HOME then
  ---------------------------------------------------------------------------
  -- The driver, inside the binary.
  ---------------------------------------------------------------------------
  local cjson = require "cjson"
  local contract = require "ragops.store.contract"
  local key_text = require("ragops.util.keys").text
  local kind, url, coltype, dim = ...
  dim = tonumber(dim)
  local SOURCE = { entity_type = "conf", sql = "select id, body, u from conf_items", key = "id", updated_at = "u" }
  local PLAN, PARAMS, OWNER = "conformidade", '{"a": 1}', "dono"

  local function show(v)
    local ok, text = pcall(cjson.encode, v)
    return ok and text or tostring(v)
  end
  local function eq(want, got, what)
    if want ~= got then error(("%s: esperado %s, obtido %s"):format(what, show(want), show(got)), 2) end
  end
  local function same(want, got, what)
    if show(want) ~= show(got) then error(("%s: esperado %s, obtido %s"):format(what, show(want), show(got)), 2) end
  end

  -- The store of `kind`, and how to make a batch of n vectors for it.
  local function open()
    local s = require("ragops.util.sched").real()
    if kind == "fake" then
      local testing = require "ragops.testing"
      local rows = {}
      for i, r in ipairs(ROWS) do rows[i] = { id = r.id, body = r.body, u = r.u } end
      return testing.store { sources = { conf = rows } }, testing.vecbatch
    end
    -- The real stores take the engine's own vector batches: embedded by the
    -- test embed-server through the production client (ragops.embed).
    local client = require("ragops.embed").client {
      url = os.getenv("RAGOPS_EMBED_URL"), model = "m", dimensions = dim, expected_dim = dim, timeout_ms = 30000,
    }
    local function embedded(n)
      local texts = {}
      for i = 1, n do texts[i] = "vetor " .. i end
      return assert(client:embed(texts))
    end
    if kind == "pg" then
      local pool = require("ragops.store.pool").new { conninfo = url, sched = s, size = 4 }
      return require("ragops.store.pg").new { pool = pool, table = "rag_documents", embedding_type = coltype,
                                               model = "m", dim = dim }, embedded
    end
    local dryrun = require "ragops.run.dryrun"
    local cfg = { database = { url = url, table = "rag_documents" }, provider = { model = "m", dim = dim } }
    local conn = assert(dryrun.open_read_only(cfg))
    return dryrun.dry_store(conn, s, cfg, coltype, dryrun.new_tally()), embedded
  end

  local store, vecbatch = open()
  local writes = kind ~= "dry" -- the dry-run store records and writes nothing
  local h = { fps = {} }

  local function batch(n)
    if kind ~= "fake" then return vecbatch(n) end
    local vectors = {}
    for i = 1, n do
      vectors[i] = {}
      for j = 1, dim do vectors[i][j] = (i + j) / (dim + n) end
    end
    return vecbatch(vectors)
  end

  local function doc(id, vec, content)
    local row = ROWS[tonumber(id)] or { u = nil }
    return { entity_type = "conf", entity_id = id, chunk_index = 0, content = content or ("texto " .. id),
             content_hash = "h" .. id, metadata = cjson.encode({ n = tonumber(id) }), embedding_model = "m",
             source_updated_at = row.u, source_hash = h.fps[id], vec = vec }
  end

  local seq = 0
  -- A unit for write_unit: the run's, with the next checkpoint.
  local function unit(fields)
    seq = seq + 1
    local u = { entity_type = "conf", run_id = h.run_id, parts = {},
                chunk_counts = { entity_ids = {}, counts = {} },
                refresh = { entity_ids = {}, chunk_indexes = {}, metadata = {}, updated_at = {}, fps = {} },
                fingerprints = { entity_ids = {}, fps = {} }, failures = {}, resolved_ids = {},
                checkpoint = { seq = seq, after = tostring(seq), stats = { processed = 1 }, covered = {},
                               includes_unit = true } }
    for k, v in pairs(fields) do u[k] = v end
    return u
  end

  local function ids_of(rows)
    local out = {}
    for i, r in ipairs(rows) do out[i] = key_text(type(r) == "table" and r.id or r) end
    return out
  end

  local run = {}
  run["métodos"] = function()
    for _, name in ipairs(contract.METHODS) do eq("function", type(store[name]), name) end
  end
  run["colunas"] = function()
    same(contract.document_column_names(), require("ragops.pg").DOCUMENT_COLUMNS, "pg.DOCUMENT_COLUMNS")
  end
  run["execução: iniciar e retomar"] = function()
    local id, cp, resumed = store:start_run(PLAN, PARAMS, false, false, false, OWNER)
    eq("number", type(id), "start_run")
    eq("table", type(cp), "checkpoint")
    eq(false, resumed, "resumed")
    if writes then
      local again, _, code = store:start_run(PLAN, PARAMS, false, false, false, "outro")
      eq(nil, again, "a mesma execução, já com dono")
      eq("busy", code, "código")
      local none, _, ncode = store:start_run(PLAN, '{"b": 2}', false, true, false, OWNER)
      eq(nil, none, "--resume sem execução")
      eq("busy", ncode, "código")
    end
    eq("number", type(store:finish_run(id, "interrupted", nil)), "finish_run interrupted")
    local id2, _, resumed2 = store:start_run(PLAN, PARAMS, false, false, false, OWNER)
    if writes then
      eq(id, id2, "retomada")
      eq(true, resumed2, "resumed")
    end
    h.run_id = id2
  end
  run["ler uma página"] = function()
    same({ "1", "2" }, ids_of(assert(store:fetch_page(SOURCE, {}, nil, 2))), "primeira página")
    same({ "3", "4" }, ids_of(assert(store:fetch_page(SOURCE, {}, "2", 10, "4"))), "(2, 4]")
    same({ "5" }, ids_of(assert(store:fetch_page(SOURCE, { entity_ids = { "5" } }, nil, 10))), "por id")
  end
  run["censo e chaves"] = function()
    local census = assert(store:key_census(SOURCE, {}))
    eq(5, tonumber(census.rows), "linhas")
    eq(nil, census.duplicate, "chave repetida")
    same({ ["1"] = true }, assert(store:present_keys(SOURCE, { "1", "99" })), "present_keys")
  end
  run["gravar documentos"] = function()
    local rows, _, _, fps = store:fetch_page_existing(SOURCE, {}, nil, 10, nil, { seed = "s" })
    eq(5, #assert(rows), "linhas da página")
    if writes then for _, id in ipairs({ "1", "2" }) do eq("string", type(fps[id]), "impressão de " .. id) end end
    h.fps = fps or {}
    local result = assert(store:write_unit(unit({
      parts = { { docs = { doc("1", 1), doc("2", 2) }, batch = batch(2) } },
      usage = { model = "m", documents = 2, chunks = 2, bytes = 6, chars = 6, tokens = 3 } })))
    eq(2, result.written, "written")
    eq(0, result.pruned, "pruned")
    eq(0, result.refreshed, "refreshed")
    local existing = assert(store:existing_hashes("conf", { "1", "2", "3" }))
    eq(writes and "h1" or nil, existing["1"] and existing["1"].hashes[0], "hash de 1")
    eq(nil, existing["3"], "3 não gravado")
    eq(writes and 2 or 0, tonumber(store:indexed_entities("conf")), "indexed_entities")
    local committed = assert(store:committed_totals(h.run_id))
    eq(writes and 1 or nil, committed.conf and committed.conf.processed, "committed_totals")
  end
  run["caminho rápido"] = function()
    local rows, existing = store:fetch_page_existing(SOURCE, {}, nil, 10, nil, nil)
    eq(5, #assert(rows), "linhas")
    if writes then
      eq(1, existing["1"].count, "count")
      eq(true, existing["1"].same_updated_at[0], "same_updated_at")
      eq(1, existing["1"].metadata[0].n, "metadata")
      eq(nil, existing["3"], "3 sem nada guardado")
    else
      eq(nil, existing, "existing (a store pede existing_hashes)")
    end
    local set = assert(store:load_fingerprints("conf"))
    eq(writes and 2 or 0, set:stats().members, "impressões carregadas")
    local fast = assert(store:fetch_page_existing(SOURCE, {}, nil, 10, nil,
      { seed = "s", set = set, without_stored = true, target_empty = false }))
    eq(5, #fast, "linhas")
    eq(writes and 2 or nil, fast.skipped, "puladas como chave")
    eq(writes and "number" or "table", type(fast[1]), "linha 1")
    if writes then eq(0, set:stats().unseen, "todas vistas") end
    local ex = {}
    eq(true, store:add_stored("conf", { "1", "3" }, ex, { ROWS[1].u, "" }), "add_stored")
    eq(writes and 1 or nil, ex["1"] and ex["1"].count, "add_stored de 1")
    eq(nil, ex["3"], "add_stored de 3")
  end
  run["falhas"] = function()
    assert(store:write_unit(unit({ failures = { { entity_type = "conf", entity_id = "3", chunk_index = 0,
      error_class = "transient", http_status = 500, message = "falhou", attempts = 1 } } })))
    eq(writes and 1 or 0, store:open_failures(h.run_id), "open_failures")
    local _, existing = store:fetch_page_existing(SOURCE, {}, nil, 10, nil, nil)
    if writes then eq(true, existing["3"].open_failure, "open_failure na página") end
    local result = assert(store:write_unit(unit({ resolved_ids = { "3" } })))
    eq(writes and 1 or 0, result.resolved, "resolved")
    eq(0, store:open_failures(h.run_id), "resolvida")
  end
  run["sem documento"] = function()
    assert(store:write_unit(unit({ no_document = { entity_ids = { "4", "99" }, updated_at = { ROWS[4].u, "" } } })))
    eq(writes, store:has_no_document("conf"), "has_no_document")
    same(writes and { ["4"] = true } or {}, assert(store:no_document_markers("conf", { "4" }, { ROWS[4].u })),
      "no_document_markers")
    eq(writes and 1 or 0, tonumber(store:delete_orphan_markers(SOURCE)), "marcas de ausentes apagadas")
  end
  run["órfãos e remoções"] = function()
    assert(store:write_unit(unit({ parts = { { docs = { doc("98", 1) }, batch = batch(1) } } })))
    eq(writes and 1 or 0, tonumber(store:delete_orphans(SOURCE)), "delete_orphans")
    eq(writes and 1 or 0, tonumber(store:delete_entities(h.run_id, "conf", { "2" })), "delete_entities")
    same({}, assert(store:existing_hashes("conf", { "2", "98" })), "nada de 2 e 98")
  end
  run["cobrança"] = function()
    eq(true, store:record_dropped(h.run_id, "conf", { model = "m", chunks = 1, bytes = 4, chars = 4, tokens = 7 }),
      "record_dropped")
    eq(writes and 10 or 0, tonumber(store:run_billed_tokens(h.run_id)), "run_billed_tokens")
  end
  run["término"] = function()
    eq("number", type(store:finish_run(h.run_id, "done", '{"ok": true}')), "finish_run")
    local id, _, resumed = store:start_run(PLAN, PARAMS, false, false, false, OWNER)
    eq("number", type(id), "nova execução")
    eq(false, resumed, "uma execução concluída não é retomada")
    if writes then eq(true, id ~= h.run_id, "outro id") end
    eq("number", type(store:finish_run(id, "done", "{}")), "finish_run")
  end
  run["sessão"] = function()
    if kind == "fake" then
      eq(false, (pcall(store.query, store, "select 1 as n")), "a store falsa recusa SQL")
    else
      eq(1, assert(store:query("select 1 as n"))[1].n, "query")
      eq(7, assert(store:transaction(function(step) return step("select 7 as n")[1].n end)), "transaction")
    end
    store:wind_down()
  end

  for _, name in ipairs(CHECKS) do
    local ok, err = pcall(run[name])
    io.write(("RESULT %s %s\t%s\n"):format(kind, name, ok and "ok" or tostring(err):gsub("\n", " ")))
  end
  io.stdout:flush()
  return 0
end

-------------------------------------------------------------------------------
-- The spec, under busted.
-------------------------------------------------------------------------------
local H = require "tests.integration.helper"

-- A RAGOPS_HOME whose ragops.cli runs a Lua file (the driver) with the
-- source tree's modules.
local function shim_home()
  local dir = os.tmpname()
  os.remove(dir)
  H.sh("mkdir -p " .. H.q(dir .. "/lua/ragops/cli"))
  local f = assert(io.open(dir .. "/lua/ragops/cli/init.lua", "w"))
  f:write(([[
local src = %q
package.path = src .. "/lua/?.lua;" .. src .. "/lua/?/init.lua;" .. src .. "/?.lua;" .. package.path
return { main = function(script, ...) return assert(loadfile(script))(...) end }
]]):format(H.source_dir))
  f:close()
  return dir
end

-- A database with conf_items (ROWS) and the engine's tables.
local function database(name)
  local url = H.fresh_db(name)
  local values = {}
  for i, r in ipairs(ROWS) do values[i] = ("(%d, '%s', '%s')"):format(r.id, r.body, r.u) end
  H.psql(url, "create table conf_items(id int primary key, body text not null, u timestamptz)")
  H.psql(url, "insert into conf_items values " .. table.concat(values, ", "))
  local code, _, err = H.ragops(url, "migrate")
  assert(code == 0, "ragops migrate falhou: " .. err)
  return url
end

H.each_storage(function()
  describe("conformidade da Store (store/contract.lua)", function()
    local home, results = nil, {}

    -- The driver's results for kind: { [check] = "ok" | why }.
    local function results_of(kind)
      if results[kind] then return results[kind] end
      home = home or shim_home()
      local url = kind ~= "fake" and database("ragops_it_conformance_" .. kind) or ""
      local coltype = kind ~= "fake" and H.column_type(url) or "real[]"
      local dim = tonumber(coltype:match("%((%d+)%)")) or 4
      local code, out, err = H.sh(("RAGOPS_HOME=%s %s %s %s %s %s %d"):format(H.q(home), H.q(H.bin),
        H.q(H.source_dir .. "/tests/integration/store_conformance_spec.lua"), kind, H.q(url), H.q(coltype), dim))
      local got = {}
      for check, outcome in out:gmatch("RESULT " .. kind .. " ([^\t]+)\t([^\n]*)") do got[check] = outcome end
      got[0] = ("código %s; saída de erro: %s"):format(tostring(code), err)
      results[kind] = got
      return got
    end

    teardown(function() if home then H.sh("rm -rf " .. H.q(home)) end end)

    for _, kind in ipairs({ "pg", "fake", "dry" }) do
      for _, check in ipairs(CHECKS) do
        it(("[%s] %s"):format(kind, check), function()
          local got = results_of(kind)
          assert.are.equal("ok", got[check] or ("sem resultado (" .. got[0] .. ")"))
        end)
      end
    end
  end)
end)
