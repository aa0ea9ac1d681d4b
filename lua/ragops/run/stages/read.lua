-- ragops.run.stages.read: the first stage. Pages through one source in key
-- order (keyset pagination, filters pushed down by the store) from the
-- checkpoint, PAGE_UNITS units per query, and hands each batch.size rows on
-- as a unit of work:
--   { seq, source, rows, row_count, fingerprint_skipped, first_key,
--     after_key (exclusive lower bound), last_key,
--     existing, updated_us, fps (stored hashes of its entities, their
--     updated_at in µs and their rows' fingerprints, when the store read
--     them with the page) }
-- A row whose fingerprint the target holds (the same row, indexed by the
-- same plan) is counted in row_count and fingerprint_skipped, not in rows: it
-- never reaches decide.
-- Units that an interrupted process committed past its checkpoint (the
-- checkpoint's `ahead` list) are not read again: the page is cut where one
-- begins and the reader jumps past it, handing the committed unit to
-- on_committed instead, so a resumed run counts each row once.
local decide = require "ragops.run.stages.decide"
local sched = require "ragops.util.sched"

local M = {}
local key_text = decide.key_text

-- Units of batch.size rows read per query: one round trip (and one plan
-- of the page query) for several units.
M.PAGE_UNITS = 8
-- In a re-run (the target holds fingerprints of this source), where most
-- rows are skipped as keys: fewer, larger pages.
M.FAST_PAGE_UNITS = 32

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
    local k = key_text(M.row_key(row, key))
    if by_first[k] then return i - 1, by_first[k] end
    if by_after[k] then return i, by_after[k] end
  end
end

-- The key of a page row: conn:query_page (engine/pg_rows.h) hands a row
-- skipped as unchanged as its key value alone, not a table.
function M.row_key(row, key)
  if type(row) == "table" then return row[key] end
  return row
end
local row_key = M.row_key

-- A page of source, with what the store read with it (Store
-- fetch_page_existing, ragops.store.contract: stored hashes, updated_at in
-- µs, fingerprints): rows, existing|nil, updated_us|nil, fps|nil, full (the
-- page had `limit` rows: more may follow), or nil, err, sqlstate. In a re-run with the target's
-- fingerprints (ctx.fingerprints[entity_type], see ragops.run.pipeline) the page is
-- plain, its unchanged rows as their keys alone; where some row is not,
-- and the target held this entity type when the run began, what the target
-- holds for those rows' entities is read by id (and the page comes without
-- updated_at in µs: a re-run's new rows go through the upsert).
local function fetch(ctx, source, after, limit, upto)
  local store, scope = ctx.store, ctx.plan.scope
  local fingerprints = ctx.fingerprints[source.entity_type]
  if not fingerprints then
    local seed = ctx.fingerprint_seed and ctx.fingerprint_seed(source)
    local rows, existing, updated_us, fps = store:fetch_page_existing(source, scope, after, limit, upto,
      seed and { seed = seed } or nil)
    return rows, existing, updated_us, fps, rows and #rows == limit
  end
  local rows, existing, updated_us, fps = store:fetch_page_existing(source, scope, after, limit, upto,
    { seed = fingerprints.seed, set = fingerprints.set, without_stored = true,
      target_empty = fingerprints.stored == 0 })
  if not rows then return nil, existing, updated_us end
  local full = #rows == limit
  if #rows == 0 or fingerprints.stored == 0 or rows.skipped == #rows then return rows, existing, updated_us, fps, full end
  local ids, updated_at = {}, {}
  for _, r in ipairs(rows) do
    if type(r) == "table" then
      ids[#ids + 1] = key_text(r[source.key])
      local u = source.updated_at and r[source.updated_at]
      updated_at[#ids] = u ~= nil and tostring(u) or ""
    end
  end
  local ok, err, state = store:add_stored(source.entity_type, ids, existing, updated_at)
  if not ok then return nil, err, state end
  return rows, existing, updated_us, fps, full
end

-- The unit of rows[first..last] (the keys after `after`); rows skipped as
-- unchanged count in it but are not among its rows.
local function unit_of(source, seq, after, rows, first, last)
  local part = {}
  for i = first, last do
    if type(rows[i]) == "table" then part[#part + 1] = rows[i] end
  end
  return { seq = seq, source = source, rows = part, after_key = after, row_count = last - first + 1,
           fingerprint_skipped = last - first + 1 - #part,
           first_key = key_text(row_key(rows[first], source.key)),
           last_key = key_text(row_key(rows[last], source.key)) }
end

-- Where the unit starting at rows[first] ends: batch.size rows, or, from a
-- row skipped as unchanged, every skipped row that follows it (a unit that
-- writes nothing: one trip through the stages for the whole run of them).
local function unit_end(rows, first, size)
  if type(rows[first]) == "table" then return math.min(first + size - 1, #rows) end
  local last = first
  while last < #rows and type(rows[last + 1]) ~= "table" do last = last + 1 end
  return last
end

-- Hands the page's rows on as units, in order; page = { seq, after (the
-- last seq and key before them), fingerprinted, existing, updated_us, fps }.
-- Returns the seq and key of the last unit, or nil when the run stopped.
local function emit_units(ctx, source, rows, page, emit)
  local seq, after, first = page.seq, page.after, 1
  while first <= #rows do
    if ctx.aborted then return nil end
    seq = seq + 1
    local last = unit_end(rows, first, ctx.plan.batch.size)
    local unit = unit_of(source, seq, after, rows, first, last)
    unit.existing, unit.updated_us, unit.fps = page.existing, page.updated_us, page.fps
    unit.fingerprinted = page.fingerprinted
    after = unit.last_key
    emit(unit)
    first = last + 1
  end
  return seq, after
end

-- Reads source from cp (checkpoint) and calls emit(unit) for each page and
-- on_committed(unit) for each committed unit jumped over, in key order.
-- opts = { range = { after, upto } | nil }. Returns true when the source was
-- read to its end, false when the run stopped, or nil after an error.
-- While a full page is handed on, the next one is already being read.
function M.read_source(ctx, source, cp, opts, emit, on_committed)
  local plan = ctx.plan
  local size = plan.batch.size
  local range = opts.range
  local upto = range and range.upto
  local after, seq = cp.after, cp.seq or 0
  if range then after = range.after end
  local by_after, by_first = index_ahead(cp.ahead)
  local fingerprints = ctx.fingerprints[source.entity_type]
  local fingerprinted = fingerprints ~= nil
  local units = fingerprinted and fingerprints.stored > 0 and M.FAST_PAGE_UNITS or M.PAGE_UNITS
  -- Rows this run may still read (--limit, counting a resumed prefix; nil: all).
  local left = plan.limit and math.max(plan.limit - ((cp.stats or {}).processed or 0), 0)
  local ahead -- { after, page, future }: the next page, read while this one is handed on
  local function page_size(rows_left) return math.min(size * units, rows_left or math.huge) end
  local function read_page(after_key, page)
    local a = ahead
    ahead = nil
    if a and a.after == after_key and a.page == page then return a.future:get() end
    if a then a.future:get() end
    return fetch(ctx, source, after_key, page, upto)
  end
  local function done(result)
    if ahead then ahead.future:get(); ahead = nil end -- its query ends before the run does
    return result
  end
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
      local rows, existing, updated_us, fps, full = read_page(after, page_size(left))
      if not rows then
        local err, state = existing, updated_us
        ctx:abort_db(("falha ao ler a fonte %q"):format(source.entity_type), err, state)
        return done(nil)
      end
      if #rows == 0 then return done(true) end
      local keep, committed = cut_at_committed(rows, source.key, by_after, by_first)
      if keep then for i = #rows, keep + 1, -1 do rows[i] = nil end end
      local next_left, last = left and left - #rows, key_text(row_key(rows[#rows], source.key))
      if full and not keep and not by_after[last] and next_left ~= 0 then
        local page = page_size(next_left)
        ahead = { after = last, page = page,
                  future = sched.future(ctx.sched, fetch, ctx, source, last, page, upto) }
      end
      local page_info = { seq = seq, after = after, fingerprinted = fingerprinted, existing = existing,
                          updated_us = updated_us, fps = fps }
      seq, after = emit_units(ctx, source, rows, page_info, emit)
      if not seq then return done(false) end
      left = next_left -- at 0 a sanity run stops, not complete
      if committed then jump(committed)
      elseif not full then return done(true) end
    end
  end
  return done(false)
end

return M
