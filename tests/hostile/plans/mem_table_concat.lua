-- table.concat de muitas referências ao mesmo texto grande
local big = ("x"):rep(2 ^ 20)
local t = {}
for i = 1, 4096 do t[i] = big end
local s = table.concat(t)
return s
