-- document() que aloca sem fim
local v = source "verse" {
  sql = "select id, text from verses", key = "id",
  document = function(row)
    local t = {}
    for i = 1, 1e12 do t[i] = { i } end
    return { content = row.text }
  end,
}
return plan { name = "hostil_doc_allocates", sources = { v }, batch = { size = 1, in_flight = 1 } }
