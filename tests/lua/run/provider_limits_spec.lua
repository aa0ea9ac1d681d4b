-- provider_limits_spec.lua: the embed stage forms its requests within the
-- provider's limits (the embedder's .limits, as ragops.provider.client
-- gives them): no request over max_inputs, none over the request's token
-- cap, and an input over the per-input limit is a dead letter named as
-- such, never sent (no bisection).
local plan = require "ragops.plan"
local testing = require "ragops.testing"

local function make_plan(size)
  return plan.new {
    name = "limites", batch = { size = size, in_flight = 1 }, chunking = { max_chars = 100000, overlap = 0 },
    sources = { plan.source "item" {
      sql = "select id, text from items", key = "id",
      document = function(row) return { content = row.text } end } },
  }
end

local function rows(n, bytes)
  local out = {}
  for i = 1, n do out[i] = { id = i, text = ("%05d"):format(i) .. string.rep("x", bytes - 5) } end
  return out
end

local function embedder_with(limits)
  local e = testing.embedder {}
  limits.tokens_per_byte = 0.25
  e.limits = limits
  return e
end

describe("limites do provedor no estágio de embedding", function()
  it("nenhum pedido passa de max_inputs nem do teto de tokens (bytes/4)", function()
    local e = embedder_with { max_inputs = 5, max_request_tokens = 1000, request_tokens = "bytes" }
    local r = testing.run(make_plan(64), { sources = { item = rows(40, 400) }, embedder = e })
    assert.are.equal(40, r.stats.embedded)
    for i, call in ipairs(e.calls) do
      assert.is_true(#call.texts <= 5, ("pedido %d com %d entradas"):format(i, #call.texts))
      local tokens = 0
      for _, t in ipairs(call.texts) do tokens = tokens + math.ceil(#t / 4) end
      assert.is_true(tokens <= 1000, ("pedido %d com %d tokens"):format(i, tokens))
    end
    assert.are.equal(0, r.stats.failed)
  end)

  it("entrada acima do limite por entrada vira falha input_too_long sem pedido; as outras seguem", function()
    local e = embedder_with { max_input_tokens = 100 }
    local list = rows(6, 40)
    list[3].text = string.rep("y", 1000) -- 250 estimated tokens
    local r = testing.run(make_plan(64), { sources = { item = list }, embedder = e })
    assert.are.equal(5, r.stats.embedded)
    assert.are.equal(1, #e.calls) -- one request, no bisection
    for _, t in ipairs(e.calls[1].texts) do assert.is_true(#t < 1000) end
    local failure = r.store.failures[1]
    assert.are.equal("input_too_long", failure.error_class)
    assert.are.equal("3", tostring(failure.entity_id))
    assert.truthy(failure.message:find("cerca de 250 tokens estimados", 1, true), failure.message)
    assert.truthy(failure.message:find("provider.limits.max_input_tokens", 1, true), failure.message)
  end)

  it("com truncate, a entrada longa é enviada e o log avisa uma vez", function()
    local e = embedder_with { max_input_tokens = 100, truncate = true }
    local list = rows(4, 40)
    list[2].text = string.rep("y", 1000)
    list[4].text = string.rep("z", 1000)
    local r = testing.run(make_plan(64), { sources = { item = list }, embedder = e })
    assert.are.equal(4, r.stats.embedded)
    local warned = 0
    for _, line in ipairs(r.log) do
      if tostring(line):find("truncá-las", 1, true) then warned = warned + 1 end
    end
    assert.are.equal(1, warned)
  end)
end)
