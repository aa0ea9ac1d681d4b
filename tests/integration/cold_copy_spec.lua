-- Integration (issue 11): the cold backfill copies a unit whose keys are
-- all new straight into the target (no staging, no upsert), on both
-- storages; a unit with stored documents still goes through the upsert;
-- and a key read as new that another writer stored meanwhile (unique
-- violation) makes the unit fall back to the upsert instead of failing.
local H = require "tests.integration.helper"

local N_VERSES, N_FORTUNES = 60, 10

-- Sets log_statement for url's database (new sessions).
local function log_statements(url, value)
  H.psql(url, ([[do $$ begin execute format('alter database %%I set log_statement = %%L',
                                              current_database(), '%s'); end $$]]):format(value))
end

-- What the server logged for url's database while fn ran (log_statement =
-- all there; a marker query delimits it in the shared log).
local function statements_during(url, fn)
  local marker = ("marcador %d %d"):format(os.time(), math.random(1e9))
  log_statements(url, "all")
  H.psql(url, ("select '%s'"):format(marker))
  fn()
  log_statements(url, "none")
  local log = H.read_all(os.getenv("RAGOPS_TEST_PGDATA") .. "/postgresql.log")
  local from = assert(log:find(marker, 1, true), "marcador ausente do log do PostgreSQL")
  return log:sub(from)
end

-- Occurrences of plain in text.
local function count(text, plain)
  local n, at = 0, 1
  while true do
    local i = text:find(plain, at, true)
    if not i then return n end
    n, at = n + 1, i + #plain
  end
end

H.each_storage(function()
  describe("backfill frio direto no destino", function()
    it("chaves novas: COPY no destino, sem staging; com metadados e updated_at certos", function()
      local url = H.migrated_db("ragops_it_cold_copy", N_VERSES, N_FORTUNES)
      local code, err, report
      local log = statements_during(url, function()
        code, _, err, report = H.ragops(url, "run plans/backfill.lua", { report = true })
      end)
      assert.are.equal(0, code, err)
      assert.are.equal(N_VERSES + N_FORTUNES, report.succeeded)
      assert.are.equal(0, count(log, 'COPY "ragops_staging'))
      assert.is_true(count(log, 'COPY "rag_documents" (') > 0)
      assert.are.equal(N_VERSES + N_FORTUNES,
        H.scalar(url, "select count(distinct (entity_type, entity_id)) from rag_documents"))
      assert.are.equal(0, H.scalar(url, [[select count(*) from rag_documents d join verses v on d.entity_id = v.id::text
        where d.entity_type = 'verse' and (d.source_updated_at is distinct from v.updated_at
                                           or d.metadata->>'livro' is distinct from v.book)]]))
      -- A changed entity has documents: its unit goes through staging + upsert.
      H.psql(url, "update verses set text = text || ' (revisto)' where id = 9")
      log = statements_during(url, function()
        code, _, err, report = H.ragops(url, "run plans/backfill.lua", { report = true })
      end)
      assert.are.equal(0, code, err)
      assert.are.equal(1, report.succeeded)
      assert.are.equal(1, count(log, 'COPY "ragops_staging'))
      assert.are.equal(0, count(log, 'COPY "rag_documents" ('))
    end)

    it("chave gravada por outro processo depois da leitura: a unidade passa ao upsert", function()
      local url = H.migrated_db("ragops_it_cold_clash", N_VERSES, N_FORTUNES)
      -- The first insert of verse 3 (only: a sequence survives the rollback)
      -- finds the key taken, as if another writer had stored it.
      H.psql(url, [[
        create sequence clash_once;
        create function clash() returns trigger language plpgsql as $$
        begin
          if new.entity_type = 'verse' and new.entity_id = '3' and nextval('clash_once') = 1 then
            insert into rag_documents (entity_type, entity_id, chunk_index, content, content_hash,
                                       embedding_model, embedding)
            values ('verse', '3', 0, 'intruso', 'x', 'x', new.embedding);
          end if;
          return new;
        end $$;
        create trigger clash before insert on rag_documents for each row execute function clash()]])
      local code, _, err, report = H.ragops(url, "run plans/backfill.lua", { report = true })
      assert.are.equal(0, code, err)
      assert.are.equal(N_VERSES + N_FORTUNES, report.succeeded)
      assert.are.equal(1, H.scalar(url, "select count(*) from rag_documents where entity_type = 'verse' and entity_id = '3'"))
      assert.matches("verse 3 of the book$",
        H.scalar(url, "select content from rag_documents where entity_type = 'verse' and entity_id = '3'"))
    end)
  end)
end)
