-- ragops.store.failures: the dead-letter queue seen by the operator.
-- `ragops failures list` shows open failures (or the whole history with
-- --all) in pt-BR; `ragops failures retry` reprocesses them through
-- plans/reprocess_failures.lua, one run per entity type, scoped to the
-- failed entities. Entities written (or found up to date) by that run have
-- their failures marked resolved; the rows stay as history.
local scrub = require "ragops.util.scrub"

local M = {}

local function filters(opts)
  local where, params = { "true" }, {}
  local function add(cond, value)
    params[#params + 1] = value
    where[#where + 1] = cond:gsub("%$%?", "$" .. #params)
  end
  if not opts.all then where[#where + 1] = "resolved_at is null" end
  if opts["entity-type"] then add("entity_type = any(string_to_array($?, ','))", opts["entity-type"]) end
  if opts.run then add("run_id = $?::bigint", opts.run) end
  if opts.id then add("id = any(string_to_array($?, ',')::bigint[])", opts.id) end
  return table.concat(where, " and "), params
end

-- Returns the failures matching opts (a list of rows) or nil, err.
function M.query(conn, opts)
  local where, params = filters(opts)
  return conn:query(([[
    select id, run_id, entity_type, entity_id, chunk_index, error_class, http_status, message,
           attempts, to_char(first_seen, 'YYYY-MM-DD HH24:MI:SS') as first_seen,
           to_char(last_seen, 'YYYY-MM-DD HH24:MI:SS') as last_seen,
           to_char(resolved_at, 'YYYY-MM-DD HH24:MI:SS') as resolved_at, resolved_run_id,
           request_id, provider_request_id
      from ragops_failures where %s order by id limit 10000]]):format(where), unpack(params))
end

-- Error class -> pt-BR (also the HTML report's and `ragops status`'s).
local CLASS_PTBR = { transient = "temporária (tentativas esgotadas)", permanent = "permanente",
                     fatal = "fatal", transform = "erro no document() do plano",
                     time = "document() excedeu o tempo limite (sandbox.hook_ms)",
                     memory = "document() excedeu o limite de memória (sandbox.hook_memory_mb)",
                     invalid_document = "documento inválido (conteúdo, metadados ou chave)",
                     input_too_long = "entrada longa demais para o modelo (provider.limits.max_input_tokens)",
                     batch_expired = "sem vetor da API de lotes depois dos reenvios (embed.max_resubmissions)",
                     batch_failed = "o lote falhou no provedor (API de lotes)",
                     batch_cancelled = "o lote foi cancelado (ragops batch cancel)" }
M.CLASS_PTBR = CLASS_PTBR

-- A stored value as one line for the listing: secrets masked, control
-- characters escaped (a key or message cannot forge lines or drive the
-- terminal), at most max bytes.
local function field(value, max)
  return scrub.escape(scrub.cap(scrub.mask(tostring(value)), max or 200))
end

-- pt-BR listing for the operator.
function M.format(rows, opts)
  if #rows == 0 then
    return opts.all and "nenhuma falha registrada\n" or "nenhuma falha em aberto na fila\n"
  end
  local out = {}
  out[#out + 1] = ("%s: %d\n"):format(opts.all and "falhas (histórico)" or "falhas em aberto", #rows)
  for _, r in ipairs(rows) do
    local msg = field(tostring(r.message):gsub("[ \t\r\n]+", " "), 160)
    out[#out + 1] = ("#%d  %s %s%s  classe: %s%s  tentativas: %d  execução: %s\n")
      :format(r.id, field(r.entity_type), field(r.entity_id),
        r.chunk_index and (" (chunk " .. r.chunk_index .. ")") or "",
        field(CLASS_PTBR[r.error_class] or r.error_class),
        r.http_status and ("  HTTP " .. r.http_status) or "", r.attempts, tostring(r.run_id or "-"))
    out[#out + 1] = ("     primeira vez: %s  última vez: %s%s\n"):format(r.first_seen, r.last_seen,
      r.resolved_at and ("  resolvida em: " .. r.resolved_at .. " (execução " .. tostring(r.resolved_run_id) .. ")") or "")
    if r.request_id then
      out[#out + 1] = ("     pedido: %s%s\n"):format(field(r.request_id),
        r.provider_request_id and ("  id no provedor: " .. field(r.provider_request_id)) or "")
    end
    out[#out + 1] = "     " .. msg .. "\n"
  end
  return table.concat(out)
end

-- Groups open failures by entity type: { [type] = { ids... } } (sorted types).
function M.group(rows)
  local by_type, types = {}, {}
  for _, r in ipairs(rows) do
    if not r.resolved_at then
      if not by_type[r.entity_type] then
        by_type[r.entity_type] = {}
        types[#types + 1] = r.entity_type
      end
      local ids = by_type[r.entity_type]
      ids[#ids + 1] = r.entity_id
    end
  end
  table.sort(types)
  return by_type, types
end

return M
