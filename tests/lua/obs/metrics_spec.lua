-- metrics_spec.lua: the Prometheus registry (rendering, escaping, histogram
-- buckets, misuse errors), the atomic textfile write, and the transports:
-- the endpoint's routes and listen address (ragops.obs.metrics_endpoint, with a
-- fake httpd) and the Pushgateway push (ragops.obs.pushgateway, with a fake
-- request). The real server and gateway are in
-- tests/integration/metrics_endpoint_spec.lua.

local metrics = require "ragops.obs.metrics"

describe("ragops.obs.metrics", function()
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

describe("ragops.obs.metrics_endpoint", function()
  local endpoint = require "ragops.obs.metrics_endpoint"

  it("parses ADDR:PORT, [IPv6]:PORT and :PORT (loopback)", function()
    assert.are.same({ "127.0.0.1", 9464 }, { endpoint.parse_listen(":9464") })
    assert.are.same({ "127.0.0.1", 80 }, { endpoint.parse_listen("localhost:80") })
    assert.are.same({ "0.0.0.0", 9464 }, { endpoint.parse_listen("0.0.0.0:9464") })
    assert.are.same({ "::1", 9464 }, { endpoint.parse_listen("[::1]:9464") })
    for _, bad in ipairs({ "9464", "127.0.0.1", "127.0.0.1:0", ":70000", "exemplo.com:9464",
                           "::1:9464", "[::1]", "127.0.0.1:abc" }) do
      local host, err = endpoint.parse_listen(bad)
      assert.is_nil(host, bad)
      assert.truthy(err:find("escuta", 1, true), err)
    end
  end)

  it("routes /metrics, /healthz and 404", function()
    local m = metrics.new()
    m:counter("ragops_documents_total", nil, { entity_type = "verse", result = "embedded" }):inc(2)
    local healthy = true
    local handle = endpoint.handler(m, function() return healthy, not healthy and "parado\n" or nil end)
    local status, ctype, body = handle("/metrics")
    assert.are.equal(200, status)
    assert.are.equal("text/plain; version=0.0.4; charset=utf-8", ctype)
    assert.are.equal(m:render(), body)
    assert.are.same({ 200, "text/plain; charset=utf-8", "ok\n" }, { handle("/healthz") })
    healthy = false
    assert.are.same({ 503, "text/plain; charset=utf-8", "parado\n" }, { handle("/healthz") })
    assert.are.equal(404, (handle("/")))
    assert.are.equal(404, (handle("/metrics/")))
  end)

  it("start listens on the parsed address and close closes the server", function()
    local calls = {}
    local fake = { listen = function(host, port, handler)
      calls[#calls + 1] = { host, port, type(handler) }
      return { port = function() return port end, close = function() calls.closed = true end }
    end }
    local ep = assert(endpoint.start { listen = "[::1]:9100", registry = metrics.new(), httpd = fake })
    assert.are.same({ "::1", 9100, "function" }, calls[1])
    assert.are.equal("[::1]:9100", ep.address)
    ep.close()
    assert.is_true(calls.closed)
    local none, err = endpoint.start { listen = "9100", registry = metrics.new(), httpd = fake }
    assert.is_nil(none)
    assert.truthy(err:find("inválido", 1, true))
  end)

  it("settings: flags over config, bad values are usage errors without the URL", function()
    local s = assert(endpoint.settings({ listen = ":1", push_url = "http://a:9091" }, { ["metrics-listen"] = ":2" }))
    assert.are.same({ listen = ":2", push_url = "http://a:9091" }, s)
    assert.are.same({}, assert(endpoint.settings({}, {})))
    local none, err = endpoint.settings({}, { ["metrics-listen"] = "nada" })
    assert.is_nil(none)
    assert.truthy(err:find("--metrics-listen", 1, true))
    none, err = endpoint.settings({}, { ["metrics-push"] = "ftp://user:segredo@h/" })
    assert.is_nil(none)
    assert.is_nil(err:find("segredo", 1, true))
  end)

  it("finish_run closes the endpoint and pushes; a failed push is only a warning", function()
    local warned, closed, sent = {}, false, nil
    local log = { info = function() end, warn = function(fmt, ...) warned[#warned + 1] = fmt:format(...) end }
    local request = function(req) sent = req; return nil, "conexão recusada" end
    endpoint.finish_run({ close = function() closed = true end }, { push_url = "http://pg:9091" },
      metrics.new(), "backfill", log, { request = request })
    assert.is_true(closed)
    assert.are.equal("PUT", sent.method)
    assert.truthy(sent.url:find("^http://pg:9091/metrics/job/ragops/instance"))
    assert.truthy(sent.url:find("/plan/backfill$"))
    assert.truthy(warned[1]:find("conexão recusada", 1, true))
  end)
end)

describe("ragops.obs.pushgateway", function()
  local pushgateway = require "ragops.obs.pushgateway"

  it("encodes label values the Pushgateway way (plain or @base64, URL-safe)", function()
    assert.are.equal("job/ragops", pushgateway.segment("job", "ragops"))
    assert.are.equal("instance/host-1.example", pushgateway.segment("instance", "host-1.example"))
    assert.are.equal("path@base64/L3Zhci90bXA=", pushgateway.segment("path", "/var/tmp"))
    assert.are.equal("x@base64/=", pushgateway.segment("x", ""))
    assert.are.equal("x@base64/Pz8-", pushgateway.segment("x", "??>"))
    assert.are.equal("x@base64/w6k=", pushgateway.segment("x", "é"))
  end)

  it("puts job first, then instance, then the other labels by name", function()
    assert.are.equal("http://h:9091/metrics/job/ragops/instance/n1/a/1/plan/backfill",
      pushgateway.group_url("http://h:9091/", { plan = "backfill", a = 1, instance = "n1", job = "ragops" }))
  end)

  it("PUTs the rendered registry and reports refusals in pt-BR", function()
    local m = metrics.new()
    m:gauge("ragops_run_in_progress", nil, { plan = "backfill" }):set(0)
    local sent
    local ok = pushgateway.push(m, "http://h:9091", { job = "ragops", instance = "n1" },
      { request = function(req) sent = req; return { status = 200, body = "" } end })
    assert.is_true(ok)
    assert.are.equal("PUT", sent.method)
    assert.are.equal("http://h:9091/metrics/job/ragops/instance/n1", sent.url)
    assert.are.equal(m:render(), sent.body)
    assert.truthy(sent.headers["Content-Type"]:find("version=0.0.4", 1, true))
    local none, err = pushgateway.push(m, "http://u:senha@h:9091", { job = "ragops" },
      { request = function() return { status = 400, body = "pushed metrics are invalid\nmais" } end })
    assert.is_nil(none)
    assert.are.equal("o Pushgateway recusou as métricas: HTTP 400 pushed metrics are invalid", err)
    assert.has_error(function() pushgateway.push(m, "h:9091", { job = "x" }) end)
    assert.has_error(function() pushgateway.push(m, "http://h", {}) end)
  end)
end)

describe("configuração metrics.listen / metrics.push_url", function()
  local config = require "ragops.plan.config"
  local function load(text)
    local path = os.tmpname() .. "_config.lua"
    local f = assert(io.open(path, "w"))
    f:write(text)
    f:close()
    local cfg, err = config.load(path, function() return nil end)
    os.remove(path)
    return cfg, err
  end

  it("aceita endereço e URL válidos e recusa os inválidos com a chave no erro", function()
    local cfg = assert(load('return { metrics = { listen = ":9464", push_url = "http://127.0.0.1:9091" } }'))
    assert.are.equal(":9464", cfg.metrics.listen)
    assert.are.equal("http://127.0.0.1:9091", cfg.metrics.push_url)
    local none, err = load('return { metrics = { listen = "exemplo.com:9464" } }')
    assert.is_nil(none)
    assert.truthy(err:find("metrics.listen", 1, true), err)
    none, err = load('return { metrics = { push_url = "pushgateway:9091" } }')
    assert.is_nil(none)
    assert.truthy(err:find("metrics.push_url", 1, true), err)
  end)
end)
