-- collect_spec.lua: ragops.run.batch.collect on canned result files of the
-- Batch API (issue 24), in the shape the embed-server writes them
-- (tools/embed-server/embed_server_batch.c es_result_line, es_expired_line):
-- index_file, lookup (vectors, isolate, errors, defer), classify, add_hits,
-- missing_group. No database, no server: ragops.embed's decode_answer is a
-- Lua stand-in that checks the count and keeps the usage tokens (the C
-- decoder itself is covered by tests/lua/embed/batch_io_spec.lua and the
-- whole path by tests/integration/batch_mode_spec.lua).
local cjson = require "cjson"

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function temp_dir()
  local dir = os.tmpname()
  os.remove(dir)
  os.execute("mkdir -p " .. q(dir))
  return dir
end

local function write_all(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

-- One output line as the embed-server writes it (es_result_line).
local seq = 0
local function result_line(custom_id, status, body)
  seq = seq + 1
  return ('{"id":"batch_req_%d","custom_id":%s,"response":{"status_code":%d,"request_id":"es-%d","body":%s},'
    .. '"error":null}\n'):format(seq, cjson.encode(custom_id), status, seq, cjson.encode(body))
end

-- One expired line (es_expired_line).
local function expired_line(custom_id)
  seq = seq + 1
  return ('{"id":"batch_req_%d","custom_id":%s,"response":null,"error":{"code":"batch_expired",'
    .. '"message":"Este pedido não foi executado antes de o lote expirar."}}\n'):format(seq, cjson.encode(custom_id))
end

-- An embeddings answer of n vectors of dimension dim, with tokens of usage.
local function answer(n, dim, tokens)
  local data = {}
  for i = 1, n do
    local v = {}
    for d = 1, dim do v[d] = i + d / 10 end
    data[i] = { object = "embedding", index = i - 1, embedding = v }
  end
  return { object = "list", data = data, model = "m", usage = { prompt_tokens = tokens, total_tokens = tokens } }
end

local function refusal(message)
  return { error = { message = message, type = "invalid_request_error", code = cjson.null } }
end

insulate("lotes: coleta dos resultados (ragops.run.batch.collect)", function()
  -- The stand-in for the C decoder: count checked, usage tokens kept.
  local decoded = {}
  package.loaded["ragops.embed"] = {
    decode_answer = function(body, count, dim)
      assert(type(body) == "string", "decode_answer recebe o texto JSON")
      local obj = cjson.decode(body)
      decoded[#decoded + 1] = { count = count, dim = dim }
      if #obj.data ~= count then
        return nil, ("resposta malformada: %d vetores, esperados %d"):format(#obj.data, count), "malformed"
      end
      local tokens = obj.usage.prompt_tokens
      return { tokens = function() return tokens end, vectors = obj.data }
    end,
  }
  local collect = require "ragops.run.batch.collect"
  local part = require "ragops.run.batch.part"
  local scrub = require "ragops.util.scrub"

  local dir, index
  local PART = { id = 41, state = "completed", batch_id = "batch_abc", file_name = "p.jsonl" }
  local SECRET = "sk-segredo-do-teste-0123456789"

  -- unit 1: request 1 (h1, h2) answered, request 2 (h3) expired,
  --         request 3 (h4, h5) refused as a whole (400),
  --         request 4 (h6) refused alone (400, the secret in its message),
  --         request 5 (h7) a 500, request 6 (h8) a 429, request 7 (h9) absent.
  -- unit 2: request 1 (h10, h11) answered with one vector too few.
  local UNIT1 = { unit_no = 1, round = 0, request_sizes = { 2, 1, 2, 1, 1, 1, 1 },
                  hashes = { "h1", "h2", "h3", "h4", "h5", "h6", "h7", "h8", "h9" } }
  local UNIT2 = { unit_no = 2, round = 2, request_sizes = { 2 }, hashes = { "h10", "h11" } }

  setup(function()
    scrub.register(SECRET)
    dir = temp_dir()
    local id = function(unit, k) return part.custom_id(PART.id, unit, k) end
    write_all(dir .. "/saida", result_line(id(1, 1), 200, answer(2, 3, 17))
      .. result_line(id(2, 1), 200, answer(1, 3, 5))
      -- a line of another part with unit 1's numbers: never used for this part
      .. result_line(part.custom_id(99, 1, 7), 200, answer(1, 3, 1000)))
    write_all(dir .. "/erros", expired_line(id(1, 2))
      .. result_line(id(1, 3), 400, refusal("uma entrada é inválida"))
      .. result_line(id(1, 4), 400, refusal("entrada inválida; chave " .. SECRET .. " recusada"))
      .. result_line(id(1, 5), 500, refusal("erro interno"))
      .. result_line(id(1, 6), 429, refusal("limite de taxa")))
    index = {}
    assert(collect.index_file(dir .. "/saida", index))
    assert(collect.index_file(dir .. "/erros", index))
  end)

  teardown(function()
    scrub.clear()
    if dir then os.execute("rm -rf " .. q(dir)) end
  end)

  local function item(hash, entity) return { text = "texto " .. hash, chunk = { hash = hash }, entity = { id = entity } } end

  it("index_file: uma entrada por custom_id, com o deslocamento e o tamanho da linha", function()
    local f = assert(io.open(dir .. "/erros", "rb"))
    local text = f:read("*a")
    f:close()
    local e = index[part.custom_id(PART.id, 1, 4)]
    assert.truthy(e, "a linha 41-1-4 não foi indexada")
    assert.are.equal(dir .. "/erros", e.path)
    local line = text:sub(e.offset + 1, e.offset + e.length)
    assert.are.equal(part.custom_id(PART.id, 1, 4), cjson.decode(line).custom_id)
    assert.truthy(index[part.custom_id(99, 1, 7)], "a linha de outra parte também é indexada (pelo id inteiro)")
    assert.is_nil(collect.index_file(dir .. "/nao-existe", {}))
  end)

  it("200: os vetores das hashes do pedido, na ordem das entradas, e os tokens de usage", function()
    local lookup = collect.lookup(PART, UNIT1, index, 3)
    assert.are.equal(1, lookup.vectors.h1.row)
    assert.are.equal(2, lookup.vectors.h2.row)
    assert.are.equal(lookup.vectors.h1.batch, lookup.vectors.h2.batch)
    assert.are.equal(17, lookup.tokens) -- not the 1000 of the other part's line
    assert.is_nil(lookup.miss)
    assert.are.equal(0, lookup.round)
  end)

  it("expirado, 500, 429 e linha ausente: sem vetor e sem erro (voltam num lote novo)", function()
    local lookup = collect.lookup(PART, UNIT1, index, 3)
    for _, h in ipairs({ "h3", "h7", "h8", "h9" }) do
      assert.is_nil(lookup.vectors[h], h)
      assert.is_nil(lookup.errors[h], h)
      assert.is_nil(lookup.isolate[h], h)
    end
  end)

  it("400 num pedido de várias entradas: todas isoladas, nenhum erro", function()
    local lookup = collect.lookup(PART, UNIT1, index, 3)
    assert.is_true(lookup.isolate.h4)
    assert.is_true(lookup.isolate.h5)
    assert.is_nil(lookup.errors.h4)
    assert.is_nil(lookup.errors.h5)
    assert.is_nil(lookup.isolate.h6, "um pedido de uma entrada só não se isola de novo")
  end)

  it("400 num pedido de uma entrada: erro permanente em pt-BR, sem o segredo", function()
    local lookup = collect.lookup(PART, UNIT1, index, 3)
    local e = lookup.errors.h6
    assert.truthy(e, "sem erro para h6")
    assert.are.equal("permanent", e.info.class)
    assert.are.equal(400, e.info.status)
    assert.truthy(e.err:find("o provedor recusou o pedido dentro do lote (HTTP 400", 1, true), e.err)
    assert.truthy(e.err:find("entrada inválida", 1, true), e.err)
    assert.is_nil(e.err:find(SECRET, 1, true), e.err)
    assert.truthy(e.err:find(scrub.MASK, 1, true), e.err)
  end)

  it("400 com o segredo atravessando o corte de 300 bytes da mensagem: nem um pedaço dele sai", function()
    local cut_dir = temp_dir()
    local message = ("x"):rep(290) .. SECRET
    write_all(cut_dir .. "/erros", result_line(part.custom_id(7, 1, 1), 400, refusal(message)))
    local idx = assert(collect.index_file(cut_dir .. "/erros", {}))
    local lookup = collect.lookup({ id = 7, state = "completed" }, { unit_no = 1, round = 0, request_sizes = { 1 },
      hashes = { "hx" } }, idx, 3)
    os.execute("rm -rf " .. q(cut_dir))
    local err = lookup.errors.hx.err
    assert.is_nil(err:find(SECRET:sub(1, 10), 1, true), err)
  end)

  it("200 com vetores a menos que entradas: erro permanente para todas as hashes do pedido", function()
    local lookup = collect.lookup(PART, { unit_no = 2, round = 2, request_sizes = { 2 }, hashes = { "h10", "h11" } },
      index, 3)
    assert.is_nil(lookup.vectors.h10)
    for _, h in ipairs({ "h10", "h11" }) do
      assert.are.equal("permanent", lookup.errors[h].info.class, h)
      assert.truthy(lookup.errors[h].err:find("resposta inválida no arquivo de saída do lote", 1, true),
        lookup.errors[h].err)
    end
    assert.are.equal(2, decoded[#decoded].count)
    assert.are.equal(3, decoded[#decoded].dim)
    assert.are.equal(2, UNIT2.round)
  end)

  it("classify: hit (todas com vetor), failed (uma recusada: o grupo dela), defer (alguma sem vetor)", function()
    local lookup = collect.lookup(PART, UNIT1, index, 3)
    assert.are.equal("hit", (collect.classify(lookup, { item("h1", 1), item("h2", 1) })))
    local verdict, group = collect.classify(lookup, { item("h1", 2), item("h6", 2) })
    assert.are.equal("failed", verdict)
    assert.are.equal("h6", group.items[1].chunk.hash)
    assert.are.equal(1, #group.items)
    assert.are.equal("permanent", group.info.class)
    assert.are.equal(1, group.attempts)
    assert.are.equal("defer", (collect.classify(lookup, { item("h1", 3), item("h3", 3) })))
    assert.are.equal("defer", (collect.classify(lookup, { item("h4", 4) })))
    assert.are.equal("defer", (collect.classify(nil, { item("h1", 5) })))
  end)

  it("add_hits: uma parte por linha de resultado, com a linha de cada vetor", function()
    local lookup = collect.lookup(PART, UNIT1, index, 3)
    local parts = {}
    collect.add_hits(parts, { item("h2", 1), item("h1", 1) }, lookup)
    assert.are.equal(1, #parts)
    assert.are.same({ 2, 1 }, parts[1].rows)
    assert.are.equal(lookup.vectors.h1.batch, parts[1].batch)
    assert.are.same({ "h2", "h1" }, { parts[1].items[1].chunk.hash, parts[1].items[2].chunk.hash })
    collect.add_hits(parts, { item("h1", 2) }, lookup)
    assert.are.equal(1, #parts, "o mesmo lote de vetores não abre outra parte")
    assert.are.same({ 2, 1, 1 }, parts[1].rows)
  end)

  it("parte falha ou cancelada: lookup.miss com a classe batch_failed / batch_cancelled", function()
    local failed = collect.lookup({ id = PART.id, state = "failed", batch_id = "batch_f", detail = "o provedor disse: x" },
      UNIT1, index, 3)
    assert.are.equal("batch_failed", failed.miss.class)
    assert.truthy(failed.miss.err:find("o lote batch_f falhou no provedor: o provedor disse: x", 1, true), failed.miss.err)
    local cancelled = collect.lookup({ id = PART.id, state = "cancelled", batch_id = "batch_c" }, UNIT1, index, 3)
    assert.are.equal("batch_cancelled", cancelled.miss.class)
    assert.truthy(cancelled.miss.err:find("ragops failures retry", 1, true), cancelled.miss.err)
    assert.is_nil(collect.lookup({ id = PART.id, state = "expired" }, UNIT1, index, 3).miss)
  end)

  it("missing_group: sem vetor depois dos reenvios (batch_expired), ou a falha do lote", function()
    local items = { item("h3", 1) }
    local g = collect.missing_group({ round = 2 }, items, 3)
    assert.are.equal("batch_expired", g.info.class)
    assert.are.equal(3, g.attempts)
    assert.are.equal(items, g.items)
    assert.truthy(g.err:find("sem vetor depois de 2 reenvio(s)", 1, true), g.err)
    local f = collect.missing_group({ miss = { class = "batch_failed", err = "o lote falhou" } }, items, 1)
    assert.are.same({ class = "batch_failed" }, f.info)
    assert.are.equal("o lote falhou", f.err)
    assert.are.equal(1, f.attempts)
  end)
end)
