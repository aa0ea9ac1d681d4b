/*
 * embed_server_routes.c: the routes of the embed-server (the embeddings
 * route of its dialect, the dialect's other routes, GET /stats, POST
 * /stats/reset, GET /health, 404 for the rest) and the path every
 * embeddings request takes whatever the dialect: authentication, the JSON
 * body, the inputs, the dialect's own fields, the model, the limits (count,
 * tokens per input, tokens per request) with truncation, the rate limits
 * shared by every client (--rpm, --tpm, --max-concurrency), the injected
 * faults, the answer with the x-ratelimit-* headers. Errors come in the dialect's shape, in pt-BR. Each
 * embeddings answer has its own x-request-id ("es-<n>"); failed ones are
 * logged on stderr with the client's X-Request-Id (never an input text),
 * so a request is findable on both sides.
 */
#include "embed_server_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------- errors ---------- */

static es_response *es_verror(embed_server *server, int status, es_error_kind kind, const char *fmt, va_list ap)
{
    char message[1024];
    vsnprintf(message, sizeof message, fmt, ap);
    return es_response_json(status, server->dialect->answer->error_body(kind, message));
}

es_response *es_error(embed_server *server, int status, es_error_kind kind, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    es_response *resp = es_verror(server, status, kind, fmt, ap);
    va_end(ap);
    return resp;
}

es_response *es_bad_request(embed_server *server, int status, es_error_kind kind, const char *fmt, ...)
{
    va_list ap;
    server->stats.bad_requests++;
    va_start(ap, fmt);
    es_response *resp = es_verror(server, status, kind, fmt, ap);
    va_end(ap);
    return resp;
}

es_response *es_invalid(embed_server *server, const char *fmt, ...)
{
    va_list ap;
    server->stats.bad_requests++;
    va_start(ap, fmt);
    es_response *resp = es_verror(server, server->dialect->body_status, ES_ERR_INVALID, fmt, ap);
    va_end(ap);
    return resp;
}

/* A request over a limit: the provider's text or a pt-BR one naming the
 * limit, what was given and the maximum; counted in size_errors too. */
static es_response *es_size_error(embed_server *server, es_error_kind kind, size_t index, uint64_t given, long max)
{
    const es_dialect *d = server->dialect;
    unsigned long long n = (unsigned long long)given;
    char message[512];
    server->stats.size_errors++;
    if (d->size_message && d->size_message(kind, index, given, max, message, sizeof message))
        return es_bad_request(server, d->size_status, kind, "%s", message);
    if (kind == ES_ERR_TOO_MANY_INPUTS)
        return es_bad_request(server, d->size_status, kind, "excesso de entradas: %llu recebidas, o máximo é %ld", n,
                              max);
    if (kind == ES_ERR_INPUT_TOKENS)
        return es_bad_request(server, d->size_status, kind,
                              "a entrada %zu tem %llu tokens, acima do máximo de %ld tokens por entrada", index, n, max);
    return es_bad_request(server, d->size_status, kind, "o pedido soma %llu tokens%s, acima do máximo de %ld tokens por pedido",
                          n, d->request_tokens_by_bytes ? " (estimados em bytes/4)" : "", max);
}

/* ---------- the common path of an embeddings request ---------- */

