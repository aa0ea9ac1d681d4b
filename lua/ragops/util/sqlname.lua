-- ragops.util.sqlname: quoting of the target table name, which the config allows
-- as "table" or "schema.table" (validated by ragops.plan.config). Each part is
-- quoted as its own identifier, so "public.rag_documents" stays two names.
local pg_quote -- ragops.pg.quote_ident, loaded lazily (pure-Lua tests have no C)

local M = {}

local function quote_ident(part)
  if not pg_quote then
    local ok, pg = pcall(require, "ragops.pg")
    pg_quote = ok and pg.quote_ident or function(s) return '"' .. s:gsub('"', '""') .. '"' end
  end
  return pg_quote(part)
end

-- "schema.table" -> "schema"."table"; "table" -> "table".
function M.quote_table(name)
  local schema, rel = name:match("^([^%.]+)%.([^%.]+)$")
  if schema then return quote_ident(schema) .. "." .. quote_ident(rel) end
  return quote_ident(name)
end

-- The relation part alone (index names live in the table's schema).
function M.relation(name)
  return name:match("%.([^%.]+)$") or name
end

return M
