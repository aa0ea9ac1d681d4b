-- ragops.testing: fakes that let a plan author test a plan with busted,
-- without PostgreSQL or an embedding provider. Pure Lua (LuaJIT) + cjson.
--
--   testing.scheduler()   pure-Lua scheduler with a fake clock (spawn, suspend,
--                         wake, sleep, now, run); sleep() costs no real time
--   testing.store{...}    in-memory store: the whole Store contract
--                         (ragops.store.contract), the fast path included
--   testing.fpset()       fingerprint set with pg.fpset's shape
--   testing.embedder{...} fake embedder: deterministic vectors, injectable failures
--                         and latency, records every call
--   testing.hash(...)     deterministic content hash (FNV-1a, two seeds)
--   testing.run(plan, opts) -> result   runs ragops.run.pipeline against the fakes
--
-- See docs/testes-de-planos.md for a guide with examples.
local bit = require "bit"
local cjson = require "cjson"
local DOCUMENT_COLUMNS = require("ragops.store.contract").DOCUMENT_COLUMNS

local M = {}

---------------------------------------------------------------------------
-- Small helpers
---------------------------------------------------------------------------

-- Same entity_id text form as the runner (and so as rag_documents).
local key_text = require("ragops.run.pipeline").key_text
M.key_text = key_text

local function copy(value)
  if type(value) ~= "table" then return value end
  local out = {}
  for k, v in pairs(value) do out[k] = copy(v) end
  return out
end
M.copy = copy

local function pack(...) return { n = select("#", ...), ... } end

---------------------------------------------------------------------------
-- Hash
---------------------------------------------------------------------------

-- FNV-1a 32 over `text`, starting from `h` (signed 32-bit, as `bit` uses).
local function fnv1a(h, text)
  for i = 1, #text do
    h = bit.bxor(h, text:byte(i))
    -- h * 16777619 mod 2^32, split so the product stays exact in a double.
    h = bit.tobit(h * 403 + bit.lshift(h, 24))
  end
  return h
end

local SEED_A = bit.tobit(0x811c9dc5)
local SEED_B = bit.tobit(0x050c5d1f)

-- hash(...) -> 16 hex digits. Each argument is length-prefixed (like
-- core.hash), so ("ab","c") and ("a","bc") differ. Numbers are tostring'ed.
function M.hash(...)
  local a, b = SEED_A, SEED_B
  for i = 1, select("#", ...) do
    local part = select(i, ...)
    if type(part) ~= "string" and type(part) ~= "number" then
      error(("testing.hash: argumento %d deve ser texto, recebido %s"):format(i, type(part)), 2)
    end
    part = tostring(part)
    local framed = #part .. ":" .. part
    a = fnv1a(a, framed)
    b = fnv1a(b, framed)
  end
  return bit.tohex(a) .. bit.tohex(b)
end

---------------------------------------------------------------------------
-- Scheduler with a fake clock
---------------------------------------------------------------------------

-- Returns a scheduler with the shape ragops.util.sched expects (spawn, suspend,
-- wake, sleep, now, stop, stopped) plus run(fn, ...), which runs fn in a coroutine and
-- drives every coroutine until none is runnable. sleep(ms) advances the fake
-- clock to the earliest wake-up time instantly. Coroutines left parked when
-- nothing can wake them raise a "impasse (deadlock)" error.
-- State of a fake scheduler (shared by its functions and drive()).
local function new_state()
  return {
    ready = {}, rhead = 1, rtail = 0, -- runnable coroutines (FIFO)
    timers = {},                      -- sleepers sorted by (at, order)
    timer_order = 0,
    managed = setmetatable({}, { __mode = "k" }), -- coroutines made by spawn
    parked = {},                      -- co -> "suspend" | "sleep"
    running = false,                  -- inside run()
    stopped = false,                  -- stop() was called
  }
end

local function push_ready(k, co, args)
  k.rtail = k.rtail + 1
  k.ready[k.rtail] = { co = co, args = args }
end

-- Resumes runnable coroutines and fires timers (advancing the fake clock)
-- until nothing is left; on_main(results) gets the main coroutine's results.
local function drive(s, k, main, on_main)
  local results
  while true do
    while k.rhead <= k.rtail do
      local item = k.ready[k.rhead]
      k.ready[k.rhead] = nil
      k.rhead = k.rhead + 1
      local ret = pack(coroutine.resume(item.co, unpack(item.args, 1, item.args.n)))
      if not ret[1] then
        error(debug.traceback(item.co, "erro em uma corrotina: " .. tostring(ret[2])), 0)
      end
      if coroutine.status(item.co) == "dead" then
        k.managed[item.co] = nil
        if item.co == main then results = ret; on_main(ret) end
      elseif not k.parked[item.co] then
        error("uma corrotina cedeu com coroutine.yield() sem usar suspend()/sleep() do escalonador", 0)
      end
    end
    if #k.timers == 0 then break end
    local t = table.remove(k.timers, 1)
    if t.at > s.clock then s.clock = t.at end
    k.parked[t.co] = nil
    push_ready(k, t.co, pack(true))
  end
  local stuck = s.parked_count()
  if stuck > 0 then
    error(("impasse (deadlock): %d corrotina(s) suspensa(s) sem ninguém para acordá-las "
      .. "(relógio falso em %d ms)%s"):format(stuck, s.clock,
        results and "" or "; a função principal não terminou"), 0)
  end
end

