-- tabela que cresce sem fim ao carregar
local t = {}
for i = 1, 1e12 do t[i] = { i } end
