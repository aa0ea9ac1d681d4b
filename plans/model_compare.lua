-- plans/model_compare.lua: o portão da troca de modelo da demo, usado por
-- `ragops model compare` (docs/troca-de-modelo.md). As consultas são as de
-- plans/golden_demo.lua; aqui fica só a política: quanto a sombra pode perder
-- em relação à tabela atual antes de a troca ser recusada.
--
--   ragops model compare plans/model_compare.lua --ef-search 200
--
-- Medido na demo (1536 -> 3072 dimensões, sombra halfvec com HNSW, atual sem
-- índice): com ef_search = 200 a sombra fica a 0,023 de MRR e 0,018 de nDCG
-- da busca exata da atual, com p95 de ~60 ms. As quedas vêm do índice
-- aproximado, não do modelo: por isso a margem é 0,05, não o padrão de 0,02.
-- Sem índice na sombra, o p95 passa dos 250 ms e a troca é recusada.
local golden = import "golden_demo.lua"

golden.name = "portao-da-troca-de-modelo-demo"
golden.k = 10
golden.compare = {
  max_recall_drop = 0.05,
  max_mrr_drop = 0.05,
  max_ndcg_drop = 0.05,
  max_p95_ms = 250,
}

return golden
