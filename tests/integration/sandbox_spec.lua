-- sandbox_spec.lua: the bounds around plan code that end a run or the
-- process, through the real binary: the watchdog (a document() stuck in a
-- C pattern function ends the process with code 2 and a pt-BR message),
-- the second SIGINT/SIGTERM while the loop is stuck, the heap cap of the
-- whole run (sandbox.memory_mb: memory kept between document() calls, a
-- text allocated at load returned for every row), the defaults plan's
-- run() of `index create` under the load budget, and a plan whose
-- document() changes the plan it returned (the engine runs a copy).
local H = require "tests.integration.helper"

local HOSTILE = "tests/hostile"
local LIMITS = HOSTILE .. "/small_limits.lua"

local function count(url, sql) return H.scalar(url, sql) end

local function assert_ptbr_without_traceback(text)
  for _, english in ipairs({ "not enough memory", "stack traceback", "attempt to", "Segmentation" }) do
    assert.is_nil(text:find(english, 1, true), text)
  end
  assert.is_nil(text:find("[C]:", 1, true), text)
end

-- Waits until file holds text (the run reached that point); false after ~60 s.
local function wait_for_text(path, text)
  for _ = 1, 1200 do
    if H.read_all(path):find(text, 1, true) then return true end
    H.sleep(0.05)
  end
  return false
end

describe("limites do sandbox que encerram a execução", function()
  local url
  setup(function() url = H.migrated_db("ragops_sandbox", 5, 0) end)
  before_each(function()
    H.psql(url, "truncate rag_documents; delete from ragops_failures")
  end)
  after_each(H.cleanup)

  it("document() preso num padrão: o vigia encerra com código 2, mensagem em pt-BR, nada gravado", function()
    local path = HOSTILE .. "/plans/doc_pattern_backtracking.lua"
    local code, _, err = H.ragops(url, ("run %s --config %s"):format(path, LIMITS))
    assert.are.equal(2, code, err)
    assert.truthy(err:find("ragops: plano " .. path .. ": o código ficou 1100 ms de CPU sem voltar de uma função C",
      1, true), err)
    assert.truthy(err:find("o vigia do sandbox encerrou o processo com código 2 (limite: 2 x sandbox.hook_ms + 1000 ms)",
      1, true), err)
    assert_ptbr_without_traceback(err)
    assert.are.equal(0, count(url, "select count(*) from rag_documents"))
  end)

  for _, signals in ipairs({ { "TERM", "INT", 130 }, { "INT", "TERM", 143 } }) do
    it(("SIG%s e depois SIG%s com o laço parado num padrão: o segundo encerra na hora (%d)")
        :format(signals[1], signals[2], signals[3]), function()
      local cfg = H.config_file("sandbox = { hook_ms = 60000 }")
      local job = H.ragops_background(url, ("run %s/plans/doc_pattern_backtracking.lua --config %s")
        :format(HOSTILE, H.q(cfg)))
      assert.is_true(wait_for_text(job.err, 'indexando "verse"'), H.read_all(job.err))
      H.sleep(0.3) -- inside string.find
      H.sh("kill -" .. signals[1] .. " " .. job.pid)
      H.sleep(0.3)
      assert.is_true(H.alive(job.pid), "o primeiro sinal não deve encerrar o processo parado")
      H.sh("kill -" .. signals[2] .. " " .. job.pid)
      local code = H.exit_code(job, 30)
      os.remove(cfg)
      assert.are.equal(signals[3], code)
      assert.truthy(H.read_all(job.err):find("segundo sinal recebido; saindo imediatamente", 1, true))
    end)
  end

  it("memória guardada entre chamadas de document(): para no teto do processo (sandbox.memory_mb)", function()
    local path = HOSTILE .. "/plans/doc_keeps_memory.lua"
    local code, _, err = H.ragops(url, ("run %s --config %s"):format(path, LIMITS))
    assert.are.equal(2, code, err)
    assert.truthy(err:find("a memória do Lua do processo chegou ao limite de 64 MiB (sandbox.memory_mb)", 1, true), err)
    assert.truthy(err:find("excedeu o limite de memória do processo inteiro, 64 MiB (sandbox.memory_mb)", 1, true), err)
    assert_ptbr_without_traceback(err)
    -- Stopped after a few calls: 2 MiB each, 64 MiB in all.
    assert.is_true(count(url, "select count(*) from rag_documents") < 32)
  end)

  it("texto alocado ao carregar devolvido como conteúdo de toda linha: para no teto do processo", function()
    local path = HOSTILE .. "/plans/doc_returns_load_string.lua"
    local code, _, err = H.ragops(url, ("run %s --config %s"):format(path, LIMITS))
    assert.are.equal(2, code, err)
    assert.truthy(err:find("a memória do Lua do processo chegou ao limite de 64 MiB (sandbox.memory_mb)", 1, true), err)
    assert_ptbr_without_traceback(err)
  end)

  it("document() que muda o plano devolvido não muda a execução (o motor roda uma cópia)", function()
    local path = H.plan_file([[
local p, v
v = source "verse" {
  sql = "select id, text from verses", key = "id",
  document = function(row)
    v.key, p.mode = "text", "apagar_tudo"
    p.sources[1].sql = "select 1 as id; drop table verses"
    p.batch.in_flight = 500
    return { content = row.text }
  end,
}
p = plan { name = "muda_durante", sources = { v }, batch = { size = 1, in_flight = 1 } }
return p
]])
    local code, _, err = H.ragops(url, "run " .. H.q(path))
    os.remove(path)
    assert.are.equal(0, code, err)
    assert.are.same({ { "1" }, { "2" }, { "3" }, { "4" }, { "5" } },
      H.psql(url, "select entity_id from rag_documents order by entity_id"))
    assert.are.equal(5, count(url, "select count(*) from verses"))
  end)
end)

describe("index create: run() do plano de padrões sob o orçamento de carga", function()
  local url, home
  setup(function()
    url = H.migrated_db("ragops_sandbox_index", 1, 0)
    home = os.tmpname() .. "_home"
    assert(os.execute(("mkdir -p %s/plans && ln -s %s/lua %s/lua"):format(home, H.q(H.source_dir), home)) == 0)
  end)
  teardown(function() os.execute("rm -rf " .. H.q(home)) end)

  local CASES = {
    { "laço infinito", "while true do end", ":2: excedeu o tempo limite de 2000 ms (sandbox.load_ms)" },
    -- (a refused allocation unwinds without a line: the file is named)
    { "tabela que cresce sem fim", 'local t = {} for i = 1, 1e12 do t[i] = ("x"):rep(2^20) .. i end',
      ": excedeu o limite de memória de 256 MiB (sandbox.load_memory_mb)" },
  }
  for _, case in ipairs(CASES) do
    it(case[1] .. ": código 2 e mensagem em pt-BR que nomeia o arquivo e a linha", function()
      local file = home .. "/plans/create_index.lua"
      local handle = assert(io.open(file, "w"))
      handle:write('return plan { name = "create_index", run = function(ctx)\n  ' .. case[2] .. "\nend }\n")
      handle:close()
      local code, out, err = H.ragops(url, "index create --dim 1536 --lists 10 --dry-run",
        { env = { RAGOPS_HOME = home } })
      assert.are.equal(2, code, err)
      assert.truthy(err:find("plano " .. file .. case[3], 1, true), err)
      assert.truthy(err:find("(em run(), que devolve os parâmetros do índice)", 1, true), err)
      assert_ptbr_without_traceback(err)
      assert.are.equal("", out)
    end)
  end
end)
