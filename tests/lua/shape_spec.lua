-- shape_spec.lua: the house rules a newcomer relies on (issue 9): no
-- function in lua/ragops/, engine/ or tools/ is longer than MAX_LINES, so each one
-- can be read at once. Counted from `function` to its `end` (Lua) and from
-- a definition's opening brace line to its closing brace (C).

local MAX_LINES = { lua = 80, c = 80 } -- lua/ragops/ and engine/ (issue 21)
local ROOT = os.getenv("RAGOPS_SOURCE_DIR") or "."

local function read(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("*a")
  f:close()
  return text
end

local function list(pattern)
  local out = {}
  local p = io.popen(("cd %q && find %s -type f | sort"):format(ROOT, pattern))
  for line in p:lines() do out[#out + 1] = line end
  p:close()
  return out
end

-- Skips a long bracket [==[ ... ]==] starting at i; returns the index after it or nil.
local function skip_long(text, i)
  local eq = text:match("^%[(=*)%[", i)
  if not eq then return nil end
  local _, close = text:find("]" .. eq .. "]", i + #eq + 2, true)
  return (close or #text) + 1
end

-- { { first_line, lines } } of every Lua function in text.
local function lua_functions(text)
  local out, stack, i, line = {}, {}, 1, 1
  local openers = { ["function"] = "f", ["if"] = "b", ["do"] = "b", ["repeat"] = "r" }
  while i <= #text do
    local c = text:sub(i, i)
    local j
    if c == "\n" then line = line + 1; j = i + 1
    elseif text:sub(i, i + 1) == "--" then
      j = skip_long(text, i + 2) or ((text:find("\n", i, true) or #text + 1))
    elseif c == '"' or c == "'" then
      j = i + 1
      while j <= #text and text:sub(j, j) ~= c do
        if text:sub(j, j) == "\\" then j = j + 1 end
        j = j + 1
      end
      j = j + 1
    elseif c == "[" and skip_long(text, i) then j = skip_long(text, i)
    elseif c:match("[%a_]") then
      local word = text:match("^[%w_]+", i)
      j = i + #word
      if openers[word] then stack[#stack + 1] = { openers[word], line }
      elseif word == "end" or word == "until" then
        local top = table.remove(stack)
        if top and top[1] == "f" then out[#out + 1] = { top[2], line - top[2] + 1 } end
      end
    else j = i + 1 end
    for _ in text:sub(i, j - 1):gmatch("\n") do if c ~= "\n" then line = line + 1 end end
    i = j
  end
  return out
end

-- { { first_line, lines } } of every C function definition (brace in column 0).
local function c_functions(text)
  local out, lines = {}, {}
  for l in (text .. "\n"):gmatch("(.-)\n") do lines[#lines + 1] = l end
  for n, l in ipairs(lines) do
    if l:match("^[%a_].*%)%s*$") and lines[n + 1] == "{" then
      for m = n + 1, #lines do
        if lines[m]:match("^}") then out[#out + 1] = { n, m - n + 1 }; break end
      end
    end
  end
  return out
end

describe("forma do código", function()
  it("o contador de linhas enxerga funções aninhadas, strings e comentários", function()
    local f = lua_functions("local s = 'end' -- end\nlocal function a()\n  if x then return [[end]] end\nend\n")
    assert.are.same({ { 2, 3 } }, f)
  end)

  local title = ("nenhuma função em lua/ragops/ passa de %d linhas, nem em engine/ e tools/ de %d")
    :format(MAX_LINES.lua, MAX_LINES.c)
  it(title, function()
    local long = {}
    local function check(files, count, max)
      for _, path in ipairs(files) do
        for _, f in ipairs(count(read(ROOT .. "/" .. path))) do
          if f[2] > max then long[#long + 1] = ("%s:%d (%d linhas)"):format(path, f[1], f[2]) end
        end
      end
    end
    check(list("lua/ragops -name '*.lua'"), lua_functions, MAX_LINES.lua)
    check(list("engine tools -name '*.c'"), c_functions, MAX_LINES.c)
    assert.are.same({}, long)
  end)
end)
