-- sandbox_jit_spec.lua: no refused allocation inside JIT-compiled code.
-- Debian 12's LuaJIT may crash (SIGSEGV in lj_err_mem) when a heap cap
-- refuses memory while a trace runs (fixed upstream in 2d8300c1), so:
-- what plan code calls in ragops.plan.sandbox and ragops.plan is never
-- compiled; a file loads with the JIT off and its traces dropped (on
-- again afterwards, also after an error); a hook call keeps the JIT; and
-- once the allocator says the heap passed 3/4 of the run's cap
-- (core.heap_near_run_cap, stubbed here) the JIT stays off for good.
-- The crash itself is probabilistic: tests/integration/sandbox_spec.lua
-- ("texto alocado ao carregar ...") is where it showed.
local traceinfo = require("jit.util").traceinfo

-- A fresh ragops.plan.sandbox over `core` (a stand-in for ragops.core).
local function load_sandbox(core)
  local saved_core, saved_sandbox = package.loaded["ragops.core"], package.loaded["ragops.plan.sandbox"]
  package.loaded["ragops.core"] = core
  package.loaded["ragops.plan.sandbox"] = nil
  local ok, sandbox = pcall(require, "ragops.plan.sandbox")
  package.loaded["ragops.core"], package.loaded["ragops.plan.sandbox"] = saved_core, saved_sandbox
  assert(ok, sandbox)
  return sandbox
end

-- Runs fn; returns the traces compiled meanwhile that start in a
-- ragops.plan module or in a plan file of these tests (busted's own code,
-- compiled too when several spec files share the process, is left out).
local function plan_traces_during(fn)
  local found = {}
  local function on_trace(what, _, func)
    if what ~= "stop" then return end
    local source = debug.getinfo(func, "S").source
    if source:find("ragops/plan/", 1, true) or source:find("/tmp/laco_", 1, true) then
      found[#found + 1] = source .. ":" .. debug.getinfo(func, "S").linedefined
    end
  end
  jit.attach(on_trace, "trace")
  local ok, err = pcall(fn)
  jit.attach(on_trace)
  assert(ok, err)
  return found
end

-- Runs a host loop hot enough to be compiled; true when a trace exists.
local function compile_something()
  local sum = 0
  for i = 1, 20000 do sum = sum + i % 7 end
  return traceinfo(1) ~= nil, sum
end

describe("sandbox e o compilador JIT", function()
  local sandbox
  before_each(function()
    sandbox = load_sandbox(nil)
    jit.on()
    jit.flush()
  end)
  after_each(function() jit.on() end)

  it("string.rep, pcall e xpcall do ambiente chamados num laço do plano não viram trace", function()
    local env = sandbox.environment("plano")
    local fn = assert(sandbox.compile([[
for i = 1, 5000 do
  string.rep("x", 8)
  pcall(type, i)
  xpcall(type, tostring, i)
end]], "/tmp/laco_quente.lua", env))
    assert.are.same({}, plan_traces_during(fn))
  end)

  it("source{} e plan{} do DSL chamados num laço do plano não viram trace", function()
    package.loaded["ragops.plan"] = nil
    local plan_mod = require "ragops.plan"
    local env = plan_mod.environment("/tmp/laco_dsl.lua", {}, "")
    local fn = assert(sandbox.compile([[
local last
for i = 1, 300 do
  last = source "n" { sql = "select 1 as id", key = "id", document = function(r) return { content = "x" } end }
  local _ = params.nada
end]], "/tmp/laco_dsl.lua", env))
    assert.are.same({}, plan_traces_during(fn))
  end)

  it("carregar um arquivo: JIT desligado e traces descartados durante a carga, ligado de novo depois", function()
    assert.is_true(compile_something())
    local ok, on_inside, trace_inside = sandbox.call(sandbox.load_budget("plano"), function()
      return jit.status(), traceinfo(1) ~= nil
    end)
    assert.is_true(ok)
    assert.are.equal(false, on_inside)
    assert.are.equal(false, trace_inside)
    assert.are.equal(true, (jit.status()))
  end)

  it("carregar um arquivo que falha também religa o JIT", function()
    local ok, message = sandbox.call(sandbox.load_budget("plano"), function() error("quebrou") end)
    assert.is_false(ok)
    assert.truthy(tostring(message):find("quebrou", 1, true), message)
    assert.are.equal(true, (jit.status()))
  end)

  it("uma chamada de document() não desliga o JIT nem descarta traces (caminho quente)", function()
    assert.is_true(compile_something())
    local ok, on_inside = sandbox.call(sandbox.hook_budget(), function() return jit.status() end)
    assert.is_true(ok)
    assert.are.equal(true, on_inside)
    assert.is_not_nil(traceinfo(1))
  end)

  it("heap perto do teto da execução: o próximo ponto seguro desliga o JIT de vez", function()
    local near = false
    local core = {
      heap_near_run_cap = function() return near end,
      heap_limit = function() return 0 end, heap_run_limit = function() return 0 end,
      heap_refused = function() return nil end,
    }
    local sb = load_sandbox(core)
    assert.is_true(compile_something())
    assert.is_false(sb.interpret_near_run_cap())
    assert.are.equal(true, (jit.status()))
    near = true
    local ok, on_inside = sb.call(sb.hook_budget(), function() return jit.status() end)
    assert.is_true(ok)
    assert.are.equal(false, on_inside)
    assert.is_nil(traceinfo(1), "os traces deveriam ter sido descartados")
    -- A file loaded afterwards does not turn it back on.
    sb.call(sb.load_budget("plano"), function() return true end)
    assert.are.equal(false, (jit.status()))
    assert.is_true(sb.interpret_near_run_cap())
  end)
end)
