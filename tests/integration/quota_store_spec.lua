-- quota_store_spec.lua: ragops.store.quota's statements against the real
-- PostgreSQL, on tables made by `ragops migrate` (migration 11): two holders
-- renewing see each other, an expired holder disappears, a pause reaches
-- both (and a shorter one does not cut it), leaving removes the row, keys
-- are apart. The statements run as they are, through PREPARE/EXECUTE in psql
-- (every argument a text literal, typed by the statement).
local H = require "tests.integration.helper"
local store_quota = require "ragops.store.quota"

local US, RS = "\31", "\30" -- field and record separators of the psql output

local function literal(v)
  return "'" .. tostring(v):gsub("'", "''") .. "'"
end

-- A query function for ragops.store.quota on url: rows as tables by column
-- name (strings; null as nil), or nil, psql's error.
local function query_on(url)
  local n = 0
  return function(sql, ...)
    n = n + 1
    local args = {}
    for i = 1, select("#", ...) do args[i] = literal((select(i, ...))) end
    local script = ("prepare q%d as %s;\nexecute q%d(%s);"):format(n, sql, n, table.concat(args, ", "))
    local code, out, err = H.sh(("psql -X -q -A -P footer=off -F %s -R %s -v ON_ERROR_STOP=1 -d %s -c %s")
      :format(H.q(US), H.q(RS), H.q(url), H.q(script)))
    if code ~= 0 then return nil, err end
    local records = {}
    for rec in (out:gsub("\n$", "") .. RS):gmatch("(.-)" .. RS) do records[#records + 1] = rec end
    local names, rows = {}, {}
    for c in ((records[1] or "") .. US):gmatch("(.-)" .. US) do names[#names + 1] = c end
    for r = 2, #records do
      local row, i = {}, 0
      for c in (records[r] .. US):gmatch("(.-)" .. US) do
        i = i + 1
        if c ~= "" then row[names[i]] = c end
      end
      rows[#rows + 1] = row
    end
    return rows
  end
end

local function names_of(view)
  local out = {}
  for i, h in ipairs(view.holders) do out[i] = h.holder end
  return out
end

describe("cota compartilhada no PostgreSQL (ragops.store.quota)", function()
  local url, q, store
  local KEY = "openai|text-embedding-3-small"

  setup(function()
    url = H.migrated_db("quota_store", 0, 0)
    q = query_on(url)
    store = store_quota.new(q)
  end)

  before_each(function()
    H.psql(url, "delete from ragops_quota_holders; delete from ragops_quota_state")
  end)

  it("a migração 11 criou as tabelas", function()
    local version = H.scalar(url, "select max(version) from ragops_schema_version")
    assert.is_true(version >= 11, "versão " .. tostring(version))
    assert.are.equal(1, H.scalar(url, "select count(*) from ragops_schema_version where version = 11"))
    assert.are.equal(2, H.scalar(url, [[select count(*) from pg_tables
                                          where tablename in ('ragops_quota_holders', 'ragops_quota_state')]]))
  end)

  it("dois detentores renovam e cada um vê o outro, com a demanda dele", function()
    local a = assert(store:renew(KEY, "a", { tokens_per_min = 1000, requests_per_min = 10, concurrency = 2 }, 10))
    assert.are.same({ "a" }, names_of(a))
    local b = assert(store:renew(KEY, "b", { tokens_per_min = 500, starved = true }, 10))
    assert.are.same({ "b", "a" }, names_of(b))
    assert.are.same({ tokens_per_min = 1000, requests_per_min = 10, concurrency = 2, starved = false },
      b.holders[2].demand)
    a = assert(store:renew(KEY, "a", { tokens_per_min = 2000 }, 10))
    assert.are.same({ "a", "b" }, names_of(a))
    assert.are.same({ tokens_per_min = 500, starved = true }, a.holders[2].demand)
    assert.are.equal(0, a.pause_ms)
    -- The lease is on the database clock: a's, just renewed, ends about 10 s from
    -- now; b's, renewed before (how long before depends on the machine's
    -- load), is still running and never past 10 s from now.
    assert.are.equal(1, H.scalar(url, [[select count(*) from ragops_quota_holders
      where holder = 'a' and expires_at > now() + interval '5 s' and expires_at <= now() + interval '10 s']]))
    assert.are.equal(1, H.scalar(url, [[select count(*) from ragops_quota_holders
      where holder = 'b' and expires_at > now() and expires_at <= now() + interval '10 s']]))
  end)

  it("um detentor vencido some da vista e da tabela na renovação seguinte", function()
    assert(store:renew(KEY, "morto", { tokens_per_min = 1 }, -1))   -- lease already over
    assert(store:renew("outra|chave", "vizinho", {}, -1))           -- another key: not this one's to delete
    local a = assert(store:renew(KEY, "a", {}, 10))
    assert.are.same({ "a" }, names_of(a))
    assert.are.equal(1, a.expired)
    assert.are.equal(0, H.scalar(url, "select count(*) from ragops_quota_holders where holder = 'morto'"))
    assert.are.equal(1, H.scalar(url, "select count(*) from ragops_quota_holders where holder = 'vizinho'"))
  end)

  it("uma pausa vale para os dois; uma mais curta depois não a encurta", function()
    assert(store:renew(KEY, "a", {}, 10))
    assert(store:renew(KEY, "b", {}, 10))
    assert.is_true(store:pause(KEY, 60000))
    assert.is_true(store:pause(KEY, 1000))
    for _, holder in ipairs({ "a", "b" }) do
      local view = assert(store:renew(KEY, holder, {}, 10))
      assert.is_true(view.pause_ms > 50000 and view.pause_ms <= 60000,
        ("%s: pausa de %s ms"):format(holder, tostring(view.pause_ms)))
    end
    local other = assert(store:renew("outra|chave", "c", {}, 10))
    assert.are.equal(0, other.pause_ms, "a pausa é da chave")
    -- A pause over is 0, not negative.
    H.psql(url, "update ragops_quota_state set paused_until = now() - interval '1 min'")
    assert.are.equal(0, assert(store:renew(KEY, "a", {}, 10)).pause_ms)
  end)

  it("sair apaga a linha: o outro fica sozinho na renovação seguinte", function()
    assert(store:renew(KEY, "a", {}, 10))
    assert(store:renew(KEY, "b", {}, 10))
    assert.is_true(store:leave(KEY, "a"))
    assert.are.same({ "b" }, names_of(assert(store:renew(KEY, "b", {}, 10))))
    assert.are.equal(0, H.scalar(url, "select count(*) from ragops_quota_holders where holder = 'a'"))
  end)
end)
