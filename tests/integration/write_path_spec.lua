-- Integration: the write path (binary COPY of the vectors in the target
-- type's own format, staging, upsert) stores exactly what the engine stored
-- before it changed: the fingerprints below were recorded with the previous
-- write path (vectors staged as real[] and cast), on both storages, for a
-- cold backfill and for a re-run after some sources changed.
local H = require "tests.integration.helper"

-- Recorded with the previous write path (commit 042ce72) on this data set.
local COLD, COLD_DETAILS = "544cd85b5da94914f3ea63940b6bc462", "78a4c1cbb9675be9b059eab40822758c"
local CHANGED, CHANGED_DETAILS = "9a1071ccb156bfc4b79fc7f72eb047d1", "34d33947c60a7462a7578de247905da4"

-- Everything else a document carries: metadata and source_updated_at.
local function details(url)
  return H.scalar(url, [[select md5(string_agg(entity_type || ':' || entity_id || ':' || chunk_index || ':'
    || metadata::text || ':' || coalesce(extract(epoch from source_updated_at)::text, '-') || ':' || embedding_model,
    ',' order by entity_type, entity_id, chunk_index)) from rag_documents]])
end

H.each_storage(function(storage)
  describe("caminho de gravação", function()
    local url

    setup(function()
      url = H.migrated_db("ragops_it_write_path", 200, 30)
    end)

    it("backfill frio grava os mesmos vetores, chaves e hashes de antes", function()
      local code, _, err, report = H.ragops(url, "run plans/backfill.lua", { report = true })
      assert.are.equal(0, code, err)
      assert.are.equal(230, report.processed)
      assert.are.equal(COLD, H.fingerprint(url))
      assert.are.equal(COLD_DETAILS, details(url))
    end)

    it("reexecução com fontes alteradas (upsert sobre documentos existentes) também", function()
      H.psql(url, [[update verses set text = text || ' (revisto)', updated_at = updated_at + interval '1 hour'
                     where id % 20 = 0;
                   update fortunes set text = 'Curto agora ' || id where id = 10]])
      local code, _, err, report = H.ragops(url, "run plans/backfill.lua", { report = true })
      assert.are.equal(0, code, err)
      assert.are.equal(11, report.succeeded)
      assert.are.equal(CHANGED, H.fingerprint(url))
      assert.are.equal(CHANGED_DETAILS, details(url))
    end)
  end)
end)
