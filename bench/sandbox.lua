-- bench/sandbox.lua: custo de sandbox.call em document() (100 mil chamadas),
-- comparado ao xpcall com traceback de antes. Uso: luajit bench/sandbox.lua
local root = arg[0]:match("^(.*)/bench/[^/]*$") or "."
package.path = root .. "/lua/?.lua;" .. package.path
local sandbox = require "ragops.plan.sandbox"
local env = sandbox.environment("plano")
local fn = sandbox.compile([[return function(row)
  return { content = row.text, metadata = { livro = row.book, capitulo = row.chapter } }
end]], "/tmp/bench_plan.lua", env)()
local row = { text = "And the word came unto verse 1", book = "Gen", chapter = 1 }
local N = 100000
local function time(label, f)
  collectgarbage(); local t0 = os.clock(); f(); local dt = os.clock() - t0
  print(("%-28s %7.1f ms  %6.2f us/chamada"):format(label, dt * 1000, dt / N * 1e6))
end
time("xpcall + traceback (antes)", function() for i = 1, N do xpcall(fn, debug.traceback, row) end end)
local budget = sandbox.hook_budget()
time("sandbox.call (depois)", function() for i = 1, N do sandbox.call(budget, fn, row) end end)
