-- document() que falha em toda linha
local v = source "verse" {
  sql = "select id, text from verses", key = "id",
  document = function(row)
    local meta = nil
    local x = meta.livro
    return { content = row.text }
  end,
}
return plan { name = "hostil_doc_errors", sources = { v }, batch = { size = 1, in_flight = 1 } }
