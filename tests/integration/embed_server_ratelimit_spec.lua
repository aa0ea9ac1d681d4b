-- embed_server_ratelimit_spec.lua: the embed-server's provider rate limits
-- (issue 25) over HTTP with curl: --rpm and --tpm as token buckets and
-- --max-concurrency, global to the server (every connection draws from the
-- same quota), the 429 (type, Retry-After, retry-after-ms), OpenAI's
-- x-ratelimit-* headers only for the limits set, the /stats counters and
-- their reset, every dialect's embeddings route, and not the Batch API.
-- Nothing asserts a duration: only what the buckets dictate (a bucket of
-- N per minute refills one unit every 60/N seconds).
local cjson = require "cjson"
local H = require "tests.integration.helper"

local HEADERS = { "retry-after", "retry-after-ms", "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
                  "x-ratelimit-reset-requests", "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens",
                  "x-ratelimit-reset-tokens" }

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

-- Splits line on tabs, keeping empty fields.
local function fields(line)
  local out = {}
  for field in (line .. "\t"):gmatch("([^\t]*)\t") do out[#out + 1] = field end
  return out
end

-- POSTs body (a table) n times to path with ONE curl process: one
-- keep-alive connection in turn, or n connections at once with parallel.
-- Returns a list, in request order, of { status, headers = {name = value
-- or nil}, body (decoded or nil), new_connection }.
local function post_many(server, path, body, n, parallel)
  local req, dir = os.tmpname(), os.tmpname()
  os.remove(dir)
  H.sh("mkdir -p " .. H.q(dir))
  write(req, cjson.encode(body))
  local format = { "%{urlnum}", "%{http_code}", "%{num_connects}" }
  for _, name in ipairs(HEADERS) do format[#format + 1] = "%header{" .. name .. "}" end
  local args = { "curl -sS --max-time 60", parallel and "-Z --parallel-immediate --parallel-max " .. n or "",
                 "-H 'Content-Type: application/json' --data-binary @" .. H.q(req),
                 "-w", H.q(table.concat(format, "\t") .. "\n") }
  for i = 1, n do args[#args + 1] = ("-o %s %s"):format(H.q(dir .. "/" .. i), H.q(server.base .. path)) end
  local code, text, err = H.sh(table.concat(args, " "))
  assert.are.equal(0, code, "curl: " .. err)
  local answers = {}
  for line in text:gmatch("[^\n]+") do
    local f = fields(line)
    local i = tonumber(f[1]) + 1
    local headers = {}
    for k, name in ipairs(HEADERS) do headers[name] = f[3 + k] ~= "" and f[3 + k] or nil end
    local ok, decoded = pcall(cjson.decode, H.read_all(dir .. "/" .. i))
    answers[i] = { status = tonumber(f[2]), headers = headers, body = ok and decoded or nil,
                   new_connection = f[3] == "1" }
  end
  H.sh("rm -rf " .. H.q(dir))
  os.remove(req)
  assert.are.equal(n, #answers, "respostas lidas do curl")
  return answers
end

local function post(server, body)
  return post_many(server, "/v1/embeddings", body, 1)[1]
end

local function stats(server, reset)
  local _, text = H.sh(("curl -sS --max-time 30 %s %s"):format(reset and "-X POST" or "",
    H.q(server.base .. (reset and "/stats/reset" or "/stats"))))
  return cjson.decode(text)
end

-- A text of n tokens by the server's count (one per word).
local function words(n)
  return ("palavra "):rep(n):sub(1, -2)
end

local function statuses(answers)
  local out = {}
  for i, a in ipairs(answers) do out[i] = a.status end
  return table.concat(out, ",")
end

-- The 429 is well formed: its type, Retry-After whole seconds (>= 1) and
-- retry-after-ms rounding up to it.
local function assert_refusal(a, kind)
  assert.are.equal(429, a.status)
  assert.are.equal(kind, a.body.error.type, cjson.encode(a.body))
  assert.are.equal("rate_limit_exceeded", a.body.error.code)
  local seconds, ms = tonumber(a.headers["retry-after"]), tonumber(a.headers["retry-after-ms"])
  assert.is_true(seconds >= 1, "Retry-After " .. tostring(seconds))
  assert.are.equal(seconds, math.ceil(ms / 1000), ("Retry-After %s, retry-after-ms %s"):format(seconds, ms))
end

local started = {}
local function start(flags)
  local server = H.start_embed_server("--dim 8 " .. flags)
  started[#started + 1] = server
  return server
end

describe("embed-server: limites de taxa do provedor (--rpm, --tpm, --max-concurrency)", function()
  after_each(function()
    for _, server in ipairs(started) do H.stop_embed_server(server) end
    started = {}
  end)

  it("--rpm 60: uma rajada esvazia o balde e recebe 429 requests, com os cabeçalhos e os contadores", function()
    local server = start("--rpm 60")
    local answers = post_many(server, "/v1/embeddings", { model = "m", input = "uma frase curta" }, 70)
    for i = 1, 60 do assert.are.equal(200, answers[i].status, "pedido " .. i .. ": " .. statuses(answers)) end
    assert.are.equal("60", answers[1].headers["x-ratelimit-limit-requests"])
    assert.are.equal("59", answers[1].headers["x-ratelimit-remaining-requests"])
    assert.are.equal("1s", answers[1].headers["x-ratelimit-reset-requests"])
    assert.is_nil(answers[1].headers["x-ratelimit-limit-tokens"]) -- no --tpm: no token headers
    assert.is_nil(answers[1].headers["retry-after"])
    local ok, refused, first = 0, 0, nil
    for _, a in ipairs(answers) do
      if a.status == 200 then ok = ok + 1 else refused = refused + 1; first = first or a end
    end
    assert.is_true(refused >= 1, "nenhum 429: " .. statuses(answers))
    assert_refusal(first, "requests")
    assert.are.equal("60", first.headers["x-ratelimit-limit-requests"])
    assert.are.equal("0", first.headers["x-ratelimit-remaining-requests"])
    assert.is_truthy(first.headers["x-ratelimit-reset-requests"]:match("^%d+m?[%d.]*m?s$"),
      first.headers["x-ratelimit-reset-requests"])
    local s = stats(server)
    assert.are.equal(refused, s.rate_limited)
    assert.are.same({ injected = 0, requests = refused, tokens = 0, concurrency = 0 }, s.rate_limited_by)
    assert.are.equal(ok, s.admitted_requests)
    assert.are.equal(ok, s.window_requests)
    assert.are.equal(3 * ok, s.admitted_tokens) -- "uma frase curta": 3 tokens each
    assert.are.same({ rpm = 60, tpm = 0, max_concurrency = 0 }, s.limits)
    local zeroed = stats(server, true)
    assert.are.equal(0, zeroed.admitted_requests)
    assert.are.equal(0, zeroed.window_requests)
    assert.are.equal(0, zeroed.rate_limited_by.requests)
    assert.are.equal("0", post(server, { model = "m", input = "x" }).headers["x-ratelimit-remaining-requests"],
      "o reset zera os contadores, não o balde")
  end)

  it("--tpm: pedido maior que o limite é recusado sem Retry-After; restantes caem pelo admitido", function()
    local server = start("--tpm 100")
    local huge = post(server, { model = "m", input = words(150) })
    assert.are.equal(429, huge.status)
    assert.are.equal("tokens", huge.body.error.type)
    assert.are.equal("rate_limit_exceeded", huge.body.error.code)
    assert.is_nil(huge.headers["retry-after"], "esperar não adianta: sem Retry-After")
    assert.are.equal("100", huge.headers["x-ratelimit-remaining-tokens"])
    assert.is_nil(huge.headers["x-ratelimit-limit-requests"]) -- no --rpm: no request headers
    local first = post(server, { model = "m", input = { words(20), words(10) } })
    assert.are.equal(200, first.status)
    assert.are.equal(30, first.body.usage.prompt_tokens)
    assert.are.equal("100", first.headers["x-ratelimit-limit-tokens"])
    assert.are.equal("70", first.headers["x-ratelimit-remaining-tokens"])
    assert.are.equal("18s", first.headers["x-ratelimit-reset-tokens"]) -- 30 tokens at 100/60 per second
    local second = post(server, { model = "m", input = words(30) })
    assert.are.equal(200, second.status)
    local remaining = tonumber(second.headers["x-ratelimit-remaining-tokens"])
    assert.is_true(remaining >= 40 and remaining < 70, "restantes depois de mais 30: " .. remaining)
    local over = post(server, { model = "m", input = words(80) })
    assert_refusal(over, "tokens")
    local s = stats(server)
    assert.are.same({ injected = 0, requests = 0, tokens = 2, concurrency = 0 }, s.rate_limited_by)
    assert.are.equal(2, s.admitted_requests)
    assert.are.equal(60, s.admitted_tokens)
    assert.are.equal(60, s.window_tokens)
  end)

  it("--max-concurrency 2 com --latency-ms 500: 4 pedidos paralelos, 2 admitidos e 2 recusados", function()
    local server = start("--max-concurrency 2 --latency-ms 500")
    local answers = post_many(server, "/v1/embeddings", { model = "m", input = "em paralelo" }, 4, true)
    local ok, refused = 0, 0
    for _, a in ipairs(answers) do
      assert.is_true(a.new_connection, "cada pedido numa conexão própria")
      if a.status == 200 then
        ok = ok + 1
      else
        refused = refused + 1
        assert_refusal(a, "concurrency")
        assert.are.equal("1", a.headers["retry-after"])
      end
      assert.is_nil(a.headers["x-ratelimit-limit-requests"]) -- neither --rpm nor --tpm
    end
    assert.are.equal(2, ok, statuses(answers))
    assert.are.equal(2, refused, statuses(answers))
    local s = stats(server)
    assert.are.equal(2, s.rate_limited_by.concurrency)
    assert.are.equal(2, s.admitted_requests)
    -- the two admitted answers came back: their slots are free again
    local again = post_many(server, "/v1/embeddings", { model = "m", input = "de novo" }, 2, true)
    assert.are.equal("200,200", statuses(again))
  end)

  it("o balde é global: duas conexões de clientes diferentes gastam a mesma cota", function()
    local server = start("--rpm 4")
    local a = post_many(server, "/v1/embeddings", { model = "m", input = "cliente a" }, 2)
    assert.is_true(a[1].new_connection)
    assert.is_false(a[2].new_connection, "o cliente A usa uma conexão só")
    assert.are.equal("200,200", statuses(a))
    assert.are.equal("3", a[1].headers["x-ratelimit-remaining-requests"])
    assert.are.equal("2", a[2].headers["x-ratelimit-remaining-requests"])
    local b = post_many(server, "/v1/embeddings", { model = "m", input = "cliente b" }, 3)
    assert.are.equal("200,200,429", statuses(b))
    assert.are.equal("1", b[1].headers["x-ratelimit-remaining-requests"])
    assert.are.equal("0", b[2].headers["x-ratelimit-remaining-requests"])
    assert_refusal(b[3], "requests")
    local s = stats(server)
    assert.are.equal(4, s.admitted_requests)
    assert.are.equal(1, s.rate_limited_by.requests)
  end)

  it("vale na rota de embeddings de todo dialeto, não nas rotas de lotes; o 429 injetado leva os cabeçalhos", function()
    local ollama = start("--api ollama --rpm 1")
    local answers = post_many(ollama, "/api/embed", { model = "m", input = "um" }, 2)
    assert.are.equal("200,429", statuses(answers))
    assert.are.equal("string", type(answers[2].body.error), "o erro no formato do Ollama")
    assert.are.equal("1", answers[1].headers["x-ratelimit-limit-requests"])
    local openai = start("--rpm 1 --rate-429 1")
    local injected = post(openai, { model = "m", input = "um" })
    assert.are.equal(429, injected.status)
    assert.are.equal("0", injected.headers["x-ratelimit-remaining-requests"])
    assert.are.equal(1, stats(openai).rate_limited_by.injected)
    local out = os.tmpname()
    local _, code = H.sh(("curl -sS -o /dev/null -D %s -w '%%{http_code}' %s"):format(H.q(out),
      H.q(openai.base .. "/v1/batches")))
    local head = H.read_all(out)
    os.remove(out)
    assert.are.equal("200", code)
    assert.is_nil(head:lower():find("x-ratelimit", 1, true), head)
  end)
end)
