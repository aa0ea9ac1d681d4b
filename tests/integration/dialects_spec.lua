-- dialects_spec.lua (issue 23): every provider dialect end to end, on both
-- storages, against `ragops embed-server --api D` answering in D's dialect
-- with D's limits and errors. A backfill with the limits at their real
-- values sends no request the server refuses for size (its size_errors
-- counter stays 0), and the table equals the one made through the OpenAI
-- dialect (the server's vectors are the same in every dialect).
local H = require "tests.integration.helper"
local cjson = require "cjson"

local PLAN = [[
return plan { name = "dialetos", batch = { size = %d, in_flight = 2 }, chunking = { max_chars = %d, overlap = 100 },
  sources = {
    source "verse" { sql = "select id, text, updated_at from verses", key = "id", updated_at = "updated_at",
      document = function(r) return { content = r.text } end },
    source "fortune" { sql = "select id, text, updated_at from fortunes", key = "id", updated_at = "updated_at",
      document = function(r) return { content = r.text } end },
  } }
]]

local function stats(server)
  local code, out = H.sh("curl -fsS " .. H.q(server.base .. "/stats"))
  assert(code == 0, "GET /stats falhou")
  return cjson.decode(out)
end

-- Config for dialect api at url (extra: Lua text of more provider keys).
-- The run's RAGOPS_EMBED_URL (which wins over the file) is set to url too.
local function dialect_config(api, url, extra)
  return H.config_file(([[provider = { api = %q, url = %q, model = "ragops-hash-1536", dim = 1536%s }]])
    :format(api, url, extra and (", " .. extra) or ""))
end

-- env for a run against embed_url (RAGOPS_EMBED_URL wins over the file's
-- provider.url, and the suite sets it to its own server).
local function env_for(embed_url, extra)
  local env = { RAGOPS_EMBED_URL = embed_url }
  for k, v in pairs(extra or {}) do env[k] = v end
  return env
end

-- Backfills a fresh database through config; returns its fingerprint and
-- the run's stderr.
local function backfill(name, config, env, batch_size, max_chars)
  local url = H.migrated_db(name, 150, 40)
  local plan = H.plan_file(PLAN:format(batch_size or 64, max_chars or 1500))
  local code, _, err = H.ragops(url, ("backfill --plan %s --config %s"):format(H.q(plan), H.q(config)), { env = env })
  os.remove(plan)
  assert.are.equal(0, code, err)
  return H.fingerprint(url), err, url
end

local DIALECTS = {
  { api = "azure", flags = "--api-key az-segredo", env = { AZURE_OPENAI_API_KEY = "az-segredo" },
    extra = [[api_version = "2024-10-21", deployment = "emb-prod"]], url = function(s) return s.base end },
  { api = "azure", name = "azure v1 (Entra)", flags = "--api-key token-entra",
    env = { AZURE_OPENAI_AD_TOKEN = "token-entra" }, extra = [[azure_auth = "entra"]],
    url = function(s) return s.base end },
  { api = "ollama", url = function(s) return s.base end },
  -- (the TEI server says 16 in GET /info: the client's default is 32)
  { api = "tei", flags = "--max-inputs 16", url = function(s) return s.base end, max_inputs = 16 },
  { api = "voyage", flags = "--api-key pa-segredo", env = { VOYAGE_API_KEY = "pa-segredo" },
    url = function(s) return s.base .. "/v1" end, input_type = "document" },
  { api = "cohere", flags = "--api-key co-segredo", env = { CO_API_KEY = "co-segredo" },
    url = function(s) return s.base end, max_inputs = 96, input_type = "search_document", batch = 128 },
}

H.each_storage(function()
  describe("dialetos do provedor (issue 23)", function()
    local reference
    after_each(H.cleanup)

    setup(function()
      local server = H.start_embed_server("--api openai")
      local config = dialect_config("openai", server.url)
      reference = backfill("dial_openai", config, env_for(server.url), 128)
      os.remove(config)
      H.stop_embed_server(server)
    end)

    for _, d in ipairs(DIALECTS) do
      it((d.name or d.api) .. ": 0 erros de tamanho e a mesma tabela do dialeto openai", function()
        local server = H.start_embed_server("--api " .. d.api .. " " .. (d.flags or ""))
        local config = dialect_config(d.api, d.url(server), d.extra)
        local fp, err = backfill("dial_" .. d.api:gsub("%W", ""), config, env_for(d.url(server), d.env), d.batch or 64)
        os.remove(config)
        local s = stats(server)
        H.stop_embed_server(server)
        assert.are.equal(0, s.size_errors, "pedidos recusados por tamanho")
        assert.are.equal(0, s.bad_requests, "pedidos recusados")
        assert.is_true(s.ok > 0)
        if d.max_inputs then
          assert.is_true(s.max_inputs_seen <= d.max_inputs, ("%d entradas num pedido (limite %d)")
            :format(s.max_inputs_seen, d.max_inputs))
        end
        if d.input_type then assert.are.equal(d.input_type, s.last_input_type) end
        assert.are.equal(reference, fp, "a tabela difere da feita pelo dialeto openai")
        assert.truthy(err:find("provedor " .. d.api .. " em ", 1, true), err)
        for _, secret in pairs(d.env or {}) do assert.is_nil(err:find(secret, 1, true), "segredo no log") end
      end)
    end

    it("openai: 2.048 entradas de 2.000 caracteres vão em pedidos de até 300 mil tokens estimados, nenhum recusado", function()
      local server = H.start_embed_server("--api openai")
      local url = H.fresh_db("dial_big")
      H.psql(url, [[create table docs(id bigint primary key, text text not null);
        insert into docs select i, lpad(i::text, 6, '0') || repeat('abcd ', 398) || 'fim.'
          from generate_series(1, 2048) i]])
      assert.are.equal(0, (H.ragops(url, "migrate")))
      local plan = H.plan_file([[return plan { name = "grande", batch = { size = 2048, in_flight = 1 },
        chunking = { max_chars = 2000, overlap = 0 },
        sources = { source "doc" { sql = "select id, text from docs", key = "id",
          document = function(r) return { content = r.text } end } } }]])
      local config = dialect_config("openai", server.url)
      local code, _, err = H.ragops(url, ("backfill --plan %s --config %s"):format(H.q(plan), H.q(config)),
        { env = env_for(server.url) })
      os.remove(plan); os.remove(config)
      local s = stats(server)
      H.stop_embed_server(server)
      assert.are.equal(0, code, err)
      assert.are.equal(2048, tonumber(H.scalar(url, "select count(*) from rag_documents")))
      assert.are.equal(0, s.size_errors)
      assert.are.equal(4, s.requests) -- 600 + 600 + 600 + 248 inputs of 500 tokens (bytes/4)
      assert.is_true(s.max_inputs_seen <= 600, "pedido com " .. s.max_inputs_seen .. " entradas")
    end)

    it("cohere: um trecho maior que os 512 tokens do modelo é recusado antes de rodar (código 2)", function()
      local config = dialect_config("cohere", "http://127.0.0.1:1", [[model = "embed-english-v3.0", dim = 1024]])
      local url = H.migrated_db("dial_fit", 5, 5)
      local plan = H.plan_file(PLAN:format(64, 4000))
      local code, _, err = H.ragops(url, ("backfill --plan %s --config %s"):format(H.q(plan), H.q(config)),
        { env = env_for("http://127.0.0.1:1", { CO_API_KEY = "co-x" }) })
      os.remove(plan); os.remove(config)
      assert.are.equal(2, code, err)
      assert.truthy(err:find("chunking.max_chars = 4000", 1, true), err)
      assert.truthy(err:find("512 tokens", 1, true), err)
      assert.are.equal(0, tonumber(H.scalar(url, "select count(*) from ragops_runs")))
    end)
  end)
end)