/* The body must be a JSON object. */
static int es_read_body(embed_server *server, const char *body, size_t body_len, es_embed_request *out,
                        es_response **resp)
{
    json_error_t jerr;
    out->root = json_loadb(body, body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (out->root == NULL) {
        *resp = es_invalid(server, "o corpo da requisição não é um JSON válido (linha %d, coluna %d)", jerr.line,
                           jerr.column);
        return -1;
    }
    if (!json_is_object(out->root)) {
        *resp = es_invalid(server, "o corpo da requisição deve ser um objeto JSON");
        return -1;
    }
    return 0;
}

/* The dialect's inputs field: a text (unless it takes lists only) or a
 * non-empty list of non-empty texts. Its size goes to max_inputs_seen. */
static int es_read_inputs(embed_server *server, es_embed_request *out, es_response **resp)
{
    const es_dialect *d = server->dialect;
    json_t *input = json_object_get(out->root, d->inputs_field);
    if (json_is_string(input) && !d->inputs_array_only) {
        out->inputs = json_array();
        if (out->inputs == NULL || json_array_append(out->inputs, input) != 0)
            return -1; /* out of memory: *resp stays NULL */
    } else if (json_is_array(input)) {
        out->inputs = json_incref(input);
    } else {
        *resp = es_invalid(server, "o campo '%s' é obrigatório e deve ser %s", d->inputs_field,
                           d->inputs_array_only ? "uma lista de textos" : "um texto ou uma lista de textos");
        return -1;
    }
    size_t count = json_array_size(out->inputs);
    if (count > server->stats.max_inputs_seen)
        server->stats.max_inputs_seen = count;
    if (count == 0) {
        *resp = es_invalid(server, "o campo '%s' não pode ser uma lista vazia", d->inputs_field);
        return -1;
    }
    for (size_t i = 0; i < count; i++) {
        json_t *item = json_array_get(out->inputs, i);
        if (!json_is_string(item) || json_string_length(item) == 0) {
            *resp = es_invalid(server, json_is_string(item) ? "a entrada %zu é um texto vazio"
                                                            : "a entrada %zu não é um texto (apenas textos são aceitos)",
                               i);
            return -1;
        }
    }
    out->texts = json_incref(out->inputs);
    return 0;
}

/* With --model, another model (or Azure deployment) is a 404. */
static int es_check_model(embed_server *server, const es_embed_request *req, es_response **resp)
{
    if (server->model == NULL || req->model == NULL || strcmp(server->model, req->model) == 0)
        return 0;
    *resp = es_bad_request(server, 404, ES_ERR_MODEL, "modelo '%s' não encontrado", req->model);
    return -1;
}

/* Cuts input i (tokens long) to its first (END) or last (START) max
 * tokens in req->texts. Returns 0 or -1 (out of memory). */
static int es_truncate_input(es_embed_request *req, size_t i, uint64_t tokens, uint64_t max)
{
    json_t *item = json_array_get(req->inputs, i);
    const char *text = json_string_value(item);
    size_t len = json_string_length(item), start = 0, end = len;
    if (req->truncate == ES_TRUNCATE_END)
        end = es_token_offset(text, len, max);
    else
        start = es_token_offset(text, len, tokens - max);
    if (req->texts == req->inputs) { /* first cut: texts becomes a copy */
        json_t *copy = json_copy(req->inputs);
        if (copy == NULL)
            return -1;
        json_decref(req->texts);
        req->texts = copy;
    }
    return json_array_set_new(req->texts, i, json_stringn(text + start, end - start));
}

/* The limits of the server: inputs per request, tokens per input (cut
 * when the request asked for truncation) and tokens per request (the
 * tokenizer's count, or ceil(bytes/4) per input for OpenAI and Azure).
 * Sets req->tokens (the usage). Returns 0, or -1 with the error in *resp. */
static int es_check_limits(embed_server *server, es_embed_request *req, es_response **resp)
{
    size_t count = json_array_size(req->inputs);
    uint64_t max_input = (uint64_t)server->max_input_tokens, total = 0, estimate = 0;
    if (server->max_inputs > 0 && count > (size_t)server->max_inputs) {
        *resp = es_size_error(server, ES_ERR_TOO_MANY_INPUTS, 0, count, server->max_inputs);
        return -1;
    }
    for (size_t i = 0; i < count; i++) {
        json_t *item = json_array_get(req->inputs, i);
        size_t len = json_string_length(item);
        uint64_t tokens = es_count_tokens(json_string_value(item), len);
        estimate += (len + 3) / 4;
        if (max_input > 0 && tokens > max_input) {
            if (req->truncate == ES_TRUNCATE_NONE) {
                *resp = es_size_error(server, ES_ERR_INPUT_TOKENS, i, tokens, server->max_input_tokens);
                return -1;
            }
            if (es_truncate_input(req, i, tokens, max_input) != 0)
                return -1; /* out of memory: *resp stays NULL */
            tokens = max_input;
        }
        total += tokens;
    }
    uint64_t asked = server->dialect->request_tokens_by_bytes ? estimate : total;
    if (server->max_request_tokens > 0 && asked > (uint64_t)server->max_request_tokens) {
        *resp = es_size_error(server, ES_ERR_REQUEST_TOKENS, 0, asked, server->max_request_tokens);
        return -1;
    }
    req->tokens = total;
    return 0;
}

/* Returns the answer, or NULL with *never_answer = 1 for an injected timeout.
 * NULL with *never_answer = 0 means out of memory. */
static es_response *es_route_embeddings(embed_server *server, const http_head *head, const char *body,
                                        size_t body_len, int *never_answer)
{
    const es_dialect *d = server->dialect;
    es_embed_request req = {0};
    es_response *resp = NULL;
    es_malformed malformed;

    server->stats.requests++;
    req.dim = (size_t)server->dim;
    if (d->authorize(server, head, &resp) != 0 || es_read_body(server, body, body_len, &req, &resp) != 0 ||
        es_read_inputs(server, &req, &resp) != 0 || d->read_fields(server, head, &req, &resp) != 0 ||
        es_check_model(server, &req, &resp) != 0 || es_check_limits(server, &req, &resp) != 0 ||
        es_limits_admit(server, req.tokens, &resp) != 0)
        goto done;
    if (es_faults_inject(server, req.inputs, req.dim, &resp, never_answer, &malformed))
        goto done;
    if (malformed == ES_VALID) {
        server->stats.ok++;
        server->stats.inputs += json_array_size(req.inputs);
    }
    resp = es_build_embeddings(server, &req, malformed);

done:
    es_limits_tag(server, resp);
    json_decref(req.texts);
    json_decref(req.inputs);
    json_decref(req.root);
    free(req.deployment);
    return resp;
}

es_response *es_embed_parsed(embed_server *server, const http_head *head, json_t *root)
{
    es_embed_request req = {0};
    es_response *resp = NULL;
    req.root = json_incref(root);
    req.dim = (size_t)server->dim;
    if (!json_is_object(root)) {
        resp = es_invalid(server, "o corpo do pedido deve ser um objeto JSON");
        goto done;
    }
    if (es_read_inputs(server, &req, &resp) != 0 || server->dialect->read_fields(server, head, &req, &resp) != 0 ||
        es_check_model(server, &req, &resp) != 0 || es_check_limits(server, &req, &resp) != 0)
        goto done;
    if (server->faults.has_reject_re) {
        for (size_t i = 0; i < json_array_size(req.inputs); i++)
            if (regexec(&server->faults.reject_re, json_string_value(json_array_get(req.inputs, i)), 0, NULL, 0) ==
                0) {
                server->stats.rejected++;
                resp = es_error(server, 400, ES_ERR_REJECTED, "entrada rejeitada: a entrada %zu corresponde ao padrão de rejeição", i);
                goto done;
            }
    }
    resp = es_build_embeddings(server, &req, ES_VALID);

done:
    json_decref(req.texts);
    json_decref(req.inputs);
    json_decref(req.root);
    free(req.deployment);
    return resp;
}

/* ---------- ids and the log ---------- */

/* Copies text into out (size bytes): printable ASCII only, "-" when absent
 * or empty, so a hostile value cannot forge log lines. */
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
    char theirs[65], path[97];
    char ours[32];
    snprintf(ours, sizeof ours, "es-%llu", (unsigned long long)++server->last_request_id);
    if (resp)
        snprintf(resp->request_id, sizeof resp->request_id, "%s", ours);
    if (resp && server->echo_auth && req->authorization) /* a provider that echoes the key */
        es_clean_request_id(req->authorization, resp->request_id, sizeof resp->request_id);
    if (resp && resp->status < 400)
        return;
    es_clean_request_id(req->request_id, theirs, sizeof theirs);
    es_clean_request_id(req->path, path, sizeof path);
    if (resp)
        fprintf(stderr, "embed-server: POST %s X-Request-Id %s -> HTTP %d (x-request-id %s)\n", path, theirs,
                resp->status, ours);
    else
        fprintf(stderr, "embed-server: POST %s X-Request-Id %s -> sem resposta (falha injetada)\n", path, theirs);
}

