-- Integration: what a document may be (issue 20, points 6 and 11) and
-- fingerprints kept true by every write (issue 19, point 18), through the
-- ragops binary on the real PostgreSQL, once per storage.
--   * content with an invalid UTF-8 byte or a NUL, metadata with a NUL or an
--     invalid key, content past chunking.max_content_bytes: each is a dead
--     letter of class invalid_document (its reason names no row content),
--     the rest of the unit is written (exit 1, not 4), and a re-run spends no
--     request on them;
--   * a document refreshed or partly re-embedded by a reindex by id carries
--     the fingerprint of the row it was written from: reverting the row is
--     noticed by the next full run (it used to be skipped forever).
local H = require "tests.integration.helper"

-- Verse 3: invalid UTF-8 content; 4: metadata with a NUL; 5: a metadata key
-- that is not UTF-8; 6: 2 MiB of content (cap 1 MiB); 7: NUL in content.
local BAD_PLAN = [[
  local verses = source "verse" { sql = "select id, book, text, updated_at from verses",
    key = "id", updated_at = "updated_at",
    document = function(r)
      if r.id == 3 then return { content = "\255" .. r.text } end
      if r.id == 4 then return { content = r.text, metadata = { x = "a\0b" } } end
      if r.id == 5 then return { content = r.text, metadata = { ["\255"] = r.book } } end
      if r.id == 7 then return { content = r.text .. "\0" } end
      return { content = r.text, metadata = { livro = r.book } }
    end }
  return plan { name = "documentos_ruins", sources = { verses }, batch = { size = 32, in_flight = 1 },
                chunking = { max_chars = 2000, overlap = 200 } }]]

local N = 30

