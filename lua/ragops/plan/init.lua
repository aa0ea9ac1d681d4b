-- ragops.plan: the plan DSL (source{} / plan{}), its validation with pt-BR
-- errors that name the plan file, line and key, and the plan loader.
--
-- A plan file is a text Lua chunk run by ragops.plan.sandbox (time and memory
-- budget) in its restricted environment plus `source`, `plan`, `params`
-- and `import`. It must return the value built by `plan { ... }`.

-- Never JIT-compiled: plan code may call source/plan/params/import from
-- document() under the sandbox's heap caps (see ragops.plan.sandbox).
if jit then jit.off(true, true) end

local sandbox = require "ragops.plan.sandbox"
local sync_plan = require "ragops.plan.sync"
local schema = require "ragops.plan.schema"

local M = {}

-- Metatables that mark validated objects. __metatable hides them from
-- getmetatable, and the weak registries below are what is_source/is_plan
-- trust, so a plan cannot forge a "validated" object.
local SOURCE_MT = { __metatable = "ragops.source" }
local PLAN_MT = { __metatable = "ragops.plan" }
local validated_sources = setmetatable({}, { __mode = "k" })
local validated_plans = setmetatable({}, { __mode = "k" })
-- params keys each loaded plan read (see M.params_read).
local params_read = setmetatable({}, { __mode = "k" })
-- Digest of each loaded plan's text and of the plans it imports (see M.digest).
local text_digest = setmetatable({}, { __mode = "k" })
local has_core, core = pcall(require, "ragops.core")


-- Default values (documented in config.example.lua / docs).
M.DEFAULTS = {
  batch = { size = 64, in_flight = 4 },
  chunking = { max_chars = 2000, overlap = 200 },
  -- retry.timeout_s has no default: absent, provider.timeout_s (config) applies.
  retry = { attempts = 5, rounds = 2, base_ms = 500, max_ms = 30000 },
  failure_rate = { above = 0.05, window = 500, min_samples = 50, action = "warn" },
  mode = "only_missing",
  delete_missing = true,
  embed = { mode = "online", poll_s = 30, poll_max_s = 600, max_resubmissions = 2 },
}

