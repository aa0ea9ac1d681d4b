-- context_spec.lua: the run context (ctx) declares every field in one place,
-- ragops.run.context (M.FIELDS, set by M.context); no module adds one ad
-- hoc. A static scan of every assignment to `ctx.<field>` in the modules
-- that get a run context, and a guard on a real run through the fakes.
require "tests.lua.c_stubs"
local plan = require "ragops.plan"
local run_context = require "ragops.run.context"
local testing = require "ragops.testing"

local ROOT = os.getenv("RAGOPS_SOURCE_DIR") or "."

local DECLARED = {}
for _, name in ipairs(run_context.FIELDS) do DECLARED[name] = true end

local function files()
  local out = {}
  local p = io.popen(("cd %q && find lua/ragops/run lua/ragops/sync -name '*.lua' | sort; echo lua/ragops/obs/instruments.lua")
    :format(ROOT))
  for line in p:lines() do out[#out + 1] = line end
  p:close()
  return out
end

-- Fields `text` assigns on `var` (var.x = ..., var.x, var.y = ...), as
-- "line: field". Comparisons (==, ~=, <=, >=) are not assignments.
local function assigned(text, var)
  local out = {}
  local n = 0
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    local code = line:gsub("%-%-.*$", "")
    local lhs = code:match("^%s*(.-)%s*=[^=]") or code:match("^%s*(.-)%s*=$")
    if lhs and not lhs:find("[~<>=]$") and not lhs:find("^local%s") then
      for item in (lhs .. ","):gmatch("%s*([^,]+),") do
        local field = item:match("^" .. var .. "%.([%w_]+)%s*$")
        if field then out[#out + 1] = { line = n, field = field } end
      end
    end
  end
  return out
end

describe("o contexto da execução (ctx)", function()
  it("o leitor estático acha as atribuições (e só elas)", function()
    local got = assigned([[
      ctx.a = 1
      ctx.b, ctx.c = 2, 3
      if ctx.d == 1 then end
      ctx.e.f = 4
      ctx.g[1] = 5
      local x = ctx.h
      x, ctx.i = 1, 2 -- ctx.j = 3]], "ctx")
    local fields = {}
    for _, a in ipairs(got) do fields[#fields + 1] = a.field end
    assert.are.same({ "a", "b", "c", "i" }, fields)
  end)

  it("nenhum módulo atribui a ctx um campo que ragops.run.context não declara", function()
    local undeclared = {}
    for _, path in ipairs(files()) do
      local f = assert(io.open(ROOT .. "/" .. path, "rb"))
      local text = f:read("*a")
      f:close()
      local vars = { "ctx" }
      if path:match("run/context%.lua$") then vars[2] = "self" end
      for _, var in ipairs(vars) do
        for _, a in ipairs(assigned(text, var)) do
          if not DECLARED[a.field] then
            undeclared[#undeclared + 1] = ("%s:%d: %s.%s"):format(path, a.line, var, a.field)
          end
        end
      end
    end
    assert.are.same({}, undeclared)
  end)

  it("o construtor põe todo campo declarado (e só esses)", function()
    local s = testing.scheduler()
    local ctx = run_context.context({}, { sched = s, store = testing.store(), log = testing.log(),
                                          fingerprint = "semente" })
    local extra = {}
    for k in pairs(ctx) do if not DECLARED[k] then extra[#extra + 1] = k end end
    assert.are.same({}, extra)
    for _, name in ipairs(run_context.FIELDS) do
      if name ~= "aborted" and name ~= "total" then assert.is_not_nil(ctx[name], name) end
    end
    assert.are.equal("semente\0t", ctx.fingerprint_seed({ entity_type = "t" }))
  end)

  it("uma execução pelos fakes (reexecução rápida, falhas, sem documento) não cria campo fora da lista", function()
    local created = {}
    local real = run_context.context
    run_context.context = function(...)
      local ctx = real(...)
      local class = getmetatable(ctx)
      return setmetatable(ctx, { __index = class.__index, __newindex = function(t, k, v)
        if not DECLARED[k] then created[#created + 1] = tostring(k) end
        rawset(t, k, v)
      end })
    end
    local p = plan.new { name = "p", sources = { plan.source "t" { sql = "x", key = "id", updated_at = "u",
      document = function(row)
        if row.id == 3 then return nil end
        if row.id == 4 then error("quebrou") end
        return { content = row.body, metadata = { n = row.id } }
      end } } }
    local rows = { { id = 1, body = "um", u = "1" }, { id = 2, body = "dois", u = "1" },
                   { id = 3, body = "três", u = "1" }, { id = 4, body = "quatro", u = "1" } }
    local ok, err = pcall(function()
      local first = testing.run(p, { sources = { t = rows }, fingerprint = "f", metrics = nil })
      testing.run(p, { store = first.store, fingerprint = "f" })
    end)
    run_context.context = real
    assert.is_true(ok, tostring(err))
    assert.are.same({}, created)
  end)
end)
