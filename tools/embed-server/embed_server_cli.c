/*
 * embed_server_cli.c: the `ragops embed-server` command line: pt-BR help,
 * options (--flag value or --flag=value), checks, then the server on
 * uv_default_loop() until SIGINT/SIGTERM.
 */
#include "embed_server_internal.h"

#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char es_usage[] =
    "Uso: ragops embed-server [opções]\n"
    "\n"
    "Servidor local de embeddings determinístico (feature hashing de palavras e trigramas),\n"
    "com injeção de falhas, que fala o dialeto de um provedor (--api), com os limites e os\n"
    "erros dele. Os vetores são os mesmos em qualquer dialeto.\n"
    "\n"
    "Opções:\n"
    "  --api NOME           dialeto: openai (padrão), azure, ollama, tei, voyage ou cohere\n"
    "  --host H             endereço IP de escuta (padrão 127.0.0.1)\n"
    "  --port P             porta (padrão 8080; 0 = porta livre escolhida pelo sistema)\n"
    "  --dim D              dimensão dos vetores (padrão 1536)\n"
    "  --model NOME         aceita apenas este modelo (no azure, esta implantação; outro => 404)\n"
    "  --latency-ms N       atraso adicionado a cada requisição, em ms (padrão 0)\n"
    "  --fail-rate F        probabilidade (0..1) de responder 500/502/503\n"
    "  --rate-429 F         probabilidade (0..1) de responder 429 com Retry-After\n"
    "  --retry-after S      segundos no cabeçalho Retry-After (padrão 1)\n"
    "  --timeout-rate F     probabilidade (0..1) de aceitar a requisição e nunca responder\n"
    "  --malformed-rate F   probabilidade (0..1) de responder 200 com corpo inválido\n"
    "  --reject-pattern RE  regex POSIX estendida: entrada que casar => 400 (erro permanente)\n"
    "  --hang-pattern RE    regex POSIX estendida: requisição com entrada que casar nunca é respondida\n"
    "  --bad-usage-rate F   probabilidade (0..1) de responder 200 com a contagem de tokens = -1\n"
    "  --endless-pattern RE regex POSIX estendida: entrada que casar => 200 com corpo que nunca termina\n"
    "  --endless-gzip       esse corpo sem fim vai comprimido com gzip (bomba de compressão)\n"
    "  --echo-auth          devolve o cabeçalho Authorization no x-request-id (provedor que ecoa a chave)\n"
    "  --seed N             semente da aleatoriedade das falhas (padrão 42)\n"
    "  --api-key CHAVE      exige Authorization: Bearer CHAVE (no azure, ou api-key: CHAVE), senão 401\n"
    "  --max-inputs N       máximo de entradas por requisição (0 = sem limite; padrão: o do dialeto)\n"
    "  --max-input-tokens N máximo de tokens por entrada (0 = sem limite; padrão: o do dialeto)\n"
    "  --max-request-tokens N máximo de tokens por requisição (0 = sem limite; padrão: o do dialeto)\n"
    "  --dense              vetores densos (todo componente diferente de zero, como os de um modelo real)\n"
    "\n"
    "Limites de taxa do provedor, globais (todos os clientes e conexões dividem a mesma cota), só na\n"
    "rota de embeddings; acima deles, 429 com Retry-After, retry-after-ms e os cabeçalhos x-ratelimit-*:\n"
    "  --rpm N              requisições por minuto (balde de fichas: N, reposto a N/60 por segundo; 0 = sem limite)\n"
    "  --tpm N              tokens por minuto (idem; pedido com mais de N tokens => 429 sem Retry-After)\n"
    "  --max-concurrency N  requisições em andamento ao mesmo tempo, --latency-ms incluída (0 = sem limite)\n"
    "\n"
    "Lotes (Batch API da OpenAI, só no dialeto openai: POST /v1/files, GET /v1/files/{id}/content,\n"
    "POST /v1/batches, GET /v1/batches/{id}, POST /v1/batches/{id}/cancel):\n"
    "  --batch-latency-s S  duração simulada de um lote em segundos (padrão 2): validating por S/4,\n"
    "                       in_progress, finalizing, completed ao fim de S\n"
    "  --batch-error-rate F probabilidade (0..1) de um pedido do lote ir para o arquivo de erros (400)\n"
    "  --batch-expire-rate F probabilidade (0..1) de um pedido expirar (batch_expired; o lote fica expired)\n"
    "  --batch-fail         todo lote novo termina failed\n"
    "  --batch-max-file-bytes N  maior arquivo de entrada (padrão 200000000; o corpo HTTP vai até 64 MiB)\n"
    "  --batch-max-requests N    linhas por arquivo (padrão 50000)\n"
    "  --batch-max-inputs N      entradas de embedding somadas por arquivo (padrão 50000)\n"
    "  --batch-max-enqueued-tokens N  tokens (bytes/4) na fila por modelo (0 = sem limite, o padrão)\n"
    "  --batch-max-store-bytes N bytes de arquivos guardados em memória (padrão 1073741824)\n"
    "  --help               mostra esta ajuda\n"
    "\n"
    "Dialetos (rota de embeddings; entradas, tokens por entrada, tokens por requisição):\n"
    "  openai  POST /v1/embeddings                       2048, 8192, 300000 (estimados em bytes/4)\n"
    "  azure   POST /openai/deployments/{implantação}/embeddings?api-version=...\n"
    "          ou POST /openai/v1/embeddings             2048, 8192, 300000 (estimados em bytes/4)\n"
    "  ollama  POST /api/embed                           sem limite, 8192, sem limite\n"
    "  tei     POST /embed (e GET /info)                 32, 512, sem limite\n"
    "  voyage  POST /v1/embeddings                       1000, 32000, 320000\n"
    "  cohere  POST /v2/embed                            96, 512, sem limite\n"
    "\n"
    "Outras rotas: GET /stats, POST /stats/reset, GET /health.\n"
    "Encerra de forma limpa com SIGINT/SIGTERM.\n";

