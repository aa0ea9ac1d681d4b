-- ragops.run.stages.embed: from texts to vectors. Receives the decision's items
-- ({ text, chunk, entity }) and embeds them in slices of batch.size through
-- the limiter and the provider retry policy (the one place provider calls
-- go through). A batch the provider refuses for good is split in halves
-- until the refused inputs are alone (bisection), so their neighbours get
-- through. Hands on { parts = { { items, batch = vecbatch } }, failed =
-- { { items, err, info, attempts } } } and adds requests, retries and tokens
-- to the unit's delta. A configuration the provider rejects stops the run.
--
-- The spend budget (env.budget_usd) is the run's, whoever spends it: before
-- each request the run's spend (tokens the provider billed to the run, by
-- every process and attempt, read from the database) and the requests in
-- flight are weighed (M.admission); a request is reserved at an upper bound
-- of its tokens until its answer says what it cost. In a scale-out work
-- unit (ctx.store.work_unit, ragops.run.workunits) that is one transaction on
-- the database per request, shared by every process; otherwise the
-- process holds the run alone and counts from the database's total at
-- start (env.budget_base) plus what it spent since.
local exit = require "ragops.util.exit"
local instruments = require "ragops.obs.instruments"
local format = require "ragops.util.format"
local ratelimit = require "ragops.provider.ratelimit"
local requests = require "ragops.provider.requests"
local retry = require "ragops.provider.retry"

local M = {}

-- A request refused while others are in flight waits this long before
-- asking again (their answers may leave room).
M.BUDGET_WAIT_MS = 100

-- The budget's verdict on one more request: "ok", "wait" (only with
-- others in flight) or "stop". spent = tokens billed to the run so far;
-- reserved = upper bounds of the requests in flight; est, upper = this
-- request's estimate and upper bound; limit = the budget in tokens.
-- Overshoot stays under one request: a request sent with others in flight
-- fits at their upper bounds and its own (nothing can pass the budget),
-- and one sent alone fits at its estimate (it can pass by what it costs
-- beyond that estimate, less than its own cost). Upper bound: a token
-- covers at least one byte (byte-level tokenizers, the embed-server).
function M.admission(spent, reserved, est, upper, limit)
  if spent + est > limit then return "stop" end
  if reserved <= 0 or spent + reserved + upper <= limit then return "ok" end
  return "wait"
end

-- The budget in tokens, or nil without one.
local function budget_tokens(env)
  if not (env.budget_usd and env.price_per_1m_tokens) then return nil end
  return env.budget_usd * 1e6 / env.price_per_1m_tokens
end

-- The budget was reached: stop the run (code 3), nothing more is sent.
local function stop_at_budget(ctx, spent_tokens, estimated_tokens)
  local price, budget, fmt = ctx.env.price_per_1m_tokens, ctx.env.budget_usd, format
  local spent, next_cost = spent_tokens * price / 1e6, estimated_tokens * price / 1e6
  ctx:abort(exit.alert, ("orçamento de US$ %s atingido: gasto US$ %s (da execução, todos os processos), restante US$ %s; "
    .. "o próximo lote custaria cerca de US$ %s. O checkpoint foi mantido: rode o mesmo comando com um "
    .. "--budget-usd maior para continuar")
    :format(fmt.format_number(budget, 4), fmt.format_number(spent, 4),
      fmt.format_number(math.max(budget - spent, 0), 4), fmt.format_number(next_cost, 4)), true)
end

-- This process's reservations when it holds the run alone.
local function local_budget(ctx)
  local b = ctx.env.budget_local
  if not b then b = { reserved = 0 }; ctx.env.budget_local = b end
  return b
end

