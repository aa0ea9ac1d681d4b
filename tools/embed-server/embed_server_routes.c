/*
 * embed_server_routes.c: the routes of the embed-server (POST
 * /v1/embeddings, GET /stats, POST /stats/reset, GET /health, 404 for the
 * rest) and the validation of an embeddings request, with OpenAI-style
 * errors in pt-BR. Each embeddings answer has its own x-request-id
 * ("es-<n>"); failed ones are logged on stderr with the client's
 * X-Request-Id, so a request is findable on both sides.
 */
#include "embed_server_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A validated POST /v1/embeddings request. */
typedef struct es_embed_request {
    json_t *root;      /* the parsed body (owned reference) */
    json_t *inputs;    /* array of non-empty strings (owned reference) */
    const char *model; /* requested model (inside root) */
    size_t dim;        /* dimension of the answered vectors */
    int base64;        /* 1: encoding_format "base64" */
} es_embed_request;

es_response *es_bad_request(embed_server *server, int status, const char *code, const char *fmt, ...)
{
    va_list ap;
    server->stats.bad_requests++;
    va_start(ap, fmt);
    es_response *resp = es_response_verror(status, "invalid_request_error", code, fmt, ap);
    va_end(ap);
    return resp;
}

static es_response *es_route_stats(embed_server *server)
{
    const embed_server_stats *s = &server->stats;
    json_t *root = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
                             "requests", (json_int_t)s->requests, "inputs", (json_int_t)s->inputs,
                             "ok", (json_int_t)s->ok, "errors_5xx", (json_int_t)s->errors_5xx,
                             "rate_limited", (json_int_t)s->rate_limited,
                             "timeouts", (json_int_t)s->timeouts, "malformed", (json_int_t)s->malformed,
                             "rejected", (json_int_t)s->rejected,
                             "bad_requests", (json_int_t)s->bad_requests);
    return es_response_json(200, root);
}

/* With --api-key: "Authorization: Bearer KEY" or 401. Returns 0 when allowed. */
static int es_check_api_key(embed_server *server, const http_head *head, es_response **resp)
{
    if (server->api_key == NULL)
        return 0;
    const char *auth = head->authorization;
    size_t key_len = strlen(server->api_key);
    if (auth != NULL && strncasecmp(auth, "Bearer ", 7) == 0 && strlen(auth + 7) == key_len &&
        memcmp(auth + 7, server->api_key, key_len) == 0)
        return 0;
    *resp = es_bad_request(server, 401, "invalid_api_key",
                           "chave de API ausente ou inválida (use o cabeçalho Authorization: Bearer)");
    return -1;
}

