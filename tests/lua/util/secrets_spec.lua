-- secrets_spec.lua: what leaves the process (issue 20, points 12 to 15):
-- ragops.util.scrub (masking of the registered secrets, escaping of control
-- characters, capping), config.redact_url with passwords holding "?", "#",
-- "@", config.load registering every configured secret, and the exit points
-- that use them: the text and JSON log, `failures list`, the Pushgateway's
-- errors, the reports (text, JSON, HTML), exit.fail.
require "tests.lua.c_stubs"
local cjson = require "cjson"
local config = require "ragops.plan.config"
local scrub = require "ragops.util.scrub"

local KEY = "sk-SENTINELA-chave-0123456789"

-- env_getter over a fixed table (never the real environment).
local function env_of(values)
  return function(name) return values[name] end
end

local function temp_file(text)
  local path = os.tmpname()
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  return path
end

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local text = f:read("*a")
  f:close()
  return text
end

-- Fails when text holds any of the needles (printing text).
local function assert_none(text, needles)
  for _, needle in ipairs(needles) do
    assert(not text:find(needle, 1, true), ("%q vazou em:\n%s"):format(needle, text))
  end
end

local function base64(text)
  return (require("ragops.obs.pushgateway").base64url(text):gsub("[-_]", { ["-"] = "+", ["_"] = "/" }))
end

before_each(function() scrub.clear() end)

describe("config.redact_url: a senha some qualquer que seja o caractere", function()
  it("'?' e '#' na senha (o userinfo vai até o último '@')", function()
    assert.are.equal("postgresql://secretrole:***@host/db",
      config.redact_url("postgresql://secretrole:PwSENTINEL?x#1@host/db"))
  end)

  it("'@', ':' e '/' na senha, porta e query preservadas", function()
    local redacted = config.redact_url("postgresql://u:a@b:c/d?e#f@db.example:5432/base?sslmode=require")
    assert.are.equal("postgresql://u:***@db.example:5432/base?sslmode=require", redacted)
  end)

  it("sem senha, nada muda; conninfo password=... com aspas e escapes", function()
    assert.are.equal("postgresql://u@h/db", config.redact_url("postgresql://u@h/db"))
    assert.are.equal("host=h password=*** dbname=x", config.redact_url([[host=h password='a b\'c?#' dbname=x]]))
  end)
end)

describe("config.load registra os segredos configurados", function()
  local path
  after_each(function() if path then os.remove(path) end end)

  it("chave, senha do banco (crua e decodificada), Basic do Pushgateway e caminho do webhook", function()
    path = temp_file([[return {
      metrics = { push_url = "http://pgw-user:pgw-SENHA-9@127.0.0.1:9091" },
      alerts = { webhook_url = "https://hooks.example.com/services/T000/B000/WEBHOOKSEGREDO" },
    }]])
    local cfg = assert(config.load(path, env_of {
      OPENAI_API_KEY = KEY, DATABASE_URL = "postgresql://role:Pw%40SENTINEL?x#1@127.0.0.1:1/db",
      PGPASSWORD = "senha-do-ambiente" }))
    assert.are.equal(KEY, cfg.provider.api_key)
    local text = table.concat({ "chave " .. KEY, "senha Pw%40SENTINEL?x#1", "decodificada Pw@SENTINEL?x#1",
      "eco Basic " .. base64("pgw-user:pgw-SENHA-9"), "corpo /services/T000/B000/WEBHOOKSEGREDO",
      "ambiente senha-do-ambiente" }, "\n")
    local masked = scrub.mask(text)
    assert_none(masked, { "SENTINEL", "pgw-SENHA", base64("pgw-user:pgw-SENHA-9"), "WEBHOOKSEGREDO",
                          "senha-do-ambiente", "0123456789" })
    assert.are.equal(6, select(2, masked:gsub("%*%*%*", "")), masked)
  end)
end)

