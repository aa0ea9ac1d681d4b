-- ragops.stages.embed: from texts to vectors. Receives the decision's items
-- ({ text, chunk, entity }) and embeds them in slices of batch.size through
-- the limiter and the provider retry policy (the one place provider calls
-- go through). A batch the provider refuses for good is split in halves
-- until the refused inputs are alone (bisection), so their neighbours get
-- through. Hands on { parts = { { items, batch = vecbatch } }, failed =
-- { { items, err, info, attempts } } } and adds requests, retries and tokens
-- to the unit's delta. A configuration the provider rejects stops the run.
local instruments = require "ragops.stages.instruments"
local report = require "ragops.report"
local retry = require "ragops.retry"

local M = {}

-- One provider call: limiter, latency, metrics and alert events around it.
local function call_provider(ctx, texts, estimated_tokens, delta)
  local env, s = ctx.env, ctx.sched
  local limiter = env.limiter
  delta.requests = delta.requests + 1
  ctx.spent.requests = ctx.spent.requests + 1
  if limiter then limiter:acquire(estimated_tokens) end
  local t0 = s.now()
  local b, e, i = env.embedder:embed(texts)
  local latency = s.now() - t0
  local status = i and i.status or (b and 200) or 0
  if limiter then
    -- A Retry-After holds every request, not only this one (capped).
    if not b and i and i.retry_after_ms and i.retry_after_ms > 0 then
      limiter:pause_until(s.now() + math.min(i.retry_after_ms, retry.MAX_RETRY_AFTER_MS))
    end
    limiter:release({ status = status, ok = b ~= nil })
  end
  instruments.embed_call(ctx, status, latency / 1000, b ~= nil, i and i.class)
  ctx:observe({ kind = "embed", ok = b ~= nil, status = status, latency_ms = latency, class = i and i.class })
  return b, e, i
end

local function log_retry(ctx, attempt, delay, e, i)
  local policy = ctx.plan.retry
  if i and i.status == 429 then
    ctx.log.warn("limite de taxa do provedor (%s); chamada %d, aguardando %d ms (429 não gasta tentativa)",
      e, attempt, delay)
  else
    ctx.log.warn("falha temporária no provedor (%s); chamada %d (até %d tentativas x %d rodadas), "
      .. "nova tentativa em %d ms", e, attempt, policy.attempts, policy.rounds or 1, delay)
  end
end

-- The provider's answer says the configuration is wrong: stop the run.
local function abort_on_configuration(ctx, err, info)
  if info.kind == "body_too_large" then
    ctx:abort(4, tostring(err)) -- a broken or hostile provider, not this batch
    return true
  end
  if info.class == "fatal" then
    ctx:abort(4, "o provedor de embeddings recusou a configuração: " .. tostring(err))
    return true
  end
  if info.kind == "malformed" and tostring(err):find("tem dimensão", 1, true) then
    -- Every attempt came back with the wrong dimension: a configuration
    -- error (model or provider.dim), not a per-document failure.
    ctx:abort(4, "o provedor devolve vetores de dimensão diferente de provider.dim em todas as tentativas ("
      .. tostring(err) .. "); confira o modelo e provider.dim/dimensions")
    return true
  end
  return false
end

-- UTF-8 characters of text (bytes that do not continue a sequence): in C
-- inside the engine (the gsub was ~8% of the Lua time of a cold backfill),
-- the same count in Lua where the engine is absent (busted).
local has_core, core = pcall(require, "ragops.core")
local utf8_length = has_core and core.utf8_length or function(text)
  local _, continuation = text:gsub("[\128-\191]", "")
  return #text - continuation
end

