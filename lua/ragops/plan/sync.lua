-- ragops.plan.sync: validates the `sync = { ... }` key of a source (how
-- `ragops sync` finds its changes), with the plan's pt-BR errors. Two
-- strategies:
--   { strategy = "watermark", overlap_s = 300, deletes_every_s = 600, poll_s = 2,
--     soft_delete = { table = "fortunes", column = "deleted" } }
--   { strategy = "trigger", table = "verses", key_column = "id", drain_every_s = 30,
--     related = { { table = "books", column = "id",
--                   entities = "select id from verses where book_id = $1" } } }
-- ctx is ragops.plan's validation context (ctx:bad, ctx:only_keys, ...).
local schema = require "ragops.plan.schema"

local M = {}

M.DEFAULTS = {
  watermark = { overlap_s = 300, deletes_every_s = 600, poll_s = 2 },
  trigger = { drain_every_s = 30 },
}

local TABLE_PATTERN = "^[%a_][%w_]*$"

-- "tabela" or "esquema.tabela", each part a plain identifier.
local function table_name(ctx, path, value)
  local ok = type(value) == "string"
  if ok then
    local schema, rel = value:match("^([^%.]+)%.([^%.]+)$")
    if schema then ok = schema:match(TABLE_PATTERN) and rel:match(TABLE_PATTERN)
    else ok = value:match(TABLE_PATTERN) end
  end
  if not ok then ctx:bad(path, value, 'um nome de tabela simples ("verses" ou "esquema.verses")') end
  return value
end

local function validate_related(ctx, list)
  ctx:table("sync.related", list, "uma lista { { table = ..., column = ..., entities = ... }, ... }")
  local out = {}
  for i, r in ipairs(list) do
    local path = ("sync.related[%d]"):format(i)
    ctx:table(path, r, "uma tabela { table = ..., column = ..., entities = ... }")
    ctx:only_keys(r, schema.keys("sync.related"), path)
    local entities = ctx:string(path .. ".entities", r.entities,
      'uma consulta SQL que recebe o valor da coluna em $1 e devolve as chaves das entidades afetadas')
    if not entities:find("$1", 1, true) then
      ctx:bad(path .. ".entities", entities, "uma consulta SQL que use $1 (o valor da coluna alterada)")
    end
    out[i] = { table = table_name(ctx, path .. ".table", r.table),
               column = ctx:identifier(path .. ".column", r.column), entities = entities }
  end
  if #out ~= (next(list) and table.maxn(list) or 0) then
    ctx:bad("sync.related", list, "uma lista sem buracos")
  end
  return out
end

-- The soft-delete declaration of a watermark source: the table whose
-- `column` marks a row deleted (true, or not null for any other type), read
-- by key_column and updated_at (default: the source's key and updated_at).
local function validate_soft_delete(ctx, spec, source)
  ctx:table("sync.soft_delete", spec, 'uma tabela { table = "artigos", column = "removido" }')
  ctx:only_keys(spec, schema.keys("sync.soft_delete"), "sync.soft_delete")
  return {
    table = table_name(ctx, "sync.soft_delete.table", spec.table),
    column = ctx:identifier("sync.soft_delete.column", spec.column),
    key_column = spec.key_column == nil and source.key or ctx:identifier("sync.soft_delete.key_column", spec.key_column),
    updated_at = spec.updated_at == nil and source.updated_at
      or ctx:identifier("sync.soft_delete.updated_at", spec.updated_at),
  }
end

local function validate_watermark(ctx, spec, source)
  ctx:only_keys(spec, schema.keys("sync.watermark"), "sync")
  if not source.updated_at then
    ctx:fail('chave "sync": a estratégia "watermark" exige updated_at na fonte (a coluna com a hora da '
      .. 'última alteração); sem ela, use a estratégia "trigger"')
  end
  local d = M.DEFAULTS.watermark
  return {
    strategy = "watermark",
    overlap_s = spec.overlap_s == nil and d.overlap_s or ctx:number("sync.overlap_s", spec.overlap_s, 0),
    deletes_every_s = spec.deletes_every_s == nil and d.deletes_every_s
      or ctx:number("sync.deletes_every_s", spec.deletes_every_s, 0, nil, true),
    poll_s = spec.poll_s == nil and d.poll_s or ctx:number("sync.poll_s", spec.poll_s, 0, nil, true),
    soft_delete = spec.soft_delete ~= nil and validate_soft_delete(ctx, spec.soft_delete, source) or nil,
  }
end

local function validate_trigger(ctx, spec, source)
  ctx:only_keys(spec, schema.keys("sync.trigger"), "sync")
  return {
    strategy = "trigger",
    table = table_name(ctx, "sync.table", spec.table),
    key_column = spec.key_column == nil and source.key or ctx:identifier("sync.key_column", spec.key_column),
    related = spec.related == nil and {} or validate_related(ctx, spec.related),
    drain_every_s = spec.drain_every_s == nil and M.DEFAULTS.trigger.drain_every_s
      or ctx:number("sync.drain_every_s", spec.drain_every_s, 0, nil, true),
  }
end

-- The validated sync settings of source (its entity_type, key and
-- updated_at already validated), with defaults filled in.
function M.validate(ctx, spec, source)
  ctx:table("sync", spec, 'uma tabela { strategy = "watermark" | "trigger", ... }')
  local strategy = ctx:enum("sync.strategy", spec.strategy, { "watermark", "trigger" })
  if strategy == "watermark" then return validate_watermark(ctx, spec, source) end
  return validate_trigger(ctx, spec, source)
end

return M
