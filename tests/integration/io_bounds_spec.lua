-- io_bounds_spec.lua: what ragops takes in and gives out is bounded and safe
-- (issue 20, points 9, 10, 12 to 15), through the real binary:
--   9  a provider's endless 200 (plain or a gzip bomb) stops at the batch's
--      expected size: exit 4, pt-BR message, no dead letters;
--   10 output files: a link planted at the old PATH.tmp is never followed, a
--      symlinked or non-regular target (a FIFO, a folder: as /dev/full) is
--      refused with exit 2,
--      the metrics textfile likewise, and a failing write is reported;
--   12 a database password with "?" and "#" never shows in connection errors;
--   13 an API key echoed in the provider's x-request-id reaches neither the
--      failures, the log, the reports nor ragops_runs.report;
--   14 a source key and an error() with line breaks and terminal sequences
--      neither forge log lines nor reach the terminal raw;
--   15 document() error messages are capped in ragops_failures and the log.
local H = require "tests.integration.helper"

local KEY = "sk-SENTINELA-eco-0123456789abcdef"

local function tmpdir()
  local _, out = H.sh("mktemp -d /tmp/ragops-io.XXXXXX")
  return (out:gsub("%s+$", ""))
end

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

local function listing(dir)
  local _, out = H.sh("ls -A " .. H.q(dir))
  local names = {}
  for name in out:gmatch("[^\n]+") do names[#names + 1] = name end
  table.sort(names)
  return table.concat(names, " ")
end

-- Verses in small batches, one worker.
local function verses_plan()
  return H.plan_file([[
    local verses = source "verse" { sql = "select id, text, updated_at from verses", key = "id",
      updated_at = "updated_at", document = function(r) return { content = r.text } end }
    return plan { name = "limites", sources = { verses }, batch = { size = 4, in_flight = 1 },
      retry = { attempts = 2, rounds = 1, base_ms = 10, max_ms = 20 } }]])
end

-- Fails when text holds needle (printing where).
local function assert_absent(needle, text, where)
  assert(not text:find(needle, 1, true), ("%q vazou em %s:\n%s"):format(needle, where, text:sub(1, 4000)))
end

describe("entradas e saídas limitadas e seguras", function()
  after_each(H.cleanup)

  describe("corpo 200 do provedor limitado pelo tamanho esperado do lote", function()
    for _, mode in ipairs({ "", "--endless-gzip" }) do
      it(("corpo sem fim %s: código 4, mensagem em pt-BR, nada na fila de falhas"):format(mode), function()
        local url = H.migrated_db("ragops_io_endless", 12, 0)
        local server = H.start_embed_server("--endless-pattern 'verse 3 of' " .. mode)
        local cfg = H.config_file("provider = { timeout_s = 15 }")
        local plan = verses_plan()
        local code, _, err, report = H.ragops(url, "run " .. H.q(plan) .. " --config " .. H.q(cfg),
          { report = true, env = { RAGOPS_EMBED_URL = server.url } })
        H.stop_embed_server(server)
        os.remove(cfg)
        os.remove(plan)
        assert.are.equal(4, code, err)
        assert.truthy(err:find("a resposta do provedor de embeddings passou de", 1, true), err)
        assert.truthy(err:find("o máximo esperado para 4 entrada(s) de dimensão 1536", 1, true), err)
        assert.are.equal(0, report.failed)
        assert.are.equal(0, H.scalar(url, "select count(*) from ragops_failures"))
      end)
    end
  end)

  describe("arquivos de saída", function()
    local url, plan, dir
    setup(function()
      url = H.migrated_db("ragops_io_files", 6, 0)
      plan = verses_plan()
    end)
    teardown(function() os.remove(plan) end)
    before_each(function() dir = tmpdir() end)
    after_each(function() H.sh("rm -rf " .. H.q(dir)) end)

    local function dry_run(extra, opts)
      return H.ragops(url, "run " .. H.q(plan) .. " --dry-run " .. extra, opts)
    end

    it("um link plantado no antigo PATH.tmp não é seguido; o temporário não fica", function()
      write(dir .. "/alvo", "original")
      H.sh(("ln -s alvo %s/relatorio.json.tmp"):format(H.q(dir)))
      local code, _, err = dry_run("--report-json " .. H.q(dir .. "/relatorio.json"))
      assert.are.equal(0, code, err)
      assert.are.equal("original", H.read_all(dir .. "/alvo"))
      assert.truthy(H.read_all(dir .. "/relatorio.json"):find('"dry_run":true', 1, true))
      assert.are.equal("alvo relatorio.json relatorio.json.tmp", listing(dir))
    end)

    it("destino que é link simbólico: recusado com código 2, o arquivo apontado intacto", function()
      write(dir .. "/alvo", "original")
      H.sh(("ln -s alvo %s/relatorio.json && ln -s alvo %s/relatorio.html"):format(H.q(dir), H.q(dir)))
      for _, flag in ipairs({ "--report-json", "--report-html" }) do
        local ext = flag == "--report-json" and "json" or "html"
        local code, _, err = dry_run(flag .. " " .. H.q(dir .. "/relatorio." .. ext))
        assert.are.equal(2, code, err)
        assert.truthy(err:find("o destino é um link simbólico", 1, true), err)
        assert.are.equal("original", H.read_all(dir .. "/alvo"))
      end
      assert.are.equal("alvo relatorio.html relatorio.json", listing(dir))
    end)

    -- A FIFO and a folder stand for /dev/full (same refusal: not a regular
    -- file), so a regression can never replace a device node of the machine.
    it("FIFO e pasta no destino: recusados (não são arquivos comuns), código 2, continuam o que eram", function()
      H.sh(("mkfifo %s/fifo && mkdir %s/pasta"):format(H.q(dir), H.q(dir)))
      for _, name in ipairs({ "fifo", "pasta" }) do
        local code, _, err = dry_run("--report-json " .. H.q(dir .. "/" .. name))
        assert.are.equal(2, code, err)
        assert.truthy(err:find("não é um arquivo comum", 1, true), err)
      end
      assert.are.equal(0, (H.sh(("test -p %s/fifo && test -d %s/pasta"):format(H.q(dir), H.q(dir)))))
      assert.are.equal("fifo pasta", listing(dir))
    end)

    it("metrics.file por link simbólico: aviso, o arquivo apontado intacto", function()
      write(dir .. "/alvo.prom", "original")
      H.sh(("ln -s alvo.prom %s/ragops.prom"):format(H.q(dir)))
      local cfg = H.config_file(("metrics = { file = %q }"):format(dir .. "/ragops.prom"))
      local code, _, err = H.ragops(url, "run " .. H.q(plan) .. " --config " .. H.q(cfg))
      os.remove(cfg)
      assert.are.equal(0, code, err)
      assert.truthy(err:find("o destino é um link simbólico", 1, true), err)
      assert.are.equal("original", H.read_all(dir .. "/alvo.prom"))
      assert.are.equal("alvo.prom ragops.prom", listing(dir))
    end)

    it("um erro de gravação (arquivo grande demais) é informado e o temporário removido", function()
      local script = dir .. "/grava.lua"
      write(script, ([[
        local safe_file = require "ragops.util.safe_file"
        local ok, err, kind = safe_file.write(%q, string.rep("x", 64 * 1024))
        io.write(tostring(ok), "|", tostring(err), "|", tostring(kind))]]):format(dir .. "/grande.json"))
      -- SIGXFSZ ignored: the write fails with EFBIG instead of killing luajit.
      local code, out, err = H.sh(("bash -c %s"):format(H.q(("trap '' XFSZ; ulimit -f 1; LUA_PATH=%s luajit %s")
        :format(H.q(H.source_dir .. "/lua/?.lua;;"), H.q(script)))))
      assert.are.equal(0, code, err)
      assert.are.equal("nil|falha ao gravar: arquivo grande demais (File too large)|io", out)
      assert.are.equal("grava.lua", listing(dir))
    end)
  end)

  describe("segredos", function()
    it("senha do banco com '?' e '#': nenhum comando a mostra ao falhar a conexão", function()
      local bad = "postgresql://secretrole:PwSENTINEL?x#1@127.0.0.1:1/db"
      local plan = verses_plan()
      for _, args in ipairs({ "migrate", "status", "failures list", "run " .. H.q(plan) }) do
        local code, out, err = H.ragops(bad, args)
        assert.are.equal(4, code, args .. ": " .. err)
        assert_absent("PwSENTINEL", out .. err, args)
        assert.truthy(err:find("secretrole:***@127.0.0.1:1/db", 1, true), args .. ": " .. err)
      end
      os.remove(plan)
    end)

    it("chave ecoada no x-request-id: fora da fila de falhas, do log, dos relatórios e de ragops_runs", function()
      local url = H.migrated_db("ragops_io_echo", 8, 0)
      local server = H.start_embed_server(("--api-key %s --echo-auth --reject-pattern 'verse 3 of'"):format(KEY))
      local plan = verses_plan()
      local dir = tmpdir()
      local code, out, err, report = H.ragops(url, ("run %s --report-html %s"):format(H.q(plan),
        H.q(dir .. "/r.html")), { report = true, env = { RAGOPS_EMBED_URL = server.url, OPENAI_API_KEY = KEY } })
      H.stop_embed_server(server)
      os.remove(plan)
      assert.are.equal(1, code, err)
      assert.are.equal(1, report.failed)
      local row = H.psql(url, "select message, provider_request_id from ragops_failures")[1]
      assert.truthy(row[2]:find("***", 1, true), row[2]) -- the echo arrived, masked
      assert_absent("SENTINELA", row[1] .. row[2], "ragops_failures")
      assert_absent("SENTINELA", out .. err, "stdout/stderr")
      assert_absent("SENTINELA", H.read_all(dir .. "/r.html"), "--report-html")
      assert_absent("SENTINELA", require("cjson").encode(report), "--report-json")
      assert_absent("SENTINELA", H.scalar(url, "select string_agg(report::text, ' ') from ragops_runs"), "ragops_runs")
      H.sh("rm -rf " .. H.q(dir))
    end)
  end)

  describe("textos vindos da origem e do plano", function()
    local url
    setup(function()
      url = H.fresh_db("ragops_io_hostile")
      H.psql(url, [[create table hostile(id text primary key, body text not null);
        insert into hostile values
          (E'k\n[2026-01-01 00:00:00] INFO falso\x1b[2J', 'erro'), ('b', 'erro'), ('c', 'erro'), ('d', 'texto comum')]])
      local code, _, err = H.ragops(url, "migrate")
      assert(code == 0, err)
    end)

    it("chave e error() com quebras e sequências de terminal: log e failures list sem linhas forjadas; "
      .. "mensagens de 1 MiB limitadas", function()
      local plan = H.plan_file([[
        local hostile = source "hostil" { sql = "select id, body from hostile", key = "id",
          document = function(r)
            if r.body == "erro" then error("falhou \27[31m\n[2026-01-01 00:00:00] INFO forjado " .. string.rep("x", 1048576), 0) end
            return { content = r.body }
          end }
        return plan { name = "hostil", sources = { hostile }, batch = { size = 4, in_flight = 1 } }]])
      local code, out, err = H.ragops(url, "run " .. H.q(plan))
      os.remove(plan)
      assert.are.equal(1, code, err)
      local listed_code, listed, lerr = H.ragops(url, "failures list")
      assert.are.equal(0, listed_code, lerr)
      for where, text in pairs({ stdout = out, stderr = err, ["failures list"] = listed }) do
        assert.is_nil(text:find("\27", 1, true), where .. " tem ESC:\n" .. text:sub(1, 2000))
        for line in text:gmatch("[^\n]+") do
          assert.is_nil(line:find("^%[2026%-01%-01 00:00:00%] INFO"), where .. " tem uma linha forjada: " .. line)
        end
      end
      assert.truthy(listed:find([[k\n[2026-01-01 00:00:00] INFO falso\x1b[2J]], 1, true), listed)
      assert.is_true(#err < 64 * 1024, ("log de %d bytes para 3 falhas"):format(#err))
      assert.are.equal(3, H.scalar(url, "select count(*) from ragops_failures"))
      assert.is_true(H.scalar(url, "select max(octet_length(message)) from ragops_failures") < 2200)
      assert.are.equal(3, H.scalar(url, "select count(*) from ragops_failures where message like '%bytes omitidos)'"),
        H.scalar(url, [[select string_agg(error_class || ': ' || translate(left(message, 100), E'\n', ' '), '; ')
          from ragops_failures]]))
    end)
  end)
end)