-- The fake clock's half of the scheduler s (state k): sleep, stop, stopped.
-- current(what) is the running managed coroutine (or a raised error).
local function add_timers(s, k, current)
  function s.sleep(ms)
    if type(ms) ~= "number" or ms ~= ms or ms < 0 then
      error("sleep: esperado um número de milissegundos >= 0, recebido " .. tostring(ms), 2)
    end
    local co = current("sleep")
    k.timer_order = k.timer_order + 1
    local t = { at = s.clock + ms, order = k.timer_order, co = co }
    local pos = #k.timers + 1
    while pos > 1 and k.timers[pos - 1].at > t.at do pos = pos - 1 end
    table.insert(k.timers, pos, t)
    k.parked[co] = "sleep"
    return coroutine.yield()
  end

  -- Cuts every pending sleep short (nil, "interrompido"), like a signal.
  function s.stop()
    k.stopped = true
    local cut = k.timers
    k.timers = {}
    for _, t in ipairs(cut) do
      k.parked[t.co] = nil
      push_ready(k, t.co, pack(nil, "interrompido"))
    end
    return #cut
  end

  function s.stopped() return k.stopped end
end

function M.scheduler()
  local s = { clock = 0 }
  local k = new_state()

  local function current(what)
    local co = coroutine.running()
    if not co or not k.managed[co] then
      error(("%s chamada fora de uma corrotina do escalonador de teste (use s.run ou s.spawn)")
        :format(what), 3)
    end
    return co
  end

  function s.now() return s.clock end

  function s.spawn(fn, ...)
    if type(fn) ~= "function" then
      error("spawn: esperada uma função, recebido " .. type(fn), 2)
    end
    local co = coroutine.create(fn)
    k.managed[co] = true
    push_ready(k, co, pack(...))
    return co
  end

  function s.suspend()
    local co = current("suspend")
    k.parked[co] = "suspend"
    return coroutine.yield()
  end

  function s.wake(co, ...)
    if type(co) ~= "thread" then
      error("wake: esperada uma corrotina, recebido " .. type(co), 2)
    end
    if k.parked[co] ~= "suspend" then
      error("wake: a corrotina não está suspensa por suspend()", 2)
    end
    k.parked[co] = nil
    push_ready(k, co, pack(...))
  end

  add_timers(s, k, current)

  -- Number of coroutines k.parked by suspend() (sleepers excluded).
  function s.parked_count()
    local n = 0
    for _, how in pairs(k.parked) do if how == "suspend" then n = n + 1 end end
    return n
  end

  function s.run(fn, ...)
    if k.running then error("run: o escalonador de teste já está rodando", 2) end
    if coroutine.running() and k.managed[coroutine.running()] then
      error("run: chamada de dentro de uma corrotina do escalonador", 2)
    end
    k.running = true
    local main = s.spawn(fn, ...)
    local results
    local ok, err = pcall(drive, s, k, main, function(r) results = r end)
    k.running = false
    if not ok then
      -- Leave the scheduler reusable: drop whatever was in flight.
      k.ready, k.rhead, k.rtail, k.timers, k.parked = {}, 1, 0, {}, {}
      error(err, 0)
    end
    return unpack(results, 2, results.n)
  end

  return s
end

---------------------------------------------------------------------------
-- Fake vecbatch and embedder
---------------------------------------------------------------------------

-- Deterministic unit vector of `dim` numbers for `text`.
function M.vector(text, dim)
  local v, norm = {}, 0
  for j = 1, dim do
    local h = fnv1a(SEED_A, j .. "\0" .. text)
    local x = (h % 20001) / 10000 - 1
    v[j] = x
    norm = norm + x * x
  end
  norm = math.sqrt(norm)
  if norm > 0 then
    for j = 1, dim do v[j] = v[j] / norm end
  end
  return v
end

-- A pure-Lua stand-in for the C vecbatch: a userdata proxy (so #b works in
-- LuaJIT) with count(), dim(), tokens(), vector(i) (1-based, returns a copy).
function M.vecbatch(vectors, tokens)
  local count, dim = #vectors, vectors[1] and #vectors[1] or 0
  for i = 2, count do
    if #vectors[i] ~= dim then error("vecbatch: todos os vetores devem ter a mesma dimensão", 2) end
  end
  local proxy = newproxy(true)
  local mt = getmetatable(proxy)
  local methods = {}
  function methods.count() return count end
  function methods.dim() return dim end
  function methods.tokens() return tokens or 0 end
  function methods.release() count, vectors = 0, {} end
  function methods.vector(_, i)
    if type(i) ~= "number" or i < 1 or i > count or i ~= math.floor(i) then
      error("vecbatch:vector: índice de vetor fora do intervalo: " .. tostring(i), 2)
    end
    return copy(vectors[i])
  end
  mt.__index = methods
  mt.__len = function() return count end
  mt.__tostring = function() return ("vecbatch(fake, %d x %d)"):format(count, dim) end
  return proxy
end

