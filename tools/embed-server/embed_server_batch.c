/*
 * embed_server_batch.c: OpenAI's Batch API on the embed-server (openai
 * dialect only): POST /v1/files (multipart/form-data, purpose=batch, a
 * JSONL of embeddings requests checked against the limits), GET /v1/files
 * (the list), /v1/files/{id} and /v1/files/{id}/content, POST /v1/batches,
 * GET /v1/batches (the list, paged by after=), /v1/batches/{id}, POST
 * /v1/batches/{id}/cancel. Files live in memory
 * (bounded); a batch is a simulated queue advanced lazily, when read, by the
 * loop's clock: validating, in_progress, finalizing, then completed (or
 * expired, failed, cancelling, cancelled). At its end every request runs
 * through the same path as POST /v1/embeddings (same vectors), with the
 * draws of --batch-error-rate / --batch-expire-rate, and the output and
 * error files are written in an order shuffled by the seed. Nothing of the
 * inputs is logged.
 */
#define _GNU_SOURCE /* memmem */
#include "embed_server_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* The states of a batch, in OpenAI's words (es_batch_status_names). */
typedef enum es_batch_status {
    ES_BATCH_VALIDATING = 0, /* just created */
    ES_BATCH_FAILED,         /* validation failed (errors says why) */
    ES_BATCH_IN_PROGRESS,    /* running */
    ES_BATCH_FINALIZING,     /* writing its files */
    ES_BATCH_COMPLETED,      /* done: output (and error) file */
    ES_BATCH_EXPIRED,        /* done, some requests expired */
    ES_BATCH_CANCELLING,     /* cancel asked */
    ES_BATCH_CANCELLED,      /* cancelled */
    ES_BATCH_STATUS_COUNT    /* number of states */
} es_batch_status;

static const char *const es_batch_status_names[ES_BATCH_STATUS_COUNT] = {
    "validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling", "cancelled",
};

/* One file kept in memory. */
typedef struct es_file {
    char id[32];          /* "file-<n>" */
    char *filename;       /* as uploaded, or the name given to an output (malloc'd) */
    const char *purpose;  /* "batch", "batch_output" (static) */
    char *data;           /* its bytes (malloc'd) */
    size_t len;           /* bytes of data */
    long long created_at; /* unix seconds */
    struct es_file *next; /* next file of the store */
} es_file;

/* One batch. */
typedef struct es_batch {
    char id[32];              /* "batch_<n>" */
    const es_file *input;     /* its input file (files are never deleted) */
    char output_file_id[32];  /* "" until it has one */
    char error_file_id[32];   /* "" until it has one */
    es_batch_status status;   /* where it is */
    uint64_t seq;             /* n of its id: seeds its draws */
    uint64_t created_ms;      /* the loop's clock at creation */
    uint64_t cancel_ms;       /* the loop's clock when cancel was asked (0: never) */
    long long at[ES_BATCH_STATUS_COUNT]; /* unix seconds it entered each state (0: never) */
    json_t *errors;           /* why it fails ({"object":"list","data":[...]}), NULL when it does not */
    char *model;              /* the model of its first line (malloc'd, "" for none) */
    uint64_t tokens;          /* ceil(bytes/4) of its inputs (enqueued until it ends) */
    size_t total;             /* requests */
    size_t completed;         /* requests in the output file */
    size_t failed;            /* requests in the error file */
    struct es_batch *next;    /* next batch of the store */
} es_batch;

struct es_batch_store {
    es_file *files;              /* every file, newest first */
    es_batch *batches;           /* every batch, newest first */
    size_t stored_bytes;         /* bytes of all files */
    uint64_t next_id;            /* n of the last id given */
    uint64_t latency_ms;         /* --batch-latency-s in ms */
    double error_rate;           /* --batch-error-rate */
    double expire_rate;          /* --batch-expire-rate */
    int fail;                    /* --batch-fail */
    size_t max_file_bytes;       /* --batch-max-file-bytes */
    size_t max_requests;         /* --batch-max-requests */
    size_t max_inputs;           /* --batch-max-inputs */
    uint64_t max_enqueued_tokens;/* --batch-max-enqueued-tokens (0: no cap) */
    size_t max_store_bytes;      /* --batch-max-store-bytes */
};

es_batch_store *es_batch_store_new(const embed_server_opts *opts)
{
    es_batch_store *store = calloc(1, sizeof *store);
    if (store == NULL)
        return NULL;
    store->latency_ms = (uint64_t)(opts->batch_latency_s * 1000.0 + 0.5);
    store->error_rate = opts->batch_error_rate;
    store->expire_rate = opts->batch_expire_rate;
    store->fail = opts->batch_fail;
    store->max_file_bytes = (size_t)opts->batch_max_file_bytes;
    store->max_requests = (size_t)opts->batch_max_requests;
    store->max_inputs = (size_t)opts->batch_max_inputs;
    store->max_enqueued_tokens = (uint64_t)opts->batch_max_enqueued_tokens;
    store->max_store_bytes = (size_t)opts->batch_max_store_bytes;
    return store;
}

