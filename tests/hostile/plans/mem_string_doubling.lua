-- texto que dobra de tamanho a cada volta
local s = "x"
while true do s = s .. s end
