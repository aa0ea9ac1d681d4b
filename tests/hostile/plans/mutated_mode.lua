-- mode inválido depois da validação
local v = source "verse" { sql = "select id, text from verses", key = "id",
  document = function(row) return { content = row.text } end }
local p = plan { name = "hostil_mutated_mode", sources = { v } }
p.mode = "apagar_tudo"
return p