void es_batch_store_free(es_batch_store *store)
{
    if (store == NULL)
        return;
    for (es_file *f = store->files, *next; f; f = next) {
        next = f->next;
        free(f->filename);
        free(f->data);
        free(f);
    }
    for (es_batch *b = store->batches, *next; b; b = next) {
        next = b->next;
        json_decref(b->errors);
        free(b->model);
        free(b);
    }
    free(store);
}

/* ---------- multipart/form-data ---------- */

/* The boundary of a multipart/form-data Content-Type into out. 0 or -1. */
static int es_multipart_boundary(const char *content_type, char *out, size_t size)
{
    static const char kind[] = "multipart/form-data";
    if (content_type == NULL || strncasecmp(content_type, kind, sizeof kind - 1) != 0)
        return -1;
    const char *p = strcasestr(content_type, "boundary=");
    if (p == NULL)
        return -1;
    p += 9;
    int quoted = *p == '"';
    p += quoted;
    size_t n = quoted ? strcspn(p, "\"") : strcspn(p, "; \t");
    if (n == 0 || n > 70 || n + 1 > size)
        return -1;
    memcpy(out, p, n);
    out[n] = '\0';
    return 0;
}

/* The value of param="..." in a Content-Disposition line [line, end) into
 * out ("" when absent). Returns 1 when present. */
static int es_disposition_param(const char *line, const char *end, const char *param, char *out, size_t size)
{
    size_t plen = strlen(param);
    out[0] = '\0';
    for (const char *p = line; p + plen + 2 < end; p++) {
        if ((p[-1] != ';' && p[-1] != ' ') || strncasecmp(p, param, plen) != 0 || p[plen] != '=' || p[plen + 1] != '"')
            continue;
        const char *v = p + plen + 2;
        const char *q = memchr(v, '"', (size_t)(end - v));
        if (q == NULL)
            return 0;
        size_t n = (size_t)(q - v) < size - 1 ? (size_t)(q - v) : size - 1;
        memcpy(out, v, n);
        out[n] = '\0';
        return 1;
    }
    return 0;
}

/* Reads the name and filename of the part whose headers are [p, end). */
static void es_part_names(const char *p, const char *end, char *name, size_t name_size, es_part *part)
{
    name[0] = '\0';
    part->filename[0] = '\0';
    while (p < end) {
        const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
        if (eol == NULL)
            eol = end;
        if ((size_t)(eol - p) > 20 && strncasecmp(p, "Content-Disposition:", 20) == 0) {
            es_disposition_param(p + 20, eol, "name", name, name_size);
            es_disposition_param(p + 20, eol, "filename", part->filename, sizeof part->filename);
        }
        p = eol + 2;
    }
}

int es_multipart_find(const char *content_type, const char *body, size_t len, const char *name, es_part *out)
{
    char boundary[80], delim[84], part_name[128];
    const char *end = body + len;
    if (es_multipart_boundary(content_type, boundary, sizeof boundary) != 0)
        return -1;
    size_t dlen = (size_t)snprintf(delim, sizeof delim, "\r\n--%s", boundary);
    const char *p;
    if (len >= dlen - 2 && memcmp(body, delim + 2, dlen - 2) == 0) {
        p = body + dlen - 2; /* the first delimiter opens the body, without its CRLF */
    } else {
        p = memmem(body, len, delim, dlen);
        if (p == NULL)
            return -1;
        p += dlen;
    }
    while (p + 2 <= end && memcmp(p, "\r\n", 2) == 0) {
        const char *headers = p + 2;
        const char *blank = memmem(headers, (size_t)(end - headers), "\r\n\r\n", 4);
        if (blank == NULL)
            return -1;
        const char *data = blank + 4;
        const char *next = memmem(data, (size_t)(end - data), delim, dlen);
        if (next == NULL)
            return -1;
        es_part_names(headers, blank + 2, part_name, sizeof part_name, out);
        if (strcmp(part_name, name) == 0) {
            out->data = data;
            out->len = (size_t)(next - data);
            return 0;
        }
        p = next + dlen; /* "--" after it ends the body */
    }
    return -1;
}

/* ---------- answers ---------- */