static int es_parse_long(const char *text, long min, long max, long *out)
{
    char *end = NULL;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || value < min || value > max)
        return -1;
    *out = value;
    return 0;
}

static int es_parse_rate(const char *text, double *out)
{
    char *end = NULL;
    errno = 0;
    double value = strtod(text, &end);
    if (errno != 0 || end == text || *end != '\0' || !(value >= 0.0 && value <= 1.0))
        return -1;
    *out = value;
    return 0;
}

static int es_parse_seconds(const char *text, double *out)
{
    char *end = NULL;
    errno = 0;
    double value = strtod(text, &end);
    if (errno != 0 || end == text || *end != '\0' || !(value >= 0.0 && value <= 86400.0))
        return -1;
    *out = value;
    return 0;
}

static int es_parse_seed(const char *text, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    if (text[0] == '-')
        return -1;
    unsigned long long value = strtoull(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0')
        return -1;
    *out = (uint64_t)value;
    return 0;
}

/* How an option's value is read into embed_server_opts. */
typedef enum es_option_kind {
    ES_OPT_TEXT,     /* any text (a pattern, checked later) */
    ES_OPT_NONEMPTY, /* a non-empty text */
    ES_OPT_INT,      /* an integer in [min, max] */
    ES_OPT_RATE,     /* a probability in [0, 1] */
    ES_OPT_SEED,     /* an unsigned 64-bit integer */
    ES_OPT_SECONDS,  /* a number of seconds in [0, 86400] (double) */
    ES_OPT_FLAG      /* no value: sets the int field to 1 */
} es_option_kind;

/* One --flag of the command line. */
typedef struct es_option {
    const char *flag;    /* e.g. "--port" */
    es_option_kind kind; /* how its value is read */
    size_t offset;       /* field of embed_server_opts it sets */
    long min;            /* ES_OPT_INT: smallest value */
    long max;            /* ES_OPT_INT: largest value */
} es_option;

#define ES_OPT(flag, kind, field, min, max) {flag, kind, offsetof(embed_server_opts, field), min, max}

static const es_option es_options[] = {
    ES_OPT("--host", ES_OPT_NONEMPTY, host, 0, 0),
    ES_OPT("--port", ES_OPT_INT, port, 0, 65535),
    ES_OPT("--dim", ES_OPT_INT, dim, 1, ES_MAX_DIM),
    ES_OPT("--model", ES_OPT_NONEMPTY, model, 0, 0),
    ES_OPT("--latency-ms", ES_OPT_INT, latency_ms, 0, 3600000),
    ES_OPT("--fail-rate", ES_OPT_RATE, fail_rate, 0, 0),
    ES_OPT("--rate-429", ES_OPT_RATE, rate_429, 0, 0),
    ES_OPT("--retry-after", ES_OPT_INT, retry_after_s, 0, 86400),
    ES_OPT("--timeout-rate", ES_OPT_RATE, timeout_rate, 0, 0),
    ES_OPT("--malformed-rate", ES_OPT_RATE, malformed_rate, 0, 0),
    ES_OPT("--reject-pattern", ES_OPT_TEXT, reject_pattern, 0, 0),
    ES_OPT("--hang-pattern", ES_OPT_TEXT, hang_pattern, 0, 0),
    ES_OPT("--bad-usage-rate", ES_OPT_RATE, bad_usage_rate, 0, 0),
    ES_OPT("--seed", ES_OPT_SEED, seed, 0, 0),
    ES_OPT("--api-key", ES_OPT_NONEMPTY, api_key, 0, 0),
    ES_OPT("--max-inputs", ES_OPT_INT, max_inputs, 0, 1000000),
    ES_OPT("--max-input-tokens", ES_OPT_INT, max_input_tokens, 0, 100000000),
    ES_OPT("--max-request-tokens", ES_OPT_INT, max_request_tokens, 0, 2000000000),
    ES_OPT("--api", ES_OPT_NONEMPTY, api, 0, 0),
    ES_OPT("--dense", ES_OPT_FLAG, dense, 0, 0),
    ES_OPT("--endless-pattern", ES_OPT_TEXT, endless_pattern, 0, 0),
    ES_OPT("--endless-gzip", ES_OPT_FLAG, endless_gzip, 0, 0),
    ES_OPT("--echo-auth", ES_OPT_FLAG, echo_auth, 0, 0),
    ES_OPT("--batch-latency-s", ES_OPT_SECONDS, batch_latency_s, 0, 0),
    ES_OPT("--batch-error-rate", ES_OPT_RATE, batch_error_rate, 0, 0),
    ES_OPT("--batch-expire-rate", ES_OPT_RATE, batch_expire_rate, 0, 0),
    ES_OPT("--batch-fail", ES_OPT_FLAG, batch_fail, 0, 0),
    ES_OPT("--batch-max-file-bytes", ES_OPT_INT, batch_max_file_bytes, 1, 2000000000),
    ES_OPT("--batch-max-requests", ES_OPT_INT, batch_max_requests, 1, 10000000),
    ES_OPT("--batch-max-inputs", ES_OPT_INT, batch_max_inputs, 1, 100000000),
    ES_OPT("--batch-max-enqueued-tokens", ES_OPT_INT, batch_max_enqueued_tokens, 0, 2000000000),
    ES_OPT("--batch-max-store-bytes", ES_OPT_INT, batch_max_store_bytes, 1, 2000000000),
    ES_OPT("--rpm", ES_OPT_INT, rpm, 0, 2000000000),
    ES_OPT("--tpm", ES_OPT_INT, tpm, 0, 2000000000),
    ES_OPT("--max-concurrency", ES_OPT_INT, max_concurrency, 0, 1000000),
};

static const es_option *es_find_option(const char *name)
{
    for (size_t k = 0; k < sizeof es_options / sizeof es_options[0]; k++)
        if (strcmp(name, es_options[k].flag) == 0)
            return &es_options[k];
    return NULL;
}

/* Stores value into its field of opts. Returns 0, or -1 when invalid. */
static int es_set_option(const es_option *option, const char *value, embed_server_opts *opts)
{
    char *field = (char *)opts + option->offset;
    long number = 0;
    switch (option->kind) {
    case ES_OPT_TEXT:
        *(const char **)(void *)field = value;
        return 0;
    case ES_OPT_NONEMPTY:
        *(const char **)(void *)field = value;
        return value[0] == '\0' ? -1 : 0;
    case ES_OPT_INT:
        if (es_parse_long(value, option->min, option->max, &number) != 0)
            return -1;
        *(int *)(void *)field = (int)number;
        return 0;
    case ES_OPT_RATE:
        return es_parse_rate(value, (double *)(void *)field);
    case ES_OPT_SEED:
        return es_parse_seed(value, (uint64_t *)(void *)field);
    case ES_OPT_SECONDS:
        return es_parse_seconds(value, (double *)(void *)field);
    case ES_OPT_FLAG:
        *(int *)(void *)field = 1;
        return 0;
    }
    return -1;
}

/* Reads the option at argv[*i] ("--flag value" or "--flag=value"), moving *i
 * past its value. Returns 0 ok, 1 help shown, 2 usage error. */
static int es_parse_option(int argc, char **argv, int *i, embed_server_opts *opts)
{
    const char *arg = argv[*i];
    if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
        fputs(es_usage, stdout);
        return 1;
    }
    if (strncmp(arg, "--", 2) != 0) {
        fprintf(stderr, "embed-server: argumento inesperado '%s' (veja --help)\n", arg);
        return 2;
    }
    char name[32];
    const char *value = NULL;
    const char *eq = strchr(arg, '=');
    size_t name_len = eq ? (size_t)(eq - arg) : strlen(arg);
    if (name_len >= sizeof name) {
        fprintf(stderr, "embed-server: opção desconhecida '%s' (veja --help)\n", arg);
        return 2;
    }
    memcpy(name, arg, name_len);
    name[name_len] = '\0';
    const es_option *option = es_find_option(name);
    if (option == NULL) {
        fprintf(stderr, "embed-server: opção desconhecida '%s' (veja --help)\n", name);
        return 2;
    }
    if (option->kind == ES_OPT_FLAG && eq) {
        fprintf(stderr, "embed-server: a opção %s não aceita valor\n", name);
        return 2;
    }
    if (eq) {
        value = eq + 1;
    } else if (option->kind == ES_OPT_FLAG) {
        value = "";
    } else if (*i + 1 < argc) {
        value = argv[++*i];
    } else {
        fprintf(stderr, "embed-server: a opção %s exige um valor\n", name);
        return 2;
    }
    if (es_set_option(option, value, opts) != 0) {
        /* Never echo the API key. */
        fprintf(stderr, "embed-server: valor inválido para %s: '%s'\n", name,
                strcmp(name, "--api-key") == 0 ? "(oculto)" : value);
        return 2;
    }
    return 0;
}

