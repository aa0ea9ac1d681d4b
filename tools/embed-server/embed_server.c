/*
 * embed_server.c: the lifecycle of `ragops embed-server` (the public API of
 * embed_server.h): options, start (copy the settings, bind, listen), the
 * bound port, the counters and stop. The rest of the server is split by job
 * (see embed_server_internal.h).
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
    free(server->host);
    free(server->model);
    free(server->api_key);
    free(server);
}

void es_server_maybe_free(embed_server *server)
{
    if (server->stopping && server->open_handles == 0)
        es_server_free(server);
}

static void es_server_on_listener_closed(uv_handle_t *handle)
{
    embed_server *server = handle->data;
    server->open_handles--;
    es_server_maybe_free(server);
}

/* A server with the settings of opts copied, NULL when memory is short or
 * a pattern does not compile (then *err may hold the message). */
static embed_server *es_server_new(uv_loop_t *loop, const embed_server_opts *opts, char **err)
{
    embed_server *server = calloc(1, sizeof *server);
    if (server == NULL)
        return NULL;
    server->loop = loop;
    server->host = strdup(opts->host ? opts->host : "127.0.0.1");
    server->model = es_strdup_or_null(opts->model);
    server->api_key = es_strdup_or_null(opts->api_key);
    if (server->host == NULL || (opts->model && !server->model) || (opts->api_key && !server->api_key))
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

/* Binds and listens on server->host:port; records the bound port.
 * Returns 0, or -1 with the pt-BR message in *err. */
static int es_server_listen(embed_server *server, int port, char **err)
{
    struct sockaddr_storage addr;
    const char *host = strcmp(server->host, "localhost") == 0 ? "127.0.0.1" : server->host;
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&addr) != 0 &&
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)&addr) != 0) {
        es_set_err(err, es_format_alloc("endereço inválido '%s': use um IP numérico (ex.: 127.0.0.1)", server->host));
        return -1;
    }
    int rc = uv_tcp_init(server->loop, &server->listener);
    if (rc != 0) {
        es_set_err(err, es_format_alloc("não foi possível criar o socket: %s", uv_strerror(rc)));
        return -1;
    }
    server->listener.data = server;
    server->listener_open = 1;
    server->open_handles = 1;
    rc = uv_tcp_bind(&server->listener, (const struct sockaddr *)&addr, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&server->listener, 128, es_server_on_connection);
    if (rc != 0) {
        es_set_err(err, es_format_alloc("não foi possível escutar em %s:%d: %s", server->host, port, uv_strerror(rc)));
        return -1;
    }
    struct sockaddr_storage bound;
    int bound_len = sizeof bound;
    rc = uv_tcp_getsockname(&server->listener, (struct sockaddr *)&bound, &bound_len);
    if (rc != 0) {
        es_set_err(err, es_format_alloc("não foi possível obter a porta: %s", uv_strerror(rc)));
        return -1;
    }
    server->port = bound.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&bound)->sin6_port)
                                               : ntohs(((struct sockaddr_in *)&bound)->sin_port);
    return 0;
}

embed_server *embed_server_start(uv_loop_t *loop, const embed_server_opts *opts, char **err)
{
    embed_server *server = NULL;

    if (err)
        *err = NULL;
    if (opts->dim < 1 || opts->dim > ES_MAX_DIM || opts->port < 0 || opts->port > 65535 || opts->max_inputs < 1) {
        es_set_err(err, es_format_alloc("opções inválidas: dim deve estar entre 1 e %d, porta entre 0 e 65535",
                                        ES_MAX_DIM));
        return NULL;
    }
    server = es_server_new(loop, opts, err);
    if (server == NULL)
        goto fail;
    if (es_server_listen(server, opts->port, err) != 0)
        goto fail;
    return server;

fail:
    if (err && *err == NULL)
        *err = strdup("memória insuficiente ao iniciar o embed-server");
    if (server == NULL)
        return NULL;
    if (server->listener_open) {
        /* The handle is registered with the loop: free after it closes. */
        server->stopping = 1;
        uv_close((uv_handle_t *)&server->listener, es_server_on_listener_closed);
        return NULL;
    }
    es_server_free(server);
    return NULL;
}

int embed_server_port(const embed_server *server)
{
    return server->port;
}

void embed_server_get_stats(const embed_server *server, embed_server_stats *out)
{
    *out = server->stats;
}

void embed_server_stop(embed_server *server)
{
    if (server == NULL || server->stopping)
        return;
    server->stopping = 1;
    es_server_close_conns(server);
    uv_close((uv_handle_t *)&server->listener, es_server_on_listener_closed);
}
