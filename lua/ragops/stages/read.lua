-- ragops.stages.read: the first stage. Pages through one source in key
-- order (keyset pagination, filters pushed down by the store) from the
-- checkpoint, PAGE_UNITS units per query, and hands each batch.size rows on
-- as a unit of work:
--   { seq, source, rows, first_key, after_key (exclusive lower bound), last_key,
--     existing, updated_us (stored hashes of its entities and their updated_at
--     in µs, when the store read them with the page) }
-- Units that an interrupted process committed past its checkpoint (the
-- checkpoint's `ahead` list) are not read again: the page is cut where one
-- begins and the reader jumps past it, handing the committed unit to
-- on_committed instead, so a resumed run counts each row once.
local decide = require "ragops.stages.decide"

local M = {}
local key_text = decide.key_text

-- Units of batch.size rows read per query: one round trip (and one plan
-- of the page query) for several units.
M.PAGE_UNITS = 8

-- Index of committed units by the key before them and by their first key.
local function index_ahead(ahead)
  local by_after, by_first = {}, {}
  for _, a in ipairs(ahead or {}) do
    if a.after_key then by_after[a.after_key] = a end
    by_first[a.first_key] = a
  end
  return by_after, by_first
end

-- Where the page must stop because a committed unit starts inside it:
-- returns the number of rows to keep and that unit, or nil.
local function cut_at_committed(rows, key, by_after, by_first)
  for i, row in ipairs(rows) do
    local k = key_text(row[key])
    if by_first[k] then return i - 1, by_first[k] end
    if by_after[k] then return i, by_after[k] end
  end
end

-- A page of source, with the stored hashes of its entities and their
-- updated_at in µs when the store reads them at once (ragops.store_pg):
-- rows, existing|nil, updated_us|nil, or nil, err.
local function fetch(store, source, scope, after, limit, upto)
  if store.fetch_page_existing then return store:fetch_page_existing(source, scope, after, limit, upto) end
  return store:fetch_page(source, scope, after, limit, upto)
end

-- The unit of rows[first..last] (the keys after `after`).
local function unit_of(source, seq, after, rows, first, last)
  local part = {}
  for i = first, last do part[#part + 1] = rows[i] end
  return { seq = seq, source = source, rows = part, after_key = after,
           first_key = key_text(part[1][source.key]), last_key = key_text(part[#part][source.key]) }
end

-- Reads source from cp (checkpoint) and calls emit(unit) for each page and
-- on_committed(unit) for each committed unit jumped over, in key order.
-- opts = { range = { after, upto } | nil }. Returns true when the source was
-- read to its end, false when the run stopped, or nil after an error.
function M.read_source(ctx, source, cp, opts, emit, on_committed)
  local plan, store = ctx.plan, ctx.store
  local size = plan.batch.size
  local range = opts.range
  local after, seq = cp.after, cp.seq or 0
  if range then after = range.after end
  local by_after, by_first = index_ahead(cp.ahead)
  -- Rows this run may still read (--limit, counting a resumed prefix; nil: all).
  local left = plan.limit and math.max(plan.limit - ((cp.stats or {}).processed or 0), 0)
  local function jump(a)
    by_after[a.after_key or ""], by_first[a.first_key] = nil, nil
    seq = seq + 1
    on_committed({ seq = seq, source = source, first_key = a.first_key, after_key = a.after_key,
                   last_key = a.last_key }, a.stats)
    after = a.last_key
  end
  while not ctx.aborted and left ~= 0 do
    local waiting = after and by_after[after]
    if waiting then
      jump(waiting)
    else
      local page = math.min(size * M.PAGE_UNITS, left or math.huge)
      local rows, existing, updated_us = fetch(store, source, plan.scope, after, page, range and range.upto)
      if not rows then
        local err = existing
        ctx:abort(4, ("falha ao ler a fonte %q: %s"):format(source.entity_type, tostring(err)))
        return nil
      end
      if #rows == 0 then return true end
      local keep, committed = cut_at_committed(rows, source.key, by_after, by_first)
      if keep then for i = #rows, keep + 1, -1 do rows[i] = nil end end
      for first = 1, #rows, size do
        if ctx.aborted then return false end
        seq = seq + 1
        local unit = unit_of(source, seq, after, rows, first, math.min(first + size - 1, #rows))
        unit.existing, unit.updated_us = existing, updated_us
        after = unit.last_key
        emit(unit)
      end
      left = left and left - #rows -- at 0 a sanity run stops, not complete
      if committed then jump(committed)
      elseif #rows < page then return true end
    end
  end
  return false
end

return M
