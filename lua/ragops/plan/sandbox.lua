-- ragops.plan.sandbox: runs untrusted plan, config and golden code. Reads the
-- file, compiles text chunks only (never bytecode), builds the restricted
-- environment, and runs code under a time and memory budget:
--
--   sandbox.read_file(path, kind)          -> text | nil, err
--   sandbox.compile(text, path, env)       -> fn | nil, raw err
--   sandbox.run_text(text, path, kind, env) -> value | nil, err, class (compile + call)
--   sandbox.environment(kind)              -> env with the safe globals
--   sandbox.call(budget, fn, ...)          -> true, results... | false, message, class
--   sandbox.load_budget(what)              -> budget for loading one file
--   sandbox.hook_budget()                  -> budget for the calls of one run's hooks
--   sandbox.breach_limit_reached(budget)   -> pt-BR message once too many hook calls broke it (or the run's cap)
--   sandbox.configure(limits)              -> process-wide limits (config key `sandbox`)
--   sandbox.run_memory_message()           -> pt-BR message once the whole-run heap cap refused memory
--   sandbox.interpret_near_run_cap()       -> JIT off for good once the heap nears the run's cap
--
-- class is "error" (the code raised an error), "time" or "memory" (it broke
-- the budget). Messages are pt-BR and name the file and line, without a
-- traceback. Time is the process CPU time, checked by a count hook every
-- CHECK_EVERY VM instructions (plan code is never JIT-compiled, so the hook
-- always fires). Memory is the growth of the Lua heap: exact in the ragops
-- binary (the bridge's allocator refuses allocations past the cap, see
-- core.heap_limit), approximate under plain LuaJIT (busted), where the hook
-- compares collectgarbage("count") to the cap. In the binary the whole Lua
-- heap of the process is also capped for the whole run (memory_mb,
-- core.heap_run_limit), and a watchdog thread (core.watchdog) ends the
-- process when a call stays inside one C function (a pattern that
-- backtracks exponentially) past watchdog_ms(budget) of CPU time: the hook
-- never runs there.
--
-- No refused allocation may be raised inside JIT-compiled code: Debian 12's
-- LuaJIT (2.1.0~beta3+git20220320) may then crash with SIGSEGV (a stale
-- frame in lj_err_mem, fixed upstream in 2d8300c1). So nothing in this file
-- is ever compiled (the wrappers plan code calls, the hook); a file loads
-- with the JIT compiler off and its traces dropped (plan code is never
-- compiled; the DSL and engine code it calls then is not either); and once
-- the heap passes 3/4 of the run's cap the JIT stays off for the rest of
-- the process (interpret_near_run_cap, at every call and pipeline stage).
-- docs/limites-e-riscos.md says what remains.
if jit then jit.off(true, true) end

local exit = require "ragops.util.exit"
local messages = require "ragops.util.messages"

local M = {}

-- Defaults of the `sandbox` config key (documented in docs/limites-e-riscos.md).
M.DEFAULTS = {
  load_ms = 2000,        -- CPU time to run a plan/config/golden file at load
  load_memory_mb = 256,  -- heap growth allowed while loading one file
  hook_ms = 100,         -- CPU time of one call of document() (or another hook)
  hook_memory_mb = 16,   -- heap growth allowed in one hook call
  max_breaches = 10,     -- hook calls over budget before the run aborts
  memory_mb = 1024,      -- the whole Lua heap of the process, for the whole run
}
M.KEYS = { "load_ms", "load_memory_mb", "hook_ms", "hook_memory_mb", "max_breaches", "memory_mb" }

-- Exit status of the process when the watchdog ends it (a plan error).
M.WATCHDOG_EXIT = exit.usage

-- VM instructions between two budget checks.
local CHECK_EVERY = 1000

local limits = {}
for key, value in pairs(M.DEFAULTS) do limits[key] = value end

local has_core, core = pcall(require, "ragops.core")
local heap_limit = has_core and core.heap_limit or nil
local heap_run_limit = has_core and core.heap_run_limit or nil
local heap_refused = has_core and core.heap_refused or nil
local watchdog = has_core and core.watchdog or nil
local heap_near_run_cap = has_core and core.heap_near_run_cap or nil
local now_ms = has_core and core.now or nil -- monotonic wall time, no system call
local clock = os.clock
local MiB = 1048576

-- A call's CPU time counts from an os.clock() reading (process CPU time: a
-- system call, ~2 µs on the benchmark's VM, once per document() call was
-- ~9 % of a cold backfill's CPU; docs/desempenho.md). A reading taken less
-- than START_REUSE x budget.ms of wall time ago is reused: the call then
-- counts from that earlier instant, never a later one (stricter by at most
-- the CPU time of that interval, about 1 % of its budget).
local START_REUSE = 0.01
local last_cpu, last_cpu_wall = 0, -math.huge

-- The os.clock() value a call under `budget` counts from.
local function start_cpu(budget)
  if not now_ms then return clock() end
  local wall = now_ms()
  if wall - last_cpu_wall < budget.ms * START_REUSE then return last_cpu end
  last_cpu_wall, last_cpu = wall, clock()
  return last_cpu
end

-- State of the call being enforced (one at a time: hooks are global in LuaJIT).
local active_budget      -- budget of the running call, nil when none
local active_fn          -- the function that call runs
local deadline           -- os.clock() value past which the call breaks the budget
local heap_ceiling_kb    -- collectgarbage("count") past which it breaks (no core)
local breach_class       -- "time" | "memory" once the running call broke its budget
local breach_message     -- pt-BR message for that breach
local armed_text         -- the message the watchdog holds (core.watchdog)

---------------------------------------------------------------------------
-- Configuration
---------------------------------------------------------------------------

-- Replaces the process-wide limits with `values` over the defaults (and
-- caps the process's Lua heap at memory_mb). Values are validated by
-- ragops.plan.config.
function M.configure(values)
  for key, value in pairs(M.DEFAULTS) do limits[key] = value end
  for key, value in pairs(values or {}) do limits[key] = value end
  if heap_run_limit then heap_run_limit(limits.memory_mb * MiB) end
end
if heap_run_limit then heap_run_limit(limits.memory_mb * MiB) end

-- CPU time after which the watchdog ends a call stuck in C: twice the
-- budget plus one second (the count hook stops Lua code at the budget).
function M.watchdog_ms(budget)
  return 2 * budget.ms + 1000
end

-- Headroom added once to the run's heap cap when it is reached, so that
-- the engine can stop the run cleanly (checkpoint, report).
M.SHUTDOWN_RESERVE_MB = 64
local run_cap_reached = false -- the run's heap cap refused an allocation

-- True when the run's cap refused an allocation since the last look; the
-- first time, lifts the cap by the shutdown reserve.
local function run_cap_refused()
  if not (heap_refused and heap_refused() == "run") then return false end
  if not run_cap_reached then
    run_cap_reached = true
    heap_run_limit((limits.memory_mb + M.SHUTDOWN_RESERVE_MB) * MiB)
  end
  return true
end

-- pt-BR message once the whole-run heap cap refused an allocation, else
-- nil. For engine code that ran out of memory: the run must stop (code 2).
function M.run_memory_message()
  if run_cap_refused() or run_cap_reached then
    return string.format("a memória do Lua do processo chegou ao limite de %d MiB (sandbox.memory_mb); "
      .. "um plano que guarda dados entre chamadas de document() ou devolve textos enormes pode causar isso: "
      .. "corrija o plano ou aumente sandbox.memory_mb na configuração", limits.memory_mb)
  end
end

-- The JIT compiler, off for good once the heap neared the run's cap
-- (jit_stopped), or paused while a file loads (jit_paused: it was on).
local jit_stopped, jit_paused = false, false

-- Safe point (between calls, never from the allocator): once the heap
-- passed 3/4 of the run's cap (core.heap_near_run_cap), turns the JIT
-- compiler off and drops its traces, so the refusal at the cap is raised
-- from the interpreter. True when the JIT is now off for good.
function M.interpret_near_run_cap()
  if jit_stopped then return true end
  if not (jit and heap_near_run_cap and heap_near_run_cap()) then return false end
  jit_stopped, jit_paused = true, false
  jit.off()
  jit.flush()
  return true
end

-- Loading a file: the JIT off and its traces dropped until resume_jit.
local function pause_jit()
  if not (jit and jit.status()) then return end
  jit_paused = true
  jit.off()
  jit.flush()
end

local function resume_jit()
  if not jit_paused then return end
  jit_paused = false
  if not jit_stopped then jit.on() end
end

function M.limits()
  local out = {}
  for key, value in pairs(limits) do out[key] = value end
  return out
end

local function new_budget(what, ms, memory_mb, key_ms, key_mb)
  return { what = what, ms = ms, bytes = memory_mb * 1048576, breaches = 0,
           keys = { time = key_ms, memory = key_mb } }
end

-- Budget to load one file; `what` names it in messages ("plano", "configuração").
function M.load_budget(what)
  local budget = new_budget(what, limits.load_ms, limits.load_memory_mb, "sandbox.load_ms", "sandbox.load_memory_mb")
  budget.interpreted = true -- the JIT off while it runs (see pause_jit)
  return budget
end

-- Budget shared by the hook calls of one run (its breach count is per run).
function M.hook_budget()
  local budget = new_budget("plano", limits.hook_ms, limits.hook_memory_mb, "sandbox.hook_ms",
    "sandbox.hook_memory_mb")
  budget.max_breaches = limits.max_breaches
  return budget
end

-- pt-BR reason to abort the run once more than max_breaches hook calls broke
-- the budget, or once the run's heap cap was reached, else nil.
function M.breach_limit_reached(budget)
  if budget.max_breaches and run_cap_reached then
    return M.run_memory_message() .. (budget.last_breach and (" (a última chamada: " .. budget.last_breach .. ")") or "")
  end
  if budget.max_breaches and budget.breaches >= budget.max_breaches then
    return string.format("%d chamadas de função do plano excederam o limite de tempo ou de memória "
      .. "(sandbox.max_breaches = %d); corrija o plano ou ajuste os limites em sandbox = { ... } da configuração"
      .. "%s", budget.breaches, budget.max_breaches,
      budget.last_breach and (" (a última: " .. budget.last_breach .. ")") or "")
  end
end

---------------------------------------------------------------------------
-- Files and compilation
---------------------------------------------------------------------------

-- The largest plan, configuration or golden file read (8 MiB; documented
-- in docs/limites-e-riscos.md): a bigger one is refused before reading.
M.MAX_FILE_BYTES = 8 * 1024 * 1024

local function too_big(what, path, size)
  return string.format("%s %s: arquivo grande demais (%.0f bytes; o limite é %d bytes)", what, path, size,
    M.MAX_FILE_BYTES)
end

-- Refuses, before opening, what is not a regular file (a FIFO would block
-- the open, /dev/zero never ends) or is over the limit. Returns true or
-- nil, err. Without ragops.core (busted) the bounded read below decides.
local function check_kind(path, what)
  if not (has_core and type(core.file_kind) == "function") then return true end
  local kind, size = core.file_kind(path)
  if kind == nil then return true end -- io.open says why, in pt-BR
  if kind ~= "file" then
    return nil, string.format("%s %s: não é um arquivo comum (%s); esperado um arquivo de texto Lua", what, path,
      kind == "directory" and "é uma pasta" or "dispositivo, FIFO ou socket")
  end
  if size > M.MAX_FILE_BYTES then return nil, too_big(what, path, size) end
  return true
end

-- Reads a whole file, at most M.MAX_FILE_BYTES. Returns its text or nil,
-- "<what> path: ..." in pt-BR.
function M.read_file(path, what)
  local ok, kind_err = check_kind(path, what)
  if not ok then return nil, kind_err end
  local handle, open_err = io.open(path, "rb")
  if not handle then
    local reason = tostring(open_err):gsub("^" .. path:gsub("%p", "%%%0") .. ": ", "")
    return nil, string.format("%s %s: não foi possível abrir o arquivo: %s", what, path, messages.translate(reason))
  end
  local text, read_err = handle:read(0) -- a folder fails here (EISDIR)
  if text or not read_err then
    local size = handle:seek("end")
    handle:seek("set")
    if size and size > M.MAX_FILE_BYTES then handle:close(); return nil, too_big(what, path, size) end
    text, read_err = handle:read(M.MAX_FILE_BYTES + 1)
  end
  handle:close()
  if not text and read_err then
    return nil, string.format("%s %s: não foi possível ler o arquivo: %s", what, path, messages.translate(read_err))
  end
  text = text or "" -- read(n) at the end of an empty file
  if #text > M.MAX_FILE_BYTES then
    return nil, string.format("%s %s: não é um arquivo comum (lido além do limite de %d bytes)", what, path,
      M.MAX_FILE_BYTES)
  end
  return text
end

-- Compiles `text` as a text-only chunk named after `path`, running in
-- `env`, with the JIT off for it and every function it defines (so the
-- count hook sees all their instructions). Returns fn or nil, raw err.
function M.compile(text, path, env)
  if text:sub(1, 1) == "\27" then
    return nil, "arquivo pré-compilado (bytecode) recusado; esperado código-fonte Lua em texto"
  end
  if text:find("\0", 1, true) then
    return nil, "arquivo binário recusado (contém bytes nulos); esperado código-fonte Lua em texto"
  end
  -- Keep line numbers: a "#!" first line becomes a comment.
  if text:sub(1, 1) == "#" then text = "--" .. text end
  local fn, err = load(text, "@" .. path, "t", env)
  if not fn then return nil, err end
  setfenv(fn, env)
  if jit then jit.off(fn, true) end
  return fn
end

---------------------------------------------------------------------------
-- Budget enforcement
---------------------------------------------------------------------------

-- "path:line" of the innermost frame, at `level` or above, running code of
-- the file that defines `fn`; just the path when no frame does (tail calls).
local function code_site(level, fn)
  local source = debug.getinfo(fn, "S").source
  for depth = level, level + 50 do
    local info = debug.getinfo(depth, "Sl")
    if not info then break end
    if info.source == source and info.currentline and info.currentline > 0 then
      return info.short_src .. ":" .. info.currentline
    end
  end
  return source:sub(1, 1) == "@" and source:sub(2) or nil
end

local BREACH_TEXT = {
  time = "excedeu o tempo limite de %d ms (%s)",
  memory = "excedeu o limite de memória de %d MiB (%s)",
  run_memory = "excedeu o limite de memória do processo inteiro, %d MiB (%s)",
}

-- pt-BR message for a breach of `budget` at `site` ("path:line" or nil);
-- text is a BREACH_TEXT key (the class, or run_memory for the run's cap).
local function breach_text(budget, text, site)
  local amount, key
  if text == "run_memory" then
    amount, key = limits.memory_mb, "sandbox.memory_mb"
  else
    amount, key = text == "time" and budget.ms or math.floor(budget.bytes / MiB), budget.keys[text]
  end
  return string.format("%s%s: " .. BREACH_TEXT[text], budget.what, site and (" " .. site) or "", amount, key)
end

-- BREACH_TEXT key of a refused allocation: which cap refused it.
local function memory_text()
  if run_cap_refused() then return "run_memory" end
  return "memory"
end

-- Marks the running call as over budget; the message names the code site
-- of the first Lua function at `level` (1 = the caller of breach) or above.
local function breach(class, level, text)
  if heap_limit then heap_limit(0) end
  breach_class = class
  breach_message = breach_text(active_budget, text or class, code_site(level + 2, active_fn))
end

-- Count hook: breaks the call once it passes its deadline or heap ceiling,
-- then keeps raising until the call has unwound.
local function check_budget()
  if not breach_class then
    if clock() > deadline then
      breach("time", 2)
    elseif heap_ceiling_kb and collectgarbage("count") > heap_ceiling_kb then
      breach("memory", 2)
    else
      return
    end
  end
  error(breach_message, 0)
end

-- Guard for string.rep: a single huge allocation happens in C, where no
-- hook runs.
local function guarded_rep(s, n, sep)
  if active_budget and type(n) == "number" and type(s) == "string" then
    local size = (#s + (type(sep) == "string" and #sep or 0)) * n
    if size > active_budget.bytes then
      breach("memory", 2)
      error(breach_message, 0)
    end
  end
  return string.rep(s, n, sep)
end

local function is_memory_error(err)
  return err == "not enough memory"
end

-- pcall/xpcall for sandboxed code: a budget breach cannot be caught.
local function rethrow_breach(ok, ...)
  if not ok and active_budget then
    if not breach_class and is_memory_error((...)) then breach("memory", 2, memory_text()) end
    if breach_class then error(breach_message, 0) end
  end
  return ok, ...
end
local function guarded_pcall(fn, ...) return rethrow_breach(pcall(fn, ...)) end
local function guarded_xpcall(fn, handler, ...) return rethrow_breach(xpcall(fn, handler, ...)) end

-- Turns an error value into "<what> path:line: texto em pt-BR". Errors
-- without a position get `file`; a path LuaJIT shortened ("...x.lua") gets
-- `file` back.
local function describe(budget, file, err)
  if type(err) == "string" and err:sub(1, #budget.what + 1) == budget.what .. " " then return err end
  local site, text
  if type(err) == "string" then
    site, text = err:match("^([^\n]-:%d+): (.*)$")
  else
    text = string.format("erro sem mensagem de texto (valor do tipo %s)", type(err))
  end
  if not site then
    site, text = file, text or err
  elseif file and site:sub(1, 3) == "..." then
    site = file .. site:match(":%d+$")
  end
  return string.format("%s %s: %s", budget.what, site or "(sem arquivo)", messages.translate(text))
end

-- Full path of the file that defines fn.
local function file_of(fn)
  local source = debug.getinfo(fn, "S").source
  if source:sub(1, 1) == "@" then return source:sub(2) end
  return nil
end

-- Message handler: keeps the site of positionless errors, no traceback.
-- (LuaJIT does not call it for memory errors: see finish.)
local function on_error(err)
  if breach_class then return breach_message end
  if type(err) == "string" and not err:match("^[^\n]-:%d+: ") then
    local site = code_site(3, active_fn)
    if site then err = site .. ": " .. err end
  end
  return err
end

-- Shapes the results of a call: true, results... or false, message, class.
local function outcome(budget, fn, class, ok, ...)
  if ok then return true, ... end
  local message = describe(budget, file_of(fn), (...))
  if class ~= "error" then budget.breaches, budget.last_breach = budget.breaches + 1, message end
  return false, message, class
end

-- Results of a call nested in another: the outer call keeps the breach.
local function nested_outcome(budget, fn, ok, ...)
  return outcome(budget, fn, breach_class or "error", ok, ...)
end

-- Ends the enforced call: restores the previous hook, lifts the cap. A
-- refused allocation unwinds without calling the message handler (LuaJIT
-- skips it for memory errors), so it is recognised here.
local function finish(budget, fn, previous_hook, previous_mask, previous_count, ok, ...)
  if watchdog then watchdog(0) end
  debug.sethook(previous_hook, previous_mask, previous_count)
  if heap_limit then heap_limit(0) end
  resume_jit()
  local class = breach_class or "error"
  active_budget, active_fn, breach_class, breach_message = nil, nil, nil, nil
  if not ok and class == "error" and is_memory_error((...)) then
    local message = breach_text(budget, memory_text(), file_of(fn))
    budget.breaches, budget.last_breach = budget.breaches + 1, message
    return false, message, "memory"
  end
  return outcome(budget, fn, class, ok, ...)
end

-- The watchdog's message for calls of fn under budget (kept per budget).
local function watchdog_text(budget, fn)
  budget.watchdog_texts = budget.watchdog_texts or setmetatable({}, { __mode = "k" })
  local text = budget.watchdog_texts[fn]
  if not text then
    local file = file_of(fn)
    text = string.format("ragops: %s%s: o código ficou %d ms de CPU sem voltar de uma função C (provavelmente "
      .. "um padrão de string.find, string.match, string.gmatch ou string.gsub com retrocesso exponencial); "
      .. "o vigia do sandbox encerrou o processo com código %d (limite: 2 x %s + 1000 ms). %s\n",
      budget.what, file and (" " .. file) or "", M.watchdog_ms(budget), M.WATCHDOG_EXIT, budget.keys.time,
      budget.max_breaches and "O lote em andamento não foi gravado; corrija o plano e rode de novo (a execução "
        .. "é retomada do último lote gravado)" or "Nada foi gravado; corrija o arquivo")
    budget.watchdog_texts[fn] = text
  end
  return text
end

-- Runs fn(...) under `budget`. Returns true, results... or false, message,
-- class ("error" | "time" | "memory"). A call made while another is being
-- enforced (a plan importing another) runs under the outer budget.
function M.call(budget, fn, ...)
  if active_budget then return nested_outcome(budget, fn, xpcall(fn, on_error, ...)) end
  active_budget, active_fn, breach_class = budget, fn, nil
  M.interpret_near_run_cap()
  if budget.interpreted then pause_jit() end
  deadline = start_cpu(budget) + budget.ms / 1000
  run_cap_refused() -- notes a refusal engine code left unread
  if watchdog then
    local text = watchdog_text(budget, fn)
    watchdog(M.watchdog_ms(budget), text ~= armed_text and text or nil, M.WATCHDOG_EXIT)
    armed_text = text
  end
  if heap_limit then
    heap_ceiling_kb = nil
    heap_limit(heap_limit(0) + budget.bytes)
  else
    heap_ceiling_kb = collectgarbage("count") + budget.bytes / 1024
  end
  local previous_hook, previous_mask, previous_count = debug.gethook()
  debug.sethook(check_budget, "", CHECK_EVERY)
  return finish(budget, fn, previous_hook, previous_mask, previous_count, xpcall(fn, on_error, ...))
end

-- Compiles and runs the text of a plan/config/golden file in `env` under a
-- load budget. Returns the value the file returns, or nil, pt-BR message
-- "<kind> path[:line]: ..." and class.
function M.run_text(text, path, kind, env)
  local budget = M.load_budget(kind)
  local fn, compile_err = M.compile(text, path, env)
  if not fn then return nil, describe(budget, path, compile_err), "error" end
  local ok, result, class = M.call(budget, fn)
  if not ok then return nil, result, class end
  return result
end

---------------------------------------------------------------------------
-- Environment
---------------------------------------------------------------------------

-- Names that exist in standard Lua but are refused inside sandboxed files.
local FORBIDDEN = {
  io = true, require = true, load = true, loadstring = true, dofile = true, loadfile = true,
  debug = true, getfenv = true, setfenv = true, collectgarbage = true, rawset = true,
  module = true, package = true, newproxy = true, jit = true, ffi = true, coroutine = true,
  setmetatable = true, getmetatable = true, gcinfo = true, bit = true,
}

local SAFE_GLOBALS = { "assert", "error", "ipairs", "pairs", "next", "select", "tonumber",
                       "tostring", "type", "unpack", "print", "rawget", "rawequal" }

local function copy_table(src, skip)
  local out = {}
  for key, value in pairs(src) do
    if not (skip and skip[key]) then out[key] = value end
  end
  return out
end

-- How refusal messages name each kind of file.
local KINDS = {
  plano = { plural = "planos", where = "no plano" },
  ["configuração"] = { plural = "configurações", where = "na configuração" },
  golden = { plural = "arquivos golden", where = "no arquivo golden" },
}

-- A fresh environment with the safe standard functions for a file of
-- `kind` ("plano", "configuração" or "golden").
function M.environment(kind)
  local names = KINDS[kind] or error("sandbox.environment: tipo de arquivo desconhecido: " .. tostring(kind), 2)
  local env = {}
  for _, name in ipairs(SAFE_GLOBALS) do env[name] = _G[name] end
  env.pcall, env.xpcall = guarded_pcall, guarded_xpcall
  env.math = copy_table(math)
  env.string = copy_table(string, { dump = true })
  env.string.rep = guarded_rep
  env.table = copy_table(table)
  env.os = setmetatable({ time = os.time, date = os.date, clock = os.clock }, {
    __index = function(_, key)
      error(string.format("os.%s não é permitido em %s (ambiente restrito: só os.time, os.date e os.clock)",
        tostring(key), names.plural), 2)
    end,
  })
  env._G = env
  return setmetatable(env, {
    __index = function(_, key)
      if FORBIDDEN[key] then
        error(string.format('"%s" não é permitido em %s (ambiente restrito, sem acesso a arquivos, '
          .. 'processos ou carregamento de código)', tostring(key), names.plural), 2)
      end
      error(string.format('variável global "%s" não definida %s', tostring(key), names.where), 2)
    end,
  })
end

return M
