-- padrão com retrocesso exponencial ao carregar: string.find nunca volta, e o gancho
-- de contagem não roda dentro do C (o vigia do sandbox encerra o processo)
local hit = ("a"):rep(28):find(("a*"):rep(28) .. "b")
return plan { name = "hostil_pattern", sources = {} }
