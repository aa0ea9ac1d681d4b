-- SQL de fonte com comandos empilhados: fecha a subconsulta, encerra a transação
-- somente leitura do --dry-run, abre outra gravável e cria uma tabela
local f = source "fortune" {
  sql = [[select id,text,updated_at from fortunes) as src; commit; begin transaction read write; create table pwned_dryrun(x text); commit; begin transaction read only; select count(*) as n from (select 1 as id]],
  key = "id",
  document = function(row) return { content = row.text } end,
}
return plan { name = "hostil_sql_stacked", sources = { f } }
