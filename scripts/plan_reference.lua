-- scripts/plan_reference.lua: prints docs/referencia-de-planos.md, the reference
-- of every plan key, generated from the schema the validators use
-- (lua/ragops/plan/schema.lua). From the repository root:
--
--   LUA_PATH="$PWD/lua/?.lua;;" luajit scripts/plan_reference.lua > docs/referencia-de-planos.md
--
-- tests/lua/plan_reference_spec.lua fails when the file differs from this output.
local schema = require "ragops.plan.schema"

local HEADER = [[
# Referência dos planos

<!-- Gerado por scripts/plan_reference.lua a partir de lua/ragops/plan/schema.lua; não edite à mão.
     Para regenerar: LUA_PATH="$PWD/lua/?.lua;;" luajit scripts/plan_reference.lua > docs/referencia-de-planos.md -->

Todas as chaves que um plano (`plans/*.lua`) aceita, tabela por tabela. A validação usa
esta mesma lista: uma chave fora dela é recusada com código 2 e a lista das válidas
(com "você quis dizer" quando o nome é parecido). Os limites dos valores são conferidos
ao carregar o plano; os da linha de comando (`--batch-size`, `--set chave=valor`...)
passam pelas mesmas regras. Como escrever e testar um plano: `docs/testes-de-planos.md`
e `docs/arquitetura.md`; a estratégia de `sync`: `docs/sincronizacao.md`.

"—" na coluna padrão: chave opcional, sem valor quando ausente.
]]

local function cell(text)
  return (tostring(text):gsub("|", "\\|"))
end

local function section_text(section)
  local lines = { "", "", "## `" .. section.title .. "`", "" }
  if section.about then
    lines[#lines + 1] = section.about
    lines[#lines + 1] = ""
  end
  lines[#lines + 1] = "| chave | tipo | padrão | descrição |"
  lines[#lines + 1] = "|---|---|---|---|"
  for _, entry in ipairs(section.keys) do
    lines[#lines + 1] = ("| `%s` | %s | %s | %s |"):format(entry[1], cell(entry[2]), cell(entry[3]), cell(entry[4]))
  end
  return table.concat(lines, "\n")
end

local parts = { (HEADER:gsub("\n$", "")) }
for _, section in ipairs(schema.SECTIONS) do parts[#parts + 1] = section_text(section) end
io.write(table.concat(parts, ""), "\n")
