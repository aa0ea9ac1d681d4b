-- ragops.store.batches: the engine's record of the Batch API mode
-- (ragops.run.batch), in ragops_batches (one row per part: a JSONL file, then
-- the provider's file and batch) and ragops_batch_units (the entities one
-- unit put in a part, with the content hash of every input it sent and the
-- part file's length through its lines). A unit's row is written, and a
-- collected unit marked, inside the unit's write transaction (M.write,
-- called by ragops.store.pg write_unit), so the run's progress and its
-- batches never disagree after a kill -9.
--
-- A part's states: building (lines appended), ready (sealed), uploading,
-- uploaded (input_file_id known), the provider's (validating, in_progress,
-- finalizing, cancelling, then completed, expired, failed, cancelled),
-- collected (its units written) and lost (its file was gone before it
-- reached the provider: its units are rebuilt into a new part).
local cjson = require "cjson"

local M = {}

-- States whose batch the provider still works on.
M.PROVIDER_ACTIVE = { validating = true, in_progress = true, finalizing = true, cancelling = true }
-- States after which the provider does nothing more with the batch.
M.PROVIDER_FINAL = { completed = true, expired = true, failed = true, cancelled = true }
-- States of a part this side has not finished with.
M.OPEN_STATES = { "building", "ready", "uploading", "uploaded", "validating", "in_progress", "finalizing",
                  "cancelling", "completed", "expired", "failed", "cancelled", "lost" }

local PART_COLUMNS = [[id, run_id, state, file_name, file_bytes, requests, inputs, tokens_est, input_file_id,
  batch_id, output_file_id, error_file_id, request_total, request_completed, request_failed, detail,
  extract(epoch from created_at)::float8 as created_s, extract(epoch from submitted_at)::float8 as submitted_s]]

-- The parts of run_id not finished with, oldest first; nil, err, sqlstate.
function M.open_parts(store, run_id)
  return store:query(("select %s from ragops_batches where run_id = $1 and state = any($2::text[]) order by id")
    :format(PART_COLUMNS), run_id, M.OPEN_STATES)
end

-- One part by id; nil, err, sqlstate.
function M.part(store, id)
  local rows, err, state = store:query(("select %s from ragops_batches where id = $1"):format(PART_COLUMNS), id)
  if not rows then return nil, err, state end
  return rows[1]
end

-- A new part of run_id being built into file_name: its row, or nil, err, sqlstate.
function M.new_part(store, run_id, file_name)
  local rows, err, state = store:query(("insert into ragops_batches (run_id, file_name) values ($1, $2) returning %s")
    :format(PART_COLUMNS), run_id, file_name)
  if not rows then return nil, err, state end
  return rows[1]
end

-- Columns a part's update may set (M.update).
local SETTABLE = { state = "text", input_file_id = "text", batch_id = "text", output_file_id = "text",
                   error_file_id = "text", request_total = "int", request_completed = "int",
                   request_failed = "int", detail = "text" }
-- Timestamps an update may set to now().
local STAMPS = { submitted = "submitted_at", finished = "finished_at", collected = "collected_at" }

