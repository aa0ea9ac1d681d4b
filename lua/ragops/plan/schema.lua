-- ragops.plan.schema: every key a plan file may use, in one declarative
-- table: for each table of the DSL (plan { }, source { } and the nested
-- tables) its keys with type, default and a pt-BR description. The
-- validators (ragops.plan, ragops.sync_plan) take their lists of valid keys
-- from here (M.keys), and scripts/plan_reference.lua renders
-- docs/referencia-de-planos.md from it (tests/lua/plan_reference_spec.lua
-- keeps the two equal). Ranges and cross-key rules stay in the validators.
local M = {}

-- { id, title, about, keys = { { key, type, default, about } } }, in the
-- order of the reference. `default` is the text shown ("—" when absent:
-- optional without default); the keys' order is the order of the "chaves
-- válidas" lists in the errors.
M.SECTIONS = {
  { id = "plan", title = "plan { ... }",
    about = "O valor que o arquivo do plano devolve (`return plan { ... }`).",
    keys = {
      { "name", "texto", "obrigatória", "nome do plano (letras, dígitos, `_`, `-` ou `.`); identifica as execuções em `ragops_runs`" },
      { "description", "texto", "—", "descrição livre" },
      { "sources", "lista de fontes", "obrigatória (exceto com `run`)", "as fontes criadas com `source \"tipo\" { ... }`; tipos de entidade únicos" },
      { "batch", "tabela", "veja `batch`", "tamanho dos lotes e lotes em paralelo" },
      { "chunking", "tabela", "veja `chunking`", "como o conteúdo é dividido em trechos" },
      { "retry", "tabela", "veja `retry`", "novas tentativas dos pedidos de embedding" },
      { "embed", "tabela", "veja `embed`", "como os embeddings são pedidos: na hora (`online`) ou pela API de lotes (`batch`)" },
      { "alerts", "tabela", "veja `alerts`", "limites que avisam, pausam ou abortam a execução" },
      { "scope", "tabela", "—", "recorte da execução (tipos, ids, intervalo de `updated_at`); os filtros da linha de comando valem sobre ele" },
      { "mode", "texto", "`\"only_missing\"`", "`\"only_missing\"` (só o que mudou, pelo hash) ou `\"overwrite\"` (reprocessa tudo o que o recorte seleciona)" },
      { "delete_missing", "booleano", "`true`", "numa execução completa, remove os documentos de entidades que sumiram da fonte (sempre `false` com `limit`)" },
      { "limit", "inteiro (1 a 1.000.000.000)", "—", "no máximo N entidades por fonte: execução de sanidade, que não remove órfãos" },
      { "budget", "tabela", "—", "orçamento em US$ da execução" },
      { "run", "função `function(ctx) ... end`", "—", "plano com lógica própria, no lugar da execução padrão das fontes" },
      { "operations", "tabela", "veja `operations`", "ajustes opcionais por operação (lotes menores no `failures retry`, ...); o plano vale para todas" },
    } },
  { id = "source", title = "source \"tipo\" { ... }",
    about = "Uma fonte: de onde vêm as linhas de um tipo de entidade e como viram documentos.",
    keys = {
      { "sql", "texto (um comando SQL)", "obrigatória", "a consulta que lê as linhas da fonte (um só comando)" },
      { "key", "identificador", "obrigatória", "a coluna da consulta com a chave da entidade" },
      { "updated_at", "identificador", "—", "a coluna com a hora da última alteração (exigida por `--since`/`--until` e pela estratégia watermark)" },
      { "document", "função `function(row) ... end`", "obrigatória", "transforma uma linha em `{ content = ..., metadata = ... }` (ou `nil`: a entidade fica sem documento)" },
      { "count_sql", "texto (um comando SQL)", "—", "consulta de contagem das linhas da fonte" },
      { "description", "texto", "—", "descrição livre" },
      { "sync", "tabela", "—", "como o `ragops sync` acha as mudanças da fonte (estratégia watermark ou trigger)" },
    } },
  { id = "batch", title = "batch", keys = {
      { "size", "inteiro (1 a 2048)", "64", "entidades por lote (= `--batch-size`)" },
      { "in_flight", "inteiro (1 a 64)", "4", "lotes em paralelo (= `--in-flight`)" },
    } },
  { id = "chunking", title = "chunking", keys = {
      { "max_chars", "inteiro (100 a 1.000.000)", "2000", "tamanho máximo de um trecho, em caracteres" },
      { "overlap", "inteiro (0 a `max_chars` − 1)", "200 (no máximo `max_chars` / 10)", "caracteres repetidos entre trechos vizinhos" },
      { "max_tokens", "inteiro (25 a 250.000)", "—", "tamanho máximo de um trecho em tokens estimados (no lugar de `max_chars`: vira caracteres pela razão tokens/byte do modelo, `provider.tokens_per_byte`, ou 0,25)" },
      { "overlap_tokens", "inteiro (0 a `max_tokens` − 1)", "10% de `max_tokens`", "tokens estimados repetidos entre trechos vizinhos (com `max_tokens`)" },
      { "max_content_bytes", "inteiro (1 a 268.435.456)", "1 MiB", "maior conteúdo de um documento; acima dele, fila de falhas sem pedido ao provedor" },
    } },
  { id = "retry", title = "retry", keys = {
      { "attempts", "inteiro (0 a 100)", "5", "tentativas por pedido de embedding em cada rodada (= `--max-retries`)" },
      { "rounds", "inteiro (1 a 10)", "2", "rodadas sobre os itens que falharam" },
      { "base_ms", "inteiro (1 a 3.600.000)", "500", "espera base entre tentativas, em ms (cresce exponencialmente)" },
      { "max_ms", "inteiro (`base_ms` a 3.600.000)", "30000", "espera máxima entre tentativas, em ms" },
      { "timeout_s", "número (> 0 e até 3600)", "`provider.timeout_s` da configuração", "tempo limite de cada pedido de embedding, em segundos (= `--timeout`)" },
    } },
  { id = "embed", title = "embed",
    about = "A API de lotes da OpenAI embeda pela metade do preço em até 24 h (docs/lote-openai.md).",
    keys = {
      { "mode", "`\"online\"` ou `\"batch\"`", "`\"online\"`", "`\"batch\"`: o `backfill`, o `reindex` e o `run` mandam os textos em arquivos JSONL à API de lotes e coletam os vetores depois (= `--embed-mode`); o `sync` fica sempre online" },
      { "poll_s", "número (0,05 a 3600)", "30", "espera inicial entre consultas aos lotes em andamento, em segundos" },
      { "poll_max_s", "número (`poll_s` a 3600)", "600", "espera máxima entre consultas (a espera cresce 1,5× a cada consulta sem mudança)" },
      { "max_resubmissions", "inteiro (0 a 10)", "2", "quantas vezes um pedido que expirou (ou cujo texto mudou) volta num lote novo antes de ir para a fila de falhas" },
    } },
  { id = "alerts", title = "alerts", keys = {
      { "failure_rate", "tabela", "veja `alerts.failure_rate`", "taxa de falhas na janela recente" },
      { "rate_429_per_min", "tabela", "—", "respostas HTTP 429 por minuto" },
      { "p95_latency_ms", "tabela", "—", "latência p95 dos pedidos de embedding, em ms" },
      { "pause_ms", "inteiro (10 a 3.600.000)", "30000", "quanto uma pausa (`action = \"pause\"`) espera antes de deixar passar um lote de teste" },
    } },
  { id = "alerts.failure_rate", title = "alerts.failure_rate", keys = {
      { "above", "número (0 a 1)", "0.05", "a fração de falhas acima da qual o alerta dispara" },
      { "window", "inteiro (1 a 1.000.000)", "500", "itens recentes considerados" },
      { "min_samples", "inteiro (0 a `window`)", "50 (no máximo `window`)", "itens mínimos antes de avaliar" },
      { "action", "`\"warn\"`, `\"pause\"` ou `\"abort\"`", "`\"warn\"`", "o que fazer: avisar, pausar ou abortar (código 3)" },
    } },
  { id = "alerts.rate_429_per_min", title = "alerts.rate_429_per_min", keys = {
      { "above", "número (≥ 0)", "obrigatória", "respostas 429 por minuto acima das quais o alerta dispara" },
      { "action", "`\"warn\"`, `\"pause\"` ou `\"abort\"`", "`\"warn\"`", "o que fazer" },
    } },
  { id = "alerts.p95_latency_ms", title = "alerts.p95_latency_ms", keys = {
      { "above", "número (> 0)", "obrigatória", "latência p95, em ms, acima da qual o alerta dispara" },
      { "action", "`\"warn\"`, `\"pause\"` ou `\"abort\"`", "`\"warn\"`", "o que fazer" },
    } },
  { id = "budget", title = "budget", keys = {
      { "usd", "número (> 0 e até 1.000.000)", "obrigatória", "teto de gasto da execução em US$: para com código 3 (= `--budget-usd`)" },
    } },
  { id = "operations", title = "operations",
    about = "Um plano por acervo: `backfill`, `reindex`, `sync` e `failures retry` rodam o mesmo plano. "
      .. "Cada chave ajusta uma operação; o que ela não diz vem do plano (`batch`, `retry`, `alerts` do nível de cima). "
      .. "As flags (`--batch-size`, `--in-flight`, ...) valem sobre os dois.",
    keys = {
      { "backfill", "tabela", "—", "ajustes do `ragops backfill` (veja `operations.<operação>`)" },
      { "reindex", "tabela", "—", "ajustes do `ragops reindex`" },
      { "failures_retry", "tabela", "lotes de no máximo 16, 2 em paralelo; `alerts.failure_rate` só avisa; sempre online (`embed.mode`)", "ajustes do `ragops failures retry` (documentos problemáticos: a bisseção os isola com menos pedidos)" },
      { "sync", "tabela", "—", "ajustes do `ragops sync`" },
    } },
  { id = "operations.op", title = "operations.<operação>",
    about = "Cada seção substitui, chave a chave, a do mesmo nome no plano (em `alerts`, cada regra inteira).",
    keys = {
      { "batch", "tabela", "o `batch` do plano", "como `batch` (`size`, `in_flight`)" },
      { "retry", "tabela", "o `retry` do plano", "como `retry`" },
      { "alerts", "tabela", "o `alerts` do plano", "como `alerts`" },
    } },
  { id = "scope", title = "scope", keys = {
      { "entity_types", "lista de textos", "—", "só esses tipos de entidade (do plano)" },
      { "entity_ids", "lista de textos ou inteiros", "—", "só essas entidades" },
      { "since", "data ISO 8601", "—", "`updated_at` a partir desta data (inclusivo)" },
      { "until_", "data ISO 8601", "—", "o mesmo que `until` (nome que dispensa `[\"until\"]`)" },
      { "until", "data ISO 8601", "—", "`updated_at` antes desta data (exclusivo)" },
    } },
  { id = "sync.watermark", title = "sync (strategy = \"watermark\")",
    about = "Mudanças pela coluna `updated_at` da fonte; nenhum DDL na origem (docs/sincronizacao.md).",
    keys = {
      { "strategy", "`\"watermark\"` ou `\"trigger\"`", "obrigatória", "a estratégia" },
      { "overlap_s", "número (≥ 0)", "300", "cada passada recomeça na marca d'água menos esta sobreposição, em segundos" },
      { "deletes_every_s", "número (> 0)", "600", "intervalo mínimo entre as buscas de remoções, em segundos" },
      { "poll_s", "número (> 0)", "2", "intervalo entre passadas do `--follow`, em segundos" },
      { "soft_delete", "tabela", "—", "remoções lógicas (veja `sync.soft_delete`)" },
    } },
  { id = "sync.trigger", title = "sync (strategy = \"trigger\")",
    about = "Mudanças por uma fila alimentada por gatilhos (`ragops sync install`).",
    keys = {
      { "strategy", "`\"watermark\"` ou `\"trigger\"`", "obrigatória", "a estratégia" },
      { "table", "nome de tabela (`tabela` ou `esquema.tabela`)", "obrigatória", "a tabela de origem que recebe os gatilhos" },
      { "key_column", "identificador", "o `key` da fonte", "a coluna da tabela com a chave da entidade" },
      { "related", "lista de tabelas", "—", "tabelas relacionadas cujas mudanças afetam entidades (veja `sync.related[i]`)" },
      { "drain_every_s", "número (> 0)", "30", "intervalo da drenagem periódica da fila no `--follow`, em segundos" },
    } },
  { id = "sync.soft_delete", title = "sync.soft_delete", keys = {
      { "table", "nome de tabela", "obrigatória", "a tabela com a marca de remoção" },
      { "column", "identificador", "obrigatória", "a coluna que marca a linha removida (`true`, ou não nula em outro tipo)" },
      { "key_column", "identificador", "o `key` da fonte", "a coluna com a chave da entidade" },
      { "updated_at", "identificador", "o `updated_at` da fonte", "a coluna com a hora da alteração" },
    } },
  { id = "sync.related", title = "sync.related[i]", keys = {
      { "table", "nome de tabela", "obrigatória", "a tabela relacionada que recebe os gatilhos" },
      { "column", "identificador", "obrigatória", "a coluna cujo valor vai para `$1`" },
      { "entities", "texto (SQL com `$1`)", "obrigatória", "consulta que devolve as chaves das entidades afetadas" },
    } },
}

local BY_ID = {}
for _, section in ipairs(M.SECTIONS) do BY_ID[section.id] = section end

-- The names of the keys of section `id`, in order (a fresh list).
function M.keys(id)
  local section = BY_ID[id] or error("ragops.plan.schema: seção desconhecida: " .. tostring(id), 2)
  local out = {}
  for i, entry in ipairs(section.keys) do out[i] = entry[1] end
  return out
end

return M
