-- scale_out_worker_spec.lua: issue 25 (scale-out, finished) on pure
-- functions: the worker label of a scale-out process (--worker,
-- RAGOPS_WORKER, the host name; bounded: it is a metric label), the short
-- form of a plan fingerprint, and the workers part of `ragops status`.

require "tests.lua.c_stubs"
local status = require "ragops.report.status"
local store_runs = require "ragops.store.runs"
local workunits = require "ragops.run.workunits"

local function env(values)
  return function(name) return values[name] end
end

describe("rótulo worker de um processo do scale-out", function()
  it("--worker vale sobre RAGOPS_WORKER, que vale sobre o nome do host", function()
    local label = workunits.worker_label({ ["scale-out"] = true, worker = "w-1" }, env { RAGOPS_WORKER = "x" }, "h:1")
    assert.are.equal("w-1", label)
    label = workunits.worker_label({ ["scale-out"] = true }, env { RAGOPS_WORKER = "fila_b.2" }, "h:1")
    assert.are.equal("fila_b.2", label)
    label = workunits.worker_label({ ["scale-out"] = true }, env {}, "maquina-3:4242")
    assert.are.equal("maquina-3", label)
  end)

  it("o padrão é o nome curto do host, sem o pid, limpo e cortado em 32 caracteres", function()
    assert.are.equal("ip-10-0-0-7", workunits.worker_label({}, env {}, "ip-10-0-0-7.ec2.internal:99"))
    local cleaned = workunits.worker_label({}, env {}, "host com espaço:1")
    assert.matches("^host%-com%-espa[%w_.%-]*o$", cleaned)
    assert.matches("^[%w_.%-]+$", cleaned)
    local long = workunits.worker_label({}, env {}, string.rep("a", 80) .. ":7")
    assert.are.equal(workunits.WORKER_MAX, #long)
    assert.are.equal("desconhecido", workunits.worker_label({}, env { RAGOPS_WORKER = "" }, ":7"))
  end)

  it("um nome dado pelo operador fora do formato é recusado, dizendo de onde veio", function()
    for _, bad in ipairs({ string.rep("w", 33), "com espaço", "ação", "a/b", "x{y}" }) do
      local label, err = workunits.worker_label({ ["scale-out"] = true, worker = bad }, env {}, "h:1")
      assert.is_nil(label, bad)
      assert.matches("%-%-worker espera um nome de 1 a 32 caracteres", err)
      label, err = workunits.worker_label({ ["scale-out"] = true }, env { RAGOPS_WORKER = bad }, "h:1")
      assert.is_nil(label, bad)
      assert.matches("^RAGOPS_WORKER espera", err)
    end
    local label, err = workunits.worker_label({ ["scale-out"] = true, worker = "" }, env {}, "h:1")
    assert.is_nil(label)
    assert.matches("não pode ser vazio", err)
  end)

  it("--worker sem --scale-out (ou --join) é recusado", function()
    local label, err = workunits.worker_label({ worker = "w1" }, env {}, "h:1")
    assert.is_nil(label)
    assert.matches("só vale com %-%-scale%-out ou %-%-join", err)
    -- RAGOPS_WORKER num ambiente de todos os comandos não atrapalha uma execução comum
    assert.are.equal("w1", workunits.worker_label({}, env { RAGOPS_WORKER = "w1" }, "h:1"))
  end)
end)

describe("impressão digital do plano para pessoas", function()
  it("a forma curta são os 12 primeiros dígitos; sem impressão, 'desconhecida'", function()
    assert.are.equal("0123456789ab", store_runs.short_fingerprint("0123456789abcdef0123456789abcdef"))
    assert.are.equal("desconhecida", store_runs.short_fingerprint(nil))
  end)
end)

describe("ragops status: os workers de uma execução --scale-out em andamento", function()
  local function base(extra)
    local st = { runs = {}, coverage = {}, open_failures = {}, indexes = {}, sync_queue = {}, storage = "real[]" }
    for k, v in pairs(extra or {}) do st[k] = v end
    return st
  end

  it("mostra por worker as unidades concluídas, as em andamento e o último sinal", function()
    local text = status.format(base { workers = {
      { run_id = 7, worker = "w1", units_done = 3, in_progress = "verse #4", heartbeat_age_s = 5 },
      { run_id = 7, worker = "w2", units_done = 0, in_progress = "", heartbeat_age_s = 75 },
    } })
    assert.matches("Processos do %-%-scale%-out em andamento %(por worker%):", text)
    assert.matches("execução #7, worker w1: 3 unidade%(s%) concluída%(s%); em andamento: verse #4; último sinal há 5 s", text)
    assert.matches("worker w2: 0 unidade%(s%) concluída%(s%); em andamento: nenhuma; último sinal há 1 min 15 s", text)
  end)

  it("sem execução --scale-out em andamento (ou sem a parte workers) não há a seção", function()
    assert.is_nil(status.format(base()):find("scale%-out"))
    assert.is_nil(status.format(base { workers = {} }):find("scale%-out"))
  end)

  it("uma execução em andamento mostra a impressão digital do plano", function()
    local text = status.format(base { runs = { { id = 3, plan = "p", params = "{}", status = "running", alive = true,
      owner = nil, heartbeat_age_s = 1, duration_s = 2, processed = 0, embedded = 0, failed = 0,
      plan_fingerprint = "abcdef012345" } } })
    assert.matches("impressão digital do plano: abcdef012345", text)
  end)
end)
