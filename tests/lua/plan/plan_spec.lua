-- plan_spec.lua: the plan DSL, its defaults, validation errors and sandbox.

local plan = require "ragops.plan"

local written = {}

-- Writes `text` to a fresh temporary .lua file and returns its path.
local function plan_file(text)
  local path = os.tmpname() .. "_plan.lua"
  local handle = assert(io.open(path, "wb"))
  handle:write(text)
  handle:close()
  written[#written + 1] = path
  return path
end

local SOURCE = [[
local verses = source "verse" {
  sql = [=[select id, book, text, updated_at from verses]=],
  key = "id", updated_at = "updated_at",
  document = function(row) return { content = row.text, metadata = { livro = row.book } } end,
}
]]

local function valid_source(entity_type)
  return plan.source(entity_type or "verse") {
    sql = "select id, text from verses", key = "id",
    document = function(row) return { content = row.text } end,
  }
end

-- Calls plan.new with a valid base spec patched by `patch`; returns the error.
local function new_error(patch)
  local spec = { name = "teste", sources = { valid_source() } }
  for key, value in pairs(patch) do spec[key] = value end
  local ok, err = pcall(plan.new, spec)
  assert.is_false(ok, "esperava erro de validação")
  return err
end

teardown(function()
  for _, path in ipairs(written) do os.remove(path) end
end)

describe("plan.new", function()
  it("fills every default", function()
    local p = plan.new { name = "backfill", sources = { valid_source() } }
    assert.is_true(plan.is_plan(p))
    assert.same({ size = 64, in_flight = 4 }, p.batch)
    assert.same({ max_chars = 2000, overlap = 200 }, p.chunking)
    -- no timeout_s: provider.timeout_s (config) applies unless the plan sets one
    assert.same({ attempts = 5, rounds = 2, base_ms = 500, max_ms = 30000 }, p.retry)
    assert.same({ failure_rate = { above = 0.05, window = 500, min_samples = 50, action = "warn" } }, p.alerts)
    assert.equal("only_missing", p.mode)
    assert.is_true(p.delete_missing)
    assert.is_nil(p.scope)
  end)

  it("keeps explicit values and fills partial tables", function()
    local p = plan.new {
      name = "backfill", sources = { valid_source() },
      batch = { size = 128 }, mode = "overwrite", delete_missing = false,
      alerts = { failure_rate = { above = 0.1, action = "abort" },
                 rate_429_per_min = { above = 30 }, p95_latency_ms = { above = 5000, action = "pause" } },
    }
    assert.equal(128, p.batch.size)
    assert.equal(4, p.batch.in_flight)
    assert.equal("overwrite", p.mode)
    assert.is_false(p.delete_missing)
    assert.same({ above = 0.1, window = 500, min_samples = 50, action = "abort" }, p.alerts.failure_rate)
    assert.same({ above = 30, action = "warn" }, p.alerts.rate_429_per_min)
    assert.same({ above = 5000, action = "pause" }, p.alerts.p95_latency_ms)
  end)

  it("validates scope and normalises ids to strings", function()
    local p = plan.new { name = "reindex", sources = { valid_source() },
      scope = { entity_types = { "verse" }, entity_ids = { 7, "8" }, since = "2024-01-01", until_ = "2024-02-01" } }
    assert.same({ "7", "8" }, p.scope.entity_ids)
    assert.equal("2024-02-01", p.scope.until_)
    assert.equal("2024-02-01", p.scope["until"])
    local err = new_error { scope = { entity_types = { "fortune" } } }
    assert.matches('chave "scope.entity_types%[1%]": valor "fortune" inválido', err)
    err = new_error { scope = { since = "ontem" } }
    assert.matches('chave "scope.since": valor "ontem" inválido', err)
  end)

  local cases = {
    { { batch = { size = 0 } }, 'chave "batch.size": valor 0 inválido; esperado um inteiro entre 1 e 2048' },
    { { batch = { size = 4096 } }, 'chave "batch.size": valor 4096 inválido' },
    { { batch = { size = "64" } }, 'chave "batch.size": valor "64" inválido' },
    { { batch = { in_flight = 0 } }, 'chave "batch.in_flight": valor 0 inválido; esperado um inteiro entre 1 e 64' },
    { { batch = { in_flight = 65 } }, 'chave "batch.in_flight": valor 65 inválido' },
    { { retry = { attempts = -1 } }, 'chave "retry.attempts": valor %-1 inválido' },
    { { retry = { base_ms = 1000, max_ms = 10 } }, 'chave "retry.max_ms": valor 10 inválido' },
    { { retry = { timeout_s = 0 } }, 'chave "retry.timeout_s": valor 0 inválido' },
    { { chunking = { max_chars = 50 } }, 'chave "chunking.max_chars": valor 50 inválido' },
    { { chunking = { max_chars = 500, overlap = 500 } }, 'chave "chunking.overlap": valor 500 inválido; esperado um inteiro entre 0 e 499' },
    { { alerts = { failure_rate = { action = "panic" } } },
      'chave "alerts.failure_rate.action": valor "panic" inválido; esperado um destes: "warn", "pause", "abort"' },
    { { alerts = { failure_rate = { above = 2 } } }, 'chave "alerts.failure_rate.above": valor 2 inválido' },
    { { alerts = { rate_429_per_min = { action = "warn" } } }, 'chave "alerts.rate_429_per_min.above": valor ausente' },
    { { mode = "missing" }, 'chave "mode": valor "missing" inválido; esperado um destes: "only_missing", "overwrite"' },
    { { delete_missing = "sim" }, 'chave "delete_missing": valor "sim" inválido; esperado true ou false' },
    { { name = 42 }, 'chave "name": valor 42 inválido' },
    { { sources = {} }, 'chave "sources": valor do tipo tabela inválido' },
    { { sources = { { entity_type = "verse" } } }, 'chave "sources%[1%]": valor do tipo tabela inválido' },
    { { batch = { sise = 3 } }, 'chave "batch.sise" desconhecida %(você quis dizer "size"%?%)' },
    { { retyr = {} }, 'chave "retyr" desconhecida %(você quis dizer "retry"%?%)' },
  }
  for _, case in ipairs(cases) do
    it("rejects " .. case[2]:sub(1, 60), function()
      local err = new_error(case[1])
      assert.matches("^plano ", err)
      assert.matches(case[2], err)
    end)
  end

  it("rejects duplicate entity types", function()
    local err = new_error { sources = { valid_source("verse"), valid_source("verse") } }
    assert.matches('chave "sources%[2%]": valor "verse" inválido; esperado tipos de entidade únicos', err)
  end)

  it("does not accept forged sources or plans", function()
    local real = valid_source()
    local fake = {}
    for key, value in pairs(real) do fake[key] = value end
    local err = new_error { sources = { fake } }
    assert.matches('chave "sources%[1%]"', err)
    assert.is_false(plan.is_plan({ name = "x" }))
  end)

  it("allows a custom run function without sources", function()
    local p = plan.new { name = "create_index", run = function() end }
    assert.same({}, p.sources)
    assert.is_function(p.run)
  end)

  it("plan.with re-validates overrides", function()
    local p = plan.new { name = "backfill", sources = { valid_source() } }
    local q = plan.with(p, { mode = "overwrite" })
    assert.equal("overwrite", q.mode)
    assert.equal("only_missing", p.mode)
    assert.has_error(function() plan.with(p, { batch = { size = 0 } }) end)
  end)
end)

describe("plan.source", function()
  it("returns a source carrying spec fields and entity_type", function()
    local s = plan.source "verse" { sql = "select 1", key = "id", updated_at = "updated_at",
      count_sql = "select count(*) from verses", document = function() end }
    assert.is_true(plan.is_source(s))
    assert.equal("verse", s.entity_type)
    assert.equal("id", s.key)
    assert.equal("updated_at", s.updated_at)
    assert.equal("select count(*) from verses", s.count_sql)
  end)

  it("rejects bad identifiers, missing fields and unknown keys", function()
    local function source_error(spec)
      local ok, err = pcall(function() return plan.source "verse" (spec) end)
      assert.is_false(ok)
      return err
    end
    local doc = function() end
    assert.matches('fonte "verse": chave "key": valor "id; drop table x" inválido',
      source_error { sql = "select 1", key = "id; drop table x", document = doc })
    assert.matches('chave "key": valor "1id" inválido', source_error { sql = "select 1", key = "1id", document = doc })
    assert.matches('chave "updated_at": valor "updated at" inválido',
      source_error { sql = "select 1", key = "id", updated_at = "updated at", document = doc })
    assert.matches('chave "sql": valor ausente', source_error { key = "id", document = doc })
    assert.matches('chave "document": valor ausente', source_error { sql = "select 1", key = "id" })
    assert.matches('chave "documnet" desconhecida',
      source_error { sql = "select 1", key = "id", document = doc, documnet = doc })
    local ok, err = pcall(plan.source, "bad type!")
    assert.is_false(ok)
    assert.matches('tipo de entidade "bad type!" inválido', err)
  end)
end)

describe("plan.load", function()
  it("loads a valid plan with params", function()
    local path = plan_file(SOURCE .. [[
return plan { name = "backfill", sources = { verses }, batch = { size = tonumber(params.size) } }
]])
    local p, err = plan.load(path, { size = "32" })
    assert.is_nil(err)
    assert.equal(32, p.batch.size)
    assert.equal(path, p.file)
    assert.equal("verse", p.sources[1].entity_type)
    local doc = p.sources[1].document({ text = "olá", book = "Gênesis" })
    assert.same({ content = "olá", metadata = { livro = "Gênesis" } }, doc)
  end)

  it("names the file, line, key and value on validation errors", function()
    local path = plan_file(SOURCE .. [[
return plan { name = "backfill", sources = { verses },
  batch = { size = 0 } }
]])
    local p, err = plan.load(path)
    assert.is_nil(p)
    assert.equal(string.format('plano %s:6: chave "batch.size": valor 0 inválido; esperado um inteiro entre 1 e 2048', path), err)
  end)

  it("points at the line of a bad source", function()
    local path = plan_file([[
local a = 1
local bad = source "verse" { sql = "select 1", key = "id-x", document = function() end }
return plan { name = "x", sources = { bad } }
]])
    local _, err = plan.load(path)
    assert.equal(string.format('plano %s:2: fonte "verse": chave "key": valor "id-x" inválido; '
      .. 'esperado um nome de coluna simples (letras, dígitos e _, sem começar por dígito)', path), err)
  end)

  it("refuses os.execute with a pt-BR error naming file and line", function()
    local path = plan_file(SOURCE .. [[
os.execute("touch /tmp/ragops_sandbox_escape")
return plan { name = "x", sources = { verses } }
]])
    local p, err = plan.load(path)
    assert.is_nil(p)
    assert.equal(string.format("plano %s:6: os.execute não é permitido em planos "
      .. "(ambiente restrito: só os.time, os.date e os.clock)", path), err)
  end)

  it("refuses io.open, require, load, debug and rawset", function()
    for _, call in ipairs({ 'io.open("/etc/passwd")', 'require("os")', 'load("return 1")',
                             'debug.getinfo(1)', 'rawset(_G, "x", 1)', 'dofile("/etc/passwd")',
                             'setmetatable({}, {})', 'collectgarbage()' }) do
      local path = plan_file("local x = 1\n" .. call .. "\nreturn nil\n")
      local p, err = plan.load(path)
      assert.is_nil(p)
      local name = call:match("^(%w+)")
      assert.equal(string.format('plano %s:2: "%s" não é permitido em planos (ambiente restrito, sem acesso '
        .. 'a arquivos, processos ou carregamento de código)', path, name), err)
    end
  end)

  it("keeps safe functions available", function()
    local path = plan_file(SOURCE .. [[
assert(type(os.time()) == "number" and os.date("%Y", 0) and math.floor(1.5) == 1)
assert(string.format("%d", 3) == "3" and table.concat({ "a", "b" }) == "ab" and select("#", 1, 2) == 2)
assert(pcall(error, "x") == false and tostring(1) == "1" and string.dump == nil)
return plan { name = "x", sources = { verses } }
]])
    local p, err = plan.load(path)
    assert.is_nil(err)
    assert.is_true(plan.is_plan(p))
  end)

  it("rejects an undefined global with its name", function()
    local path = plan_file("local x = 1\nreturn plan { name = nmae }\n")
    local _, err = plan.load(path)
    assert.equal(string.format('plano %s:2: variável global "nmae" não definida no plano', path), err)
  end)

  it("refuses bytecode", function()
    local fn = loadstring(SOURCE .. 'return plan { name = "x", sources = { verses } }')
    local path = plan_file(string.dump(fn))
    local p, err = plan.load(path)
    assert.is_nil(p)
    assert.matches("^plano " .. path:gsub("%p", "%%%0") .. ": ", err)
    assert.matches("bytecode%) recusado", err)
  end)

  it("reports syntax errors with file and line", function()
    local path = plan_file("local x = 1\nlocal y = = 2\n")
    local _, err = plan.load(path)
    assert.matches("^plano " .. path:gsub("%p", "%%%0") .. ":2: ", err)
  end)

  it("requires the chunk to return a plan", function()
    local path = plan_file(SOURCE .. "return { name = 'x' }\n")
    local _, err = plan.load(path)
    assert.matches("deve terminar com return plan { ... }", err, 1, true)
    local _, missing = plan.load("/nonexistent/ragops_plan.lua")
    assert.matches("^plano /nonexistent/ragops_plan.lua: não foi possível abrir o arquivo", missing)
  end)

  it("does not let a plan mutate the caller's params", function()
    local params = { a = "1" }
    local path = plan_file(SOURCE .. 'params.a = "2"\nreturn plan { name = "x", sources = { verses } }\n')
    assert.truthy(plan.load(path, params))
    assert.equal("1", params.a)
  end)
end)
