-- ragops.run.batch.remote: a part's way to the provider and back, each step
-- recorded in ragops_batches before and after it (ragops.store.batches), so
-- a killed process never uploads a part twice: ready -> uploading (the file
-- goes up under its unique name) -> uploaded (input_file_id) -> the batch's
-- states (batch_id). A resumed run (M.reconcile) asks the provider what an
-- interrupted step did: a file named as the part's is the upload that
-- happened; a batch of that input file is the creation that happened. The
-- spend budget and the model's queue of enqueued tokens are weighed before
-- each upload. Every call goes through the provider policy
-- (ragops.provider.batch, ragops.provider.retry).
local batch_api = require "ragops.provider.batch"
local batches = require "ragops.store.batches"
local exit = require "ragops.util.exit"
local format = require "ragops.util.format"
local instruments = require "ragops.obs.instruments"
local part = require "ragops.run.batch.part"
local safe_file = require "ragops.util.safe_file"
local scrub = require "ragops.util.scrub"

local M = {}

-- How long the queue's wait sleeps between polls, at least (ms).
M.QUEUE_POLL_MS = 1000

local function db_failed(ctx, what, ok, err, state)
  if ok == nil then ctx:abort_db(what, err, state); return true end
  return false
end

local function provider_failed(ctx, what, err, kind)
  if kind == "cancelled" then return end -- the run is stopping already
  ctx:abort(batch_api.exit_code(kind), ("%s: %s"):format(what, tostring(err)))
end

-- Sleeps ms in slices, waking early when the run stops. False when it stopped.
function M.sleep(ctx, ms)
  local until_ms = ctx.sched.now() + ms
  while not ctx:halted() do
    local left = until_ms - ctx.sched.now()
    if left <= 0 then return true end
    ctx.sched.sleep(math.min(left, 250))
  end
  return false
end

-- Tokens of the parts the provider has or will have (uploaded, not collected).
local function tokens_in(store, run_id, states)
  local rows = store:query("select coalesce(sum(tokens_est), 0)::bigint as t from ragops_batches "
    .. "where run_id = $1 and state = any($2::text[])", run_id, states)
  return rows and tonumber(rows[1].t) or nil
end

local UNCOLLECTED = { "uploading", "uploaded", "validating", "in_progress", "finalizing", "cancelling",
                      "completed", "expired", "failed", "cancelled" }
local ENQUEUED = { "uploading", "uploaded", "validating", "in_progress", "finalizing" }

-- The budget before an upload: the run's billed tokens, those of its parts
-- not yet collected (at their estimate) and this part's, at the batch price.
local function budget_allows(session, ctx, row)
  local env = ctx.env
  if not (env.budget_usd and env.price_per_1m_tokens) then return true end
  local pending = tokens_in(session.store, env.run_id, UNCOLLECTED) or 0
  local spent = (env.budget_base or 0) + ctx.spent.tokens + pending
  local price = env.price_per_1m_tokens / 1e6
  if (spent + row.tokens_est) * price <= env.budget_usd then return true end
  ctx:abort(exit.alert, ("orçamento de US$ %s atingido: gasto e comprometido em lotes US$ %s; a parte %s custaria "
    .. "cerca de US$ %s e não foi enviada. Rode o mesmo comando com um --budget-usd maior para continuar")
    :format(format.format_number(env.budget_usd, 4), format.format_number(spent * price, 4), row.file_name,
      format.format_number(row.tokens_est * price, 4)), true)
  return false
end

-- The run's open parts in flight at the provider (as recorded).
local function active_parts(session, ctx)
  local out = {}
  for _, r in ipairs(batches.open_parts(session.store, ctx.env.run_id) or {}) do
    if batches.PROVIDER_ACTIVE[r.state] then out[#out + 1] = r end
  end
  return out
end

-- Waits until room() says true (nil: it stopped the run): between checks
-- it sleeps the poll interval and polls the run's parts in flight (their
-- ends make room). False when the run stopped.
local function wait_until(session, ctx, room)
  while not ctx:halted() do
    local ok = room()
    if ok ~= false then return ok == true end
    if not M.sleep(ctx, math.max(M.QUEUE_POLL_MS, ctx.plan.embed.poll_s * 1000)) then return false end
    for _, r in ipairs(active_parts(session, ctx)) do M.poll(session, ctx, r) end
  end
  return false
end