/* An OpenAI-style error with code, counted as a bad request. */
static es_response *es_batch_error(embed_server *server, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static es_response *es_batch_error(embed_server *server, int status, const char *code, const char *fmt, ...)
{
    char message[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    server->stats.bad_requests++;
    return es_response_json(status, json_pack("{s:{s:s, s:s, s:n, s:s}}", "error", "message", message, "type",
                                              "invalid_request_error", "param", "code", code));
}

static es_response *es_file_answer(const es_file *f)
{
    return es_response_json(200, json_pack("{s:s, s:s, s:I, s:I, s:s, s:s}", "id", f->id, "object", "file", "bytes",
                                           (json_int_t)f->len, "created_at", (json_int_t)f->created_at, "filename",
                                           f->filename, "purpose", f->purpose));
}

/* An id string or JSON null when id is "". */
static json_t *es_id_or_null(const char *id)
{
    return id[0] ? json_string(id) : json_null();
}

/* A unix time or JSON null when 0. */
static json_t *es_time_or_null(long long at)
{
    return at ? json_integer(at) : json_null();
}

static json_t *es_batch_json(const es_batch *b)
{
    long long created = b->at[ES_BATCH_VALIDATING];
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:o, s:o, s:o, s:o, s:o, s:o, s:I, s:o, s:o, s:O?,"
                     " s:{s:I, s:I, s:I}}",
                     "id", b->id, "object", "batch", "endpoint", "/v1/embeddings", "input_file_id", b->input->id,
                     "completion_window", "24h", "status", es_batch_status_names[b->status], "created_at",
                     (json_int_t)created, "in_progress_at", es_time_or_null(b->at[ES_BATCH_IN_PROGRESS]),
                     "finalizing_at", es_time_or_null(b->at[ES_BATCH_FINALIZING]), "completed_at",
                     es_time_or_null(b->at[ES_BATCH_COMPLETED]), "failed_at", es_time_or_null(b->at[ES_BATCH_FAILED]),
                     "expired_at", es_time_or_null(b->at[ES_BATCH_EXPIRED]), "cancelled_at",
                     es_time_or_null(b->at[ES_BATCH_CANCELLED]), "expires_at", (json_int_t)(created + 86400),
                     "output_file_id", es_id_or_null(b->output_file_id), "error_file_id",
                     es_id_or_null(b->error_file_id), "errors", b->errors, "request_counts", "total",
                     (json_int_t)b->total, "completed", (json_int_t)b->completed, "failed", (json_int_t)b->failed);
}

static es_response *es_batch_answer(const es_batch *b)
{
    json_t *root = es_batch_json(b);
    if (root && b->errors == NULL)
        json_object_set_new(root, "errors", json_null());
    return es_response_json(200, root);
}

/* ---------- the store ---------- */

/* Stores data (taken) as a new file; NULL when out of memory (data freed). */
static es_file *es_file_add(es_batch_store *store, const char *purpose, const char *filename, char *data,
                            size_t len)
{
    es_file *f = calloc(1, sizeof *f);
    char *name = strdup(filename);
    if (f == NULL || name == NULL) {
        free(f);
        free(name);
        free(data);
        return NULL;
    }
    snprintf(f->id, sizeof f->id, "file-%llu", (unsigned long long)++store->next_id);
    f->filename = name;
    f->purpose = purpose;
    f->data = data;
    f->len = len;
    f->created_at = (long long)time(NULL);
    f->next = store->files;
    store->files = f;
    store->stored_bytes += len;
    return f;
}

static es_file *es_file_find(es_batch_store *store, const char *id, size_t id_len)
{
    for (es_file *f = store->files; f; f = f->next)
        if (strlen(f->id) == id_len && memcmp(f->id, id, id_len) == 0)
            return f;
    return NULL;
}

static es_batch *es_batch_find(es_batch_store *store, const char *id, size_t id_len)
{
    for (es_batch *b = store->batches; b; b = b->next)
        if (strlen(b->id) == id_len && memcmp(b->id, id, id_len) == 0)
            return b;
    return NULL;
}

/* splitmix64 step over *state: a double uniform in [0, 1). */
static double es_batch_random(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

/* ---------- the lines of an input file ---------- */

/* The next line of [*p, end) (without its "\n") into *line / *len; 0 at
 * the end. A last empty line is not a line. */
static int es_next_line(const char **p, const char *end, const char **line, size_t *len)
{
    if (*p >= end)
        return 0;
    const char *eol = memchr(*p, '\n', (size_t)(end - *p));
    *line = *p;
    *len = eol ? (size_t)(eol - *p) : (size_t)(end - *p);
    *p = eol ? eol + 1 : end;
    if (*len > 0 && (*line)[*len - 1] == '\r')
        (*len)--;
    return 1;
}

/* What the checks of an input file counted. */
typedef struct es_file_counts {
    size_t requests; /* lines */
    size_t inputs;   /* embedding inputs */
    uint64_t tokens; /* ceil(bytes/4) of every input */
} es_file_counts;

/* Counts the inputs of body.input (a text or a list) into counts. */
static void es_count_inputs(json_t *input, es_file_counts *counts)
{
    if (json_is_string(input)) {
        counts->inputs++;
        counts->tokens += (json_string_length(input) + 3) / 4;
        return;
    }
    for (size_t i = 0; i < json_array_size(input); i++) {
        json_t *item = json_array_get(input, i);
        counts->inputs++;
        counts->tokens += json_is_string(item) ? (json_string_length(item) + 3) / 4 : 1;
    }
}

/* Checks one line (number n from 1): a JSON object with a new custom_id,
 * method POST, url /v1/embeddings and a body. NULL, or the pt-BR reason in
 * why (then the returned text is why). */
static const char *es_check_line(json_t *line, json_t *seen, size_t n, es_file_counts *counts, char *why,
                                 size_t size)
{
    json_t *custom_id = json_object_get(line, "custom_id");
    json_t *body = json_object_get(line, "body");
    const char *method = json_string_value(json_object_get(line, "method"));
    const char *url = json_string_value(json_object_get(line, "url"));
    if (!json_is_string(custom_id) || json_string_length(custom_id) == 0)
        snprintf(why, size, "a linha %zu não tem 'custom_id' (um texto não vazio)", n);
    else if (json_object_get(seen, json_string_value(custom_id)))
        snprintf(why, size, "a linha %zu repete o custom_id de uma linha anterior", n);
    else if (method == NULL || strcmp(method, "POST") != 0)
        snprintf(why, size, "a linha %zu deve ter \"method\": \"POST\"", n);
    else if (url == NULL || strcmp(url, "/v1/embeddings") != 0)
        snprintf(why, size, "a linha %zu tem 'url' diferente de /v1/embeddings (a única aceita)", n);
    else if (!json_is_object(body))
        snprintf(why, size, "a linha %zu não tem 'body' (um objeto)", n);
    else {
        json_object_set(seen, json_string_value(custom_id), json_true());
        es_count_inputs(json_object_get(body, "input"), counts);
        return NULL;
    }
    return why;
}

/* Checks every line of data against the limits. Returns NULL, or the
 * refusal (counted as a bad request). */
static es_response *es_check_file(embed_server *server, const char *data, size_t len, es_file_counts *counts)
{
    es_batch_store *store = server->batches;
    const char *p = data, *end = data + len, *line;
    size_t line_len;
    char why[256];
    json_t *seen = json_object();
    es_response *resp = NULL;
    while (resp == NULL && es_next_line(&p, end, &line, &line_len)) {
        json_t *root = json_loadb(line, line_len, JSON_REJECT_DUPLICATES, NULL);
        if (++counts->requests > store->max_requests)
            resp = es_batch_error(server, 400, "too_many_requests_in_file",
                                  "o arquivo tem mais de %zu pedidos (linhas)", store->max_requests);
        else if (!json_is_object(root))
            resp = es_batch_error(server, 400, "invalid_json_line", "a linha %zu não é um objeto JSON válido",
                                  counts->requests);
        else if (es_check_line(root, seen, counts->requests, counts, why, sizeof why))
            resp = es_batch_error(server, 400, "invalid_request", "%s", why);
        else if (counts->inputs > store->max_inputs)
            resp = es_batch_error(server, 400, "too_many_inputs",
                                  "o arquivo tem mais de %zu entradas de embedding somadas", store->max_inputs);
        json_decref(root);
    }
    json_decref(seen);
    if (resp == NULL && counts->requests == 0)
        resp = es_batch_error(server, 400, "empty_file", "o arquivo não tem nenhum pedido");
    return resp;
}

/* ---------- POST /v1/files ---------- */

/* 1 when an earlier upload (purpose "batch") had filename. */
static int es_filename_seen(const es_batch_store *store, const char *filename)
{
    for (const es_file *f = store->files; f; f = f->next)
        if (strcmp(f->purpose, "batch") == 0 && strcmp(f->filename, filename) == 0)
            return 1;
    return 0;
}

static es_response *es_route_upload(embed_server *server, const http_head *head, const char *body, size_t len)
{
    es_batch_store *store = server->batches;
    es_part purpose, file;
    es_file_counts counts = {0};
    if (es_multipart_find(head->content_type, body, len, "purpose", &purpose) != 0 ||
        es_multipart_find(head->content_type, body, len, "file", &file) != 0)
        return es_batch_error(server, 400, "invalid_multipart",
                              "o corpo deve ser multipart/form-data com as partes 'purpose' e 'file'");
    if (purpose.len != 5 || memcmp(purpose.data, "batch", 5) != 0)
        return es_batch_error(server, 400, "invalid_purpose", "'purpose' deve ser \"batch\"");
    if (file.len > store->max_file_bytes)
        return es_batch_error(server, 400, "file_too_large", "o arquivo tem %zu bytes, acima do máximo de %zu",
                              file.len, store->max_file_bytes);
    if (store->stored_bytes + file.len > store->max_store_bytes)
        return es_batch_error(server, 400, "storage_full",
                              "o embed-server guarda no máximo %zu bytes de arquivos em memória "
                              "(--batch-max-store-bytes); já guarda %zu",
                              store->max_store_bytes, store->stored_bytes);
    es_response *refused = es_check_file(server, file.data, file.len, &counts);
    if (refused)
        return refused;
    char *copy = malloc(file.len + 1);
    if (copy == NULL)
        return NULL;
    memcpy(copy, file.data, file.len);
    const char *filename = file.filename[0] ? file.filename : "batch.jsonl";
    int duplicate = es_filename_seen(store, filename);
    es_file *f = es_file_add(store, "batch", filename, copy, file.len);
    if (f == NULL)
        return NULL;
    server->stats.duplicate_uploads += (uint64_t)duplicate;
    server->stats.files_uploaded++;
    server->stats.file_bytes_uploaded += file.len;
    return es_file_answer(f);
}

/* ---------- running a batch ---------- */

/* The result lines of one batch while they are made. */
typedef struct es_results {
    char **out;        /* output lines (malloc'd, with "\n") */
    size_t out_count;  /* lines in out */
    char **err;        /* error lines (malloc'd, with "\n") */
    size_t err_count;  /* lines in err */
} es_results;

/* The result line of one request that ran: its answer as the body. */
static char *es_result_line(embed_server *server, const char *custom_id, const es_response *resp)
{
    char *id = es_json_quote(custom_id);
    unsigned long long n = (unsigned long long)++server->last_request_id;
    char *line = id ? es_format_alloc("{\"id\":\"batch_req_%llu\",\"custom_id\":%s,\"response\":{\"status_code\":%d,"
                                      "\"request_id\":\"es-%llu\",\"body\":%.*s},\"error\":null}\n",
                                      n, id, resp->status, n, (int)resp->body_len, resp->body)
                  : NULL;
    free(id);
    return line;
}

static char *es_expired_line(embed_server *server, const char *custom_id)
{
    char *id = es_json_quote(custom_id);
    char *line = id ? es_format_alloc("{\"id\":\"batch_req_%llu\",\"custom_id\":%s,\"response\":null,\"error\":"
                                      "{\"code\":\"batch_expired\",\"message\":\"Este pedido não foi executado "
                                      "antes de o lote expirar.\"}}\n",
                                      (unsigned long long)++server->last_request_id, id)
                    : NULL;
    free(id);
    return line;
}

/* Runs one line (already checked at upload) and files its result line.
 * Returns 0, or -1 when out of memory. */
static int es_run_line(embed_server *server, json_t *line, uint64_t *rng, es_results *res, int *expired)
{
    static const http_head batch_head = {.method = "POST", .path = (char *)"/v1/embeddings"};
    const char *custom_id = json_string_value(json_object_get(line, "custom_id"));
    es_batch_store *store = server->batches;
    char *text = NULL;
    int ok = 0;
    if (store->expire_rate > 0 && es_batch_random(rng) < store->expire_rate) {
        *expired = 1;
        text = es_expired_line(server, custom_id);
    } else {
        es_response *resp;
        if (store->error_rate > 0 && es_batch_random(rng) < store->error_rate)
            resp = es_error(server, 400, ES_ERR_INVALID, "erro injetado (--batch-error-rate)");
        else
            resp = es_embed_parsed(server, &batch_head, json_object_get(line, "body"));
        if (resp == NULL)
            return -1;
        ok = resp->status == 200;
        text = es_result_line(server, custom_id, resp);
        es_response_free(resp);
    }
    if (text == NULL)
        return -1;
    if (ok)
        res->out[res->out_count++] = text;
    else
        res->err[res->err_count++] = text;
    return 0;
}

/* Shuffles lines[0..n) (Fisher-Yates by rng), joins them into a new file
 * (its id into id_out), frees them. Returns 0 or -1 (out of memory). */
static int es_write_result_file(es_batch_store *store, es_batch *b, char **lines, size_t n, const char *kind,
                                uint64_t *rng, char *id_out)
{
    es_buf buf = {0};
    char name[64];
    int rc = 0;
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)(es_batch_random(rng) * (double)i);
        char *t = lines[i - 1];
        lines[i - 1] = lines[j];
        lines[j] = t;
    }
    for (size_t i = 0; i < n; i++) {
        if (rc == 0 && es_buf_append(&buf, lines[i], strlen(lines[i])) != 0)
            rc = -1;
        free(lines[i]);
    }
    if (rc != 0 || n == 0) {
        free(buf.data);
        return rc;
    }
    snprintf(name, sizeof name, "%s_%s.jsonl", b->id, kind);
    es_file *f = es_file_add(store, "batch_output", name, buf.data, buf.len);
    if (f == NULL)
        return -1;
    snprintf(id_out, 32, "%s", f->id);
    return 0;
}

