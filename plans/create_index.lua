-- plans/create_index.lua: parâmetros versionados do índice vetorial (pgvector).
--
-- Criar o índice é DDL, não um backfill: não há fontes nem embeddings. Este
-- plano existe para que os valores de produção fiquem versionados ao lado dos
-- outros planos e revisados como código. Quem executa é `ragops index create`
-- (lua/ragops/vector/index.lua): ele carrega este arquivo, chama run() e usa a
-- tabela devolvida como padrão; as flags da linha de comando têm precedência.
-- Veja docs/indice-vetorial.md.
--
-- Valores do runbook (rag-runbook-operacao.md, seção 5):
--   * IVFFlat com distância de cosseno (os embeddings da OpenAI são normalizados);
--   * lists = 64 em desenvolvimento (custo baixo) e 2000 em produção, depois
--     que a tabela estiver bem populada (faixa 1000–4000);
--   * maintenance_work_mem = 2GB em desenvolvimento, 4GB em produção;
--   * probes = 10 nas sessões de consulta (faixa 10–20: recall × latência).
-- `--lists` continua obrigatório em `ragops index create --method ivfflat`:
-- um índice de produção (2000 listas) criado por engano numa tabela pequena
-- tem recall ruim, então o operador escolhe o perfil explicitamente.
return plan {
  name = "create_index",
  description = "índice vetorial IVFFlat/HNSW (pgvector) para rag_documents",
  run = function(ctx)
    return {
      method = "ivfflat",
      opclass = "cosine",
      lists = { dev = 64, prod = 2000 },
      maintenance_work_mem = { dev = "2GB", prod = "4GB" },
      -- HNSW (alternativa; pgvector >= 0.5.0): padrões do próprio pgvector.
      m = 16,
      ef_construction = 64,
      -- Configurações de sessão de quem consulta (não fazem parte do índice).
      probes = 10,
      probes_range = { 10, 20 },
      ef_search = 40,
    }
  end,
}
