-- plans/reindex.lua: EXEMPLO (`--plan reindex`). Um plano por acervo: `ragops reindex`
-- roda o plano do acervo (plans/backfill.lua na demo) recortado pelos filtros; este
-- arquivo só mostra um plano que importa outro e dá outro nome à operação.
--
-- O recorte vem dos parâmetros (flags de `ragops reindex` ou --set):
--   entity_type = "verse,fortune"   tipos de entidade (separados por vírgula)
--   entity_id   = "12,13"           entidades específicas (exige entity_type)
--   since/until = datas ISO 8601    intervalo de updated_at (since inclusivo, until exclusivo)
--   mode        = "overwrite"       reembeda mesmo o que não mudou (troca de modelo)
-- O motor aplica esses parâmetros a qualquer plano; este arquivo só dá nome à
-- operação e reaproveita as fontes de backfill.lua, sem duplicá-las.
local base = import "backfill.lua"

return plan {
  name = "reindex",
  description = "reindexação por tipo, intervalo de datas ou entidade",
  sources = base.sources,
  batch = base.batch,
  chunking = base.chunking,
  retry = base.retry,
  alerts = base.alerts,
}