/* Runs every request of b and writes its files; the status becomes
 * completed, or expired when some request expired. */
static void es_batch_finish(embed_server *server, es_batch *b, long long now)
{
    uint64_t rng = server->seed ^ (b->seq * 0xD1B54A32D192ED03ULL);
    es_results res = {calloc(b->total + 1, sizeof(char *)), 0, calloc(b->total + 1, sizeof(char *)), 0};
    const char *p = b->input->data, *end = p + b->input->len, *text;
    size_t len;
    int expired = 0, rc = res.out && res.err ? 0 : -1;
    while (rc == 0 && es_next_line(&p, end, &text, &len)) {
        json_t *line = json_loadb(text, len, 0, NULL);
        rc = line ? es_run_line(server, line, &rng, &res, &expired) : -1;
        json_decref(line);
    }
    b->completed = res.out_count;
    b->failed = res.err_count;
    if (es_write_result_file(server->batches, b, res.out, res.out_count, "output", &rng, b->output_file_id) != 0 ||
        es_write_result_file(server->batches, b, res.err, res.err_count, "error", &rng, b->error_file_id) != 0)
        rc = -1;
    free(res.out);
    free(res.err);
    if (rc != 0 && b->errors == NULL)
        b->errors = json_pack("{s:s, s:[{s:s, s:s}]}", "object", "list", "data", "code", "server_error", "message",
                              "memória insuficiente no embed-server ao executar o lote");
    b->status = rc != 0 ? ES_BATCH_FAILED : expired ? ES_BATCH_EXPIRED : ES_BATCH_COMPLETED;
    b->at[b->status] = now;
}