/* The body must be a JSON object with a non-empty "model". */
static int es_read_body(embed_server *server, const char *body, size_t body_len, es_embed_request *out,
                        es_response **resp)
{
    json_error_t jerr;
    out->root = json_loadb(body, body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (out->root == NULL) {
        *resp = es_bad_request(server, 400, NULL, "o corpo da requisição não é um JSON válido (linha %d, coluna %d)",
                               jerr.line, jerr.column);
        return -1;
    }
    if (!json_is_object(out->root)) {
        *resp = es_bad_request(server, 400, NULL, "o corpo da requisição deve ser um objeto JSON");
        return -1;
    }
    json_t *model = json_object_get(out->root, "model");
    if (!json_is_string(model) || json_string_length(model) == 0) {
        *resp = es_bad_request(server, 400, NULL, "o campo 'model' é obrigatório e deve ser um texto não vazio");
        return -1;
    }
    out->model = json_string_value(model);
    return 0;
}

/* "input": a text or a non-empty list of at most --max-inputs non-empty texts. */
static int es_read_inputs(embed_server *server, es_embed_request *out, es_response **resp)
{
    json_t *input = json_object_get(out->root, "input");
    if (json_is_string(input)) {
        out->inputs = json_array();
        if (out->inputs == NULL || json_array_append(out->inputs, input) != 0)
            return -1; /* out of memory: *resp stays NULL */
    } else if (json_is_array(input)) {
        out->inputs = json_incref(input);
    } else {
        *resp = es_bad_request(server, 400, NULL,
                               "o campo 'input' é obrigatório e deve ser um texto ou uma lista de textos");
        return -1;
    }
    size_t count = json_array_size(out->inputs);
    if (count == 0) {
        *resp = es_bad_request(server, 400, NULL, "o campo 'input' não pode ser uma lista vazia");
        return -1;
    }
    if (count > (size_t)server->max_inputs) {
        *resp = es_bad_request(server, 400, NULL, "excesso de entradas: %zu recebidas, o máximo é %d", count,
                               server->max_inputs);
        return -1;
    }
    for (size_t i = 0; i < count; i++) {
        json_t *item = json_array_get(out->inputs, i);
        if (!json_is_string(item)) {
            *resp = es_bad_request(server, 400, NULL, "a entrada %zu não é um texto (apenas textos são aceitos)", i);
            return -1;
        }
        if (json_string_length(item) == 0) {
            *resp = es_bad_request(server, 400, NULL, "a entrada %zu é um texto vazio", i);
            return -1;
        }
    }
    return 0;
}

/* "encoding_format" and "dimensions" (both optional), then the model name. */
static int es_read_options(embed_server *server, es_embed_request *out, es_response **resp)
{
    json_t *format = json_object_get(out->root, "encoding_format");
    if (format != NULL && !json_is_null(format)) {
        const char *value = json_string_value(format);
        if (value != NULL && strcmp(value, "base64") == 0) {
            out->base64 = 1;
        } else if (value == NULL || strcmp(value, "float") != 0) {
            *resp = es_bad_request(server, 400, NULL, "'encoding_format' deve ser \"float\" ou \"base64\"");
            return -1;
        }
    }
    out->dim = (size_t)server->dim;
    json_t *dimensions = json_object_get(out->root, "dimensions");
    if (dimensions != NULL && !json_is_null(dimensions)) {
        json_int_t wanted = json_is_integer(dimensions) ? json_integer_value(dimensions) : 0;
        if (wanted < 1 || wanted > server->dim) {
            *resp = es_bad_request(server, 400, NULL, "'dimensions' deve ser um inteiro entre 1 e %d", server->dim);
            return -1;
        }
        out->dim = (size_t)wanted;
    }
    if (server->model && strcmp(server->model, out->model) != 0) {
        *resp = es_bad_request(server, 404, "model_not_found", "modelo '%s' não encontrado", out->model);
        return -1;
    }
    return 0;
}

/* Returns the answer, or NULL with *never_answer = 1 for an injected timeout.
 * NULL with *never_answer = 0 means out of memory. */
static es_response *es_route_embeddings(embed_server *server, const http_head *head, const char *body,
                                        size_t body_len, int *never_answer)
{
    es_embed_request req = {0};
    es_response *resp = NULL;
    es_malformed malformed;

    server->stats.requests++;
    if (es_check_api_key(server, head, &resp) != 0 || es_read_body(server, body, body_len, &req, &resp) != 0 ||
        es_read_inputs(server, &req, &resp) != 0 || es_read_options(server, &req, &resp) != 0)
        goto done;
    if (es_faults_inject(server, req.inputs, req.dim, &resp, never_answer, &malformed))
        goto done;
    if (malformed == ES_VALID) {
        server->stats.ok++;
        server->stats.inputs += json_array_size(req.inputs);
    }
    resp = es_build_embeddings(req.inputs, req.model, req.dim, req.base64, server->dense, malformed);

done:
    json_decref(req.inputs);
    json_decref(req.root);
    return resp;
}

/* Copies the client's X-Request-Id into out (size bytes): printable ASCII
 * only, "-" when absent, so a hostile value cannot forge log lines. */
static void es_clean_request_id(const char *id, char *out, size_t size)
{
    size_t n = 0;
    for (const char *p = id ? id : ""; *p && n + 1 < size; p++)
        if (*p > ' ' && *p < 127)
            out[n++] = *p;
    if (n == 0)
        out[n++] = '-';
    out[n] = '\0';
}

/* Gives resp (NULL: never answered) its id and logs a failed request with
 * the client's X-Request-Id (one line; successes are not logged). */
static void es_tag_embeddings_answer(embed_server *server, const http_head *req, es_response *resp)
{
    char theirs[65];
    char ours[32];
    snprintf(ours, sizeof ours, "es-%llu", (unsigned long long)++server->last_request_id);
    if (resp)
        snprintf(resp->request_id, sizeof resp->request_id, "%s", ours);
    if (resp && server->echo_auth && req->authorization) /* a provider that echoes the key */
        es_clean_request_id(req->authorization, resp->request_id, sizeof resp->request_id);
    if (resp && resp->status < 400)
        return;
    es_clean_request_id(req->request_id, theirs, sizeof theirs);
    if (resp)
        fprintf(stderr, "embed-server: POST /v1/embeddings X-Request-Id %s -> HTTP %d (x-request-id %s)\n", theirs,
                resp->status, ours);
    else
        fprintf(stderr, "embed-server: POST /v1/embeddings X-Request-Id %s -> sem resposta (falha injetada)\n",
                theirs);
}

es_response *es_dispatch(embed_server *server, const http_head *req, const char *body, size_t body_len,
                         int *never_answer, int *delayed)
{
    int is_get = strcmp(req->method, "GET") == 0;
    int is_post = strcmp(req->method, "POST") == 0;

    if (is_post && strcmp(req->path, "/v1/embeddings") == 0) {
        *delayed = server->latency_ms > 0;
        es_response *resp = es_route_embeddings(server, req, body, body_len, never_answer);
        if (resp || *never_answer)
            es_tag_embeddings_answer(server, req, resp);
        return resp;
    }
    if (is_get && strcmp(req->path, "/health") == 0) {
        char *ok = strdup("ok");
        return ok ? es_response_new(200, "text/plain; charset=utf-8", ok, 2) : NULL;
    }
    if (is_get && strcmp(req->path, "/stats") == 0)
        return es_route_stats(server);
    if (is_post && strcmp(req->path, "/stats/reset") == 0) {
        memset(&server->stats, 0, sizeof server->stats);
        return es_route_stats(server);
    }
    return es_bad_request(server, 404, "not_found", "rota não encontrada: %s %s", req->method, req->path);
}
