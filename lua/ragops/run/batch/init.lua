-- ragops.run.batch: the Batch API mode of a run (embed.mode = "batch",
-- docs/lote-openai.md). The read and decide stages are the runner's; the
-- embed stage, instead of calling the provider, appends each unit's requests
-- to the open part (ragops.run.batch.part) and the unit's write transaction
-- records which entities and content hashes the part covers beside the
-- checkpoint (ragops.store.batches). A full part is sealed, uploaded and
-- its batch created (ragops.run.batch.remote); after the sources are read
-- the run polls its batches and collects each one that ends
-- (ragops.run.batch.collect): the entities are read again by key and go
-- through decide and write with the batch's vectors looked up by content
-- hash; what has none (a text that changed, a request that expired) goes
-- into a new part, at most embed.max_resubmissions times.
--
-- session = M.new{ api, store, dir, limits (provider limits), body = { model,
-- dimensions }, plan, log, detach }, set as env.batch; the runner calls
-- session:start(ctx) before reading, session:embed_items(...) in place of
-- the embed stage, session:after_reading(ctx) before it finishes.
local batch_api = require "ragops.provider.batch"
local batches = require "ragops.store.batches"
local collect = require "ragops.run.batch.collect"
local embed = require "ragops.run.stages.embed"
local config = require "ragops.plan.config"
local exit = require "ragops.util.exit"
local part = require "ragops.run.batch.part"
local remote = require "ragops.run.batch.remote"
local requests = require "ragops.provider.requests"
local safe_file = require "ragops.util.safe_file"
local wait = require "ragops.run.batch.wait"

local M = {}

local Session = {}
Session.__index = Session

function M.new(opts)
  local s = setmetatable({}, Session)
  for k, v in pairs(opts) do s[k] = v end
  s.part_limits = part.limits(opts.limits)
  s.tokens_per_byte = (opts.limits or {}).tokens_per_byte or 0.25
  s.counts = { parts = 0, uploads = 0, resubmitted = 0, expired = 0, collected = 0 }
  return s
end

