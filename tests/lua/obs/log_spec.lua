-- log_spec.lua: ragops.obs.log in both formats: the text line, JSON lines with
-- ts/level/msg, the run's context and a call's fields, quiet mode, and
-- fields that cannot be encoded (or would overwrite ts/level/msg) left out.
local cjson = require "cjson"
local log = require "ragops.obs.log"

describe("ragops.obs.log", function()
  local lines, saved

  before_each(function()
    saved = { sink = log.sink, format = log.format, quiet = log.quiet, fields = log.fields }
    lines = {}
    log.sink = { write = function(_, ...) lines[#lines + 1] = table.concat({ ... }) end }
    log.context(nil)
  end)

  after_each(function()
    log.sink, log.format, log.quiet = saved.sink, saved.format, saved.quiet
    log.context(saved.fields)
  end)

  it("texto: data, nível em pt-BR e a mensagem formatada; os campos não entram na linha", function()
    log.format = "text"
    log.event("warn", { request_id = "rg-1" }, "falha em %s", "verse 7")
    assert.matches("^%[%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d%] AVISO falha em verse 7\n$", lines[1])
    assert.is_nil(lines[1]:find("rg-1", 1, true))
  end)

  it("json: uma linha por evento com ts ISO 8601 UTC, level, msg, contexto e campos", function()
    log.format = "json"
    log.context { run_id = 12, plan = "backfill" }
    log.event("error", { entity_type = "verse", batch = 3, request_id = "rg-ab-9", failed = 2 }, "falha %d", 2)
    log.info("sem campos")
    assert.are.equal(2, #lines)
    assert.matches("\n$", lines[1])
    local e = cjson.decode(lines[1])
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$", e.ts)
    assert.are.same({ "error", "falha 2", 12, "backfill", "verse", 3, "rg-ab-9", 2 },
      { e.level, e.msg, e.run_id, e.plan, e.entity_type, e.batch, e.request_id, e.failed })
    local second = cjson.decode(lines[2])
    assert.are.same({ "info", "sem campos", 12 }, { second.level, second.msg, second.run_id })
  end)

  it("json: campos reservados, não finitos e não escalares ficam de fora", function()
    log.format = "json"
    log.event("info", { msg = "forjada", level = "debug", eta_s = 0 / 0, big = math.huge, t = {}, f = print,
                        ok = true }, "verdadeira")
    local e = cjson.decode(lines[1])
    assert.are.equal("verdadeira", e.msg)
    assert.are.equal("info", e.level)
    assert.is_nil(e.eta_s); assert.is_nil(e.big); assert.is_nil(e.t); assert.is_nil(e.f)
    assert.are.equal(true, e.ok)
  end)

  it("quiet: só erros", function()
    log.quiet = true
    log.info("a"); log.warn("b"); log.error("c")
    assert.are.equal(1, #lines)
    assert.matches("ERRO c", lines[1])
  end)
end)
