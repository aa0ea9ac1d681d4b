-- ragops.run.pipeline (the runner): runs a validated plan as a pipeline of named stages over
-- one context (ragops.run.context builds it):
--
--   read (stages.read)      keyset pages of a source, from the checkpoint
--   decide (stages.decide)  rows -> entities, chunks, hashes; skip/embed/prune
--   embed (stages.embed)    limiter + provider retry policy + bisection
--   write (stages.write)    one transaction: documents, dead letters, checkpoint
--   account (run.context)   counters, alerts, metrics, progress
--
-- One reader per source feeds `batch.in_flight` embedding workers; each
-- takes a unit through decide -> embed and hands it to the writers (at most
-- M.WRITERS), which take it through write -> account: a worker's next
-- request leaves while its last unit is being written (a single worker
-- writes its units itself, in order). After the source is read
-- to its end, entities the scope asked for and the source no longer has are
-- deleted (asking the source by key, never from memory). Everything the
-- runner touches comes in through `env`, so the same code runs against
-- PostgreSQL + HTTP or against ragops.testing's fakes:
--
-- env = {
--   sched    = scheduler (ragops.util.sched.real() or a fake),
--   store    = a Store (ragops.store.contract: ragops.store.pg, the fake, the dry run's),
--   embedder = object with :embed(texts) -> vecbatch | nil, err, info,
--   hash     = function(content, model, dim) -> string,
--   model, dim = embedding model and dimension (part of the content hash),
--   log      = ragops.obs.log-like object (info/warn/error),
--   run_id   = id of the run record (nil in tests),
--   checkpoint = { [entity_type] = { seq, after, stats, ahead } } to resume from,
--   alerts   = optional ragops.obs.alerts: :observe(event) -> action|nil, :gate(stop?),
--   endpoints = ragops.provider.endpoints pool every provider call goes through (its endpoints'
--              clients, limiters and quota keepers); without one, a pool of env.embedder and:
--   limiter  = optional ragops.provider.ratelimit: :acquire(tokens), :release(outcome), :pause_until(ms),
--   metrics  = optional ragops.obs.metrics registry,
--   spent    = optional { requests = n }: counts every embedding request,
--   batch    = optional ragops.run.batch session: the Batch API mode (requests into
--              part files, vectors from collected batches),
--   range    = optional { after = key_text|nil, upto = key_text|nil, ahead = parts|nil }: process only
--              keys in (after, upto] of the plan's single source, without
--              checkpoints or end-of-source deletions (a scale-out work unit),
-- }
-- The runner sets env.stop(code, reason) (signals) and env.progress_snapshot()
-- (ctx:snapshot(), drawn by ragops.obs.progress on the wiring's timer).
local run_context = require "ragops.run.context"
local decide = require "ragops.run.stages.decide"
local embed = require "ragops.run.stages.embed"
local endpoints = require "ragops.provider.endpoints"
local exit = require "ragops.util.exit"
local instruments = require "ragops.obs.instruments"
local read = require "ragops.run.stages.read"
local sandbox = require "ragops.plan.sandbox"
local sched = require "ragops.util.sched"
local write = require "ragops.run.stages.write"

local M = {}

M.key_text = decide.key_text
M.COUNTER_KEYS = run_context.COUNTER_KEYS

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

-- The stored hashes of entities, for a unit read without them (sync, or a
-- page whose store did not read them: the dry run's); nil after stopping the run.
local function stored_hashes(ctx, entity_type, entities)
  local ids = {}
  for i, e in ipairs(entities) do ids[i] = e.id end
  if #ids == 0 then return {} end
  local existing, err, state = ctx.store:existing_hashes(entity_type, ids)
  if not existing then ctx:abort_db("falha ao consultar documentos existentes", err, state) end
  return existing
end

-- decide -> embed for one unit: the job for a writer, or nil (nothing to
-- write after stopping; what it spent is kept).
local function embed_unit(ctx, unit)
  local entity_type = unit.source.entity_type
  local delta = run_context.new_counters()
  delta.processed = unit.row_count or #unit.rows
  local entities, failures = decide.build_entities(ctx, unit)
  local existing = unit.existing or stored_hashes(ctx, entity_type, entities)
  if not existing then return nil end
  local decision = decide.decide(ctx, entities, failures, existing, unit.existing ~= nil)
  if not decide.no_document_markers(ctx, entity_type, decision, existing) then return nil end
  delta.skipped = decision.skipped + (unit.fingerprint_skipped or 0)
  delta.no_document = decision.no_document
  -- The rows and what the page said of them are decided: not held while
  -- the unit waits for the provider and the writers (peak memory at a high
  -- in_flight).
  unit.row_count = unit.row_count or #unit.rows
  unit.rows, unit.existing, unit.updated_us, unit.fps = nil, nil, nil, nil
  local parts, failed_groups
  if ctx.env.batch then
    -- The Batch API mode (ragops.run.batch): requests into a part, or vectors of a collected batch.
    parts, failed_groups = ctx.env.batch:embed_items(ctx, unit, decision, delta)
  else
    parts, failed_groups = embed.embed_items(ctx, decision.items, delta, entity_type)
  end
  return { unit = unit, decision = decision, parts = parts, failed_groups = failed_groups, delta = delta }
end

-- What a unit spent on the provider, kept when it does not commit.
local function keep_spend(ctx, job)
  ctx:spend_dropped(job.unit.source.entity_type, job.delta, job.parts)
end

-- write -> account for one embedded unit.
local function write_job(ctx, job, tracker)
  local unit, delta = job.unit, job.delta
  if ctx:halted() then return keep_spend(ctx, job) end
  local payload = write.payload(ctx, unit, job.decision, job.parts, job.failed_groups, delta)
  local written = write.write(ctx, unit, payload, delta, tracker)
  -- The vectors live outside the Lua heap: freed now, not when collected
  -- (a dry run's batch-shaped stand-ins hold none).
  for _, part in ipairs(job.parts) do
    if part.batch and part.batch.release then part.batch:release() end
  end
  if not written then return keep_spend(ctx, job) end
  ctx:account_unit(unit.source.entity_type, delta, unit.row_count)
end

-- Runs fn(ctx, x, ...) so that an error ends the run cleanly (exit.internal,
-- "erro interno") instead of leaving a stage blocked on a queue nobody drains.
-- The Lua heap reaching the run's cap (sandbox.memory_mb) ends it the same
-- way, with that said in pt-BR. Near that cap the JIT is turned off first
-- (a safe point: see sandbox.interpret_near_run_cap).
local function guarded(ctx, what, entity_type, fn, ...)
  sandbox.interpret_near_run_cap()
  local ok, err = xpcall(fn, debug.traceback, ctx, ...)
  if ok then return err end
  local out_of_memory = sandbox.run_memory_message()
  if out_of_memory then
    local reason = ("%s (ao %s um lote de %s)"):format(out_of_memory, what, entity_type)
    ctx.log.error("%s", reason)
    ctx:abort(exit.usage, reason)
    return nil
  end
  ctx.log.error("erro interno ao %s um lote de %s: %s", what, entity_type, tostring(err))
  ctx:abort(exit.internal, ("erro interno ao %s um lote de %s: %s"):format(what, entity_type, tostring(err):match("^[^\n]*")))
  return nil
end

-- An embedding worker: takes units until the queue closes, decides and
-- embeds each, and hands it to the writers, so its next request leaves
-- while the last unit is being written. Without writers (a single worker,
-- where units must see the writes of the ones before) it writes itself.
local function embed_worker(ctx, queue, to_write, tracker)
  while true do
    local unit = queue:pop()
    if not unit then return end
    local alerts = ctx.env.alerts
    if not ctx.aborted and alerts and alerts.gate then
      alerts:gate(function() return ctx.aborted ~= nil end)
    end
    -- An alert abort lets units already taken finish; others stop now.
    if not ctx:halted() then
      local job = guarded(ctx, "processar", unit.source.entity_type, embed_unit, unit)
      if job and to_write then to_write:push(job)
      elseif job then guarded(ctx, "gravar", unit.source.entity_type, write_job, job, tracker) end
    end
  end
end

-- A writer: writes the embedded units until its queue closes.
local function writer(ctx, to_write, tracker)
  while true do
    local job = to_write:pop()
    if not job then return end
    guarded(ctx, "gravar", job.unit.source.entity_type, write_job, job, tracker)
  end
end

-- Writers per run: more would only wait for the pool's connections.
M.WRITERS = 8
-- Units read ahead of the embedding workers, at most: one page
-- (read.PAGE_UNITS); more only held rows in memory at a high in_flight.
M.READ_AHEAD = 8

-- Logs, per entity the source does not have, what its removal took away:
-- stored = { [id] = { count } } as the target held them before it.
local function log_missing(ctx, entity_type, missing, stored)
  for _, id in ipairs(missing) do
    ctx.stats.missing_entities[#ctx.stats.missing_entities + 1] = { entity_type = entity_type, entity_id = id }
    local n = stored[id] and stored[id].count or 0
    if n > 0 then
      ctx.log.info("entidade %s %s não existe mais na fonte; %d documento(s) removido(s)", entity_type, id, n)
    else
      ctx.log.info("entidade %s %s não existe na fonte e não tinha documentos no índice; nada removido",
        entity_type, id)
    end
  end
end

-- Entities the scope asked for by id that the source no longer has (asked
-- by key only, whatever the other filters): their documents are removed.
local function delete_missing_ids(ctx, source)
  local entity_type, ids = source.entity_type, ctx.plan.scope.entity_ids
  local present, err, state = ctx.store:present_keys(source, ids)
  if not present then ctx:abort_db("falha ao consultar a fonte por chave", err, state); return end
  local missing = {}
  for _, id in ipairs(ids) do
    if not present[tostring(id)] then missing[#missing + 1] = tostring(id) end
  end
  if #missing == 0 then return end
  -- What each one has stored, so the log says what was removed from which.
  local stored, serr, sstate = ctx.store:existing_hashes(entity_type, missing)
  if not stored then ctx:abort_db("falha ao consultar documentos existentes", serr, sstate); return end
  local n, derr, dstate = ctx.store:delete_entities(ctx.env.run_id, entity_type, missing)
  if not n then ctx:abort_db("falha ao remover entidades ausentes", derr, dstate); return end
  ctx:merge(entity_type, { deleted = n })
  log_missing(ctx, entity_type, missing, stored)
end

-- A re-run skips, without calling document(), the rows whose fingerprint
-- (the row and the plan, see ragops.run) the target holds on the entity's
-- chunk 0: loaded here once per source, into C memory (8 bytes and a mark
-- per stored entity). Not where loading the whole target's fingerprints
-- costs more than it saves: a work unit's range, a list of ids, a --limit
-- sanity run; nor in overwrite mode (nothing is skipped). Returns ctx.fingerprints's
-- entry { seed, set, stored }, or nil.
local function load_fingerprints(ctx, source)
  local env, plan = ctx.env, ctx.plan
  if not env.fingerprint or env.range or plan.mode == "overwrite"
      or plan.limit or (plan.scope and plan.scope.entity_ids) then
    return nil
  end
  local set, err, state = ctx.store:load_fingerprints(source.entity_type)
  if not set then
    ctx:abort_db("falha ao ler as impressões digitais dos documentos", err, state)
    return nil
  end
  local stats = set:stats()
  ctx.fingerprints[source.entity_type] = { seed = ctx.fingerprint_seed(source), set = set,
                                   stored = stats.members + stats.unknown }
  return ctx.fingerprints[source.entity_type]
end

-- True when every entity the target held when the source began (a
-- fingerprint each) matched a row read since: none can be an orphan, and
-- the anti-join over the whole target is not needed. Deletion never relies
-- on this; only skipping it does.
local function all_stored_seen(ctx, source)
  local fingerprints = ctx.fingerprints[source.entity_type]
  if not fingerprints then return false end
  local stats = fingerprints.set:stats()
  return stats.unseen == 0 and stats.unknown == 0
end

-- The no-document markers of entities gone from the source, deleted along
-- with their documents (only when the store has markers of the type: the
-- same anti-join over the source). Returns true, or nil after stopping.
local function delete_orphan_markers(ctx, source)
  local store = ctx.store
  local any, err = store:has_no_document(source.entity_type)
  if any then any, err = store:delete_orphan_markers(source) end
  if any == nil then
    ctx:abort(exit.unreachable, "falha ao remover marcas de entidades sem documento ausentes da fonte: " .. tostring(err))
    return nil
  end
  return true
end

-- After a source was read to its end: deletions the scope allows.
local function delete_gone(ctx, source)
  local scope = ctx.plan.scope or {}
  if scope.entity_ids and #scope.entity_ids > 0 then return delete_missing_ids(ctx, source) end
  if not ctx.plan.delete_missing or scope.since or scope["until"] then return end
  local seen_all = all_stored_seen(ctx, source)
  local n, err, state = 0, nil, nil
  if not seen_all then n, err, state = ctx.store:delete_orphans(source) end
  if not n then ctx:abort_db("falha ao remover documentos órfãos", err, state); return end
  if n > 0 then
    ctx.log.info("%d documento(s) de %s removido(s): entidades ausentes da fonte", n, source.entity_type)
  end
  ctx:merge(source.entity_type, { deleted = n })
  if not seen_all and not delete_orphan_markers(ctx, source) then return end
  local c, indexed = ctx:counters_for(source.entity_type), nil
  if seen_all and c.succeeded == 0 and c.deleted == 0 then
    indexed = ctx.fingerprints[source.entity_type].set:stats().members -- nothing came or went
  else
    indexed = ctx.store:indexed_entities(source.entity_type)
  end
  -- The run read the whole source: its count of entities without a
  -- document is the source's (a resumed run's includes its checkpoint's).
  if indexed then instruments.coverage(ctx, source.entity_type, indexed, c.no_document) end
end

-- Takes the units produce(emit) hands on through `workers` workers
-- (batch.in_flight by default) and waits for them; returns produce's result.
-- The read stage feeds it here; ragops.sync.changes feeds it for sync.
function M.process_units(ctx, tracker, produce, workers)
  -- In the Batch API mode a unit's lines go to the part file in the order
  -- its writes commit: one worker, writing its units itself.
  workers = ctx.env.batch and 1 or workers or ctx.plan.batch.in_flight
  local writers = workers > 1 and math.min(workers, M.WRITERS) or 0
  local queue = sched.queue(ctx.sched, math.min(ctx.plan.batch.in_flight, M.READ_AHEAD))
  -- One embedded unit waits for a free writer, at most: a kill -9 redoes
  -- at most workers + writers + 1 units (embedding, waiting, writing).
  local to_write = writers > 0 and sched.queue(ctx.sched, 1) or nil
  local embedding, writing = sched.group(ctx.sched), sched.group(ctx.sched)
  for _ = 1, workers do embedding:spawn(embed_worker, ctx, queue, to_write, tracker) end
  for _ = 1, writers do writing:spawn(writer, ctx, to_write, tracker) end
  local result = produce(function(unit) queue:push(unit) end)
  queue:close()
  embedding:wait()
  if to_write then to_write:close() end
  writing:wait()
  return result
end

-- loading: the future of load_fingerprints for this source, when it started early.
local function run_source(ctx, source, loading)
  local env = ctx.env
  ctx:counters_for(source.entity_type)
  if loading then loading:get() else load_fingerprints(ctx, source) end
  if ctx.aborted then return end
  local cp = (env.checkpoint or {})[source.entity_type] or {}
  local tracker = not env.range and write.tracker(cp, ctx.sched.now()) or nil
  if cp.after then
    ctx.log.info("retomando %s a partir da chave %s (checkpoint)", source.entity_type, cp.after)
  end
  local complete = M.process_units(ctx, tracker, function(emit)
    -- A work unit's range skips the parts an earlier attempt committed
    -- (range.ahead); they count in the unit's totals, not in this attempt.
    return read.read_source(ctx, source, env.range and { ahead = env.range.ahead } or cp, { range = env.range },
      emit, function(unit, stats) if tracker then tracker:committed(unit, stats, true) end end)
  end)
  write.flush(ctx, source.entity_type, tracker, true)
  -- A work unit's range is not the whole source: deletions belong to the
  -- run as a whole (see ragops.run.workunits).
  if complete and not ctx.aborted and not env.range then delete_gone(ctx, source) end
  ctx.fingerprints[source.entity_type] = nil
end

-- One pass over the keys of every selected source before anything is
-- written: stops with exit 2 when a key is not unique (keyset pagination
-- would skip rows), and records how many rows each source holds.
function M.check_unique_keys(ctx)
  for _, source in ipairs(M.selected_sources(ctx.plan)) do
    local census, err, state = ctx.store:key_census(source, ctx.plan.scope)
    if not census then ctx:abort_db("falha ao verificar a unicidade das chaves", err, state); return end
    if census.duplicate then
      ctx:abort(exit.usage, ("a chave %q da fonte %q não é única (o valor %s aparece mais de uma vez); "
        .. "a paginação por chave perderia linhas: use uma chave única (ou uma combinação única em uma coluna)")
        :format(source.key, source.entity_type, census.duplicate))
      return
    end
    instruments.source_rows(ctx, source.entity_type, census.rows)
  end
end

-- The run's context, with env.stop and env.progress wired to it (and
-- env.endpoints made of env.embedder and env.limiter when the env has none).
function M.context(plan, env)
  env.endpoints = env.endpoints or endpoints.single(env.embedder, env.limiter, env.sched)
  local ctx = run_context.context(plan, env)
  env.stop = function(code, reason) ctx:abort(code, reason) end
  env.progress_snapshot = function() return ctx:snapshot() end
  return ctx
end

function M.run(plan, env)
  local ctx = M.context(plan, env)
  local sources = M.selected_sources(plan)
  -- The first source's fingerprints load while the keys are counted.
  local loading = sources[1] and sched.future(ctx.sched, load_fingerprints, ctx, sources[1]) or nil
  if not env.range then M.check_unique_keys(ctx) end
  if env.batch and not ctx.aborted then env.batch:start(ctx) end
  for i, source in ipairs(sources) do
    if ctx.aborted then break end
    ctx.log.info("indexando %q", source.entity_type)
    run_source(ctx, source, i == 1 and loading or nil)
  end
  if loading then loading:get() end -- its query ends before the run does
  if env.batch and not ctx.aborted then env.batch:after_reading(ctx) end
  return ctx:finish()
end

return M
