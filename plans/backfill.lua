-- plans/backfill.lua: indexa todo o acervo existente em rag_documents.
--
-- Fontes: versículos da King James (tabela verses) e textos do fortunes-br
-- (tabela fortunes), carregados por `make demo`. Reexecutar é seguro: o que
-- não mudou é ignorado pelo hash do conteúdo; o que mudou é reindexado; o que
-- sumiu da fonte é removido.
local verses = source "verse" {
  sql = [[select id, book, chapter, verse, text, updated_at from verses]],
  key = "id",
  updated_at = "updated_at",
  -- Para `ragops sync` (plans/sync.lua): mudanças pela fila de gatilhos.
  sync = { strategy = "trigger", table = "verses", key_column = "id" },
  document = function(row)
    return {
      content = row.text,
      metadata = { livro = row.book, capitulo = row.chapter, versiculo = row.verse,
                   referencia = ("%s %d:%d"):format(row.book, row.chapter, row.verse) },
    }
  end,
}

local fortunes = source "fortune" {
  sql = [[select id, text, updated_at from fortunes]],
  key = "id",
  updated_at = "updated_at",
  sync = { strategy = "trigger", table = "fortunes", key_column = "id" },
  document = function(row)
    return { content = row.text, metadata = { colecao = "fortunes-br" } }
  end,
}

return plan {
  name = "backfill",
  sources = { verses, fortunes },
  batch = { size = 64, in_flight = 4 },
  chunking = { max_chars = 2000, overlap = 200 },
  retry = { attempts = 5, base_ms = 500, max_ms = 30000 },
  alerts = { failure_rate = { above = 0.05, window = 500, min_samples = 50, action = "abort" } },
}
