-- ragops.plan.chunk: splits a document's text into chunks of at most max_chars
-- UTF-8 code points, preferring sentence/line/word boundaries, with a
-- configurable overlap between consecutive chunks; and fits a plan's
-- chunking to the provider (M.fit): sizes in tokens become characters, and
-- a chunk size the model cannot take is refused before anything runs.

local M = {}

-- Splits `text` into an array of code points (strings). Bytes that are not
-- part of a valid UTF-8 sequence become one "character" each, so a cut can
-- never fall inside a valid multibyte sequence.
local function code_points(text)
  local chars = {}
  local offsets = {}
  local count = 0
  local i, n = 1, #text
  while i <= n do
    local byte = text:byte(i)
    local length = 1
    if byte >= 0xC2 and byte <= 0xDF then
      length = 2
    elseif byte >= 0xE0 and byte <= 0xEF then
      length = 3
    elseif byte >= 0xF0 and byte <= 0xF4 then
      length = 4
    end
    if length > 1 then
      -- Check continuation bytes; fall back to a single byte otherwise.
      for k = 1, length - 1 do
        local cont = text:byte(i + k)
        if not cont or cont < 0x80 or cont > 0xBF then
          length = 1
          break
        end
      end
    end
    count = count + 1
    chars[count] = text:sub(i, i + length - 1)
    offsets[count] = i
    i = i + length
  end
  return chars, count, offsets
end
M.code_points = code_points

local WHITESPACE = { [" "] = true, ["\t"] = true, ["\n"] = true, ["\r"] = true, ["\f"] = true, ["\v"] = true }
local SENTENCE_END = { ["."] = true, ["!"] = true, ["?"] = true, [";"] = true, [":"] = true }

local function is_space(char)
  return WHITESPACE[char] == true
end

-- True when chars[p] is a whitespace right after a word (a word end).
local function is_word_end(chars, p)
  return is_space(chars[p]) and p > 1 and not is_space(chars[p - 1])
end

-- True when the word end at p also ends a sentence or a line.
local function is_sentence_boundary(chars, p)
  if SENTENCE_END[chars[p - 1]] then return true end
  for k = p, p + 3 do
    local char = chars[k]
    if char == "\n" then return true end
    if not is_space(char) then return false end
  end
  return false
end

-- Last index <= e that is not whitespace (>= start), or start - 1.
local function trim_end(chars, start, e)
  while e >= start and is_space(chars[e]) do e = e - 1 end
  return e
end

-- Chooses where the chunk starting at `start` ends (inclusive index). The
-- end must be after `min_end` (the previous cut), so no chunk is contained
-- in the one before it.
local function choose_end(chars, start, max_chars, min_end)
  local limit = start + max_chars - 1
  local lowest = math.max(start + math.floor(max_chars / 2), min_end + 1) + 1
  local last_word_end
  -- A whitespace at limit + 1 still allows a full-length chunk.
  for p = limit + 1, lowest, -1 do
    if is_word_end(chars, p) then
      if is_sentence_boundary(chars, p) then return p - 1 end
      last_word_end = last_word_end or p
    end
  end
  if last_word_end then return last_word_end - 1 end
  return limit
end

-- Where the next chunk starts, `overlap` code points before the cut, aligned
-- to a word start when possible; always > start (guaranteed progress).
local function choose_next_start(chars, count, start, cut_end, overlap)
  local next_start = cut_end + 1 - overlap
  if overlap > 0 and next_start > 1 and not is_space(chars[next_start - 1])
      and not is_space(chars[next_start]) then
    -- Inside a word: move forward to the next word start if that keeps some
    -- overlap, else back to the start of this word.
    local forward = next_start
    while forward <= cut_end and not is_space(chars[forward]) do forward = forward + 1 end
    while forward <= cut_end and is_space(chars[forward]) do forward = forward + 1 end
    if forward <= cut_end then
      next_start = forward
    else
      local backward = next_start
      while backward > start + 1 and not is_space(chars[backward - 1]) do backward = backward - 1 end
      if backward > start and not is_space(chars[backward - 1]) then
        -- No word start after `start`: keep the plain character offset.
        backward = next_start
      end
      next_start = backward
    end
  end
  if next_start <= start then next_start = start + 1 end
  while next_start <= count and is_space(chars[next_start]) do next_start = next_start + 1 end
  return next_start
