-- session_spec.lua: the Batch API session of a run (ragops.run.batch,
-- issue 24) in place of the embed stage, with no database and no server:
-- a fake provider client with provider/batch.lua's contract (upload,
-- create, ... returning value or nil, err, kind) and a small store that
-- answers the SQL of ragops.store.batches for ragops_batches rows in
-- memory. Covers embed_items: deferral (entities marked failed/deferred,
-- the unit's record), inputs too long (dead letters, their entities not
-- deferred), a unit too big for any part, isolated items alone in their
-- request, hits from a collected batch, resubmission rounds and the batch's
-- own failure, and a full part sealed, uploaded and its batch created.
local cjson = require "cjson"

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function temp_dir()
  local dir = os.tmpname()
  os.remove(dir)
  os.execute("mkdir -p " .. q(dir))
  return dir
end

local function read_lines(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local out = {}
  for line in f:lines() do out[#out + 1] = cjson.decode(line) end
  f:close()
  return out
end

-- ragops_batches in memory: the statements of ragops.store.batches the session issues.
local function fake_store()
  local store = { rows = {}, statements = {} }
  local function copy(r) local c = {}; for k, v in pairs(r) do c[k] = v end; return c end
  function store:query(sql, ...)
    local args = { ... }
    self.statements[#self.statements + 1] = sql
    if sql:find("^insert into ragops_batches") then
      local row = { id = #self.rows + 1, run_id = args[1], file_name = args[2], state = "building", file_bytes = 0,
                    requests = 0, inputs = 0, tokens_est = 0 }
      self.rows[row.id] = row
      return { copy(row) }
    elseif sql:find("^update ragops_batches set") then
      local row = self.rows[args[1]]
      local from = sql:match("state = any%(%$(%d+)::text%[%]%)")
      if from then
        local ok = false
        for _, s in ipairs(args[tonumber(from)]) do ok = ok or s == row.state end
        if not ok then return { affected = 0 } end
      end
      for name, n in sql:match("set (.-) where"):gmatch("([%w_]+) = %$(%d+)::") do row[name] = args[tonumber(n)] end
      return { affected = 1 }
    elseif sql:find("from ragops_batches where id = %$1") then
      return { copy(self.rows[args[1]]) }
    end
    error("SQL inesperado no spec: " .. sql)
  end
  return store
end

-- The provider client's contract (ragops.provider.batch): value, or nil, err, kind.
local function fake_api()
  local api = { calls = {}, endpoint = "/v1/embeddings" }
  function api:upload(path, filename, max_bytes)
    self.calls[#self.calls + 1] = { "upload", path = path, filename = filename, max_bytes = max_bytes,
                                    lines = read_lines(path) }
    return "file-" .. #self.calls
  end
  function api:create(file_id, metadata)
    self.calls[#self.calls + 1] = { "create", file_id = file_id, metadata = metadata }
    return { id = "batch-" .. file_id, status = "validating" }
  end
  for _, name in ipairs({ "find_file", "find_batch", "get", "cancel", "download" }) do
    api[name] = function() error("chamada inesperada a api:" .. name) end
  end
  return api
end

local function fake_ctx()
  local ctx = { env = { run_id = 9, dim = 3 }, spent = { tokens = 0 }, stats = {},
                plan = { name = "teste", embed = { max_resubmissions = 2, poll_s = 1 } },
                log = { info = function() end, warn = function() end } }
  function ctx:abort(code, msg) self.aborted = { code = code, msg = msg } end
  function ctx:abort_db(msg, err) self.aborted = { msg = msg, err = err } end
  function ctx:halted() return self.aborted ~= nil end
  return ctx
end

local function item(entity, index, text)
  return { text = text, chunk = { hash = ("h%s-%d"):format(entity, index), index = index }, entity = { id = entity } }
end

-- A decision over items (every entity changed, not failed).
local function decision_of(items)
  local changed = {}
  for _, it in ipairs(items) do changed[it.entity.id] = { entity = it.entity, failed = false } end
  return { items = items, changed = changed }
end

local function delta() return { tokens = 0, bytes = 0, chars = 0, bytes_sq = 0 } end

insulate("lotes: a sessão no lugar do estágio de embedding (ragops.run.batch)", function()
  local batch = require "ragops.run.batch"
  local dir, store, api, ctx

  -- max_input_tokens 10 at 0.25 tokens/byte: an input over 40 bytes is too long.
  local LIMITS = { max_inputs = 4, max_input_tokens = 10, tokens_per_byte = 0.25 }

  local function session(extra)
    local limits = {}
    for k, v in pairs(LIMITS) do limits[k] = v end
    for k, v in pairs(extra or {}) do limits[k] = v end
    return batch.new { api = api, store = store, dir = dir, limits = limits, plan = ctx.plan, log = ctx.log,
                       body = { model = "m", dimensions = 3, url = "/v1/embeddings" } }
  end

  local function unit(lookup) return { source = { entity_type = "doc" }, batch_lookup = lookup } end

  before_each(function()
    dir, store, api, ctx = temp_dir(), fake_store(), fake_api(), fake_ctx()
  end)
  after_each(function() os.execute("rm -rf " .. q(dir)) end)

  it("sem lote coletado: as entidades vão para a parte, marcadas failed e deferred, com o registro da unidade", function()
    local s = session()
    local items = { item("a", 0, "texto a0"), item("a", 1, "texto a1"), item("b", 0, "texto b0") }
    local d, u = decision_of(items), unit(nil)
    local parts, failed = s:embed_items(ctx, u, d, delta())
    assert.is_nil(ctx.aborted)
    assert.are.same({}, parts)
    assert.are.same({}, failed)
    for _, id in ipairs({ "a", "b" }) do
      assert.is_true(d.changed[id].failed, id)
      assert.is_true(d.changed[id].deferred, id)
    end
    local rec = u.batch_add
    assert.truthy(rec, "sem batch_add na unidade")
    assert.are.same({ "a", "b" }, rec.entity_ids)
    assert.are.same({ "ha-0", "ha-1", "hb-0" }, rec.hashes)
    assert.are.same({ 3 }, rec.request_sizes)
    assert.are.same({ 1, 1, 0, 1, 3, "doc" }, { rec.batch, rec.unit_no, rec.round, rec.requests, rec.inputs,
                                                 rec.entity_type })
    local lines = read_lines(s.open.path)
    assert.are.equal(1, #lines)
    assert.are.equal("1-1-1", lines[1].custom_id)
    assert.are.same({ "texto a0", "texto a1", "texto b0" }, lines[1].body.input)
    local f = io.open(s.open.path, "rb")
    assert.are.equal(f:seek("end"), rec.file_end)
    f:close()
    assert.are.equal(2, s.unit_no, "a próxima unidade tem o número seguinte")
  end)

  it("entrada longa demais: carta morta input_too_long; a entidade dela não é adiada nem enviada", function()
    local s = session()
    local long = ("x"):rep(41)
    local items = { item("a", 0, "curto"), item("a", 1, long), item("b", 0, "texto b0") }
    local d, u = decision_of(items), unit(nil)
    local _, failed = s:embed_items(ctx, u, d, delta())
    assert.are.equal(1, #failed)
    assert.are.equal("input_too_long", failed[1].info.class)
    assert.are.equal("ha-1", failed[1].items[1].chunk.hash)
    assert.is_false(d.changed.a.failed, "a entidade com a entrada longa foi marcada adiada")
    assert.is_nil(d.changed.a.deferred)
    assert.is_true(d.changed.b.deferred)
    assert.are.same({ "b" }, u.batch_add.entity_ids)
    assert.are.same({ "hb-0" }, u.batch_add.hashes)
    assert.are.same({ "texto b0" }, read_lines(s.open.path)[1].body.input)
  end)

  it("só entradas longas demais: nenhuma parte aberta, nenhum registro", function()
    local s = session()
    local d, u = decision_of({ item("a", 0, ("x"):rep(80)) }), unit(nil)
    local _, failed = s:embed_items(ctx, u, d, delta())
    assert.are.equal(1, #failed)
    assert.is_nil(u.batch_add)
    assert.is_nil(s.open)
    assert.are.equal(0, #store.statements)
  end)

  it("unidade grande demais para qualquer parte: carta morta batch_too_large, entidades não adiadas", function()
    local s = session({ batch_max_inputs = 2 })
    local d, u = decision_of({ item("a", 0, "um"), item("a", 1, "dois"), item("a", 2, "três") }), unit(nil)
    local _, failed = s:embed_items(ctx, u, d, delta())
    assert.are.equal(1, #failed)
    assert.are.equal("batch_too_large", failed[1].info.kind)
    assert.are.equal("permanent", failed[1].info.class)
    assert.are.equal(3, #failed[1].items)
    assert.is_false(d.changed.a.failed)
    assert.is_nil(u.batch_add)
    assert.are.equal(0, #api.calls, "nada foi enviado")
  end)

  it("reenvio: as isoladas vão cada uma num pedido só, rodada seguinte, contadas como reenviadas", function()
    local s = session()
    local lookup = { vectors = {}, errors = {}, isolate = { ["ha-0"] = true, ["ha-1"] = true }, round = 0, tokens = 0,
                     by_batch = {} }
    local items = { item("a", 0, "a zero"), item("a", 1, "a um"), item("b", 0, "b zero"), item("b", 1, "b um") }
    local d, u = decision_of(items), unit(lookup)
    local parts, failed = s:embed_items(ctx, u, d, delta())
    assert.are.same({}, parts)
    assert.are.same({}, failed)
    assert.are.same({ 1, 1, 2 }, u.batch_add.request_sizes)
    assert.are.same({ "ha-0", "ha-1", "hb-0", "hb-1" }, u.batch_add.hashes)
    assert.are.equal(1, u.batch_add.round)
    assert.are.equal(4, s.counts.resubmitted)
    local lines = read_lines(s.open.path)
    assert.are.same({ { "a zero" }, { "a um" }, { "b zero", "b um" } },
      { lines[1].body.input, lines[2].body.input, lines[3].body.input })
  end)

  it("acerto: as entidades com todos os vetores viram partes; as outras, a parte nova", function()
    local s = session()
    local vb = { name = "vetores" }
    local lookup = { vectors = { ["ha-0"] = { batch = vb, row = 2 }, ["ha-1"] = { batch = vb, row = 1 },
                                 ["hb-0"] = { batch = vb, row = 3 } },
                     errors = {}, isolate = {}, round = 1, tokens = 12, by_batch = {} }
    local items = { item("a", 0, "a zero"), item("a", 1, "a um"), item("b", 0, "b zero"), item("b", 1, "b um") }
    local d, u, dl = decision_of(items), unit(lookup), delta()
    local parts = s:embed_items(ctx, u, d, dl)
    -- the result lines are billed whole; the bytes are those of what was written
    assert.are.same({ 12, 12, #"a zero" + #"a um" }, { dl.tokens, ctx.spent.tokens, dl.bytes })
    assert.are.equal(1, #parts)
    assert.are.same({ 2, 1 }, parts[1].rows)
    assert.is_false(d.changed.a.failed)
    assert.is_true(d.changed.b.deferred)
    assert.are.same({ "b" }, u.batch_add.entity_ids)
    assert.are.same({ "hb-0", "hb-1" }, u.batch_add.hashes)
    assert.are.equal(2, u.batch_add.round)
  end)

  it("depois de embed.max_resubmissions, ou num lote que falhou: carta morta, nada reenviado", function()
    local s = session()
    local items = { item("a", 0, "a zero") }
    local late = { vectors = {}, errors = {}, isolate = {}, round = 2, tokens = 0, by_batch = {} }
    local d, u = decision_of(items), unit(late)
    local _, failed = s:embed_items(ctx, u, d, delta())
    assert.are.equal(1, #failed)
    assert.are.equal("batch_expired", failed[1].info.class)
    assert.are.equal(3, failed[1].attempts)
    assert.is_nil(u.batch_add)
    assert.is_false(d.changed.a.failed, "a entidade foi marcada adiada")
    local broken = { vectors = {}, errors = {}, isolate = {}, round = 0, tokens = 0, by_batch = {},
                     miss = { class = "batch_failed", err = "o lote falhou" } }
    d, u = decision_of(items), unit(broken)
    _, failed = s:embed_items(ctx, u, d, delta())
    assert.are.equal("batch_failed", failed[1].info.class)
    assert.is_nil(u.batch_add)
    assert.is_nil(s.open, "uma parte foi aberta")
  end)

  it("parte cheia: é fechada, enviada e o lote criado; a unidade vai para uma parte nova", function()
    local s = session({ batch_max_inputs = 3 })
    local first, second = unit(nil), unit(nil)
    s:embed_items(ctx, first, decision_of({ item("a", 0, "a zero"), item("a", 1, "a um") }), delta())
    s:embed_items(ctx, second, decision_of({ item("b", 0, "b zero"), item("b", 1, "b um") }), delta())
    assert.is_nil(ctx.aborted, ctx.aborted and ctx.aborted.msg)
    assert.are.equal(1, first.batch_add.batch)
    assert.are.equal(2, second.batch_add.batch)
    assert.are.equal(1, second.batch_add.unit_no, "a parte nova começa na unidade 1")
    assert.are.equal(2, #api.calls)
    local up, created = api.calls[1], api.calls[2]
    assert.are.equal("upload", up[1])
    assert.are.equal(store.rows[1].file_name, up.filename)
    assert.are.equal(200 * 1000 * 1000, up.max_bytes)
    assert.are.same({ "a zero", "a um" }, up.lines[1].body.input)
    assert.are.same({ "create", "file-1", "1" }, { created[1], created.file_id, created.metadata.ragops_part })
    assert.are.same({ "validating", "batch-file-1", "file-1" },
      { store.rows[1].state, store.rows[1].batch_id, store.rows[1].input_file_id })
    assert.are.equal("building", store.rows[2].state)
    assert.are.equal("2-1-1", read_lines(s.open.path)[1].custom_id)
  end)
end)