/* Checks what the options cannot say alone: the dialect exists, patterns
 * compile, the host is a numeric address. Returns 0 or 2 (usage error,
 * message printed). */
static int es_check_opts(const embed_server_opts *opts)
{
    if (es_dialect_find(opts->api) == NULL) {
        fprintf(stderr, "embed-server: --api inválida '%s': use %s\n", opts->api, es_dialect_names);
        return 2;
    }
    static const char *const pattern_flags[] = {"--reject-pattern", "--hang-pattern", "--endless-pattern"};
    const char *patterns[] = {opts->reject_pattern, opts->hang_pattern, opts->endless_pattern};
    for (int k = 0; k < 3; k++) {
        regex_t probe;
        char *err = NULL;
        if (!patterns[k])
            continue;
        if (es_compile_pattern(&probe, patterns[k], pattern_flags[k], &err) != 0) {
            fprintf(stderr, "embed-server: %s\n", err ? err : pattern_flags[k]);
            free(err);
            return 2;
        }
        regfree(&probe);
    }
    struct sockaddr_in6 probe_addr;
    if (strcmp(opts->host, "localhost") != 0 &&
        uv_ip4_addr(opts->host, 0, (struct sockaddr_in *)&probe_addr) != 0 &&
        uv_ip6_addr(opts->host, 0, &probe_addr) != 0) {
        fprintf(stderr, "embed-server: --host inválido '%s': use um IP numérico (ex.: 127.0.0.1)\n", opts->host);
        return 2;
    }
    return 0;
}

