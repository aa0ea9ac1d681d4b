-- ragops.runner: runs a validated plan. For each source it pages through the
-- rows (keyset, one page = one unit of work), and `batch.in_flight` worker
-- coroutines turn each unit into documents and chunks, skip what is
-- unchanged (by content hash), embed the rest (retry, bisection of
-- permanently failing batches), and write the unit in one transaction with
-- its checkpoint. Everything it touches comes in through `env`, so the same
-- code runs against PostgreSQL + HTTP or against ragops.testing's fakes:
--
-- env = {
--   sched    = scheduler (ragops.sched.real() or a fake),
--   store    = storage backend (ragops.store_pg or a fake),
--   embedder = object with :embed(texts) -> vecbatch | nil, err, info,
--   hash     = function(content, model, dim) -> string,
--   model, dim = embedding model and dimension (part of the content hash),
--   log      = ragops.log-like object (info/warn/error),
--   run_id   = id of the run record (nil in tests),
--   checkpoint = { [entity_type] = { seq = n, after = key_text, stats = {...} } } to resume from,
--   alerts   = optional ragops.alerts: :observe(event) -> action|nil, :gate(stop?),
--   limiter  = optional ragops.ratelimit: :acquire(tokens), :release(outcome), :pause_until(ms),
--   metrics  = optional ragops.metrics registry,
--   range    = optional { after = key_text|nil, upto = key_text|nil }: process only
--              keys in (after, upto] of the plan's single source, without
--              checkpoints or end-of-source deletions (a scale-out work unit),
-- }
-- Counters are kept per unit and merged when the unit commits; the
-- checkpoint carries the counters of the committed prefix, so a resumed run
-- reports the same totals as an uninterrupted one.
local cjson = require "cjson"
local chunk = require "ragops.chunk"
local retry = require "ragops.retry"
local sandbox = require "ragops.sandbox"
local sched = require "ragops.sched"

local M = {}

local function key_text(v)
  if type(v) == "number" and v == math.floor(v) and math.abs(v) < 2^53 then
    return ("%d"):format(v)
  end
  return tostring(v)
end
M.key_text = key_text

local function new_counters()
  return { processed = 0, succeeded = 0, failed = 0, skipped = 0, embedded = 0,
           deleted = 0, chunks = 0, tokens = 0, requests = 0, retries = 0, refreshed = 0 }
end

local COUNTER_KEYS = { "processed", "succeeded", "failed", "skipped", "embedded",
                       "deleted", "chunks", "tokens", "requests", "retries", "refreshed" }

-- Retry policy for PostgreSQL reads and writes (connection loss, restart):
-- independent of the plan's provider policy, sized for a restart that takes
-- tens of seconds (expected total wait ~40 s before giving up).
M.DB_RETRY = { attempts = 12, base_ms = 250, max_ms = 10000 }

-- SQLSTATEs worth retrying a write for: connection loss, shutdown, conflicts.
local function retryable_sqlstate(state)
  if not state then return false end
  return state:sub(1, 2) == "08" or state == "57P01" or state == "57P02"
      or state == "57P03" or state == "40001" or state == "40P01"
end

