-- recursão pela função de substituição de string.gsub ao carregar (sem a guarda,
-- a pilha C do LuaJIT estoura: SIGSEGV)
local function f(s) return (s:gsub(".", f)) end
f("ab")
return plan { name = "hostil_cstack_gsub", sources = {} }
