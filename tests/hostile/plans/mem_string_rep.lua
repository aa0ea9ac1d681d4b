-- uma alocação única enorme (string.rep)
local s = string.rep("x", 2 ^ 31 - 2)
return s
