-- chunk_fit_spec.lua: chunking that knows the model: sizes in tokens
-- (chunking.max_tokens / overlap_tokens) and the refusal of a chunk size
-- over the provider's per-input limit (ragops.plan.chunk.fit).
local chunk = require "ragops.plan.chunk"
local plan = require "ragops.plan"

local function new_plan(chunking)
  return plan.new { name = "teste", chunking = chunking, sources = { plan.source("verse") {
    sql = "select id, text from verses", key = "id", document = function(row) return { content = row.text } end } } }
end

local OPENAI = { api = "openai", model = "text-embedding-3-small" }
local OPENAI_LIMITS = { max_input_tokens = 8192 }

describe("chunking.max_tokens", function()
  it("vira caracteres pela razão tokens/byte do modelo; overlap_tokens padrão = 10%", function()
    local p = new_plan { max_tokens = 500 }
    assert.are.equal(500, p.chunking.max_tokens)
    assert.are.equal(50, p.chunking.overlap_tokens)
    assert.is_true(chunk.fit(p.chunking, OPENAI, OPENAI_LIMITS, 0.25))
    assert.are.equal(2000, p.chunking.max_chars)
    assert.are.equal(200, p.chunking.overlap)
    local q = new_plan { max_tokens = 500, overlap_tokens = 0 }
    assert.is_true(chunk.fit(q.chunking, OPENAI, OPENAI_LIMITS, 0.5))
    assert.are.equal(1000, q.chunking.max_chars)
    assert.are.equal(0, q.chunking.overlap)
  end)

  it("não se mistura com max_chars, e overlap_tokens exige max_tokens", function()
    local ok, err = pcall(new_plan, { max_tokens = 500, max_chars = 2000 })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("chunking.max_tokens", 1, true), err)
    ok, err = pcall(new_plan, { overlap_tokens = 10 })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("chunking.overlap_tokens", 1, true), err)
    ok, err = pcall(new_plan, { max_tokens = 500, overlap_tokens = 500 })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("menor que chunking.max_tokens", 1, true), err)
  end)
end)

describe("chunk.fit: o tamanho do trecho cabe no modelo", function()
  it("recusa max_chars = 1.000.000 com a OpenAI e diz o máximo que cabe", function()
    local p = new_plan { max_chars = 1000000 }
    local ok, err = chunk.fit(p.chunking, OPENAI, OPENAI_LIMITS, 0.25)
    assert.is_nil(ok)
    assert.truthy(err:find("chunking.max_chars = 1000000", 1, true), err)
    assert.truthy(err:find("250000 tokens estimados", 1, true), err)
    assert.truthy(err:find("8192 tokens", 1, true), err)
    assert.truthy(err:find("chunking.max_chars até 32768", 1, true), err)
  end)

  it("recusa max_tokens acima do limite de entrada (Cohere v3: 512)", function()
    local p = new_plan { max_tokens = 600 }
    local ok, err = chunk.fit(p.chunking, { api = "cohere", model = "embed-english-v3.0" }, { max_input_tokens = 512 }, 0.25)
    assert.is_nil(ok)
    assert.truthy(err:find("chunking.max_tokens = 600", 1, true), err)
  end)

  it("aceita o padrão (2000 caracteres) com a OpenAI, e tudo com truncate ou sem limite", function()
    assert.is_true(chunk.fit(new_plan({}).chunking, OPENAI, OPENAI_LIMITS, 0.25))
    local big = new_plan { max_chars = 1000000 }
    assert.is_true(chunk.fit(big.chunking, OPENAI, { max_input_tokens = 8192, truncate = true }, 0.25))
    assert.is_true(chunk.fit(big.chunking, OPENAI, {}, 0.25))
  end)
end)
