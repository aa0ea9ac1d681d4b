-- config.example.lua: exemplo comentado da configuração do ragops.
--
-- Copie para config.lua e ajuste. O arquivo é código Lua (só texto, nunca
-- bytecode) executado num ambiente restrito: não há io, require, load, debug
-- nem acesso a arquivos ou processos. Há as funções básicas (pairs, ipairs,
-- tonumber, tostring, type, pcall, error...), as tabelas string, math e table,
-- do os só os.time, os.date e os.clock, e env("NOME"), que lê uma variável de
-- ambiente.
--
-- Variáveis de ambiente sempre têm precedência sobre este arquivo:
--   DATABASE_URL        -> database.url
--   RAGOPS_EMBED_URL    -> provider.url
--   OPENAI_API_KEY      -> provider.api_key   (nunca aparece em logs)
--   RAGOPS_EMBED_MODEL  -> provider.model
--   RAGOPS_PLANS        -> plans.dir           (relativo à pasta atual)
-- Prefira definir senhas e chaves por variável de ambiente, não aqui.

return {
  database = {
    -- URL de conexão do Postgres (formato URI ou "host=... dbname=...").
    -- A senha, se houver, é mascarada (***) em todos os logs.
    url = "postgresql://localhost/ragops",
    -- Número máximo de conexões simultâneas com o banco (1 a 256).
    pool_size = 8,
    -- Tabela de destino dos documentos (pode ter esquema: "public.rag_documents").
    table = "rag_documents",
    -- Tipo da coluna embedding: "auto" (detecta pela tabela; numa tabela nova,
    -- vector até 2000 dimensões e halfvec acima), "vector" (extensão pgvector,
    -- índice até 2000 dimensões), "halfvec" (pgvector em meia precisão, índice
    -- até 4000 dimensões, metade do tamanho: o de 3072 dimensões) ou "real[]"
    -- (sem pgvector; sem índice IVFFlat/HNSW).
    storage = "auto",
  },

  provider = {
    -- Dialeto do provedor: "openai", "azure", "ollama", "tei", "voyage" ou
    -- "cohere" (docs/provedores.md tem uma configuração de cada um).
    -- A variável RAGOPS_EMBED_API vale sobre este.
    api = "openai",
    -- URL base do provedor. openai: a base da API, e o pedido vai para
    -- {url}/embeddings (para a OpenAI: "https://api.openai.com/v1"); o padrão
    -- é o servidor local `ragops embed-server`. azure: o endpoint do recurso
    -- ("https://NOME.openai.azure.com"); ollama e tei: a raiz do servidor;
    -- voyage: "https://api.voyageai.com/v1"; cohere: "https://api.cohere.com".
    url = "http://127.0.0.1:8080/v1",
    -- Modelo de embedding enviado na requisição.
    model = "ragops-hash-1536",
    -- Parâmetro "dimensions" enviado ao provedor (só modelos que aceitam,
    -- como text-embedding-3-*). nil = não enviar. Se definido, dim o acompanha.
    dimensions = nil,
    -- Dimensão esperada dos vetores (deve bater com a coluna do banco).
    dim = 1536,
    -- Chave de API. Deixe nil e use a variável do dialeto: OPENAI_API_KEY,
    -- AZURE_OPENAI_API_KEY (ou AZURE_OPENAI_AD_TOKEN com azure_auth = "entra"),
    -- VOYAGE_API_KEY, CO_API_KEY, HF_TOKEN (tei). A variável vale sobre este.
    -- Exemplo lendo de outra variável: api_key = env("MINHA_CHAVE"),
    api_key = nil,
    -- Formato dos vetores na resposta: "base64" (mais compacto) ou "float".
    encoding = "base64",
    -- Tempo máximo de cada requisição de embedding, em segundos: qualquer
    -- número maior que 0 e até 3600 (frações valem, ex.: 1.5). Um plano pode
    -- substituí-lo com retry.timeout_s (mesmo significado).
    timeout_s = 60,
    -- Latência típica de uma requisição de embedding, em ms; só entra na
    -- estimativa de duração do --dry-run.
    expected_latency_ms = 500,
    -- Preço em US$ por 1 milhão de tokens, por modelo (usado na estimativa de
    -- custo do --dry-run). Entradas aqui se somam às padrão abaixo.
    price_per_1m_tokens = {
      ["text-embedding-3-small"] = 0.02,
      ["text-embedding-3-large"] = 0.13,
      ["ragops-hash-1536"] = 0,
    },
    -- Preço em US$ por 1 milhão de tokens na API de lotes (embed.mode = "batch"),
    -- por modelo; sem entrada, vale a metade do preço online (docs/lote-openai.md).
    price_per_1m_tokens_batch = {},
    -- Tokens por byte de texto, por modelo: a estimativa de tokens do --dry-run
    -- quando ainda não há calibração (a calibração vem do que o provedor cobrou
    -- nas execuções anteriores do mesmo modelo e tipo de entidade). Sem entrada
    -- para o modelo, vale a heurística bytes/4. Ex.: ["text-embedding-3-small"] = 0.27,
    tokens_per_byte = {},
    -- Pool de endpoints do mesmo modelo (deployments do Azure em várias regiões, réplicas
    -- do TEI/vLLM): os pedidos se espalham por peso e pela cota que resta em cada um; um
    -- endpoint que falha (conexão, 5xx, 401) sai por um tempo e os outros levam a execução.
    -- Com ele, provider.url fica de fora; as outras chaves de provider valem para todos.
    -- Cada endpoint pode ter seus rate_limits (sem eles, valem os de provider.rate_limits).
    -- Veja docs/limites-de-taxa.md.
    endpoints = nil,
    -- endpoints = {
    --   { name = "eastus", url = "https://leste.openai.azure.com", api_key_env = "AZURE_LESTE_KEY",
    --     weight = 2, rate_limits = { tokens_per_min = 1000000 } },
    --   { name = "westus", url = "https://oeste.openai.azure.com", api_key_env = "AZURE_OESTE_KEY" },
    -- },
    -- Limites de uso do provedor; o motor espaça as requisições para respeitá-los. São da
    -- cota inteira: todos os processos do ragops que usam o mesmo endpoint e modelo a
    -- dividem pelo PostgreSQL (docs/limites-de-taxa.md).
    rate_limits = {
      -- Requisições por minuto permitidas pelo provedor (nil = sem limite).
      requests_per_min = nil,
      -- Tokens por minuto permitidos pelo provedor (nil = sem limite).
      tokens_per_min = nil,
      -- Máximo de requisições de embedding em paralelo que o provedor aceita (1 a 256;
      -- nil = sem limite: vale o batch.in_flight do plano). Abaixo do in_flight, a
      -- primeira linha do log e o relatório dizem o valor efetivo e o motivo.
      max_concurrency = nil,
    },
    -- Limites de tamanho de cada pedido, conferidos antes de enviar; nil = o
    -- padrão do dialeto e do modelo (docs/provedores.md), ou o que o provedor
    -- diz (GET /info do TEI).
    limits = {
      -- Entradas por pedido (ex.: OpenAI 2048, Cohere 96, TEI max_client_batch_size).
      max_inputs = nil,
      -- Tokens estimados por pedido (ex.: OpenAI 300000, pela regra bytes/4 dela).
      max_request_tokens = nil,
      -- Tokens estimados por entrada (ex.: OpenAI 8192); acima, fila de falhas.
      max_input_tokens = nil,
      -- API de lotes (embed.mode = "batch"): pedidos, entradas e bytes por
      -- arquivo (padrão 50000, 50000 e 200 MB, os da OpenAI) e tokens em fila
      -- por modelo, que dependem do nível da conta (nil = sem teto local).
      batch_max_requests = nil,
      batch_max_inputs = nil,
      batch_max_file_bytes = nil,
      batch_enqueued_tokens = nil,
    },
    -- Cabeçalhos extras de cada pedido, como { ["OpenAI-Organization"] =
    -- env("OPENAI_ORG") }. Os valores são segredos: nunca aparecem em logs.
    headers = {},
    -- true: entradas acima de max_input_tokens vão mesmo assim e o provedor
    -- as trunca (com um aviso no log); false: viram falhas sem pedido.
    truncate = false,
    -- Arquivo PEM com as autoridades certificadoras aceitas (nil = as do sistema).
    ca_file = nil,
    -- Proxy HTTP dos pedidos ("http://proxy:3128"; "" = nenhum). nil = as
    -- variáveis https_proxy/http_proxy/ALL_PROXY/NO_PROXY, como a libcurl.
    proxy = nil,
    -- Só azure: versão da API da rota clássica (ex.: "2024-10-21"); nil = a API v1.
    api_version = nil,
    -- Só azure: nome da implantação (deployment); nil = o model.
    deployment = nil,
    -- Só azure: "api_key" (cabeçalho api-key) ou "entra" (token do Microsoft
    -- Entra como Bearer); nil = "api_key".
    azure_auth = nil,
  },

  metrics = {
    -- Arquivo de métricas no formato textfile do Prometheus (node_exporter).
    -- nil = não gravar métricas em arquivo.
    file = nil,
    -- Endpoint GET /metrics e /healthz durante cada execução ("127.0.0.1:9464",
    -- "[::1]:9464", ":9464" = 127.0.0.1). nil = desligado. --metrics-listen vale sobre este.
    listen = nil,
    -- Pushgateway que recebe os valores finais de cada execução
    -- ("http://127.0.0.1:9091"). nil = não enviar. --metrics-push vale sobre este.
    push_url = nil,
  },

  log = {
    -- Intervalo, em segundos, do progresso: num terminal, uma linha
    -- redesenhada no lugar; sem terminal, uma linha de log a cada intervalo
    -- (aparece também enquanto todos os workers esperam o provedor).
    progress_every_s = 5,
    -- Formato do log do operador: "text" (linhas legíveis) ou "json" (uma
    -- linha JSON por evento: ts, level, msg, run_id, plan, request_id...).
    -- A opção --log-format da linha de comando tem precedência.
    format = "text",
  },

  alerts = {
    -- Webhook (http/https) que recebe um POST JSON quando um alerta dispara.
    -- nil = alertas só no log. O caminho da URL é mascarado nos logs.
    webhook_url = nil,
  },

  plans = {
    -- Pasta dos planos do operador (no repositório da aplicação, fora do
    -- runtime do ragops). Caminho relativo = relativo à pasta DESTE arquivo.
    -- nil = os planos de exemplo do runtime (plans/ da instalação: a demo).
    -- Os planos importam os vizinhos desta pasta: import "comum.lua".
    dir = nil,
    -- O plano usado quando o comando não recebe --plan: o NOME de um plano da
    -- pasta ("artigos" = artigos.lua) ou o caminho de um arquivo .lua. nil = o
    -- único plano da pasta (com mais de um, o comando lista os encontrados e
    -- pede --plan). Um plano por acervo: backfill, reindex, sync, failures
    -- retry, status e model usam o mesmo.
    default = nil,
  },

  -- A API de lotes (embed.mode = "batch", docs/lote-openai.md).
  batch = {
    -- Pasta dos arquivos JSONL enviados e baixados (RAGOPS_BATCH_DIR). nil =
    -- $STATE_DIRECTORY/lotes no serviço systemd, senão ~/.local/state/ragops/lotes.
    dir = nil,
  },

  -- Limites do código dos planos (docs/limites-e-riscos.md). Carregar um plano ou
  -- arquivo golden, e cada chamada de document(), param ao passar deles.
  sandbox = {
    load_ms = 2000,        -- tempo de CPU para carregar um arquivo (código 2 ao passar)
    load_memory_mb = 256,  -- memória que o carregamento pode alocar
    hook_ms = 100,         -- tempo de CPU de uma chamada de document() (falha "time")
    hook_memory_mb = 16,   -- memória de uma chamada de document() (falha "memory")
    max_breaches = 10,     -- chamadas estouradas antes de abortar a execução (código 2)
    memory_mb = 1024,      -- memória do Lua do processo inteiro, durante toda a execução
  },
}
