-- plan_reference_spec.lua: docs/referencia-de-planos.md can never go stale.
--   * it is exactly what scripts/plan_reference.lua prints from the schema
--     (lua/ragops/plan/schema.lua);
--   * the validators' "chaves válidas" lists (ragops.plan, ragops.sync_plan)
--     are the schema's keys, for every table of the DSL;
--   * the defaults the reference shows as plain values are the ones a
--     validated plan gets.
local plan = require "ragops.plan"
local schema = require "ragops.plan.schema"

local HOME = os.getenv("RAGOPS_SOURCE_DIR") or "."

local function read(path)
  local f = assert(io.open(path, "r"))
  local text = f:read("*a")
  f:close()
  return text
end

local function document(row) return { content = row.text } end

local function source(spec)
  spec.sql = spec.sql or "select id, text, updated_at from verses"
  spec.key = spec.key or "id"
  spec.document = spec.document or document
  return plan.source("verse")(spec)
end

-- The error of validating `build()`, or nil when it validates.
local function error_of(build)
  local ok, err = pcall(build)
  if ok then return nil end
  return tostring(err)
end

local UNKNOWN = "zz_chave_inexistente"

-- For each section, a function that validates a plan with the unknown key
-- in that table.
local function with_unknown(t) t[UNKNOWN] = 1; return t end
local PROBES = {
  plan = function() return plan.new(with_unknown({ name = "p", sources = { source({}) } })) end,
  source = function() return source(with_unknown({})) end,
  batch = function() return plan.new({ name = "p", sources = { source({}) }, batch = with_unknown({}) }) end,
  chunking = function() return plan.new({ name = "p", sources = { source({}) }, chunking = with_unknown({}) }) end,
  retry = function() return plan.new({ name = "p", sources = { source({}) }, retry = with_unknown({}) }) end,
  embed = function() return plan.new({ name = "p", sources = { source({}) }, embed = with_unknown({}) }) end,
  alerts = function() return plan.new({ name = "p", sources = { source({}) }, alerts = with_unknown({}) }) end,
  ["alerts.failure_rate"] = function()
    return plan.new({ name = "p", sources = { source({}) }, alerts = { failure_rate = with_unknown({}) } })
  end,
  ["alerts.rate_429_per_min"] = function()
    return plan.new({ name = "p", sources = { source({}) }, alerts = { rate_429_per_min = with_unknown({ above = 1 }) } })
  end,
  ["alerts.p95_latency_ms"] = function()
    return plan.new({ name = "p", sources = { source({}) }, alerts = { p95_latency_ms = with_unknown({ above = 1 }) } })
  end,
  budget = function() return plan.new({ name = "p", sources = { source({}) }, budget = with_unknown({ usd = 1 }) }) end,
  scope = function() return plan.new({ name = "p", sources = { source({}) }, scope = with_unknown({}) }) end,
  operations = function() return plan.new({ name = "p", sources = { source({}) }, operations = with_unknown({}) }) end,
  ["operations.op"] = function()
    return plan.new({ name = "p", sources = { source({}) }, operations = { failures_retry = with_unknown({}) } })
  end,
  ["sync.watermark"] = function()
    return source({ updated_at = "updated_at", sync = with_unknown({ strategy = "watermark" }) })
  end,
  ["sync.trigger"] = function()
    return source({ sync = with_unknown({ strategy = "trigger", table = "verses" }) })
  end,
  ["sync.soft_delete"] = function()
    return source({ updated_at = "updated_at",
      sync = { strategy = "watermark", soft_delete = with_unknown({ table = "verses", column = "deleted" }) } })
  end,
  ["sync.related"] = function()
    return source({ sync = { strategy = "trigger", table = "verses",
      related = { with_unknown({ table = "books", column = "id", entities = "select id from verses where book = $1" }) } } })
  end,
}

local function split_list(text)
  local out = {}
  for name in text:gmatch("[^,%s]+") do out[#out + 1] = name end
  return out
end

describe("docs/referencia-de-planos.md", function()
  it("é exatamente o que scripts/plan_reference.lua gera do esquema", function()
    local command = ("cd %q && LUA_PATH=%q luajit scripts/plan_reference.lua"):format(HOME,
      HOME .. "/lua/?.lua;;")
    local p = assert(io.popen(command))
    local generated = p:read("*a")
    p:close()
    assert.is_true(#generated > 1000, "o gerador não imprimiu a referência")
    assert.are.equal(generated, read(HOME .. "/docs/referencia-de-planos.md"),
      "regenere: LUA_PATH=\"$PWD/lua/?.lua;;\" luajit scripts/plan_reference.lua > docs/referencia-de-planos.md")
  end)

  it("cobre todas as tabelas do esquema, e o esquema todas as que o validador confere", function()
    local ids = {}
    for _, section in ipairs(schema.SECTIONS) do ids[#ids + 1] = section.id end
    local probed = {}
    for id in pairs(PROBES) do probed[#probed + 1] = id end
    table.sort(ids)
    table.sort(probed)
    assert.are.same(probed, ids)
  end)

  for _, section in ipairs(schema.SECTIONS) do
    it(("as chaves válidas de %s no validador são as do esquema"):format(section.id), function()
      local err = error_of(PROBES[section.id])
      assert.is_string(err, "a chave desconhecida foi aceita em " .. section.id)
      assert.matches(UNKNOWN, err, 1, true)
      local listed = err:match("chaves válidas: ([^;\n]+)")
      assert.is_string(listed, err)
      assert.are.same({ section = section.id, keys = schema.keys(section.id) },
        { section = section.id, keys = split_list(listed) })
    end)
  end

  it("os padrões numéricos da referência são os de um plano validado", function()
    local p = plan.new({ name = "p", sources = { source({}) } })
    local actual = {
      batch = p.batch, chunking = p.chunking, retry = p.retry, ["alerts.failure_rate"] = p.alerts.failure_rate,
    }
    local checked = 0
    for _, section in ipairs(schema.SECTIONS) do
      for _, entry in ipairs(section.keys) do
        local value = actual[section.id] and tonumber(entry[3])
        if value then
          checked = checked + 1
          assert.are.same({ key = section.id .. "." .. entry[1], default = value },
            { key = section.id .. "." .. entry[1], default = actual[section.id][entry[1]] })
        end
      end
    end
    assert.is_true(checked >= 8, "só " .. checked .. " padrões conferidos")
    assert.are.equal("only_missing", p.mode)
    assert.are.equal(true, p.delete_missing)
  end)
end)
