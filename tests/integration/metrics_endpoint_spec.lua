-- Integration: the metrics transport of a real run (ragops binary, real
-- PostgreSQL, an embed-server with --latency-ms so the run lasts):
--   * /metrics scraped live passes `promtool check metrics`, and a real
--     Prometheus started here scrapes it (target up, series present);
--   * --metrics-push leaves the final values on the real Pushgateway started
--     by tests/run_all.sh (RAGOPS_TEST_PUSHGATEWAY_URL), with job and instance;
--   * abuse during the run (malformed request lines, a 1 MiB header, a slow
--     client, 200 idle connections) is closed or bounded: the run ends with
--     the same result and /metrics still answers.
-- The waits below are upper bounds for "it happened", not speed assertions.
local H = require "tests.integration.helper"
local cjson = require "cjson"

local PLAN = [[
  local verses = source "verse" { sql = "select id, book, chapter, verse, text, updated_at from verses",
    key = "id", updated_at = "updated_at",
    document = function(r) return { content = r.text } end }
  return plan { name = "metricas", sources = { verses },
    batch = { size = 4, in_flight = 1 }, retry = { attempts = 3, base_ms = 10, max_ms = 50, timeout_s = 10 } }]]

local free_port = H.free_port

local function curl(url, extra)
  return H.sh(("curl -sS --max-time 10 %s %s"):format(extra or "", H.q(url)))
end

-- Polls fn() until it returns a truthy value (returned) or timeout_s passes.
local function eventually(timeout_s, fn)
  for _ = 1, timeout_s * 10 do
    local v = fn()
    if v then return v end
    H.sleep(0.1)
  end
  return nil
end

-- Writes text to a new temporary file and returns its path.
local function temp_file(text)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

-- Starts the run in the background with the metrics flags.
local function start_run(url, n_verses, flags)
  local plan = H.plan_file(PLAN)
  local server = H.start_embed_server("--latency-ms 500")
  local report = os.tmpname()
  local job = H.ragops_background(url, ("run %s %s --report-json %s"):format(H.q(plan), flags, H.q(report)),
    { env = { RAGOPS_EMBED_URL = server.url } })
  return job, { plan = plan, server = server, report = report, n = n_verses }
end

-- Waits for the run to end; returns its exit code and report.
local function finish_run(job, ctx)
  local code = H.exit_code(job, 120)
  local text = H.read_all(ctx.report)
  H.stop_embed_server(ctx.server)
  os.remove(ctx.plan)
  os.remove(ctx.report)
  return code, text ~= "" and cjson.decode(text) or nil
end

-- Starts Prometheus scraping target every second; returns { pid, url, dir }.
local function start_prometheus(target)
  local dir = os.tmpname()
  os.remove(dir)
  assert(H.sh("mkdir -p " .. H.q(dir .. "/data")) == 0)
  local config = dir .. "/prometheus.yml"
  local f = assert(io.open(config, "w"))
  f:write(([[
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: ragops
    static_configs:
      - targets: ["%s"]
]]):format(target))
  f:close()
  local port = free_port()
  local p = io.popen(("prometheus --config.file=%s --storage.tsdb.path=%s --web.listen-address=127.0.0.1:%d "
    .. ">%s 2>&1 & echo $!"):format(H.q(config), H.q(dir .. "/data"), port, H.q(dir .. "/log")))
  local pid = p:read("*l")
  p:close()
  return { pid = pid, url = ("http://127.0.0.1:%d"):format(port), dir = dir }
end

local function stop_prometheus(prom)
  H.sh("kill " .. prom.pid .. " 2>/dev/null; sleep 0.2")
  H.sh("rm -rf " .. H.q(prom.dir))
end

-- Prometheus' query API: the result list of an instant query.
local function query(prom, expr)
  local code, out = curl(prom.url .. "/api/v1/query", "-G --data-urlencode " .. H.q("query=" .. expr))
  if code ~= 0 then return {} end
  local ok, doc = pcall(cjson.decode, out)
  return ok and doc.status == "success" and doc.data.result or {}
end

