-- plans/sync.lua: mantém rag_documents em dia com as tabelas do demo
-- (`ragops sync`, `ragops sync --follow`), pela fila de mudanças alimentada
-- por gatilhos (`ragops sync install` antes). As fontes são as do
-- plans/backfill.lua; só o bloco sync é novo. Para uma origem em que o papel
-- do banco não pode criar gatilhos, troque por
--   sync = { strategy = "watermark", overlap_s = 300, deletes_every_s = 600 }
-- Veja docs/sincronizacao.md.
local verses = source "verse" {
  sql = [[select id, book, chapter, verse, text, updated_at from verses]],
  key = "id",
  updated_at = "updated_at",
  document = function(row)
    return {
      content = row.text,
      metadata = { livro = row.book, capitulo = row.chapter, versiculo = row.verse,
                   referencia = ("%s %d:%d"):format(row.book, row.chapter, row.verse) },
    }
  end,
  sync = { strategy = "trigger", table = "verses", key_column = "id" },
}

local fortunes = source "fortune" {
  sql = [[select id, text, updated_at from fortunes]],
  key = "id",
  updated_at = "updated_at",
  document = function(row)
    return { content = row.text, metadata = { colecao = "fortunes-br" } }
  end,
  sync = { strategy = "trigger", table = "fortunes", key_column = "id" },
}

return plan {
  name = "sync",
  sources = { verses, fortunes },
  batch = { size = 64, in_flight = 4 },
  chunking = { max_chars = 2000, overlap = 200 },
  retry = { attempts = 5, base_ms = 500, max_ms = 30000 },
  alerts = { failure_rate = { above = 0.05, window = 500, min_samples = 50, action = "abort" } },
}
