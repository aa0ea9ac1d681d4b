/*
 * embed_server.c: the lifecycle of `ragops embed-server` (the public API of
 * embed_server.h): options, start (copy the settings, listen through
 * engine/http's server), the bound port, the counters and stop; and the
 * serving through that httpd: every request goes to the routes (es_dispatch)
 * and each answer back to httpd as it should go out: at once, after
 * --latency-ms (but a refusal by the rate limits at once), as an endless
 * chunked body (--endless-pattern) or never (--hang-pattern,
 * --timeout-rate). httpd bounds the head (64 KiB) and the
 * body (64 MiB) and keeps the order of pipelined requests; its protocol
 * errors become errors of the dialect counted as bad requests. The rest of
 * the server is split by job (see embed_server_internal.h).
 */
#include "embed_server_internal.h"

#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------- serving through httpd ---------- */

/* Appends formatted header lines to headers (size bytes, *used of them
 * taken); what does not fit is left out whole. */
static void es_add_header(char *headers, size_t size, size_t *used, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(headers + *used, size - *used, fmt, ap);
    va_end(ap);
    if (n > 0 && (size_t)n < size - *used)
        *used += (size_t)n;
    else
        headers[*used] = '\0';
}

/* Moves resp (freed) into answer: status, type, body and the headers. */
static void es_to_answer(es_response *resp, httpd_answer *answer)
{
    size_t used = 0;
    memset(answer, 0, sizeof *answer);
    answer->status = resp->status;
    snprintf(answer->content_type, sizeof answer->content_type, "%s", resp->content_type);
    answer->body = resp->body;
    answer->body_len = resp->body_len;
    answer->close_after = resp->close_after;
    resp->body = NULL;
    char *headers = answer->extra_headers;
    size_t size = sizeof answer->extra_headers;
    if (resp->endless && resp->gzip)
        es_add_header(headers, size, &used, "Content-Encoding: gzip\r\n");
    if (!resp->endless && resp->retry_after_s > 0)
        es_add_header(headers, size, &used, "Retry-After: %d\r\n", resp->retry_after_s);
    if (!resp->endless && resp->retry_after_ms > 0)
        es_add_header(headers, size, &used, "retry-after-ms: %d\r\n", resp->retry_after_ms);
    es_add_header(headers, size, &used, "%s", resp->limit_headers);
    if (resp->request_id[0])
        es_add_header(headers, size, &used, "x-request-id: %s\r\n", resp->request_id);
    es_response_free(resp);
}

static const char *es_endless_chunk(void *stream, size_t *len)
{
    return es_endless_next(stream, len);
}

static void es_endless_release(void *stream)
{
    es_endless_free(stream);
}

/* Out of memory: a 500 that closes the connection. */
static void es_respond_no_memory(httpd_request *req)
{
    httpd_answer answer = {500, "text/plain; charset=utf-8", NULL, 0, "", 1};
    httpd_respond(req, &answer);
}

static void es_on_request(void *data, httpd_request *req, const http_head *head, const char *body,
                          size_t body_len)
{
    embed_server *server = data;
    int never_answer = 0, delayed = 0;
    httpd_answer answer;
    es_response *resp = es_dispatch(server, head, body, body_len, &never_answer, &delayed);
    if (never_answer)
        return; /* the connection stays held: nothing else is answered on it */
    if (resp == NULL) {
        es_respond_no_memory(req);
        return;
    }
    if (resp->endless) {
        es_endless *chunks = es_endless_new(resp->body, resp->body_len, resp->gzip);
        es_to_answer(resp, &answer);
        if (chunks == NULL) {
            free(answer.body);
            es_respond_no_memory(req);
            return;
        }
        httpd_respond_stream(req, &answer, chunks, es_endless_chunk, es_endless_release);
    } else if (delayed) {
        es_to_answer(resp, &answer);
        httpd_respond_later(req, &answer, server->latency_ms);
    } else {
        es_to_answer(resp, &answer);
        httpd_respond(req, &answer);
    }
}

/* A protocol error of httpd (431, 400, 413, 501) as an error of the dialect. */
static void es_on_error(void *data, int status, const char *text, httpd_answer *answer)
{
    es_response *resp = es_bad_request(data, status, ES_ERR_INVALID, "%s", text);
    if (resp != NULL)
        es_to_answer(resp, answer);
    answer->close_after = 1;
}

