/*
 * embed_server_net.c: the embed-server served through engine/http's httpd:
 * every request goes to the routes (es_dispatch) and each answer back to
 * httpd as it should go out: at once, after --latency-ms, as an endless
 * chunked body (--endless-pattern) or never (--hang-pattern,
 * --timeout-rate). httpd bounds the head (64 KiB) and the body (64 MiB) and
 * keeps the order of pipelined requests; its protocol errors become
 * OpenAI-style errors counted as bad requests.
 */
#include "embed_server_internal.h"

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
        used += (size_t)snprintf(headers + used, size - used, "Content-Encoding: gzip\r\n");
    if (!resp->endless && resp->retry_after_s > 0)
        used += (size_t)snprintf(headers + used, size - used, "Retry-After: %d\r\n", resp->retry_after_s);
    if (resp->request_id[0])
        snprintf(headers + used, size - used, "x-request-id: %s\r\n", resp->request_id);
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

/* A protocol error of httpd (431, 400, 413, 501) as an OpenAI-style error. */
static void es_on_error(void *data, int status, const char *text, httpd_answer *answer)
{
    es_response *resp = es_bad_request(data, status, NULL, "%s", text);
    if (resp != NULL)
        es_to_answer(resp, answer);
    answer->close_after = 1;
}

int es_server_listen(embed_server *server, uv_loop_t *loop, const embed_server_opts *opts, char **err)
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