end

-- Like split, but also returns the byte range of each chunk in `text`:
-- an array of { text = chunk, first = byte, last = byte }.
function M.split_ranges(text, max_chars, overlap)
  if type(text) ~= "string" then
    error("chunk.split: text deve ser um texto (string), recebido " .. type(text), 2)
  end
  if type(max_chars) ~= "number" or max_chars ~= math.floor(max_chars) or max_chars < 1 then
    error("chunk.split: max_chars deve ser um inteiro maior ou igual a 1", 2)
  end
  overlap = overlap or 0
  if type(overlap) ~= "number" or overlap ~= math.floor(overlap) or overlap < 0 or overlap >= max_chars then
    error("chunk.split: overlap deve ser um inteiro entre 0 e max_chars - 1", 2)
  end
  if not text:find("%S") then return {} end
  -- Fast path (most documents): no more bytes than max_chars means no more
  -- code points either, so the text is one chunk (no per-character table).
  if #text <= max_chars then return { { text = text, first = 1, last = #text } } end
  local chars, count, offsets = code_points(text)
  if count <= max_chars then return { { text = text, first = 1, last = #text } } end

  local ranges = {}
  local function emit(first, last)
    ranges[#ranges + 1] = {
      text = table.concat(chars, "", first, last),
      first = offsets[first],
      last = offsets[last] + #chars[last] - 1,
    }
  end
  local start = 1
  local previous_cut = 0  -- last index covered by the previous chunk
  while start <= count and is_space(chars[start]) do start = start + 1 end
  while start <= count do
    local cut_end
    if count - start + 1 <= max_chars then
      cut_end = count
    else
      cut_end = choose_end(chars, start, max_chars, previous_cut)
    end
    local last = trim_end(chars, start, cut_end)
    -- Skip a chunk that would add nothing beyond the previous one.
    if last > previous_cut then
      emit(start, last)
      previous_cut = last
    end
    if cut_end == count then break end
    start = choose_next_start(chars, count, start, cut_end, overlap)
  end
  return ranges
end

-- Splits `text` into chunks of at most `max_chars` code points.
-- Returns an array of strings (empty for a blank text).
function M.split(text, max_chars, overlap)
  local ok, ranges = pcall(M.split_ranges, text, max_chars, overlap)
  if not ok then error(ranges, 2) end
  local chunks = {}
  for i, range in ipairs(ranges) do chunks[i] = range.text end
  return chunks
end

-- Fits chunking (a validated plan's, changed in place) to the provider
-- (the configuration's section) and its limits (ragops.provider.dialects):
-- max_tokens/overlap_tokens become max_chars/overlap at the model's tokens
-- per byte (a character counted as one byte); then a chunk of max_chars
-- must fit the per-input limit, unless the provider truncates. Returns
-- true, or nil and the pt-BR reason (the operator's to fix: exit 2).
function M.fit(chunking, provider, limits, tokens_per_byte)
  if chunking.max_tokens then
    chunking.max_chars = math.max(1, math.floor(chunking.max_tokens / tokens_per_byte))
    chunking.overlap = math.min(math.floor(chunking.overlap_tokens / tokens_per_byte), chunking.max_chars - 1)
  end
  local limit = limits.max_input_tokens
  local estimate = math.ceil(chunking.max_chars * tokens_per_byte)
  if not limit or limits.truncate or estimate <= limit then return true end
  local what = chunking.max_tokens and ("chunking.max_tokens = %d"):format(chunking.max_tokens)
    or ("chunking.max_chars = %d"):format(chunking.max_chars)
  return nil, ("%s permite trechos de cerca de %d tokens estimados (%s token por byte, um byte por caractere), "
    .. "acima do limite por entrada do provedor %s com o modelo %s: %d tokens (provider.limits.max_input_tokens). "
    .. "Use chunking.max_chars até %d ou chunking.max_tokens até %d, ou deixe o provedor truncar "
    .. "(provider.truncate = true)"):format(what, estimate, tostring(tokens_per_byte):gsub("%.", ","), provider.api,
      provider.model, limit, math.floor(limit / tokens_per_byte), limit)
end

return M