static int es_server_listen(embed_server *server, uv_loop_t *loop, const embed_server_opts *opts, char **err)
{
    const char *host = opts->host ? opts->host : "127.0.0.1";
    httpd_opts http = {
        .host = strcmp(host, "localhost") == 0 ? "127.0.0.1" : host,
        .port = opts->port,
        .max_head = ES_MAX_HEAD,
        .read_timeout_ms = HTTPD_TIMEOUT_NONE, /* fault injection holds connections on purpose */
        .idle_timeout_ms = HTTPD_TIMEOUT_NONE,
        .max_conns = INT_MAX,
        .handler_data = server,
        .on_request = es_on_request,
        .max_body = ES_MAX_BODY,
        .max_queued = SIZE_MAX,
        .on_error = es_on_error,
    };
    char *message = NULL;
    server->http = httpd_start(loop, &http, &message);
    if (server->http == NULL) {
        es_set_err(err, message);
        return -1;
    }
    return 0;
}

/* ---------- lifecycle ---------- */

void embed_server_opts_init(embed_server_opts *opts)
{
    memset(opts, 0, sizeof *opts);
    opts->host = "127.0.0.1";
    opts->port = 8080;
    opts->dim = 1536;
    opts->retry_after_s = 1;
    opts->seed = 42;
    opts->api = "openai";
    opts->max_inputs = EMBED_SERVER_DIALECT_DEFAULT;
    opts->max_input_tokens = EMBED_SERVER_DIALECT_DEFAULT;
    opts->max_request_tokens = EMBED_SERVER_DIALECT_DEFAULT;
    opts->batch_latency_s = 2.0;
    opts->batch_max_file_bytes = 200 * 1000 * 1000;
    opts->batch_max_requests = 50000;
    opts->batch_max_inputs = 50000;
    opts->batch_max_store_bytes = 1024 * 1024 * 1024;
}

/* value, or fallback when value is EMBED_SERVER_DIALECT_DEFAULT. */
static int es_limit_or(int value, int fallback)
{
    return value == EMBED_SERVER_DIALECT_DEFAULT ? fallback : value;
}

static char *es_strdup_or_null(const char *text)
{
    return text ? strdup(text) : NULL;
}

static void es_server_free(embed_server *server)
{
    es_faults_free(&server->faults);
    es_limits_free(&server->limits);
    es_batch_store_free(server->batches);
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
    server->dialect = es_dialect_find(opts->api ? opts->api : "openai");
    server->dim = opts->dim;
    server->latency_ms = opts->latency_ms;
    server->max_inputs = es_limit_or(opts->max_inputs, server->dialect->max_inputs);
    server->max_input_tokens = es_limit_or(opts->max_input_tokens, server->dialect->max_input_tokens);
    server->max_request_tokens = es_limit_or(opts->max_request_tokens, server->dialect->max_request_tokens);
    server->dense = opts->dense;
    server->echo_auth = opts->echo_auth;
    server->seed = opts->seed;
    server->batches = es_batch_store_new(opts);
    if (server->batches == NULL)
        goto fail;
    if (es_faults_init(&server->faults, opts, err) != 0 || es_limits_init(&server->limits, opts) != 0)
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
    if (opts->dim < 1 || opts->dim > ES_MAX_DIM || opts->port < 0 || opts->port > 65535 ||
        opts->max_inputs < EMBED_SERVER_DIALECT_DEFAULT || opts->max_input_tokens < EMBED_SERVER_DIALECT_DEFAULT ||
        opts->max_request_tokens < EMBED_SERVER_DIALECT_DEFAULT || opts->rpm < 0 || opts->tpm < 0 ||
        opts->max_concurrency < 0) {
        es_set_err(err, es_format_alloc("opções inválidas: dim deve estar entre 1 e %d, porta entre 0 e 65535, "
                                        "limites >= 0",
                                        ES_MAX_DIM));
        return NULL;
    }
    if (es_dialect_find(opts->api ? opts->api : "openai") == NULL) {
        es_set_err(err, es_format_alloc("opções inválidas: api desconhecida (use %s)", es_dialect_names));
        return NULL;
    }
    embed_server *server = es_server_new(opts, err);
    if (server != NULL)
        server->loop = loop;
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