/* Fills opts from argv. Returns 0 ok, 1 help shown, 2 usage error. */
static int es_parse_args(int argc, char **argv, embed_server_opts *opts)
{
    for (int i = 1; i < argc; i++) {
        int rc = es_parse_option(argc, argv, &i, opts);
        if (rc != 0)
            return rc;
    }
    return es_check_opts(opts);
}

/* State of the running command (signal handles + server). */
typedef struct es_main_state {
    embed_server *server;  /* the running server */
    uv_signal_t sigint;    /* SIGINT watcher */
    uv_signal_t sigterm;   /* SIGTERM watcher */
} es_main_state;

static void es_main_on_signal(uv_signal_t *handle, int signum)
{
    es_main_state *state = handle->data;
    embed_server_stop(state->server);
    state->server = NULL;
    uv_close((uv_handle_t *)&state->sigint, NULL);
    uv_close((uv_handle_t *)&state->sigterm, NULL);
}

int embed_server_main(int argc, char **argv)
{
    embed_server_opts opts;
    es_main_state state;
    char *err = NULL;
    uv_loop_t *loop;

    embed_server_opts_init(&opts);
    int parsed = es_parse_args(argc, argv, &opts);
    if (parsed == 1)
        return 0;
    if (parsed != 0)
        return 2;

    signal(SIGPIPE, SIG_IGN);
    loop = uv_default_loop();
    memset(&state, 0, sizeof state);
    state.server = embed_server_start(loop, &opts, &err);
    if (state.server == NULL) {
        fprintf(stderr, "embed-server: %s\n", err ? err : "falha ao iniciar");
        free(err);
        uv_run(loop, UV_RUN_DEFAULT); /* let a half-opened listener close */
        return 4;
    }
    uv_signal_init(loop, &state.sigint);
    uv_signal_init(loop, &state.sigterm);
    state.sigint.data = &state;
    state.sigterm.data = &state;
    uv_signal_start(&state.sigint, es_main_on_signal, SIGINT);
    uv_signal_start(&state.sigterm, es_main_on_signal, SIGTERM);

    int ipv6 = strchr(opts.host, ':') != NULL;
    printf("embed-server escutando em http://%s%s%s:%d/v1 (dim=%d%s%s)\n", ipv6 ? "[" : "", opts.host,
           ipv6 ? "]" : "", embed_server_port(state.server), opts.dim, strcmp(opts.api, "openai") ? ", api=" : "",
           strcmp(opts.api, "openai") ? opts.api : "");
    fflush(stdout);

    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    return 0;
}