describe("ragops.util.scrub", function()
  it("mask: todas as ocorrências, a mais longa primeiro, e as formas JSON e HTML", function()
    scrub.register("abcd")
    scrub.register("abcd-efgh")
    scrub.register("a/b\"c<d")
    scrub.register("xyz") -- curto demais: mascarar esconderia palavras comuns
    assert.are.equal("*** e *** e xyz", scrub.mask("abcd-efgh e abcd e xyz"))
    assert.are.equal([["***"]], scrub.mask(cjson.encode("a/b\"c<d")))
    assert.are.equal("<p>***</p>", scrub.mask("<p>a/b&quot;c&lt;d</p>"))
  end)

  it("escape: C0, DEL, C1 e bytes fora do UTF-8 visíveis; acentos ficam", function()
    local hostile = "k\n[2026-01-01 00:00:00] INFO falso\27[2J\r\t\0\127 \194\155 \255 ação"
    local escaped = scrub.escape(hostile)
    assert.are.equal([[k\n[2026-01-01 00:00:00] INFO falso\x1b[2J\r\t\x00\x7f \u009b \xff ação]], escaped)
    assert.is_nil(escaped:find("[%z\1-\31\127]"))
    assert.are.equal("a\nb\\x1b", scrub.escape("a\nb\27", true))
  end)

  it("cap: 4 MiB viram 2 KiB e o aviso, sem partir um caractere UTF-8", function()
    local big = string.rep("é", 2 * 1024 * 1024) -- 4 MiB
    local capped = scrub.message(big)
    local kept = capped:match("^(.-) … %(")
    assert.are.equal(2048, #kept)
    assert.truthy(capped:find(("… (%d bytes omitidos)"):format(#big - 2048), 1, true), capped:sub(-40))
    assert.are.equal("curto", scrub.cap("curto", 10))
    local odd = scrub.cap("aé", 2) -- the cut falls inside "é"
    assert.are.equal("a … (2 bytes omitidos)", odd)
  end)
end)

describe("pontos de saída", function()
  local log = require "ragops.obs.log"
  local lines, saved

  before_each(function()
    saved = { sink = log.sink, format = log.format }
    lines = {}
    log.sink = { write = function(_, ...) lines[#lines + 1] = table.concat({ ... }) end }
    scrub.register(KEY)
  end)
  after_each(function() log.sink, log.format = saved.sink, saved.format end)

  it("log em texto: uma linha, sem ESC, chave mascarada, mensagem limitada", function()
    log.format = "text"
    log.warn("falha permanente em verse %s: %s", "k\n[2026-01-01 00:00:00] INFO falso\27[2J",
      "id no provedor Bearer" .. KEY)
    log.error("document() falhou: %s", string.rep("x", 4 * 1024 * 1024))
    assert.are.equal(2, #lines)
    assert.are.equal(1, select(2, lines[1]:gsub("\n", "")), lines[1])
    assert.is_nil(lines[1]:find("\27", 1, true))
    assert.truthy(lines[1]:find([[k\n[2026-01-01 00:00:00] INFO falso\x1b[2J]], 1, true), lines[1])
    assert_none(lines[1], { KEY })
    assert.is_true(#lines[2] < scrub.MAX_LINE + 100, "linha de " .. #lines[2] .. " bytes")
    assert.truthy(lines[2]:find("bytes omitidos", 1, true))
  end)

  it("log em JSON: chave mascarada na mensagem e nos campos, C1 escapado", function()
    log.format = "json"
    log.event("warn", { provider_request_id = "Bearer" .. KEY }, "eco %s \194\155", KEY)
    assert_none(lines[1], { KEY, "\194\155" })
    local e = cjson.decode(lines[1])
    assert.are.equal("eco *** \194\155", e.msg) -- the same text once decoded
    assert.are.equal("Bearer***", e.provider_request_id)
  end)

  it("failures list: chave, linhas forjadas e sequências de terminal neutralizadas", function()
    local failures = require "ragops.store.failures"
    local out = failures.format({ {
      id = 1, run_id = 2, entity_type = "verse\27]0;titulo\7", entity_id = "k\n[2026-01-01 00:00:00] INFO falso",
      error_class = "transform", attempts = 1, first_seen = "x", last_seen = "y",
      message = "document() falhou: \27[2J" .. KEY, request_id = "rg-1", provider_request_id = "Bearer" .. KEY,
    } }, {})
    assert.are.equal(5, select(2, out:gsub("\n", "")), out) -- header + 4 lines of the one failure
    assert.is_nil(out:find("[%z\1-\9\11-\31\127]"), out)
    assert_none(out, { KEY })
  end)

  it("Pushgateway: o eco das credenciais Basic na resposta não chega à mensagem", function()
    local path = temp_file([[return { metrics = { push_url = "http://pgw:SEGREDO-pgw@127.0.0.1:9" } }]])
    assert(config.load(path, env_of {}))
    os.remove(path)
    local echo = "Authorization: Basic " .. base64("pgw:SEGREDO-pgw") .. "\27[2J"
    local pushgateway = require "ragops.obs.pushgateway"
    local registry = { render = function() return "" end }
    local ok, err = pushgateway.push(registry, "http://127.0.0.1:9", { job = "ragops" },
      { request = function() return { status = 401, body = echo } end })
    assert.is_nil(ok)
    assert_none(err, { base64("pgw:SEGREDO-pgw"), "\27" })
    ok, err = pushgateway.push(registry, "http://127.0.0.1:9", { job = "ragops" },
      { request = function() return nil, "falhou com SEGREDO-pgw" end })
    assert_none(err, { "SEGREDO-pgw" })
  end)

  it("relatórios: texto escapado, JSON e HTML com a chave mascarada", function()
    local report = require "ragops.report"
    local report_html = require "ragops.report.html"
    local stats = { plan = "p\27[2J", processed = 1, abort_reason = "eco " .. KEY, aborted = { reason = KEY } }
    assert_none(report.json(stats), { KEY })
    local stdout = io.stdout
    local printed = {}
    io.stdout = { write = function(_, ...) printed[#printed + 1] = table.concat({ ... }) end } -- luacheck: ignore
    local ok, code = pcall(report.emit, stats, {}, 0)
    io.stdout = stdout -- luacheck: ignore
    assert.is_true(ok, code)
    assert.is_nil(table.concat(printed):find("\27", 1, true))
    assert_none(table.concat(printed), { KEY })
    local html = os.tmpname()
    assert.are.equal(0, report_html.emit({ plan = KEY, processed = 1 }, { ["report-html"] = html }, 0))
    local text = read(html)
    os.remove(html)
    assert.truthy(text and text:find("</html>", 1, true))
    assert_none(text, { KEY })
  end)

  it("exit.fail: chave mascarada, sequências escapadas, quebras de linha mantidas", function()
    local exit = require "ragops.util.exit"
    local stderr = io.stderr
    local written = {}
    io.stderr = { write = function(_, ...) written[#written + 1] = table.concat({ ... }) end } -- luacheck: ignore
    local code = exit.fail(4, "falha: %s\n\27[2J", "postgresql://role:" .. KEY .. "@h/db")
    io.stderr = stderr -- luacheck: ignore
    assert.are.equal(4, code)
    assert.are.equal("ragops: falha: postgresql://role:***@h/db\n\\x1b[2J\n", table.concat(written))
  end)
end)
