-- plans/reprocess_failures.lua: EXEMPLO (`ragops run reprocess_failures ...`). Um plano
-- por acervo: `ragops failures retry` roda o plano do acervo com os ajustes de
-- operations.failures_retry (mesmos lotes de 16 e 2 em paralelo deste arquivo, por padrão).
--
-- `ragops failures retry --plan reprocess_failures` ainda o usa: uma execução por
-- tipo de entidade com falhas em aberto, com entity_type e entity_id preenchidos a
-- partir da tabela ragops_failures. As entidades gravadas (ou encontradas já
-- em dia) têm suas falhas marcadas como resolvidas; o histórico fica.
local base = import "backfill.lua"

return plan {
  name = "reprocess_failures",
  description = "reprocessamento da fila de falhas",
  sources = base.sources,
  chunking = base.chunking,
  -- Lotes menores: as falhas costumam ser documentos problemáticos, e a
  -- bisseção isola os que continuam falhando com menos requisições.
  batch = { size = 16, in_flight = 2 },
  retry = base.retry,
  alerts = { failure_rate = { above = 1, window = 100, min_samples = 100, action = "warn" } },
}
