-- Integration: answers of the provider and of PostgreSQL that must be
-- validated, classified and redacted, with the real binary against extra
-- embed-servers started with fault switches: a configuration the provider
-- refuses (wrong path, model or key) aborts at the first batch with exit 4 and
-- no dead letters; a bad "usage" is a malformed answer; provider.timeout_s is
-- the per-request limit; write errors never show row content.
local H = require "tests.integration.helper"

local N_VERSES = 12
local IN_FLIGHT = 2

-- Verses only, small batches; content/metadata get a prefix when asked.
local function verses_plan(opts)
  opts = opts or {}
  return H.plan_file(([[
    local verses = source "verse" { sql = "select id, book, chapter, verse, text, updated_at from verses",
      key = "id", updated_at = "updated_at",
      document = function(r)
        return { content = %q .. r.text, metadata = { livro = r.book, marca = %q } }
      end }
    return plan { name = "provedor", sources = { verses },
      batch = { size = 4, in_flight = %d },
      retry = %s }]]):format(opts.prefix or "", opts.mark or "", IN_FLIGHT,
        opts.retry or "{ attempts = 2, rounds = 1, base_ms = 10, max_ms = 20 }"))
end

local function config_file(text)
  local path = os.tmpname() .. ".lua"
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

-- Runs the plan against url with env; returns code, stdout, stderr, report.
local function run(url, plan, env, extra_args)
  return H.ragops(url, "run " .. H.q(plan) .. (extra_args or ""), { report = true, env = env })
end

local function open_failures(url)
  return H.scalar(url, "select count(*) from ragops_failures")
end

