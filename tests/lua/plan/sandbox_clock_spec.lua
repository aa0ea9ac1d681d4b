-- sandbox_clock_spec.lua: where a sandboxed call's CPU time counts from.
-- os.clock() is a system call; in the ragops binary (core.now present) a
-- reading taken less than 1 % of the budget ago (wall time) is reused as
-- the next call's start: fewer readings, and a call counts from that
-- earlier instant (stricter), never a later one. Without core.now (plain
-- LuaJIT) every call reads the clock. Both clocks are fakes here.

local ORIGINAL_CLOCK = os.clock
-- The fakes: wall time in ms (core.now), CPU time in s (os.clock), the
-- number of os.clock() reads, and the CPU time each read adds after it.
local wall_ms, cpu_s, reads, step_s = 0, 8, 0, 0

-- A fresh ragops.plan.sandbox over the fake CPU clock; core: the stand-in
-- for ragops.core.
local function load_sandbox(core)
  local saved_core, saved_sandbox = package.loaded["ragops.core"], package.loaded["ragops.plan.sandbox"]
  package.loaded["ragops.core"] = core
  package.loaded["ragops.plan.sandbox"] = nil
  os.clock = function()
    reads = reads + 1
    local now = cpu_s
    cpu_s = cpu_s + step_s
    return now
  end
  local ok, sandbox = pcall(require, "ragops.plan.sandbox")
  os.clock = ORIGINAL_CLOCK
  package.loaded["ragops.core"], package.loaded["ragops.plan.sandbox"] = saved_core, saved_sandbox
  assert(ok, sandbox)
  return sandbox
end

local function budget(ms)
  return { what = "plano", ms = ms, bytes = 4 * 1048576, breaches = 0,
           keys = { time = "sandbox.hook_ms", memory = "sandbox.hook_memory_mb" } }
end

local function quick() return "ok" end

before_each(function() wall_ms, cpu_s, reads, step_s = 1000, 8, 0, 0 end)

describe("sandbox.call com core.now (o binário)", function()
  local sandbox = load_sandbox({ now = function() return wall_ms end })

  it("chamadas a menos de 1 % do orçamento (em relógio) da última leitura reaproveitam a leitura", function()
    local b = budget(100)
    for _ = 1, 5 do assert.is_true((sandbox.call(b, quick))) end
    assert.are.equal(1, reads, "leituras de os.clock() em 5 chamadas seguidas")
    wall_ms = wall_ms + 0.9
    assert.is_true((sandbox.call(b, quick)))
    assert.are.equal(1, reads, "leituras depois de 0,9 ms de relógio (o limite é 1 ms)")
    wall_ms = wall_ms + 0.1
    assert.is_true((sandbox.call(b, quick)))
    assert.are.equal(2, reads, "leituras depois de 1 ms de relógio")
  end)

  it("a leitura reaproveitada é a mais antiga: a chamada estoura mais cedo, nunca mais tarde", function()
    -- 125 ms of budget (1,25 ms of reuse); binary-exact fractions of a second.
    local b = budget(125)
    wall_ms = 5000
    assert.is_true((sandbox.call(b, quick))) -- reads 8 s
    cpu_s, wall_ms = 8.0625, wall_ms + 0.5   -- 62,5 ms of CPU since (other threads), 0,5 ms of wall time
    step_s = 0.03125                         -- each read of the hook: 31,25 ms more
    reads = 0
    local spin = assert(sandbox.compile("local i = 0 while true do i = i + 1 end\n", "/tmp/laco.lua",
                                        sandbox.environment("plano")))
    local ok, err, class = sandbox.call(b, spin)
    assert.is_false(ok)
    assert.are.equal("time", class, err)
    -- Counted from 8 s: the deadline is 8,125 s, passed at the 4th read of
    -- the hook (8,15625). A fresh reading (8,0625 s) would have allowed 6.
    assert.are.equal(4, reads, "leituras do gancho até estourar")
  end)
end)

describe("sandbox.call sem core.now (LuaJIT puro)", function()
  local sandbox = load_sandbox({})

  it("lê o relógio de CPU a cada chamada", function()
    local b = budget(100)
    for _ = 1, 5 do assert.is_true((sandbox.call(b, quick))) end
    assert.are.equal(5, reads, "leituras de os.clock() em 5 chamadas seguidas")
  end)
end)