/* ---------- the other routes ---------- */

static es_response *es_route_stats(embed_server *server)
{
    const embed_server_stats *s = &server->stats;
    json_t *limits = es_limits_stats(server);
    json_t *root = json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:s}", "api",
                             server->dialect->name, "requests", (json_int_t)s->requests, "inputs",
                             (json_int_t)s->inputs, "ok", (json_int_t)s->ok, "errors_5xx", (json_int_t)s->errors_5xx,
                             "rate_limited", (json_int_t)s->rate_limited, "timeouts", (json_int_t)s->timeouts,
                             "malformed", (json_int_t)s->malformed, "rejected", (json_int_t)s->rejected,
                             "bad_requests", (json_int_t)s->bad_requests, "size_errors", (json_int_t)s->size_errors,
                             "max_inputs_seen", (json_int_t)s->max_inputs_seen, "last_input_type",
                             s->last_input_type);
    json_t *batch = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o}", "files_uploaded",
                              (json_int_t)s->files_uploaded, "file_bytes_uploaded", (json_int_t)s->file_bytes_uploaded,
                              "batches_created", (json_int_t)s->batches_created, "batch_polls",
                              (json_int_t)s->batch_polls, "file_downloads", (json_int_t)s->file_downloads,
                              "duplicate_uploads", (json_int_t)s->duplicate_uploads, "file_lists",
                              (json_int_t)s->file_lists, "batch_lists", (json_int_t)s->batch_lists,
                              "batches_by_status", es_batch_status_counts(server));
    if (root == NULL || batch == NULL || limits == NULL || json_object_update(root, batch) != 0 ||
        json_object_update(root, limits) != 0) {
        json_decref(root);
        root = NULL;
    }
    json_decref(batch);
    json_decref(limits);
    return es_response_json(200, root);
}

