-- padrão com retrocesso exponencial na configuração
local hit = ("a"):rep(28):find(("a*"):rep(28) .. "b")
return {}
