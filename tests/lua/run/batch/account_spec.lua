-- account_spec.lua: what run.batch.collect.account adds to the unit's delta
-- for the collected inputs (the calibration of the dry-run's estimates:
-- bytes, UTF-8 characters, squared bytes), counted as the online path
-- (ragops.run.stages.embed) counts them: characters, not bytes, for
-- multibyte text.
local collect = require "ragops.run.batch.collect"

local function new_delta() return { tokens = 0, bytes = 0, chars = 0, bytes_sq = 0 } end
local function new_ctx() return { spent = { tokens = 0 }, env = {}, metrics = {} } end

describe("lotes: contas da coleta (collect.account)", function()
  it("texto com acentos: conta caracteres UTF-8 em chars e bytes em bytes", function()
    local texts = { "ação", "coração em São Paulo", "abc" }
    local items = {}
    for i, t in ipairs(texts) do items[i] = { text = t } end
    local delta, ctx = new_delta(), new_ctx()
    collect.account(ctx, { tokens = 9 }, { { items = items } }, delta, "verse")
    -- "ação" 4 chars / 6 bytes; "coração em São Paulo" 20 chars / 23 bytes; "abc" 3 / 3
    assert.are.same({ tokens = 9, bytes = 6 + 23 + 3, chars = 4 + 20 + 3, bytes_sq = 36 + 529 + 9 }, delta)
    assert.are.equal(9, ctx.spent.tokens)
  end)

  it("sem tokens no lookup: nada é contado", function()
    local delta = new_delta()
    collect.account(new_ctx(), { tokens = 0 }, { { items = { { text = "ação" } } } }, delta, "verse")
    assert.are.same(new_delta(), delta)
  end)
end)
