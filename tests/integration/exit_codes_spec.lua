-- Integration: exit codes and the texts an operator reads (issue 19, points
-- 2-4 and 10-12; issue 20's smaller items). A plan whose SQL PostgreSQL
-- refuses (missing table or column, syntax) exits 2 before any run is
-- recorded, naming the source, the plan line and PostgreSQL's text; a
-- malformed DATABASE_URL is a usage error; a dry-run with failing
-- documents exits 1; a follower stops on SIGTERM without ERRO, says nothing
-- while idle and honours log.format; bad flags and unreadable report
-- folders are refused before the run starts. Real PostgreSQL and the
-- suite's embed-server.
local H = require "tests.integration.helper"
local cjson = require "cjson"

local function runs(url)
  return H.scalar(url, "select count(*) from ragops_runs")
end

local function count_lines(text, needle)
  local n = 0
  for line in text:gmatch("[^\n]+") do
    if line:find(needle, 1, true) then n = n + 1 end
  end
  return n
end

-- A plan over the verses with `sql`, `key` and extra source fields (Lua text).
local function verse_plan(sql, key, extra)
  return H.plan_file(([[
-- plano de teste dos códigos de saída

local verses = source "verse" {
  sql = %q,
  key = %q, updated_at = "updated_at",
  document = function(r) return { content = r.text } end,
  %s
}
return plan { name = "saida", sources = { verses }, batch = { size = 8, in_flight = 2 },
  retry = { attempts = 2, base_ms = 10, max_ms = 20, timeout_s = 5 } }
]]):format(sql, key or "id", extra or ""))
end

describe("SQL do plano recusado pelo PostgreSQL (classe 42) é erro do plano: código 2", function()
  local url
  setup(function() url = H.migrated_db("ragops_it_exit_sql", 20, 0) end)

  local cases = {
    { "tabela inexistente", "select id, text, updated_at from app_artcle", "id", 'relation "app_artcle" does not exist' },
    { "coluna inexistente", "select id, txt as text, updated_at from verses", "id", 'column "txt" does not exist' },
    { "chave inexistente", "select id, text, updated_at from verses", "idd", 'column src.idd does not exist' },
    { "erro de sintaxe", "selec id, text, updated_at from verses", "id", 'syntax error at or near' },
  }
  for _, case in ipairs(cases) do
    it(case[1] .. ": run, --dry-run e sync saem com 2, sem registrar execução", function()
      local plan = verse_plan(case[2], case[3], 'sync = { strategy = "watermark" },')
      finally(function() os.remove(plan) end)
      for _, args in ipairs({ "run " .. H.q(plan), "run " .. H.q(plan) .. " --dry-run", "sync " .. H.q(plan),
                              "status --plan " .. H.q(plan) }) do
        local code, _, err = H.ragops(url, args)
        assert.are.equal(2, code, args .. "\n" .. err)
        assert.truthy(err:find('fonte "verse"', 1, true), err)
        assert.truthy(err:find(plan .. ":3", 1, true), "a linha da declaração da fonte: " .. err)
        assert.truthy(err:find(case[4], 1, true), err)
        assert.truthy(err:find("confira", 1, true), "a frase em pt-BR diz o que conferir: " .. err)
        assert.are.equal(0, runs(url), "nenhuma execução registrada: " .. args)
      end
    end)
  end

  it("um erro de classe 42 durante a leitura também sai com 2, numa linha ERRO só", function()
    H.psql(url, [[create or replace function boom(i bigint) returns text language plpgsql as $$
      begin if i > 5 then execute 'select 1 from tabela_sumiu'; end if; return 'x'; end $$]])
    local plan = verse_plan("select id, boom(id) || text as text, updated_at from verses")
    finally(function() os.remove(plan) end)
    local code, _, err = H.ragops(url, "run " .. H.q(plan))
    assert.are.equal(2, code, err)
    assert.are.equal(1, count_lines(err, 'relation "tabela_sumiu" does not exist'), err)
    assert.are.equal(1, count_lines(err, "ERRO"), err)
  end)
end)

describe("DATABASE_URL malformada é erro de uso: código 2", function()
  local url
  setup(function() url = H.migrated_db("ragops_it_exit_url", 4, 0) end)

  it("parâmetro desconhecido (?sslmod=require) e dbname sem =", function()
    local plan = verse_plan("select id, text, updated_at from verses", "id", 'sync = { strategy = "watermark" },')
    finally(function() os.remove(plan) end)
    local port = url:match(":(%d+)/")
    for _, bad in ipairs({ url .. "?sslmod=require", "host=127.0.0.1 port=" .. port .. " dbname" }) do
      for _, args in ipairs({ "run " .. H.q(plan), "status", "sync " .. H.q(plan) }) do
        local code, _, err = H.sh(("cd %s && env DATABASE_URL=%s RAGOPS_EMBED_URL=%s %s %s"):format(
          H.q(H.source_dir), H.q(bad), H.q(H.embed_url), H.q(H.bin), args))
        assert.are.equal(2, code, bad .. " / " .. args .. "\n" .. err)
        assert.truthy(err:find("DATABASE_URL", 1, true), err)
      end
    end
  end)

  it("sslmode=require num servidor sem SSL e host desconhecido: mensagens em pt-BR", function()
    local code, _, err = H.ragops(url .. "?sslmode=require", "status")
    assert.are.equal(4, code, err)
    assert.truthy(err:find("o servidor não aceita SSL", 1, true), err)
    local _, _, derr = H.ragops((url:gsub("127%.0%.0%.1", "ragops-nao-existe.invalid")), "status")
    assert.truthy(derr:find("nome desconhecido", 1, true) or derr:find("falha temporária", 1, true), derr)
  end)
end)

describe("dry-run com documentos falhando", function()
  it("sai com 1, como uma execução com itens na fila de falhas", function()
    local url = H.migrated_db("ragops_it_exit_dry", 12, 0)
    H.psql(url, "alter table verses alter book drop not null; update verses set book = null where id % 3 = 0")
    local plan = H.plan_file([[
local verses = source "verse" { sql = "select id, book, text, updated_at from verses", key = "id",
  document = function(r) return { content = r.book .. " " .. r.text } end }
return plan { name = "seca", sources = { verses } }]])
    finally(function() os.remove(plan) end)
    local code, out, err = H.ragops(url, "run " .. H.q(plan) .. " --dry-run")
    assert.are.equal(1, code, out .. err)
    assert.truthy(err:find("tentativa de concatenar o campo 'book' (valor nil)", 1, true), err)
    assert.are.equal(0, runs(url))
  end)
end)

describe("seguidor (ragops sync --follow)", function()
  it("log.format da configuração, nenhum progresso ocioso, SIGTERM sem ERRO", function()
    local url = H.migrated_db("ragops_it_exit_follow", 30, 0)
    local plan = verse_plan("select id, text, updated_at from verses", "id",
      'sync = { strategy = "watermark", poll_s = 0.2 },')
    local cfg = H.config_file([[log = { format = "json", progress_every_s = 0.2 }]])
    finally(function() os.remove(plan); os.remove(cfg) end)
    local job = H.ragops_background(url, "sync " .. H.q(plan) .. " --follow --config " .. H.q(cfg))
    local indexed = false
    for _ = 1, 600 do
      if H.scalar(url, "select count(*) from rag_documents") == 30 then indexed = true; break end
      H.sleep(0.05)
    end
    assert.is_true(indexed, H.read_all(job.err))
    H.sleep(0.5) -- the last unit's progress line
    local before = count_lines(H.read_all(job.err), "progresso:")
    H.sleep(2) -- ten progress ticks and ten watermark passes, idle
    local idle = count_lines(H.read_all(job.err), "progresso:") - before
    H.sh("kill -TERM " .. job.pid)
    local code = H.exit_code(job, 30)
    local err = H.read_all(job.err)
    assert.are.equal(130, code, err)
    assert.are.equal(0, idle, "linhas de progresso com o seguidor ocioso:\n" .. err)
    for line in err:gmatch("[^\n]+") do
      local ok, event = pcall(cjson.decode, line)
      assert.is_true(ok and type(event) == "table", "linha fora do formato json: " .. line)
      assert.are_not.equal("error", event.level, line)
    end
    assert.truthy(err:find("SIGTERM", 1, true), err)
  end)
end)

describe("opções recusadas antes de a execução começar", function()
  local url
  setup(function() url = H.migrated_db("ragops_it_exit_flags", 6, 0) end)

  local function refused(args, needle)
    local code, _, err = H.ragops(url, args)
    assert.are.equal(2, code, args .. "\n" .. err)
    assert.truthy(err:find(needle, 1, true), err)
    assert.are.equal(0, runs(url), "nenhuma execução registrada: " .. args)
  end

  it("--report-json numa pasta inexistente, --lease-s 1e300, opção repetida, números fora do formato", function()
    local plan = verse_plan("select id, text, updated_at from verses")
    finally(function() os.remove(plan) end)
    refused("run " .. H.q(plan) .. " --report-json /nao/existe/relatorio.json", "/nao/existe/relatorio.json")
    refused("run " .. H.q(plan) .. " --scale-out --lease-s 1e300", "--lease-s")
    refused("run " .. H.q(plan) .. " --batch-size 8 --batch-size 9", "mais de uma vez")
    refused("run " .. H.q(plan) .. " --batch-size 0x10", "0x10")
    refused("run " .. H.q(plan) .. " --budget-usd 1e309", "budget")
  end)

  it("/dev/zero e um FIFO como plano: recusados sem ler", function()
    local fifo = os.tmpname()
    os.remove(fifo)
    assert.are.equal(0, (H.sh("mkfifo " .. H.q(fifo))))
    finally(function() os.remove(fifo) end)
    for _, path in ipairs({ "/dev/zero", fifo }) do
      -- timeout: opening a FIFO nobody writes to would block forever
      local code, _, err = H.sh(("cd %s && env %s timeout 30 %s run %s"):format(H.q(H.source_dir), H.env(url),
        H.q(H.bin), H.q(path)))
      assert.are.equal(2, code, path .. ": " .. err)
      assert.truthy(err:find("não é um arquivo comum", 1, true), err)
    end
  end)

  it("--metrics-listen 0.0.0.0 avisa que as métricas ficam expostas", function()
    local plan = verse_plan("select id, text, updated_at from verses")
    finally(function() os.remove(plan) end)
    local code, _, err = H.ragops(url, "run " .. H.q(plan) .. " --metrics-listen 0.0.0.0:" .. H.free_port())
    assert.are.equal(0, code, err)
    assert.truthy(err:find("AVISO", 1, true) and err:find("todas as interfaces", 1, true), err)
  end)
end)

describe("provedor https apontado para um servidor http", function()
  it("diz TLS, não só tempo esgotado", function()
    local url = H.migrated_db("ragops_it_exit_tls", 4, 0)
    local plan = verse_plan("select id, text, updated_at from verses")
    finally(function() os.remove(plan) end)
    local https = H.embed_url:gsub("^http:", "https:")
    local code, _, err = H.ragops(url, "run " .. H.q(plan) .. " --timeout 1 --max-retries 0",
      { env = { RAGOPS_EMBED_URL = https } })
    assert.are_not.equal(0, code, err)
    assert.truthy(err:find("TLS", 1, true), err)
  end)
end)
