-- sqlname_spec.lua: the target table may be "table" or "schema.table".
require "tests.lua.c_stubs"

local sqlname = require "ragops.util.sqlname"
local index = require "ragops.vector.index"

describe("ragops.util.sqlname", function()
  it("cita tabela simples e tabela com esquema, parte por parte", function()
    assert.are.equal('"rag_documents"', sqlname.quote_table("rag_documents"))
    assert.are.equal('"public"."rag_documents"', sqlname.quote_table("public.rag_documents"))
    assert.are.equal("rag_documents", sqlname.relation("public.rag_documents"))
  end)

  it("o índice usa o esquema da tabela e o nome da relação", function()
    local original = index.quote_ident
    index.quote_ident = function(s) return '"' .. s:gsub('"', '""') .. '"' end
    finally(function() index.quote_ident = original end)
    assert.are.equal("rag_documents_embedding_hnsw", index.default_name("rag.rag_documents", "hnsw"))
    local sql = index.create_sql({ dim = 8, method = "ivfflat", lists = 4, opclass = "cosine",
      name = index.default_name("rag.docs", "ivfflat") }, "rag.docs", "vector(8)")
    assert.matches('ON "rag"."docs" USING ivfflat', sql.create, 1, true)
  end)
end)
