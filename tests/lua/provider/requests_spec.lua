-- requests_spec.lua: requests formed within the provider's limits.
local requests = require "ragops.provider.requests"

local function items(n, bytes)
  local out = {}
  for i = 1, n do out[i] = { text = string.rep("a", bytes), i = i } end
  return out
end
local function text_of(it) return it.text end

describe("pedidos dentro dos limites do provedor", function()
  it("2.048 entradas de 2.000 caracteres pela OpenAI: pedidos de até 300 mil tokens (bytes/4), nenhum perdido", function()
    local limits = { max_inputs = 2048, max_request_tokens = 300000, max_input_tokens = 8192, request_tokens = "bytes" }
    local slices, too_long = requests.form(items(2048, 2000), text_of, limits, 2048, 0.25)
    assert.are.same({}, too_long)
    local total = 0
    for _, s in ipairs(slices) do
      assert.is_true(#s * 500 <= 300000, ("pedido com %d entradas = %d tokens"):format(#s, #s * 500))
      total = total + #s
    end
    assert.are.equal(2048, total)
    assert.are.equal(4, #slices) -- 600 + 600 + 600 + 248 inputs
    assert.are.equal(600, #slices[1])
  end)

  it("max_inputs e batch.size: o menor vale", function()
    local slices = requests.form(items(100, 10), text_of, { max_inputs = 32 }, 64, 0.25)
    assert.are.same({ 32, 32, 32, 4 }, { #slices[1], #slices[2], #slices[3], #slices[4] })
    slices = requests.form(items(100, 10), text_of, { max_inputs = 96 }, 40, 0.25)
    assert.are.equal(40, #slices[1])
  end)

  it("limite por tokenizador: pedidos enchidos até 90% do teto", function()
    local limits = { max_request_tokens = 1000, request_tokens = "tokens" }
    local slices = requests.form(items(10, 400), text_of, limits, 64, 0.25) -- 100 tokens each
    assert.are.equal(9, #slices[1])
    assert.are.equal(1, #slices[2])
  end)

  it("entrada acima do limite por entrada fica de fora, com sua estimativa; as vizinhas seguem", function()
    local list = items(3, 100)
    list[2].text = string.rep("b", 40000) -- 10,000 tokens at 0.25
    local slices, too_long = requests.form(list, text_of, { max_input_tokens = 8192 }, 64, 0.25)
    assert.are.equal(1, #too_long)
    assert.are.equal(2, too_long[1].item.i)
    assert.are.equal(10000, too_long[1].tokens)
    assert.are.equal(2, #slices[1])
  end)

  it("com truncate, a entrada longa vai (o provedor trunca)", function()
    local list = items(1, 40000)
    local slices, too_long, truncated = requests.form(list, text_of, { max_input_tokens = 8192, truncate = true }, 64, 0.25)
    assert.are.same({}, too_long)
    assert.are.equal(1, #slices)
    assert.are.equal(1, truncated)
  end)

  it("sem limites, só batch.size", function()
    local slices = requests.form(items(130, 5), text_of, {}, 64, 0.25)
    assert.are.equal(3, #slices)
  end)
end)
