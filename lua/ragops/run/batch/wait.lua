-- ragops.run.batch.wait: after the sources were read, the run waits for its
-- batches: it polls them with backoff (embed.poll_s, growing 1.5x per
-- quiet poll up to embed.poll_max_s), collects each one that ends
-- (ragops.run.batch.collect), submits the part of what came back without a
-- vector, and says where things stand on a progress line (parts by state,
-- request_counts, the oldest's age, the estimated completion). Stopped (a
-- signal, an error), it leaves the batches running and says how to collect
-- or cancel them.
local batches = require "ragops.store.batches"
local collect = require "ragops.run.batch.collect"
local format = require "ragops.util.format"
local instruments = require "ragops.obs.instruments"
local remote = require "ragops.run.batch.remote"

local M = {}

-- "2 in_progress, 1 validating" of the active parts.
local function states_text(active)
  local n, names = {}, {}
  for _, r in ipairs(active) do
    if not n[r.state] then names[#names + 1] = r.state end
    n[r.state] = (n[r.state] or 0) + 1
  end
  table.sort(names)
  local out = {}
  for _, s in ipairs(names) do out[#out + 1] = ("%d %s"):format(n[s], s) end
  return table.concat(out, ", ")
end

-- The progress line of the batches in flight.
local function progress(ctx, active)
  local total, done, failed, oldest = 0, 0, 0, nil
  local now = os.time()
  for _, r in ipairs(active) do
    total = total + (r.request_total or r.requests or 0)
    done, failed = done + (r.request_completed or 0), failed + (r.request_failed or 0)
    local since = r.submitted_s or r.created_s
    if since and (not oldest or since < oldest) then oldest = since end
  end
  local age = oldest and math.max(now - oldest, 0) or 0
  local eta = "sem estimativa ainda"
  if done > 0 and total > done then
    eta = "conclusão estimada em " .. format.format_duration(age * (total - done) / done)
  end
  ctx.log.info("lotes em andamento: %d (%s); pedidos %s de %s concluídos, %s com falha; o mais antigo há %s; %s",
    #active, states_text(active), format.format_count(done), format.format_count(total), format.format_count(failed),
    format.format_duration(age), eta)
end

-- The metrics of the parts not finished with (rows) and of the active ones.
local function gauges(ctx, rows, active)
  local by_state = {}
  for _, s in ipairs(batches.OPEN_STATES) do by_state[s] = 0 end
  for _, r in ipairs(rows) do by_state[r.state] = (by_state[r.state] or 0) + 1 end
  for s, n in pairs(by_state) do instruments.set(ctx, "ragops_batch_api_parts", { state = s }, n) end
  local total, completed, failed = 0, 0, 0
  for _, r in ipairs(active) do
    total = total + (r.request_total or r.requests or 0)
    completed, failed = completed + (r.request_completed or 0), failed + (r.request_failed or 0)
  end
  for status, n in pairs({ total = total, completed = completed, failed = failed }) do
    instruments.set(ctx, "ragops_batch_api_requests", { status = status }, n)
  end
end

-- Polls, collects and submits once. Returns the active parts and whether
-- anything changed, or nil after stopping.
local function step(session, ctx)
  local rows, err, state = batches.open_parts(session.store, ctx.env.run_id)
  if not rows then ctx:abort_db("falha ao ler os lotes da execução", err, state); return nil end
  local active, changed = {}, false
  for _, row in ipairs(rows) do
    if ctx:halted() then return nil end
    if batches.PROVIDER_ACTIVE[row.state] then
      local moved
      row, moved = remote.poll(session, ctx, row)
      if not row then return nil end
      changed = changed or moved
    end
    if batches.PROVIDER_FINAL[row.state] or row.state == "lost" then
      if not collect.collect_part(session, ctx, row) then return nil end
      changed = true
    elseif row.state == "ready" then
      if not remote.submit(session, ctx, row) then return nil end
      changed = true
    elseif batches.PROVIDER_ACTIVE[row.state] then
      active[#active + 1] = row
    end
  end
  gauges(ctx, rows, active)
  return active, changed
end

-- What to say when the run stops with batches at the provider.
local function say_left_running(ctx)
  ctx.log.warn("os lotes continuam no provedor e seguem sendo processados. Para coletá-los, rode o mesmo comando "
    .. "(ou `ragops batch collect --plan %s`); para desistir deles, `ragops batch cancel --plan %s`",
    ctx.plan.name, ctx.plan.name)
end

-- Waits for every batch of the run and collects it. Returns true when none
-- is left, or nil after stopping.
function M.wait_all(session, ctx)
  local poll_ms, max_ms = ctx.plan.embed.poll_s * 1000, ctx.plan.embed.poll_max_s * 1000
  local delay = poll_ms
  while not ctx:halted() do
    local active, changed = step(session, ctx)
    if not active then break end
    if #active == 0 then
      if not (session.open and session.open.requests > 0) then
        session:seal(ctx)
        return true
      end
      if not session:seal(ctx) then break end
      changed = true
    else
      progress(ctx, active)
    end
    delay = changed and poll_ms or math.min(delay * 1.5, max_ms)
    remote.sleep(ctx, delay)
  end
  say_left_running(ctx)
  return nil
end

return M