-- opts = { dim = 8, sched = scheduler (needed for latency_ms),
--          latency_ms = n | function(texts, call_no) -> n,
--          tokens = function(texts) -> n (usage.prompt_tokens; default bytes/4),
--          fail = function(texts, call_no) -> nil | { status, class, retry_after_ms, message, kind } }
-- embedder.calls[i] = { texts = {...}, ok = bool, failure = tbl|nil, started_at, finished_at }
-- embedder.active / embedder.peak: concurrent calls now / at most.
function M.embedder(opts)
  opts = opts or {}
  local e = { dim = opts.dim or 8, calls = {}, active = 0, peak = 0, sched = opts.sched }
  function e:embed(texts)
    if type(texts) ~= "table" or #texts == 0 then
      error("embedder:embed: esperada uma lista não vazia de textos", 2)
    end
    local call_no = #self.calls + 1
    local s = self.sched
    local call = { texts = copy(texts), started_at = s and s.now() or 0 }
    self.calls[call_no] = call
    self.active = self.active + 1
    if self.active > self.peak then self.peak = self.active end
    local latency = opts.latency_ms
    if type(latency) == "function" then latency = latency(texts, call_no) end
    if latency and latency > 0 then
      if not s then
        self.active = self.active - 1
        error("embedder: latency_ms exige opts.sched (um escalonador)", 2)
      end
      s.sleep(latency)
    end
    self.active = self.active - 1
    call.finished_at = s and s.now() or 0
    local failure = opts.fail and opts.fail(texts, call_no)
    if failure then
      call.ok, call.failure = false, failure
      local info = copy(failure)
      info.class = info.class or "transient"
      info.status = info.status or 0
      local message = failure.message
        or ("falha simulada do provedor (HTTP %s, %s)"):format(tostring(info.status), info.class)
      return nil, message, info
    end
    call.ok = true
    local vectors, chars = {}, 0
    for i, text in ipairs(texts) do
      vectors[i] = M.vector(text, self.dim)
      chars = chars + #text
    end
    local tokens = opts.tokens and opts.tokens(texts) or math.ceil(chars / 4)
    return M.vecbatch(vectors, tokens), nil, { status = 200 }
  end
  -- Every text sent in successful calls, in call order.
  function e:embedded_texts()
    local out = {}
    for _, c in ipairs(self.calls) do
      if c.ok then for _, t in ipairs(c.texts) do out[#out + 1] = t end end
    end
    return out
  end
  return e
end

---------------------------------------------------------------------------
-- In-memory store (same interface as ragops.store.pg)
---------------------------------------------------------------------------

local function compare_keys(a, b)
  if type(a) == "number" and type(b) == "number" then return a < b end
  return tostring(a) < tostring(b)
end

-- A stored (decoded) metadata table against the runner's JSON text.
local function same_json(stored, text)
  return require("ragops.run.stages.decide").same_json(stored, cjson.decode(text))
end

local function doc_key(entity_type, entity_id, chunk_index)
  return entity_type .. "\0" .. entity_id .. "\0" .. chunk_index
end

-- opts = { sources = { [entity_type] = { row, ... } },
--          documents = { { entity_type, entity_id, chunk_index, content, content_hash, metadata }, ... },
--          fail_write = function(unit, call_no) -> nil | err, sqlstate }
-- Recorded: store.writes (every write_unit: entity_type, checkpoint, docs, pruned),
-- store.checkpoints[entity_type], store.failures (every dead letter),
-- store.open_dead_letters[entity_type][id] (the open ones; store:open_failures(run_id)
-- is the Store method, their count per run), store.resolved, store.runs, store.deletions,
-- store.no_document[entity_type][id] (entities without a document by the plan's decision),
-- store.usage[entity_type], store.billed[run_id] (tokens), store.dropped (record_dropped),
-- store.kept (keep_run's opts), store.wound_down. Each document keeps source_hash
-- (its row's fingerprint on chunk 0), as rag_documents does.
local FakeStore = {}
FakeStore.__index = FakeStore

function FakeStore:put(d)
  local doc = copy(d)
  doc.entity_id = key_text(doc.entity_id)
  doc.chunk_index = doc.chunk_index or 0
  if type(doc.metadata) == "string" then doc.metadata = cjson.decode(doc.metadata) end
  doc.metadata = doc.metadata or {}
  self.docs[doc_key(doc.entity_type, doc.entity_id, doc.chunk_index)] = doc
end

-- Sorted copy of the documents (of one entity_type, or all).
function FakeStore:documents(entity_type)
  local out = {}
  for _, d in pairs(self.docs) do
    if entity_type == nil or d.entity_type == entity_type then out[#out + 1] = d end
  end
  table.sort(out, function(a, b)
    if a.entity_type ~= b.entity_type then return a.entity_type < b.entity_type end
    if a.entity_id ~= b.entity_id then
      local na, nb = tonumber(a.entity_id), tonumber(b.entity_id)
      if na and nb then return na < nb end
      return a.entity_id < b.entity_id
    end
    return a.chunk_index < b.chunk_index
  end)
  return out
end

function FakeStore:document(entity_type, entity_id, chunk_index)
  return self.docs[doc_key(entity_type, key_text(entity_id), chunk_index or 0)]
end

function FakeStore:fetch_page(source, scope, after_key, limit, upto_key)
  self.fetches[#self.fetches + 1] = { entity_type = source.entity_type, after = after_key, limit = limit }
  scope = scope or {}
  local key, updated = source.key, source.updated_at
  local wanted
  if scope.entity_ids and #scope.entity_ids > 0 then
    wanted = {}
    for _, id in ipairs(scope.entity_ids) do wanted[tostring(id)] = true end
  end
  local since, until_ = scope.since, scope["until"]
  if (since or until_) and not updated then error("fonte sem updated_at", 2) end
  local rows = {}
  for _, row in ipairs(self.sources[source.entity_type] or {}) do
    local k = row[key]
    local keep = k ~= nil
    if keep and after_key ~= nil then
      if type(k) == "number" then
        keep = k > (tonumber(after_key) or error("chave after_key não numérica: " .. tostring(after_key)))
      else
        keep = tostring(k) > tostring(after_key)
      end
    end
    if keep and upto_key ~= nil then
      if type(k) == "number" then keep = k <= tonumber(upto_key) else keep = tostring(k) <= tostring(upto_key) end
    end
    if keep and wanted then keep = wanted[key_text(k)] == true end
    if keep and since then keep = row[updated] ~= nil and tostring(row[updated]) >= since end
    if keep and until_ then keep = row[updated] ~= nil and tostring(row[updated]) < until_ end
    if keep then rows[#rows + 1] = row end
  end
  table.sort(rows, function(a, b) return compare_keys(a[key], b[key]) end)
  local out = {}
  for i = 1, math.min(#rows, limit or #rows) do out[i] = copy(rows[i]) end
  return out
end

function FakeStore:existing_hashes(entity_type, entity_ids)
  local want = {}
  for _, id in ipairs(entity_ids) do want[id] = true end
  local out = {}
  for _, d in pairs(self.docs) do
    if d.entity_type == entity_type and want[d.entity_id] then
      local e = out[d.entity_id]
      if not e then e = { count = 0, hashes = {} }; out[d.entity_id] = e end
      e.count = e.count + 1
      e.hashes[d.chunk_index] = d.content_hash
    end
  end
  return out
end

---------------------------------------------------------------------------
-- The fast path (like ragops.store.pg fetch_page_existing, add_stored,
-- load_fingerprints): a row's fingerprint is testing.hash of the seed and
-- its columns; the fake writes no COPY straight into the target, so pages
-- carry no updated_at in µs (decide then never copies into the target).
---------------------------------------------------------------------------

-- A fingerprint set with fpset's shape (engine/fpset.h): add, contains
-- (marks the member seen), stats() -> { members, unseen, unknown }.
function M.fpset()
  local set = { seen = {}, members = 0, unseen = 0, unknown = 0 }
  function set:add(fp)
    if self.seen[fp] == nil then
      self.seen[fp], self.members, self.unseen = false, self.members + 1, self.unseen + 1
    end
  end
  function set:contains(fp)
    if self.seen[fp] == nil then return false end
    if not self.seen[fp] then self.seen[fp], self.unseen = true, self.unseen - 1 end
    return true
  end
  function set:stats() return { members = self.members, unseen = self.unseen, unknown = self.unknown } end
  return set
end

-- The fingerprint of a source row under seed: its columns' names and values.
function M.row_fingerprint(seed, row)
  local names, parts = {}, { seed }
  for k in pairs(row) do names[#names + 1] = tostring(k) end
  table.sort(names)
  for _, k in ipairs(names) do
    local v = row[k]
    parts[#parts + 1] = k .. "=" .. (type(v) == "table" and cjson.encode(v) or tostring(v))
  end
  return M.hash(unpack(parts))
end

-- What the fake holds for an entity, in the shape of existing (nil: nothing
-- stored and no open dead letter). updated: the row's updated_at text or nil.
local function stored_entity(self, entity_type, id, updated)
  local e = { count = 0, hashes = {}, metadata = {}, same_updated_at = {} }
  for _, d in pairs(self.docs) do
    if d.entity_type == entity_type and d.entity_id == id then
      e.count = e.count + 1
      e.hashes[d.chunk_index], e.metadata[d.chunk_index] = d.content_hash, copy(d.metadata)
      e.same_updated_at[d.chunk_index] = d.source_updated_at == updated
    end
  end
  e.open_failure = (self.open_dead_letters[entity_type] or {})[id] ~= nil
  if e.count == 0 and not e.open_failure then return nil end
  return e
end

-- Like store_pg: the page with what the target holds for its entities.
function FakeStore:fetch_page_existing(source, scope, after_key, limit, upto_key, fp)
  local rows = self:fetch_page(source, scope, after_key, limit, upto_key)
  local existing, updated_us, fps, skipped = {}, {}, fp and {} or nil, 0
  local without_stored = fp ~= nil and fp.without_stored == true
  for i, row in ipairs(rows) do
    local id = key_text(row[source.key])
    local u = source.updated_at and row[source.updated_at]
    local f = fp and M.row_fingerprint(fp.seed, row)
    if f and fp.set and fp.set:contains(f) then
      rows[i], skipped = row[source.key], skipped + 1
    else
      if fps then fps[id] = f end
      local e = stored_entity(self, source.entity_type, id, u ~= nil and tostring(u) or nil)
      if e and without_stored then
        e = e.open_failure and { count = 0, hashes = {}, metadata = {}, same_updated_at = {}, open_failure = true } or nil
      end
      existing[id] = e
    end
  end
  rows.skipped = skipped
  return rows, existing, updated_us, fps
end

-- Like store_pg: what the target holds for ids, added to existing.
function FakeStore:add_stored(entity_type, ids, existing, updated_at)
  for i, id in ipairs(ids) do
    local e = stored_entity(self, entity_type, id, updated_at[i] ~= "" and updated_at[i] or nil)
    if e and e.count > 0 then
      local open = existing[id]
      e.open_failure = open ~= nil and open.open_failure
      existing[id] = e
    end
  end
  return true
end

-- Like store_pg: the fingerprints of entity_type's stored entities (chunk 0).
function FakeStore:load_fingerprints(entity_type)
  local set = M.fpset()
  for _, d in pairs(self.docs) do
    if d.entity_type == entity_type and d.chunk_index == 0 then
      if d.source_hash then set:add(d.source_hash) else set.unknown = set.unknown + 1 end
    end
  end
  return set
end

-- FakeStore:write_unit's parts: the unit's documents put in the store,
-- with the columns of rag_documents (ragops.store.contract DOCUMENT_COLUMNS;
-- the embedding as `vector`). Returns how many.
local function put_parts(self, unit, record)
  local written = 0
  for _, part in ipairs(unit.parts) do
    for _, d in ipairs(part.docs) do
      local doc = { vector = part.batch:vector(d.vec), run_id = unit.run_id }
      for _, c in ipairs(DOCUMENT_COLUMNS) do
        if c.name ~= "embedding" then doc[c.name] = d[c.name] end
      end
      self:put(doc)
      written = written + 1
      record.docs[#record.docs + 1] = { entity_id = d.entity_id, chunk_index = d.chunk_index }
    end
  end
  return written
end

-- The chunks past each entity's new count removed. Returns how many.
local function prune_chunks(self, unit)
  local pruned = 0
  local cc = unit.chunk_counts or { entity_ids = {}, counts = {} }
  for i, id in ipairs(cc.entity_ids) do
    for k, d in pairs(self.docs) do
      if d.entity_type == unit.entity_type and d.entity_id == id and d.chunk_index >= cc.counts[i] then
        self.docs[k] = nil
        pruned = pruned + 1
      end
    end
  end
  return pruned
end

-- Like store_pg: unchanged content gets metadata/source_updated_at
-- refreshed. Returns how many chunks changed.
local function refresh_unchanged(self, unit)
  local refreshed = 0
  local rf = unit.refresh or { entity_ids = {} }
  for i, id in ipairs(rf.entity_ids) do
    local d = self.docs[doc_key(unit.entity_type, id, rf.chunk_indexes[i])]
    local updated = rf.updated_at[i] ~= "" and rf.updated_at[i] or nil
    if d and (not same_json(d.metadata, rf.metadata[i]) or d.source_updated_at ~= updated) then
      d.metadata, d.source_updated_at = cjson.decode(rf.metadata[i]), updated
      if d.chunk_index == 0 then d.source_hash = rf.fps and rf.fps[i] ~= "" and rf.fps[i] or nil end
      refreshed = refreshed + 1
    end
  end
  return refreshed
end

-- Like store_pg: the stored checkpoint only moves forward; units
-- committed past it are kept apart (store.ahead[entity_type][last_key]).
local function advance_checkpoint(self, unit, pruned, refreshed)
  local cp = copy(unit.checkpoint)
  local late = { deleted = pruned, refreshed = refreshed }
  local function add_late(stats) for k, n in pairs(late) do stats[k] = (stats[k] or 0) + n end end
  if cp.includes_unit then add_late(cp.stats) end
  local cur = self.checkpoints[unit.entity_type]
  if (cur and cur.seq or 0) < cp.seq then
    self.checkpoints[unit.entity_type] = { seq = cp.seq, after = cp.after, stats = cp.stats }
  end
  local ahead = self.ahead[unit.entity_type] or {}
  self.ahead[unit.entity_type] = ahead
  for _, k in ipairs(cp.covered or {}) do ahead[k] = nil end
  if unit.ahead then
    local a = copy(unit.ahead)
    add_late(a.stats)
    ahead[a.last_key] = a
  end
end

function FakeStore:write_unit(unit)
  local call_no = #self.writes + 1
  if self.fail_write then
    local err, state = self.fail_write(unit, call_no)
    if err then
      self.writes[call_no] = { entity_type = unit.entity_type, failed = true, err = err }
      return nil, err, state
    end
  end
  local record = { entity_type = unit.entity_type, checkpoint = copy(unit.checkpoint),
                   docs = {}, pruned = 0, run_id = unit.run_id }
  self.writes[call_no] = record
  local written = put_parts(self, unit, record)
  local pruned = prune_chunks(self, unit)
  record.pruned = pruned
  local refreshed = refresh_unchanged(self, unit)
  record.refreshed = refreshed
  -- Like store_pg: chunk 0 of entities not rewritten takes its row's fingerprint.
  local fpu = unit.fingerprints or { entity_ids = {} }
  for i, id in ipairs(fpu.entity_ids) do
    local d = self.docs[doc_key(unit.entity_type, id, 0)]
    if d then d.source_hash = fpu.fps[i] ~= "" and fpu.fps[i] or nil end
  end
  -- Like store_pg: dead letters and their resolution in the same write.
  if unit.failures and #unit.failures > 0 then self:record_failures(unit.run_id, unit.failures) end
  local resolved = 0
  if unit.resolved_ids and #unit.resolved_ids > 0 then
    resolved = self:resolve_failures(unit.run_id, unit.entity_type, unit.resolved_ids)
  end
  self:write_no_document(unit, record)
  record.failures = copy(unit.failures or {})
  record.resolved_ids = copy(unit.resolved_ids or {})
  record.usage = copy(unit.usage)
  if unit.usage then self:add_usage(unit.run_id, unit.entity_type, unit.usage) end
  if unit.run_id and unit.checkpoint then advance_checkpoint(self, unit, pruned, refreshed) end
  return { written = written, pruned = pruned, refreshed = refreshed, resolved = resolved }
end

-- Like store_pg: the no-document markers of a unit (store.no_document
-- [entity_type][id] = { updated_at, run_id }), set and cleared; recorded
-- in the write's record (no_document, no_document_cleared).
function FakeStore:write_no_document(unit, record)
  local by_type = self.no_document[unit.entity_type] or {}
  self.no_document[unit.entity_type] = by_type
  local mark = unit.no_document or { entity_ids = {}, updated_at = {} }
  for i, id in ipairs(mark.entity_ids) do
    by_type[id] = { updated_at = mark.updated_at[i] ~= "" and mark.updated_at[i] or nil, run_id = unit.run_id }
  end
  for _, id in ipairs(unit.no_document_cleared or {}) do by_type[id] = nil end
  for _, id in ipairs(unit.sync and unit.sync.delete_ids or {}) do by_type[id] = nil end
  record.no_document = copy(mark)
  record.no_document_cleared = copy(unit.no_document_cleared or {})
end

-- Like store_pg: whether entity_type has markers.
function FakeStore:has_no_document(entity_type)
  return next(self.no_document[entity_type] or {}) ~= nil
end

-- Like store_pg: { [id] = the marker is as of updated_at[i] } for ids with one.
function FakeStore:no_document_markers(entity_type, ids, updated_at)
  local out, by_type = {}, self.no_document[entity_type] or {}
  for i, id in ipairs(ids) do
    local m = by_type[id]
    if m then out[id] = m.updated_at == (updated_at[i] ~= "" and updated_at[i] or nil) end
  end
  return out
end

-- Like store_pg: markers of entities gone from the source deleted.
function FakeStore:delete_orphan_markers(source)
  local present, n = {}, 0
  for _, row in ipairs(self.sources[source.entity_type] or {}) do
    if row[source.key] ~= nil then present[key_text(row[source.key])] = true end
  end
  local by_type = self.no_document[source.entity_type] or {}
  for id in pairs(by_type) do
    if not present[id] then by_type[id] = nil; n = n + 1 end
  end
  return n
end

function FakeStore:delete_where(pred)
  local n = 0
  for k, d in pairs(self.docs) do
    if pred(d) then self.docs[k] = nil; n = n + 1 end
  end
  return n
end

function FakeStore:delete_orphans(source)
  local present = {}
  for _, row in ipairs(self.sources[source.entity_type] or {}) do
    if row[source.key] ~= nil then present[key_text(row[source.key])] = true end
  end
  local n = self:delete_where(function(d) return d.entity_type == source.entity_type and not present[d.entity_id] end)
  self.deletions[#self.deletions + 1] = { kind = "orphans", entity_type = source.entity_type, count = n }
  return n
end

-- Like store_pg: asks the source by key only.
function FakeStore:present_keys(source, ids)
  local want, present = {}, {}
  for _, id in ipairs(ids) do want[tostring(id)] = true end
  for _, row in ipairs(self.sources[source.entity_type] or {}) do
    local k = row[source.key] ~= nil and key_text(row[source.key])
    if k and want[k] then present[k] = true end
  end
  return present
end

-- Like store_pg: the source's rows of ids, by key only, in key order.
function FakeStore:rows_by_key(source, ids)
  local want, out = {}, {}
  for _, id in ipairs(ids) do want[tostring(id)] = true end
  for _, row in ipairs(self.sources[source.entity_type] or {}) do
    local k = row[source.key] ~= nil and key_text(row[source.key])
    if k and want[k] then out[#out + 1] = row end
  end
  table.sort(out, function(a, b) return a[source.key] < b[source.key] end)
  return out
end

-- Like store_pg: rows the scope selects, and a key that appears twice.
function FakeStore:key_census(source, scope)
  local seen, rows, duplicate = {}, self:fetch_page(source, scope, nil, nil), nil
  for _, row in ipairs(rows) do
    local k = key_text(row[source.key])
    if seen[k] and not duplicate then duplicate = k end
    seen[k] = true
  end
  return { rows = #rows, duplicate = duplicate }
end

-- Like store_pg: entities of entity_type with a document (chunk 0).
function FakeStore:indexed_entities(entity_type)
  local n = 0
  for _, d in pairs(self.docs) do
    if d.entity_type == entity_type and d.chunk_index == 0 then n = n + 1 end
  end
  return n
end

-- The checkpoint a resumed run gets (like store_pg.start_run): the stored
-- prefix plus the units committed past it.
function FakeStore:resume_checkpoint()
  local out = copy(self.checkpoints)
  for entity_type, ahead in pairs(self.ahead) do
    local list = {}
    for _, a in pairs(ahead) do list[#list + 1] = copy(a) end
    if #list > 0 then
      out[entity_type] = out[entity_type] or {}
      out[entity_type].ahead = list
    end
  end
  return out
end

function FakeStore:delete_entities(run_id, entity_type, entity_ids)
  self:resolve_failures(run_id, entity_type, entity_ids)
  local want = {}
  for _, id in ipairs(entity_ids) do want[id] = true end
  local n = self:delete_where(function(d) return d.entity_type == entity_type and want[d.entity_id] end)
  for id in pairs(want) do (self.no_document[entity_type] or {})[id] = nil end
  self.deletions[#self.deletions + 1] = { kind = "entities", entity_type = entity_type,
                                          entity_ids = copy(entity_ids), count = n }
  return n
end

function FakeStore:record_failures(run_id, failures)
  for _, f in ipairs(failures) do
    local rec = copy(f)
    rec.run_id = run_id
    rec.attempts = rec.attempts or 1
    self.failures[#self.failures + 1] = rec
    local by_type = self.open_dead_letters[f.entity_type]
    if not by_type then by_type = {}; self.open_dead_letters[f.entity_type] = by_type end
    local open = by_type[f.entity_id]
    if open then
      local attempts = open.attempts + rec.attempts
      for k, v in pairs(rec) do open[k] = v end
      open.attempts = attempts
    else
      by_type[f.entity_id] = copy(rec)
    end
  end
  return true
end

function FakeStore:resolve_failures(run_id, entity_type, entity_ids)
  local n = 0
  local by_type = self.open_dead_letters[entity_type] or {}
  for _, id in ipairs(entity_ids) do
    if by_type[id] then
      local f = by_type[id]
      by_type[id] = nil
      f.resolved_run_id = run_id
      self.resolved[#self.resolved + 1] = f
      n = n + 1
    end
  end
  return n
end

-- Statuses a run can be resumed from (like store_runs: a crash, a signal,
-- an alert abort, an internal error).
local RESUMABLE = { running = true, interrupted = true, aborted = true, failed = true }

-- Like store_runs: resumes the latest unfinished run of plan + params (its
-- checkpoint: resume_checkpoint()), or starts one; a run held (started and
-- not yet let go) is "busy", as another session's advisory lock is.
-- Returns run_id, checkpoint, resumed, has_units, or nil, err, "busy".
function FakeStore:start_run(plan_name, params_json, dry_run, must_resume)
  local run
  for i = #self.runs, 1, -1 do
    local r = self.runs[i]
    if r.plan == plan_name and r.params == params_json and not r.dry_run and RESUMABLE[r.status] then
      run = r
      break
    end
  end
  if run and run.held then
    return nil, ("a execução %d do plano %q está em andamento em outro processo"):format(run.id, plan_name), "busy"
  end
  if not run and must_resume then
    return nil, ("não há execução interrompida do plano %q com estes parâmetros para retomar"):format(plan_name),
      "busy"
  end
  local resumed = run ~= nil
  if not run then
    run = { id = #self.runs + 1, plan = plan_name, params = params_json, dry_run = dry_run, requests_spent = 0 }
    self.runs[run.id] = run
  end
  run.status, run.held = "running", true
  return run.id, resumed and self:resume_checkpoint() or {}, resumed, false
end

-- Like store_runs: the run stays held until finish_run (no heartbeat here).
function FakeStore:keep_run(opts) self.kept = opts end

-- Like store_runs: records status and report (status nil: only lets the
-- run go) and returns the requests spent, or nil, err for an unknown run.
function FakeStore:finish_run(run_id, status, report_json, extra_requests)
  local run = self.runs[run_id]
  if not run then return nil, "execução " .. tostring(run_id) .. " não encontrada" end
  run.held = false
  if status then run.status, run.report = status, report_json end
  run.requests_spent = (run.requests_spent or 0) + (extra_requests or 0)
  return run.requests_spent
end

local add_into = require("ragops.util.tables").add_numbers_into

-- Like store_runs: what was committed, per entity type (the checkpoints'
-- prefixes and the units committed past them).
function FakeStore:committed_totals()
  local per = {}
  for entity_type, cp in pairs(self.checkpoints) do add_into(per, entity_type, cp.stats) end
  for entity_type, ahead in pairs(self.ahead) do
    for _, a in pairs(ahead) do add_into(per, entity_type, a.stats) end
  end
  return per
end

-- Like store_runs: the run's open dead letters.
function FakeStore:open_failures(run_id)
  local n = 0
  for _, by_type in pairs(self.open_dead_letters) do
    for _, f in pairs(by_type) do if f.run_id == run_id then n = n + 1 end end
  end
  return n
end

-- Like store_runs: tokens billed to the run (units written and batches dropped).
function FakeStore:run_billed_tokens(run_id) return self.billed[run_id] or 0 end

-- Like store_runs: the bill of a batch embedded and dropped, in the usage.
function FakeStore:record_dropped(run_id, entity_type, usage)
  self.dropped[#self.dropped + 1] = { run_id = run_id, entity_type = entity_type, usage = copy(usage) }
  self:add_usage(run_id, entity_type, { documents = 0, chunks = usage.chunks, bytes = usage.bytes,
                                        chars = usage.chars, tokens = usage.tokens })
  return true
end

-- Usage per entity type (store.usage) and tokens billed per run (store.billed).
function FakeStore:add_usage(run_id, entity_type, usage)
  local u = self.usage[entity_type] or { documents = 0, chunks = 0, bytes = 0, chars = 0, tokens = 0 }
  for _, k in ipairs({ "documents", "chunks", "bytes", "chars", "tokens" }) do u[k] = u[k] + (usage[k] or 0) end
  self.usage[entity_type] = u
  if run_id then self.billed[run_id] = (self.billed[run_id] or 0) + (usage.tokens or 0) end
end

-- The fake runs no SQL: a caller that needs PostgreSQL (ragops sync, the
-- run's report of failure classes) is misusing it.
function FakeStore:query()
  error("ragops.testing: a store falsa não executa SQL (store:query)", 2)
end
function FakeStore:transaction()
  error("ragops.testing: a store falsa não executa SQL (store:transaction)", 2)
end

-- The run is ending (store_pg: no more retries); recorded.
function FakeStore:wind_down() self.wound_down = true end

function M.store(opts)
  opts = opts or {}
  local st = setmetatable({
    sources = opts.sources or {},
    docs = {},                 -- doc_key -> document
    writes = {}, checkpoints = {}, failures = {}, open_dead_letters = {}, resolved = {},
    runs = {}, deletions = {}, fetches = {}, ahead = {},
    usage = {},                -- entity_type -> { chunks, bytes, chars, tokens } billed
    billed = {},               -- run_id -> tokens billed (units written and batches dropped)
    dropped = {},              -- every record_dropped: { run_id, entity_type, usage }
    no_document = {},          -- entity_type -> { [id] = { updated_at, run_id } } (no document by decision)
  }, FakeStore)
  st.fail_write = opts.fail_write
  for _, d in ipairs(opts.documents or {}) do st:put(d) end
  return st
end

---------------------------------------------------------------------------
-- testing.run
---------------------------------------------------------------------------

local LEVEL_NAMES = { debug = "DEPURAÇÃO", info = "INFO", warn = "AVISO", error = "ERRO" }

-- A ragops.obs.log-like object that records "NIVEL mensagem" lines.
function M.log()
  local lines = {}
  local log = { lines = lines }
  for level, name in pairs(LEVEL_NAMES) do
    log[level] = function(fmt, ...)
      local msg = select("#", ...) > 0 and fmt:format(...) or fmt
      lines[#lines + 1] = name .. " " .. msg
    end
  end
  return log
end

local Result = {}
Result.__index = Result

function Result:documents(entity_type) return self.store:documents(entity_type) end
function Result:document(entity_type, entity_id, chunk_index)
  return self.store:document(entity_type, entity_id, chunk_index)
end
-- Log lines containing `text` (plain match).
function Result:logged(text)
  local out = {}
  for _, line in ipairs(self.log) do
    if line:find(text, 1, true) then out[#out + 1] = line end
  end
  return out
end

-- plan_or_path: a validated plan or the path of a plan file.
-- opts = { params = {...}           (plan params, when a path is given; filter params
--                                    entity_type/entity_id/since/until/mode act like CLI flags)
--          overrides = {...}        (plan.with: scope, mode, batch, retry, ...)
--          sources = {...}          (rows per entity_type for a new fake store)
--          documents = {...}        (pre-existing docs for a new fake store)
--          store = fake store       (reuse one, e.g. result.store of a previous run)
--          embedder = { dim, fail, latency_ms } options, or a fake embedder object
--          alerts = true (ragops.obs.alerts built from the plan's thresholds, on the
--                   fake clock; webhooks recorded in result.alerts.webhooks) or an object,
--          scheduler, checkpoint, model ("fake-model"), run_id (1),
--          range = { after, upto } (a scale-out work unit's key range),
--          progress_every_ms, fail_write,
--          stop_after_ms = n (stops the run like a signal at that fake time),
--          budget_usd, price_per_1m_tokens (the spend budget and the model's price),
--          fingerprint = seed (rows' fingerprints, as a real run's env.fingerprint:
--                        a re-run skips rows the store holds unchanged; nil: none),
--          metrics = a ragops.obs.metrics registry (the run's Prometheus metrics) }
-- Returns result = { stats, store, embedder, log (lines), clock (fake ms elapsed), plan, alerts }.
function M.run(plan_or_path, opts)
  opts = opts or {}
  local plan_mod = require "ragops.plan"
  local pipeline = require "ragops.run.pipeline"
  local p = plan_or_path
  if type(plan_or_path) == "string" then
    -- Same loading as `ragops run`: filter params (entity_type, entity_id,
    -- since, until, mode) become the plan's scope, exactly as the CLI does.
    local err
    p, err = require("ragops.plan.params").load_plan(plan_or_path, opts.params)
    if not p then error(err, 2) end
  elseif not plan_mod.is_plan(plan_or_path) then
    error("testing.run: esperado um plano validado ou o caminho de um arquivo de plano", 2)
  end
  if opts.overrides then p = plan_mod.with(p, opts.overrides) end

  local s = opts.scheduler or M.scheduler()
  local store = opts.store or M.store { sources = opts.sources, documents = opts.documents,
                                        fail_write = opts.fail_write }
  local embedder = opts.embedder
  if type(embedder) ~= "table" or type(embedder.embed) ~= "function" then
    local eo = copy(embedder or {}) -- functions (fail, latency_ms) are kept as is
    eo.sched = s
    embedder = M.embedder(eo)
  end
  embedder.sched = embedder.sched or s
  local log = M.log()
  local run_id = opts.run_id == nil and 1 or opts.run_id
  local alerts = opts.alerts
  if alerts == true then
    -- The plan's own thresholds, on the fake clock; webhooks are recorded.
    local webhooks = {}
    alerts = require("ragops.obs.alerts").new {
      config = p.alerts, now = s.now, sleep = s.sleep, spawn = s.spawn, log = log, plan = p.name,
      webhook = function(payload) webhooks[#webhooks + 1] = payload; return true end,
    }
    alerts.webhooks = webhooks
  end
  local env = {
    sched = s, store = store, embedder = embedder, hash = M.hash,
    model = opts.model or "fake-model", dim = embedder.dim, log = log, run_id = run_id,
    checkpoint = opts.checkpoint, alerts = alerts or nil, progress_every_ms = opts.progress_every_ms,
    range = opts.range, budget_usd = opts.budget_usd, price_per_1m_tokens = opts.price_per_1m_tokens,
    metrics = opts.metrics, fingerprint = opts.fingerprint,
  }
  local started = s.now()
  local stats = s.run(function()
    if opts.stop_after_ms then
      -- Like a SIGINT at that moment of the fake clock.
      s.spawn(function()
        s.sleep(opts.stop_after_ms)
        if env.stop then env.stop(130, "interrompido (teste)") end
      end)
    end
    return pipeline.run(p, env)
  end)
  return setmetatable({
    stats = stats, store = store, embedder = embedder, log = log.lines,
    clock = s.now() - started, plan = p, env = env, alerts = alerts or nil,
  }, Result)
end

return M
