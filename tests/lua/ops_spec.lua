-- ops_spec.lua: the operations kit (docs/ops) stays true to what ragops
-- exports: the Grafana dashboard and the Prometheus alert rules only use
-- metrics the engine declares, and the rules pass promtool's own tests.

local cjson = require "cjson"
local metrics = require "ragops.obs.metrics"

local ROOT = os.getenv("RAGOPS_SOURCE_DIR") or "."

local function read(path)
  local f = assert(io.open(ROOT .. "/" .. path, "rb"))
  local text = f:read("*a")
  f:close()
  return text
end

-- Every metric name the engine exports (families, without _bucket/_sum/_count).
local function exported()
  local names = {}
  for name in pairs(metrics.ENGINE) do names[name] = true end
  return names
end

-- Metric names used in a PromQL text.
local function used_metrics(text, into)
  for name in text:gmatch("[%a_:][%w_:]*") do
    if name:match("^ragops_") or name == "inprogress_index_builds" then
      into[(name:gsub("_bucket$", ""):gsub("_sum$", ""):gsub("_count$", ""))] = true
    end
  end
  return into
end

describe("kit de operações (docs/ops)", function()
  it("o painel do Grafana é JSON válido e só usa métricas exportadas", function()
    local dash = cjson.decode(read("docs/ops/grafana-ragops.json"))
    local used, known = {}, exported()
    for _, panel in ipairs(dash.panels) do
      for _, target in ipairs(panel.targets) do used_metrics(target.expr, used) end
    end
    assert.is_true(next(used) ~= nil)
    for name in pairs(used) do assert.is_true(known[name] == true, "métrica desconhecida no painel: " .. name) end
  end)

  it("as regras de alerta só usam métricas exportadas", function()
    local known = exported()
    for name in pairs(used_metrics(read("docs/ops/prometheus-alertas.yml"), {})) do
      assert.is_true(known[name] == true, "métrica desconhecida nas regras: " .. name)
    end
  end)

  it("promtool check rules e promtool test rules passam", function()
    local has = os.execute("command -v promtool >/dev/null 2>&1")
    if has ~= 0 and has ~= true then pending("promtool não instalado (pacote prometheus)") return end
    local dir = ROOT .. "/docs/ops"
    local ok = os.execute(("cd %q && promtool check rules prometheus-alertas.yml >/dev/null && "
      .. "promtool test rules prometheus-alertas.test.yml >/dev/null"):format(dir))
    assert.is_true(ok == 0 or ok == true, "promtool recusou as regras (rode-o em docs/ops para ver)")
  end)
end)

describe("docs/alertas-e-metricas.md", function()
  it("lista cada métrica exportada, e só elas", function()
    local doc = read("docs/alertas-e-metricas.md")
    local listed = {}
    for name in doc:gmatch("\n| `([%w_]+)` | ") do listed[name] = true end
    local known = exported()
    for name in pairs(known) do assert.is_true(listed[name] == true, "métrica sem documentação: " .. name) end
    for name in pairs(listed) do
      if name:match("^ragops_") or name == "inprogress_index_builds" then
        assert.is_true(known[name] == true, "métrica documentada que não existe: " .. name)
      end
    end
  end)
end)
