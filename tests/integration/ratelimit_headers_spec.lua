-- ratelimit_headers_spec.lua: the provider's rate-limit headers seen from
-- Lua (issue 25), against an embed-server enforcing --rpm and --tpm: the
-- engine's embeddings client (ragops.embed) puts OpenAI's x-ratelimit-*
-- headers in info.ratelimit of a success (batch, nil, info) and of a 429
-- (nil, err, info), and info.retry_after_ms of the 429 comes from
-- retry-after-ms (ms, more precise) rather than Retry-After (whole
-- seconds); http.request gives the same resp.ratelimit. Nothing asserts a
-- duration: only what the buckets dictate (a bucket of N per minute
-- refills one unit every 60000/N ms, and a reset is the time until full).
--
-- Two modes, one file: under busted (describe exists) it is the spec; run
-- by the binary (global RAGOPS_HOME, args: the server's /v1 URL) it is the
-- driver and prints one `RESULT <json>` line with what Lua received.

-- The buckets, and the tokens of the first request: the second asks for
-- the whole TPM and waits FIRST tokens' refill (18.6 s less the gap between
-- the two requests), never a whole number of seconds unless that gap is
-- exactly 600 ms plus whole seconds.
local RPM, TPM, FIRST = 600, 100, 31

if describe == nil and RAGOPS_HOME then
  ---------------------------------------------------------------------------
  -- The driver, inside the binary.
  ---------------------------------------------------------------------------
  local cjson = require "cjson"
  local url = ...
  local client = require("ragops.embed").client {
    url = url, model = "m", dimensions = 8, expected_dim = 8, timeout_ms = 30000, proxy = "",
  }
  local out = {}
  -- FIRST tokens (one per word, the server's count): admitted.
  local batch, err, info = client:embed({ ("frase "):rep(FIRST):sub(1, -2) })
  out.ok = { batch = batch ~= nil, err = err, info = info }
  -- all of --tpm, more than what is left: refused for now.
  batch, err, info = client:embed({ ("palavra "):rep(TPM):sub(1, -2) })
  out.refused = { batch = batch ~= nil, err = err, info = info }
  local resp, herr = require("ragops.http").request {
    url = url .. "/embeddings", method = "POST", proxy = "", headers = { ["Content-Type"] = "application/json" },
    body = cjson.encode({ model = "m", input = "oi" }),
  }
  out.http = resp and { status = resp.status, ratelimit = resp.ratelimit } or { err = herr }
  client:close()
  io.write("RESULT ", cjson.encode(out), "\n")
  io.stdout:flush()
  return 0
end

-------------------------------------------------------------------------------
-- The spec, under busted.
-------------------------------------------------------------------------------
local cjson = require "cjson"
local H = require "tests.integration.helper"

-- A RAGOPS_HOME whose ragops.cli runs a Lua file (the driver) with the
-- source tree's modules.
local function shim_home()
  local dir = os.tmpname()
  os.remove(dir)
  H.sh("mkdir -p " .. H.q(dir .. "/lua/ragops/cli"))
  local f = assert(io.open(dir .. "/lua/ragops/cli/init.lua", "w"))
  f:write(([[
local src = %q
package.path = src .. "/lua/?.lua;" .. src .. "/lua/?/init.lua;" .. src .. "/?.lua;" .. package.path
return { main = function(script, ...) return assert(loadfile(script))(...) end }
]]):format(H.source_dir))
  f:close()
  return dir
end

-- remaining = floor(level) of a bucket of limit per minute, and reset the
-- ms (rounded up) until it is full: reset lies in [(limit - remaining - 1),
-- (limit - remaining)] * 60000 / limit.
local function assert_consistent(limit, remaining, reset_ms, what)
  local per_unit = 60000 / limit
  local low, high = (limit - remaining - 1) * per_unit, (limit - remaining) * per_unit
  assert.is_true(reset_ms >= low and reset_ms <= math.ceil(high),
    ("%s: reset %s ms fora de [%s, %s] (restantes %s de %s)"):format(what, reset_ms, low, high, remaining, limit))
end

describe("cabeçalhos de limite de taxa do provedor vistos do Lua (ragops.embed, ragops.http)", function()
  local server, home, got

  setup(function()
    server = H.start_embed_server(("--dim 8 --rpm %d --tpm %d"):format(RPM, TPM))
    home = shim_home()
    local code, out, err = H.sh(("RAGOPS_HOME=%s %s %s %s"):format(H.q(home), H.q(H.bin),
      H.q(H.source_dir .. "/tests/integration/ratelimit_headers_spec.lua"), H.q(server.url)))
    local line = out:match("RESULT ([^\n]*)")
    assert(line, ("o driver não deu resultado: código %s; saída %s; erro %s"):format(tostring(code), out, err))
    got = cjson.decode(line)
  end)

  teardown(function()
    if server then H.stop_embed_server(server) end
    if home then H.sh("rm -rf " .. H.q(home)) end
  end)

  it("sucesso: info.ratelimit com limite, restante e reinício de pedidos e de tokens, coerentes", function()
    assert.is_true(got.ok.batch, cjson.encode(got.ok))
    local rl = got.ok.info.ratelimit
    assert.is_table(rl, cjson.encode(got.ok.info))
    assert.are.equal(RPM, rl.limit_requests)
    assert.are.equal(TPM, rl.limit_tokens)
    -- the first request: one request and FIRST tokens taken from full buckets
    assert.are.equal(RPM - 1, rl.remaining_requests)
    assert.are.equal(TPM - FIRST, rl.remaining_tokens)
    assert_consistent(RPM, rl.remaining_requests, rl.reset_requests_ms, "pedidos")
    assert_consistent(TPM, rl.remaining_tokens, rl.reset_tokens_ms, "tokens")
    assert.is_nil(got.ok.info.retry_after_ms)
  end)

  it("429: retry_after_ms vem de retry-after-ms (ms, não o Retry-After em segundos) e info.ratelimit vem junto",
    function()
    local r = got.refused
    assert.is_false(r.batch, cjson.encode(r))
    assert.are.equal(429, r.info.status, cjson.encode(r.info))
    assert.are.equal("transient", r.info.class, cjson.encode(r.info))
    -- TPM tokens asked, TPM - FIRST and a bit left: the wait is at most
    -- FIRST tokens' refill, in ms; Retry-After would be whole seconds
    local wait, most = r.info.retry_after_ms, FIRST * 60000 / TPM
    assert.is_true(type(wait) == "number" and wait > 0 and wait <= most,
      "retry_after_ms " .. tostring(wait) .. " fora de (0, " .. most .. "]")
    assert.is_true(wait % 1000 ~= 0, "retry_after_ms " .. tostring(wait) .. " em segundos inteiros (Retry-After?)")
    local rl = r.info.ratelimit
    assert.is_table(rl, cjson.encode(r.info))
    assert.are.equal(TPM, rl.limit_tokens)
    assert.are.equal(RPM, rl.limit_requests)
    assert.is_true(rl.remaining_tokens < TPM, cjson.encode(rl))
    assert_consistent(TPM, rl.remaining_tokens, rl.reset_tokens_ms, "tokens")
  end)

  it("http.request também devolve resp.ratelimit", function()
    assert.are.equal(200, got.http.status, cjson.encode(got.http))
    local rl = got.http.ratelimit
    assert.is_table(rl, cjson.encode(got.http))
    assert.are.equal(TPM, rl.limit_tokens)
    assert.are.equal(RPM, rl.limit_requests)
    assert.is_number(rl.remaining_tokens)
    assert.is_number(rl.reset_tokens_ms)
  end)

  it("sem --rpm nem --tpm não há info.ratelimit (nenhum cabeçalho x-ratelimit-*)", function()
    local plain = H.start_embed_server("--dim 8")
    local code, out, err = H.sh(("RAGOPS_HOME=%s %s %s %s"):format(H.q(home), H.q(H.bin),
      H.q(H.source_dir .. "/tests/integration/ratelimit_headers_spec.lua"), H.q(plain.url)))
    H.stop_embed_server(plain)
    local line = out:match("RESULT ([^\n]*)")
    assert(line, ("o driver não deu resultado: código %s; erro %s"):format(tostring(code), err))
    local res = cjson.decode(line)
    assert.is_true(res.ok.batch, line)
    assert.is_nil(res.ok.info.ratelimit, line)
    assert.is_nil(res.http.ratelimit, line)
  end)
end)
