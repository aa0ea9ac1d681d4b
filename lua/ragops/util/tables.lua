-- ragops.util.tables: the two table helpers every room wrote for itself:
-- the keys of a table in a stable order, and a shallow copy.
local M = {}

-- The keys of t (nil: none), sorted by their text (numbers and strings mix).
function M.sorted_keys(t)
  local keys = {}
  for k in pairs(t or {}) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  return keys
end

-- A new table with t's keys and values (one level).
function M.shallow_copy(t)
  local out = {}
  for k, v in pairs(t) do out[k] = v end
  return out
end

return M
