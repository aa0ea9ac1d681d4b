-- Integration: the house (issue 21). Every command starts through one
-- prelude (ragops.cli.prelude: config → log → signals → target → plan), so
-- the configuration's log.format reaches every command, `ragops sync`
-- included; an internal error exits with its own named outcome.
local H = require "tests.integration.helper"
local cjson = require "cjson"

local PLAN = [[
local fortunes = source "fortune" { sql = "select id, text, updated_at from fortunes",
  key = "id", updated_at = "updated_at",
  document = function(r) return { content = r.text } end,
  sync = { strategy = "watermark", overlap_s = 1 } }
return plan { name = "casa", sources = { fortunes }, batch = { size = 16, in_flight = 2 } }
]]

-- The non-empty lines of text.
local function lines(text)
  local out = {}
  for line in text:gmatch("[^\n]+") do out[#out + 1] = line end
  return out
end

H.each_storage(function(storage)
  describe("ragops sync com log.format = \"json\" na configuração", function()
    it("escreve só linhas JSON no stderr, com nível e mensagem", function()
      local url = H.migrated_db("ragops_it_house_sync_" .. storage:gsub("%W", ""), 5, 12)
      local plan = H.plan_file(PLAN)
      local config = H.config_file([[log = { format = "json" }]])
      local code, _, err = H.ragops(url, "sync " .. H.q(plan) .. " --config " .. H.q(config))
      os.remove(plan)
      os.remove(config)
      assert.are.equal(0, code, err)
      local got = lines(err)
      assert.is_true(#got > 0, "o ragops sync não escreveu nenhuma linha de log")
      for _, line in ipairs(got) do
        local ok, decoded = pcall(cjson.decode, line)
        assert.is_true(ok and type(decoded) == "table", "linha que não é JSON: " .. line)
        assert.is_string(decoded.level, line)
        assert.is_string(decoded.msg, line)
      end
      assert.are.equal(12, H.scalar(url, "select count(distinct entity_id) from rag_documents where entity_type = 'fortune'"))
    end)
  end)
end)
