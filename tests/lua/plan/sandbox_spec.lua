-- sandbox_spec.lua: ragops.plan.sandbox under plain LuaJIT: text-only loading,
-- the restricted environment, time and memory budgets of sandbox.call
-- (classes, pt-BR messages with file:line, no traceback), and document()
-- budgets through ragops.testing (dead letters, then the abort).

local sandbox = require "ragops.plan.sandbox"
local testing = require "ragops.testing"

local function write_file(text)
  local path = os.tmpname() .. "_sandbox.lua"
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  return path
end

-- Compiles `text` as file `path` in a plan environment.
local function compiled(text, path)
  local fn = assert(sandbox.compile(text, path or "/tmp/hostil.lua", sandbox.environment("plano")))
  return fn
end

local SMALL = { what = "plano", ms = 50, bytes = 4 * 1048576, breaches = 0,
                keys = { time = "sandbox.hook_ms", memory = "sandbox.hook_memory_mb" } }

local function small_budget()
  local out = {}
  for k, v in pairs(SMALL) do out[k] = v end
  return out
end

describe("sandbox.compile", function()
  it("recusa bytecode (saída de string.dump)", function()
    local fn, err = sandbox.compile(string.dump(function() return 1 end), "/tmp/x.lua", {})
    assert.is_nil(fn)
    assert.matches("bytecode%) recusado", err)
  end)

  it("recusa lixo binário com bytes nulos", function()
    local fn, err = sandbox.compile("\1\0\255\254garbage", "/tmp/x.lua", {})
    assert.is_nil(fn)
    assert.matches("arquivo binário recusado", err)
  end)

  it("desliga o JIT das funções do arquivo: um laço infinito é interrompido", function()
    local fn = compiled("local function spin() local i = 0 while true do i = i + 1 end end\nspin()\n")
    local ok, err, class = sandbox.call(small_budget(), fn)
    assert.is_false(ok)
    assert.are.equal("time", class)
    assert.are.equal("plano /tmp/hostil.lua:1: excedeu o tempo limite de 50 ms (sandbox.hook_ms)", err)
  end)
end)

