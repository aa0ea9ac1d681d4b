-- document() em laço infinito
local v = source "verse" {
  sql = "select id, text from verses", key = "id",
  document = function(row)
    while true do end
    return { content = row.text }
  end,
}
return plan { name = "hostil_doc_infinite_loop", sources = { v }, batch = { size = 1, in_flight = 1 } }
