-- ragops.obs.metrics_endpoint: the Prometheus endpoint of a run, served on the
-- engine's own loop by ragops.httpd (bounded: see engine/httpd.h).
--
--   local ep, err = metrics_endpoint.start {
--     listen = "127.0.0.1:9464",          -- "ADDR:PORT", "[::1]:PORT", ":PORT" (= loopback)
--     registry = metrics_registry,        -- ragops.obs.metrics registry (has :render())
--     health = function() return ok, text end,   -- optional
--   }
--   ep:port(); ep:close()
--
-- Routes: GET/HEAD /metrics (text exposition 0.0.4), /healthz (200 "ok\n"
-- or 503 with health's text), anything else 404. The handler runs inside the
-- loop and never yields (the registry renders synchronously).
local M = {}

M.CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
local TEXT = "text/plain; charset=utf-8"

-- Parses "ADDR:PORT", "[IPv6]:PORT" or ":PORT" (loopback). Returns host,
-- port or nil, pt-BR message. "localhost" means 127.0.0.1; other names are
-- refused (the server binds IP literals only).
function M.parse_listen(text)
  if type(text) ~= "string" then
    return nil, ("endereço de escuta inválido: esperado ENDEREÇO:PORTA, recebi %s"):format(type(text))
  end
  local host, port = text:match("^%[([%x:%.]+)%]:(%d+)$")
  if not host then host, port = text:match("^([^:%[%]]*):(%d+)$") end
  if not host then
    return nil, ("endereço de escuta inválido: %q (use ENDEREÇO:PORTA, [::1]:PORTA ou :PORTA)"):format(text)
  end
  if host == "" or host == "localhost" then host = "127.0.0.1" end
  port = tonumber(port)
  if port < 1 or port > 65535 then
    return nil, ("porta de escuta fora de 1..65535: %q"):format(text)
  end
  if not host:find(":", 1, true) and not host:match("^%d+%.%d+%.%d+%.%d+$") then
    return nil, ("endereço de escuta inválido: %q (informe um IP, como 127.0.0.1 ou [::1])"):format(text)
  end
  return host, port
end

-- The request handler: path -> status, content_type, body.
function M.handler(registry, health)
  return function(path)
    if path == "/metrics" then
      return 200, M.CONTENT_TYPE, registry:render()
    elseif path == "/healthz" then
      local ok, text = true, nil
      if health then ok, text = health() end
      if ok then return 200, TEXT, text or "ok\n" end
      return 503, TEXT, text or "indisponível\n"
    end
    return 404, TEXT, "não encontrado: use /metrics ou /healthz\n"
  end
end

-- Starts the endpoint. Returns it or nil, pt-BR message.
function M.start(opts)
  if type(opts) ~= "table" or type(opts.registry) ~= "table" then
    error("metrics_endpoint.start: registry ausente", 2)
  end
  local host, port = M.parse_listen(opts.listen)
  if not host then return nil, port end
  local httpd = opts.httpd or require("ragops.httpd")
  local srv, err = httpd.listen(host, port, M.handler(opts.registry, opts.health))
  if not srv then return nil, err end
  return {
    address = host:find(":", 1, true) and ("[%s]:%d"):format(host, srv:port()) or ("%s:%d"):format(host, srv:port()),
    port = function() return srv:port() end,
    close = function() srv:close() end,
  }
end

-- The run's metrics settings: flags (--metrics-listen, --metrics-push) over
-- the configuration (metrics.listen, metrics.push_url). Returns
-- { listen =, push_url = } or nil, pt-BR message (the URL is not echoed: it
-- may carry credentials).
function M.settings(cfg_metrics, opts)
  local listen = opts["metrics-listen"] or cfg_metrics.listen
  local push_url = opts["metrics-push"] or cfg_metrics.push_url
  if listen ~= nil then
    local ok, err = M.parse_listen(listen)
    if not ok then return nil, "--metrics-listen/metrics.listen: " .. err end
  end
  if push_url ~= nil and not tostring(push_url):match("^[Hh][Tt][Tt][Pp][Ss]?://[^/%s]+") then
    return nil, "--metrics-push/metrics.push_url espera uma URL http:// ou https:// do Pushgateway"
  end
  return { listen = listen, push_url = push_url }
end

-- Starts the endpoint of a run when settings.listen is set. A failure (port
-- in use...) is a warning: the run goes on without it. Returns it or nil.
function M.start_run(settings, registry, log, health)
  if not settings.listen then return nil end
  local ep, err = M.start { listen = settings.listen, registry = registry, health = health }
  if not ep then
    log.warn("endpoint de métricas desativado nesta execução: %s", err)
    return nil
  end
  log.info("métricas Prometheus em http://%s/metrics", ep.address)
  local host = M.parse_listen(settings.listen)
  if host == "0.0.0.0" or host == "::" then
    log.warn("o endpoint de métricas escuta em todas as interfaces (%s): qualquer máquina que alcance esta porta "
      .. "lê /metrics e /healthz; prefira 127.0.0.1 ou o IP da rede interna (docs/alertas-e-metricas.md)",
      settings.listen)
  end
  return ep
end

-- Ends a run's metrics transport: closes the endpoint and pushes the final
-- values to the Pushgateway when settings.push_url is set (a failure is a
-- warning; the run's result does not change).
function M.finish_run(endpoint, settings, registry, plan_name, log, opts)
  if endpoint then endpoint:close() end
  if not settings.push_url then return end
  local pushgateway = require "ragops.obs.pushgateway"
  local ok, err = pushgateway.push(registry, settings.push_url,
    { job = "ragops", instance = pushgateway.hostname(), plan = plan_name }, opts)
  if ok then
    log.info("métricas finais enviadas ao Pushgateway (job=ragops, plan=%s)", plan_name)
  else
    log.warn("%s", err)
  end
end

return M
