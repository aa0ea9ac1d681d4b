-- batch.size negativo depois da validação
local v = source "verse" { sql = "select id, text from verses", key = "id",
  document = function(row) return { content = row.text } end }
local p = plan { name = "hostil_mutated_batch_size", sources = { v } }
p.batch.size = -1
return p
