-- document() que guarda 2 MiB por chamada numa tabela fora dela (um texto diferente
-- por linha): cada chamada fica dentro de sandbox.hook_memory_mb, o processo não
local kept = {}
local n = source "n" {
  sql = "select i as id, 'texto ' || i as text from generate_series(1, 1000) i", key = "id",
  document = function(row)
    local unit = ("%08d"):format(row.id)
    kept[#kept + 1] = unit:rep(2 * 1048576 / #unit)
    return { content = row.text }
  end,
}
return plan { name = "hostil_doc_keeps_memory", sources = { n }, batch = { size = 1, in_flight = 1 } }