/* Moves b along the queue by the loop's clock. */
static void es_batch_advance(embed_server *server, es_batch *b)
{
    uint64_t latency = server->batches->latency_ms;
    uint64_t elapsed = uv_now(server->loop) - b->created_ms;
    long long now = (long long)time(NULL);
    if (b->status == ES_BATCH_VALIDATING && elapsed >= latency / 4) {
        b->status = b->errors ? ES_BATCH_FAILED : ES_BATCH_IN_PROGRESS;
        b->at[b->status] = now;
    }
    if (b->status == ES_BATCH_IN_PROGRESS && elapsed >= latency * 9 / 10) {
        b->status = ES_BATCH_FINALIZING;
        b->at[b->status] = now;
    }
    if (b->status == ES_BATCH_FINALIZING && elapsed >= latency)
        es_batch_finish(server, b, now);
    if (b->status == ES_BATCH_CANCELLING && uv_now(server->loop) - b->cancel_ms >= latency / 4) {
        b->status = ES_BATCH_CANCELLED;
        b->at[b->status] = now;
    }
}

/* 1 while b holds enqueued tokens. */
static int es_batch_unfinished(const es_batch *b)
{
    return b->status == ES_BATCH_VALIDATING || b->status == ES_BATCH_IN_PROGRESS ||
           b->status == ES_BATCH_FINALIZING || b->status == ES_BATCH_CANCELLING;
}

