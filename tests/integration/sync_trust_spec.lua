-- Integration: deletions that `ragops sync` must not miss (issue 19, points
-- 9 and 16). Watermark strategy: rows soft-deleted in the source (the
-- plan's SQL filters them out) leave the index at the next sync, not after
-- deletes_every_s, and only when the source no longer returns them. Trigger
-- strategy: a TRUNCATE of a source removes every entity the source no
-- longer has (after the changes queued before it), and a TRUNCATE of a
-- related table re-syncs the entities built from it. Each case ends where a
-- full run of the plan over the final source ends: nothing left to embed or
-- delete.
local H = require "tests.integration.helper"

local function entity_ids(url, entity_type)
  local out = {}
  for _, r in ipairs(H.psql(url, ("select distinct entity_id::int from rag_documents where entity_type = '%s' order by 1")
      :format(entity_type))) do
    out[#out + 1] = tonumber(r[1])
  end
  return out
end

local function range(a, b)
  local out = {}
  for i = a, b do out[#out + 1] = i end
  return out
end

-- A full run of the plan over the final source has nothing to do.
local function assert_in_step(url, plan)
  local code, _, err, rep = H.ragops(url, "run " .. H.q(plan), { report = true })
  assert.are.equal(0, code, err)
  assert.are.equal(0, rep.embedded, "documentos que o sync deixou por embedar")
  assert.are.equal(0, rep.deleted, "documentos que o sync deixou por remover")
end

local function wait_until(pred, timeout_s)
  for _ = 1, (timeout_s or 60) * 10 do
    if pred() then return true end
    H.sleep(0.1)
  end
  return false
end

describe("sync: remoções lógicas na estratégia watermark", function()
  local plan
  local function plan_text(sql, sync)
    return ([[
    local fortunes = source "fortune" { sql = %q, key = "id", updated_at = "updated_at",
      document = function(r) return { content = r.text } end,
      sync = %s }
    return plan { name = "logica", sources = { fortunes }, batch = { size = 64, in_flight = 2 },
      retry = { attempts = 3, base_ms = 20, max_ms = 200, timeout_s = 10 } }]]):format(sql, sync)
  end
  local SOFT = [[{ strategy = "watermark", overlap_s = 1, poll_s = 0.2,
                   soft_delete = { table = "fortunes", column = "deleted" } }]]

  setup(function()
    plan = H.plan_file(plan_text("select id, text, updated_at from fortunes where not deleted", SOFT))
  end)
  teardown(function() os.remove(plan) end)
  after_each(function() H.cleanup() end)

  local function db(name)
    local url = H.migrated_db(name, 10, 40)
    H.psql(url, "alter table fortunes add column deleted boolean not null default false")
    local code, _, err = H.ragops(url, "run " .. H.q(plan) .. " --quiet")
    assert.are.equal(0, code, err)
    -- the first sync records the watermark and runs the periodic anti-join (deletes_every_s = 600)
    code, _, err = H.ragops(url, "sync " .. H.q(plan))
    assert.are.equal(0, code, err)
    return url
  end

  it("uma remoção lógica sai do índice no sync seguinte, sem esperar deletes_every_s", function()
    local url = db("ragops_it_sync_soft")
    H.psql(url, "update fortunes set deleted = true, updated_at = now() where id <= 10")
    local code, _, err, rep = H.ragops(url, "sync " .. H.q(plan), { report = true })
    assert.are.equal(0, code, err)
    assert.are.same(range(11, 40), entity_ids(url, "fortune"))
    assert.is_true(rep.deleted >= 10, "documentos removidos: " .. tostring(rep.deleted))
    assert.are.equal(0, rep.embedded)
    -- undeleted: back at the next sync
    H.psql(url, "update fortunes set deleted = false, updated_at = now() where id = 3")
    code, _, err = H.ragops(url, "sync " .. H.q(plan))
    assert.are.equal(0, code, err)
    local expected = range(11, 40)
    table.insert(expected, 1, 3)
    assert.are.same(expected, entity_ids(url, "fortune"))
    assert_in_step(url, plan)
  end)

  it("só remove o que a fonte não devolve mais: marcada mas ainda na consulta do plano fica", function()
    local url = db("ragops_it_sync_soft_proof")
    local unfiltered = H.plan_file(plan_text("select id, text, updated_at from fortunes where id <> 7", SOFT))
    H.psql(url, "update fortunes set deleted = true, updated_at = now() where id in (5, 7)")
    local code, _, err = H.ragops(url, "sync " .. H.q(unfiltered))
    os.remove(unfiltered)
    assert.are.equal(0, code, err)
    local ids = entity_ids(url, "fortune")
    assert.are.equal(5, ids[5], "a 5 continua na consulta do plano: fica no índice")
    assert.are.equal(8, ids[7], "a 7 saiu da consulta e estava marcada: removida")
  end)

  it("--follow: a remoção lógica sai do índice em segundos (um ciclo de poll_s)", function()
    local url = db("ragops_it_sync_soft_follow")
    local job = H.ragops_background(url, "sync " .. H.q(plan) .. " --follow --follower lgpd")
    assert.is_true(wait_until(function()
      return H.scalar(url, "select count(*) from ragops_runs where plan = 'sync:logica' and status = 'running' "
        .. "and heartbeat_at is not null") == 1
    end, 30))
    H.psql(url, "update fortunes set deleted = true, updated_at = now() where id between 21 and 30")
    assert.is_true(wait_until(function()
      return H.scalar(url, "select count(*) from rag_documents where entity_type = 'fortune' "
        .. "and entity_id::int between 21 and 30") == 0
    end, 20), H.read_all(job.err))
    H.sh("kill -TERM " .. job.pid)
    assert.are.equal(130, H.exit_code(job, 60))
    assert_in_step(url, plan)
  end)
end)

describe("sync: TRUNCATE na estratégia trigger", function()
  local plan
  setup(function()
    plan = H.plan_file([[
    local verses = source "verse" {
      sql = "select v.id, v.text, v.updated_at, coalesce(b.title, '') as title from verses v left join books b on b.abbrev = v.book",
      key = "id", updated_at = "updated_at",
      document = function(r) return { content = r.title .. " " .. r.text } end,
      sync = { strategy = "trigger", table = "verses",
        related = { { table = "books", column = "abbrev", entities = "select id from verses where book = $1" } } } }
    local fortunes = source "fortune" { sql = "select id, text, updated_at from fortunes",
      key = "id", updated_at = "updated_at",
      document = function(r) return { content = r.text } end,
      sync = { strategy = "trigger", table = "fortunes" } }
    return plan { name = "trunc", sources = { verses, fortunes }, batch = { size = 64, in_flight = 2 },
      retry = { attempts = 3, base_ms = 20, max_ms = 200, timeout_s = 10 } }]])
  end)
  teardown(function() os.remove(plan) end)
  after_each(function() H.cleanup() end)

  local function db(name)
    local url = H.migrated_db(name, 100, 60)
    H.psql(url, [[create table books (abbrev text primary key, title text not null);
                  insert into books values ('Gen', 'Genesis'), ('Exo', 'Exodus'), ('Lev', 'Leviticus'),
                                           ('Num', 'Numbers'), ('Deu', 'Deuteronomy')]])
    local code, _, err = H.ragops(url, "run " .. H.q(plan) .. " --quiet")
    assert.are.equal(0, code, err)
    code, _, err = H.ragops(url, "sync install " .. H.q(plan))
    assert.are.equal(0, code, err)
    return url
  end

  it("TRUNCATE da fonte e inserções depois: só as novas ficam no índice", function()
    local url = db("ragops_it_sync_truncate")
    -- changes queued before the truncate are applied first (they read the truncated source)
    H.psql(url, "update fortunes set text = text || ' antes' where id <= 5")
    H.psql(url, [[begin; truncate fortunes;
      insert into fortunes select i, 'Fortuna nova ' || i, now() from generate_series(1001, 1010) i; commit]])
    local code, _, err, rep = H.ragops(url, "sync " .. H.q(plan), { report = true })
    assert.are.equal(0, code, err)
    assert.are.same(range(1001, 1010), entity_ids(url, "fortune"))
    assert.are.equal(10, rep.embedded)
    assert.are.equal(0, H.scalar(url, "select count(*) from ragops_sync.changes"))
    assert.are.equal(100, #entity_ids(url, "verse"), "os versículos não foram tocados")
    assert_in_step(url, plan)
  end)

  it("TRUNCATE de uma tabela relacionada re-sincroniza as entidades que dependem dela", function()
    local url = db("ragops_it_sync_truncate_related")
    assert.is_true(H.scalar(url, "select count(*) from rag_documents where entity_type = 'verse' and content like 'Genesis %'") > 0)
    H.psql(url, "truncate books")
    local code, _, err, rep = H.ragops(url, "sync " .. H.q(plan), { report = true })
    assert.are.equal(0, code, err)
    assert.are.equal(100, rep.embedded)
    assert.are.equal(0, H.scalar(url, "select count(*) from rag_documents where entity_type = 'verse' and content like 'Genesis %'"))
    assert.are.equal(0, H.scalar(url, "select count(*) from ragops_sync.changes"))
    assert_in_step(url, plan)
  end)
end)
