-- exit_codes_spec.lua: the exit codes and the texts operators read, without
-- a database (issue 19, points 2-4 and 10-12, and issue 20's smaller items):
-- flags parsed strictly (duplicates, decimal integers, finite bounded
-- numbers), the SQLSTATE classes that are the operator's to fix, LuaJIT's
-- runtime errors fully in pt-BR, libpq/libuv texts wrapped, one ERRO line per
-- fatal error, no progress line from an idle follower, log.format applied by
-- the commands' one configuration step, bounded plan/config file reads.

require "tests.lua.c_stubs"
local run_context = require "ragops.run.context"
local store_target = require "ragops.store.target"
local cli = require "ragops.cli"
local prelude = require "ragops.cli.prelude"
local config = require "ragops.plan.config"
local exit = require "ragops.util.exit"
local help = require "ragops.cli.commands.help"
local log = require "ragops.obs.log"
local messages = require "ragops.util.messages"
local params_mod = require "ragops.plan.params"
local plan = require "ragops.plan"
local progress = require "ragops.obs.progress"
local report = require "ragops.report"
local sandbox = require "ragops.plan.sandbox"
local status = require "ragops.report.status"

local written = {}
local function temp_file(text, suffix)
  local path = os.tmpname() .. (suffix or ".lua")
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  written[#written + 1] = path
  return path
end

teardown(function()
  for _, path in ipairs(written) do os.remove(path) end
end)

-- Runs fn with the log writing into a table; returns the lines and fn's results.
local function capture_log(fn)
  local lines = {}
  local saved = { sink = log.sink, format = log.format, quiet = log.quiet }
  log.sink = { write = function(_, ...) lines[#lines + 1] = table.concat({ ... }) end }
  log.format, log.quiet = "text", false
  local results = { pcall(fn) }
  log.sink, log.format, log.quiet = saved.sink, saved.format, saved.quiet
  assert(results[1], results[2])
  return lines, unpack(results, 2, table.maxn(results))
end

local function count_matching(lines, needle)
  local n = 0
  for _, line in ipairs(lines) do
    if line:find(needle, 1, true) then n = n + 1 end
  end
  return n
end

-- The usage error cli.parse raised for args (nil when it parsed).
local function parse_error(args, spec)
  local ok, err = pcall(cli.parse, args, spec)
  if ok then return nil end
  return type(err) == "table" and err.message or tostring(err)
end

describe("opções da linha de comando", function()
  local spec = { ["batch-size"] = "string", quiet = "bool", set = "list", ["entity-id"] = "string" }

  it("recusa uma opção repetida, em pt-BR", function()
    local err = parse_error({ "--batch-size", "8", "--batch-size", "9" }, spec)
    assert.is_not_nil(err, "--batch-size repetida foi aceita (a última valia)")
    assert.truthy(err:find("--batch-size", 1, true), err)
    assert.truthy(err:find("mais de uma vez", 1, true), err)
    assert.is_not_nil(parse_error({ "--quiet", "--quiet" }, spec), "--quiet repetida foi aceita")
    assert.is_not_nil(parse_error({ "--batch-size=8", "--batch-size", "8" }, spec))
  end)

  it("aceita repetir as opções de lista (--set)", function()
    local a = cli.parse({ "--set", "a=1", "--set", "b=2" }, spec)
    assert.are.same({ a = "1", b = "2" }, a.sets)
  end)

  it("inteiros só em decimal: 0x10 e 1e3 são recusados", function()
    for _, text in ipairs({ "0x10", "1e3", "16.0", " 16", "" }) do
      local ok, err = pcall(cli.integer_option, { port = text }, "port", 1, 65535)
      assert.is_false(ok, ("--port %q foi aceito"):format(text))
      assert.truthy(tostring(err.message):find("inteiro", 1, true), tostring(err.message))
    end
    assert.are.equal(16, cli.integer_option({ port = "16" }, "port", 1, 65535))
  end)
end)

describe("limites de operação vindos da linha de comando", function()
  local PLAN = [[
local s = source "item" { sql = "select id from items", key = "id",
  document = function(row) return { content = "x" } end }
return plan { name = "limites", sources = { s } }
]]

  local function load(limits)
    return params_mod.load_plan(temp_file(PLAN), limits)
  end

  it("recusa --batch-size 0x10 (só inteiros decimais)", function()
    local p, err = load({ ["batch.size"] = "0x10" })
    assert.is_nil(p, "batch.size = 0x10 foi aceito como 16")
    assert.truthy(err:find("0x10", 1, true), err)
    assert.truthy(err:find("decimal", 1, true), err)
  end)

  it("recusa --budget-usd 1e309 (infinito) e um orçamento sem limite", function()
    for _, text in ipairs({ "1e309", "inf", "nan", "0x10" }) do
      local p, err = load({ ["budget.usd"] = text })
      assert.is_nil(p, ("budget.usd = %s foi aceito"):format(text))
      assert.truthy(err:find("budget", 1, true), err)
    end
    local p, err = load({ ["budget.usd"] = "1e12" })
    assert.is_nil(p, "um orçamento de US$ 1e12 foi aceito")
    assert.truthy(err:find("budget.usd", 1, true), err)
    local ok = assert(load({ ["budget.usd"] = "12.5", ["batch.size"] = "16", ["retry.timeout_s"] = "1.5" }))
    assert.are.equal(12.5, ok.budget.usd)
    assert.are.equal(16, ok.batch.size)
  end)
end)

describe("SQLSTATE e códigos de saída", function()
  it("a classe 42 (sintaxe, tabela, coluna, privilégio) é do operador: código 2", function()
    for _, state in ipairs({ "42601", "42P01", "42703", "42501", "42883" }) do
      assert.are.equal(exit.usage, exit.for_sqlstate(state), state)
    end
    for _, state in ipairs({ "08006", "57P01", "XX000", "", false }) do
      assert.are.equal(exit.unreachable, exit.for_sqlstate(state or nil), tostring(state))
    end
  end)

  local p = plan.new { name = "artigos", sources = { plan.source "article" {
    sql = "select id, title from app_artcle", key = "id", document = function() return { content = "x" } end,
  } } }

  it("a conferência do SQL das fontes nomeia a fonte, a linha do plano e o texto do PostgreSQL", function()
    local seen = {}
    local function query(sql)
      seen[#seen + 1] = sql
      return nil, 'erro do PostgreSQL: relation "app_artcle" does not exist', "42P01"
    end
    local ok, code, err = store_target.check_sources(query, p)
    assert.is_nil(ok)
    assert.are.equal(exit.usage, code)
    assert.truthy(err:find('fonte "article"', 1, true), err)
    assert.truthy(err:find("exit_codes_spec.lua:%d+"), err)
    assert.truthy(err:find('relation "app_artcle" does not exist', 1, true), err)
    assert.truthy(err:find("tabela", 1, true), err)
    assert.truthy(seen[1]:find("limit 0", 1, true), seen[1])
    assert.truthy(seen[1]:find('"id"', 1, true), "a chave não é conferida: " .. seen[1])
  end)

  it("a conferência devolve 4 quando o banco caiu (não é erro do plano)", function()
    local ok, code = store_target.check_sources(function() return nil, "conexão perdida", "08006" end, p)
    assert.is_nil(ok)
    assert.are.equal(exit.unreachable, code)
    assert.is_true(store_target.check_sources(function() return {} end, p))
  end)
end)

describe("classe 42 no meio da execução (ragops.testing)", function()
  local testing = require "ragops.testing"
  local function items(n)
    local out = {}
    for i = 1, n do out[i] = { id = i, text = "texto " .. i, updated_at = "2024-01-01" } end
    return out
  end
  local p = plan.new { name = "grava", sources = { plan.source "item" {
    sql = "select id, text, updated_at from items", key = "id", updated_at = "updated_at",
    document = function(row) return { content = row.text } end } }, batch = { size = 4, in_flight = 1 } }

  it("gravação recusada por permissão (42501): código 2, com o SQLSTATE e o que conferir", function()
    local r = testing.run(p, { sources = { item = items(8) },
      fail_write = function() return 'erro do PostgreSQL: permission denied for table rag_documents', "42501" end })
    assert.are.equal(exit.usage, r.stats.aborted.code, r.stats.aborted.reason)
    assert.truthy(r.stats.aborted.reason:find("SQLSTATE 42501: permissão insuficiente", 1, true), r.stats.aborted.reason)
    assert.truthy(r.stats.aborted.reason:find("confira", 1, true), r.stats.aborted.reason)
  end)

  it("conexão perdida ao gravar continua 4 (dependência que volta)", function()
    local r = testing.run(p, { sources = { item = items(8) },
      fail_write = function() return "conexão com o PostgreSQL perdida", "08006" end })
    assert.are.equal(exit.unreachable, r.stats.aborted.code, r.stats.aborted.reason)
    assert.truthy(r.stats.aborted.reason:find("[SQLSTATE 08006]", 1, true), r.stats.aborted.reason)
  end)
end)

describe("mensagens do LuaJIT totalmente em pt-BR", function()
  local cases = {
    { "p.lua:4: attempt to concatenate field 'titulo' (a nil value)",
      "p.lua:4: tentativa de concatenar o campo 'titulo' (valor nil)" },
    { "attempt to perform arithmetic on field 'preco' (a nil value)",
      "tentativa de fazer aritmética com o campo 'preco' (valor nil)" },
    { "attempt to perform arithmetic on local 'x' (a string value)",
      "tentativa de fazer aritmética com a variável local 'x' (valor string)" },
    { "attempt to get length of field 'tags' (a nil value)",
      "tentativa de obter o tamanho do campo 'tags' (valor nil)" },
    { "attempt to concatenate upvalue 'prefixo' (a table value)",
      "tentativa de concatenar o upvalue 'prefixo' (valor table)" },
    { "attempt to call method 'upper' (a nil value)", "tentativa de chamar o método 'upper' (valor nil)" },
    { "attempt to index field 'autor' (a nil value)", "tentativa de indexar o campo 'autor' (valor nil)" },
    { "attempt to get length of a nil value", "tentativa de obter o tamanho de um valor nil" },
    { "'for' initial value must be a number", "o valor inicial do 'for' deve ser um número" },
    { "'for' limit must be a number", "o limite do 'for' deve ser um número" },
    { "'for' step must be a number", "o passo do 'for' deve ser um número" },
    { "bad argument #1 to 'rep' (string expected, got no value)",
      "argumento #1 inválido para 'rep' (esperado string, recebido nenhum valor)" },
    { "bad argument #1 to 'tostring' (value expected)", "argumento #1 inválido para 'tostring' (valor esperado)" },
    { "bad argument #1 to 'select' (index out of range)",
      "argumento #1 inválido para 'select' (índice fora do intervalo)" },
    { "bad argument #1 to 'char' (invalid value)", "argumento #1 inválido para 'char' (valor inválido)" },
    { "invalid value (table) at index 1 in table for 'concat'",
      "valor inválido (table) no índice 1 da tabela para 'concat'" },
    { "too many results to unpack", "resultados demais para unpack" },
    { "malformed pattern (ends with '%')", "padrão de texto mal formado (termina com '%')" },
    { "malformed pattern (missing ']')", "padrão de texto mal formado (falta ']')" },
  }
  for _, case in ipairs(cases) do
    it(case[1], function()
      assert.are.equal(case[2], messages.translate(case[1]))
    end)
  end

  it("um erro real de document() sai sem inglês", function()
    local fn = assert(loadstring("local row = {} return row.titulo .. '!'", "@plano.lua"))
    local _, err = pcall(fn)
    local text = messages.translate(err)
    assert.are.equal("plano.lua:1: tentativa de concatenar o campo 'titulo' (valor nil)", text)
  end)
end)

describe("textos da libpq embrulhados em pt-BR (os da libuv: engine/pg_resolve.c, spec de integração)", function()
  it("SSL exigido por um servidor sem SSL", function()
    local text = messages.translate("server does not support SSL, but SSL was required")
    assert.truthy(text:find("o servidor não aceita SSL", 1, true), text)
    assert.truthy(text:find("server does not support SSL, but SSL was required", 1, true), text)
  end)
end)

describe("configuração", function()
  it("api_key vazia diz que está vazia, sem mostrar o valor", function()
    local path = temp_file('return { provider = { api_key = "" } }')
    local cfg, err = config.load(path, function() return nil end)
    assert.is_nil(cfg)
    assert.truthy(err:find("vazi", 1, true), err)
    assert.is_nil(err:find("valor (oculto) inválido; esperado um texto (a chave de API)", 1, true), err)
  end)

  it("DATABASE_URL que a libpq recusa é erro de configuração, em pt-BR e sem a senha", function()
    local pg = package.loaded["ragops.pg"]
    local saved = pg.conninfo_error
    -- The engine's check (engine/pg.c: PQconninfoParse) as it answers for these URLs.
    pg.conninfo_error = function(url)
      if url:find("sslmod=", 1, true) then return 'invalid URI query parameter: "sslmod"' end
      if url:find("%zz", 1, true) then return 'invalid percent-encoded token: "s3cr3t%zz"' end
      return nil
    end
    local function load(url)
      return config.load(nil, function(name) return name == "DATABASE_URL" and url or nil end)
    end
    local cfg, err = load("postgresql://u@h/db?sslmod=require")
    local _, secret_err = load("postgresql://u:s3cr3t%zz@h/db")
    local ok = load("postgresql://u@h/db?sslmode=require")
    pg.conninfo_error = saved
    assert.is_nil(cfg)
    assert.truthy(err:find("variável de ambiente DATABASE_URL", 1, true), err)
    assert.truthy(err:find('parâmetro "sslmod" inválido na URL de conexão', 1, true), err)
    assert.is_nil(secret_err:find("s3cr3t", 1, true), secret_err)
    assert.is_not_nil(ok)
  end)

  it("prelude.config aplica log.format e --quiet (o passo de todo comando)", function()
    local path = temp_file('return { log = { format = "json" } }')
    local saved_format, saved_quiet = log.format, log.quiet
    local cfg = assert(prelude.config({ config = path, quiet = true }))
    local format, quiet = log.format, log.quiet
    log.format, log.quiet = saved_format, saved_quiet
    assert.are.equal("json", cfg.log.format)
    assert.are.equal("json", format)
    assert.is_true(quiet)
  end)

  it("--log-format vence log.format; um formato desconhecido é erro de uso", function()
    local path = temp_file('return { log = { format = "json" } }')
    local saved = log.format
    assert(prelude.config({ config = path, ["log-format"] = "text" }))
    local format = log.format
    local stderr, printed = io.stderr, {}
    io.stderr = { write = function(_, ...) printed[#printed + 1] = table.concat({ ... }) end }
    local ok, cfg, code = pcall(prelude.config, { config = path, ["log-format"] = "xml" })
    io.stderr, log.format = stderr, saved
    assert(ok, cfg)
    local err = table.concat(printed)
    assert.are.equal("text", format)
    assert.is_nil(cfg)
    assert.are.equal(exit.usage, code)
    assert.truthy(err:find("--log-format", 1, true), err)
  end)
end)

describe("um erro fatal, uma linha ERRO", function()
  local function context()
    local s = { now = function() return 0 end }
    return run_context.context(plan.new { name = "x", sources = { plan.source "t" {
      sql = "select 1 as id", key = "id", document = function() return { content = "x" } end } } },
      { sched = s, log = log, store = require("ragops.testing").store() })
  end

  it("o motivo do abort aparece uma vez (não de novo no relatório)", function()
    local lines = capture_log(function()
      local ctx = context()
      ctx:abort(4, "falha ao ler a fonte \"t\": banco fora do ar")
      local stats = ctx:finish()
      stats.abort_reason, stats.aborted = stats.aborted.reason, nil
      stats.plan, stats.status = "x", "aborted"
      local real_out = io.stdout
      io.stdout = { write = function() end }
      report.emit(stats, {}, 4)
      io.stdout = real_out
    end)
    assert.are.equal(1, count_matching(lines, "banco fora do ar"), table.concat(lines))
    assert.are.equal(1, count_matching(lines, "ERRO"), table.concat(lines))
  end)

  it("um SIGTERM normal não é ERRO", function()
    local lines = capture_log(function()
      context():abort(exit.interrupted, "interrompido pelo operador (SIGTERM)")
    end)
    assert.are.equal(0, count_matching(lines, "ERRO"), table.concat(lines))
  end)
end)

describe("progresso de um seguidor ocioso", function()
  local snap = { processed = 10, succeeded = 8, skipped = 2, failed = 0, retries = 0, elapsed_s = 5 }

  local function ticks(opts, snaps)
    return capture_log(function()
      local p = progress.new { log = log, tty = false, follower = opts.follower }
      for _, s in ipairs(snaps) do p.tick(s) end
    end)
  end

  it("não repete a linha quando nada mudou", function()
    local lines = ticks({ follower = true }, { snap, snap, snap })
    assert.are.equal(1, count_matching(lines, "progresso:"), table.concat(lines))
  end)

  it("nada a dizer antes da primeira mudança", function()
    local idle = { processed = 0, succeeded = 0, skipped = 0, failed = 0, retries = 0, elapsed_s = 5 }
    local lines = ticks({ follower = true }, { idle, idle })
    assert.are.equal(0, count_matching(lines, "progresso:"), table.concat(lines))
  end)

  it("a releitura da sobreposição (inalterados) não é mudança; uma gravação é", function()
    local lines = ticks({ follower = true }, { snap,
      { processed = 16, succeeded = 8, skipped = 8, failed = 0, retries = 0, elapsed_s = 10 },
      { processed = 17, succeeded = 9, skipped = 8, failed = 0, retries = 0, elapsed_s = 15 } })
    assert.are.equal(2, count_matching(lines, "progresso:"), table.concat(lines))
  end)

  it("uma execução comum mantém a linha a cada intervalo (batimento enquanto espera o provedor)", function()
    local lines = ticks({}, { snap, snap, snap })
    assert.are.equal(3, count_matching(lines, "progresso:"), table.concat(lines))
  end)
end)

describe("textos para pessoas", function()
  it("os estados de `ragops status` saem em pt-BR", function()
    local st = { runs = {
      { id = 1, plan = "backfill", status = "done", params = "{}", processed = 1, embedded = 1, failed = 0 },
      { id = 2, plan = "backfill", status = "done_with_failures", params = "{}", processed = 1, embedded = 0, failed = 1 },
      { id = 3, plan = "backfill", status = "interrupted", params = "{}", processed = 0, embedded = 0, failed = 0 },
    }, coverage = {}, open_failures = {}, indexes = {}, sync_queue = {}, storage = "real[]" }
    local text = status.format(st)
    assert.is_nil(text:find(": done", 1, true), text)
    assert.is_nil(text:find("done_with_failures", 1, true), text)
    assert.is_nil(text:find(": interrupted", 1, true), text)
    assert.truthy(text:find("concluída com falhas", 1, true), text)
    assert.are.equal("done_with_failures", require("cjson").decode(status.json(st)).runs[2].status)
  end)

  it("a ajuda de run não tem inglês misturado (usage x preço)", function()
    local text = help.text("run", {}, "0")
    assert.is_nil(text:find("usage x", 1, true), text)
  end)
end)

describe("leitura limitada de planos e configurações", function()
  it("recusa /dev/zero sem ler 1 GB", function()
    local text, err = sandbox.read_file("/dev/zero", "plano")
    assert.is_nil(text)
    assert.truthy(err:find("/dev/zero", 1, true), err)
  end)

  it("recusa um arquivo acima do limite documentado", function()
    local path = temp_file(("-- x\n"):rep(math.floor(sandbox.MAX_FILE_BYTES / 5) + 1))
    local text, err = sandbox.read_file(path, "configuração")
    assert.is_nil(text)
    assert.truthy(err:find("grande demais", 1, true), err)
  end)

  it("lê um arquivo pequeno e um vazio", function()
    assert.are.equal("return 1\n", sandbox.read_file(temp_file("return 1\n"), "plano"))
    assert.are.equal("", sandbox.read_file(temp_file(""), "plano"))
  end)
end)
