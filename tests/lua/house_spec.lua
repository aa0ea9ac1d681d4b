-- house_spec.lua: the house rules of lua/ragops/ (issue 21) that a reader
-- relies on: every outcome a run or command ends with is named
-- (ragops.util.exit), never a bare number; no folder holds more than
-- MAX_FILES modules. The direction of the requires is require_graph_spec.
local exit = require "ragops.util.exit"

local ROOT = os.getenv("RAGOPS_SOURCE_DIR") or "."
local MAX_FILES = 12

local function read(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("*a")
  f:close()
  return text
end

local function list(cmd)
  local out = {}
  local p = io.popen(("cd %q && %s"):format(ROOT, cmd))
  for line in p:lines() do out[#out + 1] = line end
  p:close()
  return out
end

describe("a casa (lua/ragops/)", function()
  it("todo desfecho tem nome: abort(código), { code = ... } e exit.fail usam ragops.util.exit", function()
    local bare = {}
    for _, path in ipairs(list("find lua/ragops -name '*.lua' | sort")) do
      local n = 0
      for line in (read(ROOT .. "/" .. path) .. "\n"):gmatch("([^\n]*)\n") do
        n = n + 1
        local code = line:gsub("%-%-.*$", "")
        if code:match("abort%(%s*%d") or code:match("{%s*code%s*=%s*%d") or code:match("fail%(%s*%d")
          or code:match("aborted%.code%s*[~=<>]=?%s*%d") then
          bare[#bare + 1] = ("%s:%d: %s"):format(path, n, line)
        end
      end
    end
    assert.are.same({}, bare)
  end)

  it("um erro interno tem nome próprio (exit.internal), com o código 2 do contrato", function()
    assert.are.equal(2, exit.internal)
    assert.are.equal(2, exit.usage)
    assert.are.equal(1, exit.below_threshold)
  end)

  it(("nenhuma pasta de lua/ragops/ passa de %d arquivos"):format(MAX_FILES), function()
    local counts = {}
    for _, path in ipairs(list("find lua/ragops -type f | sort")) do
      local dir = path:match("^(.*)/[^/]*$")
      counts[dir] = (counts[dir] or 0) + 1
    end
    local over = {}
    for dir, n in pairs(counts) do
      if n > MAX_FILES then over[#over + 1] = ("%s: %d arquivos"):format(dir, n) end
    end
    table.sort(over)
    assert.are.same({}, over)
  end)
end)
