-- Integration: chaos on the database (issue 19 item 1). Every run mode goes
-- through the database retry policy: while each one runs, every session of
-- its database is terminated (pg_terminate_backend) twice a second. Each
-- mode must end with exit 0 and leave the table identical to the same steps
-- run without faults: a cold backfill, reindex --overwrite (the upsert
-- through staging), --only-missing after changes (upserts, stale chunks,
-- orphans), failures retry (dead letters resolved) and sync (trigger queue
-- and watermark in one follower pass).
--
-- The reference database runs the steps in order without faults; before
-- each step a copy of it is taken (CREATE DATABASE ... TEMPLATE), and that
-- step's test runs the step on the copy under chaos, with a slower
-- embed-server so that the run lasts long enough to be hit several times.
local H = require "tests.integration.helper"

local N_VERSES, N_FORTUNES = 160, 20
local CHAOS_EVERY_S = 0.5

local PLAN = [[
  local verses = source "verse" { sql = "select id, book, chapter, verse, text, updated_at from verses",
    key = "id", updated_at = "updated_at",
    sync = { strategy = "trigger", table = "verses", key_column = "id" },
    document = function(r) return { content = r.text, metadata = { livro = r.book, capitulo = r.chapter } } end }
  local fortunes = source "fortune" { sql = "select id, text, updated_at from fortunes",
    key = "id", updated_at = "updated_at",
    sync = { strategy = "watermark", overlap_s = 1, deletes_every_s = 0.5 },
    document = function(r) return { content = r.text } end }
  return plan { name = "caos", sources = { verses, fortunes },
    batch = { size = 4, in_flight = 2 },
    retry = { attempts = 8, base_ms = 20, max_ms = 300, timeout_s = 10 } }]]

-- Updates, deletions and insertions on both sources.
local CHANGES = [[
  update verses set text = text || ' (revisto)', updated_at = updated_at + interval '1 day' where id % 3 = 0;
  delete from verses where id % 17 = 0;
  insert into verses select i, 'Deu', 9, i, 'Versículo novo ' || i || ' do caos', timestamptz '2024-06-01 00:00:00+00'
    from generate_series(161, 200) i;
  update fortunes set text = text || ' (revisto)', updated_at = updated_at + interval '1 day' where id % 4 = 0;
  delete from fortunes where id = 5]]

-- Verses 60-99 change so that the rejecting embed-server fails them.
local FAILING = [[update verses set text = text || ' (de novo)', updated_at = updated_at + interval '2 days'
                   where id between 60 and 99]]
local REJECT = "--reject-pattern 'verse [6-9][0-9] of'"

-- Changes for the follower: through the trigger queue (verses) and past the
-- watermark (fortunes). Fixed times, the same on both databases.
local SYNC_CHANGES = [[
  update verses set text = text || ' (sincronizado)', updated_at = timestamptz '2025-01-01 00:00:00+00'
   where id % 4 = 1;
  delete from verses where id in (2, 3, 4, 6, 8);
  insert into verses select i, 'Num', 7, i, 'Versículo sincronizado ' || i, timestamptz '2025-01-01 00:00:00+00'
    from generate_series(201, 230) i;
  update fortunes set text = text || ' (sincronizado)', updated_at = timestamptz '2025-01-02 00:00:00+00'
   where id % 3 = 0;
  delete from fortunes where id = 7]]

-- Everything the target holds that a run decides.
local function digest(url)
  return H.psql(url, [[select count(*), md5(string_agg(entity_type || ':' || entity_id || ':' || chunk_index || ':'
      || content_hash || ':' || metadata::text || ':' || coalesce(source_updated_at::text, '-') || ':'
      || md5(embedding::real[]::text), ',' order by entity_type, entity_id, chunk_index)) from rag_documents]])[1]
end

local function open_failures(url)
  return H.scalar(url, "select count(*) from ragops_failures where resolved_at is null")
end