/* ---------- POST /v1/batches ---------- */

/* Why a new batch fails (the errors object), NULL when it does not. */
static json_t *es_batch_failure(embed_server *server, const es_batch *nb)
{
    es_batch_store *store = server->batches;
    uint64_t enqueued = 0;
    if (store->fail)
        return json_pack("{s:s, s:[{s:s, s:s, s:n, s:n}]}", "object", "list", "data", "code", "batch_failed",
                         "message", "falha de lote injetada (--batch-fail)", "param", "line");
    for (es_batch *b = store->batches; b; b = b->next) {
        es_batch_advance(server, b);
        if (es_batch_unfinished(b) && b->errors == NULL && strcmp(b->model, nb->model) == 0)
            enqueued += b->tokens;
    }
    if (store->max_enqueued_tokens == 0 || enqueued + nb->tokens <= store->max_enqueued_tokens)
        return NULL;
    char message[256];
    snprintf(message, sizeof message,
             "limite de tokens enfileirados atingido para o modelo '%s': %llu na fila + %llu deste lote > %llu",
             nb->model, (unsigned long long)enqueued, (unsigned long long)nb->tokens,
             (unsigned long long)store->max_enqueued_tokens);
    return json_pack("{s:s, s:[{s:s, s:s, s:n, s:n}]}", "object", "list", "data", "code", "token_limit_exceeded",
                     "message", message, "param", "line");
}

/* The model of the first line of f ("" for none), malloc'd. */
static char *es_file_model(const es_file *f)
{
    const char *p = f->data, *line;
    size_t len;
    char *model = NULL;
    if (es_next_line(&p, f->data + f->len, &line, &len)) {
        json_t *root = json_loadb(line, len, 0, NULL);
        const char *name = json_string_value(json_object_get(json_object_get(root, "body"), "model"));
        model = strdup(name ? name : "");
        json_decref(root);
    }
    return model ? model : strdup("");
}

/* The checked fields of a POST /v1/batches body: its input file, or NULL
 * with the refusal in *resp. */
static es_file *es_batch_request_file(embed_server *server, const char *body, size_t len, es_response **resp)
{
    json_t *root = json_loadb(body, len, 0, NULL);
    const char *file_id = json_string_value(json_object_get(root, "input_file_id"));
    const char *endpoint = json_string_value(json_object_get(root, "endpoint"));
    const char *window = json_string_value(json_object_get(root, "completion_window"));
    es_file *f = file_id ? es_file_find(server->batches, file_id, strlen(file_id)) : NULL;
    if (!json_is_object(root) || file_id == NULL)
        *resp = es_batch_error(server, 400, "invalid_request", "o corpo deve ser um objeto JSON com 'input_file_id'");
    else if (endpoint == NULL || strcmp(endpoint, "/v1/embeddings") != 0)
        *resp = es_batch_error(server, 400, "invalid_request", "'endpoint' deve ser \"/v1/embeddings\"");
    else if (window == NULL || strcmp(window, "24h") != 0)
        *resp = es_batch_error(server, 400, "invalid_request", "'completion_window' deve ser \"24h\"");
    else if (f == NULL || strcmp(f->purpose, "batch") != 0)
        *resp = es_batch_error(server, 404, "file_not_found", "arquivo de entrada '%s' não encontrado", file_id);
    json_decref(root);
    return *resp ? NULL : f;
}

