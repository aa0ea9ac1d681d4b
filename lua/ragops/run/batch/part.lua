-- ragops.run.batch.part: one part of the Batch API mode on disk, a JSONL
-- file of embeddings requests (one line each, custom_id "<part>-<unit>-<k>")
-- appended unit by unit and kept within the input file's limits (requests,
-- inputs, bytes; the model's queue of enqueued tokens). Lines are streamed
-- to the file as each unit is decided: memory holds one unit's lines. The
-- committed length of the file is the part's file_bytes in the database
-- (ragops.store.batches): reopened after a crash, the file is cut back to
-- it (lines of a unit that did not commit go); a file shorter than it, or
-- gone (another machine), is lost, and the caller rebuilds its units.
local cjson = require "cjson"
local safe_file = require "ragops.util.safe_file"

local M = {}

-- The OpenAI Batch API's limits per input file.
M.MAX_REQUESTS = 50000
M.MAX_INPUTS = 50000
M.MAX_FILE_BYTES = 200 * 1000 * 1000

-- The limits of one part: the provider's (provider.limits.batch_*), else OpenAI's.
function M.limits(provider_limits)
  local l = provider_limits or {}
  return { max_requests = l.batch_max_requests or M.MAX_REQUESTS, max_inputs = l.batch_max_inputs or M.MAX_INPUTS,
           max_file_bytes = l.batch_max_file_bytes or M.MAX_FILE_BYTES, enqueued_tokens = l.batch_enqueued_tokens }
end

-- The custom_id of request k of unit unit_no of part part_id.
function M.custom_id(part_id, unit_no, k)
  return ("%d-%d-%d"):format(part_id, unit_no, k)
end

-- custom_id -> part id, unit number, request number (or nil).
function M.parse_custom_id(id)
  local p, u, k = tostring(id):match("^(%d+)%-(%d+)%-(%d+)$")
  if not p then return nil end
  return tonumber(p), tonumber(u), tonumber(k)
end

local Part = {}
Part.__index = Part

-- Opens the file of part row (from ragops.store.batches) in dir for
-- appending (0600, never through a link): a new part's is created; one
-- with committed lines is cut back to file_bytes. Returns the part, or nil,
-- pt-BR reason, "lost" (the file is gone or shorter than what was
-- committed) | "not_regular" | "io".
function M.open(dir, row, limits)
  local path = dir .. "/" .. row.file_name
  local size = safe_file.size(path)
  if row.file_bytes > 0 and (not size or size < row.file_bytes) then
    return nil, ("o arquivo da parte %s não está nesta máquina (ou está incompleto)"):format(row.file_name), "lost"
  end
  local file, err, kind = safe_file.appender(path, row.file_bytes)
  if not file then return nil, err, kind end
  return setmetatable({ row = row, id = row.id, path = path, file = file, limits = limits,
    bytes = row.file_bytes, requests = row.requests, inputs = row.inputs, tokens = row.tokens_est }, Part)
end

-- Whether lines (M.lines' result) fit beside what the part holds.
function Part:fits(lines)
  local l = self.limits
  if self.requests + lines.requests > l.max_requests or self.inputs + lines.inputs > l.max_inputs then return false end
  if self.bytes + #lines.text > l.max_file_bytes then return false end
  return not (l.enqueued_tokens and self.tokens + lines.tokens > l.enqueued_tokens)
end

-- Whether lines would not fit even in an empty part.
function M.too_big(lines, limits)
  return lines.requests > limits.max_requests or lines.inputs > limits.max_inputs
    or #lines.text > limits.max_file_bytes or (limits.enqueued_tokens ~= nil and lines.tokens > limits.enqueued_tokens)
end

-- Appends lines; returns the file's length after them, or nil, reason.
function Part:append(lines)
  local ok, err = self.file:write(lines.text)
  if not ok then return nil, err end
  self.bytes = self.bytes + #lines.text
  self.requests, self.inputs = self.requests + lines.requests, self.inputs + lines.inputs
  self.tokens = self.tokens + lines.tokens
  return self.bytes
end

function Part:close()
  if self.file then self.file:close(); self.file = nil end
end

-- The lines of one unit's requests: slices = { { item... } } (the items of
-- ragops.run.stages.decide, each with text and chunk.hash); body = the
-- fixed members of every request's body (model, dimensions) and the route
-- batches run against (url). Returns
-- { text, requests, inputs, tokens, hashes = { per input }, sizes = { per request } }.
function M.lines(part_id, unit_no, slices, body, tokens_per_byte)
  local out, hashes, sizes, inputs, tokens = {}, {}, {}, 0, 0
  for k, slice in ipairs(slices) do
    local texts = {}
    for i, it in ipairs(slice) do
      texts[i] = it.text
      hashes[#hashes + 1] = it.chunk.hash
      tokens = tokens + math.ceil(#it.text * tokens_per_byte)
    end
    inputs = inputs + #slice
    sizes[k] = #slice
    local request = { model = body.model, input = texts, encoding_format = "base64", dimensions = body.dimensions }
    out[k] = cjson.encode({ custom_id = M.custom_id(part_id, unit_no, k), method = "POST",
                            url = body.url or "/v1/embeddings", body = request })
  end
  out[#out + 1] = ""
  return { text = table.concat(out, "\n"), requests = #slices, inputs = inputs, tokens = tokens,
           hashes = hashes, sizes = sizes }
end

return M
