-- chunk_spec.lua: chunk.split properties over many generated texts.

local chunk = require "ragops.plan.chunk"

-- Strict UTF-8 validity check (no overlongs, no surrogates).
local function valid_utf8(text)
  local i, n = 1, #text
  while i <= n do
    local b = text:byte(i)
    local length, low, high = 1, 0x80, 0xBF
    if b < 0x80 then
      length = 1
    elseif b >= 0xC2 and b <= 0xDF then
      length = 2
    elseif b >= 0xE0 and b <= 0xEF then
      length = 3
      if b == 0xE0 then low = 0xA0 elseif b == 0xED then high = 0x9F end
    elseif b >= 0xF0 and b <= 0xF4 then
      length = 4
      if b == 0xF0 then low = 0x90 elseif b == 0xF4 then high = 0x8F end
    else
      return false
    end
    for k = 1, length - 1 do
      local c = text:byte(i + k)
      if not c then return false end
      if k == 1 then
        if c < low or c > high then return false end
      elseif c < 0x80 or c > 0xBF then
        return false
      end
    end
    i = i + length
  end
  return true
end

local function utf8_len(text)
  local _, count = text:gsub("[^\128-\191]", "")
  return count
end

-- Deterministic pseudo-random generator (LCG), independent of math.random.
local function rng(seed)
  local state = seed
  return function(n)
    state = (state * 1103515245 + 12345) % 2147483648
    return state % n + 1
  end
end

local WORDS = { "ação", "é", "pão", "coração", "não", "você", "informação", "João", "maçã", "avó",
                "o", "a", "de", "que", "e", "para", "com", "uma", "Gênesis", "versículo", "𝄞música",
                "supercalifragilisticexpialidocious", "x", "palavra-composta", "São", "Paulo" }
local SEPARATORS = { " ", " ", " ", " ", ". ", ", ", "\n", "\n\n", "! ", "  ", "\t", "? " }

