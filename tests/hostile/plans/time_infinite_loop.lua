-- laço infinito ao carregar
while true do end
