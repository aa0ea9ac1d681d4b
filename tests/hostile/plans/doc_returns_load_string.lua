-- um texto alocado ao carregar (dentro de sandbox.load_memory_mb) devolvido como
-- conteúdo de toda linha: cada lote multiplica o texto em trechos
local big = ("palavra "):rep(65536)
local n = source "n" {
  sql = "select i as id from generate_series(1, 4000) i", key = "id",
  document = function(row) return { content = big } end,
}
return plan { name = "hostil_doc_returns_load_string", sources = { n }, batch = { size = 256, in_flight = 4 } }
