-- require_graph_spec.lua: dependencies in lua/ragops/ point down (issue 21).
-- Every `require "ragops.…"` of every module (lazy ones inside functions and
-- pcall(require, "ragops.…") included) is an edge from the module's room
-- (its folder under lua/ragops/) to the required module's room; an edge to a
-- room above in ORDER fails. Within a room anything goes. docs/arquitetura.md
-- explains the order.
local ROOT = os.getenv("RAGOPS_SOURCE_DIR") or "."

-- Top to bottom. testing.lua (the public API of plan specs) sits with cli:
-- both only use rooms below. "engine" is the C modules (ragops.core, .pg...).
local ORDER = { "cli", "sync", "run", "report", "vector", "store", "plan", "provider", "obs", "util", "engine" }
local TOP_FILES = { testing = "cli" }
local C_MODULES = { core = true, pg = true, embed = true, http = true, httpd = true, vecsearch = true }

local LEVEL = {}
for i, room in ipairs(ORDER) do LEVEL[room] = i end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("*a")
  f:close()
  return text
end

local function modules()
  local out = {}
  local p = io.popen(("cd %q && find lua/ragops -name '*.lua' | sort"):format(ROOT))
  for line in p:lines() do out[#out + 1] = line end
  p:close()
  return out
end

-- The room of a module file (lua/ragops/run/stages/read.lua -> "run").
local function room_of_file(path)
  local rel = path:gsub("^lua/ragops/", "")
  local folder = rel:match("^([^/]+)/")
  return folder or TOP_FILES[rel:gsub("%.lua$", "")] or rel
end

-- The room of a module name (ragops.store.pg -> "store", ragops.pg -> "engine").
local function room_of_module(name)
  local first = name:match("^ragops%.([%w_]+)")
  if C_MODULES[first] and not name:find("^ragops%.[%w_]+%.") then return "engine" end
  return TOP_FILES[first] or first
end

-- Every ragops module text requires: plain, parenthesised and through pcall.
local function required(text)
  local out = {}
  text = text:gsub("%-%-%[(=*)%[.-%]%1%]", ""):gsub("%-%-[^\n]*", "")
  for _, pattern in ipairs({ "require%s*%(?%s*[\"'](ragops%.[%w_%.]+)[\"']",
                             "pcall%(%s*require%s*,%s*[\"'](ragops%.[%w_%.]+)[\"']" }) do
    for name in text:gmatch(pattern) do out[#out + 1] = name end
  end
  return out
end

describe("grafo de require de lua/ragops/", function()
  it("lê toda forma de require, as preguiçosas (dentro de funções) também", function()
    local got = required([[local a = require "ragops.store.pg"
      local function f() return require("ragops.sync.queue").x end
      local ok, c = pcall(require, "ragops.core")
      -- require "ragops.cli" (a comment: not an edge)]])
    assert.are.same({ "ragops.store.pg", "ragops.sync.queue", "ragops.core" }, got)
    assert.are.equal("engine", room_of_module("ragops.core"))
    assert.are.equal("store", room_of_module("ragops.store.pg"))
    assert.are.equal("run", room_of_file("lua/ragops/run/stages/read.lua"))
    assert.are.equal("cli", room_of_file("lua/ragops/testing.lua"))
  end)

  it("toda pasta de lua/ragops/ tem lugar na ordem declarada", function()
    local unknown = {}
    for _, path in ipairs(modules()) do
      local room = room_of_file(path)
      if not LEVEL[room] then unknown[#unknown + 1] = path .. " (sala " .. room .. ")" end
    end
    assert.are.same({}, unknown)
  end)

  it("nenhum módulo requer um de sala acima da sua (" .. table.concat(ORDER, " → ") .. ")", function()
    local up = {}
    for _, path in ipairs(modules()) do
      local from = room_of_file(path)
      for _, name in ipairs(required(read(ROOT .. "/" .. path))) do
        local to = room_of_module(name)
        if not LEVEL[to] then
          up[#up + 1] = ("%s requer %s: sala %s desconhecida"):format(path, name, tostring(to))
        elseif LEVEL[from] and LEVEL[to] < LEVEL[from] then
          up[#up + 1] = ("%s (%s) requer %s (%s, acima)"):format(path, from, name, to)
        end
      end
    end
    assert.are.same({}, up)
  end)
end)
