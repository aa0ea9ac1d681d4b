-- tratador de erro de xpcall que nunca termina
xpcall(function() error("x") end, function() while true do end end)
while true do end