-- Sets fields of part id ({ column = value }, stamps = { "submitted", ... }),
-- only while its state is one of from (a list; nil: any). Returns true
-- (updated), false (its state was not one of from) or nil, err, sqlstate.
function M.update(store, id, fields, stamps, from)
  local sets, args = { "updated_at = now()" }, { id }
  local names = {}
  for name in pairs(fields) do
    assert(SETTABLE[name], "coluna de lote desconhecida: " .. tostring(name))
    names[#names + 1] = name
  end
  table.sort(names)
  for _, name in ipairs(names) do
    args[#args + 1] = fields[name]
    sets[#sets + 1] = ("%s = $%d::%s"):format(name, #args, SETTABLE[name])
  end
  for _, stamp in ipairs(stamps or {}) do sets[#sets + 1] = assert(STAMPS[stamp]) .. " = now()" end
  local where = "id = $1"
  if from then
    args[#args + 1] = from
    where = where .. (" and state = any($%d::text[])"):format(#args)
  end
  local rows, err, state = store:query(("update ragops_batches set %s where %s")
    :format(table.concat(sets, ", "), where), unpack(args, 1, #args))
  if not rows then return nil, err, state end
  return rows.affected == 1
end

-- The units of part id (only those not collected, with pending), in order:
-- { unit_no, entity_type, round, entity_ids, hashes, request_sizes, file_end, collected }.
function M.units(store, id, pending)
  local rows, err, state = store:query([[
    select unit_no, entity_type, round, array_to_json(entity_ids)::text as entity_ids,
           array_to_json(hashes)::text as hashes, array_to_json(request_sizes)::text as request_sizes,
           file_end, collected
      from ragops_batch_units where batch = $1 and ($2 = false or not collected) order by unit_no]], id, pending == true)
  if not rows then return nil, err, state end
  for _, r in ipairs(rows) do
    r.entity_ids, r.hashes, r.request_sizes = cjson.decode(r.entity_ids), cjson.decode(r.hashes),
      cjson.decode(r.request_sizes)
  end
  return rows
end

-- A collected unit's counters as stored (its delta, with what the
-- transaction pruned and refreshed, known only now).
local function collected_stats(delta, pruned, refreshed)
  local out = {}
  for k, v in pairs(delta or {}) do
    if type(v) == "number" then out[k] = v end
  end
  out.deleted, out.refreshed = pruned or 0, refreshed or 0
  return cjson.encode(out)
end

-- Inside a unit's write transaction (ragops.store.pg write_unit):
-- unit.batch = { add = { batch, unit_no, entity_type, round, entity_ids,
-- hashes, request_sizes, file_end, requests, inputs, tokens } (the lines the
-- unit appended to a part still being built), collected = { batch, unit_no,
-- stats = the unit's delta: the run's totals count it, see
-- ragops.store.runs committed_totals } }. Raises (the transaction rolls back)
-- when the part is no longer being built.
function M.write(step, unit, pruned, refreshed)
  local b = unit.batch
  if not b then return end
  local c = b.collected
  if c then
    step("update ragops_batch_units set collected = true, stats = $3::jsonb where batch = $1 and unit_no = $2",
      c.batch, c.unit_no, collected_stats(c.stats, pruned, refreshed))
  end
  local a = b.add
  if not a then return end
  local grown = step([[update ragops_batches set requests = requests + $2, inputs = inputs + $3,
                              tokens_est = tokens_est + $4, file_bytes = $5, updated_at = now()
                        where id = $1 and state = 'building']], a.batch, a.requests, a.inputs, a.tokens, a.file_end)
  if grown.affected ~= 1 then
    error({ err = "a parte de lote em montagem mudou de estado em outro processo", state = "RGBAT" }, 0)
  end
  step([[insert into ragops_batch_units (batch, unit_no, entity_type, round, entity_ids, hashes, request_sizes, file_end)
         values ($1, $2, $3, $4, $5, $6, $7, $8)]], a.batch, a.unit_no, a.entity_type, a.round, a.entity_ids,
    a.hashes, a.request_sizes, a.file_end)
end

-- Parts not finished with, per run and state, for status and metrics:
-- { { run_id, plan, state, parts, requests, completed, failed, oldest_s } },
-- or {} before the tables exist; nil, err.
function M.in_flight(query)
  local present = query("select to_regclass('ragops_batches') is not null as ok")
  if not present then return nil, "falha ao consultar os lotes" end
  if not present[1].ok then return {} end
  local rows, err = query([[
    select b.run_id, r.plan, b.state, count(*)::bigint as parts, sum(b.requests)::bigint as requests,
           coalesce(sum(b.request_completed), 0)::bigint as completed,
           coalesce(sum(b.request_failed), 0)::bigint as failed,
           extract(epoch from now() - min(coalesce(b.submitted_at, b.created_at)))::float8 as oldest_s
      from ragops_batches b join ragops_runs r on r.id = b.run_id
     where b.state = any($1::text[])
     group by b.run_id, r.plan, b.state order by b.run_id, b.state]], M.OPEN_STATES)
  if not rows then return nil, err end
  return rows
end

return M
