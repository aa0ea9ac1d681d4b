-- string.dump alcançado pelo metatable de string; o bytecode não tem como ser carregado
local dump = ("").dump
local bytecode = dump(function() return 1 end)
local mt = getmetatable("")
