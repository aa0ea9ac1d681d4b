-- shared_quota_spec.lua: one provider quota shared by every ragops process
-- (issue 25), against an embed-server that enforces --tpm for all its
-- clients as OpenAI does. Three `run --scale-out` processes and a
-- `sync --follow` follower, each configured with the whole limit
-- (provider.rate_limits.tokens_per_min = the server's --tpm), split it
-- through PostgreSQL: together they admit at least 0.9 of the limit while
-- they all have work, with at most a handful of 429s (the server's
-- counters); one of them killed with -9 while holding a slice, the others
-- take it back after its lease expires and go on at the full limit.
-- Utilisation is a ratio of the server's admitted tokens to its limit over
-- the same interval, measured by its own counters: no duration is asserted.
local H = require "tests.integration.helper"
local cjson = require "cjson"

local TPM = 6000
local N_VERSES = 1400

local PLAN_TEXT = [[
  local verses = source "verse" { sql = "select id, book, text, updated_at from verses",
    key = "id", updated_at = "updated_at",
    document = function(r) return { content = r.text } end,
    sync = { strategy = "watermark", poll_s = 1, overlap_s = 0 } }
  return plan { name = "cota", sources = { verses }, batch = { size = 4, in_flight = 2 },
    retry = { attempts = 8, base_ms = 50, max_ms = 500, timeout_s = 10 } }]]

local function now_s()
  local _, out = H.sh("date +%s.%N")
  return tonumber(out)
end

local function server_stats(server)
  local code, out = H.sh("curl -fsS " .. H.q(server.base .. "/stats"))
  assert(code == 0, "GET /stats falhou")
  return cjson.decode(out)
end

-- Admitted tokens per minute over `seconds`, as a share of TPM.
local function utilisation(server, seconds)
  local t0, a0 = now_s(), server_stats(server).admitted_tokens
  H.sleep(seconds)
  local t1, a1 = now_s(), server_stats(server).admitted_tokens
  return (a1 - a0) / (TPM / 60 * (t1 - t0)), a1 - a0
end

local wait_for = H.wait_for

local function all_alive(jobs)
  for _, job in ipairs(jobs) do
    if not H.alive(job.pid) then return false, H.read_all(job.err) end
  end
  return true
end

-- The last lines of each job's log (said when an assertion fails).
local function logs(jobs)
  local out = {}
  for i, job in ipairs(jobs) do
    local text = H.read_all(job.err)
    out[#out + 1] = ("--- processo %d:\n%s"):format(i, text:sub(-3000))
  end
  return table.concat(out, "\n")
end

local function holders(url)
  return tonumber(H.scalar(url, "select count(*) from ragops_quota_holders where expires_at > now()"))
end

describe("cota do provedor compartilhada entre processos (issue 25)", function()
  after_each(function() H.cleanup() end)

  it("três --scale-out e um sync --follow ficam juntos no --tpm; um morto com -9 devolve a fatia ao vencer", function()
    local server = H.start_embed_server("--tpm " .. TPM .. " --latency-ms 20")
    local url = H.migrated_db("ragops_it_quota_fleet", N_VERSES, 0)
    local plan = H.plan_file(PLAN_TEXT)
    local cfg = H.config_file(("provider = { rate_limits = { tokens_per_min = %d } }"):format(TPM))
    local env = { env = { RAGOPS_EMBED_URL = server.url } }
    -- The follower starts from now: it embeds what changes during the test.
    H.psql(url, "insert into ragops_sync_watermarks (plan, entity_type, watermark) values ('cota', 'verse', now())")
    local follower = H.ragops_background(url, ("sync %s --follow --follower f --config %s"):format(H.q(plan), H.q(cfg)), env)
    local changer = io.popen(("for i in $(seq 1 90); do psql -q %s -c \"update verses set text = text || '.', "
      .. "updated_at = now() where id in (select id from verses order by random() limit 2)\" >/dev/null 2>&1; "
      .. "sleep 0.5; done & echo $!"):format(H.q(url)))
    local changer_pid = changer:read("*l")
    changer:close()
    local jobs = {}
    for i = 1, 3 do
      jobs[i] = H.ragops_background(url, ("run %s --scale-out --lease-s 3 --config %s"):format(H.q(plan), H.q(cfg)), env)
    end
    -- The first minute's bucket (TPM tokens, full at start) spent, and every process holding a slice.
    wait_for("o balde inicial do servidor gasto", function() return server_stats(server).admitted_tokens >= TPM end, 90)
    wait_for("quatro detentores da cota", function() return holders(url) == 4 end, 30)
    H.sleep(3)
    local share, admitted = utilisation(server, 12)
    local alive, err = all_alive({ follower, jobs[1], jobs[2], jobs[3] })
    assert.is_true(alive, "todos ainda trabalhando durante a medida: " .. tostring(err))
    assert.is_true(share >= 0.9 and share <= 1.1, ("uso do --tpm com 4 processos: %.3f (%d tokens)\n%s")
      :format(share, admitted, logs({ follower, jobs[1], jobs[2], jobs[3] })))

    -- kill -9 one holder: its slice comes back when its lease expires.
    H.sh("kill -9 " .. jobs[1].pid)
    wait_for("a fatia do morto vencida", function() return holders(url) == 3 end, 30)
    H.sleep(4) -- one renewal of each survivor, and their buckets refilled at the new rate
    share, admitted = utilisation(server, 10)
    alive, err = all_alive({ follower, jobs[2], jobs[3] })
    assert.is_true(alive, "os sobreviventes ainda trabalhando durante a medida: " .. tostring(err))
    assert.is_true(share >= 0.9 and share <= 1.1, ("uso do --tpm depois do kill -9: %.3f (%d tokens); servidor %s\n%s")
      :format(share, admitted, cjson.encode(server_stats(server)), logs({ follower, jobs[2], jobs[3] })))

    local codes = { H.exit_code(jobs[2], 300), H.exit_code(jobs[3], 300) }
    assert.are.same({ 0, 0 }, codes, H.read_all(jobs[2].err) .. H.read_all(jobs[3].err))
    H.sh("kill " .. changer_pid .. " 2>/dev/null")
    H.sh("kill -INT " .. follower.pid)
    H.exit_code(follower, 60)
    local refused = server_stats(server).rate_limited_by.tokens
    assert.is_true(refused <= 5, "429 por tokens no servidor: " .. refused)
    assert.are.equal(N_VERSES, tonumber(H.scalar(url, "select count(distinct entity_id) from rag_documents")))
    H.stop_embed_server(server)
    os.remove(plan); os.remove(cfg)
  end)
end)
