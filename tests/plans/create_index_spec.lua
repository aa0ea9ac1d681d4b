-- create_index_spec.lua: plans/create_index.lua carries the runbook's index
-- defaults, read by `ragops index create` (no database needed).
require "tests.lua.c_stubs"

local index = require "ragops.vector.index"

local here = debug.getinfo(1, "S").source:sub(2):match("^(.*)/[^/]*$") or "."
local PLAN = here .. "/../../plans/create_index.lua"

describe("plans/create_index.lua", function()
  it("traz os valores do runbook: IVFFlat, cosseno, lists 64/2000, probes 10", function()
    local d = assert(index.load_defaults(PLAN))
    assert.are.equal("ivfflat", d.method)
    assert.are.equal("cosine", d.opclass)
    assert.are.same({ dev = 64, prod = 2000 }, d.lists)
    assert.are.same({ dev = "2GB", prod = "4GB" }, d.maintenance_work_mem)
    assert.are.equal(10, d.probes)
    assert.is_true(d.ef_construction >= 2 * d.m, "ef_construction deve ser >= 2*m (pgvector)")
  end)

  it("não é um plano de backfill: sem fontes, `ragops run` o recusa", function()
    local p = assert(require("ragops.plan").load(PLAN, {}))
    assert.are.equal(0, #p.sources)
    assert.is_function(p.run)
  end)
end)
