-- locate_spec.lua: which plan a command runs (ragops.plan.locate, issue 22) and
-- the tuning one plan gets per operation (ragops.plan.params.operation_overrides).
require "tests.lua.c_stubs"
local locate = require "ragops.plan.locate"
local params_mod = require "ragops.plan.params"

local function lister(map)
  return function(dir)
    if not map[dir] then return nil, "No such file or directory" end
    return map[dir]
  end
end

local function cfg(plans) return { plans = plans or {} } end

describe("ragops.plan.locate", function()
  local dirs = lister({ ["/app/planos"] = { "artigos.lua", "comum.lua", "LEIAME.md", ".oculto.lua" },
                        ["/app/um"] = { "artigos.lua", "notas.txt" } })

  it("--plan FILE (com / ou .lua) é usado como está", function()
    assert.are.same({ path = "x/y.lua", how = "flag" }, locate.resolve("x/y.lua", cfg(), dirs))
    assert.are.same({ path = "meu.lua", how = "flag" }, locate.resolve("meu.lua", cfg(), dirs))
  end)

  it("--plan NOME é NOME.lua da pasta de planos", function()
    local found = assert(locate.resolve("artigos", cfg({ dir = "/app/planos" }), dirs))
    assert.are.same({ "/app/planos/artigos.lua", "flag" }, { found.path, found.how })
  end)

  it("NOME que não existe: erro listando os planos encontrados", function()
    local found, err = locate.resolve("livros", cfg({ dir = "/app/planos" }), dirs)
    assert.is_nil(found)
    assert.matches('plano "livros" não encontrado na pasta de planos /app/planos', err, 1, true)
    assert.matches("planos encontrados: artigos, comum", err, 1, true)
  end)

  it("sem --plan: plans.default; senão o único plano da pasta", function()
    local found = assert(locate.resolve(nil, cfg({ dir = "/app/planos", default = "comum" }), dirs))
    assert.are.same({ "/app/planos/comum.lua", "default" }, { found.path, found.how })
    found = assert(locate.resolve(nil, cfg({ dir = "/app/um" }), dirs))
    assert.are.same({ "/app/um/artigos.lua", "only" }, { found.path, found.how })
  end)

  it("sem --plan, sem plans.default e mais de um plano: erro que lista e pede --plan", function()
    local found, err = locate.resolve(nil, cfg({ dir = "/app/planos" }), dirs)
    assert.is_nil(found)
    assert.matches("mais de um (artigos, comum)", err, 1, true)
    assert.matches("--plan NOME", err, 1, true)
  end)

  it("pasta ilegível: erro que nomeia a pasta e plans.dir", function()
    local found, err = locate.resolve(nil, cfg({ dir = "/nao/existe" }), dirs)
    assert.is_nil(found)
    assert.matches("a pasta de planos /nao/existe não pôde ser lida", err, 1, true)
  end)

  it("sem pasta configurada, a demo do runtime usa backfill.lua", function()
    local runtime = locate.runtime_dir()
    local found = assert(locate.resolve(nil, cfg(),
      lister({ [runtime] = { "backfill.lua", "reindex.lua", "sync.lua" } })))
    assert.are.same({ runtime .. "/backfill.lua", "demo" }, { found.path, found.how })
    local none, err = locate.resolve(nil, cfg({ dir = "/d" }), lister({ ["/d"] = { "backfill.lua", "x.lua" } }))
    assert.is_nil(none, "numa pasta do operador, backfill.lua não é escolhido sozinho")
    assert.matches("mais de um", err, 1, true)
  end)
end)

describe("ragops.plan.params.operation_overrides", function()
  local p = { batch = { size = 64, in_flight = 4 }, retry = { attempts = 5 }, alerts = { failure_rate = { above = 0.05 } } }

  it("failures_retry sem operations: lotes de até 16, 2 em paralelo, alerta que só avisa", function()
    local o = params_mod.operation_overrides(p, "failures_retry")
    assert.are.same({ size = 16, in_flight = 2 }, o.batch)
    assert.are.equal("warn", o.alerts.failure_rate.action)
    assert.are.same({}, params_mod.operation_overrides(p, "backfill"))
  end)

  it("operations do plano valem sobre o padrão, chave a chave", function()
    local q = { batch = p.batch, operations = { failures_retry = { batch = { size = 3 } }, sync = { retry = { attempts = 9 } } },
                retry = { attempts = 5, base_ms = 10 } }
    assert.are.same({ size = 3, in_flight = 2 }, params_mod.operation_overrides(q, "failures_retry").batch)
    assert.are.same({ retry = { attempts = 9, base_ms = 10 } }, params_mod.operation_overrides(q, "sync"))
  end)
end)

describe("plan { operations = ... }", function()
  local plan = require "ragops.plan"
  local function with_operations(operations)
    return pcall(plan.new, { name = "p", operations = operations,
      sources = { plan.source("verse")({ sql = "select id, text from verses", key = "id",
                                         document = function(row) return { content = row.text } end }) } })
  end

  it("confere cada seção na carga e nomeia a operação no erro", function()
    local ok, err = with_operations({ failures_retry = { batch = { size = 0 } } })
    assert.is_false(ok)
    assert.matches('operations.failures_retry: chave "batch.size": valor 0 inválido', tostring(err), 1, true)
    ok, err = with_operations({ retry_failures = {} })
    assert.is_false(ok)
    assert.matches('chave "operations.retry_failures" desconhecida', tostring(err), 1, true)
    assert.is_true((with_operations({ sync = { batch = { size = 8 } } })))
  end)
end)
