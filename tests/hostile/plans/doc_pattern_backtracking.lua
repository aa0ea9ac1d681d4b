-- document() preso num padrão com retrocesso exponencial
local v = source "verse" {
  sql = "select id, text from verses", key = "id",
  document = function(row)
    local hit = ("a"):rep(28):find(("a*"):rep(28) .. "b")
    return { content = row.text }
  end,
}
return plan { name = "hostil_doc_pattern", sources = { v }, batch = { size = 1, in_flight = 1 } }
