-- read_spec.lua: the read stage in a re-run with the target's fingerprints
-- (ctx.fingerprints): rows the store hands as keys alone (skipped as unchanged)
-- become few units that carry no rows, what the target holds is asked only
-- for the other rows' entities, and the next page is read while this one
-- is handed on. The store is a stub over an in-memory source.
local read = require "ragops.run.stages.read"
local testing = require "ragops.testing"

-- A stub store over rows { id, same } (same: the fingerprint matches):
-- records every page asked for and every add_stored call.
local function stub_store(source_rows)
  local store = { pages = {}, stored_asks = {} }
  function store:fetch_page_existing(_, _, after, limit, _, fp)
    self.pages[#self.pages + 1] = { after = after, limit = limit, without_stored = fp and fp.without_stored, target_empty = fp and fp.target_empty }
    local out, skipped = {}, 0
    for _, r in ipairs(source_rows) do
      if (after == nil or r.id > tonumber(after)) and #out < limit then
        if r.same then out[#out + 1] = r.id; skipped = skipped + 1
        else out[#out + 1] = { id = r.id, text = "t" .. r.id } end
      end
    end
    out.skipped = skipped
    return out, {}, {}, {}
  end
  function store:add_stored(entity_type, ids)
    self.stored_asks[#self.stored_asks + 1] = { entity_type = entity_type, ids = ids }
    return true
  end
  return store
end

-- Reads the whole source; returns the units emitted, in order.
local function read_all(store, n_stored, size)
  local s = testing.scheduler()
  local source = { entity_type = "doc", key = "id" }
  local ctx = { plan = { batch = { size = size } }, store = store, sched = s,
                fingerprints = { doc = { seed = "x", set = {}, stored = n_stored } } }
  local units = {}
  local complete = s.run(function()
    return read.read_source(ctx, source, {}, {}, function(u) units[#units + 1] = u end, function() end)
  end)
  return units, complete
end

describe("stages.read numa reexecução com impressões digitais", function()
  local rows
  before_each(function()
    rows = {}
    for id = 1, 300 do rows[id] = { id = id, same = not (id == 70 or id == 71 or id == 250) } end
  end)

  it("linhas inalteradas seguidas viram uma unidade só, sem linhas; as outras vão em lotes", function()
    local store = stub_store(rows)
    local units, complete = read_all(store, 300, 4)
    assert.is_true(complete)
    local total, shapes = 0, {}
    for _, u in ipairs(units) do
      total = total + u.row_count
      shapes[#shapes + 1] = ("%s-%s:%d/%d"):format(u.first_key, u.last_key, #u.rows, u.row_count)
      assert.are.equal(u.row_count - #u.rows, u.fingerprint_skipped)
      assert.is_true(u.fingerprinted)
    end
    assert.are.equal(300, total)
    -- 1..69 skipped; 70..73 a batch (70 and 71 read, 72 and 73 skipped); 74..249 skipped
    -- up to the page end (32 units of 4 = 128 rows a page), and so on.
    assert.are.same({ "1-69:0/69", "70-73:2/4", "74-128:0/55", "129-249:0/121", "250-253:1/4",
                      "254-256:0/3", "257-300:0/44" }, shapes)
  end)

  it("o que o destino guarda é pedido só para as linhas que não foram puladas", function()
    local store = stub_store(rows)
    read_all(store, 300, 4)
    local asked = {}
    for _, a in ipairs(store.stored_asks) do
      for _, id in ipairs(a.ids) do asked[#asked + 1] = id end
    end
    assert.are.same({ "70", "71", "250" }, asked)
    for _, p in ipairs(store.pages) do assert.are.same({ true, false }, { p.without_stored, p.target_empty }) end
  end)

  it("com o destino vazio no começo (backfill frio) nada é pedido ao destino, em páginas de 8 unidades", function()
    for _, r in ipairs(rows) do r.same = false end
    local store = stub_store(rows)
    local units = read_all(store, 0, 4)
    assert.are.equal(75, #units)
    assert.are.same({}, store.stored_asks)
    assert.are.equal(4 * read.PAGE_UNITS, store.pages[1].limit)
    assert.are.same({ true, true }, { store.pages[1].without_stored, store.pages[1].target_empty }) -- with updated_at in µs, for the COPY into the target
  end)

  it("a página seguinte começa onde a anterior terminou, e a leitura para na primeira incompleta", function()
    local store = stub_store(rows)
    read_all(store, 300, 4)
    local afters = {}
    for _, p in ipairs(store.pages) do afters[#afters + 1] = tostring(p.after) end
    assert.are.same({ "nil", "128", "256" }, afters)
  end)
end)
