-- Integration: what operators watch (issue 10), with the real binary, the
-- real PostgreSQL and extra embed-servers: JSON logs parse line by line
-- with the required keys; the request id of a failed request is in the
-- engine's log, in the embed-server's log and in the failures table; no
-- output of a full run (logs in both formats, report JSON and HTML, metrics
-- textfile, ragops_failures, ragops_runs) holds the API key or the
-- database password; the HTML report renders in headless Chromium; the
-- progress line is redrawn on a terminal and logged without one, never both.
local cjson = require "cjson"
local H = require "tests.integration.helper"

local API_KEY = "sk-obs-segredo-7f3a9c"
local DB_PASSWORD = "senha-obs-9d2e41"

-- Verses only, small batches, quick retries (verse 7 is refused with --reject-pattern).
local PLAN = [[
  local verses = source "verse" { sql = "select id, book, chapter, verse, text, updated_at from verses",
    key = "id", updated_at = "updated_at", document = function(r) return { content = r.text } end }
  return plan { name = "observa", sources = { verses }, batch = { size = 4, in_flight = 2 },
    retry = { attempts = 2, rounds = 1, base_ms = 10, max_ms = 20 } }]]

local function lines_of(text)
  local out = {}
  for line in text:gmatch("[^\n]+") do out[#out + 1] = line end
  return out
end

local function chromium()
  local code = H.sh("command -v chromium")
  return code == 0
end

-- Runs chromium headless on the HTML file with extra args; returns code, stdout.
local function headless(path, args)
  local profile = os.tmpname(); os.remove(profile)
  local code, out, err = H.sh(("chromium --headless --no-sandbox --disable-gpu --disable-background-networking "
    .. "--disable-component-update --disable-sync --no-first-run --user-data-dir=%s %s file://%s")
    :format(H.q(profile), args, H.q(path)))
  H.sh("rm -rf " .. H.q(profile))
  return code, out, err
end

describe("observabilidade", function()
  local url, plan, server

  setup(function()
    url = H.migrated_db("ragops_it_obs", 24, 0)
    plan = H.plan_file(PLAN)
    server = H.start_embed_server("--reject-pattern 'verse 7 of'")
  end)

  -- Servers live for the whole file (H.cleanup after each test would stop them).
  teardown(function()
    H.cleanup()
    os.remove(plan)
  end)

  local function fresh()
    H.psql(url, "truncate rag_documents; truncate ragops_runs cascade; truncate ragops_failures")
  end

  it("logs JSON: cada linha é um objeto com ts, level, msg, run_id e plan", function()
    fresh()
    local code, _, err = H.ragops(url, "run " .. H.q(plan) .. " --log-format json",
      { env = { RAGOPS_EMBED_URL = server.url } })
    assert.are.equal(1, code, err)
    local lines = lines_of(err)
    assert.is_true(#lines >= 3, err)
    local with_run = 0
    for _, line in ipairs(lines) do
      local ok, e = pcall(cjson.decode, line)
      assert.is_true(ok and type(e) == "table", "linha que não é JSON: " .. line)
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$", e.ts)
      assert.is_truthy(({ info = true, warn = true, error = true })[e.level], line)
      assert.are.equal("string", type(e.msg))
      if e.run_id then
        with_run = with_run + 1
        assert.are.equal("observa", e.plan)
      end
    end
    assert.is_true(with_run >= 2, err)
  end)

  it("o id do pedido que falhou está no log do motor, no do embed-server e na fila de falhas", function()
    fresh()
    local code, _, err = H.ragops(url, "run " .. H.q(plan), { env = { RAGOPS_EMBED_URL = server.url } })
    assert.are.equal(1, code, err)
    local ours, theirs = err:match("falha permanente em verse 7: .-%(pedido (rg%-%x+%-%d+), id no provedor (es%-%d+)%)")
    assert.is_truthy(ours, "esperava o id do pedido na linha da falha:\n" .. err)
    local server_log = H.read_all(server.log)
    assert.is_truthy(server_log:find("X-Request-Id " .. ours .. " -> HTTP 400 (x-request-id " .. theirs .. ")", 1, true),
      server_log)
    local message = H.scalar(url, "select message from ragops_failures where entity_id = '7'")
    assert.is_truthy(message:find(ours, 1, true) and message:find(theirs, 1, true), message)
  end)

  it("ragops_failures guarda request_id e provider_request_id em colunas", function()
    local row = H.psql(url, "select request_id, provider_request_id from ragops_failures where entity_id = '7'")[1]
    assert.matches("^rg%-", row[1])
    assert.matches("^es%-", row[2])
    local code, listing = H.ragops(url, "failures list")
    assert.are.equal(0, code)
    assert.matches("pedido: rg%-[%x]+%-%d+  id no provedor: es%-%d+", listing)
  end)

  it("nenhuma saída de uma execução completa contém a chave de API ou a senha do banco", function()
    fresh()
    H.psql(url, ("do $$ begin if not exists (select from pg_roles where rolname = 'obs_dono') then "
      .. "create role obs_dono login superuser password %s; end if; end $$"):format("'" .. DB_PASSWORD .. "'"))
    local secret_url, n = url:gsub("^(postgres%a*://)[^@/]*@", "%1obs_dono:" .. DB_PASSWORD .. "@")
    assert.are.equal(1, n, url)
    local keyed = H.start_embed_server("--api-key " .. API_KEY .. " --reject-pattern 'verse 7 of' --latency-ms 100")
    local dir = os.tmpname(); os.remove(dir); H.sh("mkdir -p " .. H.q(dir))
    local cfg = H.plan_file(("return { metrics = { file = %q }, log = { progress_every_s = 0.05 } }")
      :format(dir .. "/metrics.prom"))
    local env = { RAGOPS_EMBED_URL = keyed.url, OPENAI_API_KEY = API_KEY }
    local outputs = {}
    for _, format in ipairs({ "text", "json" }) do
      H.psql(url, "truncate rag_documents")
      local code, out, err = H.ragops(secret_url, ("run %s --config %s --log-format %s --report-json %s --report-html %s")
        :format(H.q(plan), H.q(cfg), format, H.q(dir .. "/r.json"), H.q(dir .. "/r.html")), { env = env })
      assert.are.equal(1, code, err)
      outputs[#outputs + 1] = out .. err .. H.read_all(dir .. "/r.json") .. H.read_all(dir .. "/r.html")
        .. H.read_all(dir .. "/metrics.prom")
    end
    local code, out, err = H.ragops(secret_url, "failures list", { env = env })
    assert.are.equal(0, code, err)
    outputs[#outputs + 1] = out .. err
    outputs[#outputs + 1] = cjson.encode(H.psql(url, "select * from ragops_failures"))
    outputs[#outputs + 1] = cjson.encode(H.psql(url, "select * from ragops_runs"))
    H.stop_embed_server(keyed)
    H.sh("rm -rf " .. H.q(dir)); os.remove(cfg)
    local all = table.concat(outputs, "\n")
    assert.is_truthy(all:find("progresso", 1, true))           -- the logs really are in there
    assert.is_truthy(all:find("verse 7", 1, true))
    assert.is_nil(all:find(API_KEY, 1, true), "a chave de API vazou")
    assert.is_nil(all:find(DB_PASSWORD, 1, true), "a senha do banco vazou")
  end)

  it("o relatório HTML abre no Chromium headless: textos em pt-BR no DOM e uma captura não vazia", function()
    if not chromium() then
      pending("chromium ausente: rode scripts/deps.sh")
      return
    end
    fresh()
    local dir = os.tmpname(); os.remove(dir); H.sh("mkdir -p " .. H.q(dir))
    -- A provider slow enough for several progress samples (the throughput chart's points).
    local slow = H.start_embed_server("--reject-pattern 'verse 7 of' --latency-ms 60")
    local cfg = H.plan_file("return { log = { progress_every_s = 0.05 } }")
    local code, _, err = H.ragops(url, ("backfill --dry-run --report-json %s"):format(H.q(dir .. "/dry.json")))
    assert.are.equal(0, code, err)
    code, _, err = H.ragops(url, ("run %s --config %s --estimate-json %s --report-html %s"):format(H.q(plan),
      H.q(cfg), H.q(dir .. "/dry.json"), H.q(dir .. "/r.html")), { env = { RAGOPS_EMBED_URL = slow.url } })
    H.stop_embed_server(slow); os.remove(cfg)
    assert.are.equal(1, code, err)
    local dcode, dom = headless(dir .. "/r.html", "--dump-dom")
    assert.are.equal(0, dcode)
    for _, text in ipairs({ "Totais", "Vazão ao longo do tempo", "Latência das requisições de embedding",
                            "Novas tentativas e falhas por causa", "Estimativa x real", "HTTP 400" }) do
      assert.is_truthy(dom:find(text, 1, true), "faltou no DOM: " .. text)
    end
    -- What the page says (issue 19, point 7): the latency chart has data, the
    -- failure class is in pt-BR, the throughput axis is a rate.
    assert.is_nil(dom:find("latência por faixa: sem dados", 1, true), "gráfico de latência sem dados:\n" .. dom)
    assert.matches("média: [%d.,]+ ms em [%d.]+ requisições", dom)
    assert.matches('aria%-label="latência por faixa".-até %d+ ms', dom)
    assert.is_truthy(dom:find(">permanente<", 1, true), "classe de falha em pt-BR:\n" .. dom)
    assert.is_nil(dom:find(">permanent<", 1, true), "classe de falha em inglês:\n" .. dom)
    assert.matches("documentos/s: até [%d.]+,%d", dom)
    assert.is_nil(dom:find("documentos processados: até", 1, true), "o eixo da vazão é o acumulado:\n" .. dom)
    local scode = headless(dir .. "/r.html", ("--screenshot=%s --window-size=1024,1400"):format(H.q(dir .. "/r.png")))
    assert.are.equal(0, scode)
    local png = H.read_all(dir .. "/r.png")
    assert.are.equal("\137PNG", png:sub(1, 4))
    assert.is_true(#png > 20000, "captura pequena demais: " .. #png .. " bytes")
    H.sh("rm -rf " .. H.q(dir))
  end)

  describe("progresso", function()
    local slow, cfg
    setup(function()
      slow = H.start_embed_server("--latency-ms 150")
      cfg = H.plan_file("return { log = { progress_every_s = 0.1 } }")
    end)
    teardown(function() H.stop_embed_server(slow); os.remove(cfg) end)

    it("num terminal: a linha é redesenhada no lugar, sem linhas de progresso no log", function()
      fresh()
      local cmd = ("cd %s && env %s %s run %s --config %s"):format(H.q(H.source_dir),
        H.env(url, { RAGOPS_EMBED_URL = slow.url }), H.q(H.bin), H.q(plan), H.q(cfg))
      local code, out = H.sh("script -qfec " .. H.q(cmd) .. " /dev/null")
      assert.are.equal(0, code, out)
      assert.is_truthy(out:find("\r\27[Kprogresso: ", 1, true), out)
      assert.is_nil(out:find("INFO progresso:", 1, true), out)
    end)

    it("sem terminal: linhas de log de progresso, nada redesenhado", function()
      fresh()
      local code, _, err = H.ragops(url, "run " .. H.q(plan) .. " --config " .. H.q(cfg),
        { env = { RAGOPS_EMBED_URL = slow.url } })
      assert.are.equal(0, code, err)
      assert.is_truthy(err:find("INFO progresso:", 1, true), err)
      assert.is_nil(err:find("\27[K", 1, true))
      assert.is_nil(err:find("\r", 1, true))
    end)
  end)
end)
