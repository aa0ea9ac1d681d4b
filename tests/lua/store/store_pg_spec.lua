-- store_pg_spec.lua: the statements of one unit's transaction
-- (ragops.store.pg write_unit) on a fake connection. The run's row and its
-- token usage row are the same for every unit of a run: they must be
-- touched once, by the last statement before the commit, so their locks
-- are held for that statement only (with the usage insert earlier in the
-- transaction, the units of a cold backfill waited ~15 ms each for one
-- another: 7 s of 2.4 s of run were lock waits).
require "tests.lua.c_stubs"
local store_pg = require "ragops.store.pg"

-- A store whose pool hands a connection that records each statement.
local function recording_store()
  local statements = {}
  local conn = {}
  function conn:query(sql)
    statements[#statements + 1] = sql
    if sql:find("select count%(%*%)::int as owned") then return { { owned = 1 }, affected = 1 } end
    return { affected = 1 }
  end
  function conn:copy_documents(_, docs) return #docs end
  local pool = { with = function(_, fn) return fn(conn) end }
  local store = store_pg.new { pool = pool, table = "rag_documents", embedding_type = "vector(3)" }
  store.owner_token = "dono"
  function store:reserve_spent() return 1 end
  function store:unreserve_spent() end
  return store, statements
end

local function unit(usage)
  return {
    entity_type = "doc", run_id = 7, into_target = true,
    parts = { { docs = { { entity_type = "doc", entity_id = "1", chunk_index = 0, vec = 1 } }, batch = {} } },
    chunk_counts = { entity_ids = {}, counts = {} }, refresh = { entity_ids = {} },
    failures = {}, resolved_ids = {}, usage = usage,
    checkpoint = { seq = 1, after = "1", stats = {}, covered = {}, includes_unit = true },
  }
end

describe("ragops.store.pg: a transação da unidade", function()
  it("a linha da execução e a do uso de tokens só na última instrução antes do commit", function()
    local store, statements = recording_store()
    local result = assert(store:write_unit(unit({ model = "m", documents = 1, chunks = 1, bytes = 9, chars = 9, tokens = 3 })))
    assert.are.equal(1, result.written)
    assert.are.equal("commit", statements[#statements])
    local last = statements[#statements - 1]
    assert.truthy(last:find("update ragops_runs", 1, true))
    assert.truthy(last:find("insert into ragops_token_usage", 1, true))
    for i = 1, #statements - 2 do
      assert.falsy(statements[i]:find("ragops_token_usage", 1, true), "uso de tokens na instrução " .. i)
      assert.falsy(statements[i]:find("ragops_runs", 1, true), "linha da execução na instrução " .. i)
    end
  end)

  it("sem falhas abertas nem uso, nada de resolução: begin, progresso, commit", function()
    local store, statements = recording_store()
    assert(store:write_unit(unit(nil)))
    assert.are.same({ "begin", "commit" }, { statements[1], statements[#statements] })
    assert.are.equal(3, #statements)
  end)
end)
