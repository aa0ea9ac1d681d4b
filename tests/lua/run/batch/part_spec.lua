-- part_spec.lua: ragops.run.batch.part, one JSONL part of the Batch API
-- mode on disk (issue 24): custom_id, the limits of a part, the request
-- lines of a unit, fits/too_big at each limit and the part file (created
-- 0600, appended, cut back to the committed length, lost, never a link).
local cjson = require "cjson"
local part = require "ragops.run.batch.part"

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("*a")
  p:close()
  return out
end

local function temp_dir()
  local dir = os.tmpname()
  os.remove(dir)
  sh("mkdir -p " .. q(dir))
  return dir
end

local function read_all(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local text = f:read("*a")
  f:close()
  return text
end

local function write_all(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

local function item(text, hash) return { text = text, chunk = { hash = hash } } end

local BODY = { model = "text-embedding-3-small", dimensions = 256, url = "/openai/v1/embeddings" }

local function split_lines(text)
  local out = {}
  for line in text:gmatch("([^\n]*)\n") do out[#out + 1] = line end
  return out
end

describe("lotes: custom_id", function()
  it("custom_id e parse_custom_id vão e voltam", function()
    local id = part.custom_id(12, 345, 6789)
    assert.are.equal("12-345-6789", id)
    assert.are.same({ 12, 345, 6789 }, { part.parse_custom_id(id) })
  end)

  it("recusa ids malformados", function()
    for _, bad in ipairs({ "", "1-2", "1-2-3-4", "a-2-3", "1-2-x", "-1-2-3", "1--2-3", " 1-2-3", "1-2-3 ", "1.5-2-3" }) do
      assert.is_nil(part.parse_custom_id(bad), ("%q deveria ser recusado"):format(bad))
    end
    assert.is_nil(part.parse_custom_id(nil))
  end)
end)

describe("lotes: limites de uma parte", function()
  it("sem limites do provedor valem os da OpenAI, sem fila de tokens", function()
    assert.are.same({ max_requests = 50000, max_inputs = 50000, max_file_bytes = 200 * 1000 * 1000 },
      part.limits(nil))
    assert.is_nil(part.limits({}).enqueued_tokens)
  end)

  it("os limites do provedor substituem os padrões", function()
    local l = part.limits({ batch_max_requests = 3, batch_max_inputs = 7, batch_max_file_bytes = 1000,
                            batch_enqueued_tokens = 90, max_inputs = 2048 })
    assert.are.same({ max_requests = 3, max_inputs = 7, max_file_bytes = 1000, enqueued_tokens = 90 }, l)
  end)
end)

describe("lotes: linhas de uma unidade", function()
  local slices = { { item("abc", "h1"), item("defgh", "h2") }, { item("xyzxyzxyz", "h3") } }
  local lines = part.lines(7, 3, slices, BODY, 0.3)

  it("uma linha JSON por pedido, com custom_id, método, rota e corpo", function()
    local got = split_lines(lines.text)
    assert.are.equal(2, #got, lines.text)
    assert.are.equal("\n", lines.text:sub(-1))
    local first, second = cjson.decode(got[1]), cjson.decode(got[2])
    assert.are.same({ custom_id = "7-3-1", method = "POST", url = "/openai/v1/embeddings",
      body = { model = "text-embedding-3-small", input = { "abc", "defgh" }, encoding_format = "base64",
               dimensions = 256 } }, first)
    assert.are.equal("7-3-2", second.custom_id)
    assert.are.same({ "xyzxyzxyz" }, second.body.input)
  end)

  it("hashes na ordem das entradas, tamanhos por pedido, tokens pela soma de ceil(bytes*tpb)", function()
    assert.are.same({ "h1", "h2", "h3" }, lines.hashes)
    assert.are.same({ 2, 1 }, lines.sizes)
    assert.are.equal(2, lines.requests)
    assert.are.equal(3, lines.inputs)
    -- ceil(3*0.3)=1, ceil(5*0.3)=2, ceil(9*0.3)=3
    assert.are.equal(6, lines.tokens)
  end)

  it("sem body.url a rota é /v1/embeddings; sem dimensions o corpo não a leva", function()
    local l = part.lines(1, 1, { { item("a", "h") } }, { model = "m" }, 0.25)
    local obj = cjson.decode(split_lines(l.text)[1])
    assert.are.equal("/v1/embeddings", obj.url)
    assert.is_nil(obj.body.dimensions)
    assert.are.equal("1-1-1", obj.custom_id)
  end)
end)

describe("lotes: cabe ou não cabe numa parte", function()
  -- A part that holds 2 requests, 5 inputs, 100 bytes and 50 tokens.
  local held = { requests = 2, inputs = 5, bytes = 100, tokens = 50 }
  local limits = { max_requests = 4, max_inputs = 9, max_file_bytes = 150, enqueued_tokens = 80 }
  -- Part:fits through a real part object (open on a temp dir), with counters set.
  local dir = temp_dir()
  local p = assert(part.open(dir, { id = 1, file_name = "fits.jsonl", file_bytes = 0, requests = 0, inputs = 0,
                                    tokens_est = 0 }, limits))
  p:close()
  local function set_held()
    p.requests, p.inputs, p.bytes, p.tokens = held.requests, held.inputs, held.bytes, held.tokens
    p.limits = limits
  end
  local function lines(requests, inputs, bytes, tokens)
    return { requests = requests, inputs = inputs, text = ("x"):rep(bytes), tokens = tokens }
  end

  teardown(function() sh("rm -rf " .. q(dir)) end)

  it("exatamente no limite cabe; um acima não (pedidos, entradas, bytes, tokens)", function()
    set_held()
    assert.is_true(p:fits(lines(2, 4, 50, 30)), "tudo exatamente no limite")
    assert.is_false(p:fits(lines(3, 1, 1, 1)), "um pedido a mais")
    assert.is_false(p:fits(lines(1, 5, 1, 1)), "uma entrada a mais")
    assert.is_false(p:fits(lines(1, 1, 51, 1)), "um byte a mais")
    assert.is_false(p:fits(lines(1, 1, 1, 31)), "um token a mais na fila")
  end)

  it("sem fila de tokens (enqueued_tokens nil) os tokens não limitam", function()
    set_held()
    p.limits = { max_requests = 4, max_inputs = 9, max_file_bytes = 150 }
    assert.is_true(p:fits(lines(1, 1, 1, 1e9)))
  end)

  it("too_big: no limite de uma parte vazia não é grande demais; um acima é", function()
    assert.is_false(part.too_big(lines(4, 9, 150, 80), limits))
    assert.is_true(part.too_big(lines(5, 1, 1, 1), limits))
    assert.is_true(part.too_big(lines(1, 10, 1, 1), limits))
    assert.is_true(part.too_big(lines(1, 1, 151, 1), limits))
    assert.is_true(part.too_big(lines(1, 1, 1, 81), limits))
    assert.is_false(part.too_big(lines(1, 1, 1, 1e9), { max_requests = 4, max_inputs = 9, max_file_bytes = 150 }))
  end)
end)

describe("lotes: o arquivo da parte", function()
  local dir
  local LIMITS = part.limits(nil)

  local function row(name, file_bytes)
    return { id = 5, file_name = name, file_bytes = file_bytes, requests = 0, inputs = 0, tokens_est = 0 }
  end

  before_each(function() dir = temp_dir() end)
  after_each(function() sh("rm -rf " .. q(dir)) end)

  it("uma parte nova cria o arquivo 0600; append devolve o tamanho crescente", function()
    local p = assert(part.open(dir, row("nova.jsonl", 0), LIMITS))
    local path = dir .. "/nova.jsonl"
    assert.are.equal("600", sh("stat -c %a " .. q(path)):match("%d+"))
    local a = part.lines(5, 1, { { item("um", "h1") } }, BODY, 0.25)
    local b = part.lines(5, 2, { { item("dois", "h2"), item("três", "h3") } }, BODY, 0.25)
    assert.are.equal(#a.text, p:append(a))
    assert.are.equal(#a.text + #b.text, p:append(b))
    assert.are.same({ 2, 3, a.tokens + b.tokens }, { p.requests, p.inputs, p.tokens })
    p:close()
    assert.are.equal(a.text .. b.text, read_all(path))
  end)

  it("reaberta, corta o que passou de file_bytes (linhas de uma unidade que não confirmou)", function()
    local path = dir .. "/parte.jsonl"
    write_all(path, "confirmado\nnão confirmado\n")
    local r = row("parte.jsonl", #"confirmado\n")
    r.requests, r.inputs, r.tokens_est = 1, 2, 3
    local p = assert(part.open(dir, r, LIMITS))
    assert.are.equal("confirmado\n", read_all(path))
    assert.are.same({ 11, 1, 2, 3 }, { p.bytes, p.requests, p.inputs, p.tokens })
    assert.are.equal(11 + 5, p:append({ text = "mais\n", requests = 1, inputs = 1, tokens = 1 }))
    p:close()
    assert.are.equal("confirmado\nmais\n", read_all(path))
  end)

  it("reaberta com file_bytes 0 e restos no disco, o arquivo fica vazio", function()
    local path = dir .. "/vazia.jsonl"
    write_all(path, "restos de uma unidade\n")
    local p = assert(part.open(dir, row("vazia.jsonl", 0), LIMITS))
    p:close()
    assert.are.equal("", read_all(path))
  end)

  it("arquivo menor que file_bytes ou ausente: perdido (lost), sem tocar o que há", function()
    local path = dir .. "/curta.jsonl"
    write_all(path, "curto\n")
    local p, err, kind = part.open(dir, row("curta.jsonl", 100), LIMITS)
    assert.is_nil(p)
    assert.are.equal("lost", kind, err)
    assert.truthy(err:find("curta.jsonl", 1, true), err)
    assert.are.equal("curto\n", read_all(path))
    p, err, kind = part.open(dir, row("sumiu.jsonl", 10), LIMITS)
    assert.is_nil(p)
    assert.are.equal("lost", kind, err)
    assert.is_nil(read_all(dir .. "/sumiu.jsonl"), "criou o arquivo de uma parte perdida")
  end)

  it("um link simbólico no caminho é recusado (not_regular) e o alvo fica intacto", function()
    write_all(dir .. "/alvo.txt", "alvo")
    sh(("ln -s %s %s"):format(q(dir .. "/alvo.txt"), q(dir .. "/link.jsonl")))
    local p, err, kind = part.open(dir, row("link.jsonl", 0), LIMITS)
    assert.is_nil(p)
    assert.are.equal("not_regular", kind, err)
    assert.are.equal("alvo", read_all(dir .. "/alvo.txt"))
    sh(("ln -s %s %s"):format(q(dir .. "/nada.txt"), q(dir .. "/pendente.jsonl")))
    p, err, kind = part.open(dir, row("pendente.jsonl", 0), LIMITS)
    assert.is_nil(p)
    assert.are.equal("not_regular", kind, err)
    assert.is_nil(read_all(dir .. "/nada.txt"), "criou o alvo de um link pendente")
  end)
end)