describe("transporte de métricas de uma execução", function()
  after_each(function() H.cleanup() end)

  it("/metrics passa no promtool, o Prometheus coleta e o Pushgateway recebe os valores finais", function()
    local pushgateway = os.getenv("RAGOPS_TEST_PUSHGATEWAY_URL")
    assert.is_string(pushgateway, "RAGOPS_TEST_PUSHGATEWAY_URL ausente (rode com tests/run_all.sh)")
    local N = 96
    local url = H.migrated_db("ragops_it_metrics", N, 0)
    local port = free_port()
    local job, ctx = start_run(url, N, ("--metrics-listen :%d --metrics-push %s"):format(port, H.q(pushgateway)))
    local metrics_url = ("http://127.0.0.1:%d/metrics"):format(port)
    local prom = start_prometheus(("127.0.0.1:%d"):format(port))
    finally(function() stop_prometheus(prom) end)

    -- Live /metrics once documents are counted: promtool accepts it.
    local body = eventually(30, function()
      local code, out = curl(metrics_url, "-f")
      return code == 0 and out:find("ragops_documents_total{", 1, true) and out
    end)
    assert.is_string(body, "sem ragops_documents_total em /metrics: " .. H.read_all(job.err))
    local file = temp_file(body)
    local pcode, pout, perr = H.sh("promtool check metrics < " .. H.q(file))
    os.remove(file)
    assert.are.equal(0, pcode, pout .. perr)
    assert.matches('ragops_run_in_progress{plan="metricas"} 1', body, 1, true)
    assert.matches("# TYPE ragops_embed_latency_seconds histogram", body, 1, true)
    assert.matches('ragops_embed_latency_seconds_bucket{plan="metricas",le="+Inf"}', body, 1, true)
    local hcode, health = curl(("http://127.0.0.1:%d/healthz"):format(port), "-f")
    assert.are.equal(0, hcode)
    assert.are.equal("ok\n", health)
    local _, status404 = curl(("http://127.0.0.1:%d/outra"):format(port), "-o /dev/null -w '%{http_code}'")
    assert.are.equal("404", status404)

    -- The real Prometheus: target up and the run's series stored.
    local up = eventually(40, function()
      local r = query(prom, 'up{job="ragops"}')
      return r[1] and r[1].value[2] == "1"
    end)
    assert.is_true(up, "alvo não ficou up no Prometheus: " .. H.read_all(prom.dir .. "/log"):sub(-2000))
    local series = eventually(20, function()
      local r = query(prom, 'ragops_documents_total{job="ragops",entity_type="verse"}')
      return #r > 0 and r
    end)
    assert.is_table(series, "ragops_documents_total não chegou ao Prometheus")
    assert.is_true(H.alive(job.pid), "a execução terminou antes da coleta (aumente N)")

    local code, report = finish_run(job, ctx)
    assert.are.equal(0, code, H.read_all(job.err))
    assert.are.equal(N, report.succeeded)

    -- The Pushgateway holds the final values under job and instance.
    local _, pushed = curl(pushgateway .. "/metrics", "-f")
    local line = pushed:match('ragops_run_in_progress{[^}]*plan="metricas"[^}]*} [%d.e+]+')
    assert.is_string(line, pushed:sub(1, 3000))
    assert.matches('job="ragops"', line, 1, true)
    assert.matches('instance="[^"]+"', line)
    assert.matches(" 0$", line)
    assert.matches('ragops_documents_total{[^}]*job="ragops"[^}]*outcome="embedded"[^}]*} ' .. N, pushed)
    assert.matches("métricas finais enviadas ao Pushgateway", H.read_all(job.err), 1, true)
    -- The endpoint went away with the run.
    assert.are_not.equal(0, (curl(metrics_url, "-f")))
  end)

  it("abuso do endpoint durante a execução: mesmo resultado e /metrics ainda responde", function()
    local N = 112
    local url = H.migrated_db("ragops_it_metrics_abuse", N, 0)
    local port = free_port()
    local job, ctx = start_run(url, N, ("--metrics-listen 127.0.0.1:%d"):format(port))
    local base = ("http://127.0.0.1:%d"):format(port)
    assert.is_truthy(eventually(30, function() return curl(base .. "/metrics", "-f") == 0 end),
      H.read_all(job.err))

    local header = temp_file("X-Grande: " .. ("a"):rep(1024 * 1024) .. "\n")
    local script = temp_file(([[
set -u
P=%d
HEADER=%s
raw() { # request in printf format -> first line of the answer (or nothing)
  exec 3<>/dev/tcp/127.0.0.1/$P
  printf "$1" >&3
  timeout 10 head -n 1 <&3 | tr -d '\r'
  exec 3<&-
}
# Slow client: one byte every 0.25 s for 12 s; the server must close first.
(
  exec 4<>/dev/tcp/127.0.0.1/$P
  printf 'GET /metrics HTTP/1.1\r\nX-Lento: ' >&4
  ( trap '' PIPE; for i in $(seq 48); do printf a >&4 2>/dev/null || break; sleep 0.25; done ) &
  if timeout 15 cat <&4 >/dev/null; then echo "lento: fechado"; else echo "lento: rc $?"; fi
) > "$HEADER.slow" 2>&1 &
SLOW=$!
echo "malformada: $(raw 'GARBAGE\r\n\r\n')"
echo "versao: $(raw 'GET /metrics HTTP/9.9\r\n\r\n')"
echo "post: $(raw 'POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n')"
big() { # a 1 MiB header line (curl refuses to send one that large)
  exec 5<>/dev/tcp/127.0.0.1/$P
  ( trap '' PIPE; { printf 'GET /metrics HTTP/1.1\r\n'; cat "$HEADER"; } >&5 2>/dev/null ) &
  timeout 20 head -n 1 <&5 | tr -d '\r'
  wait $!
  exec 5<&-
}
echo "grande: $(big)"
# 200 idle connections held open while /metrics is asked for.
FDS=()
for i in $(seq 200); do exec {fd}<>/dev/tcp/127.0.0.1/$P && FDS+=($fd); done
echo "ociosas: ${#FDS[@]}"
echo "metrics: $(curl -s -o /dev/null -w '%%{http_code}' --max-time 10 http://127.0.0.1:$P/metrics)"
for fd in "${FDS[@]}"; do exec {fd}<&-; done
wait $SLOW
cat "$HEADER.slow"
rm -f "$HEADER.slow"
]]):format(port, H.q(header)))
    local scode, sout, serr = H.sh("bash " .. H.q(script))
    os.remove(script)
    os.remove(header)
    assert.are.equal(0, scode, serr)
    assert.matches("malformada: HTTP/1.1 400 Bad Request\n", sout, 1, true)
    assert.matches("versao: HTTP/1.1 400 Bad Request\n", sout, 1, true)
    assert.matches("post: HTTP/1.1 405 Method Not Allowed\n", sout, 1, true)
    assert.matches("grande: HTTP/1.1 431 Request Header Fields Too Large\n", sout, 1, true)
    assert.matches("ociosas: 200\n", sout, 1, true)
    assert.matches("metrics: 200\n", sout, 1, true)
    assert.matches("lento: fechado\n", sout, 1, true)
    assert.is_true(H.alive(job.pid), "a execução terminou antes do fim do abuso (aumente N)")

    local code, report = finish_run(job, ctx)
    assert.are.equal(0, code, H.read_all(job.err))
    assert.are.equal(N, report.processed)
    assert.are.equal(N, report.succeeded)
    assert.are.equal(0, report.failed)
    assert.are.equal(N, H.scalar(url, "select count(distinct entity_id) from rag_documents"))
    assert.are.equal("done", H.scalar(url, "select status from ragops_runs order by id desc limit 1"))
  end)

  it("porta em uso: aviso em pt-BR e a execução segue sem o endpoint", function()
    local url = H.migrated_db("ragops_it_metrics_busy", 8, 0)
    local holder = H.start_embed_server("")
    finally(function() H.stop_embed_server(holder) end)
    local busy = holder.base:match(":(%d+)$")
    local code, _, err = H.ragops(url, "run " .. H.q(H.plan_file(PLAN)) .. " --metrics-listen :" .. busy)
    assert.are.equal(0, code, err)
    assert.matches("endpoint de métricas desativado nesta execução: não foi possível escutar em 127.0.0.1:"
      .. busy .. ": endereço em uso", err, 1, true)
    local ucode, _, uerr = H.ragops(url, "run " .. H.q(H.plan_file(PLAN)) .. " --metrics-listen exemplo.com:80")
    assert.are.equal(2, ucode)
    assert.matches("--metrics-listen", uerr, 1, true)
  end)
end)
