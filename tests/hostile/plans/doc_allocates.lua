-- document() que aloca sem fim (64 KiB por volta: o teto de memória chega muito antes
-- do de tempo, mesmo numa máquina carregada)
local v = source "verse" {
  sql = "select id, text from verses", key = "id",
  document = function(row)
    local t = {}
    for i = 1, 1e12 do t[i] = string.rep("x", 65536) .. i end
    return { content = row.text }
  end,
}
return plan { name = "hostil_doc_allocates", sources = { v }, batch = { size = 1, in_flight = 1 } }