-- What a successful batch sent and cost, in the unit's delta (the tokens
-- the provider billed against the bytes and characters sent calibrate the
-- dry-run's estimates; see ragops.dryrun).
local function account_batch(ctx, texts, batch, delta, entity_type)
  local tokens = batch:tokens()
  delta.tokens = delta.tokens + tokens
  ctx.spent.tokens = ctx.spent.tokens + tokens
  for _, t in ipairs(texts) do
    delta.bytes = delta.bytes + #t
    delta.chars = delta.chars + utf8_length(t)
    delta.bytes_sq = delta.bytes_sq + #t * #t
  end
  instruments.batch_embedded(ctx, entity_type, tokens)
end

-- The budget (env.budget_usd) would be passed by this call: stop the run
-- (code 3) before sending it. The call's cost is estimated at bytes/4.
local function over_budget(ctx, estimated_tokens)
  local budget, spent = ctx.env.budget_usd, ctx:spend_usd()
  if not budget or not spent then return false end
  local next_cost = estimated_tokens * ctx.env.price_per_1m_tokens / 1e6
  if spent + next_cost <= budget then return false end
  local fmt = report
  ctx:abort(3, ("orçamento de US$ %s atingido: gasto US$ %s, restante US$ %s; o próximo lote custaria cerca de "
    .. "US$ %s. O checkpoint foi mantido: rode o mesmo comando com um --budget-usd maior para continuar")
    :format(fmt.format_number(budget, 4), fmt.format_number(spent, 4),
      fmt.format_number(math.max(budget - spent, 0), 4), fmt.format_number(next_cost, 4)), true)
  return true
end

local function split_halves(items)
  local mid, left, right = math.floor(#items / 2), {}, {}
  for i, it in ipairs(items) do
    if i <= mid then left[#left + 1] = it else right[#right + 1] = it end
  end
  return left, right
end

local function append(into, list)
  for _, x in ipairs(list) do into[#into + 1] = x end
  return into
end

-- Embeds one slice; returns parts, failed groups.
local function embed_slice(ctx, items, delta, entity_type)
  local texts, estimated_tokens = {}, 0
  for i, it in ipairs(items) do
    texts[i] = it.text
    estimated_tokens = estimated_tokens + math.ceil(#it.text / 4)
  end
  if over_budget(ctx, estimated_tokens) then return {}, {} end
  local batch, err, info, attempts = retry.call(ctx.plan.retry, ctx.sched, function()
    if ctx:halted() then return nil, "interrompido", { class = "cancelled" } end
    return call_provider(ctx, texts, estimated_tokens, delta)
  end, function(attempt, delay, e, i)
    delta.retries = delta.retries + 1
    instruments.count(ctx, "ragops_retries_total", nil, 1)
    log_retry(ctx, attempt, delay, e, i)
  end)
  if batch then
    account_batch(ctx, texts, batch, delta, entity_type)
    return { { items = items, batch = batch } }, {}
  end
  info = info or {}
  if info.class == "cancelled" or abort_on_configuration(ctx, err, info) then return {}, {} end
  if info.class == "permanent" and #items > 1 then
    local left, right = split_halves(items)
    local p1, f1 = embed_slice(ctx, left, delta, entity_type)
    local p2, f2 = embed_slice(ctx, right, delta, entity_type)
    return append(p1, p2), append(f1, f2)
  end
  if info.kind == "connection" and ctx.stats.embedded == 0 and delta.embedded == 0 then
    ctx:abort(4, "provedor de embeddings inalcançável: " .. tostring(err))
  end
  return {}, { { items = items, err = err, info = info, attempts = attempts } }
end

-- Embeds every item in slices of batch.size. Returns parts, failed groups.
function M.embed_items(ctx, items, delta, entity_type)
  local parts, failed = {}, {}
  local size = ctx.plan.batch.size
  for first = 1, #items, size do
    if ctx:halted() then break end
    local slice = {}
    for i = first, math.min(first + size - 1, #items) do slice[#slice + 1] = items[i] end
    local p, f = embed_slice(ctx, slice, delta, entity_type)
    append(parts, p)
    append(failed, f)
  end
  return parts, failed
end

return M