local IDENT_PATTERN = "^[%a_][%w_]*$"
local ENTITY_TYPE_PATTERN = "^[%a_][%w_%-%.]*$"
local PLAN_NAME_PATTERN = "^[%w_][%w_%-%.]*$"
-- Strict ISO 8601 date or timestamp, with or without zone:
-- AAAA-MM-DD, AAAA-MM-DD[T ]HH:MM[:SS[.ffffff]], then optionally Z or ±HH[:MM].
-- Returns true or nil, reason (pt-BR).
local function check_iso_datetime(text)
  if type(text) ~= "string" then return nil, "não é um texto" end
  local y, mo, d, rest = text:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)(.*)$")
  if not y then return nil, "formato inválido" end
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  if mo < 1 or mo > 12 then return nil, "mês inválido" end
  local days = { 31, (y % 4 == 0 and (y % 100 ~= 0 or y % 400 == 0)) and 29 or 28,
                 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 }
  if d < 1 or d > days[mo] then return nil, "dia inválido para o mês" end
  if rest == "" then return true end
  local h, mi, after = rest:match("^[T ](%d%d):(%d%d)(.*)$")
  if not h then return nil, "hora inválida" end
  if tonumber(h) > 23 or tonumber(mi) > 59 then return nil, "hora inválida" end
  local sec, tail = after:match("^:(%d%d)(.*)$")
  if sec then
    if tonumber(sec) > 59 then return nil, "segundos inválidos" end
    after = tail:gsub("^%.%d+", "", 1)
  end
  if after == "" or after == "Z" then return true end
  local zh, zm = after:match("^[+-](%d%d):?(%d?%d?)$")
  if not zh or tonumber(zh) > 14 or (zm ~= "" and (#zm ~= 2 or tonumber(zm) > 59)) then
    return nil, "fuso horário inválido"
  end
  return true
end
M.check_iso_datetime = check_iso_datetime
local DATE_EXPECTED = 'uma data ISO 8601 como "2024-03-01", "2024-03-01 12:00:00" ou "2024-03-01T12:00:00-03:00"'

---------------------------------------------------------------------------
-- Error helpers
---------------------------------------------------------------------------

-- Short, safe rendering of a user value inside an error message.
local function show(value)
  local kind = type(value)
  if kind == "nil" then
    return "ausente"
  elseif kind == "string" then
    local text = value
    if #text > 60 then text = text:sub(1, 57) .. "..." end
    return (string.format("%q", text):gsub("\\\n", "\\n"))
  elseif kind == "number" then
    if value == math.floor(value) and math.abs(value) < 2 ^ 53 then
      return string.format("%d", value)
    end
    return tostring(value)
  elseif kind == "boolean" then
    return tostring(value)
  elseif kind == "table" then
    return "do tipo tabela"
  elseif kind == "function" then
    return "do tipo função"
  end
  return "do tipo " .. kind
end
M.show_value = show

-- Levenshtein distance, for "você quis dizer" suggestions on unknown keys.
local function edit_distance(a, b)
  local previous = {}
  for j = 0, #b do previous[j] = j end
  for i = 1, #a do
    local current = { [0] = i }
    for j = 1, #b do
      local cost = (a:sub(i, i) == b:sub(j, j)) and 0 or 1
      current[j] = math.min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
    end
    previous = current
  end
  return previous[#b]
end

-- Validation context: where the error is reported ("plano X:12").
local Context = {}
Context.__index = Context

local function new_context(what, where)
  return setmetatable({ what = what, where = where }, Context)
end

function Context:fail(message)
  if self.subject then message = self.subject .. ": " .. message end
  error(string.format("%s %s: %s", self.what, self.where, message), 0)
end

-- "chave "a.b": valor X inválido; esperado ..."
function Context:bad(path, value, expected)
  if value == nil then
    self:fail(string.format('chave "%s": valor ausente; esperado %s', path, expected))
  end
  self:fail(string.format('chave "%s": valor %s inválido; esperado %s', path, show(value), expected))
end

-- Rejects keys of `tbl` that are not in `allowed` (an array of names).
function Context:only_keys(tbl, allowed, prefix)
  local key = M.first_unknown_key(tbl, allowed)
  if key == nil then return end
  local path = prefix and (prefix .. "." .. tostring(key)) or tostring(key)
  if type(key) ~= "string" then
    self:fail(string.format('chave %s inesperada em "%s"; esperadas apenas chaves nomeadas (%s)',
      show(key), prefix or "(raiz)", table.concat(allowed, ", ")))
  end
  local best, best_distance
  for _, name in ipairs(allowed) do
    local distance = edit_distance(key, name)
    if distance <= 2 and (not best_distance or distance < best_distance) then
      best, best_distance = name, distance
    end
  end
  local hint = best and string.format(' (você quis dizer "%s"?)', best) or ""
  self:fail(string.format('chave "%s" desconhecida%s; chaves válidas: %s',
    path, hint, table.concat(allowed, ", ")))
end

local function is_integer(value)
  return type(value) == "number" and value == math.floor(value) and value > -2 ^ 53 and value < 2 ^ 53
end
M.is_integer = is_integer

-- The first key of tbl (sorted by its text) not in the allowed list, or nil.
-- Shared by the plan, config and golden-file validators.
function M.first_unknown_key(tbl, allowed)
  local set = {}
  for _, name in ipairs(allowed) do set[name] = true end
  local unknown = {}
  for key in pairs(tbl) do
    if not set[key] then unknown[#unknown + 1] = key end
  end
  if #unknown == 0 then return nil end
  table.sort(unknown, function(a, b) return tostring(a) < tostring(b) end)
  return unknown[1]
end

function Context:integer(path, value, low, high)
  if not is_integer(value) or value < low or (high and value > high) then
    if high then
      self:bad(path, value, string.format("um inteiro entre %d e %d", low, high))
    end
    self:bad(path, value, string.format("um inteiro maior ou igual a %d", low))
  end
  return value
end

function Context:number(path, value, low, high, low_exclusive)
  local ok = type(value) == "number" and value == value
  if ok then
    if low_exclusive then ok = value > low else ok = value >= low end
    if high and value > high then ok = false end
  end
  if not ok then
    local expected
    if low_exclusive and high then
      expected = string.format("um número maior que %s e até %s", show(low), show(high))
    elseif low_exclusive then
      expected = string.format("um número maior que %s", show(low))
    elseif high then
      expected = string.format("um número entre %s e %s", show(low), show(high))
    else
      expected = string.format("um número maior ou igual a %s", show(low))
    end
    self:bad(path, value, expected)
  end
  return value
end

function Context:string(path, value, expected)
  if type(value) ~= "string" or value == "" then
    self:bad(path, value, expected or "um texto não vazio")
  end
  return value
end

function Context:table(path, value, expected)
  if type(value) ~= "table" or getmetatable(value) ~= nil then
    self:bad(path, value, expected or "uma tabela { ... }")
  end
  return value
end

function Context:enum(path, value, choices)
  for _, choice in ipairs(choices) do
    if value == choice then return value end
  end
  local quoted = {}
  for i, choice in ipairs(choices) do quoted[i] = '"' .. choice .. '"' end
  self:bad(path, value, "um destes: " .. table.concat(quoted, ", "))
end

function Context:identifier(path, value)
  if type(value) ~= "string" or not value:match(IDENT_PATTERN) then
    self:bad(path, value, "um nome de coluna simples (letras, dígitos e _, sem começar por dígito)")
  end
  return value
end

-- Reports "plano <file>:<line>" for the caller `level` frames above the
-- function calling this one; falls back to the file passed to plan.load.
local function caller_where(level, fallback)
  local info = debug.getinfo(level + 1, "Sl")
  if info and info.source and info.source:sub(1, 1) == "@" then
    local where = info.source:sub(2)
    if info.currentline and info.currentline > 0 then
      where = where .. ":" .. info.currentline
    end
    return where
  end
  return fallback or "(sem arquivo)"
end

---------------------------------------------------------------------------
-- SQL of a source: one statement
---------------------------------------------------------------------------

-- Index just past the string literal opening at i ('...', with '' inside;
-- backslash escapes too in E'...'), or #sql + 1 when it never closes.
local function skip_string(sql, i, backslash)
  local j = i + 1
  while true do
    local at = sql:find(backslash and "['\\]" or "'", j)
    if not at then return #sql + 1 end
    if sql:sub(at, at) == "\\" then
      j = at + 2
    elseif sql:sub(at + 1, at + 1) == "'" then
      j = at + 2
    else
      return at + 1
    end
  end
end

-- Index just past the quoted identifier opening at i ("...", "" inside).
local function skip_quoted(sql, i)
  local j = i + 1
  while true do
    local at = sql:find('"', j, true)
    if not at then return #sql + 1 end
    if sql:sub(at + 1, at + 1) ~= '"' then return at + 1 end
    j = at + 2
  end
end

-- Index just past the (nested) block comment opening at i.
local function skip_block_comment(sql, i)
  local depth, j = 0, i
  while j <= #sql do
    local two = sql:sub(j, j + 1)
    if two == "/*" then
      depth, j = depth + 1, j + 2
    elseif two == "*/" then
      depth, j = depth - 1, j + 2
      if depth == 0 then return j end
    else
      j = j + 1
    end
  end
  return #sql + 1
end

-- Index just past the token starting with "$" at i: a dollar-quoted string
-- ($$...$$, $tag$...$tag$) or a parameter ($1).
local function skip_dollar(sql, i)
  local tag = sql:match("^%$[%a_\128-\255][%w_\128-\255]*%$", i) or sql:match("^%$%$", i)
  if not tag then return i + 1 end
  local close = sql:find(tag, i + #tag, true)
  return close and close + #tag or #sql + 1
end

-- Position of the first ";" of sql outside string literals, quoted
-- identifiers, dollar quotes and comments (PostgreSQL's lexical rules), or
-- nil. What this cannot read (an unclosed quote) is left to the server,
-- which refuses several statements anyway (extended protocol).
function M.statement_separator(sql)
  local i, n = 1, #sql
  while i <= n do
    local c = sql:sub(i, i)
    if c == ";" then
      return i
    elseif c == "'" then
      i = skip_string(sql, i, false)
    elseif c == '"' then
      i = skip_quoted(sql, i)
    elseif c == "$" then
      i = skip_dollar(sql, i)
    elseif c == "-" and sql:sub(i + 1, i + 1) == "-" then
      i = (sql:find("\n", i, true) or n) + 1
    elseif c == "/" and sql:sub(i + 1, i + 1) == "*" then
      i = skip_block_comment(sql, i)
    elseif c:match("[%a_\128-\255]") then
      -- A word ("$" inside it is not a dollar quote); E'...' takes escapes.
      local after = sql:find("[^%w_$\128-\255]", i) or n + 1
      local word = sql:sub(i, after - 1)
      if (word == "E" or word == "e") and sql:sub(after, after) == "'" then
        i = skip_string(sql, after, true)
      else
        i = after
      end
    else
      i = i + 1
    end
  end
  return nil
end

-- Refuses SQL that is not one statement (the engine runs it as a subquery).
local function check_one_statement(ctx, path, sql)
  local at = M.statement_separator(sql)
  if not at then return sql end
  local trailing = not sql:find("%S", at + 1)
  ctx:fail(string.format('chave "%s": a consulta deve ser um único comando SELECT, sem ";" (há um ";" fora de '
    .. 'textos e comentários no caractere %d%s); o ragops a usa como subconsulta', path, at,
    trailing and ": tire o \";\" do fim" or ", e comandos empilhados nunca são executados"))
end

---------------------------------------------------------------------------
-- source "type" { ... }
---------------------------------------------------------------------------

local SOURCE_KEYS = schema.keys("source")

local function validate_source(ctx, entity_type, spec)
  ctx:table("source", spec, 'uma tabela: source "' .. entity_type .. '" { sql = ..., key = ..., document = ... }')
  ctx.subject = 'fonte "' .. entity_type .. '"'
  ctx:only_keys(spec, SOURCE_KEYS, nil)
  -- declared_at: "file:line" of the source "..." { } call, for errors
  -- about its SQL found later (ragops.store.target.check_sources).
  local source = { entity_type = entity_type, declared_at = ctx.where }
  source.sql = check_one_statement(ctx, "sql", ctx:string("sql", spec.sql, "um texto com a consulta SQL"))
  source.key = ctx:identifier("key", spec.key)
  if spec.updated_at ~= nil then
    source.updated_at = ctx:identifier("updated_at", spec.updated_at)
  end
  if type(spec.document) ~= "function" then
    ctx:bad("document", spec.document, "uma função function(row) return { content = ..., metadata = ... } end")
  end
  source.document = spec.document
  if spec.count_sql ~= nil then
    source.count_sql = check_one_statement(ctx, "count_sql",
      ctx:string("count_sql", spec.count_sql, "um texto com a consulta SQL de contagem"))
  end
  if spec.description ~= nil then
    source.description = ctx:string("description", spec.description, "um texto")
  end
  if spec.sync ~= nil then source.sync = sync_plan.validate(ctx, spec.sync, source) end
  setmetatable(source, SOURCE_MT)
  validated_sources[source] = true
  return source
end

-- Builds `source` bound to a fallback file name (used by plan.load).
local function make_source(fallback)
  return function(entity_type)
    local ctx = new_context("plano", caller_where(2, fallback))
    if type(entity_type) ~= "string" or not entity_type:match(ENTITY_TYPE_PATTERN) then
      ctx:fail(string.format('source: tipo de entidade %s inválido; esperado um nome como "verse" (letras, dígitos, _, - ou .)',
        show(entity_type)))
    end
    return function(spec)
      local inner = new_context("plano", caller_where(2, fallback))
      return validate_source(inner, entity_type, spec)
    end
  end
end

function M.is_source(value)
  return validated_sources[value] == true
end

function M.is_plan(value)
  return validated_plans[value] == true
end

---------------------------------------------------------------------------
-- plan { ... }
---------------------------------------------------------------------------

local PLAN_KEYS = schema.keys("plan")
local ACTIONS = { "warn", "pause", "abort" }

local function validate_batch(ctx, spec)
  local batch = spec or {}
  ctx:table("batch", batch)
  ctx:only_keys(batch, schema.keys("batch"), "batch")
  local out = {}
  out.size = ctx:integer("batch.size", batch.size == nil and M.DEFAULTS.batch.size or batch.size, 1, 2048)
  out.in_flight = ctx:integer("batch.in_flight",
    batch.in_flight == nil and M.DEFAULTS.batch.in_flight or batch.in_flight, 1, 64)
  return out
end

-- chunking.max_tokens / overlap_tokens: kept for ragops.plan.chunk.fit,
-- which turns them into characters with the model's ratio once the
-- configuration is known; until then, bytes/4 (4 characters a token).
local function validate_chunk_tokens(ctx, chunking, out)
  if chunking.max_chars ~= nil or chunking.overlap ~= nil then
    ctx:bad("chunking.max_tokens", chunking.max_tokens, "chunking.max_tokens sem chunking.max_chars nem chunking.overlap "
      .. "(um tamanho só: em tokens ou em caracteres)")
  end
  out.max_tokens = ctx:integer("chunking.max_tokens", chunking.max_tokens, 25, 250000)
  local overlap = chunking.overlap_tokens
  if overlap == nil then overlap = math.floor(out.max_tokens / 10) end
  if not is_integer(overlap) or overlap < 0 or overlap >= out.max_tokens then
    ctx:bad("chunking.overlap_tokens", overlap,
      string.format("um inteiro entre 0 e %d (menor que chunking.max_tokens)", out.max_tokens - 1))
  end
  out.overlap_tokens = overlap
  out.max_chars, out.overlap = out.max_tokens * 4, overlap * 4
end

local function validate_chunking(ctx, spec)
  local chunking = spec or {}
  ctx:table("chunking", chunking)
  ctx:only_keys(chunking, schema.keys("chunking"), "chunking")
  local out = {}
  if chunking.max_tokens ~= nil then
    validate_chunk_tokens(ctx, chunking, out)
  elseif chunking.overlap_tokens ~= nil then
    ctx:bad("chunking.overlap_tokens", chunking.overlap_tokens, "nada sem chunking.max_tokens")
  else
    local max_chars = chunking.max_chars == nil and M.DEFAULTS.chunking.max_chars or chunking.max_chars
    out.max_chars = ctx:integer("chunking.max_chars", max_chars, 100, 1000000)
    local overlap = chunking.overlap
    if overlap == nil then
      overlap = math.min(M.DEFAULTS.chunking.overlap, math.floor(out.max_chars / 10))
    end
    if not is_integer(overlap) or overlap < 0 or overlap >= out.max_chars then
      ctx:bad("chunking.overlap", overlap,
        string.format("um inteiro entre 0 e %d (menor que chunking.max_chars)", out.max_chars - 1))
    end
    out.overlap = overlap
  end
  -- The largest content of one document (absent: the decide stage's
  -- default, 1 MiB); past it, a dead letter and no request.
  if chunking.max_content_bytes ~= nil then
    out.max_content_bytes = ctx:integer("chunking.max_content_bytes", chunking.max_content_bytes, 1, 256 * 1024 * 1024)
  end
  return out
end

-- The largest budget.usd accepted (finite and bounded: 1e309 is refused).
M.MAX_BUDGET_USD = 1000000

-- budget = { usd = N }: the run stops (exit 3) before the provider's bill
-- (usage x price) would pass N. Optional.
local function validate_budget(ctx, spec)
  if spec == nil then return nil end
  ctx:table("budget", spec)
  ctx:only_keys(spec, schema.keys("budget"), "budget")
  return { usd = ctx:number("budget.usd", spec.usd, 0, M.MAX_BUDGET_USD, true) }
end

-- embed = { mode, poll_s, poll_max_s, max_resubmissions }: online (the
-- default) or through the provider's Batch API (ragops.run.batch).
local function validate_embed(ctx, spec)
  local embed = spec or {}
  ctx:table("embed", embed)
  ctx:only_keys(embed, schema.keys("embed"), "embed")
  local d = M.DEFAULTS.embed
  local out = { mode = embed.mode == nil and d.mode or ctx:enum("embed.mode", embed.mode, { "online", "batch" }) }
  out.poll_s = ctx:number("embed.poll_s", embed.poll_s == nil and d.poll_s or embed.poll_s, 0.05, 3600)
  local max = embed.poll_max_s == nil and math.max(d.poll_max_s, out.poll_s) or embed.poll_max_s
  out.poll_max_s = ctx:number("embed.poll_max_s", max, out.poll_s, 3600)
  out.max_resubmissions = ctx:integer("embed.max_resubmissions",
    embed.max_resubmissions == nil and d.max_resubmissions or embed.max_resubmissions, 0, 10)
  return out
end

local function validate_retry(ctx, spec)
  local retry = spec or {}
  ctx:table("retry", retry)
  ctx:only_keys(retry, schema.keys("retry"), "retry")
  local d = M.DEFAULTS.retry
  local out = {}
  out.attempts = ctx:integer("retry.attempts", retry.attempts == nil and d.attempts or retry.attempts, 0, 100)
  out.rounds = ctx:integer("retry.rounds", retry.rounds == nil and d.rounds or retry.rounds, 1, 10)
  out.base_ms = ctx:integer("retry.base_ms", retry.base_ms == nil and d.base_ms or retry.base_ms, 1, 3600000)
  local max_ms = retry.max_ms
  if max_ms == nil then max_ms = math.max(d.max_ms, out.base_ms) end
  if not is_integer(max_ms) or max_ms < out.base_ms or max_ms > 3600000 then
    ctx:bad("retry.max_ms", max_ms,
      string.format("um inteiro entre %d (retry.base_ms) e 3600000", out.base_ms))
  end
  out.max_ms = max_ms
  if retry.timeout_s ~= nil then
    out.timeout_s = ctx:number("retry.timeout_s", retry.timeout_s, 0, 3600, true)
  end
  return out
end

local function validate_action(ctx, path, value)
  if value == nil then return "warn" end
  return ctx:enum(path, value, ACTIONS)
end

local function validate_alerts(ctx, spec)
  local alerts = spec or {}
  ctx:table("alerts", alerts)
  ctx:only_keys(alerts, schema.keys("alerts"), "alerts")
  local out = {}
  if alerts.pause_ms ~= nil then
    -- How long a "pause" waits before letting one probe unit through.
    out.pause_ms = ctx:integer("alerts.pause_ms", alerts.pause_ms, 10, 3600000)
  end
  local d = M.DEFAULTS.failure_rate
  local failure = alerts.failure_rate or {}
  ctx:table("alerts.failure_rate", failure)
  ctx:only_keys(failure, schema.keys("alerts.failure_rate"), "alerts.failure_rate")
  out.failure_rate = {
    above = ctx:number("alerts.failure_rate.above", failure.above == nil and d.above or failure.above, 0, 1),
    window = ctx:integer("alerts.failure_rate.window", failure.window == nil and d.window or failure.window,
      1, 1000000),
    action = validate_action(ctx, "alerts.failure_rate.action", failure.action),
  }
  local window = out.failure_rate.window
  local min_samples = failure.min_samples
  if min_samples == nil then min_samples = math.min(d.min_samples, window) end
  out.failure_rate.min_samples = ctx:integer("alerts.failure_rate.min_samples", min_samples, 0, window)
  if alerts.rate_429_per_min ~= nil then
    local rule = ctx:table("alerts.rate_429_per_min", alerts.rate_429_per_min)
    ctx:only_keys(rule, schema.keys("alerts.rate_429_per_min"), "alerts.rate_429_per_min")
    out.rate_429_per_min = {
      above = ctx:number("alerts.rate_429_per_min.above", rule.above, 0),
      action = validate_action(ctx, "alerts.rate_429_per_min.action", rule.action),
    }
  end
  if alerts.p95_latency_ms ~= nil then
    local rule = ctx:table("alerts.p95_latency_ms", alerts.p95_latency_ms)
    ctx:only_keys(rule, schema.keys("alerts.p95_latency_ms"), "alerts.p95_latency_ms")
    out.p95_latency_ms = {
      above = ctx:number("alerts.p95_latency_ms.above", rule.above, 0, nil, true),
      action = validate_action(ctx, "alerts.p95_latency_ms.action", rule.action),
    }
  end
  return out
end

-- operations = { failures_retry = { batch = {...}, retry = {...}, alerts = {...} }, ... }:
-- each section checked as the plan's own (errors name the operation); kept
-- as written (ragops.plan.params overlays it on the plan for that operation).
local function copy_tree(t)
  if type(t) ~= "table" then return t end
  local out = {}
  for k, v in pairs(t) do out[k] = copy_tree(v) end
  return out
end
local OPERATION_SECTIONS = { batch = validate_batch, retry = validate_retry, alerts = validate_alerts }
local function validate_operations(ctx, spec)
  if spec == nil then return nil end
  ctx:table("operations", spec)
  ctx:only_keys(spec, schema.keys("operations"), "operations")
  local out = {}
  for operation, tuning in pairs(spec) do
    local path = "operations." .. operation
    ctx:table(path, tuning)
    ctx:only_keys(tuning, schema.keys("operations.op"), path)
    ctx.subject = path
    out[operation] = {}
    for section, check in pairs(OPERATION_SECTIONS) do
      if tuning[section] ~= nil then
        check(ctx, tuning[section])
        out[operation][section] = copy_tree(tuning[section])
      end
    end
    ctx.subject = nil
  end
  return out
end

local function validate_string_list(ctx, path, list, what)
  ctx:table(path, list, "uma lista de " .. what)
  local out = {}
  local count = 0
  for _ in pairs(list) do count = count + 1 end
  if count ~= #list then
    ctx:bad(path, list, "uma lista (sequência) de " .. what)
  end
  for i, item in ipairs(list) do
    if type(item) == "number" and is_integer(item) then item = string.format("%d", item) end
    if type(item) ~= "string" or item == "" then
      ctx:bad(string.format("%s[%d]", path, i), item, what:gsub("s$", ""))
    end
    out[i] = item
  end
  return out
end

local function validate_scope(ctx, spec, sources)
  if spec == nil then return nil end
  ctx:table("scope", spec)
  ctx:only_keys(spec, schema.keys("scope"), "scope")
  local out = {}
  if spec.entity_types ~= nil then
    out.entity_types = validate_string_list(ctx, "scope.entity_types", spec.entity_types, "tipos de entidade")
    if sources then
      local known = {}
      for _, source in ipairs(sources) do known[source.entity_type] = true end
      for i, entity_type in ipairs(out.entity_types) do
        if not known[entity_type] then
          local names = {}
          for _, source in ipairs(sources) do names[#names + 1] = source.entity_type end
          ctx:bad(string.format("scope.entity_types[%d]", i), entity_type,
            "um tipo de entidade do plano (" .. table.concat(names, ", ") .. ")")
        end
      end
    end
  end
  if spec.entity_ids ~= nil then
    out.entity_ids = validate_string_list(ctx, "scope.entity_ids", spec.entity_ids, "ids de entidade")
  end
  if spec.since ~= nil then
    local ok, why = check_iso_datetime(spec.since)
    if not ok then ctx:bad("scope.since", spec.since, DATE_EXPECTED .. " (" .. why .. ")") end
    out.since = spec.since
  end
  local until_value = spec.until_
  if until_value == nil then until_value = spec["until"] end
  if until_value ~= nil then
    local ok, why = check_iso_datetime(until_value)
    if not ok then ctx:bad("scope.until", until_value, DATE_EXPECTED .. " (" .. why .. ")") end
    out.until_ = until_value
    out["until"] = until_value -- same value under both spellings
  end
  -- Ordering of since/until is checked by the engine in the database, which
  -- knows its time zone (dates without zone are in the database's zone).
  return out
end

local function validate_plan(ctx, spec)
  ctx:table("plan", spec, "uma tabela: plan { name = ..., sources = { ... } }")
  ctx:only_keys(spec, PLAN_KEYS, nil)
  local out = {}
  if type(spec.name) ~= "string" or not spec.name:match(PLAN_NAME_PATTERN) then
    ctx:bad("name", spec.name, 'um nome como "backfill" (letras, dígitos, _, - ou .)')
  end
  out.name = spec.name
  if spec.description ~= nil then
    out.description = ctx:string("description", spec.description, "um texto")
  end
  if spec.run ~= nil and type(spec.run) ~= "function" then
    ctx:bad("run", spec.run, "uma função function(ctx) ... end")
  end
  out.run = spec.run

  local sources = spec.sources
  if sources == nil and out.run then sources = {} end
  if type(sources) ~= "table" or getmetatable(sources) ~= nil or (#sources == 0 and not out.run) then
    ctx:bad("sources", sources, "uma lista não vazia de fontes criadas com source \"tipo\" { ... }")
  end
  local count = 0
  for _ in pairs(sources) do count = count + 1 end
  if count ~= #sources then
    ctx:bad("sources", sources, "uma lista (sequência) de fontes criadas com source \"tipo\" { ... }")
  end
  out.sources = {}
  local seen = {}
  for i, source in ipairs(sources) do
    if not M.is_source(source) then
      ctx:bad(string.format("sources[%d]", i), source, 'uma fonte criada com source "tipo" { ... }')
    end
    if seen[source.entity_type] then
      ctx:bad(string.format("sources[%d]", i), source.entity_type,
        string.format("tipos de entidade únicos (\"%s\" já aparece em sources[%d])",
          source.entity_type, seen[source.entity_type]))
    end
    seen[source.entity_type] = i
    out.sources[i] = source
  end

  out.batch = validate_batch(ctx, spec.batch)
  out.chunking = validate_chunking(ctx, spec.chunking)
  out.retry = validate_retry(ctx, spec.retry)
  out.embed = validate_embed(ctx, spec.embed)
  out.alerts = validate_alerts(ctx, spec.alerts)
  out.budget = validate_budget(ctx, spec.budget)
  out.scope = validate_scope(ctx, spec.scope, out.sources)
  out.operations = validate_operations(ctx, spec.operations)
  out.mode = spec.mode == nil and M.DEFAULTS.mode or ctx:enum("mode", spec.mode, { "only_missing", "overwrite" })
  if spec.limit ~= nil then
    -- A sanity run over at most `limit` entities per source: it never sees
    -- the whole source, so it must not remove orphans.
    out.limit = ctx:integer("limit", spec.limit, 1, 1000000000)
  end
  if spec.delete_missing == nil or out.limit then
    out.delete_missing = not out.limit and M.DEFAULTS.delete_missing
  elseif type(spec.delete_missing) ~= "boolean" then
    ctx:bad("delete_missing", spec.delete_missing, "true ou false")
  else
    out.delete_missing = spec.delete_missing
  end
  setmetatable(out, PLAN_MT)
  validated_plans[out] = true
  return out
end

local function make_plan(fallback)
  return function(spec)
    local ctx = new_context("plano", caller_where(2, fallback))
    return validate_plan(ctx, spec)
  end
end

-- Public API: plan.source(entity_type)(spec) and plan.new(spec).
M.source = make_source(nil)
M.new = make_plan(nil)

-- Returns a validated copy of `p` with some fields replaced (e.g. the CLI
-- applying --entity-type / --since to a plan's scope). Raises on misuse.
function M.with(p, overrides, where)
  if not M.is_plan(p) then error("plan.with: esperado um plano validado", 2) end
  local spec = {}
  for key, value in pairs(p) do
    if key ~= "file" then spec[key] = value end
  end
  for key, value in pairs(overrides or {}) do spec[key] = value end
  local result = validate_plan(new_context("plano", where or p.file or p.name), spec)
  result.file = p.file
  params_read[result] = params_read[p]
  text_digest[result] = text_digest[p]
  return result
end

---------------------------------------------------------------------------
-- Sandbox and loader
---------------------------------------------------------------------------

local copy_table = require("ragops.util.tables").shallow_copy

-- The `params` a plan sees: a copy whose reads are recorded in the set
-- `read`, so the engine knows which --set keys the plan uses. (A proxy:
-- `pairs(params)` sees nothing; plans read params by name.)
local function reading_params(params, read)
  local values = copy_table(params or {})
  return setmetatable({}, {
    __index = function(_, key)
      read[key] = true
      return values[key]
    end,
  })
end

-- Line of the last "return plan {" in a plan text: `return plan {...}` is
-- a tail call, so Lua no longer knows the caller's line when plan{} fails.
local function return_plan_line(text)
  local found, number = nil, 0
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    number = number + 1
    if line:match("^%s*return%s+plan%s*[{(]") then found = number end
  end
  return found
end

-- Builds the environment a plan file runs in. `text` (optional) is the
-- plan's source, used to locate `return plan {` for error messages.
function M.environment(path, params, text)
  local env = sandbox.environment("plano")
  local plan_where = path
  local line = text and return_plan_line(text)
  if line then plan_where = path .. ":" .. line end
  env.source = make_source(path)
  env.plan = make_plan(plan_where)
  local read, imports = {}, {}
  env.params = reading_params(params, read)
  -- import "outro.lua": loads a plan file from the same folder (same params,
  -- same sandbox) and returns its validated plan, to reuse its sources.
  env.import = function(name)
    if type(name) ~= "string" or not name:match("^[%w_][%w_%-%.]*%.lua$") then
      error(string.format('import: esperado o nome de um plano da mesma pasta, como "backfill.lua" (recebi %s)',
        show(name)), 2)
    end
    M.import_depth = (M.import_depth or 0) + 1
    if M.import_depth > 8 then
      M.import_depth = 0
      error("import: planos importando uns aos outros em ciclo", 2)
    end
    local dir = path:match("^(.*)/[^/]*$") or "."
    local imported, err = M.load(dir .. "/" .. name, params)
    M.import_depth = M.import_depth - 1
    if not imported then error(err, 0) end
    for key in pairs(M.params_read(imported)) do read[key] = true end
    imports[#imports + 1] = M.digest(imported) or ""
    return imported
  end
  return env, read, imports
end

-- A fresh copy of validated source `source`, validated again.
local function revalidated_source(path, source)
  local spec = {}
  for key, value in pairs(source) do
    if key ~= "entity_type" and key ~= "declared_at" then spec[key] = value end
  end
  local fresh = validate_source(new_context("plano", path), source.entity_type, spec)
  fresh.declared_at = source.declared_at
  return fresh
end

-- The plan the engine runs: a fresh copy of the object the plan file
-- returned (and of its sources), validated again. The file's code keeps
-- references to what plan{} and source{} gave it and may change them
-- before returning (refused here) or from document() during the run (it
-- then changes objects the engine no longer reads). Raises ctx errors.
local function revalidated(path, result)
  local spec = {}
  for key, value in pairs(result) do spec[key] = value end
  if type(spec.sources) == "table" and getmetatable(spec.sources) == nil then
    local sources = {}
    for key, source in pairs(spec.sources) do
      sources[key] = M.is_source(source) and revalidated_source(path, source) or source
    end
    spec.sources = sources
  end
  return validate_plan(new_context("plano", path), spec)
end

-- Loads and validates a plan file. Returns the plan, or nil and a pt-BR
-- message naming the file (and line when known).
function M.load(path, params)
  if type(path) ~= "string" or path == "" then
    error("plan.load: esperado o caminho do arquivo do plano", 2)
  end
  if params ~= nil and type(params) ~= "table" then
    error("plan.load: params deve ser uma tabela", 2)
  end
  local text, read_err = sandbox.read_file(path, "plano")
  if not text then return nil, read_err end
  local env, read, imports = M.environment(path, params, text)
  local result, err = sandbox.run_text(text, path, "plano", env)
  if err then return nil, err end
  if not M.is_plan(result) then
    return nil, string.format("plano %s: o arquivo deve terminar com return plan { ... } (retornou valor %s)",
      path, show(result))
  end
  local valid, fresh = pcall(revalidated, path, result)
  if not valid then
    return nil, string.format("%s (o plano foi alterado depois de plan { ... } ou source { ... }: "
      .. "defina os valores dentro deles)", tostring(fresh))
  end
  result = fresh
  result.file = path
  params_read[result] = read
  if has_core and type(core) == "table" and core.hash then text_digest[result] = core.hash(text, unpack(imports)) end
  return result
end

---------------------------------------------------------------------------
-- Command-line overrides
---------------------------------------------------------------------------

-- Operating limits the command line may set on any plan, as `--set KEY=N`
-- or as FLAG N; they replace the plan's literal and go through the same
-- validation (validate_plan).
M.LIMITS = {
  { key = "batch.size", flag = "batch-size" },
  { key = "batch.in_flight", flag = "in-flight" },
  { key = "limit", flag = "limit" },
  { key = "retry.attempts", flag = "max-retries" },
  { key = "retry.timeout_s", flag = "timeout" },
  { key = "budget.usd", flag = "budget-usd" },
  { key = "embed.mode", flag = "embed-mode" },
}

-- Plan overrides (for plan.with) from limits = { ["batch.size"] = "8", ... }
-- (text from the command line; numbers are converted, anything else is
-- left for the validator to reject with the key's own message).
function M.limit_overrides(p, limits)
  local out = {}
  for _, item in ipairs(M.LIMITS) do
    local value = limits[item.key]
    if value ~= nil then
      value = tonumber(value) or value
      local section, field = item.key:match("^([%w_]+)%.([%w_]+)$")
      if section then
        out[section] = out[section] or copy_table(p[section] or {})
        out[section][field] = value
      else
        out[item.key] = value
      end
    end
  end
  return out
end

-- A digest of the plan file's text and of the plans it imports, or nil
-- (outside the ragops binary): part of the source rows' fingerprints.
function M.digest(p)
  return text_digest[p]
end

-- The set of params the plan file (and the plans it imports) read while
-- loading: the plan-specific keys `--set` accepts.
function M.params_read(p)
  return params_read[p] or {}
end

return M
