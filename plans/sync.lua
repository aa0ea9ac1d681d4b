-- plans/sync.lua: EXEMPLO (`--plan sync`). Um plano por acervo: `ragops sync` roda o
-- plano do acervo (plans/backfill.lua na demo); este arquivo mantém rag_documents em
-- dia com as tabelas do demo
-- (`ragops sync`, `ragops sync --follow`), pela fila de mudanças alimentada
-- por gatilhos (`ragops sync install` antes). Reaproveita as fontes de
-- plans/backfill.lua, que já declaram o bloco sync de cada uma. Para uma
-- origem em que o papel do banco não pode criar gatilhos, troque lá por
--   sync = { strategy = "watermark", overlap_s = 300, deletes_every_s = 600 }
-- Veja docs/sincronizacao.md.
local base = import "backfill.lua"

return plan {
  name = "sync",
  sources = base.sources,
  batch = base.batch,
  chunking = base.chunking,
  retry = base.retry,
  alerts = base.alerts,
}