static es_response *es_route_create(embed_server *server, const char *body, size_t len)
{
    es_batch_store *store = server->batches;
    es_response *resp = NULL;
    es_file *input = es_batch_request_file(server, body, len, &resp);
    if (input == NULL)
        return resp;
    es_file_counts counts = {0};
    es_check_file(server, input->data, input->len, &counts); /* checked at upload: only counts */
    es_batch *b = calloc(1, sizeof *b);
    if (b == NULL || (b->model = es_file_model(input)) == NULL) {
        free(b);
        return NULL;
    }
    b->seq = ++store->next_id;
    snprintf(b->id, sizeof b->id, "batch_%llu", (unsigned long long)b->seq);
    b->input = input;
    b->total = counts.requests;
    b->tokens = counts.tokens;
    b->created_ms = uv_now(server->loop);
    b->at[ES_BATCH_VALIDATING] = (long long)time(NULL);
    b->errors = es_batch_failure(server, b);
    b->next = store->batches;
    store->batches = b;
    server->stats.batches_created++;
    return es_batch_answer(b);
}

/* ---------- GET /v1/files, GET /v1/batches (lists, newest first) ---------- */

/* The limit= of a list's query: fallback when absent, 0 when it is not an
 * integer in [1, max]. */
static long es_list_limit(const char *query, long fallback, long max)
{
    const char *v = es_query_value(query, "limit");
    if (v == NULL)
        return fallback;
    char *end;
    long n = strtol(v, &end, 10);
    if (end == v || (*end != '\0' && *end != '&') || n < 1 || n > max)
        return 0;
    return n;
}

/* 1 when the query's name= is value (absent or empty: 1 when value is NULL). */
static int es_query_is(const char *query, const char *name, const char *value)
{
    const char *v = es_query_value(query, name);
    if (v == NULL || value == NULL)
        return v == value;
    size_t len = strcspn(v, "&");
    return strlen(value) == len && memcmp(v, value, len) == 0;
}

/* The after= of a list's query (a pointer into it, *len bytes), NULL when absent. */
static const char *es_list_after(const char *query, size_t *len)
{
    const char *v = es_query_value(query, "after");
    *len = v ? strcspn(v, "&") : 0;
    return v;
}

/* {"object":"list","data":data,"has_more":...} plus first_id/last_id when with_ids. */
static es_response *es_list_answer(json_t *data, int has_more, int with_ids)
{
    json_t *root = json_pack("{s:s, s:o, s:b}", "object", "list", "data", data, "has_more", has_more);
    if (root && with_ids) {
        size_t n = json_array_size(data);
        json_t *first = n ? json_object_get(json_array_get(data, 0), "id") : NULL;
        json_t *last = n ? json_object_get(json_array_get(data, n - 1), "id") : NULL;
        json_object_set(root, "first_id", first ? first : json_null());
        json_object_set(root, "last_id", last ? last : json_null());
    }
    return es_response_json(200, root);
}

/* GET /v1/files?purpose=&limit=&after=: files newest first (limit up to 10000). */
static es_response *es_route_list_files(embed_server *server, const char *query)
{
    size_t after_len, count = 0;
    const char *after = es_list_after(query, &after_len);
    const char *purpose = es_query_value(query, "purpose");
    long limit = es_list_limit(query, 10000, 10000);
    if (limit == 0)
        return es_batch_error(server, 400, "invalid_limit", "'limit' deve ser um inteiro de 1 a 10000");
    const es_file *f = server->batches->files;
    if (after && (f = es_file_find(server->batches, after, after_len)) != NULL)
        f = f->next;
    json_t *data = json_array();
    for (; data && f && count < (size_t)limit; f = f->next) {
        if (purpose && !es_query_is(query, "purpose", f->purpose))
            continue;
        json_array_append_new(data, json_pack("{s:s, s:s, s:I, s:I, s:s, s:s}", "id", f->id, "object", "file",
                                              "bytes", (json_int_t)f->len, "created_at", (json_int_t)f->created_at,
                                              "filename", f->filename, "purpose", f->purpose));
        count++;
    }
    while (f && purpose && !es_query_is(query, "purpose", f->purpose))
        f = f->next;
    server->stats.file_lists++;
    return data ? es_list_answer(data, f != NULL, 0) : NULL;
}

/* GET /v1/batches?limit=&after=: batches newest first (limit 20 by default, up to 100). */
static es_response *es_route_list_batches(embed_server *server, const char *query)
{
    size_t after_len, count = 0;
    const char *after = es_list_after(query, &after_len);
    long limit = es_list_limit(query, 20, 100);
    if (limit == 0)
        return es_batch_error(server, 400, "invalid_limit", "'limit' deve ser um inteiro de 1 a 100");
    es_batch *b = server->batches->batches;
    if (after && (b = es_batch_find(server->batches, after, after_len)) != NULL)
        b = b->next;
    json_t *data = json_array();
    for (; data && b && count < (size_t)limit; b = b->next, count++) {
        es_batch_advance(server, b);
        json_t *item = es_batch_json(b);
        if (item && b->errors == NULL)
            json_object_set_new(item, "errors", json_null());
        json_array_append_new(data, item);
    }
    server->stats.batch_lists++;
    return data ? es_list_answer(data, b != NULL, 1) : NULL;
}

