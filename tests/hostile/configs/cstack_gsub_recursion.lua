-- recursão pela função de substituição de string.gsub na configuração
local function f(s) return (s:gsub(".", f)) end
f("ab")
return {}
