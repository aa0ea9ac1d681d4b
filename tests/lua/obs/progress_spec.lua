-- progress_spec.lua: ragops.obs.progress: the pt-BR line (done/total, docs/s,
-- ETA, failures, retries, concurrency), the terminal renderer (redrawn with
-- \r and an ANSI clear, log lines clear it first, no log line per tick), the
-- log renderer (a log line per tick, nothing redrawn) and the bounded series.
local log = require "ragops.obs.log"
local progress = require "ragops.obs.progress"

local function buffer()
  local b = { text = "" }
  function b:write(...) self.text = self.text .. table.concat({ ... }) end
  function b:flush() end
  return b
end

local SNAP = { processed = 500, total = 1000, succeeded = 480, skipped = 10, failed = 10, retries = 7,
               elapsed_s = 10, concurrency = 4, in_flight = 3 }

describe("ragops.obs.progress", function()
  local saved
  before_each(function() saved = { sink = log.sink, format = log.format, quiet = log.quiet } end)
  after_each(function() log.sink, log.format, log.quiet = saved.sink, saved.format, saved.quiet end)

  it("a linha mostra feitos/total, docs/s, tempo restante, falhas, novas tentativas e concorrência", function()
    local line = progress.format(SNAP)
    assert.matches("^progresso: 500/1%.000 processados, 480 gravados, 10 inalterados, 10 falhas, 7 novas tentativas", line)
    assert.matches("50,0 docs/s", line, 1, true)
    assert.matches("faltam cerca de 10,0 s", line, 1, true)
    assert.matches("concorrência 4", line, 1, true)
  end)

  it("sem total conhecido, sem tempo restante", function()
    local snap = { processed = 5, succeeded = 5, skipped = 0, failed = 0, retries = 0, elapsed_s = 1 }
    assert.is_nil(progress.eta_s(snap))
    assert.is_nil(progress.format(snap):find("faltam", 1, true))
  end)

  it("num terminal: redesenha no lugar e não escreve linha de log por tick", function()
    local logged, term = buffer(), buffer()
    log.sink, log.format = logged, "text"
    local r = progress.new { log = log, tty = true, stream = term }
    r.tick(SNAP)
    r.tick(SNAP)
    assert.are.equal("", logged.text)
    local _, redraws = term.text:gsub("\r\27%[K progresso:", "")
    assert.are.equal(0, redraws)
    _, redraws = term.text:gsub("\r\27%[Kprogresso:", "")
    assert.are.equal(2, redraws)
    log.warn("aviso no meio")
    assert.matches("\r\27%[K$", term.text)   -- the line is cleared before the log line
    assert.matches("AVISO aviso no meio", logged.text)
    r.finish(SNAP)
    assert.are.equal(logged, log.sink)         -- the sink is restored
  end)

  it("sem terminal: uma linha de log por tick, com os números como campos no JSON", function()
    local logged = buffer()
    log.sink, log.format = logged, "json"
    local r = progress.new { log = log, tty = false }
    r.tick(SNAP)
    local e = require("cjson").decode(logged.text)
    assert.matches("^progresso:", e.msg)
    assert.are.same({ 500, 1000, 10, 7, 4 }, { e.processed, e.total, e.failed, e.retries, e.concurrency })
    assert.is_nil(logged.text:find("\r", 1, true))
  end)

  it("a série começa em zero, ganha uma amostra por tick e fica limitada", function()
    log.sink = buffer()
    local r = progress.new { log = log, tty = false }
    assert.are.same({ t = 0, processed = 0, failed = 0, retries = 0 }, r.series[1])
    for i = 1, progress.SERIES_MAX * 3 do
      r.tick({ processed = i, succeeded = i, skipped = 0, failed = 0, retries = 0, elapsed_s = i })
    end
    assert.is_true(#r.series <= progress.SERIES_MAX)
    assert.are.equal(progress.SERIES_MAX * 3, r.series[#r.series].processed)  -- the newest is kept
    for i = 2, #r.series do assert.is_true(r.series[i].t > r.series[i - 1].t) end
  end)
end)
