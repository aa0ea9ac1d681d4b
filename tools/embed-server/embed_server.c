/*
 * embed_server.c: the lifecycle of `ragops embed-server` (the public API of
 * embed_server.h): options, start (copy the settings, listen through
 * engine/http's server), the bound port, the counters and stop. The rest of
 * the server is split by job (see embed_server_internal.h).
 */
#include "embed_server_internal.h"

#include <stdlib.h>
#include <string.h>

void embed_server_opts_init(embed_server_opts *opts)
{
    memset(opts, 0, sizeof *opts);
    opts->host = "127.0.0.1";
    opts->port = 8080;
    opts->dim = 1536;
    opts->retry_after_s = 1;
    opts->seed = 42;
    opts->max_inputs = 2048;
}

static char *es_strdup_or_null(const char *text)
{
    return text ? strdup(text) : NULL;
}

static void es_server_free(embed_server *server)
{
    es_faults_free(&server->faults);
    free(server->model);
    free(server->api_key);
    free(server);
}

/* A server with the settings of opts copied, NULL when memory is short or
 * a pattern does not compile (then *err may hold the message). */
static embed_server *es_server_new(const embed_server_opts *opts, char **err)
{
    embed_server *server = calloc(1, sizeof *server);
    if (server == NULL)
        return NULL;
    server->model = es_strdup_or_null(opts->model);
    server->api_key = es_strdup_or_null(opts->api_key);
    if ((opts->model && !server->model) || (opts->api_key && !server->api_key))
        goto fail;
    server->dim = opts->dim;
    server->latency_ms = opts->latency_ms;
    server->max_inputs = opts->max_inputs;
    server->dense = opts->dense;
    server->echo_auth = opts->echo_auth;
    if (es_faults_init(&server->faults, opts, err) != 0)
        goto fail;
    return server;

fail:
    es_server_free(server);
    return NULL;
}

embed_server *embed_server_start(uv_loop_t *loop, const embed_server_opts *opts, char **err)
{
    if (err)
        *err = NULL;
    if (opts->dim < 1 || opts->dim > ES_MAX_DIM || opts->port < 0 || opts->port > 65535 || opts->max_inputs < 1) {
        es_set_err(err, es_format_alloc("opções inválidas: dim deve estar entre 1 e %d, porta entre 0 e 65535",
                                        ES_MAX_DIM));
        return NULL;
    }
    embed_server *server = es_server_new(opts, err);
    if (server != NULL && es_server_listen(server, loop, opts, err) != 0) {
        es_server_free(server);
        server = NULL;
    }
    if (server == NULL && err && *err == NULL)
        *err = strdup("memória insuficiente ao iniciar o embed-server");
    return server;
}

int embed_server_port(const embed_server *server)
{
    return httpd_port(server->http);
}

void embed_server_get_stats(const embed_server *server, embed_server_stats *out)
{
    *out = server->stats;
}

void embed_server_stop(embed_server *server)
{
    if (server == NULL)
        return;
    httpd_close(server->http); /* on_request is never called again */
    es_server_free(server);
}
