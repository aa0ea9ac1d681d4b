-- Integration: `ragops sync` (issue 12). Trigger strategy: install and
-- uninstall (idempotent, plan change explained, no privilege explained),
-- --follow applying updates, deletes and inserts, coalescing, the
-- joined-table mapping, two followers sharing the queue, kill -9 during a
-- burst (every change applied, none twice); watermark strategy: changes
-- since the watermark and deletions by the anti-join. Real PostgreSQL and
-- the suite's embed-server (embedding inputs counted with GET /stats).
local H = require "tests.integration.helper"
local cjson = require "cjson"

local N_VERSES, N_FORTUNES = 300, 20

local function plan_text(opts)
  opts = opts or {}
  return ([[
  local verses = source "verse" {
    sql = "select v.id, v.text, v.updated_at, coalesce(b.title, '') as title from verses v left join books b on b.abbrev = v.book",
    key = "id", updated_at = "updated_at",
    document = function(r) return { content = r.title .. " " .. r.text } end,
    sync = %s }
  local fortunes = source "fortune" { sql = "select id, text, updated_at from fortunes",
    key = "id", updated_at = "updated_at",
    document = function(r) return { content = r.text } end,
    sync = %s }
  return plan { name = %q, sources = { verses, fortunes }, batch = { size = 64, in_flight = 4 },
    retry = { attempts = 5, base_ms = 20, max_ms = 200, timeout_s = 10 } }]]):format(
    opts.verse_sync or [[{ strategy = "trigger", table = "verses",
      related = { { table = "books", column = "abbrev", entities = "select id from verses where book = $1" } } }]],
    opts.fortune_sync or [[{ strategy = "trigger", table = "fortunes" }]], opts.name or "sinc")
end

local function embed_inputs()
  local base = H.embed_url:gsub("/v1/?$", "")
  local code, out = H.sh("curl -fsS " .. H.q(base .. "/stats"))
  assert(code == 0, "GET /stats falhou")
  return cjson.decode(out).inputs
end

-- A database with the sources, a books table, the engine's tables and a
-- first backfill through the plan (so the index starts in step).
local function synced_db(name, plan, n_verses)
  local url = H.migrated_db(name, n_verses or N_VERSES, N_FORTUNES)
  H.psql(url, [[create table books (abbrev text primary key, title text not null);
                insert into books values ('Gen', 'Genesis'), ('Exo', 'Exodus'), ('Lev', 'Leviticus'),
                                         ('Num', 'Numbers'), ('Deu', 'Deuteronomy')]])
  local code, _, err = H.ragops(url, "run " .. H.q(plan) .. " --quiet")
  assert(code == 0, err)
  return url
end

local function hashes(url)
  local out = {}
  for _, r in ipairs(H.psql(url, "select entity_type || ':' || entity_id, content_hash from rag_documents where chunk_index = 0")) do
    out[r[1]] = r[2]
  end
  return out
end

local function queue_depth(url)
  return H.scalar(url, "select count(*) from ragops_sync.changes")
end

-- Waits (at most timeout_s) until the queue is empty.
local function wait_drained(url, timeout_s)
  for _ = 1, (timeout_s or 60) * 10 do
    if queue_depth(url) == 0 then return true end
    H.sleep(0.1)
  end
  return false
end

local function wait_until(pred, timeout_s)
  for _ = 1, (timeout_s or 60) * 10 do
    if pred() then return true end
    H.sleep(0.1)
  end
  return false
end

local function stop(job)
  H.sh("kill -TERM " .. job.pid)
  return H.exit_code(job, 60)
end