-- Waits until the model's queue takes the part's tokens
-- (provider.limits.batch_enqueued_tokens). False when the run stopped.
local function wait_queue_room(session, ctx, row)
  local limit = session.part_limits.enqueued_tokens
  if not limit then return true end
  local said = false
  return wait_until(session, ctx, function()
    local queued = tokens_in(session.store, ctx.env.run_id, ENQUEUED)
    if queued == nil then ctx:abort(exit.unreachable, "falha ao somar os tokens em fila dos lotes"); return nil end
    if queued + row.tokens_est <= limit then return true end
    if not said then
      ctx.log.info("a fila de tokens do modelo está cheia (%d de %d em lotes em andamento): a parte %s espera",
        queued, limit, row.file_name)
      said = true
    end
    return false
  end)
end

-- Records a created batch on part id.
local function record_batch(session, ctx, id, b)
  local ok, err, state = batches.update(session.store, id, { state = b.status, batch_id = b.id }, { "submitted" })
  if db_failed(ctx, "falha ao registrar o lote criado", ok, err, state) then return nil end
  ctx.log.info("lote %s criado para a parte %d (%s)", b.id, id, b.status)
  return true
end

-- The provider refused a batch (err) while this run has others in flight
-- (the model's queue of enqueued tokens, or too many batches created):
-- waits until one of them ends. False when none is in flight or the run
-- stopped.
local function wait_for_room(session, ctx, err)
  local before = #active_parts(session, ctx)
  if before == 0 then return false end
  ctx.log.warn("o provedor recusou um lote novo (%s); ele espera um dos %d lote(s) em andamento terminar "
    .. "(defina provider.limits.batch_enqueued_tokens com o limite da conta para não chegar a isso)", tostring(err), before)
  return wait_until(session, ctx, function() return #active_parts(session, ctx) < before end)
end

-- Creates the batch of an uploaded part: true, or nil after stopping.
function M.create(session, ctx, id, file_id)
  while true do
    local b, err, kind = session.api:create(file_id, { ragops_part = tostring(id) })
    if b then return record_batch(session, ctx, id, b) end
    if kind ~= "refused" or not wait_for_room(session, ctx, err) then
      provider_failed(ctx, "o provedor não criou o lote", err, kind)
      return nil
    end
  end
end

-- Uploads part row and creates its batch (budget and queue first): true,
-- or nil after stopping the run.
function M.submit(session, ctx, row)
  if not (budget_allows(session, ctx, row) and wait_queue_room(session, ctx, row)) then return nil end
  local ok, err, state = batches.update(session.store, row.id, { state = "uploading" }, nil, { "ready" })
  if db_failed(ctx, "falha ao registrar o envio da parte", ok, err, state) then return nil end
  local file_id, uerr, ukind = session.api:upload(session.dir .. "/" .. row.file_name, row.file_name,
    session.part_limits.max_file_bytes)
  if not file_id then
    provider_failed(ctx, "falha ao enviar o arquivo de lote " .. row.file_name, uerr, ukind)
    return nil
  end
  session.counts.uploads = session.counts.uploads + 1
  instruments.count(ctx, "ragops_batch_api_uploads_total", nil, 1)
  ok, err, state = batches.update(session.store, row.id, { state = "uploaded", input_file_id = file_id })
  if db_failed(ctx, "falha ao registrar o arquivo enviado", ok, err, state) then return nil end
  return M.create(session, ctx, row.id, file_id)
end

-- The pt-BR detail of a batch's errors (failed) or nil.
local function errors_detail(b)
  local list = type(b.errors) == "table" and b.errors.data
  if type(list) ~= "table" or #list == 0 then return nil end
  local out = {}
  for i = 1, math.min(#list, 3) do
    local e = list[i]
    out[#out + 1] = ("%s: %s"):format(tostring(e.code), tostring(e.message))
  end
  -- masked before it is cut (a secret across the cut would leave a piece of itself)
  return "o provedor disse: " .. scrub.text(table.concat(out, "; "), 600)
end

-- Asks the provider for part row's batch and records what changed.
-- Returns the row as it is now and whether it changed (nil after stopping).
function M.poll(session, ctx, row)
  local b, err, kind = session.api:get(row.batch_id)
  if not b then provider_failed(ctx, "falha ao consultar o lote " .. tostring(row.batch_id), err, kind); return nil end
  local counts = type(b.request_counts) == "table" and b.request_counts or {}
  local changed = b.status ~= row.state or counts.completed ~= row.request_completed or counts.failed ~= row.request_failed
  if not changed then return row, false end
  local fields = { state = b.status, request_total = counts.total, request_completed = counts.completed,
                   request_failed = counts.failed, output_file_id = b.output_file_id, error_file_id = b.error_file_id,
                   detail = errors_detail(b) }
  local ok, uerr, state = batches.update(session.store, row.id, fields,
    batches.PROVIDER_FINAL[b.status] and { "finished" } or nil)
  if db_failed(ctx, "falha ao registrar o estado do lote", ok, uerr, state) then return nil end
  for k, v in pairs(fields) do row[k] = v end
  return row, true
end

-- A part that never reached the provider and whose file is not here: its
-- units are rebuilt from the source (collected with no vectors).
local function lose(session, ctx, row, why)
  ctx.log.warn("%s; as entidades dela vão para uma parte nova", why)
  local ok, err, state = batches.update(session.store, row.id, { state = "lost" })
  return not db_failed(ctx, "falha ao registrar a parte perdida", ok, err, state)
end

-- The file of a part that was not uploaded is here, whole.
local function file_here(session, row)
  return safe_file.size(session.dir .. "/" .. row.file_name) == row.file_bytes -- (never through a link)
end

-- Resumes one part as the database left it.
local function reconcile_part(session, ctx, row)
  if row.state == "building" then
    if session.open then return M.seal_row(session, ctx, row) end
    local p, err, kind = part.open(session.dir, row, session.part_limits)
    if p then
      session.open, session.unit_no = p, (#(batches.units(session.store, row.id) or {})) + 1
      return true
    end
    if kind == "lost" then return lose(session, ctx, row, err) end
    ctx:abort(exit.usage, err)
    return nil
  elseif row.state == "ready" then
    if file_here(session, row) then return M.submit(session, ctx, row) end
    return lose(session, ctx, row, ("o arquivo da parte %s não está nesta máquina"):format(row.file_name))
  elseif row.state == "uploading" then
    return M.resume_upload(session, ctx, row)
  elseif row.state == "uploaded" then
    local b, err, kind = session.api:find_batch(row.input_file_id)
    if b == nil then provider_failed(ctx, "falha ao procurar o lote da parte " .. row.file_name, err, kind); return nil end
    if b then return record_batch(session, ctx, row.id, b) end
    return M.create(session, ctx, row.id, row.input_file_id)
  end
  return true
end

-- A part sealed but left building by an older process (another was open).
function M.seal_row(session, ctx, row)
  local ok, err, state = batches.update(session.store, row.id, { state = "ready" }, nil, { "building" })
  if db_failed(ctx, "falha ao fechar a parte de lote", ok, err, state) then return nil end
  row.state = "ready"
  return reconcile_part(session, ctx, row)
end

-- An upload that may have happened: the provider's files say.
function M.resume_upload(session, ctx, row)
  local file_id, err, kind = session.api:find_file(row.file_name)
  if file_id == nil then provider_failed(ctx, "falha ao procurar o arquivo " .. row.file_name, err, kind); return nil end
  if file_id then
    ctx.log.info("o arquivo %s já estava no provedor (%s): não será enviado de novo", row.file_name, file_id)
    local ok, uerr, state = batches.update(session.store, row.id, { state = "uploaded", input_file_id = file_id })
    if db_failed(ctx, "falha ao registrar o arquivo enviado", ok, uerr, state) then return nil end
    return M.create(session, ctx, row.id, file_id)
  end
  if not file_here(session, row) then
    return lose(session, ctx, row, ("o arquivo da parte %s não está nesta máquina"):format(row.file_name))
  end
  local ok, uerr, state = batches.update(session.store, row.id, { state = "ready" }, nil, { "uploading" })
  if db_failed(ctx, "falha ao registrar a parte", ok, uerr, state) then return nil end
  row.state = "ready"
  return M.submit(session, ctx, row)
end

-- Before reading: every part of the run picked up where it is.
function M.reconcile(session, ctx)
  local rows, err, state = batches.open_parts(session.store, ctx.env.run_id)
  if not rows then ctx:abort_db("falha ao ler os lotes da execução", err, state); return nil end
  for _, row in ipairs(rows) do
    if ctx:halted() then return nil end
    if not reconcile_part(session, ctx, row) then return nil end
  end
  if #rows > 0 then ctx.log.info("%d parte(s) de lote desta execução retomada(s)", #rows) end
  return true
end

return M