local function generate(next_int, words)
  local parts = {}
  for i = 1, words do
    parts[#parts + 1] = WORDS[next_int(#WORDS)]
    if next_int(40) == 1 then
      parts[#parts + 1] = string.rep("ç", next_int(300)) -- a very long "word"
    end
    parts[#parts + 1] = SEPARATORS[next_int(#SEPARATORS)]
  end
  return table.concat(parts)
end

-- Checks the chunk properties (fails via assert). Uses split_ranges so the
-- position of every chunk is exact even in repetitive text, and checks
-- that split returns the same strings.
-- Plain assertions for the hot loop (luassert is slow over ~10^5 checks).
local function expect(condition, message)
  if not condition then error(message or "propriedade violada", 2) end
end

local function expect_nil(value, message)
  if value ~= nil then error(message or "esperado nil", 2) end
end

local function check_properties(text, max_chars, overlap)
  local ranges = chunk.split_ranges(text, max_chars, overlap)
  local chunks = chunk.split(text, max_chars, overlap)
  expect(#chunks >= 1)
  expect(#ranges == #chunks, "contagens divergem")
  local previous
  for index, range in ipairs(ranges) do
    local piece = chunks[index]
    expect(range.text == piece, "split e split_ranges divergem")
    expect(text:sub(range.first, range.last) == piece, "posição não corresponde ao texto")
    expect(#piece > 0, "chunk vazio")
    expect(utf8_len(piece) <= max_chars, "chunk maior que max_chars")
    expect(valid_utf8(piece), "UTF-8 inválido")
    if #chunks > 1 then
      expect_nil(piece:match("^%s"), "espaço no início")
      expect_nil(piece:match("%s$"), "espaço no fim")
    end
    if previous then
      -- In order, always progressing, and no gap other than whitespace.
      expect(range.first > previous.first, "chunk fora de ordem")
      expect(range.last > previous.last, "chunk não avança")
      expect_nil(text:sub(previous.last + 1, range.first - 1):find("%S"), "lacuna entre chunks")
      -- Overlap present whenever requested and the previous chunk was long
      -- enough to leave room for it.
      if overlap > 0 and utf8_len(previous.text) > overlap then
        expect(range.first <= previous.last, "sem sobreposição")
      end
    else
      expect_nil(text:sub(1, range.first - 1):find("%S"), "início não coberto")
    end
    previous = range
  end
  expect_nil(text:sub(previous.last + 1):find("%S"), "fim do texto não coberto")
  return chunks
end

describe("chunk.split", function()
  it("returns the input unchanged when it fits", function()
    assert.same({ "ação é pão" }, chunk.split("ação é pão", 10, 2))
    assert.same({ "  olá  " }, chunk.split("  olá  ", 100, 10))
  end)

  it("returns no chunk for blank text", function()
    assert.same({}, chunk.split("", 100, 10))
    assert.same({}, chunk.split(" \n\t ", 100, 10))
  end)

  it("counts code points, not bytes", function()
    local text = string.rep("ã", 100) -- 200 bytes, 100 code points
    assert.same({ text }, chunk.split(text, 100, 0))
    local pieces = chunk.split(string.rep("ã", 101), 100, 0)
    assert.same({ string.rep("ã", 100), "ã" }, pieces)
  end)

  it("cuts at a sentence boundary in the second half of the window", function()
    local text = "Primeira frase curta aqui. Segunda frase que continua bastante"
    local pieces = chunk.split(text, 40, 0)
    assert.equal("Primeira frase curta aqui.", pieces[1])
    assert.equal("Segunda frase que continua bastante", pieces[2])
  end)

  it("prefers a line break over a later plain space", function()
    local text = "linha um com palavras\nlinha dois com mais palavras aqui"
    local pieces = chunk.split(text, 30, 0)
    assert.equal("linha um com palavras", pieces[1])
  end)

  it("hard-cuts a word longer than max_chars without breaking UTF-8", function()
    local text = string.rep("ç", 250)
    local pieces = chunk.split(text, 100, 0)
    assert.same({ string.rep("ç", 100), string.rep("ç", 100), string.rep("ç", 50) }, pieces)
  end)

  it("starts the next chunk overlap characters before the cut, at a word start", function()
    local text = "alfa beta gama delta épsilon zeta eta teta iota capa lambda mi ni"
    local pieces = chunk.split(text, 30, 10)
    assert.equal("alfa beta gama delta épsilon", pieces[1])
    -- 10 code points before the cut is inside "delta": moves to "épsilon"
    assert.equal("épsilon zeta eta teta iota", pieces[2])
  end)

  it("is deterministic", function()
    local text = generate(rng(7), 500)
    assert.same(chunk.split(text, 200, 40), chunk.split(text, 200, 40))
  end)

  it("always progresses, even with overlap close to max_chars", function()
    local text = generate(rng(3), 300)
    local pieces = chunk.split(text, 10, 9)
    assert.is_true(#pieces < utf8_len(text) + 1)
    check_properties(text, 10, 9)
  end)

  it("keeps invalid bytes without looping", function()
    local text = string.rep("ab\255cd ", 60)
    local pieces = chunk.split(text, 50, 5)
    assert.is_true(#pieces > 1)
    for _, piece in ipairs(pieces) do assert.is_true(utf8_len(piece) <= 50) end
  end)

  it("holds its properties over many generated texts", function()
    local next_int = rng(20240601)
    local settings = { { 100, 0 }, { 100, 20 }, { 120, 60 }, { 2000, 200 }, { 37, 36 }, { 1, 0 }, { 5, 2 } }
    local checked = 0
    for round = 1, 150 do
      local text = generate(next_int, next_int(400))
      local setting = settings[(round % #settings) + 1]
      check_properties(text, setting[1], setting[2])
      checked = checked + 1
    end
    assert.equal(150, checked)
  end)

  it("rejects misuse", function()
    assert.has_error(function() chunk.split(nil, 100, 10) end)
    assert.has_error(function() chunk.split("x", 0, 0) end)
    assert.has_error(function() chunk.split("x", 100, 100) end)
    assert.has_error(function() chunk.split("x", 100, -1) end)
  end)
end)