describe("sandbox.call", function()
  it("devolve true e os resultados da função", function()
    local results = { sandbox.call(small_budget(), function(a, b) return a + b, "x" end, 2, 3) }
    assert.are.same({ true, 5, "x" }, results)
  end)

  it("erro comum: classe error, arquivo:linha, texto em pt-BR, sem traceback", function()
    local fn = compiled("local row = nil\nreturn row.text\n")
    local ok, err, class = sandbox.call(small_budget(), fn)
    assert.is_false(ok)
    assert.are.equal("error", class)
    assert.are.equal("plano /tmp/hostil.lua:2: tentativa de indexar a variável local 'row' (valor nil)", err)
    assert.is_nil(err:find("traceback", 1, true))
  end)

  it("erro sem posição (error(x, 0) ou tabela) ganha o arquivo da função", function()
    local ok, err = sandbox.call(small_budget(), compiled("error('sem posição', 0)"))
    assert.is_false(ok)
    assert.are.equal("plano /tmp/hostil.lua:1: sem posição", err)
    ok, err = sandbox.call(small_budget(), compiled("error({})"))
    assert.is_false(ok)
    assert.are.equal("plano /tmp/hostil.lua: erro sem mensagem de texto (valor do tipo table)", err)
  end)

  it("tabela que cresce sem fim: classe memory", function()
    local fn = compiled("local t = {}\nfor i = 1, 1e9 do t[i] = { i } end\n")
    local budget = small_budget()
    local ok, err, class = sandbox.call(budget, fn)
    assert.is_false(ok)
    assert.are.equal("memory", class)
    assert.matches("^plano /tmp/hostil.lua:2: excedeu o limite de memória de 4 MiB %(sandbox.hook_memory_mb%)$", err)
    assert.are.equal(1, budget.breaches)
  end)

  it("string.rep enorme é recusado antes de alocar", function()
    local ok, err, class = sandbox.call(small_budget(), compiled("local s = string.rep('x', 2^30)\nreturn s"))
    assert.is_false(ok)
    assert.are.equal("memory", class)
    assert.matches("^plano /tmp/hostil.lua:1: excedeu o limite de memória", err)
  end)

  it("pcall do plano não segura o estouro de orçamento", function()
    local fn = compiled("while true do pcall(function() while true do end end) end")
    local ok, _, class = sandbox.call(small_budget(), fn)
    assert.is_false(ok)
    assert.are.equal("time", class)
  end)

  it("restaura o gancho anterior e não deixa orçamento ativo", function()
    local function previous() end
    debug.sethook(previous, "", 1000000)
    sandbox.call(small_budget(), compiled("while true do end"))
    local hook, mask, count = debug.gethook()
    debug.sethook()
    assert.are.equal(previous, hook)
    assert.are.equal("", mask)
    assert.are.equal(1000000, count)
    -- No budget left active: a large string.rep outside a call works.
    assert.are.equal(2 ^ 23, #sandbox.environment("plano").string.rep("x", 2 ^ 23))
  end)

  it("chamada aninhada (import) roda sob o orçamento de fora", function()
    local outer = small_budget()
    local ok, inner_ok, err, class = sandbox.call(outer, function()
      return sandbox.call(small_budget(), compiled("error('interno')"))
    end)
    assert.is_true(ok)
    assert.is_false(inner_ok)
    assert.are.equal("plano /tmp/hostil.lua:1: interno", err)
    assert.are.equal("error", class)
  end)
end)

describe("sandbox.environment", function()
  for _, name in ipairs({ "io", "require", "load", "loadstring", "dofile", "loadfile", "debug", "getfenv",
                          "setfenv", "package", "jit", "ffi", "coroutine", "collectgarbage",
                          "setmetatable", "getmetatable", "newproxy", "module" }) do
    it("recusa " .. name .. " com mensagem em pt-BR", function()
      local ok, err = sandbox.call(small_budget(), compiled("return " .. name))
      assert.is_false(ok)
      assert.are.equal(('plano /tmp/hostil.lua:1: "%s" não é permitido em planos (ambiente restrito, '
        .. 'sem acesso a arquivos, processos ou carregamento de código)'):format(name), err)
    end)
  end

  it("recusa os.execute e string.dump", function()
    local ok, err = sandbox.call(small_budget(), compiled("return os.execute('true')"))
    assert.is_false(ok)
    assert.matches("os.execute não é permitido em planos", err)
    local env = sandbox.environment("plano")
    assert.is_nil(rawget(env.string, "dump"))
  end)

  it("cada arquivo ganha tabelas próprias (string, table, math)", function()
    local a, b = sandbox.environment("plano"), sandbox.environment("configuração")
    assert.are_not.equal(a.string, b.string)
    assert.are_not.equal(a.string, string)
    a.table.insert = nil
    assert.is_function(table.insert)
  end)
end)

describe("sandbox.read_file", function()
  it("arquivo inexistente: mensagem em pt-BR com o original entre parênteses", function()
    local text, err = sandbox.read_file("/nao/existe.lua", "plano")
    assert.is_nil(text)
    assert.are.equal("plano /nao/existe.lua: não foi possível abrir o arquivo: arquivo ou pasta não encontrado "
      .. "(No such file or directory)", err)
  end)

  it("pasta no lugar do arquivo", function()
    local text, err = sandbox.read_file("/tmp", "configuração")
    assert.is_nil(text)
    assert.matches("^configuração /tmp: não foi possível ler o arquivo: é uma pasta", err)
  end)
end)

describe("limites de document() numa execução", function()
  after_each(function() sandbox.configure(nil) end)

  local function plan_file(body)
    return write_file([[
local itens = source "item" {
  sql = "select * from items", key = "id",
  document = function(row)
]] .. body .. [[

    return { content = row.text }
  end,
}
return plan { name = "hostil", sources = { itens }, batch = { size = 1, in_flight = 1 } }
]])
  end

  local function rows(n)
    local out = {}
    for i = 1, n do out[i] = { id = i, text = "texto " .. i } end
    return out
  end

  it("laço infinito em document(): falhas de classe time e, na max_breaches-ésima, aborta com 2", function()
    sandbox.configure { hook_ms = 20, max_breaches = 3 }
    local path = plan_file("    while true do end")
    local r = testing.run(path, { sources = { item = rows(10) } })
    os.remove(path)
    assert.are.equal(2, r.stats.aborted.code)
    assert.matches("sandbox.max_breaches = 3", r.stats.aborted.reason)
    -- Units of one row: the first two commit their dead letter, the third
    -- reaches the limit and aborts before writing (a re-run resumes there).
    assert.are.equal(2, #r.store.failures)
    for _, failure in ipairs(r.store.failures) do
      assert.are.equal("time", failure.error_class)
      assert.are.equal("document() falhou: plano " .. path .. ":4: excedeu o tempo limite de 20 ms (sandbox.hook_ms)",
        failure.message)
    end
    assert.are.equal(0, #r:documents("item"))
  end)

  it("erro comum em document(): classe transform, sem traceback e sem abortar", function()
    sandbox.configure { max_breaches = 1 }
    local path = plan_file("    if row.id == 2 then local x = nil; return x.y end")
    local r = testing.run(path, { sources = { item = rows(3) } })
    os.remove(path)
    assert.is_nil(r.stats.aborted)
    assert.are.equal(1, #r.store.failures)
    local failure = r.store.failures[1]
    assert.are.equal("transform", failure.error_class)
    assert.are.equal("document() falhou: plano " .. path
      .. ":4: tentativa de indexar a variável local 'x' (valor nil)", failure.message)
    assert.are.equal(2, #r:documents("item"))
  end)
end)

describe("chave sandbox da configuração", function()
  local config = require "ragops.plan.config"
  local function no_env() return nil end
  after_each(function() sandbox.configure(nil) end)

  it("aplica os limites ao sandbox e recusa valores e chaves inválidos", function()
    local path = write_file("return { sandbox = { hook_ms = 25, max_breaches = 2 } }")
    assert(config.load(path, no_env))
    local limits = sandbox.limits()
    assert.are.equal(25, limits.hook_ms)
    assert.are.equal(2, limits.max_breaches)
    assert.are.equal(sandbox.DEFAULTS.load_ms, limits.load_ms)
    local bad = write_file("return { sandbox = { hook_ms = 0 } }")
    local cfg, err = config.load(bad, no_env)
    assert.is_nil(cfg)
    assert.matches('chave "sandbox.hook_ms": valor 0 inválido; esperado um inteiro entre 1 e 60000', err, 1, true)
    local unknown = write_file("return { sandbox = { hook_seconds = 1 } }")
    cfg, err = config.load(unknown, no_env)
    assert.is_nil(cfg)
    assert.matches('chave "sandbox.hook_seconds" desconhecida', err, 1, true)
  end)
end)
