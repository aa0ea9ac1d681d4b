-- uma fonte que nunca passou por source { } posta no plano já validado
local v = source "verse" { sql = "select id, text from verses", key = "id",
  document = function(row) return { content = row.text } end }
local p = plan { name = "hostil_mutated_fake_source", sources = { v } }
p.sources[2] = { entity_type = "falsa", sql = "select 1 as id", key = "id",
  document = function() return { content = "x" } end }
return p
