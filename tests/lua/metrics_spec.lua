-- metrics_spec.lua: the Prometheus registry (rendering, escaping, histogram
-- buckets, misuse errors) and the atomic textfile write.

local metrics = require "ragops.metrics"

describe("ragops.metrics", function()
  it("renders a small registry exactly, sorted by name and labels", function()
    local m = metrics.new()
    m:gauge("zeta_gauge", "Um medidor."):set(2.5)
    m:counter("alpha_total", "Contagem de coisas.", { result = "ok", entity_type = "verse" }):inc(3)
    m:counter("alpha_total", nil, { entity_type = "book", result = "failed" }):inc()
    m:counter("alpha_total", nil, { entity_type = "book", result = "failed" }):inc(2)
    m:counter("mid_total", "Sem rótulos."):inc(0)
    assert.are.equal(table.concat({
      "# HELP alpha_total Contagem de coisas.",
      "# TYPE alpha_total counter",
      'alpha_total{entity_type="book",result="failed"} 3',
      'alpha_total{entity_type="verse",result="ok"} 3',
      "# HELP mid_total Sem rótulos.",
      "# TYPE mid_total counter",
      "mid_total 0",
      "# HELP zeta_gauge Um medidor.",
      "# TYPE zeta_gauge gauge",
      "zeta_gauge 2.5",
      "",
    }, "\n"), m:render())
  end)

  it("renders an empty registry as an empty string", function()
    assert.are.equal("", metrics.new():render())
  end)

  it("is stable: the same registry renders the same text twice", function()
    local m = metrics.new()
    for i = 1, 20 do m:counter("x_total", "x", { k = "v" .. i }):inc(i) end
    assert.are.equal(m:render(), m:render())
    local text = m:render()
    assert.truthy(text:find('x_total{k="v1"} 1\nx_total{k="v10"} 10\n', 1, true))
  end)

  it("escapes label values and help text", function()
    local m = metrics.new()
    m:counter("esc_total", "linha 1\nbarra \\ fim", { path = 'C:\\dir "x"\nfim' }):inc()
    assert.are.equal(table.concat({
      "# HELP esc_total linha 1\\nbarra \\\\ fim",
      "# TYPE esc_total counter",
      'esc_total{path="C:\\\\dir \\"x\\"\\nfim"} 1',
      "",
    }, "\n"), m:render())
  end)

  it("renders numeric and boolean label values", function()
    local m = metrics.new()
    m:counter("req_total", "r", { status = 429 }):inc()
    m:counter("req_total", "r", { status = 200, ok = true }):inc(5)
    local text = m:render()
    assert.truthy(text:find('req_total{status="429"} 1\n', 1, true))
    assert.truthy(text:find('req_total{ok="true",status="200"} 5\n', 1, true))
  end)

  it("renders histogram buckets cumulatively with _sum and _count", function()
    local m = metrics.new()
    local h = m:histogram("lat_seconds", "Latência.", { 0.1, 0.5, 1 })
    for _, v in ipairs({ 0.05, 0.1, 0.3, 0.7, 3 }) do h:observe(v) end
    assert.are.equal(table.concat({
      "# HELP lat_seconds Latência.",
      "# TYPE lat_seconds histogram",
      'lat_seconds_bucket{le="0.1"} 2',
      'lat_seconds_bucket{le="0.5"} 3',
      'lat_seconds_bucket{le="1"} 4',
      'lat_seconds_bucket{le="+Inf"} 5',
      "lat_seconds_sum 4.15",
      "lat_seconds_count 5",
      "",
    }, "\n"), m:render())
  end)

  it("puts le after the other labels of a labelled histogram", function()
    local m = metrics.new()
    m:histogram("h_seconds", "h", { 1 }, { status = "200" }):observe(0.5)
    m:histogram("h_seconds", nil, nil, { status = "500" }):observe(2)
    assert.are.equal(table.concat({
      "# HELP h_seconds h",
      "# TYPE h_seconds histogram",
      'h_seconds_bucket{status="200",le="1"} 1',
      'h_seconds_bucket{status="200",le="+Inf"} 1',
      'h_seconds_sum{status="200"} 0.5',
      'h_seconds_count{status="200"} 1',
      'h_seconds_bucket{status="500",le="1"} 0',
      'h_seconds_bucket{status="500",le="+Inf"} 1',
      'h_seconds_sum{status="500"} 2',
      'h_seconds_count{status="500"} 1',
      "",
    }, "\n"), m:render())
  end)

  it("uses default buckets and the engine's pt-BR help for known names", function()
    local m = metrics.new()
    m:histogram("ragops_embed_latency_seconds"):observe(0.2)
    m:counter("ragops_alerts_total", nil, { alert = "failure_rate", action = "abort" }):inc()
    local text = m:render()
    assert.truthy(text:find("# HELP ragops_alerts_total Alertas disparados, por alerta e ação.\n", 1, true))
    assert.truthy(text:find('ragops_alerts_total{action="abort",alert="failure_rate"} 1\n', 1, true))
    assert.truthy(text:find('ragops_embed_latency_seconds_bucket{le="0.25"} 1\n', 1, true))
    assert.truthy(text:find('ragops_embed_latency_seconds_bucket{le="0.1"} 0\n', 1, true))
    assert.truthy(text:find('ragops_embed_latency_seconds_bucket{le="60"} 1\n', 1, true))
  end)

  it("gauges set, inc and dec", function()
    local m = metrics.new()
    local g = m:gauge("ragops_run_in_progress")
    g:set(1); g:inc(2); g:dec()
    assert.are.equal(2, g:get())
    m:gauge("ragops_last_run_timestamp_seconds"):set(1700000000)
    assert.truthy(m:render():find("ragops_last_run_timestamp_seconds 1700000000\n", 1, true))
  end)

  it("formats values: integers, fractions that round-trip, infinities", function()
    assert.are.equal("3", metrics.format_value(3))
    assert.are.equal("0.1", metrics.format_value(0.1))
    assert.are.equal("+Inf", metrics.format_value(math.huge))
    assert.are.equal("-Inf", metrics.format_value(-math.huge))
    assert.are.equal("NaN", metrics.format_value(0 / 0))
    assert.are.equal(1 / 3, tonumber(metrics.format_value(1 / 3)))
  end)

  it("raises on misuse", function()
    local m = metrics.new()
    assert.has_error(function() m:counter("1bad", "x") end)
    assert.has_error(function() m:counter("ok_total", "x", { ["bad-label"] = "v" }) end)
    assert.has_error(function() m:counter("ok_total", "x", { __reserved = "v" }) end)
    assert.has_error(function() m:counter("ok_total", "x"):inc(-1) end)
    assert.has_error(function() m:counter("ok_total", "x"):inc("2") end)
    m:counter("dup_total", "x")
    assert.has_error(function() m:gauge("dup_total", "x") end)
    assert.has_error(function() m:counter("ragops_run_in_progress") end)
    assert.has_error(function() m:histogram("h", "x", { 1, 1 }) end)
    assert.has_error(function() m:histogram("h2", "x", { 1 }, { le = "2" }) end)
  end)

  describe("write_file", function()
    local dir
    before_each(function()
      dir = os.tmpname()
      os.remove(dir)
      assert(os.execute("mkdir -p '" .. dir .. "'"))
    end)
    after_each(function() os.execute("rm -rf '" .. dir .. "'") end)

    local function read(path)
      local h = io.open(path, "rb")
      if not h then return nil end
      local text = h:read("*a")
      h:close()
      return text
    end

    it("writes the rendered text and leaves no temporary file", function()
      local m = metrics.new()
      m:counter("ragops_dead_letters_total"):inc(4)
      local path = dir .. "/ragops.prom"
      assert.is_true(m:write_file(path))
      assert.are.equal(m:render(), read(path))
      assert.is_nil(read(path .. ".tmp"))
      m:counter("ragops_dead_letters_total"):inc()
      assert.is_true(m:write_file(path))
      assert.truthy(read(path):find("ragops_dead_letters_total 5\n", 1, true))
    end)

    it("returns nil and a pt-BR error when the directory does not exist", function()
      local ok, err = metrics.new():write_file(dir .. "/nao/existe.prom")
      assert.is_nil(ok)
      assert.truthy(err:find("não foi possível gravar o arquivo de métricas", 1, true))
    end)
  end)
end)
