-- endpoint_pool_spec.lua: provider.endpoints, a pool of endpoints for the
-- same model (issue 25), against real embed-servers: the requests spread
-- over both; one killed with -9 mid-run, the run ends with exit 0 and the
-- same table as a run on one endpoint, and `ragops status` shows the dead
-- endpoint; a pool whose endpoints answer different dimensions is a
-- configuration error before the run (exit 2, nothing written); provider.url
-- and provider.endpoints together are refused.
local H = require "tests.integration.helper"
local cjson = require "cjson"

local N_VERSES = 600

local PLAN_TEXT = [[
  local verses = source "verse" { sql = "select id, book, text, updated_at from verses",
    key = "id", updated_at = "updated_at",
    document = function(r) return { content = r.text, metadata = { livro = r.book } } end }
  return plan { name = "pool", sources = { verses }, batch = { size = 4, in_flight = 4 },
    retry = { attempts = 5, base_ms = 20, max_ms = 200, timeout_s = 5 } }]]

local function digest(url)
  return H.psql(url, [[select count(*), md5(string_agg(entity_type || entity_id || ':' || chunk_index || content_hash
    || md5(embedding::text), ',' order by entity_type, entity_id, chunk_index)) from rag_documents]])[1]
end

local function requests(server)
  local code, out = H.sh("curl -fsS " .. H.q(server.base .. "/stats"))
  if code ~= 0 then return nil end
  return cjson.decode(out).requests
end

local function pool_config(servers)
  local entries = {}
  for name, server in pairs(servers) do
    entries[#entries + 1] = ("{ name = %q, url = %q }"):format(name, server.url)
  end
  table.sort(entries)
  return H.config_file("provider = { endpoints = { " .. table.concat(entries, ", ") .. " } }")
end

describe("pool de endpoints do provedor (issue 25)", function()
  local plan
  after_each(function() H.cleanup() end)
  setup(function() plan = H.plan_file(PLAN_TEXT) end)
  teardown(function() os.remove(plan) end)

  it("um endpoint morto com -9 no meio: código 0, a mesma tabela, e o status mostra o endpoint fora", function()
    local clean_url = H.migrated_db("ragops_it_pool_clean", N_VERSES, 0)
    local code, _, err = H.ragops(clean_url, "run " .. H.q(plan))
    assert.are.equal(0, code, err)

    local a, b = H.start_embed_server("--latency-ms 40"), H.start_embed_server("--latency-ms 40")
    local url = H.migrated_db("ragops_it_pool_kill", N_VERSES, 0)
    local cfg = pool_config({ a = a, b = b })
    local job = H.ragops_background(url, "run " .. H.q(plan) .. " --config " .. H.q(cfg))
    for _ = 1, 600 do
      if (requests(a) or 0) >= 10 then break end
      H.sleep(0.05)
    end
    local before_b = requests(b)
    assert.is_true(before_b > 0, "os pedidos se dividem entre os dois endpoints")
    H.sh("kill -9 " .. a.pid)
    code = H.exit_code(job, 300)
    local log = H.read_all(job.err)
    assert.are.equal(0, code, log)
    assert.matches("endpoint a .* fora", log)
    assert.is_true(requests(b) > before_b, "b levou o resto da execução")
    assert.are.same(digest(clean_url), digest(url))
    local scode, out, serr = H.ragops(url, "status --config " .. H.q(cfg))
    assert.are.equal(0, scode, serr)
    assert.matches("a: FORA desde", out, 1, true)
    assert.matches("b: no ar", out, 1, true)
    H.stop_embed_server(b)
    os.remove(cfg)
  end)

  it("endpoints com dimensões diferentes: erro de configuração antes da execução (código 2, nada gravado)", function()
    local a, small = H.start_embed_server(""), H.start_embed_server("--dim 8")
    local url = H.migrated_db("ragops_it_pool_dims", 20, 0)
    local cfg = pool_config({ a = a, b = small })
    local code, _, err = H.ragops(url, "run " .. H.q(plan) .. " --config " .. H.q(cfg))
    assert.are.equal(2, code, err)
    assert.matches("endpoint b .*outra dimensão", err)
    assert.are.equal(0, tonumber(H.scalar(url, "select count(*) from rag_documents")))
    assert.are.equal(0, tonumber(H.scalar(url, "select count(*) from ragops_runs")))
    H.stop_embed_server(a); H.stop_embed_server(small)
    os.remove(cfg)
  end)

  it("provider.url e provider.endpoints juntos: erro de configuração (código 2)", function()
    local cfg = H.config_file([[provider = { url = "http://127.0.0.1:1/v1", endpoints = { { url = "http://127.0.0.1:2/v1" } } }]])
    local code, _, err = H.ragops(H.db_url("ragops_test"), "run " .. H.q(plan) .. " --config " .. H.q(cfg) .. " --dry-run")
    os.remove(cfg)
    assert.are.equal(2, code, err)
    assert.matches("use uma ou outra", err, 1, true)
  end)
end)