-- Sources the plan's scope selects (scope.entity_types), in plan order.
function M.selected_sources(plan)
  local wanted
  if plan.scope and plan.scope.entity_types then
    wanted = {}
    for _, t in ipairs(plan.scope.entity_types) do wanted[t] = true end
  end
  local out = {}
  for _, source in ipairs(plan.sources) do
    if not wanted or wanted[source.entity_type] then out[#out + 1] = source end
  end
  return out
end

function M.run(plan, env)
  local s, store, embedder, log = env.sched, env.store, env.embedder, env.log
  local started = s.now()
  local stats = new_counters()
  stats.per_entity_type = {}
  stats.missing_entities = {}
  local ctx = { abort = nil }
  local hook_budget = sandbox.hook_budget()

  local function counters_for(entity_type)
    local c = stats.per_entity_type[entity_type]
    if not c then c = new_counters(); stats.per_entity_type[entity_type] = c end
    return c
  end
  -- Adds a unit's counters (delta) to the run totals.
  local function merge(entity_type, delta)
    local c = counters_for(entity_type)
    for _, k in ipairs(COUNTER_KEYS) do
      local n = delta[k] or 0
      if n ~= 0 then stats[k] = stats[k] + n; c[k] = c[k] + n end
    end
  end
  local function add(entity_type, key, n)
    if n == 0 then return end
    merge(entity_type, { [key] = n })
  end
  -- A resumed run starts from the counters of its checkpointed prefix.
  for entity_type, cp in pairs(env.checkpoint or {}) do
    if type(cp) == "table" and type(cp.stats) == "table" then merge(entity_type, cp.stats) end
  end
  local metrics = env.metrics
  local function count_metric(name, labels, n)
    if metrics and n ~= 0 then metrics:counter(name, nil, labels):inc(n) end
  end

  -- Stops the run: producers stop reading, workers drop remaining units.
  local function abort(code, reason)
    if not ctx.abort then
      ctx.abort = { code = code, reason = reason }
      log.error("execução interrompida: %s", reason)
    end
  end
  -- The CLI stops a run on SIGINT/SIGTERM through env.stop.
  env.stop = abort

  local read_with_retry
  local function observe(event)
    if env.alerts then
      local action = env.alerts:observe(event)
      if action == "abort" and not ctx.abort then
        abort(3, env.alerts.last_reason or "limite de alerta excedido")
      end
    end
  end

  -- Embeds items ({ text = ..., doc = ... }); returns parts, failed groups.
  -- delta collects the unit's counters (requests, retries, tokens).
  local function embed_items(items, entity_type, delta)
    local texts, estimated_tokens = {}, 0
    for i, it in ipairs(items) do
      texts[i] = it.text
      estimated_tokens = estimated_tokens + math.ceil(#it.text / 4)
    end
    local limiter = env.limiter
    local batch, err, info, attempts = retry.call(plan.retry, s.sleep, function()
      delta.requests = delta.requests + 1
      if limiter then limiter:acquire(estimated_tokens) end
      local t0 = s.now()
      local b, e, i = embedder:embed(texts)
      local latency = s.now() - t0
      local status = i and i.status or (b and 200) or 0
      if limiter then
        -- A Retry-After holds every request, not only this one (capped).
        if not b and i and i.retry_after_ms and i.retry_after_ms > 0 then
          limiter:pause_until(s.now() + math.min(i.retry_after_ms, retry.MAX_RETRY_AFTER_MS))
        end
        limiter:release({ status = status, ok = b ~= nil })
      end
      count_metric("ragops_embed_requests_total", { status = tostring(status) }, 1)
      if metrics then metrics:histogram("ragops_embed_latency_seconds"):observe(latency / 1000) end
      observe({ kind = "embed", ok = b ~= nil, status = status, latency_ms = latency,
                class = i and i.class })
      return b, e, i
    end, function(attempt, delay, e, i)
      delta.retries = delta.retries + 1
      count_metric("ragops_retries_total", nil, 1)
      if i and i.status == 429 then
        log.warn("limite de taxa do provedor (%s); chamada %d, aguardando %d ms (429 não gasta tentativa)",
          e, attempt, delay)
      else
        log.warn("falha temporária no provedor (%s); chamada %d (até %d tentativas x %d rodadas), "
          .. "nova tentativa em %d ms", e, attempt, plan.retry.attempts, plan.retry.rounds or 1, delay)
      end
    end)
    if batch then
      delta.tokens = delta.tokens + batch:tokens()
      count_metric("ragops_embed_tokens_total", nil, batch:tokens())
      return { { items = items, batch = batch } }, {}
    end
    info = info or {}
    if info.class == "fatal" then
      abort(4, "o provedor de embeddings recusou a configuração: " .. tostring(err))
      return {}, {}
    end
    if info.kind == "malformed" and tostring(err):find("tem dimensão", 1, true) then
      -- Every attempt came back with the wrong dimension: a configuration
      -- error (model or provider.dim), not a per-document failure.
      abort(4, "o provedor devolve vetores de dimensão diferente de provider.dim em todas as tentativas ("
        .. tostring(err) .. "); confira o modelo e provider.dim/dimensions")
      return {}, {}
    end
    if info.class == "permanent" and #items > 1 then
      local mid = math.floor(#items / 2)
      local left, right = {}, {}
      for i, it in ipairs(items) do
        if i <= mid then left[#left + 1] = it else right[#right + 1] = it end
      end
      local p1, f1 = embed_items(left, entity_type, delta)
      local p2, f2 = embed_items(right, entity_type, delta)
      for _, p in ipairs(p2) do p1[#p1 + 1] = p end
      for _, f in ipairs(f2) do f1[#f1 + 1] = f end
      return p1, f1
    end
    if info.kind == "connection" and stats.embedded == 0 and delta.embedded == 0 then
      abort(4, "provedor de embeddings inalcançável: " .. tostring(err))
    end
    return {}, { { items = items, err = err, info = info, attempts = attempts } }
  end

  -- Turns the rows of a unit into entities with chunks and hashes.
  local function build_entities(unit)
    local source = unit.source
    local entities, failures = {}, {}
    for _, row in ipairs(unit.rows) do
      local id = key_text(row[source.key])
      local ok, doc, class = sandbox.call(hook_budget, source.document, row)
      if not ok then
        failures[#failures + 1] = { entity_type = source.entity_type, entity_id = id,
          error_class = class == "error" and "transform" or class, attempts = 1,
          message = "document() falhou: " .. doc }
        local too_many = sandbox.breach_limit_reached(hook_budget)
        if too_many then abort(2, too_many) end
      else
        local e = { id = id, chunks = {} }
        local updated = source.updated_at and row[source.updated_at]
        e.updated_at = updated ~= nil and tostring(updated) or nil
        if type(doc) == "table" and type(doc.content) == "string" and doc.content:find("%S") then
          local metadata = cjson.encode(doc.metadata or {})
          for i, text in ipairs(chunk.split(doc.content, plan.chunking.max_chars,
                                            plan.chunking.overlap)) do
            e.chunks[i] = { index = i - 1, content = text, metadata = metadata,
                            hash = env.hash(text, env.model, tostring(env.dim)) }
          end
        end
        entities[#entities + 1] = e
      end
    end
    return entities, failures
  end

  -- Runs a store read, retrying on connection loss (PostgreSQL restarting).
  -- Other errors return at once. Returns result or nil, err.
  function read_with_retry(fn)
    local result, err = retry.call(env.db_retry or M.DB_RETRY, s.sleep, function()
      local r, e, state = fn()
      if r then return r end
      return nil, e, { class = retryable_sqlstate(state) and "transient" or "fatal" }
    end, function(attempt, delay, e)
      log.warn("falha ao ler do PostgreSQL (%s); tentativa %d de %d em %d ms",
        e, attempt, (env.db_retry or M.DB_RETRY).attempts, delay)
    end)
    return result, err
  end

  -- Writes a unit, retrying on connection loss. Returns result or nil.
  local function write_with_retry(payload, entity_type)
    local result, err, info = retry.call(env.db_retry or M.DB_RETRY, s.sleep, function()
      local r, e, state = store:write_unit(payload)
      if r then return r end
      return nil, e, { class = retryable_sqlstate(state) and "transient" or "fatal", sqlstate = state }
    end, function(attempt, delay, e)
      log.warn("falha ao gravar no PostgreSQL (%s); tentativa %d de %d em %d ms",
        e, attempt, (env.db_retry or M.DB_RETRY).attempts, delay)
    end)
    if not result then
      abort(4, "não foi possível gravar no PostgreSQL: " .. tostring(err)
        .. (info and info.sqlstate and (" [SQLSTATE " .. info.sqlstate .. "]") or ""))
    end
    return result
  end

  local function process_unit(unit, tracker)
    local source = unit.source
    local entity_type = source.entity_type
    local delta = new_counters()
    delta.processed = #unit.rows
    local entities, failures = build_entities(unit)
    local ids = {}
    -- unit.seen is only kept for id-scoped runs (memory stays flat otherwise).
    for i, e in ipairs(entities) do ids[i] = e.id; if unit.seen then unit.seen[e.id] = true end end
    local existing = {}
    if #ids > 0 then
      local err
      existing, err = read_with_retry(function() return store:existing_hashes(entity_type, ids) end)
      if not existing then
        abort(4, "falha ao consultar documentos existentes: " .. tostring(err))
        return
      end
    end

    -- Decide per entity what to embed and what to prune.
    local items, changed, prune_ids, prune_counts = {}, {}, {}, {}
    local refresh = { entity_ids = {}, chunk_indexes = {}, metadata = {}, updated_at = {} }
    local skipped = 0
    for _, e in ipairs(entities) do
      local old = existing[e.id]
      local dirty = plan.mode == "overwrite" or (old and old.count or 0) ~= #e.chunks
      local to_embed = {}
      for _, c in ipairs(e.chunks) do
        if plan.mode == "overwrite" or not old or old.hashes[c.index] ~= c.hash then
          to_embed[#to_embed + 1] = c
          dirty = true
        end
      end
      if not dirty then
        skipped = skipped + 1
        unit.handled[#unit.handled + 1] = e.id
        -- Same content: no embedding, but metadata and source_updated_at
        -- are refreshed in place when they changed.
        for _, c in ipairs(e.chunks) do
          refresh.entity_ids[#refresh.entity_ids + 1] = e.id
          refresh.chunk_indexes[#refresh.chunk_indexes + 1] = c.index
          refresh.metadata[#refresh.metadata + 1] = c.metadata
          refresh.updated_at[#refresh.updated_at + 1] = e.updated_at or ""
        end
      else
        changed[e.id] = { entity = e, pending = #to_embed, failed = false }
        for _, c in ipairs(to_embed) do items[#items + 1] = { text = c.content, chunk = c, entity = e } end
        if old and old.count > #e.chunks then
          prune_ids[#prune_ids + 1] = e.id
          prune_counts[#prune_counts + 1] = #e.chunks
        end
      end
    end
    delta.skipped = skipped

    -- Embed in slices of batch.size.
    local parts, failed_groups = {}, {}
    local size = plan.batch.size
    for first = 1, #items, size do
      if ctx.abort then return end
      local slice = {}
      for i = first, math.min(first + size - 1, #items) do slice[#slice + 1] = items[i] end
      local p, f = embed_items(slice, entity_type, delta)
      for _, x in ipairs(p) do parts[#parts + 1] = x end
      for _, x in ipairs(f) do failed_groups[#failed_groups + 1] = x end
    end
    if ctx.abort then merge(entity_type, { requests = delta.requests, retries = delta.retries, tokens = delta.tokens }); return end

    -- An entity with any failed chunk is not written at all.
    for _, g in ipairs(failed_groups) do
      for _, it in ipairs(g.items) do
        local c = changed[it.entity.id]
        if not c.failed then
          c.failed = true
          failures[#failures + 1] = { entity_type = entity_type, entity_id = it.entity.id,
            chunk_index = it.chunk.index, error_class = g.info.class or "transient",
            http_status = g.info.status ~= 0 and g.info.status or nil,
            message = tostring(g.err), attempts = g.attempts }
        end
      end
    end

    local payload = { entity_type = entity_type, run_id = env.run_id, parts = {},
                      chunk_counts = { entity_ids = {}, counts = {} }, refresh = refresh }
    local embedded, written_ids = 0, {}
    for _, part in ipairs(parts) do
      local docs = {}
      for i, it in ipairs(part.items) do
        if not changed[it.entity.id].failed then
          docs[#docs + 1] = { entity_type = entity_type, entity_id = it.entity.id,
            chunk_index = it.chunk.index, content = it.chunk.content,
            content_hash = it.chunk.hash, metadata = it.chunk.metadata,
            embedding_model = env.model, source_updated_at = it.entity.updated_at, vec = i }
        end
      end
      if #docs > 0 then
        payload.parts[#payload.parts + 1] = { docs = docs, batch = part.batch }
        embedded = embedded + #docs
      end
    end
    for i, id in ipairs(prune_ids) do
      if not changed[id].failed then
        payload.chunk_counts.entity_ids[#payload.chunk_counts.entity_ids + 1] = id
        payload.chunk_counts.counts[#payload.chunk_counts.counts + 1] = prune_counts[i]
      end
    end
    for id, c in pairs(changed) do
      if not c.failed then written_ids[#written_ids + 1] = id end
    end
    delta.succeeded = #written_ids
    delta.embedded = embedded
    delta.failed = #failures
    for _, e in ipairs(entities) do delta.chunks = delta.chunks + #e.chunks end
    -- The pruned count is only known after the write: it goes into the
    -- checkpoint of the next unit that commits.
    if not env.range then payload.checkpoint = tracker:candidate(unit, delta) end

    local result = write_with_retry(payload, entity_type)
    if not result then
      merge(entity_type, { requests = delta.requests, retries = delta.retries, tokens = delta.tokens })
      return
    end
    delta.deleted = result.pruned
    delta.refreshed = result.refreshed or 0
    tracker:committed(unit, delta)
    merge(entity_type, delta)
    count_metric("ragops_documents_total", { entity_type = entity_type, result = "embedded" }, #written_ids)
    count_metric("ragops_documents_total", { entity_type = entity_type, result = "skipped" }, skipped)
    count_metric("ragops_documents_total", { entity_type = entity_type, result = "failed" }, #failures)
    count_metric("ragops_documents_total", { entity_type = entity_type, result = "deleted" }, result.pruned)

    if #failures > 0 then
      count_metric("ragops_dead_letters_total", { entity_type = entity_type }, #failures)
      for _, f in ipairs(failures) do
        log.warn("falha permanente em %s %s: %s", f.entity_type, f.entity_id, f.message)
      end
      local ok, err = store:record_failures(env.run_id, failures)
      if not ok then abort(4, "falha ao registrar na fila de falhas: " .. tostring(err)) end
    end
    -- Open dead letters of entities now in the index (written or already
    -- up to date) are resolved, keeping their history.
    for _, id in ipairs(written_ids) do unit.handled[#unit.handled + 1] = id end
    if #unit.handled > 0 and store.resolve_failures then
      store:resolve_failures(env.run_id, entity_type, unit.handled)
    end
    for _ = 1, #unit.rows - #failures do observe({ kind = "document", ok = true }) end
    for _ = 1, #failures do observe({ kind = "document", ok = false }) end
  end

  -- Tracks which units committed, to compute a checkpoint that never skips
  -- an uncommitted unit: the last key of the longest committed prefix.
  local function add_counters(into, delta)
    for _, k in ipairs(COUNTER_KEYS) do into[k] = (into[k] or 0) + (delta[k] or 0) end
    return into
  end
  local function new_tracker(first_seq, after, base_stats)
    local t = { next = first_seq + 1, done = {}, seq = first_seq, after = after,
                stats = add_counters(new_counters(), base_stats or {}) }
    -- Checkpoint to write with unit's transaction, assuming it commits.
    function t:candidate(unit, delta)
      local seq, key = self.seq, self.after
      local prefix = add_counters({}, self.stats)
      local n = self.next
      while true do
        local d
        if n == unit.seq then d = { key = unit.last_key, delta = delta } else d = self.done[n] end
        if d == nil then break end
        seq, key = n, d.key
        add_counters(prefix, d.delta)
        n = n + 1
      end
      return { seq = seq, after = key, stats = prefix }
    end
    function t:committed(unit, delta)
      self.done[unit.seq] = { key = unit.last_key, delta = delta }
      while self.done[self.next] ~= nil do
        local d = self.done[self.next]
        self.seq, self.after = self.next, d.key
        add_counters(self.stats, d.delta)
        self.done[self.next] = nil
        self.next = self.next + 1
      end
    end
    return t
  end

  local last_progress = s.now()
  local function progress(entity_type)
    local now = s.now()
    if now - last_progress >= (env.progress_every_ms or 5000) then
      last_progress = now
      local elapsed = (now - started) / 1000
      local fmt = require("ragops.report")
      log.info("progresso: %s processados, %s gravados, %s inalterados, %s falhas (%s docs/s)",
        fmt.format_count(stats.processed), fmt.format_count(stats.succeeded),
        fmt.format_count(stats.skipped), fmt.format_count(stats.failed),
        fmt.format_number(elapsed > 0 and stats.processed / elapsed or 0, 1))
    end
  end

  local function run_source(source)
    local entity_type = source.entity_type
    counters_for(entity_type)
    local cp = (env.checkpoint or {})[entity_type] or {}
    local tracker = new_tracker(cp.seq or 0, cp.after, cp.stats)
    local seen = (plan.scope and plan.scope.entity_ids) and {} or nil
    local queue = sched.queue(s, plan.batch.in_flight)
    local group = sched.group(s)
    for _ = 1, plan.batch.in_flight do
      group:spawn(function()
        while true do
          local unit = queue:pop()
          if not unit then return end
          if not ctx.abort and env.alerts and env.alerts.gate then
            env.alerts:gate(function() return ctx.abort ~= nil end)
          end
          if not ctx.abort then
            process_unit(unit, tracker)
            progress(entity_type)
          end
        end
      end)
    end
    local range = env.range
    local after, seq, complete = cp.after, cp.seq or 0, false
    if range then after = range.after end
    if cp.after then
      log.info("retomando %s a partir da chave %s (checkpoint)", entity_type, cp.after)
    end
    while not ctx.abort do
      local rows, err = read_with_retry(function()
        return store:fetch_page(source, plan.scope, after, plan.batch.size, range and range.upto)
      end)
      if not rows then
        abort(4, ("falha ao ler a fonte %q: %s"):format(entity_type, tostring(err)))
        break
      end
      if #rows == 0 then complete = true; break end
      seq = seq + 1
      local last_key = key_text(rows[#rows][source.key])
      queue:push({ seq = seq, rows = rows, last_key = last_key, source = source, seen = seen,
                   handled = {} })
      after = last_key
      if #rows < plan.batch.size then complete = true; break end
    end
    queue:close()
    group:wait()
    -- A work unit's range is not the whole source: deletions belong to the
    -- run as a whole (see ragops.workunits).
    if ctx.abort or not complete or range then return end

    local scope = plan.scope or {}
    if scope.entity_ids and #scope.entity_ids > 0 then
      -- Entities asked for by id that the source no longer has: remove them.
      local missing = {}
      for _, id in ipairs(scope.entity_ids) do
        if not seen[tostring(id)] then missing[#missing + 1] = tostring(id) end
      end
      if #missing > 0 then
        local n, err = store:delete_entities(entity_type, missing)
        if not n then abort(4, "falha ao remover entidades ausentes: " .. tostring(err)); return end
        add(entity_type, "deleted", n)
        if store.resolve_failures then store:resolve_failures(env.run_id, entity_type, missing) end
        for _, id in ipairs(missing) do
          stats.missing_entities[#stats.missing_entities + 1] = { entity_type = entity_type, entity_id = id }
          log.info("entidade %s %s não existe mais na fonte; %d documento(s) removido(s)",
            entity_type, id, n)
        end
      end
    elseif plan.delete_missing and not scope.since and not scope["until"] then
      local n, err = store:delete_orphans(source)
      if not n then abort(4, "falha ao remover documentos órfãos: " .. tostring(err)); return end
      if n > 0 then log.info("%d documento(s) de %s removido(s): entidades ausentes da fonte", n, entity_type) end
      add(entity_type, "deleted", n)
    end
  end

  for _, source in ipairs(M.selected_sources(plan)) do
    if ctx.abort then break end
    log.info("indexando %q", source.entity_type)
    run_source(source)
  end

  stats.elapsed_s = (s.now() - started) / 1000
  stats.throughput = stats.elapsed_s > 0 and stats.processed / stats.elapsed_s or 0
  stats.aborted = ctx.abort
  if env.alerts and env.alerts.fired and #env.alerts.fired > 0 then stats.alerts = env.alerts.fired end
  return stats
end

M.COUNTER_KEYS = COUNTER_KEYS
return M
