-- ragops.obs.instruments: the run's Prometheus metrics, fed by the
-- stages (through ctx, see ragops.run.context) into env.metrics (a
-- ragops.obs.metrics registry, served by the metrics endpoint, pushed to a
-- Pushgateway and written to the textfile). Every series carries the
-- `plan` label; `entity_type`, `status`, `class`, `outcome` are the only
-- other labels (bounded: no run id, no entity id), plus `worker` (an
-- operator-chosen or host name, never a pid) on the two scale-out unit
-- counters ragops.run.workunits feeds. The list, with meaning and PromQL
-- examples, is in docs/alertas-e-metricas.md.
local metrics = require "ragops.obs.metrics"

local M = {}

-- name -> { type, pt-BR help }: the engine's metrics (ragops.obs.metrics).
M.METRICS = metrics.ENGINE

local function labels_of(ctx, extra)
  local out = { plan = ctx.plan.name }
  for k, v in pairs(extra or {}) do out[k] = v end
  return out
end

local function family(ctx, kind, name)
  local registry = ctx.env.metrics
  if not registry then return nil end
  local spec = M.METRICS[name]
  assert(spec and spec[1] == kind, "métrica não declarada em instruments.METRICS: " .. name)
  return registry, spec[2]
end

function M.count(ctx, name, labels, n)
  local registry, help = family(ctx, "counter", name)
  if registry and n ~= 0 then registry:counter(name, help, labels_of(ctx, labels)):inc(n) end
end

function M.set(ctx, name, labels, value)
  local registry, help = family(ctx, "gauge", name)
  if registry then registry:gauge(name, help, labels_of(ctx, labels)):set(value) end
end

function M.observe(ctx, name, labels, value)
  local registry, help = family(ctx, "histogram", name)
  if registry then registry:histogram(name, help, nil, labels_of(ctx, labels)):observe(value) end
end

-- A unit committed with delta (its counters, resolved = dead letters resolved).
function M.unit_committed(ctx, entity_type, delta)
  local function docs(outcome, n)
    M.count(ctx, "ragops_documents_total", { entity_type = entity_type, outcome = outcome }, n)
  end
  docs("embedded", delta.succeeded)
  docs("skipped", delta.skipped)
  docs("no_document", delta.no_document or 0)
  docs("refreshed", delta.refreshed or 0)
  docs("failed", delta.failed)
  docs("deleted", delta.deleted)
  M.count(ctx, "ragops_units_total", { entity_type = entity_type }, 1)
  M.count(ctx, "ragops_dead_letters_total", { entity_type = entity_type }, delta.failed)
  M.count(ctx, "ragops_dead_letters_resolved_total", { entity_type = entity_type }, delta.resolved or 0)
  M.set(ctx, "ragops_last_progress_timestamp_seconds", nil, os.time())
  M.refresh(ctx)
end

-- One provider call answered (or not): status, latency, error class, and
-- the endpoint it went to.
function M.embed_call(ctx, status, latency_s, ok, class, endpoint)
  M.count(ctx, "ragops_embed_requests_total", { status = tostring(status) }, 1)
  if endpoint then
    M.count(ctx, "ragops_provider_endpoint_requests_total", { endpoint = endpoint, outcome = ok and "ok" or "failed" }, 1)
  end
  M.observe(ctx, "ragops_embed_latency_seconds", nil, latency_s)
  if not ok then M.count(ctx, "ragops_embed_errors_total", { class = class or "transient" }, 1) end
end

-- A successful batch: tokens billed and what they cost.
function M.batch_embedded(ctx, entity_type, tokens)
  M.count(ctx, "ragops_batches_total", { entity_type = entity_type }, 1)
  M.count(ctx, "ragops_embed_tokens_total", nil, tokens)
  local price = ctx.env.price_per_1m_tokens
  if price then M.count(ctx, "ragops_embed_cost_usd_total", nil, tokens * price / 1e6) end
end

-- Rows of a source the run will read (a count at its start).
function M.source_rows(ctx, entity_type, rows)
  ctx.source_rows[entity_type] = rows
  ctx.total = 0 -- rows of the whole run (the progress line's done/total and ETA)
  for _, n in pairs(ctx.source_rows) do ctx.total = ctx.total + n end
  M.set(ctx, "ragops_source_rows", { entity_type = entity_type }, rows)
  M.refresh(ctx)
end

-- Gauges that follow the run: pending rows and progress per what the
-- sources hold, the limiter's concurrency and waits.
function M.refresh(ctx)
  if not ctx.env.metrics then return end
  local total, done = 0, 0
  for entity_type, rows in pairs(ctx.source_rows) do
    local processed = ctx:counters_for(entity_type).processed
    M.set(ctx, "ragops_rows_pending", { entity_type = entity_type }, math.max(rows - processed, 0))
    total, done = total + rows, done + math.min(processed, rows)
  end
  if total > 0 then M.set(ctx, "ragops_progress_ratio", nil, done / total) end
  M.endpoints(ctx)
  local limiter = ctx.env.endpoints
  if limiter then
    local st = limiter:stats()
    M.set(ctx, "ragops_embed_concurrency", nil, st.concurrency or 0)
    local waited = (st.waited_ms or 0) / 1000
    M.count(ctx, "ragops_ratelimit_wait_seconds_total", nil, waited - (ctx.waited_reported))
    ctx.waited_reported = waited
  end
end

-- Per endpoint of the provider: live or taken out, and this process's
-- slice of its shared quota (with the holders sharing it).
function M.endpoints(ctx)
  local pool = ctx.env.endpoints
  if not pool then return end
  local now = ctx.sched.now()
  for _, e in ipairs(pool.list) do
    local labels = { endpoint = e.name }
    M.set(ctx, "ragops_provider_endpoint_up", labels, pool:live(e, now) and 1 or 0)
    local keeper = e.keeper
    if keeper and keeper.grants then
      M.set(ctx, "ragops_provider_quota_holders", labels, keeper.holders)
      for limit, value in pairs(keeper.grants) do
        M.set(ctx, "ragops_provider_quota_share", { endpoint = e.name, limit = limit }, value)
      end
    end
  end
end

-- After a full backfill of a source: how much of it the index covers. The
-- entities the plan decided have no document (no_document) are not owed a
-- document: out of the denominator (rows - no_document).
function M.coverage(ctx, entity_type, indexed, no_document)
  local rows, labels = (ctx.source_rows or {})[entity_type], { entity_type = entity_type }
  no_document = no_document or 0
  M.set(ctx, "ragops_indexed_entities", labels, indexed)
  M.set(ctx, "ragops_no_document_entities", labels, no_document)
  if rows then
    local owed = rows - no_document
    M.set(ctx, "ragops_coverage_ratio", labels, owed > 0 and math.min(indexed / owed, 1) or 1)
  end
end

-- The sync queue's depth and lag per entity type (ragops.sync.queue.depth).
function M.sync_queue(ctx, entity_types, depth)
  for _, entity_type in ipairs(entity_types) do
    local d = depth[entity_type] or { depth = 0, lag_s = 0 }
    M.set(ctx, "ragops_sync_queue_depth", { entity_type = entity_type }, d.depth)
    M.set(ctx, "ragops_sync_lag_seconds", { entity_type = entity_type }, d.lag_s)
  end
end

return M
