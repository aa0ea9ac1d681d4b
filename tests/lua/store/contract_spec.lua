-- contract_spec.lua: every Store implementation has every method of
-- ragops.store.contract and no public method it does not declare; the
-- run-record methods are findable definitions (the declared mixin); the
-- document columns of Lua and of the C COPY are one list.
require "tests.lua.c_stubs"
local contract = require "ragops.store.contract"
local dryrun = require "ragops.run.dryrun"
local store_pg = require "ragops.store.pg"
local store_runs = require "ragops.store.runs"
local testing = require "ragops.testing"

local ROOT = os.getenv("RAGOPS_SOURCE_DIR") or "."

local function read(path)
  local f = io.open(ROOT .. "/" .. path, "rb")
  if not f then return nil end
  local text = f:read("*a")
  f:close()
  return text
end

local function implementations()
  local s = testing.scheduler()
  local cfg = { database = { table = "rag_documents" }, provider = { model = "m", dim = 8 } }
  return {
    pg = store_pg.new { pool = {}, table = "rag_documents", embedding_type = "real[]", model = "m", dim = 8 },
    fake = testing.store(),
    dry = dryrun.dry_store({}, s, cfg, "real[]", dryrun.new_tally()),
  }
end

-- Where each implementation's methods are written (`function X:name`).
local SOURCES = {
  pg = { "lua/ragops/store/pg.lua", "lua/ragops/store/runs.lua" },
  fake = { "lua/ragops/testing.lua" },
  dry = { "lua/ragops/run/dryrun.lua" },
}

describe("ragops.store.contract", function()
  it("lista cada método uma vez, com grupos que cobrem a lista", function()
    local seen, dup = {}, {}
    for _, name in ipairs(contract.METHODS) do
      if seen[name] then dup[#dup + 1] = name end
      seen[name] = true
    end
    assert.are.same({}, dup)
    for _, name in ipairs({ "fetch_page_existing", "add_stored", "load_fingerprints", "write_unit",
                            "start_run", "finish_run", "delete_orphan_markers", "wind_down" }) do
      assert.is_true(seen[name] == true, name)
    end
  end)

  for _, kind in ipairs({ "pg", "fake", "dry" }) do
    it(("a implementação %s tem todo método do contrato e nenhum público sem declarar"):format(kind), function()
      local missing, extra = contract.check(implementations()[kind], kind)
      assert.are.same({}, missing)
      assert.are.same({}, extra)
    end)

    it(("cada método do contrato em %s tem uma definição que o grep acha"):format(kind), function()
      local text = ""
      for _, path in ipairs(SOURCES[kind]) do text = text .. assert(read(path), path) end
      local absent = {}
      for _, name in ipairs(contract.METHODS) do
        if not text:find("function [%w_]+:" .. name .. "%(") then absent[#absent + 1] = name end
      end
      assert.are.same({}, absent)
    end)
  end

  it("acusa um método que falta e um público a mais", function()
    local missing, extra = contract.check(setmetatable({ surprise = function() end },
      { __index = getmetatable(testing.store()).__index }), "fake")
    assert.are.same({}, missing)
    assert.are.same({ "surprise" }, extra)
    -- A data field named like a method hides it (the fake's open_failures
    -- table did, until the conformance spec called store:open_failures).
    missing = contract.check(setmetatable({ open_failures = {} }, { __index = getmetatable(testing.store()).__index }),
      "fake")
    assert.are.same({ "open_failures" }, missing)
    missing = contract.check({ fetch_page = function() end }, "fake")
    assert.is_true(#missing == #contract.METHODS - 1, #missing .. " de " .. #contract.METHODS)
  end)

  it("o registro da execução é o mixin declarado: store/runs.lua Store, não cópia na carga", function()
    local Store = store_pg.Store
    for _, name in ipairs(contract.MIXINS["ragops.store.runs"]) do
      assert.is_function(rawget(store_runs.Store, name), name)
      assert.is_nil(rawget(Store, name), name .. " copiado para a Store de store/pg.lua")
      assert.are.equal(store_runs.Store[name], Store[name], name)
    end
    -- Everything in the mixin is declared: contract methods or pg's extras.
    local declared = {}
    for _, name in ipairs(contract.METHODS) do declared[name] = true end
    for name in pairs(contract.EXTRAS.pg) do declared[name] = true end
    for name in pairs(store_runs.Store) do assert.is_true(declared[name] == true, name) end
  end)
end)

describe("as colunas de um documento", function()
  -- The C list (engine/pg_lua.c, or engine/pg/pg_lua.c), read from source.
  local function c_columns()
    local text = read("engine/pg_lua.c") or read("engine/pg/pg_lua.c")
    assert.is_string(text, "engine/pg_lua.c não encontrado")
    local body = assert(text:match("document_columns%[%]%s*=%s*(%b{})"), "document_columns não encontrado no C")
    local out = {}
    for name in body:gmatch('"([%w_]+)"') do out[#out + 1] = name end
    return out
  end

  it("a lista do Lua (store/contract.lua) e a do COPY em C são a mesma, na mesma ordem", function()
    assert.are.same(contract.document_column_names(), c_columns())
  end)

  it("o upsert e a tabela de staging da store saem da lista", function()
    local sql = store_pg.new { pool = {}, table = "t", embedding_type = "vector(8)" }.sql.upsert
    for _, c in ipairs(contract.DOCUMENT_COLUMNS) do
      assert.truthy(sql:find(c.name, 1, true), c.name .. " fora do upsert: " .. sql)
      if not c.key then
        assert.truthy(sql:find(c.name .. " = excluded." .. c.name, 1, true), c.name .. ": " .. sql)
      end
    end
  end)

  it("a store falsa guarda as colunas da lista", function()
    local r = testing.run(require("ragops.plan").new { name = "p", sources = { require("ragops.plan").source "t" {
      sql = "x", key = "id", updated_at = "u",
      document = function(row) return { content = row.body } end } } },
      { sources = { t = { { id = 1, body = "um", u = "2024-01-01" } } } })
    local doc = r:document("t", 1)
    for _, c in ipairs(contract.DOCUMENT_COLUMNS) do
      if c.name ~= "embedding" and c.name ~= "source_hash" then
        assert.is_not_nil(doc[c.name], c.name)
      end
    end
    assert.is_table(doc.vector)
  end)
end)
