-- document() com recursão pela função de substituição de string.gsub
local v = source "verse" {
  sql = "select id, text from verses", key = "id",
  document = function(row)
    local function f(s) return (s:gsub(".", f)) end
    return { content = f(row.text) }
  end,
}
return plan { name = "hostil_doc_gsub", sources = { v }, batch = { size = 1, in_flight = 1 } }