/* ---------- the routes ---------- */

/* 1 when path is prefix + an id + suffix; the id into *id / *id_len. */
static int es_path_id(const char *path, const char *prefix, const char *suffix, const char **id, size_t *id_len)
{
    size_t plen = strlen(prefix), slen = strlen(suffix), len = strlen(path);
    if (len <= plen + slen || strncmp(path, prefix, plen) != 0 || strcmp(path + len - slen, suffix) != 0)
        return 0;
    *id = path + plen;
    *id_len = len - plen - slen;
    return memchr(*id, '/', *id_len) == NULL;
}

static es_response *es_route_cancel(embed_server *server, es_batch *b)
{
    es_batch_advance(server, b);
    if (b->status != ES_BATCH_VALIDATING && b->status != ES_BATCH_IN_PROGRESS && b->status != ES_BATCH_FINALIZING)
        return es_batch_error(server, 400, "invalid_state", "o lote '%s' está '%s' e não pode ser cancelado", b->id,
                              es_batch_status_names[b->status]);
    b->status = ES_BATCH_CANCELLING;
    b->at[ES_BATCH_CANCELLING] = (long long)time(NULL);
    b->cancel_ms = uv_now(server->loop);
    return es_batch_answer(b);
}

/* GET /v1/files/{id}[/content], GET /v1/batches/{id}, POST .../cancel. */
static int es_route_by_id(embed_server *server, const http_head *head, int is_get, es_response **resp)
{
    const char *id;
    size_t len;
    es_file *f;
    es_batch *b;
    if (is_get && es_path_id(head->path, "/v1/files/", "/content", &id, &len)) {
        if ((f = es_file_find(server->batches, id, len)) == NULL)
            return *resp = es_batch_error(server, 404, "file_not_found", "arquivo não encontrado"), 1;
        char *copy = malloc(f->len + 1);
        if (copy)
            memcpy(copy, f->data, f->len);
        server->stats.file_downloads++;
        *resp = copy ? es_response_new(200, "application/octet-stream", copy, f->len) : NULL;
        return 1;
    }
    if (is_get && es_path_id(head->path, "/v1/files/", "", &id, &len)) {
        f = es_file_find(server->batches, id, len);
        *resp = f ? es_file_answer(f) : es_batch_error(server, 404, "file_not_found", "arquivo não encontrado");
        return 1;
    }
    int get_batch = is_get && es_path_id(head->path, "/v1/batches/", "", &id, &len);
    int cancel = !is_get && es_path_id(head->path, "/v1/batches/", "/cancel", &id, &len);
    if (!get_batch && !cancel)
        return 0;
    if ((b = es_batch_find(server->batches, id, len)) == NULL) {
        *resp = es_batch_error(server, 404, "batch_not_found", "lote não encontrado");
    } else if (cancel) {
        *resp = es_route_cancel(server, b);
    } else {
        server->stats.batch_polls++;
        es_batch_advance(server, b);
        *resp = es_batch_answer(b);
    }
    return 1;
}

int es_batch_route(embed_server *server, const http_head *head, const char *body, size_t body_len,
                   es_response **resp)
{
    int is_get = strcmp(head->method, "GET") == 0;
    int is_post = strcmp(head->method, "POST") == 0;
    if (strcmp(server->dialect->name, "openai") != 0 || (!is_get && !is_post) ||
        (strncmp(head->path, "/v1/files", 9) != 0 && strncmp(head->path, "/v1/batches", 11) != 0))
        return 0;
    *resp = NULL;
    if (server->dialect->authorize(server, head, resp) != 0)
        return 1;
    if (is_post && strcmp(head->path, "/v1/files") == 0) {
        *resp = es_route_upload(server, head, body, body_len);
        return 1;
    }
    if (is_post && strcmp(head->path, "/v1/batches") == 0) {
        *resp = es_route_create(server, body, body_len);
        return 1;
    }
    if (is_get && strcmp(head->path, "/v1/files") == 0) {
        *resp = es_route_list_files(server, head->query);
        return 1;
    }
    if (is_get && strcmp(head->path, "/v1/batches") == 0) {
        *resp = es_route_list_batches(server, head->query);
        return 1;
    }
    return es_route_by_id(server, head, is_get, resp);
}

json_t *es_batch_status_counts(const embed_server *server)
{
    json_int_t counts[ES_BATCH_STATUS_COUNT] = {0};
    json_t *root = json_object();
    for (const es_batch *b = server->batches->batches; b; b = b->next)
        counts[b->status]++;
    for (int s = 0; root && s < ES_BATCH_STATUS_COUNT; s++)
        json_object_set_new(root, es_batch_status_names[s], json_integer(counts[s]));
    return root;
}
