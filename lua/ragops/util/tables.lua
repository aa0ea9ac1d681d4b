-- ragops.util.tables: the table helpers every room wrote for itself: the
-- keys of a table in a stable order, a shallow copy, and counters added up
-- per key.
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

-- Adds the numbers of stats into per[key] (created when absent); other
-- values are ignored. Returns per[key].
function M.add_numbers_into(per, key, stats)
  local into = per[key] or {}
  for k, v in pairs(stats or {}) do
    if type(v) == "number" then into[k] = (into[k] or 0) + v end
  end
  per[key] = into
  return into
end

return M