-- Opens a new part for ctx's run: true, or nil after stopping the run.
function Session:open_part(ctx)
  -- A name of its own (the provider's files are found by it after a crash).
  local name = ("ragops-%d-%s-%08x.jsonl"):format(ctx.env.run_id, os.date("!%Y%m%dT%H%M%S"),
    math.random(0, 0x7fffffff))
  local row, err, state = batches.new_part(self.store, ctx.env.run_id, name)
  if not row then ctx:abort_db("falha ao registrar uma parte de lote", err, state); return nil end
  local p, perr = part.open(self.dir, row, self.part_limits)
  if not p then ctx:abort(exit.usage, "não foi possível abrir o arquivo de lote na pasta batch.dir: " .. perr); return nil end
  self.open, self.unit_no = p, 1
  self.counts.parts = self.counts.parts + 1
  return true
end

-- Seals the open part and submits it (upload, batch). True, or nil after
-- stopping the run (the part stays ready: a resume submits it).
function Session:seal(ctx)
  local p = self.open
  self.open = nil
  if not p then return true end
  p:close()
  if p.requests == 0 then
    local done, err, state = batches.update(self.store, p.id, { state = "collected" }, { "collected" }, { "building" })
    if done == nil then ctx:abort_db("falha ao fechar a parte de lote vazia", err, state); return nil end
    os.remove(p.path)
    return true
  end
  local ok, err, state = batches.update(self.store, p.id, { state = "ready" }, nil, { "building" })
  if ok == nil then ctx:abort_db("falha ao fechar a parte de lote", err, state); return nil end
  local row = batches.part(self.store, p.id)
  return remote.submit(self, ctx, row)
end

-- The entities of items, in order, and their items: order, by_entity.
local function group_by_entity(items)
  local order, by_entity = {}, {}
  for _, it in ipairs(items) do
    local id = it.entity.id
    if not by_entity[id] then order[#order + 1] = id; by_entity[id] = {} end
    local list = by_entity[id]
    list[#list + 1] = it
  end
  return order, by_entity
end

local function text_of(item) return item.text end

-- Items without those of the entities in bad, and slices likewise (a
-- request left with fewer inputs still fits the provider's limits).
local function without(items, slices, bad)
  local keep, kept_slices = {}, {}
  for _, it in ipairs(items) do
    if not bad[it.entity.id] then keep[#keep + 1] = it end
  end
  for _, slice in ipairs(slices) do
    local rest = {}
    for _, it in ipairs(slice) do
      if not bad[it.entity.id] then rest[#rest + 1] = it end
    end
    if #rest > 0 then kept_slices[#kept_slices + 1] = rest end
  end
  return keep, kept_slices
end

-- The requests of items, formed once (ragops.provider.requests): an item
-- marked alone in a request of its own, the others within the provider's
-- limits; an item past the per-input limit is a dead letter (never sent)
-- and takes every item of its entity out. Returns the items kept, their
-- slices, the failed groups and the entities they fail.
local function form_requests(items, limits, size, tpb)
  local alone, grouped = {}, {}
  for _, it in ipairs(items) do
    if it.alone then alone[#alone + 1] = it else grouped[#grouped + 1] = it end
  end
  local slices, too_long = requests.form(alone, text_of, limits, 1, tpb)
  local group_slices, group_too_long = requests.form(grouped, text_of, limits, size, tpb)
  for _, slice in ipairs(group_slices) do slices[#slices + 1] = slice end
  for _, t in ipairs(group_too_long) do too_long[#too_long + 1] = t end
  if #too_long == 0 then return items, slices, {}, {} end
  local bad = {}
  for _, t in ipairs(too_long) do bad[t.item.entity.id] = true end
  local keep, kept_slices = without(items, slices, bad)
  return keep, kept_slices, embed.too_long_groups(too_long, limits), bad
end

-- The unit's row for the write transaction (ragops.store.batches.write).
local function unit_record(self, unit, items, lines, file_end, round)
  local ids, seen = {}, {}
  for _, it in ipairs(items) do
    if not seen[it.entity.id] then seen[it.entity.id] = true; ids[#ids + 1] = it.entity.id end
  end
  return { batch = self.open.id, unit_no = self.unit_no, entity_type = unit.source.entity_type, round = round,
           entity_ids = ids, hashes = lines.hashes, request_sizes = lines.sizes, file_end = file_end,
           requests = lines.requests, inputs = lines.inputs, tokens = lines.tokens }
end

-- The lines of items (formed into slices) for the open part, sealing it
-- first when they do not fit. Returns lines, or nil, failed groups (too
-- big for any part), or nil after stopping the run.
function Session:lines_for(ctx, items, slices)
  if not self.open and not self:open_part(ctx) then return nil end
  local lines = part.lines(self.open.id, self.unit_no, slices, self.body, self.tokens_per_byte)
  if self.open:fits(lines) then return lines end
  if part.too_big(lines, self.part_limits) then
    return nil, { { items = items, attempts = 0, info = { class = "permanent", kind = "batch_too_large" },
      err = "os pedidos desta unidade não cabem num arquivo de lote (provider.limits.batch_*); diminua batch.size" } }
  end
  if not (self:seal(ctx) and self:open_part(ctx)) then return nil end
  return part.lines(self.open.id, self.unit_no, slices, self.body, self.tokens_per_byte)
end

-- Appends items (every to-embed item of their entities) to the open part
-- as unit's requests; the record goes with the unit's write. Returns the
-- failed groups (inputs too long, a unit too big) and the entities they
-- fail, or nil after stopping.
function Session:append(ctx, unit, items, round)
  local size = (self.limits or {}).max_inputs or 2048
  local keep, slices, failed, bad = form_requests(items, self.limits or {}, size, self.tokens_per_byte)
  if #keep == 0 then return failed, bad end
  local lines, too_big = self:lines_for(ctx, keep, slices)
  if not lines then
    if not too_big then return nil end
    for _, it in ipairs(keep) do bad[it.entity.id] = true end
    for _, g in ipairs(too_big) do failed[#failed + 1] = g end
    return failed, bad
  end
  local file_end, err = self.open:append(lines)
  if not file_end then ctx:abort(exit.unreachable, err); return nil end
  unit.batch_add = unit_record(self, unit, keep, lines, file_end, round)
  self.unit_no = self.unit_no + 1
  return failed, bad
end

-- The round of deferred items: 0 for a first submission; the same round
-- when a lost part is rebuilt or every item only goes alone (a refused
-- request split: bounded, an input alone is never split again); one more
-- for what expired or changed.
local function next_round(lookup, deferred)
  if not lookup then return 0 end
  if lookup.rebuild then return lookup.round end
  for _, it in ipairs(deferred) do
    if not it.alone then return lookup.round + 1 end
  end
  return lookup.round
end

-- In place of the embed stage: the items whose vectors a collected batch
-- holds (unit.batch_lookup, see ragops.run.batch.collect) become parts;
-- the others go into the open part, their entities not written now.
-- Returns parts, failed groups.
function Session:embed_items(ctx, unit, decision, delta)
  local lookup = unit.batch_lookup
  local order, by_entity = group_by_entity(decision.items)
  local parts, failed, deferred = {}, {}, {}
  for _, id in ipairs(order) do
    local verdict, detail = collect.classify(lookup, by_entity[id])
    if verdict == "hit" then collect.add_hits(parts, by_entity[id], lookup)
    elseif verdict == "failed" then failed[#failed + 1] = detail
    else
      for _, it in ipairs(by_entity[id]) do
        it.alone = lookup and lookup.isolate[it.chunk.hash] or nil
        deferred[#deferred + 1] = it
      end
    end
  end
  collect.account(ctx, lookup, parts, delta, unit.source.entity_type)
  if #deferred == 0 then return parts, failed end
  local round = next_round(lookup, deferred)
  if lookup and (round > self.plan.embed.max_resubmissions or lookup.miss) then
    failed[#failed + 1] = collect.missing_group(lookup, deferred, round)
    return parts, failed
  end
  if lookup then self.counts.resubmitted = self.counts.resubmitted + #deferred end
  local more, bad = self:append(ctx, unit, deferred, round)
  if not more then return {}, {} end
  for _, g in ipairs(more) do failed[#failed + 1] = g end
  for _, it in ipairs(deferred) do
    local c = decision.changed[it.entity.id]
    if not bad[it.entity.id] then c.failed, c.deferred = true, true end -- written when its batch is collected
  end
  return parts, failed
end

-- The session of a run of plan p in the Batch API mode (env: the run's, its
-- store and embedder built), or nil, pt-BR err (the operator's to fix).
function M.for_run(p, cfg, env, opts)
  local api, err = batch_api.new(cfg.provider, { policy = p.retry, sched = env.sched,
                                                  gate = env.endpoints and env.endpoints:gate() })
  if not api then return nil, err end
  local dir = config.batch_dir(cfg)
  local made, merr = safe_file.make_dir(dir)
  if not made then return nil, merr .. " (batch.dir, RAGOPS_BATCH_DIR)" end
  return M.new { api = api, store = env.store, dir = dir, limits = env.embedder.limits, plan = p,
                 body = { model = cfg.provider.deployment or cfg.provider.model, dimensions = cfg.provider.dimensions,
                          url = api.endpoint },
                 detach = opts.detach == true, log = env.log }
end

-- How many parts of run_id are not finished with (nil when unreadable).
function M.open_parts(store, run_id)
  local rows = batches.open_parts(store, run_id)
  return rows and #rows or nil
end

-- Before reading: the run's parts as the database has them (a resumed run).
function Session:start(ctx)
  return remote.reconcile(self, ctx)
end

-- After the sources were read: the open part is submitted; then, unless
-- detached, the batches are awaited and collected.
function Session:after_reading(ctx)
  ctx.stats.batch = self.counts
  if ctx:halted() then return end
  if not self:seal(ctx) then return end
  if self.detach then
    ctx.stats.batch_waiting = true
    ctx.log.info("lotes enviados; a execução espera por eles no provedor (até 24 h). Para coletá-los, rode o mesmo "
      .. "comando sem --detach ou `ragops batch collect --plan %s`", ctx.plan.name)
    return
  end
  return wait.wait_all(self, ctx)
end

return M
