-- ragops.provider.requests: forms the requests of a list of inputs within
-- the provider's limits (ragops.provider.dialects.limits): at most
-- batch_size and max_inputs inputs, and at most max_request_tokens
-- estimated tokens, per request; an input estimated over max_input_tokens
-- is set aside (a dead letter named as such), unless the operator lets the
-- provider truncate it (limits.truncate). Pure: no I/O.
--
-- Estimates: an input's tokens are its bytes times the model's tokens per
-- byte (provider.tokens_per_byte, else 0.25). A request cap the provider
-- counts as bytes/4 (request_tokens = "bytes", OpenAI) is checked with
-- exactly that; one counted by the provider's tokenizer is filled to
-- TOKENIZER_MARGIN of the cap.
local M = {}

M.TOKENIZER_MARGIN = 0.9

-- UTF-8 characters of text (bytes that do not continue a sequence): in C
-- inside the engine (the gsub was ~8% of the Lua time of a cold backfill),
-- the same count in Lua where the engine is absent (busted).
local has_core, core = pcall(require, "ragops.core")
M.utf8_length = has_core and core.utf8_length or function(text)
  local _, continuation = text:gsub("[\128-\191]", "")
  return #text - continuation
end

-- Adds one input the provider embedded to delta: its bytes, UTF-8
-- characters and squared bytes (against the tokens billed they calibrate
-- the dry-run's estimates; see ragops.run.dryrun). The online and the
-- batch path both count through here.
function M.add_sent(delta, text)
  local n = #text
  delta.bytes = delta.bytes + n
  delta.chars = delta.chars + M.utf8_length(text)
  delta.bytes_sq = delta.bytes_sq + n * n
end

-- Estimated tokens of one input of n bytes.
function M.input_tokens(n, tokens_per_byte)
  return math.ceil(n * tokens_per_byte)
end

-- The request cap in estimated tokens, and the estimate of one input of
-- n bytes against it.
local function request_rule(limits, tokens_per_byte)
  local cap = limits.max_request_tokens
  if limits.request_tokens == "bytes" then
    return cap, function(n) return math.ceil(n / 4) end
  end
  return cap and math.floor(cap * M.TOKENIZER_MARGIN),
    function(n) return M.input_tokens(n, tokens_per_byte) end
end

-- Splits items (text_of(item) gives its text) into requests. Returns
-- slices (lists of items, in order), too_long ({ item, tokens } each) and
-- how many inputs over max_input_tokens go anyway (limits.truncate).
function M.form(items, text_of, limits, batch_size, tokens_per_byte)
  local max_count = math.min(batch_size, limits.max_inputs or batch_size)
  local cap, request_tokens = request_rule(limits, tokens_per_byte)
  local per_input = limits.max_input_tokens
  local slices, too_long, current, used, truncated = {}, {}, {}, 0, 0
  for _, item in ipairs(items) do
    local n = #text_of(item)
    local tokens = M.input_tokens(n, tokens_per_byte)
    local over = per_input and tokens > per_input
    if over and not limits.truncate then
      too_long[#too_long + 1] = { item = item, tokens = tokens }
    else
      if over then truncated = truncated + 1 end
      local cost = request_tokens(n)
      if #current > 0 and (#current >= max_count or (cap and used + cost > cap)) then
        slices[#slices + 1], current, used = current, {}, 0
      end
      current[#current + 1], used = item, used + cost
    end
  end
  if #current > 0 then slices[#slices + 1] = current end
  return slices, too_long, truncated
end

return M
