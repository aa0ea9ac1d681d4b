-- ragops.cli.commands.help: the pt-BR help of every command, in one table (M.TEXT),
-- so `ragops COMANDO --help` and the docs test (tests/lua/cli_help_spec.lua)
-- read the same text. Keys are the command as typed: "run", "failures list".
local M = {}

local COMMON = [[
  --config ARQUIVO       configuração (formato de config.example.lua)
  --quiet                só erros no log do operador
]]

-- The --target option of the index commands.
local TARGET = [[
  --target live|shadow   shadow: a sombra da troca de modelo (ragops model prepare);
                         previous: a tabela anterior, depois de ragops model switch
]]

-- Options shared by run, backfill and reindex (cli.RUN_FLAGS).
local RUN_OPTIONS = [[
Opções de execução:
  --plan NOME|ARQUIVO    o plano do acervo: NOME de um plano da pasta de planos (plans.dir,
                         RAGOPS_PLANS) ou um arquivo .lua; padrão: plans.default, ou o único
                         plano da pasta
  --config ARQUIVO       configuração (formato de config.example.lua)
  --set chave=valor      parâmetro do plano ou limite de operação (pode repetir); chaves
                         desconhecidas são recusadas com a lista das válidas
  --report-json ARQUIVO  grava o relatório final em JSON
  --report-html ARQUIVO  grava o relatório numa página HTML autocontida (gráficos, falhas
                         por causa; no dry-run, a estimativa por tipo de entidade)
  --estimate-json ARQUIVO  o --report-json de um dry-run anterior: o relatório HTML compara
                         a estimativa com o real
  --log-format F         text (padrão) ou json: uma linha JSON por evento (= log.format)
  --dry-run              simulação: nada é gravado, nenhum embedding é pedido
  --resume               exige retomar a execução interrompida do mesmo plano e parâmetros
                         (sem a opção, a retomada também acontece quando houver uma)
  --scale-out            vários processos com o mesmo comando dividem o trabalho em
                         unidades (FOR UPDATE SKIP LOCKED sob lease)
  --lease-s N            duração do lease de uma unidade, em segundos (padrão 60)
  --join                 ajuda uma execução --scale-out já em andamento do mesmo plano e
                         parâmetros, sem nunca começar uma (implica --scale-out); sem
                         execução em andamento, sai com código 0 (nada a fazer)
  --worker NOME          rótulo deste processo no scale-out (= RAGOPS_WORKER; padrão: o nome
                         do host): gravado nas unidades que ele pega, mostrado no ragops
                         status e no rótulo worker das métricas; até 32 caracteres
                         [A-Za-z0-9_.-]
  --metrics-listen ENDEREÇO:PORTA
                         serve GET /metrics e /healthz durante a execução (:PORTA = 127.0.0.1;
                         = metrics.listen)
  --metrics-push URL     envia os valores finais ao Pushgateway (job=ragops, instance=máquina;
                         = metrics.push_url)
  --target live|shadow   shadow: grava na sombra da troca de modelo (ragops model prepare),
                         com o modelo, a dimensão e o provedor registrados (= --set target=shadow);
                         previous: alcança a tabela anterior (o alvo do rollback) com o modelo dela
  --quiet                só erros no log do operador

Limites de operação (valem sobre os do plano; mesmas regras de validação):
  --batch-size N         entidades por lote (= --set batch.size=N; 1 a 2048)
  --in-flight N          lotes em paralelo (= --set batch.in_flight=N; 1 a 64)
  --limit N              no máximo N entidades por fonte nesta execução (= --set limit=N):
                         execução de sanidade, não remove órfãos nem retoma uma execução sem limite
  --max-retries N        tentativas por pedido de embedding em cada rodada
                         (= --set retry.attempts=N; 0 a 100)
  --timeout S            tempo limite de cada pedido de embedding, em segundos
                         (= --set retry.timeout_s=S; até 3600)
  --budget-usd N         orçamento em US$ (= --set budget.usd=N): para com código 3 antes de o
                         gasto (tokens cobrados x preço) passar de N; a simulação acima dele
                         também sai com 3
  --rpm N                no máximo N pedidos de embedding por minuto nesta execução
                         (= provider.rate_limits.requests_per_min; espaça os pedidos)
  --tpm N                no máximo N tokens por minuto nesta execução
                         (= provider.rate_limits.tokens_per_min)
  --embed-mode M         online (padrão) ou batch: a API de lotes da OpenAI, pela metade do
                         preço em até 24 h (= --set embed.mode=M; docs/lote-openai.md)
  --detach               com --embed-mode batch: envia os lotes e sai com código 0, dizendo o
                         comando que os coleta depois (o mesmo comando ou ragops batch collect)

Filtros (também como --set entity_type=..., entity_id, since, until, mode):
  --entity-type T[,T2]   tipos de entidade (não pode ser vazio)
  --entity-id ID[,ID2]   entidades específicas (exige --entity-type; não pode ser vazio)
  --since D --until D    intervalo de updated_at (ISO 8601; --since inclusivo, --until exclusivo)
  --only-missing         (padrão) ignora conteúdo inalterado
  --overwrite            reprocessa tudo o que foi selecionado (troca de modelo)
]]

