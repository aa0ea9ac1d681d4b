-- document() que tenta sair do ambiente
local v = source "verse" {
  sql = "select id, text from verses", key = "id",
  document = function(row)
    os.execute("touch /tmp/ragops-hostile-escape")
    return { content = row.text }
  end,
}
return plan { name = "hostil_doc_escape", sources = { v }, batch = { size = 1, in_flight = 1 } }
