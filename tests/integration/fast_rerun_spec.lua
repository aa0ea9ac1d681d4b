-- Integration (issue 11): the re-run that skips unchanged rows without
-- calling document(). Each entity's chunk 0 keeps the fingerprint of the
-- source row (and plan) it was indexed from (source_hash); a re-run loads
-- them once and skips, in C, the rows whose fingerprint the target holds.
-- What is proven here on the real PostgreSQL, on both storages: the skip
-- really happens (a tampered content_hash is not noticed while the row is
-- the same), a missing or stale fingerprint falls back to the full path
-- (and is written back), a changed plan or --set param, a changed row and a
-- deleted row are all found, and an open dead letter is still resolved.
local H = require "tests.integration.helper"

local PLAN = [[
  local tag = params.tag or "a"
  local verses = source "verse" { sql = "select id, book, chapter, verse, text, updated_at from verses",
    key = "id", updated_at = "updated_at",
    document = function(r) return { content = r.text, metadata = { livro = r.book, tag = tag } } end }
  return plan { name = "reexecucao_rapida", sources = { verses },
    batch = { size = 4, in_flight = 2 }, chunking = { max_chars = 400, overlap = 40 } }]]

local N = 60

-- Verse 5's chunk 0 as stored: content_hash, source_hash (text or nil).
local function stored_hashes(url)
  return H.scalar(url, [[select content_hash from rag_documents
                           where entity_type = 'verse' and entity_id = '5' and chunk_index = 0]]),
         H.scalar(url, [[select source_hash::text from rag_documents
                           where entity_type = 'verse' and entity_id = '5' and chunk_index = 0]])
end

H.each_storage(function()
  describe("reexecução rápida (impressão digital da linha de origem)", function()
    local url, plan
    local function run(extra)
      local code, _, err, report = H.ragops(url, "run " .. H.q(plan) .. (extra or ""), { report = true })
      assert.are.equal(0, code, err)
      return report
    end
    before_each(function()
      url = H.migrated_db("ragops_it_fast_rerun", N, 0)
      plan = H.plan_file(PLAN)
      run()
    end)
    after_each(function() os.remove(plan); H.cleanup() end)

    it("o backfill grava a impressão digital no chunk 0 de cada entidade, e só nele", function()
      assert.are.equal(N, H.scalar(url, [[select count(*) from rag_documents
                                            where chunk_index = 0 and source_hash is not null]]))
      assert.are.equal(0, H.scalar(url, "select count(*) from rag_documents where chunk_index > 0 and source_hash is not null"))
    end)

    it("uma linha igual é pulada sem document(): um content_hash adulterado não é notado", function()
      H.psql(url, [[update rag_documents set content_hash = 'adulterado'
                     where entity_type = 'verse' and entity_id = '5' and chunk_index = 0]])
      local requests = H.embed_requests()
      local report = run()
      assert.are.equal(N, report.skipped)
      assert.are.equal(0, report.embedded)
      assert.are.equal(requests, H.embed_requests())
      assert.are.equal("adulterado", (stored_hashes(url)))
    end)

    it("sem impressão digital (documento de uma versão anterior) a linha passa pelo caminho completo e a ganha", function()
      local _, fp = stored_hashes(url)
      H.psql(url, [[update rag_documents set content_hash = 'adulterado', source_hash = null
                     where entity_type = 'verse' and entity_id = '5' and chunk_index = 0]])
      local report = run()
      assert.are.equal(1, report.embedded)
      assert.are.equal(N - 1, report.skipped)
      local content_hash, restored = stored_hashes(url)
      assert.are_not.equal("adulterado", content_hash)
      assert.are.equal(fp, restored)
    end)

    it("todas sem impressão digital (a primeira reexecução depois de migrar): nada é reembedado e elas são gravadas", function()
      H.psql(url, "update rag_documents set source_hash = null")
      local requests = H.embed_requests()
      local report = run()
      assert.are.equal(N, report.skipped)
      assert.are.equal(requests, H.embed_requests())
      assert.are.equal(N, H.scalar(url, "select count(*) from rag_documents where chunk_index = 0 and source_hash is not null"))
    end)

    it("uma linha mudada é reindexada e a sua impressão digital muda; as outras seguem puladas", function()
      local _, before = stored_hashes(url)
      H.psql(url, "update verses set text = text || ' (revisto)' where id = 5")
      local report = run()
      assert.are.equal(1, report.embedded)
      assert.are.equal(N - 1, report.skipped)
      local _, after = stored_hashes(url)
      assert.are_not.equal(before, after)
      assert.are.equal(0, run().embedded)
    end)

    it("mudar o plano ou um --set que ele lê desfaz as impressões: os metadados novos são gravados", function()
      local report = run(" --set tag=b")
      assert.are.equal(0, report.embedded)
      assert.are.equal(N, report.refreshed)
      assert.are.equal(N, H.scalar(url, "select count(*) from rag_documents where metadata->>'tag' = 'b'"))
      assert.are.equal(0, run(" --set tag=b").refreshed)
      local f = assert(io.open(plan, "w"))
      f:write((PLAN:gsub("livro = r.book", "livro = r.book .. '!'")))
      f:close()
      report = run(" --set tag=b")
      assert.are.equal(N, report.refreshed)
      assert.are.equal(N, H.scalar(url, "select count(*) from rag_documents where metadata->>'livro' like '%!'"))
    end)

    it("uma linha apagada da fonte tem os documentos removidos", function()
      H.psql(url, "delete from verses where id = 9")
      local report = run()
      assert.is_true(report.deleted >= 1)
      assert.are.equal(0, H.scalar(url, "select count(*) from rag_documents where entity_type = 'verse' and entity_id = '9'"))
      assert.are.equal(N - 1, report.skipped)
    end)

    it("uma falha aberta de uma entidade inalterada ainda é resolvida", function()
      H.psql(url, [[insert into ragops_failures (run_id, entity_type, entity_id, error_class, message, attempts)
                    values (null, 'verse', '12', 'transient', 'teste', 1)]])
      run()
      assert.are.equal(0, H.scalar(url, "select count(*) from ragops_failures where resolved_at is null"))
    end)

    it("--overwrite não pula nada", function()
      local report = run(" --overwrite")
      assert.are.equal(N, report.embedded)
    end)
  end)
end)