local GENERAL = [=[
ragops %s: backfill e reindexação de dados relacionais em uma tabela pgvector para RAG.

Uso:
  ragops migrate                              cria/atualiza as tabelas do motor
  ragops run [PLANO] [opções]                 executa um plano
  ragops backfill [--plan P] [opções]         indexa todo o acervo do plano
  ragops reindex [--plan P] [filtros]         reindexa o recorte (tipo, ids, datas; --overwrite)
  ragops failures list [filtros]              fila de falhas (em aberto; --all = histórico)
  ragops failures retry [--plan P] [filtros]  reprocessa as falhas em aberto com o plano
  ragops batch collect|cancel [--plan P]     coleta ou cancela os lotes da API de lotes
  ragops index create|drop|status [opções]    índice vetorial (pgvector)
  ragops validate [GOLDEN.lua] [opções]       recall@k, MRR, nDCG@k e latência da busca (p95)
  ragops model prepare|compare|switch|rollback|drop-previous|drop-shadow|status
                                              troca de modelo azul/verde (sombra, comparação, troca)
  ragops status [--plan P] [--json]           execuções, cobertura, atraso, falhas e índices
  ragops sync [--plan P] [--follow]           aplica as mudanças da origem (watermark ou fila)
  ragops sync install|uninstall [--plan P]    gatilhos e fila de mudanças da estratégia trigger
  ragops embed-server [--port P] [--dim D]    servidor local de embeddings (veja --help)
  ragops help [COMANDO] | --help              esta ajuda, ou a de um comando
  ragops version                              versão

Cada comando tem sua ajuda com todas as opções: ragops COMANDO --help
(por exemplo: ragops reindex --help, ragops failures retry --help).

Um plano por acervo: backfill, reindex, sync, failures retry e status usam o mesmo plano,
escolhido com --plan NOME|ARQUIVO, ou plans.default da configuração, ou o único plano da
pasta de planos (plans.dir ou RAGOPS_PLANS; sem ela, os exemplos da demo: plans/backfill.lua).

Variáveis de ambiente: DATABASE_URL, RAGOPS_EMBED_URL, OPENAI_API_KEY, RAGOPS_EMBED_MODEL,
RAGOPS_PLANS, RAGOPS_WORKER.
Códigos de saída: 0 concluído; 1 concluído com falhas na fila (ou simulação com documentos
falhando); 2 uso/plano inválido; 3 abortado por alerta ou orçamento; 4 dependência
inalcançável; 130 interrompido por sinal (retomável).
]=]

