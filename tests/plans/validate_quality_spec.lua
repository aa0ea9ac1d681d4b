-- validate_quality_spec.lua: the versioned quality gate and its golden set
-- load in the sandbox and are well formed (no database needed).
require "tests.lua.c_stubs"

local validate = require "ragops.vector.validate"

local here = debug.getinfo(1, "S").source:sub(2):match("^(.*)/[^/]*$") or "."
local GATE = here .. "/../../plans/validate_quality.lua"
local GOLDEN = here .. "/../../plans/golden_demo.lua"

describe("plans/validate_quality.lua e plans/golden_demo.lua", function()
  it("o portão importa o conjunto golden e fixa k e os limites", function()
    local gate = assert(validate.load_golden(GATE))
    local golden = assert(validate.load_golden(GOLDEN))
    assert.are.equal(10, gate.k)
    assert.are.equal(0.8, gate.min_recall)
    assert.are.equal(0.6, gate.min_mrr)
    assert.are.equal(#golden.queries, #gate.queries)
  end)

  it("cada consulta tem texto e ao menos uma entidade esperada dos tipos do demo", function()
    local golden = assert(validate.load_golden(GOLDEN))
    assert.is_true(#golden.queries >= 15)
    local types = {}
    for _, q in ipairs(golden.queries) do
      assert.is_string(q.query)
      assert.is_true(#q.expect >= 1)
      for _, e in ipairs(q.expect) do
        assert.is_truthy(e.entity_type == "verse" or e.entity_type == "fortune")
        assert.matches("^%d+$", e.entity_id)
        types[e.entity_type] = true
      end
    end
    assert.is_true(types.verse and types.fortune, "o conjunto deve cobrir os dois tipos")
  end)
end)
