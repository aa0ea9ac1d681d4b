-- model_compare_spec.lua: the demo's model-change gate loads in the sandbox,
-- imports the demo's golden set and sets every compare threshold (checked by
-- ragops.vector.model like `ragops model compare` does).
require "tests.lua.c_stubs"

local validate = require "ragops.vector.validate"
local model = require "ragops.vector.model"

local here = debug.getinfo(1, "S").source:sub(2):match("^(.*)/[^/]*$") or "."
local GATE = here .. "/../../plans/model_compare.lua"
local GOLDEN = here .. "/../../plans/golden_demo.lua"

describe("plans/model_compare.lua", function()
  it("importa o golden da demo e fixa os quatro limites da comparação", function()
    local gate = assert(validate.load_golden(GATE))
    local golden = assert(validate.load_golden(GOLDEN))
    assert.are.equal(#golden.queries, #gate.queries)
    local thresholds = model.check_compare(gate.compare, function(key, message) error(key .. ": " .. message) end)
    assert.are.same({ max_recall_drop = 0.05, max_mrr_drop = 0.05, max_ndcg_drop = 0.05, max_p95_ms = 250 },
                    thresholds)
  end)
end)