es_response *es_dispatch(embed_server *server, const http_head *req, const char *body, size_t body_len,
                         int *never_answer, int *delayed)
{
    int is_get = strcmp(req->method, "GET") == 0;
    int is_post = strcmp(req->method, "POST") == 0;
    es_response *resp = NULL;

    if (server->dialect->route(req)) {
        resp = es_route_embeddings(server, req, body, body_len, never_answer);
        *delayed = server->latency_ms > 0 && !(resp && resp->immediate);
        if (resp || *never_answer)
            es_tag_embeddings_answer(server, req, resp);
        return resp;
    }
    if (es_batch_route(server, req, body, body_len, &resp))
        return resp;
    if (server->dialect->extra_route && server->dialect->extra_route(server, req, &resp))
        return resp;
    if (is_get && strcmp(req->path, "/health") == 0) {
        char *ok = strdup("ok");
        return ok ? es_response_new(200, "text/plain; charset=utf-8", ok, 2) : NULL;
    }
    if (is_get && strcmp(req->path, "/stats") == 0)
        return es_route_stats(server);
    if (is_post && strcmp(req->path, "/stats/reset") == 0) {
        memset(&server->stats, 0, sizeof server->stats);
        es_limits_reset_window(&server->limits);
        return es_route_stats(server);
    }
    return es_bad_request(server, 404, ES_ERR_ROUTE, "rota não encontrada: %s %s", req->method, req->path);
}
