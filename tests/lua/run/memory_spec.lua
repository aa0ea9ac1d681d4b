-- memory_spec.lua: what a run holds on to (issue 11, peak RSS at in_flight
-- 64). The vectors of a batch live outside the Lua heap, where the collector
-- does not feel them: the runner releases each batch once its unit is
-- written, instead of leaving hundreds of dead batches to a late collection.

local plan = require "ragops.plan"
local testing = require "ragops.testing"

local function make_plan()
  return plan.new {
    name = "memoria",
    sources = { plan.source "item" {
      sql = "select id, text from items", key = "id",
      document = function(row) return { content = row.text } end,
    } },
    batch = { size = 2, in_flight = 2 },
    chunking = { max_chars = 100, overlap = 10 },
    retry = { attempts = 3, base_ms = 100, max_ms = 1000 },
  }
end

describe("memória de uma execução", function()
  it("cada lote de vetores é liberado depois que a sua unidade é gravada", function()
    local rows = {}
    for i = 1, 10 do rows[i] = { id = i, text = "texto " .. i } end
    local embedder = testing.embedder { dim = 8 }
    local inner, batches = embedder.embed, {}
    function embedder:embed(texts)
      local batch, err, info = inner(self, texts)
      if batch then batches[#batches + 1] = batch end
      return batch, err, info
    end
    local r = testing.run(make_plan(), { sources = { item = rows }, embedder = embedder })
    assert.are.equal(10, r.stats.embedded)
    assert.are.equal(5, #batches)
    for _, b in ipairs(batches) do assert.are.equal(0, b:count()) end
    assert.are.equal(8, #r:document("item", 1, 0).vector) -- written before the release
  end)
end)
