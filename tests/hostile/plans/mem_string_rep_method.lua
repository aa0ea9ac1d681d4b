-- string.rep pelo metatable de string, que não passa pelo ambiente
local s = ("x"):rep(2 ^ 30)
return s
