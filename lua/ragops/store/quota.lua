-- ragops.store.quota: the SQL of the provider quota shared by every ragops
-- process (ragops.provider.quota keeps it). ragops_quota_holders has one row
-- per process holding a slice of an endpoint's quota (key), with what its
-- workers asked (demand, jsonb) and when its lease ends; ragops_quota_state
-- one row per key with the pause every holder honours (a Retry-After seen
-- by one of them). Created by migration 11 (ragops.store.migrate).
--
-- Every instant comes from the database clock (now()): processes on
-- different machines never compare their own clocks. What leaves this module
-- is relative (a pause's remaining milliseconds).
--
-- `q` is a store (q:query(sql, ...)) or a function q(sql, ...), both
-- answering rows or nil, err, sqlstate. Each function is one statement (so
-- one transaction, one round trip).
local cjson = require "cjson"

local M = {}

-- Longest demand document accepted from the table (another process wrote it).
M.MAX_DEMAND_BYTES = 4096

local function run(q, sql, ...)
  if type(q) == "function" then return q(sql, ...) end
  return q:query(sql, ...)
end

-- Upserts this holder's row (demand, lease of ttl_s seconds from now()),
-- deletes the key's expired rows, and reads every live holder (this one
-- from its upsert: the statement's snapshot does not see it otherwise) and
-- the key's pause. Data-modifying CTEs: one atomic statement.
M.RENEW_SQL = [[
  with mine as (
    insert into ragops_quota_holders (key, holder, demand, expires_at)
    values ($1, $2, $3::jsonb, now() + make_interval(secs => $4::float8))
    on conflict (key, holder) do update set demand = excluded.demand, expires_at = excluded.expires_at
    returning holder, demand),
  expired as (
    delete from ragops_quota_holders
     where key = $1 and holder <> $2 and expires_at <= now() returning holder)
  select holder, demand::text as demand,
         (select greatest(0, extract(epoch from (paused_until - now())) * 1000)::float8
            from ragops_quota_state where key = $1) as pause_ms,
         (select count(*) from expired)::int as expired
    from mine
  union all
  select holder, demand::text, null, null
    from ragops_quota_holders
   where key = $1 and holder <> $2 and expires_at > now()]]

-- A demand document read back: a table of finite numbers >= 0 and the
-- starved flag, or nil (no usable data: an equal share).
local function decode_demand(text)
  if type(text) ~= "string" or #text > M.MAX_DEMAND_BYTES then return nil end
  local ok, doc = pcall(cjson.decode, text)
  if not ok or type(doc) ~= "table" then return nil end
  local out = { starved = doc.starved == true }
  for _, key in ipairs({ "requests_per_min", "tokens_per_min", "concurrency" }) do
    local v = doc[key]
    if type(v) == "number" and v == v and v >= 0 and v < math.huge then out[key] = v end
  end
  return out
end
M.decode_demand = decode_demand

-- The demand as stored: its numbers and flag only.
local function encode_demand(demand)
  demand = demand or {}
  return cjson.encode({ requests_per_min = demand.requests_per_min, tokens_per_min = demand.tokens_per_min,
                        concurrency = demand.concurrency, starved = demand.starved == true })
end

-- Renews `holder`'s lease on `key` for ttl_s seconds with its demand.
-- Returns { holders = { { holder, demand = table or nil }, ... } (this one
-- first), pause_ms = remaining pause (0: none), expired = rows removed },
-- or nil, err, sqlstate.
function M.renew(q, key, holder, demand, ttl_s)
  local rows, err, state = run(q, M.RENEW_SQL, key, holder, encode_demand(demand), ttl_s)
  if not rows then return nil, err, state end
  local view = { holders = {}, pause_ms = 0, expired = 0 }
  for _, row in ipairs(rows) do
    if row.holder == holder then
      view.pause_ms = tonumber(row.pause_ms) or 0
      view.expired = tonumber(row.expired) or 0
      table.insert(view.holders, 1, { holder = row.holder, demand = decode_demand(row.demand) })
    else
      view.holders[#view.holders + 1] = { holder = row.holder, demand = decode_demand(row.demand) }
    end
  end
  return view
end

-- Pauses every holder of `key` for ms milliseconds from now() (a later
-- pause already recorded stays). Returns true or nil, err, sqlstate.
M.PAUSE_SQL = [[
  insert into ragops_quota_state (key, paused_until, updated_at)
  values ($1, now() + make_interval(secs => $2::float8 / 1000), now())
  on conflict (key) do update
    set paused_until = greatest(ragops_quota_state.paused_until, excluded.paused_until), updated_at = now()]]

function M.pause(q, key, ms)
  local rows, err, state = run(q, M.PAUSE_SQL, key, ms)
  if not rows then return nil, err, state end
  return true
end

-- Gives `holder`'s slice of `key` back at once (the others take it at their
-- next renewal). Returns true or nil, err, sqlstate.
function M.leave(q, key, holder)
  local rows, err, state = run(q, "delete from ragops_quota_holders where key = $1 and holder = $2", key, holder)
  if not rows then return nil, err, state end
  return true
end

-- Records an endpoint's health on its key: taken out (down_ms > 0, with
-- the reason, a kind such as "connection" or "http_503"; down_since keeps
-- the first instant of an outage) or back (down_ms nil). `name` is the
-- endpoint's label. Returns true or nil, err, sqlstate.
M.HEALTH_SQL = [[
  insert into ragops_quota_state (key, endpoint, down_since, down_until, down_reason, updated_at)
  values ($1, $2, case when $3::float8 is null then null else now() end,
          now() + make_interval(secs => coalesce($3::float8, 0) / 1000), $4, now())
  on conflict (key) do update
    set endpoint = excluded.endpoint,
        down_since = case when $3::float8 is null then null
                          else coalesce(ragops_quota_state.down_since, now()) end,
        down_until = case when $3::float8 is null then null else excluded.down_until end,
        down_reason = case when $3::float8 is null then ragops_quota_state.down_reason else $4 end,
        updated_at = now()]]

function M.health(q, key, name, down_ms, reason)
  local rows, err, state = run(q, M.HEALTH_SQL, key, name, down_ms, reason)
  if not rows then return nil, err, state end
  return true
end

-- Every endpoint key seen (for ragops status): its label, pause, health and
-- live holders, by key.
M.STATUS_SQL = [[
  select s.key, s.endpoint, s.down_reason,
         to_char(s.down_since, 'YYYY-MM-DD HH24:MI:SS') as down_since,
         greatest(0, extract(epoch from (s.down_until - now())))::float8 as down_left_s,
         greatest(0, extract(epoch from (s.paused_until - now())))::float8 as paused_left_s,
         (select count(*) from ragops_quota_holders h where h.key = s.key and h.expires_at > now())::int as holders
    from ragops_quota_state s
  union all
  select h.key, null, null, null, null, null, count(*)::int
    from ragops_quota_holders h
   where h.expires_at > now() and not exists (select 1 from ragops_quota_state s where s.key = h.key)
   group by h.key
   order by 1
   limit 100]]

function M.status(q)
  return run(q, M.STATUS_SQL)
end

-- The quota store ragops.provider.quota takes (store:renew, :pause, :leave)
-- over `q`.
function M.new(q)
  return {
    renew = function(_, key, holder, demand, ttl_s) return M.renew(q, key, holder, demand, ttl_s) end,
    pause = function(_, key, ms) return M.pause(q, key, ms) end,
    leave = function(_, key, holder) return M.leave(q, key, holder) end,
    health = function(_, key, name, down_ms, reason) return M.health(q, key, name, down_ms, reason) end,
  }
end

return M
