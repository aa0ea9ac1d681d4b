-- laço infinito que tenta segurar o erro do orçamento com pcall
while true do
  pcall(function() while true do end end)
end