-- The run modes, in the order the reference runs them. before(url, plan):
-- what precedes the step on both databases, without faults; args: the
-- command; check(url, started_at): what the step must have done besides the
-- digest.
local STEPS = {
  { name = "backfill a frio", latency_ms = 300, args = "run %s" },
  { name = "reindex --overwrite (upsert pela tabela de staging)", latency_ms = 300,
    args = "run %s --overwrite --entity-type verse",
    check = function(url, started_at)
      assert.are.equal(0, H.scalar(url, ("select count(*) from rag_documents where entity_type = 'verse' "
        .. "and indexed_at < '%s'::timestamptz"):format(started_at)), "todo versículo deveria ter sido regravado")
    end },
  { name = "--only-missing com mudanças na fonte", latency_ms = 400, args = "run %s --only-missing",
    before = function(url) H.psql(url, CHANGES) end },
  { name = "failures retry", latency_ms = 1200, args = "failures retry",
    before = function(url, plan)
      local server = H.start_embed_server(REJECT)
      H.psql(url, FAILING)
      local code, _, err = H.ragops(url, "run " .. H.q(plan), { env = { RAGOPS_EMBED_URL = server.url } })
      H.stop_embed_server(server)
      assert.are.equal(1, code, err)
      assert.is_true(open_failures(url) >= 30, "deveria haver falhas em aberto para reprocessar")
    end,
    check = function(url) assert.are.equal(0, open_failures(url)) end },
  { name = "sync (fila de gatilhos e marca d'água)", latency_ms = 500, args = "sync %s",
    before = function(url, plan)
      local code, _, err = H.ragops(url, "sync install " .. H.q(plan))
      assert.are.equal(0, code, err)
      H.psql(url, SYNC_CHANGES)
    end,
    check = function(url)
      assert.are.equal(0, H.scalar(url, "select count(*) from ragops_sync.changes"))
    end },
}

-- Runs `ragops ARGS` on url in the background while every session of its
-- database is terminated every CHAOS_EVERY_S. Returns the exit code, stderr
-- and how many sessions were terminated.
local function under_chaos(url, args, env)
  local db = url:match("/([%w_]+)$")
  local admin = H.db_url("postgres")
  local job = H.ragops_background(url, args, { env = env })
  local terminated = 0
  for _ = 1, 600 do
    H.sleep(CHAOS_EVERY_S)
    if not H.alive(job.pid) then break end
    terminated = terminated + H.scalar(admin, ([[select count(*) from (select pg_terminate_backend(pid)
      from pg_stat_activity where datname = '%s' and pid <> pg_backend_pid()) t]]):format(db))
  end
  local code = H.exit_code(job)
  local err = H.read_all(job.err)
  os.remove(job.out); os.remove(job.err); os.remove(job.code_file)
  return code, err, terminated
end

-- A copy of the database `from` named `name` (inside H.each_storage, with
-- the storage's suffix, as H.fresh_db names them); returns its URL.
local function copy_db(from, name)
  if H.storage then name = name .. "_" .. H.storage:match("^%a+") end
  local admin = H.db_url("postgres")
  H.psql(admin, ("drop database if exists %s with (force)"):format(name))
  H.psql(admin, ("create database %s template %s"):format(name, from:match("/([%w_]+)$")))
  return H.db_url(name)
end

-- pgvector's storage when the server has it (the production target), else real[].
H.each_storage(function()
  describe("caos no PostgreSQL: sessões encerradas durante cada modo de execução", function()
    local plan, copies, expected = nil, {}, {}

    setup(function()
      plan = H.plan_file(PLAN)
      local clean = H.migrated_db("ragops_it_caos_ref", N_VERSES, N_FORTUNES)
      for i, step in ipairs(STEPS) do
        copies[i] = copy_db(clean, "ragops_it_caos_" .. i)
        if step.before then step.before(clean, plan) end
        local code, _, err = H.ragops(clean, step.args:format(H.q(plan)))
        assert(code == 0, ("passo %q sem falhas terminou com %s: %s"):format(step.name, tostring(code), err))
        expected[i] = digest(clean)
      end
    end)

    teardown(function() os.remove(plan) end)
    after_each(function() H.cleanup() end)

    for i, step in ipairs(STEPS) do
      it(step.name .. ": código 0 e a tabela igual à de uma execução sem falhas", function()
        local url = copies[i]
        if step.before then step.before(url, plan) end
        local started_at = H.scalar(url, "select now()::text")
        local server = H.start_embed_server("--latency-ms " .. step.latency_ms)
        local code, err, terminated = under_chaos(url, step.args:format(H.q(plan)), { RAGOPS_EMBED_URL = server.url })
        H.stop_embed_server(server)
        assert.are.equal(0, code, err)
        assert.is_true(terminated >= 2, ("o caos deveria ter encerrado sessões durante a execução (%d)\n%s")
          :format(terminated, err))
        assert.are.same(expected[i], digest(url))
        if step.check then step.check(url, started_at) end
      end)
    end
  end)
end, H.storages[#H.storages])