H.each_storage(function()
  describe("um documento ruim vira falha com motivo e não bloqueia a execução (20.11, 20.6)", function()
    local url, plan
    before_each(function()
      url = H.migrated_db("ragops_it_documents", N, 0)
      H.psql(url, "update verses set text = repeat('versiculo longo ', 131072) where id = 6")
      plan = H.plan_file(BAD_PLAN)
    end)
    after_each(function() os.remove(plan); H.cleanup() end)

    it("grava o resto da unidade, registra invalid_document sem o conteúdo e sai com 1", function()
      local before = H.embed_requests()
      local code, out, err, report = H.ragops(url, "run " .. H.q(plan), { report = true })
      assert.are.equal(1, code, out .. err)
      assert.are.equal(5, report.failed)
      assert.are.equal(N - 5, report.succeeded)
      assert.are.equal(1, H.embed_requests() - before, "um pedido para as 25 entidades boas da unidade")
      assert.are.equal(N - 5, H.scalar(url, "select count(*) from rag_documents"))
      local failures = H.psql(url, [[select entity_id, error_class, message from ragops_failures
                                      where resolved_at is null order by entity_id::int]])
      local ids = {}
      for _, f in ipairs(failures) do
        ids[#ids + 1] = f[1]
        assert.are.equal("invalid_document", f[2])
        assert.is_nil(f[3]:find("And the word", 1, true), "o motivo não cita a linha: " .. f[3])
        assert.is_nil(f[3]:find("versiculo", 1, true), "o motivo não cita a linha: " .. f[3])
      end
      assert.are.same({ "3", "4", "5", "6", "7" }, ids)
      assert.matches("o conteúdo tem uma sequência que não é UTF%-8 válido no byte 1", failures[1][3])
      assert.matches("byte nulo", failures[2][3])
      assert.matches("não é UTF%-8 válido", failures[3][3])
      assert.matches("o conteúdo tem 2097152 bytes, acima do máximo de 1048576", failures[4][3])
      assert.matches("o conteúdo tem um byte nulo", failures[5][3])
      local lcode, listing = H.ragops(url, "failures list")
      assert.are.equal(0, lcode)
      assert.matches("classe: documento inválido", listing)
    end)

    it("uma reexecução não gasta nenhum pedido com eles e soma as tentativas", function()
      assert.are.equal(1, (H.ragops(url, "run " .. H.q(plan))))
      local before = H.embed_requests()
      for _ = 1, 2 do
        local code, out, err, report = H.ragops(url, "run " .. H.q(plan), { report = true })
        assert.are.equal(1, code, out .. err)
        assert.are.equal(5, report.failed)
      end
      assert.are.equal(before, H.embed_requests())
      assert.are.equal(3, H.scalar(url, "select min(attempts) from ragops_failures where resolved_at is null"))
    end)

    it("chunking.max_content_bytes no plano muda o máximo", function()
      H.psql(url, "update verses set text = repeat('xy ', 500) where id = 6")
      local function with_cap(cap)
        local f = assert(io.open(plan, "w"))
        f:write((BAD_PLAN:gsub("overlap = 200 }", "overlap = 200, max_content_bytes = " .. cap .. " }")))
        f:close()
        local code, out, err, report = H.ragops(url, "run " .. H.q(plan), { report = true })
        assert.are.equal(1, code, out .. err)
        return report
      end
      assert.are.equal(5, with_cap(1000).failed)
      assert.matches("o conteúdo tem 1500 bytes, acima do máximo de 1000", H.scalar(url,
        "select message from ragops_failures where entity_id = '6' and resolved_at is null"))
      assert.are.equal(4, with_cap(2000).failed)
      assert.are.equal(1, H.scalar(url, "select count(*) from rag_documents where entity_id = '6'"))
      assert.are.equal(0, H.scalar(url, "select count(*) from ragops_failures where entity_id = '6' and resolved_at is null"))
    end)
  end)

  describe("toda gravação de um documento mantém a impressão digital verdadeira (19.18)", function()
    local url
    local function run(args)
      local code, out, err, report = H.ragops(url, args .. " --quiet", { report = true })
      assert.are.equal(0, code, out .. err)
      return report
    end
    before_each(function()
      url = H.migrated_db("ragops_it_documents_fp", 40, 30)
      run("backfill")
    end)
    after_each(function() H.cleanup() end)

    it("metadados: reindex por id, a linha volta ao que era, e o backfill seguinte conserta", function()
      local book = H.scalar(url, "select book from verses where id = 7")
      H.psql(url, "update verses set book = 'Rev' where id = 7")
      assert.are.equal(1, run("reindex --entity-type verse --entity-id 7").refreshed)
      H.psql(url, ("update verses set book = '%s' where id = 7"):format(book))
      local report = run("backfill")
      assert.are.equal(1, report.refreshed, "o backfill depois da volta tem de notar a entidade 7")
      assert.are.equal(0, report.embedded)
      assert.are.equal(book, H.scalar(url, [[select metadata ->> 'livro' from rag_documents
                                               where entity_type = 'verse' and entity_id = '7']]))
      assert.are.equal(0, run("backfill").refreshed)
    end)

    it("o mesmo plano: um chunk depois do 0 reembedado por id, a volta é reembedada pelo run completo", function()
      local plan = H.plan_file([[
        local f = source "fortune" { sql = "select id, text, updated_at from fortunes", key = "id",
          updated_at = "updated_at", document = function(r) return { content = r.text } end }
        return plan { name = "impressao", sources = { f }, chunking = { max_chars = 2000, overlap = 200 } }]])
      run("run " .. H.q(plan))
      local chunks = H.scalar(url, "select count(*) from rag_documents where entity_type = 'fortune' and entity_id = '10'")
      assert.is_true(chunks > 1, "a fortuna 10 precisa de vários chunks")
      local original = H.scalar(url, "select md5(text) from fortunes where id = 10")
      local chunk0 = [[select indexed_at::text from rag_documents
                        where entity_type = 'fortune' and entity_id = '10' and chunk_index = 0]]
      local indexed = H.scalar(url, chunk0)
      H.psql(url, "update fortunes set text = text || ' Fim alterado.' where id = 10")
      local report = run("run " .. H.q(plan) .. " --entity-type fortune --entity-id 10")
      assert.are.equal(1, report.embedded)
      assert.are.equal(indexed, H.scalar(url, chunk0), "o chunk 0 não foi regravado")
      H.psql(url, "update fortunes set text = left(text, length(text) - length(' Fim alterado.')) where id = 10")
      assert.are.equal(original, H.scalar(url, "select md5(text) from fortunes where id = 10"))
      report = run("run " .. H.q(plan))
      assert.are.equal(1, report.embedded, "a volta do texto tem de ser reembedada")
      assert.are.equal(0, H.scalar(url, [[select count(*) from rag_documents where entity_type = 'fortune'
                                            and entity_id = '10' and content like '%Fim alterado%']]))
      assert.are.equal(0, run("run " .. H.q(plan)).embedded)
      os.remove(plan)
    end)
  end)
end)
