-- driver.lua: the busted side of the "driver mode" specs
-- (tests/lua/embed/batch_io_spec.lua, dialect_wire_spec.lua and
-- tests/lua/provider/batch_api_spec.lua). Each of those files is also a
-- driver: run by the ragops binary through a shim RAGOPS_HOME, it drives the
-- engine's modules against a real HTTP server and prints
-- `RESULT <name>\t<json>` lines. This module finds the binary, builds the
-- shim, starts canned_server.lua with an answers file, runs a driver and
-- reads back its results and the requests the server saw.
local cjson = require "cjson"

local D = {}

-- Absolute: drivers run from / (the binary must not find lua/ beside it).
local function cwd()
  local p = io.popen("pwd")
  local dir = p:read("*l")
  p:close()
  return dir
end
D.ROOT = os.getenv("RAGOPS_SOURCE_DIR") or cwd()

-- The proxy variables unset for a driver that must reach loopback directly.
D.NO_PROXY_ENV = "env -u http_proxy -u https_proxy -u HTTP_PROXY -u HTTPS_PROXY -u ALL_PROXY -u all_proxy"

function D.q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
local q = D.q

-- The whole file at path, or nil when it cannot be read.
function D.read_all(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local text = f:read("*a")
  f:close()
  return text
end

function D.write_all(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

-- Runs a shell command; returns its exit code, stdout, stderr.
function D.sh(cmd)
  local out, err = os.tmpname(), os.tmpname()
  local status = os.execute(("%s >%s 2>%s"):format(cmd, out, err)) -- LuaJIT: the raw wait status
  local o, e = D.read_all(out) or "", D.read_all(err) or ""
  os.remove(out)
  os.remove(err)
  return status % 256 == 0 and math.floor(status / 256) or 128 + status % 128, o, e
end

-- The ASan binary tests/run_all.sh builds (RAGOPS_BIN), or one in build*/.
function D.find_bin()
  for _, path in ipairs({ os.getenv("RAGOPS_BIN") or "", D.ROOT .. "/build-test/ragops", D.ROOT .. "/build/ragops" }) do
    if path ~= "" and io.open(path, "r") then return path end
  end
  error("binário ragops não encontrado: rode com tests/run_all.sh (RAGOPS_BIN)", 0)
end

function D.temp_dir()
  local dir = os.tmpname()
  os.remove(dir)
  D.sh("mkdir -p " .. q(dir))
  return dir
end

-- A RAGOPS_HOME whose ragops.cli runs a Lua file (the driver) with the
-- source tree's modules.
function D.shim_home()
  local dir = D.temp_dir()
  D.sh("mkdir -p " .. q(dir .. "/lua/ragops/cli"))
  D.write_all(dir .. "/lua/ragops/cli/init.lua", ([[
local src = %q
package.path = src .. "/lua/?.lua;" .. src .. "/lua/?/init.lua;" .. src .. "/?.lua;" .. package.path
return { main = function(script, ...) return assert(loadfile(script))(...) end }
]]):format(D.ROOT))
  return dir
end

-- Starts canned_server.lua with the answers file at answers; returns
-- { dir, pid, base }.
function D.start_canned(answers)
  local dir = D.temp_dir()
  local p = io.popen(("luajit %s %s %s >%s 2>&1 & echo $!"):format(q(D.ROOT .. "/tests/lua/embed/canned_server.lua"),
    q(dir), q(answers), q(dir .. "/server.log")))
  local pid = p:read("*l")
  p:close()
  for _ = 1, 200 do
    local port = (D.read_all(dir .. "/port") or ""):match("^%d+$")
    if port then return { dir = dir, pid = pid, base = "http://127.0.0.1:" .. port } end
    D.sh("sleep 0.05")
  end
  error("o servidor de respostas prontas não subiu: " .. tostring(D.read_all(dir .. "/server.log")))
end

-- Stops a server of start_canned and removes its folder (nil: nothing to do).
function D.stop_canned(server)
  if not server then return end
  D.sh("kill " .. server.pid)
  D.sh("rm -rf " .. q(server.dir))
end

-- The requests a canned server saw, in order (decoded requests.log).
function D.requests(server)
  local out = {}
  for line in (D.read_all(server.dir .. "/requests.log") or ""):gmatch("[^\n]+") do out[#out + 1] = cjson.decode(line) end
  return out
end

-- Runs driver (a spec file) inside bin with RAGOPS_HOME=home from /, under
-- env (a command prefix, e.g. D.NO_PROXY_ENV), with args (already quoted).
-- Returns the exit code, the whole output (stdout and stderr) and
-- { [name] = decoded value } of its RESULT lines.
function D.run(bin, home, driver, args, env)
  local code, out, err = D.sh(("cd / && %s RAGOPS_HOME=%s %s %s %s"):format(env, q(home), q(bin), q(driver),
    table.concat(args, " ")))
  local results = {}
  for name, json in out:gmatch("RESULT ([%w_]+)\t([^\n]*)") do results[name] = cjson.decode(json) end
  return code, out .. err, results
end

return D