M.TEXT = {
  sync = "Uso: ragops sync [PLANO] [opções]\n"
    .. "     ragops sync install|uninstall [PLANO]\n\n"
    .. "Aplica as mudanças da origem desde a última sincronização com o plano do acervo (PLANO ou\n"
    .. "--plan; padrão: plans.default, ou o único plano da pasta de planos), com\n"
    .. "o mesmo plano, a mesma idempotência, fila de falhas, alertas e métricas de um backfill.\n"
    .. "Cada fonte escolhe a estratégia no plano (sync = { strategy = ... }): \"trigger\" (fila\n"
    .. "alimentada por gatilhos; exata, inclusive remoções; exige `ragops sync install`) ou\n"
    .. "\"watermark\" (updated_at; nenhum DDL na origem). Veja docs/sincronizacao.md.\n\n"
    .. "Opções:\n" .. COMMON
    .. "  --plan NOME|ARQUIVO    o plano do acervo (o mesmo que o argumento PLANO)\n"
    .. "  --follow               continua rodando e aplica as mudanças quando chegam (LISTEN),\n"
    .. "                         até SIGINT/SIGTERM\n"
    .. "  --follower NOME        nome deste seguidor em ragops_runs (padrão: o nome do host)\n"
    .. "  --metrics-listen ENDEREÇO:PORTA\n"
    .. "                         serve GET /metrics e /healthz enquanto segue (fila e atraso por tipo)\n"
    .. "  --metrics-push URL     envia os valores finais ao Pushgateway\n"
    .. "  --set chave=valor      parâmetro do plano (pode repetir)\n"
    .. "  --report-json ARQUIVO  grava o relatório final em JSON\n"
    .. "  --log-format F         text (padrão) ou json: uma linha JSON por evento (= log.format)\n",
  ["sync install"] = "Uso: ragops sync install [PLANO] [opções]\n\n"
    .. "Cria, no esquema ragops_sync, a fila de mudanças e os gatilhos AFTER INSERT/UPDATE/DELETE\n"
    .. "nas tabelas que o plano nomeia (sync.table e sync.related). Instalar de novo o mesmo plano\n"
    .. "não muda nada; um plano que pede outros gatilhos é recusado com a explicação.\n\n"
    .. "Opções:\n"
    .. "  --plan NOME|ARQUIVO    o plano do acervo (o mesmo que o argumento PLANO)\n"
    .. "  --config ARQUIVO       configuração (formato de config.example.lua)\n",
  ["sync uninstall"] = "Uso: ragops sync uninstall [PLANO] [opções]\n\n"
    .. "Remove exatamente o que o `ragops sync install` do plano criou (o esquema ragops_sync\n"
    .. "sai junto com o último plano instalado).\n\n"
    .. "Opções:\n"
    .. "  --plan NOME|ARQUIVO    o plano do acervo (o mesmo que o argumento PLANO)\n"
    .. "  --config ARQUIVO       configuração (formato de config.example.lua)\n",
  status = "Uso: ragops status [opções]\n\n"
    .. "Mostra as execuções recentes (plano, parâmetros, estado, totais, duração, quem está\n"
    .. "rodando e desde quando, último heartbeat), a cobertura e o atraso por tipo de entidade\n"
    .. "(documentos indexados x linhas da fonte; idade da mudança mais antiga ainda não\n"
    .. "indexada), as falhas em aberto por classe de erro e os índices vetoriais.\n\n"
    .. "Opções:\n"
    .. "  --json                 saída em JSON (chaves estáveis em inglês)\n"
    .. "  --plan NOME|ARQUIVO    o plano cujas fontes medem a cobertura (padrão: plans.default, ou\n"
    .. "                         o único plano da pasta; sem plano, o resto é mostrado e a\n"
    .. "                         cobertura diz que precisa de um)\n"
    .. "  --config ARQUIVO       configuração (formato de config.example.lua)\n",

  migrate = "Uso: ragops migrate [opções]\n\n"
    .. "Cria ou atualiza a tabela de documentos e as tabelas do motor (execuções, fila de\n"
    .. "falhas, unidades de trabalho). Idempotente; os outros comandos exigem que ele rode antes.\n\n"
    .. "Opções:\n" .. COMMON,

  run = "Uso: ragops run PLANO.lua [opções]\n       ragops run NOME | --plan NOME|ARQUIVO [opções]\n\n"
    .. "Executa um plano como está escrito (sem os ajustes de operations).\n\n" .. RUN_OPTIONS,
  backfill = "Uso: ragops backfill [opções]\n\nIndexa todo o acervo do plano (--plan; padrão: "
    .. "plans.default, ou o único plano da pasta de planos); o que não mudou é ignorado.\n"
    .. "Usa operations.backfill do plano, se houver.\n\n" .. RUN_OPTIONS,
  reindex = "Uso: ragops reindex [filtros] [opções]\n\nO mesmo plano do backfill, recortado pelos "
    .. "filtros: tipo, entidade ou intervalo de datas;\n--overwrite reembeda mesmo o que não mudou. "
    .. "Usa operations.reindex do plano, se houver.\n\n" .. RUN_OPTIONS,

  failures = "Uso: ragops failures list|retry [opções]\n\n"
    .. "  ragops failures list    mostra a fila de falhas (veja ragops failures list --help)\n"
    .. "  ragops failures retry   reprocessa as falhas em aberto (veja ragops failures retry --help)\n",
  ["failures list"] = "Uso: ragops failures list [opções]\n\n"
    .. "Mostra as falhas em aberto (até 10.000 linhas); sai sempre com 0.\n\nOpções:\n" .. COMMON
    .. "  --entity-type T[,T2]   só esses tipos de entidade\n"
    .. "  --run ID[,ID2]         só as falhas registradas por último por essas execuções\n"
    .. "  --id N[,N2]            só essas falhas (ids da listagem)\n"
    .. "  --all                  o histórico inteiro, inclusive as resolvidas\n",
  ["failures retry"] = "Uso: ragops failures retry [opções]\n\n"
    .. "Reprocessa as falhas em aberto com o plano do acervo (--plan; padrão: plans.default, ou o\n"
    .. "único plano da pasta), uma execução por tipo de entidade do plano, recortada aos ids que\n"
    .. "falharam, com os ajustes de operations.failures_retry (padrão: lotes de até 16, 2 em\n"
    .. "paralelo, alerta de taxa de falhas só avisa); sai com o pior código entre elas. Falhas de\n"
    .. "tipos fora do plano ficam em aberto (outro acervo).\n\nOpções:\n" .. COMMON
    .. "  --plan NOME|ARQUIVO    o plano do acervo\n"
    .. "  --entity-type T[,T2]   só esses tipos de entidade\n"
    .. "  --run ID[,ID2]         só as falhas registradas por último por essas execuções\n"
    .. "  --id N[,N2]            só essas falhas (ids da listagem)\n"
    .. "  --overwrite            reembeda mesmo o que já está em dia (por padrão, o que tem o\n"
    .. "                         mesmo hash é só marcado como resolvido)\n"
    .. "  --report-json ARQUIVO  grava o relatório de cada execução em JSON (a última sobrescreve)\n"
    .. "  --log-format F         text (padrão) ou json: uma linha JSON por evento (= log.format)\n",

  batch = "Uso: ragops batch collect|cancel [opções]\n\n"
    .. "  ragops batch collect    espera e coleta os lotes do plano (veja ragops batch collect --help)\n"
    .. "  ragops batch cancel     cancela no provedor os lotes em andamento (veja ragops batch cancel --help)\n",
  ["batch collect"] = "Uso: ragops batch collect [opções]\n\n"
    .. "Retoma a última execução do plano com lotes da API de lotes por coletar (embed.mode = \"batch\",\n"
    .. "docs/lote-openai.md), com os mesmos parâmetros dela: espera os lotes, coleta os vetores e\n"
    .. "termina a execução. É o mesmo que rodar de novo o comando que a começou.\n\nOpções:\n" .. COMMON
    .. "  --plan NOME|ARQUIVO    o plano do acervo\n"
    .. "  --log-format F         text (padrão) ou json: uma linha JSON por evento (= log.format)\n"
    .. "  --report-json ARQUIVO  grava o relatório da execução em JSON\n"
    .. "  --budget-usd N, --batch-size N, --in-flight N, --limit N, --max-retries N, --timeout S,\n"
    .. "  --embed-mode M         os limites de operação do comando que começou a execução (não são\n"
    .. "                         guardados com ela): valem para as partes que a coleta ainda envia\n",
  ["batch cancel"] = "Uso: ragops batch cancel [opções]\n\n"
    .. "Pede ao provedor que cancele os lotes em andamento das execuções do plano (as partes prontas e\n"
    .. "ainda não enviadas são canceladas aqui, sem ir ao provedor). O que eles já\n"
    .. "terminaram é coletado pela execução (o mesmo comando, ou ragops batch collect); o resto vai para\n"
    .. "a fila de falhas com a classe batch_cancelled (ragops failures retry o reprocessa).\n\nOpções:\n" .. COMMON
    .. "  --plan NOME|ARQUIVO    o plano do acervo\n"
    .. "  --log-format F         text (padrão) ou json: uma linha JSON por evento (= log.format)\n",
  index = "Uso: ragops index create|drop|status [opções]\n\n"
    .. "  ragops index create     cria o índice vetorial (veja ragops index create --help)\n"
    .. "  ragops index drop       remove o índice (veja ragops index drop --help)\n"
    .. "  ragops index status     coluna, extensão, índices e probes recomendados\n",
  ["index create"] = "Uso: ragops index create --lists N --dim N [opções]\n\n"
    .. "Cria o índice vetorial do pgvector na tabela de documentos.\n\nOpções:\n" .. COMMON
    .. "  --lists N              listas do IVFFlat\n"
    .. "  --dim N                dimensão (deve ser igual a provider.dim)\n"
    .. "  --method M             ivfflat (padrão) ou hnsw\n"
    .. "  --m N                  HNSW: vizinhos por nó\n"
    .. "  --ef-construction N    HNSW: tamanho da lista na construção\n"
    .. "  --maintenance-work-mem TAM   memória da sessão de criação (ex.: 2GB)\n"
    .. "  --concurrently         CREATE INDEX CONCURRENTLY (não bloqueia escritas)\n"
    .. "  --alter-dim            converte a coluna para vector(N) ou halfvec(N) antes\n"
    .. "  --opclass C            cosine (padrão), l2 ou ip\n"
    .. "  --name NOME            nome do índice\n"
    .. "  --dry-run              só mostra o SQL; nada é executado\n"
    .. TARGET,
  ["index drop"] = "Uso: ragops index drop [opções]\n\n"
    .. "Remove o índice vetorial (DROP INDEX CONCURRENTLY).\n\nOpções:\n" .. COMMON
    .. "  --name NOME            nome do índice (padrão: o do método)\n"
    .. "  --method M             ivfflat (padrão) ou hnsw, para o nome padrão\n"
    .. "  --dry-run              só mostra o SQL; nada é executado\n"
    .. TARGET,
  ["index status"] = "Uso: ragops index status [opções]\n\n"
    .. "Mostra a coluna embedding, a extensão, os índices e os probes recomendados.\n\nOpções:\n"
    .. COMMON .. TARGET,

  validate = "Uso: ragops validate [GOLDEN.lua] [opções]\n\n"
    .. "Mede recall@k, MRR, nDCG@k, taxa de acerto e a latência da busca (p50/p95/p99, cada\n"
    .. "consulta sozinha, sem o embedding) contra um conjunto de consultas com respostas esperadas\n"
    .. "(padrão: plans/validate_quality.lua) e o SLO (p95 ≤ 250 ms; slo = { p95_ms, enforce } no\n"
    .. "golden). Diz o plano usado: o índice e o ajuste dele (ivfflat.probes ou hnsw.ef_search),\n"
    .. "se o EXPLAIN mostra o índice em uso, ou busca exata. Código 1 abaixo do limite.\n\n"
    .. "Varredura: uma lista em --probes (IVFFlat) ou --ef-search (HNSW) mede, para cada valor, o\n"
    .. "recall do índice contra a busca exata, o recall@k do golden e a latência, e recomenda o\n"
    .. "menor valor com recall do índice ≥ --target-recall (código 1 se nenhum chega lá). O recall\n"
    .. "do índice varia entre construções: repita a varredura depois de recriar o índice.\n\nOpções:\n"
    .. COMMON
    .. "  --k K                  tamanho do top-k\n"
    .. "  --min-recall R         recall@k mínimo (0 a 1)\n"
    .. "  --min-mrr M            MRR mínimo (0 a 1)\n"
    .. "  --min-ndcg N           nDCG@k mínimo (0 a 1)\n"
    .. "  --min-hit-rate H       taxa de acerto mínima (0 a 1)\n"
    .. "  --probes N|LISTA       ivfflat.probes da sessão (padrão 10); uma lista (1,5,10,20,40) varre\n"
    .. "  --ef-search N|LISTA    hnsw.ef_search da sessão (padrão: o do servidor); uma lista\n"
    .. "                         (20,40,100,200) varre\n"
    .. "  --target-recall R      recall do índice que a varredura recomenda (padrão 0.95)\n"
    .. "  --report-json ARQUIVO  grava o relatório em JSON\n",

  model = "Uso: ragops model prepare|compare|switch|rollback|drop-previous|drop-shadow|status [opções]\n\n"
    .. "Troca de modelo azul/verde (docs/troca-de-modelo.md): a sombra <tabela>__shadow se enche\n"
    .. "com o modelo novo enquanto a API lê a tabela atual; a troca é um rename numa transação.\n\n"
    .. "  ragops model prepare        cria e registra a sombra (modelo, dimensão, armazenamento)\n"
    .. "  ragops model compare        recall@k, MRR, nDCG@k e latência: atual x sombra\n"
    .. "  ragops model switch         a sombra vira a tabela atual (portões: cobertura, frescor, comparação)\n"
    .. "  ragops model rollback       volta à tabela anterior enquanto ela for guardada\n"
    .. "  ragops model drop-previous  remove a tabela anterior (libera o disco)\n"
    .. "  ragops model drop-shadow    descarta a sombra\n"
    .. "  ragops model status         atual, sombra e anterior: modelos, dimensões, cobertura\n",
  ["model prepare"] = "Uso: ragops model prepare --model MODELO --dim N [opções]\n\n"
    .. "Cria a sombra <tabela>__shadow (mesma definição da tabela atual, com o tipo da coluna\n"
    .. "embedding do modelo novo) e a registra; a API não a vê. Encha-a com o backfill na\n"
    .. "sombra (alvo shadow: veja a ajuda de ragops backfill).\n\nOpções:\n" .. COMMON
    .. "  --model MODELO         o modelo novo (provider.model das execuções na sombra)\n"
    .. "  --dim N                a dimensão do modelo novo\n"
    .. "  --storage S            real[], vector ou halfvec (padrão: o da tabela atual)\n"
    .. "  --set chave=valor      provedor da sombra: provider.url=URL, provider.encoding=E\n",
  ["model compare"] = "Uso: ragops model compare GOLDEN.lua [opções]\n\n"
    .. "Mede o golden na tabela atual e na sombra, lado a lado com a diferença, e registra o\n"
    .. "resultado; código 1 quando a sombra é pior que os limites de compare do golden\n"
    .. "(max_recall_drop, max_mrr_drop, max_ndcg_drop, max_p95_ms; sem eles, 0,02 e 250 ms).\n"
    .. "Mostra o plano de cada lado (índice usado ou busca exata, pelo EXPLAIN).\n\nOpções:\n" .. COMMON
    .. "  --k K                  tamanho do top-k (padrão: o k do golden)\n"
    .. "  --probes N             ivfflat.probes das duas buscas (o que a API usa; padrão 10)\n"
    .. "  --ef-search N          hnsw.ef_search das duas buscas (o que a API usa; padrão 40)\n"
    .. "  --report-json ARQUIVO  grava a comparação em JSON\n",
  ["model switch"] = "Uso: ragops model switch [opções]\n\n"
    .. "Troca numa transação: a tabela atual vira <tabela>__previous e a sombra ganha o nome\n"
    .. "da atual (índices junto). Recusa (código 2) sem sombra, com entidades da atual faltando\n"
    .. "ou desatualizadas na sombra, sem comparação aprovada depois da última gravação da\n"
    .. "sombra, com execuções em andamento na tabela atual ou com outro comando model rodando.\n\nOpções:\n"
    .. COMMON
    .. "  --force                troca mesmo sem cobertura ou comparação aprovada (fica no log e no registro)\n",
  ["model rollback"] = "Uso: ragops model rollback [opções]\n\n"
    .. "Volta à tabela anterior (renomeia de volta, numa transação); o modelo que estava em uso\n"
    .. "fica como sombra. Recusa (código 2) quando a anterior não tem o que a atual serve (mudanças\n"
    .. "gravadas na atual depois da troca): alcance-a antes com um backfill no alvo previous.\n\nOpções:\n"
    .. COMMON
    .. "  --force                volta mesmo com a anterior desatualizada (fica no log do operador)\n",
  ["model drop-previous"] = "Uso: ragops model drop-previous [opções]\n\n"
    .. "Remove a tabela anterior (fim da janela de rollback).\n\nOpções:\n" .. COMMON,
  ["model drop-shadow"] = "Uso: ragops model drop-shadow [opções]\n\n"
    .. "Descarta a sombra e o seu registro.\n\nOpções:\n" .. COMMON,
  ["model status"] = "Uso: ragops model status [opções]\n\n"
    .. "Tabelas atual, sombra e anterior: modelo, dimensão, coluna, entidades, cobertura da\n"
    .. "sombra, a última comparação e se a anterior está em dia com a atual.\n\nOpções:\n" .. COMMON,
}

-- Commands whose first argument is a subcommand with its own help.
local SUBCOMMANDS = { failures = true, index = true, model = true, sync = true }

-- The help text for `ragops name args...` (the general help when name has
-- none), formatted with the version.
function M.text(name, args, version)
  if name and SUBCOMMANDS[name] and args[1] and M.TEXT[name .. " " .. args[1]] then
    return M.TEXT[name .. " " .. args[1]]
  end
  return M.TEXT[name or ""] or GENERAL:format(version)
end

-- True when args ask for help (--help or -h anywhere).
function M.asked(args)
  for _, a in ipairs(args) do
    if a == "--help" or a == "-h" then return true end
  end
  return false
end

return M
