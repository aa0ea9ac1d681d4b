-- cli_spec.lua: the command line without a database: flag parsing, empty
-- filters, --set keys, operating limits (--batch-size, --limit ...), the
-- sanity-run limit in the runner and the "limites" part of the report.

require "tests.lua.c_stubs"
local cli = require "ragops.cli"
local params_mod = require "ragops.plan.params"
local plan = require "ragops.plan"
local report = require "ragops.report"
local testing = require "ragops.testing"
local cjson = require "cjson"

local HOME = os.getenv("RAGOPS_SOURCE_DIR") or "."
local BACKFILL = HOME .. "/plans/backfill.lua"
local REINDEX = HOME .. "/plans/reindex.lua"

local function plan_file(text)
  local path = os.tmpname() .. ".lua"
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

-- Runs cli.main(...) capturing stdout and stderr; returns code, out, err.
local function run_cli(...)
  local out, err = {}, {}
  local real_out, real_err = io.stdout, io.stderr
  io.stdout = { write = function(_, ...) for _, s in ipairs({ ... }) do out[#out + 1] = s end end }
  io.stderr = { write = function(_, ...) for _, s in ipairs({ ... }) do err[#err + 1] = s end end }
  local ok, code = pcall(cli.main, ...)
  io.stdout, io.stderr = real_out, real_err
  assert(ok, code)
  return code, table.concat(out), table.concat(err)
end

describe("filtros vazios", function()
  for _, params in ipairs({
    { entity_type = "verse", entity_id = "" },
    { entity_type = "verse", entity_id = "," },
    { entity_type = "verse", entity_id = " , " },
    { entity_type = "" },
    { entity_type = "," },
  }) do
    it("recusa " .. cjson.encode(params), function()
      local overrides, err = params_mod.scope_overrides(params)
      assert.is_nil(overrides)
      assert.matches("vazio", err)
      local p, lerr = params_mod.load_plan(REINDEX, params)
      assert.is_nil(p)
      assert.matches("^%-%-entity%-[a-z]+ vazio", lerr)
    end)
  end

  it("um filtro com valores continua valendo", function()
    local overrides = params_mod.scope_overrides({ entity_type = "verse, fortune", entity_id = "1,,2" })
    assert.same({ "verse", "fortune" }, overrides.scope.entity_types)
    assert.same({ "1", "2" }, overrides.scope.entity_ids)
  end)
end)

describe("--set: chaves válidas", function()
  it("recusa chave desconhecida listando as válidas", function()
    local p, err = params_mod.load_plan(BACKFILL, { nonsense = "1" })
    assert.is_nil(p)
    assert.matches("--set nonsense: chave desconhecida", err, 1, true)
    for _, key in ipairs({ "entity_type", "entity_id", "since", "until", "mode", "batch.size",
                           "batch.in_flight", "limit", "retry.attempts", "retry.timeout_s" }) do
      assert.matches(key, err, 1, true)
    end
  end)

  it("recusa uma chave pontuada que não é limite de operação", function()
    local p, err = params_mod.load_plan(BACKFILL, { ["batch.foo"] = "1" })
    assert.is_nil(p)
    assert.matches("--set batch.foo: chave desconhecida", err, 1, true)
  end)

  it("aceita as chaves que o plano lê de params", function()
    local path = plan_file([[
local s = source "item" { sql = "select 1", key = "id", document = function(r) return { content = "x" } end }
return plan { name = "p", sources = { s }, batch = { size = tonumber(params.tamanho) or 10 } }
]])
    local p, run_params = params_mod.load_plan(path, { tamanho = "7" })
    assert.equal(7, p.batch.size)
    assert.same({ tamanho = "7" }, run_params)
    local _, err = params_mod.load_plan(path, { tamanhoo = "7" })
    assert.matches("chaves válidas: .*tamanho", err)
    os.remove(path)
  end)

  it("conta as leituras dos planos importados (reindex importa backfill)", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir) == 0 or true)
    local f = assert(io.open(dir .. "/base.lua", "w"))
    f:write([[
local s = source "item" { sql = "select 1", key = "id", document = function(r) return { content = params.prefixo or "" } end }
local _ = params.prefixo
return plan { name = "base", sources = { s } }
]])
    f:close()
    local path = dir .. "/derivado.lua"
    f = assert(io.open(path, "w"))
    f:write('local b = import "base.lua"\nreturn plan { name = "derivado", sources = b.sources }\n')
    f:close()
    assert.truthy(params_mod.load_plan(path, { prefixo = "a" }))
    os.execute("rm -rf " .. dir)
  end)
end)

describe("limites de operação", function()
  it("--set batch.in_flight vence o literal do plano", function()
    local p = assert(params_mod.load_plan(BACKFILL, { ["batch.in_flight"] = "8", ["batch.size"] = "16",
                                                  ["retry.attempts"] = "2", ["retry.timeout_s"] = "1.5" }))
    assert.equal(8, p.batch.in_flight)
    assert.equal(16, p.batch.size)
    assert.equal(2, p.retry.attempts)
    assert.equal(1.5, p.retry.timeout_s)
    -- the rest of the plan's retry literal is kept
    assert.equal(30000, p.retry.max_ms)
  end)

  it("valida como as chaves do plano", function()
    local cases = {
      { { ["batch.size"] = "0" }, 'chave "batch.size": valor 0 inválido; esperado um inteiro entre 1 e 2048' },
      { { ["batch.size"] = "abc" }, 'chave "batch.size": valor "abc" inválido' },
      { { ["batch.in_flight"] = "65" }, 'chave "batch.in_flight": valor 65 inválido' },
      { { ["retry.attempts"] = "1.5" }, 'chave "retry.attempts"' },
      { { ["retry.timeout_s"] = "0" }, 'chave "retry.timeout_s"' },
      { { limit = "0" }, 'chave "limit": valor 0 inválido' },
      { { limit = "dez" }, 'chave "limit": valor "dez" inválido' },
    }
    for _, case in ipairs(cases) do
      local p, err = params_mod.load_plan(BACKFILL, case[1])
      assert.is_nil(p)
      assert.matches(case[2], err, 1, true)
      assert.matches("(linha de comando)", err, 1, true)
    end
  end)

  it("limit desliga delete_missing e faz parte da identidade da execução; batch.* não", function()
    local p, run_params = params_mod.load_plan(BACKFILL, { limit = "100", ["batch.size"] = "8" })
    assert.equal(100, p.limit)
    assert.is_false(p.delete_missing)
    assert.same({ limit = "100" }, run_params)
    local unlimited = assert(params_mod.load_plan(BACKFILL, {}))
    assert.is_nil(unlimited.limit)
    assert.is_true(unlimited.delete_missing)
  end)

  it("as flags viram as mesmas chaves do --set (a flag vence)", function()
    local a = cli.parse({ "--batch-size", "8", "--in-flight=2", "--limit", "100", "--max-retries", "3",
                          "--timeout", "9", "--set", "batch.size=4" }, cli.FLAGS.backfill)
    assert.equal("8", a.options["batch-size"])
    assert.equal("4", a.sets["batch.size"])
    assert.equal("2", a.options["in-flight"])
  end)
end)

describe("runner com limit (execução de sanidade)", function()
  local function item_plan(spec)
    local s = plan.source "item" { sql = "select id, text from items", key = "id",
      document = function(row) return { content = row.text } end }
    local full = { name = "t", sources = { s }, batch = { size = 4, in_flight = 1 } }
    for k, v in pairs(spec) do full[k] = v end
    return plan.new(full)
  end
  local function rows(n)
    local out = {}
    for i = 1, n do out[i] = { id = i, text = "texto " .. i } end
    return out
  end

  it("processa no máximo limit entidades por fonte", function()
    local r = testing.run(item_plan({ limit = 6 }), { sources = { item = rows(20) } })
    assert.equal(6, r.stats.processed)
    assert.equal(6, #r:documents("item"))
  end)

  it("ao retomar, conta o que o checkpoint já processou", function()
    local cp = { item = { seq = 1, after = "4", stats = { processed = 4, succeeded = 4 } } }
    local r = testing.run(item_plan({ limit = 6 }), { sources = { item = rows(20) }, checkpoint = cp })
    assert.equal(6, r.stats.processed)
    assert.equal(2, #r:documents("item"))
    local done = testing.run(item_plan({ limit = 4 }), { sources = { item = rows(20) }, checkpoint = cp })
    assert.equal(0, #done:documents("item"))
  end)

  it("não remove órfãos mesmo quando a fonte cabe no limite", function()
    local first = testing.run(item_plan({}), { sources = { item = rows(5) } })
    table.remove(first.store.sources.item, 5)
    local limited = testing.run(item_plan({ limit = 100 }), { store = first.store })
    assert.equal(0, limited.stats.deleted)
    assert.equal(5, #limited:documents("item"))
  end)
end)

describe("relatório: limites", function()
  local limits = { batch_size = 16, in_flight = 2, max_retries = 5, timeout_s = 60 }

  it("texto mostra os limites efetivos", function()
    local text = report.format({ processed = 1, limits = limits })
    assert.matches("limites: +lotes de 16, 2 em paralelo, sem limite de entidades, 5 tentativa%(s%) por pedido, tempo limite de 60 s", text)
    limits.limit = 100
    assert.matches("no máximo 100 entidade%(s%) por fonte", report.format({ limits = limits }))
    limits.limit = nil
  end)

  it("JSON traz o objeto limits, com limit null quando não há", function()
    local t = cjson.decode(report.json({ limits = limits }))
    assert.same({ batch_size = 16, in_flight = 2, max_retries = 5, timeout_s = 60, limit = cjson.null }, t.limits)
  end)

  it("params.limits lê o plano efetivo", function()
    local p = assert(params_mod.load_plan(BACKFILL, { limit = "3", ["batch.in_flight"] = "7" }))
    assert.same({ batch_size = 64, in_flight = 7, limit = 3, max_retries = 5, timeout_s = 60 }, params_mod.limits(p, require("ragops.plan.config").defaults()))
  end)
end)

describe("ajuda e erros de uso", function()
  it("ragops sem argumentos mostra a ajuda geral no stderr e sai com 2", function()
    local code, out, err = run_cli()
    assert.equal(2, code)
    assert.equal("", out)
    assert.matches("Uso:", err, 1, true)
  end)

  for _, argv in ipairs({ { "migrate" }, { "run", "x.lua" }, { "backfill" }, { "reindex" },
                          { "failures" }, { "failures", "list" }, { "failures", "retry" },
                          { "index" }, { "index", "create" }, { "index", "drop" }, { "index", "status" },
                          { "validate" } }) do
    for _, flag in ipairs({ "--help", "-h" }) do
      local name = table.concat(argv, " ")
      it(("ragops %s %s mostra a ajuda do comando e sai com 0"):format(name, flag), function()
        local args = { unpack(argv) }
        args[#args + 1] = flag
        local code, out, err = run_cli(unpack(args))
        assert.equal(0, code)
        assert.equal("", err)
        assert.matches("^Uso: ragops " .. name:gsub("x%.lua", "PLANO.lua"):gsub("%-", "%%-"), out)
      end)
    end
  end

  it("ragops help COMANDO mostra a ajuda do comando", function()
    local code, out = run_cli("help", "failures", "retry")
    assert.equal(0, code)
    assert.matches("^Uso: ragops failures retry", out)
    assert.equal(2, (run_cli("help", "nada")))
  end)

  it("comando e opção desconhecidos saem com 2 e mensagem em pt-BR", function()
    local code, _, err = run_cli("nada")
    assert.equal(2, code)
    assert.matches("comando desconhecido: nada", err, 1, true)
    code, _, err = run_cli("failures", "list", "--overwrite")
    assert.equal(2, code)
    assert.matches("opção desconhecida: --overwrite", err, 1, true)
    code, _, err = run_cli("failures", "list", "--entity-type", ",")
    assert.equal(2, code)
    assert.matches("--entity-type vazio", err, 1, true)
  end)

  it("o que a linha de comando repete no stderr sai com segredos mascarados e controles escapados", function()
    local scrub = require "ragops.util.scrub"
    scrub.register("sk-SENTINELA-cli-0123456789")
    local code, _, err = run_cli("nada\27[31m\n")
    assert.equal(2, code)
    assert.is_nil(err:find("\27", 1, true), err)
    assert.matches("comando desconhecido: nada\\x1b[31m", err, 1, true)
    code, _, err = run_cli("failures", "list", "--sk-SENTINELA-cli-0123456789")
    assert.equal(2, code)
    assert.is_nil(err:find("sk-SENTINELA-cli-0123456789", 1, true), err)
    scrub.clear()
  end)
end)