-- One verdict: from the database in a work unit, from this process's
-- books otherwise (reserving on "ok"). Returns verdict, spent tokens.
local function ask_budget(ctx, est, upper, limit)
  if ctx.store.work_unit then return ctx.store:reserve_request(est, upper, limit) end
  local b = local_budget(ctx)
  local spent = (ctx.env.budget_base or ctx.tokens_before) + ctx.spent.tokens
  local verdict = M.admission(spent, b.reserved, est, upper, limit)
  if verdict == "ok" then b.reserved = b.reserved + upper end
  return verdict, spent
end

-- Waits until the budget lets one request go. Returns its reservation (to
-- settle with its answer), or nil: the run stopped (budget reached, lost
-- work unit, database failure, or stopped meanwhile).
local function reserve(ctx, est, upper)
  local limit = budget_tokens(ctx.env)
  if not limit then return { upper = 0 } end
  while not ctx:halted() do
    local verdict, spent = ask_budget(ctx, est, upper, limit)
    if verdict == "ok" then return { upper = upper, shared = ctx.store.work_unit ~= nil } end
    if verdict == "stop" then stop_at_budget(ctx, spent, est); return nil end
    if verdict == nil or verdict == "lost" then
      -- (spent is then the reason: the unit was lost, or the database's error)
      ctx:abort(exit.unreachable, verdict and tostring(spent)
        or ("falha ao consultar o orçamento no PostgreSQL: " .. tostring(spent)))
      return nil
    end
    ctx.sched.sleep(M.BUDGET_WAIT_MS)
  end
  return nil
end

-- The answer came (tokens billed, 0 for a failure): the reservation gives
-- way to what it cost.
local function settle(ctx, reservation, tokens)
  ctx.spent.tokens = ctx.spent.tokens + tokens
  if reservation.upper == 0 then return end
  if reservation.shared then
    ctx.store:settle_request(reservation.upper, tokens)
  else
    local b = local_budget(ctx)
    b.reserved = b.reserved - reservation.upper
  end
end

-- A work unit records each request before it leaves, so the run's count
-- of requests survives a kill -9. False when the unit was lost or the
-- database failed (the unit is stopped).
local function record_request(ctx)
  if not ctx.store.work_unit then return true end
  local ok, err = ctx.store:record_request()
  if ok then return true end
  ctx:abort(exit.unreachable, ok == nil and ("falha ao registrar o pedido de embedding no PostgreSQL: " .. tostring(err))
    or tostring(err))
  return false
end

-- Past the budget and the endpoint's limiter, and recorded: the lease of
-- the endpoint the call goes to (ragops.provider.endpoints), or nil (the
-- call must not leave; nothing is held).
local function clear_to_send(ctx, reservation, estimated_tokens)
  local endpoints = ctx.env.endpoints
  local lease = endpoints:acquire(estimated_tokens)
  if record_request(ctx) then return lease end
  endpoints:abandon(lease)
  settle(ctx, reservation, 0)
  return nil
end

-- One provider call: budget, endpoint (its limiter and health), latency,
-- metrics and alert events around it.
local function call_provider(ctx, texts, estimated_tokens, upper, delta)
  local env, s = ctx.env, ctx.sched
  local reservation = reserve(ctx, estimated_tokens, upper)
  local lease = reservation and clear_to_send(ctx, reservation, estimated_tokens)
  if not lease then return nil, "interrompido", { class = "cancelled" } end
  delta.requests = delta.requests + 1
  ctx.spent.requests = ctx.spent.requests + 1
  local t0 = s.now()
  local b, e, i = env.endpoints:call(lease, texts)
  settle(ctx, reservation, b and b:tokens() or 0)
  local latency = s.now() - t0
  local status = i and i.status or (b and 200) or 0
  e, i = env.endpoints:release(lease, b, e, i)
  instruments.embed_call(ctx, status, latency / 1000, b ~= nil, i and i.class, lease.endpoint.name)
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
    ctx:abort(exit.unreachable, tostring(err)) -- a broken or hostile provider, not this batch
    return true
  end
  if info.class == "fatal" then
    ctx:abort(exit.unreachable, "o provedor de embeddings recusou a configuração: " .. tostring(err))
    return true
  end
  if info.kind == "dimension" then
    -- Every attempt came back with the wrong dimension: a configuration
    -- error (model or provider.dim), not a per-document failure.
    ctx:abort(exit.unreachable, "o provedor devolve vetores de dimensão diferente de provider.dim em todas as tentativas ("
      .. tostring(err) .. "); confira o modelo e provider.dim/dimensions")
    return true
  end
  return false
end

-- What a successful batch sent and cost, in the unit's delta (the tokens
-- the provider billed against the bytes and characters sent calibrate the
-- dry-run's estimates; see ragops.run.dryrun).
local function account_batch(ctx, texts, batch, delta, entity_type)
  local tokens = batch:tokens()
  delta.tokens = delta.tokens + tokens -- (ctx.spent has them since the answer: settle)
  for _, t in ipairs(texts) do requests.add_sent(delta, t) end
  instruments.batch_embedded(ctx, entity_type, tokens)
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
  local texts, estimated_tokens, upper = {}, 0, 0
  for i, it in ipairs(items) do
    texts[i] = it.text
    estimated_tokens = estimated_tokens + ratelimit.estimate_text_tokens(it.text)
    upper = upper + #it.text + 2 -- every byte a token, and a margin per input
  end
  local batch, err, info, attempts = retry.call(ctx.plan.retry, ctx.sched, function()
    if ctx:halted() then return nil, "interrompido", { class = "cancelled" } end
    return call_provider(ctx, texts, estimated_tokens, upper, delta)
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
    ctx:abort(exit.unreachable, "provedor de embeddings inalcançável: " .. tostring(err))
  end
  return {}, { { items = items, err = err, info = info, attempts = attempts } }
end

-- The limits of an embedder without any (a fake): batch.size alone.
local NO_LIMITS = {}

local function text_of(item) return item.text end

-- The failed groups of the inputs estimated over the provider's per-input
-- limit: dead letters named as such, never sent.
function M.too_long_groups(too_long, limits)
  local out = {}
  for _, t in ipairs(too_long) do
    out[#out + 1] = { items = { t.item }, attempts = 0, info = { class = "input_too_long", kind = "input_too_long" },
      err = ("entrada longa demais para o modelo: cerca de %d tokens estimados, e o limite por entrada é %d "
        .. "(provider.limits.max_input_tokens); não foi enviada. Diminua chunking.max_chars (ou chunking.max_tokens) "
        .. "ou deixe o provedor truncar (provider.truncate = true)"):format(t.tokens, limits.max_input_tokens) }
  end
  return out
end

-- With provider.truncate, inputs over the per-input limit go anyway (truncated
-- of them in this unit): said once per run.
local function warn_truncation(ctx, truncated, limits)
  if truncated == 0 or ctx.env.truncation_warned then return end
  ctx.env.truncation_warned = true
  ctx.log.warn("há entradas com mais de %d tokens estimados (provider.limits.max_input_tokens): o provedor vai "
    .. "truncá-las (provider.truncate = true), e o vetor representa só o começo do texto", limits.max_input_tokens)
end

-- Embeds every item in requests within the provider's limits (at most
-- batch.size inputs each). Returns parts, failed groups.
function M.embed_items(ctx, items, delta, entity_type)
  local limits = ctx.env.endpoints.limits or NO_LIMITS
  local slices, too_long, truncated = requests.form(items, text_of, limits, ctx.plan.batch.size,
    limits.tokens_per_byte or 0.25)
  warn_truncation(ctx, truncated, limits)
  local parts, failed = {}, M.too_long_groups(too_long, limits)
  for _, slice in ipairs(slices) do
    if ctx:halted() then break end
    local p, f = embed_slice(ctx, slice, delta, entity_type)
    append(parts, p)
    append(failed, f)
  end
  return parts, failed
end

return M
