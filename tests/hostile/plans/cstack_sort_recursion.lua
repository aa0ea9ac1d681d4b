-- recursão pela função de comparação de table.sort ao carregar
local function compare(a, b) table.sort({ 3, 2, 1 }, compare) return a < b end
table.sort({ 3, 2, 1 }, compare)
return plan { name = "hostil_cstack_sort", sources = {} }