describe("respostas do provedor e do PostgreSQL", function()
  after_each(function() H.cleanup() end)

  describe("configuração recusada pelo provedor: código 4 no primeiro lote, nada na fila de falhas", function()
    -- after_each stops every server: each test starts its own.
    local server, plan
    before_each(function()
      server = H.start_embed_server("--model certo-1536 --api-key sk-chave-certa-987")
      plan = verses_plan()
    end)
    after_each(function()
      H.stop_embed_server(server)
      os.remove(plan)
    end)

    -- env(server) -> environment of the run; fragments: texts of the message.
    local function expect_refused(db, env, fragments)
      local url = H.migrated_db(db, N_VERSES, 0)
      local code, out, err, report = run(url, plan, env(server))
      assert.are.equal(4, code, err)
      assert.is_true(report.requests <= IN_FLIGHT,
        ("no máximo um pedido por trabalhador, foram %d:\n%s"):format(report.requests, err))
      assert.are.equal(0, report.failed)
      assert.are.equal(0, open_failures(url))
      assert.are.equal(0, H.scalar(url, "select count(*) from rag_documents"))
      -- The first fragment follows the server's own http://host:port.
      for i, fragment in ipairs(fragments) do
        if i == 1 then fragment = server.base .. fragment end
        assert.is_truthy(err:find(fragment, 1, true), ("esperado %q em:\n%s"):format(fragment, err))
      end
      return out .. err
    end

    it("URL com caminho errado (404): nomeia a URL, sem a senha nem a query", function()
      local function env(srv)
        local wrong = srv.base:gsub("^http://", "http://operador:senha-secreta@") .. "/errado?api_key=chave-na-query"
        return { RAGOPS_EMBED_URL = wrong, RAGOPS_EMBED_MODEL = "certo-1536", OPENAI_API_KEY = "sk-chave-certa-987" }
      end
      local text = expect_refused("ragops_it_prov_path", env,
        { "/errado/embeddings respondeu HTTP 404", "RAGOPS_EMBED_URL" })
      assert.is_falsy(text:find("senha-secreta", 1, true), text)
      assert.is_falsy(text:find("chave-na-query", 1, true), text)
    end)

    it("modelo desconhecido (404 model_not_found)", function()
      expect_refused("ragops_it_prov_model", function(srv)
        return { RAGOPS_EMBED_URL = srv.url, RAGOPS_EMBED_MODEL = "modelo-que-nao-existe",
                 OPENAI_API_KEY = "sk-chave-certa-987" }
      end, { "/v1/embeddings respondeu HTTP 404", "provider.model" })
    end)

    it("chave de API errada (401): a chave não aparece", function()
      local text = expect_refused("ragops_it_prov_key", function(srv)
        return { RAGOPS_EMBED_URL = srv.url, RAGOPS_EMBED_MODEL = "certo-1536", OPENAI_API_KEY = "sk-chave-errada-123" }
      end, { "/v1/embeddings respondeu HTTP 401", "OPENAI_API_KEY" })
      assert.is_falsy(text:find("chave-errada", 1, true), text)
    end)
  end)

  it("usage inválido (prompt_tokens = -1) é resposta malformada: a execução termina, lotes na fila de falhas", function()
    local url = H.migrated_db("ragops_it_prov_usage", N_VERSES, 0)
    local server = H.start_embed_server("--bad-usage-rate 1")
    local plan = verses_plan()
    local code, _, err, report = run(url, plan, { RAGOPS_EMBED_URL = server.url })
    H.stop_embed_server(server)
    os.remove(plan)
    assert.are.equal(1, code, err)
    assert.are.equal(N_VERSES, report.failed)
    assert.are.equal(N_VERSES, H.scalar(url,
      "select count(*) from ragops_failures where error_class = 'transient' and message like '%usage.prompt_tokens%'"))
    assert.are.equal(0, H.scalar(url, "select count(*) from rag_documents"))
  end)

  describe("provider.timeout_s", function()
    it("aceita frações (1.005 s), na configuração e no retry.timeout_s do plano", function()
      local url = H.migrated_db("ragops_it_prov_frac", N_VERSES, 0)
      local cfg = config_file("return { provider = { timeout_s = 1.005 } }")
      local plan = verses_plan()
      local code, _, err, report = run(url, plan, nil, " --config " .. H.q(cfg))
      os.remove(cfg)
      os.remove(plan)
      assert.are.equal(0, code, err)
      assert.are.equal(N_VERSES, report.succeeded)
      plan = verses_plan { prefix = "outro ", retry = "{ attempts = 2, timeout_s = 1.005 }" }
      code, _, err, report = run(url, plan, nil)
      os.remove(plan)
      assert.are.equal(0, code, err)
      assert.are.equal(N_VERSES, report.succeeded)
    end)

    it("é o limite de cada pedido: um pedido travado expira nele e os outros lotes seguem", function()
      local url = H.migrated_db("ragops_it_prov_timeout", N_VERSES, 0)
      -- Synthetic verses read "... came unto verse <id> of the book".
      local server = H.start_embed_server("--hang-pattern 'verse 7 of'")
      local cfg = config_file("return { provider = { timeout_s = 0.4 } }")
      local plan = verses_plan()
      local code, _, err, report = run(url, plan, { RAGOPS_EMBED_URL = server.url }, " --config " .. H.q(cfg))
      H.stop_embed_server(server)
      os.remove(cfg)
      os.remove(plan)
      assert.are.equal(1, code, err)
      assert.is_truthy(err:find("limite de 400 ms", 1, true), err)
      -- The hung request is the batch of verses 5-8 (pages of 4): timeouts
      -- are transient, so the batch is dead-lettered whole; the rest is written.
      assert.are.equal(4, report.failed)
      assert.are.equal(N_VERSES - 4, report.succeeded)
      assert.are.equal("5,6,7,8", H.scalar(url, [[select string_agg(entity_id, ',' order by entity_id::int)
        from ragops_failures where message like '%limite de 400 ms%']]))
    end)
  end)

  it("erro de gravação não mostra o conteúdo da linha em log, relatório nem fila de falhas", function()
    local url = H.migrated_db("ragops_it_prov_rowleak", N_VERSES, 0)
    H.psql(url, [[alter table rag_documents add constraint sem_marca
      check (position('CONTEUDOSIGILOSO' in content) = 0)]])
    local plan = verses_plan { prefix = "CONTEUDOSIGILOSO ", mark = "METADADOSIGILOSO" }
    local code, out, err, report = run(url, plan, nil)
    os.remove(plan)
    assert.are.equal(4, code, err)
    assert.is_truthy(err:find("23514", 1, true), err)
    assert.is_truthy(err:find("sem_marca", 1, true), err)
    local stored = H.scalar(url, [[select 'registros: ' || coalesce((select string_agg(message, ' ') from ragops_failures), '')
      || coalesce((select string_agg(report::text, ' ') from ragops_runs), '')]])
    local everything = out .. err .. require("cjson").encode(report) .. stored
    for _, word in ipairs { "CONTEUDOSIGILOSO", "METADADOSIGILOSO", "Failing row" } do
      assert.is_falsy(everything:find(word, 1, true), ("%q vazou:\n%s"):format(word, everything))
    end
  end)
end)