-- Entities whose hash differs between two hash maps (and keys only in one).
local function changed(before, after)
  local out = {}
  for k, h in pairs(after) do if before[k] ~= h then out[#out + 1] = k end end
  for k in pairs(before) do if after[k] == nil then out[#out + 1] = k end end
  table.sort(out)
  return out
end

describe("ragops sync", function()
  local plan
  setup(function() plan = H.plan_file(plan_text()) end)
  teardown(function() os.remove(plan) end)
  after_each(function() H.cleanup() end)

  it("install é idempotente, explica um plano mudado e uninstall remove exatamente o que criou", function()
    local url = synced_db("ragops_it_sync_install", plan)
    local triggers_before = H.scalar(url, "select count(*) from pg_trigger where not tgisinternal")
    local code, out, err = H.ragops(url, "sync install " .. H.q(plan))
    assert.are.equal(0, code, err)
    assert.matches("6 gatilho", out) -- a row trigger and a TRUNCATE trigger on each of the 3 tables
    assert.are.equal(triggers_before + 6, H.scalar(url, "select count(*) from pg_trigger where not tgisinternal"))
    code, out, err = H.ragops(url, "sync install " .. H.q(plan))
    assert.are.equal(0, code, err)
    assert.matches("já está instalado", out)
    assert.are.equal(triggers_before + 6, H.scalar(url, "select count(*) from pg_trigger where not tgisinternal"))
    assert.is_falsy(err:find("NOTICE", 1, true))
    -- the same plan name asking for other triggers: refused, explained, nothing changed
    local other = H.plan_file(plan_text({ fortune_sync = [[{ strategy = "watermark" }]] }))
    code, _, err = H.ragops(url, "sync install " .. H.q(other))
    os.remove(other)
    assert.are.equal(2, code)
    assert.matches("mudou desde o `ragops sync install`", err)
    assert.matches("ragops sync uninstall", err)
    assert.are.equal(triggers_before + 6, H.scalar(url, "select count(*) from pg_trigger where not tgisinternal"))
    code, out, err = H.ragops(url, "sync uninstall " .. H.q(plan))
    assert.are.equal(0, code, err)
    assert.matches("6 gatilho", out)
    assert.are.equal(triggers_before, H.scalar(url, "select count(*) from pg_trigger where not tgisinternal"))
    assert.are.equal(0, H.scalar(url, "select count(*) from pg_namespace where nspname = 'ragops_sync'"))
    assert.are.equal(0, H.scalar(url, "select count(*) from pg_proc p join pg_namespace n on n.oid = p.pronamespace where n.nspname = 'ragops_sync'"))
    code, _, err = H.ragops(url, "sync uninstall " .. H.q(plan))
    assert.are.equal(0, code, err)
    -- sync without the queue: a clear pointer to install
    code, _, err = H.ragops(url, "sync " .. H.q(plan))
    assert.are.equal(2, code)
    assert.matches("ragops sync install", err)
  end)

  it("sem permissão para alterar a tabela: erro claro em pt-BR apontando a estratégia watermark", function()
    local url = synced_db("ragops_it_sync_priv", plan)
    H.psql(url, [[do $$ begin
                    if not exists (select 1 from pg_roles where rolname = 'ragops_sem_dono') then
                      create role ragops_sem_dono login;
                    end if; end $$]])
    local db = url:match("/([^/]+)$")
    H.psql(url, ("grant create on database %s to ragops_sem_dono; grant select on verses, fortunes, books to ragops_sem_dono"):format(db))
    local limited = url:gsub("//([^@/]*)@", "//ragops_sem_dono@")
    local code, _, err = H.ragops(limited, "sync install " .. H.q(plan))
    assert.are.equal(2, code)
    assert.matches("não tem permissão para criar os gatilhos", err)
    assert.matches('strategy = "watermark"', err)
    assert.are.equal(0, H.scalar(url, "select count(*) from pg_namespace where nspname = 'ragops_sync'"))
  end)

  it("--follow aplica atualizações, remoções e inserções de uma transação e nada mais", function()
    local url = synced_db("ragops_it_sync_follow", plan)
    assert.are.equal(0, (H.ragops(url, "sync install " .. H.q(plan))))
    local before = hashes(url)
    local port = H.free_port()
    local job = H.ragops_background(url, "sync " .. H.q(plan) .. " --follow --follower f1 --metrics-listen :" .. port)
    assert.is_true(wait_until(function()
      return H.scalar(url, "select count(*) from ragops_runs where plan = 'sync:sinc' and status = 'running' and heartbeat_at is not null") == 1
    end, 30))
    local inputs = embed_inputs()
    H.psql(url, [[begin;
      update verses set text = text || ' (revisado)' where id <= 100;
      delete from fortunes where id in (3, 4, 5);
      insert into verses values (9001, 'Gen', 9, 1, 'Um versículo novo', now()), (9002, 'Exo', 9, 2, 'Outro novo', now());
      commit]])
    assert.is_true(wait_until(function()
      return queue_depth(url) == 0 and H.scalar(url, "select count(*) from rag_documents where entity_id in ('9001', '9002')") == 2
    end, 30))
    local after = hashes(url)
    local expected = { "fortune:3", "fortune:4", "fortune:5", "verse:9001", "verse:9002" }
    for i = 1, 100 do expected[#expected + 1] = "verse:" .. i end
    table.sort(expected)
    assert.are.same(expected, changed(before, after))
    assert.are.equal(102, embed_inputs() - inputs)
    -- the follower's endpoint exports the queue depth and lag per entity type
    local _, metrics, curl_err = H.sh(("curl -sS --max-time 10 http://127.0.0.1:%d/metrics"):format(port))
    assert.matches('ragops_sync_queue_depth{entity_type="verse",plan="sinc"} 0', metrics, 1, true,
      curl_err .. "\n" .. H.read_all(job.err))
    assert.matches('ragops_sync_lag_seconds{entity_type="verse",plan="sinc"}', metrics, 1, true)
    assert.are.equal(130, stop(job))
    -- the index is what a backfill of the final source gives: nothing left to do
    local code, _, err, rep = H.ragops(url, "run " .. H.q(plan), { report = true })
    assert.are.equal(0, code, err)
    assert.are.equal(0, rep.embedded)
    assert.are.equal(0, rep.deleted)
  end)

  it("coalesce mudanças repetidas da mesma entidade e mapeia a tabela relacionada para as entidades afetadas", function()
    local url = synced_db("ragops_it_sync_coalesce", plan)
    assert.are.equal(0, (H.ragops(url, "sync install " .. H.q(plan))))
    for i = 1, 5 do H.psql(url, ("update verses set text = 'versão %d' where id = 7"):format(i)) end
    assert.are.equal(5, queue_depth(url))
    -- ragops status shows the queue depth and lag per entity type
    local scode, sout, serr = H.ragops(url, "status --json --plan " .. H.q(plan))
    assert.are.equal(0, scode, serr)
    local st = cjson.decode(sout)
    assert.are.equal(1, #st.sync_queue)
    assert.are.equal("verse", st.sync_queue[1].entity_type)
    assert.are.equal(5, st.sync_queue[1].depth)
    assert.is_true(st.sync_queue[1].lag_s >= 0)
    local metrics = os.tmpname()
    local config = H.config_file(("metrics = { file = %q }"):format(metrics))
    local inputs = embed_inputs()
    local code, _, err, rep = H.ragops(url, "sync " .. H.q(plan) .. " --config " .. H.q(config), { report = true })
    os.remove(config)
    assert.are.equal(0, code, err)
    local prom = H.read_all(metrics)
    os.remove(metrics)
    assert.matches('ragops_sync_queue_depth{[^}]*entity_type="verse"[^}]*} 0', prom)
    assert.matches('ragops_sync_lag_seconds{[^}]*entity_type="fortune"[^}]*} 0', prom)
    assert.are.equal(1, rep.embedded)
    assert.are.equal(1, embed_inputs() - inputs)
    assert.are.equal("versão 5", H.scalar(url, "select content from rag_documents where entity_type = 'verse' and entity_id = '7'"):match("versão %d"))
    -- a change in books re-syncs the verses of that book, and only them
    local before = hashes(url)
    local n_gen = H.scalar(url, "select count(*) from verses where book = 'Gen'")
    H.psql(url, "update books set title = 'Gênesis' where abbrev = 'Gen'")
    code, _, err, rep = H.ragops(url, "sync " .. H.q(plan), { report = true })
    assert.are.equal(0, code, err)
    assert.are.equal(n_gen, rep.embedded)
    local moved = changed(before, hashes(url))
    assert.are.equal(n_gen, #moved)
    assert.are.equal(n_gen, H.scalar(url, "select count(*) from rag_documents where entity_type = 'verse' and content like 'Gênesis %'"))
    assert.are.equal(0, queue_depth(url))
  end)

  it("dois seguidores dividem a fila: cada mudança é aplicada por um só", function()
    local url = synced_db("ragops_it_sync_two", plan, 2000)
    assert.are.equal(0, (H.ragops(url, "sync install " .. H.q(plan))))
    local a = H.ragops_background(url, "sync " .. H.q(plan) .. " --follow --follower a")
    local b = H.ragops_background(url, "sync " .. H.q(plan) .. " --follow --follower b")
    assert.is_true(wait_until(function()
      return H.scalar(url, "select count(*) from ragops_runs where plan = 'sync:sinc' and status = 'running' and heartbeat_at is not null") == 2
    end, 30))
    -- a third one with a name already following is refused
    local code, _, err = H.ragops(url, "sync " .. H.q(plan) .. " --follower a")
    assert.are.equal(2, code)
    assert.matches('o seguidor "a" do plano "sinc" já está rodando', err)
    local inputs = embed_inputs()
    for i = 0, 3 do
      H.psql(url, ("update verses set text = text || ' v2' where id > %d and id <= %d"):format(i * 500, (i + 1) * 500))
    end
    assert.is_true(wait_drained(url, 120))
    assert.are.equal(2000, embed_inputs() - inputs)
    assert.are.equal(130, stop(a))
    assert.are.equal(130, stop(b))
    local rows = H.psql(url, "select params ->> 'follower', (report ->> 'embedded')::int from ragops_runs where plan = 'sync:sinc' order by 1")
    assert.are.equal(2, #rows)
    assert.are.equal(2000, tonumber(rows[1][2]) + tonumber(rows[2][2]))
    assert.is_true(tonumber(rows[1][2]) > 0 and tonumber(rows[2][2]) > 0, "os dois seguidores trabalharam")
  end)

  it("kill -9 durante uma rajada de 10.000 atualizações: ao reiniciar, todas aplicadas, nenhuma duas vezes", function()
    local url = synced_db("ragops_it_sync_kill", plan, 10000)
    assert.are.equal(0, (H.ragops(url, "sync install " .. H.q(plan))))
    local inputs = embed_inputs()
    local job = H.ragops_background(url, "sync " .. H.q(plan) .. " --follow --follower k")
    for i = 0, 19 do
      H.psql(url, ("update verses set text = text || ' rajada' where id > %d and id <= %d"):format(i * 500, (i + 1) * 500))
    end
    assert.is_true(wait_until(function() return queue_depth(url) < 9000 end, 60))
    H.sh("kill -9 " .. job.pid)
    H.exit_code(job, 30)
    assert.is_true(queue_depth(url) > 0, "o seguidor morreu com mudanças pendentes")
    job = H.ragops_background(url, "sync " .. H.q(plan) .. " --follow --follower k")
    assert.is_true(wait_drained(url, 180))
    local spent = embed_inputs() - inputs
    assert.are.equal(130, stop(job))
    -- at most the units not yet committed at the kill again: in_flight
    -- embedding, one waiting for a writer and min(in_flight, 8) writing
    -- (ragops.run.pipeline process_units), of batch.size each
    assert.is_true(spent >= 10000 and spent <= 10000 + (4 + 1 + 4) * 64, "embeddings pedidos: " .. spent)
    assert.are.equal(10000, H.scalar(url, "select count(*) from rag_documents where entity_type = 'verse' and content like '% rajada'"))
    local code, _, err, rep = H.ragops(url, "run " .. H.q(plan), { report = true })
    assert.are.equal(0, code, err)
    assert.are.equal(0, rep.embedded)
  end)

  it("PostgreSQL reiniciado sob o seguidor: reconecta, volta a escutar e alcança as mudanças", function()
    local pgdata, pgport = os.getenv("RAGOPS_TEST_PGDATA"), os.getenv("RAGOPS_TEST_PGPORT")
    assert.is_not_nil(pgdata, "RAGOPS_TEST_PGDATA ausente (rode com tests/run_all.sh)")
    local url = synced_db("ragops_it_sync_pgrestart", plan)
    assert.are.equal(0, (H.ragops(url, "sync install " .. H.q(plan))))
    local job = H.ragops_background(url, "sync " .. H.q(plan) .. " --follow --follower r")
    assert.is_true(wait_until(function()
      return H.scalar(url, "select count(*) from ragops_runs where plan = 'sync:sinc' and heartbeat_at is not null") == 1
    end, 30))
    assert.are.equal(0, (H.sh(("cd %s && scripts/pg.sh stop %s"):format(H.q(H.source_dir), H.q(pgdata)))))
    H.sleep(1)
    local start_code, _, start_err = H.sh(("cd %s && scripts/pg.sh start --fast %s %s ragops_test"):format(
      H.q(H.source_dir), H.q(pgdata), pgport))
    assert.are.equal(0, start_code, start_err)
    H.psql(url, "update verses set text = text || ' depois do reinício' where id <= 10")
    assert.is_true(wait_until(function()
      return H.scalar(url, "select count(*) from rag_documents where content like '% depois do reinício'") == 10
    end, 60))
    assert.is_true(H.alive(job.pid), "o seguidor continua rodando")
    -- and it keeps following: a later change arrives too
    H.psql(url, "delete from fortunes where id = 6")
    assert.is_true(wait_until(function()
      return H.scalar(url, "select count(*) from rag_documents where entity_type = 'fortune' and entity_id = '6'") == 0
    end, 60))
    assert.are.equal(130, stop(job))
    assert.matches("LISTEN", H.read_all(job.err))
  end)

  it("estratégia watermark com --follow: atualizações, inserções e, na próxima anti-junção, remoções", function()
    local wplan = H.plan_file(plan_text({ name = "marca_follow",
      verse_sync = [[{ strategy = "watermark", overlap_s = 1, deletes_every_s = 0.5, poll_s = 0.2 }]],
      fortune_sync = [[{ strategy = "watermark", overlap_s = 1, deletes_every_s = 0.5, poll_s = 0.2 }]] }))
    local url = synced_db("ragops_it_sync_wm_follow", wplan)
    local job = H.ragops_background(url, "sync " .. H.q(wplan) .. " --follow --follower w")
    assert.is_true(wait_until(function()
      return H.scalar(url, "select count(*) from ragops_sync_watermarks where plan = 'marca_follow'") == 2
    end, 30))
    local before = hashes(url)
    local inputs = embed_inputs()
    H.psql(url, [[begin;
      update verses set text = text || ' (revisado)', updated_at = now() + interval '1 day' where id <= 100;
      delete from fortunes where id in (3, 4, 5);
      insert into verses values (9001, 'Gen', 9, 1, 'Um versículo novo', now() + interval '1 day'),
                                (9002, 'Exo', 9, 2, 'Outro novo', now() + interval '1 day');
      commit]])
    local expected = { "fortune:3", "fortune:4", "fortune:5", "verse:9001", "verse:9002" }
    for i = 1, 100 do expected[#expected + 1] = "verse:" .. i end
    table.sort(expected)
    assert.is_true(wait_until(function() return #changed(before, hashes(url)) == #expected end, 30))
    assert.are.equal(130, stop(job))
    os.remove(wplan)
    assert.are.same(expected, changed(before, hashes(url)))
    assert.are.equal(102, embed_inputs() - inputs)
  end)

  it("estratégia watermark: aplica o que mudou desde a marca d'água e remove pela anti-junção", function()
    local wplan = H.plan_file(plan_text({ name = "marca",
      verse_sync = [[{ strategy = "watermark", overlap_s = 1, deletes_every_s = 0.001 }]],
      fortune_sync = [[{ strategy = "watermark", overlap_s = 1, deletes_every_s = 0.001 }]] }))
    local url = synced_db("ragops_it_sync_watermark", wplan)
    local code, _, err, rep = H.ragops(url, "sync " .. H.q(wplan), { report = true })
    assert.are.equal(0, code, err)
    assert.are.equal(0, rep.embedded) -- first pass: everything already indexed (hash)
    local before = hashes(url)
    H.psql(url, [[update verses set text = text || ' novo', updated_at = now() + interval '1 day' where id <= 10;
                  delete from fortunes where id in (1, 2);
                  insert into verses values (9001, 'Gen', 9, 1, 'Um versículo novo', now() + interval '1 day')]])
    local inputs = embed_inputs()
    code, _, err, rep = H.ragops(url, "sync " .. H.q(wplan), { report = true })
    assert.are.equal(0, code, err)
    os.remove(wplan)
    assert.are.equal(11, rep.embedded)
    assert.are.equal(11, embed_inputs() - inputs)
    assert.are.equal(2, rep.deleted)
    local expected = { "fortune:1", "fortune:2", "verse:9001" }
    for i = 1, 10 do expected[#expected + 1] = "verse:" .. i end
    table.sort(expected)
    assert.are.same(expected, changed(before, hashes(url)))
    assert.are.equal(1, H.scalar(url, "select count(*) from ragops_sync_watermarks where plan = 'marca' and entity_type = 'verse' and watermark > now()"))
  end)
end)
