-- ragops.obs.progress: how a run's progress shows, from the runner's snapshot
-- (env.progress_snapshot(): processed, total?, succeeded, skipped,
-- no_document?, failed, retries, elapsed_s, concurrency? (the effective
-- one: the limiter's window within the plan's in_flight), in_flight?,
-- spend_usd?). On a terminal,
-- one pt-BR line redrawn in place on stderr (log lines clear it first, the
-- next tick draws it again); without one, a log line per tick, with the
-- numbers as fields in JSON logs. Never both. Each tick also samples the
-- run's throughput over time (the series of the HTML report).
local format = require "ragops.util.format"

local M = {}

-- Samples kept in the series; past it, every other one is dropped (the
-- series of a long run keeps its shape with half the resolution).
M.SERIES_MAX = 240

local CLEAR_LINE = "\r\27[K"

-- Documents per second so far (0 before any time passed).
local function rate(snap)
  local elapsed = snap.elapsed_s or 0
  return elapsed > 0 and (snap.processed or 0) / elapsed or 0
end

-- Seconds left at the current rate, or nil (total unknown, or no rate yet).
function M.eta_s(snap)
  local r = rate(snap)
  if not snap.total or r <= 0 then return nil end
  return math.max(snap.total - (snap.processed or 0), 0) / r
end

-- The pt-BR progress text (the same on a terminal and in the log).
function M.format(snap)
  local f = format
  local done = f.format_count(snap.processed)
  if snap.total then done = done .. "/" .. f.format_count(snap.total) end
  local eta = M.eta_s(snap)
  local no_document = (snap.no_document or 0) > 0
    and (", " .. f.format_count(snap.no_document) .. " sem documento") or ""
  return ("progresso: %s processados, %s gravados, %s inalterados%s, %s falhas, %s novas tentativas "
    .. "(%s docs/s%s)%s%s"):format(done, f.format_count(snap.succeeded), f.format_count(snap.skipped),
    no_document, f.format_count(snap.failed), f.format_count(snap.retries), f.format_number(rate(snap), 1),
    eta and (", faltam cerca de " .. f.format_duration(eta)) or "",
    snap.concurrency and (", concorrência " .. f.format_count(snap.concurrency)) or "",
    snap.spend_usd and (", gasto US$ " .. f.format_number(snap.spend_usd, 4)) or "")
end

-- The numbers of a snapshot as log fields (JSON logs).
function M.fields(snap)
  return { processed = snap.processed, total = snap.total, succeeded = snap.succeeded,
           skipped = snap.skipped, no_document = snap.no_document, failed = snap.failed, retries = snap.retries,
           elapsed_s = snap.elapsed_s, docs_per_s = rate(snap), eta_s = M.eta_s(snap),
           concurrency = snap.concurrency, in_flight = snap.in_flight, spend_usd = snap.spend_usd }
end

-- Adds one sample of snap to series (bounded by M.SERIES_MAX).
function M.sample(series, snap)
  series[#series + 1] = { t = snap.elapsed_s or 0, processed = snap.processed or 0,
                          failed = snap.failed or 0, retries = snap.retries or 0 }
  if #series > M.SERIES_MAX then
    local kept = {}
    for i = 1, #series, 2 do kept[#kept + 1] = series[i] end
    if kept[#kept] ~= series[#series] then kept[#kept + 1] = series[#series] end
    for i = 1, #series do series[i] = kept[i] end
  end
end

-- The counters whose change makes a follower log a new line: what it
-- wrote, failed or retried (it re-reads the watermark's overlap on every
-- pass: those rows, counted as skipped, are not news).
local FOLLOWER_COUNTERS = { "succeeded", "failed", "retries" }

-- True when snap differs from last (nil: nothing logged yet, all zero) in
-- the follower's counters.
local function changed(last, snap)
  last = last or {}
  for _, key in ipairs(FOLLOWER_COUNTERS) do
    if (last[key] or 0) ~= (snap[key] or 0) then return true end
  end
  return false
end

-- A renderer: { tick(snap), finish(snap?), series }. opts: log (ragops.obs.log),
-- tty (true: redraw on opts.stream, default io.stderr), follower (true: a
-- `ragops sync`). Without a terminal a run logs every tick (the line is its
-- heartbeat while every worker waits on the provider); a follower only
-- when it did something since its last line: idle, it says nothing.
function M.new(opts)
  local log, stream = opts.log, opts.stream or io.stderr
  local self = { series = { { t = 0, processed = 0, failed = 0, retries = 0 } } }
  local drawn = false
  if opts.tty then
    -- Every log line first clears the progress line (it comes back next tick).
    local sink = log.sink
    log.sink = { write = function(_, ...)
      if drawn then stream:write(CLEAR_LINE); drawn = false end
      return sink:write(...)
    end }
    self.restore = function() log.sink = sink end
  end
  local last_logged
  function self.tick(snap)
    M.sample(self.series, snap)
    if opts.tty then
      stream:write(CLEAR_LINE, M.format(snap))
      stream:flush()
      drawn = true
    elseif not opts.follower or changed(last_logged, snap) then
      last_logged = snap
      log.event("info", M.fields(snap), "%s", M.format(snap))
    end
  end
  -- The last sample, the progress line cleared and the log sink restored.
  function self.finish(snap)
    if snap then M.sample(self.series, snap) end
    if drawn then stream:write(CLEAR_LINE); drawn = false end
    if self.restore then self.restore() end
  end
  return self
end

return M
