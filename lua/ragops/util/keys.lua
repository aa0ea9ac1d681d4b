-- ragops.util.keys: the text of an entity key, the one form every room
-- compares, stores and logs keys in (ragops_failures, the queue of ragops
-- sync, rag_documents.entity_id): integers without a decimal point, anything
-- else as tostring.
local M = {}

-- The key v as text: 42 -> "42" (not "42.0"), "abc" -> "abc".
function M.text(v)
  if type(v) == "number" and v == math.floor(v) and math.abs(v) < 2^53 then
    return ("%d"):format(v)
  end
  return tostring(v)
end

return M
