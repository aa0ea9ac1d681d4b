-- plans/validate_quality.lua: o portão de qualidade versionado, usado por
-- `ragops validate` quando nenhum arquivo é passado.
--
-- É fino de propósito: as consultas ficam em plans/golden_demo.lua (os dados,
-- que crescem e mudam com o acervo) e aqui fica só a política (qual conjunto
-- e quais limites bloqueiam um deploy). Para outro acervo, troque o import;
-- para apertar o portão, mude os limites; o histórico do git mostra quem mudou
-- o quê. Ambiente restrito como o dos planos: só dados e `import` de arquivos
-- golden da mesma pasta.
--
--   ragops validate                        (usa este arquivo)
--   ragops validate plans/validate_quality.lua --report-json qualidade.json
local golden = import "golden_demo.lua"

golden.name = "portao-de-qualidade-demo"
golden.k = 10
-- Limites de bloqueio: abaixo deles o comando sai com código 1.
-- Medido no demo (veja docs/validacao-de-qualidade.md); os limites ficam
-- abaixo do medido para que só uma regressão real (modelo trocado, índice
-- com probes baixo demais, backfill incompleto) reprove.
golden.min_recall = 0.8
golden.min_mrr = 0.6

return golden
