-- plano válido em plan { }, alterado antes de ser devolvido
local v = source "verse" { sql = "select id, text from verses", key = "id",
  document = function(row) return { content = row.text } end }
local p = plan { name = "hostil_mutated_in_flight", sources = { v } }
p.batch.in_flight = 500
return p
