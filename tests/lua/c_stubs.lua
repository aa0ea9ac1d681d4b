-- tests/lua/c_stubs.lua: stand-ins for the C modules that only exist inside
-- the ragops binary (ragops.core, .pg, .http, .embed, .vecsearch), so unit
-- specs under plain luajit can load the Lua modules that require them at
-- the top. Each stand-in is an empty table (a spec that reaches one sets
-- the functions it needs); ragops.pg keeps its quoting rule, in Lua.
-- Usage, before requiring ragops modules: require "tests.lua.c_stubs"
local C_MODULES = { "ragops.core", "ragops.pg", "ragops.http", "ragops.embed", "ragops.vecsearch" }

for _, name in ipairs(C_MODULES) do
  if not package.loaded[name] and not package.preload[name] then package.loaded[name] = {} end
end

local pg = package.loaded["ragops.pg"]
if pg and not pg.quote_ident then
  -- The C rule: always double-quote, double the embedded quotes.
  pg.quote_ident = function(name) return '"' .. name:gsub('"', '""') .. '"' end
end

return C_MODULES
