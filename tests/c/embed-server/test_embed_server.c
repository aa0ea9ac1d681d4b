/*
 * test_embed_server.c: runs the embedding server in-process on a private
 * libuv loop and talks raw HTTP to it with a small libuv TCP client:
 * float/base64 answers, batches, /stats, keep-alive, pipelining, split
 * writes, fault injection (reject, 429, 5xx, malformed, timeout), errors,
 * the command line, and a clean loop close.
 */
#define _GNU_SOURCE /* memmem, strcasestr, strndup */
#include "embed-server/embed_server.h"
#include "embed-server/featurehash.h"
#include "test_assert.h"

#include <jansson.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#define MAX_CHUNKS 8
#define MAX_RESPONSES 8

/* A piece of request bytes and when to write it. */
typedef struct chunk {
    const char *data;    /* bytes to write (not owned) */
    size_t len;          /* length of data */
    int after_responses; /* write once this many responses were received */
    int delay_ms;        /* then wait this long before writing */
} chunk;

/* One parsed HTTP response. */
typedef struct response {
    int status;        /* status code */
    char *head;        /* status line + headers, NUL-terminated */
    char *body;        /* body, NUL-terminated */
    size_t body_len;   /* body bytes */
} response;

/* A scripted TCP client run to completion on the loop. */
typedef struct client {
    uv_loop_t *loop;           /* loop shared with the server */
    uv_tcp_t tcp;              /* the socket */
    uv_connect_t connect;      /* connect request */
    uv_timer_t pace_timer;     /* delays between chunks */
    uv_timer_t deadline;       /* overall time limit */
    chunk chunks[MAX_CHUNKS];  /* script */
    int nchunks;               /* chunks in the script */
    int next_chunk;            /* index of the next chunk to write */
    int pacing;                /* 1 while pace_timer runs */
    int expected;              /* responses to wait for */
    response responses[MAX_RESPONSES]; /* parsed responses */
    int nresponses;            /* responses parsed */
    char *in;                  /* received bytes */
    size_t in_len;             /* bytes received */
    size_t in_cap;             /* bytes allocated */
    int eof;                   /* 1 when the server closed the connection */
    int timed_out;             /* 1 when the deadline fired */
    int done;                  /* 1 when finished (any reason) */
    int closed_handles;        /* handles closed (3 when fully closed) */
} client;

static void client_finish(client *c)
{
    if (c->done)
        return;
    c->done = 1;
}

static void client_on_write(uv_write_t *req, int status)
{
    free(req);
}

static void client_write_due(client *c);

static void client_on_pace(uv_timer_t *timer)
{
    client *c = timer->data;
    c->pacing = 0;
    const chunk *ch = &c->chunks[c->next_chunk++];
    uv_write_t *req = malloc(sizeof *req);
    ASSERT(req != NULL);
    uv_buf_t buf = uv_buf_init((char *)ch->data, (unsigned int)ch->len);
    ASSERT_INT_EQ(uv_write(req, (uv_stream_t *)&c->tcp, &buf, 1, client_on_write), 0);
    client_write_due(c);
}

/* Schedules the next chunk if its precondition holds. */
static void client_write_due(client *c)
{
    if (c->done || c->pacing || c->next_chunk >= c->nchunks)
        return;
    const chunk *ch = &c->chunks[c->next_chunk];
    if (c->nresponses < ch->after_responses)
        return;
    c->pacing = 1;
    uv_timer_start(&c->pace_timer, client_on_pace, (uint64_t)ch->delay_ms, 0);
}

/* Parses complete responses out of c->in. */
static void client_parse(client *c)
{
    for (;;) {
        if (c->nresponses >= MAX_RESPONSES)
            return;
        char *end = c->in_len >= 4 ? memmem(c->in, c->in_len, "\r\n\r\n", 4) : NULL;
        if (end == NULL)
            return;
        size_t head_len = (size_t)(end - c->in) + 4;
        char *head = strndup(c->in, head_len);
        ASSERT(head != NULL);
        int status = 0;
        ASSERT_INT_EQ(sscanf(head, "HTTP/1.1 %d", &status), 1);
        if (status == 100) { /* interim answer: drop it */
            memmove(c->in, c->in + head_len, c->in_len - head_len);
            c->in_len -= head_len;
            free(head);
            continue;
        }
        const char *cl = strcasestr(head, "Content-Length:");
        ASSERT(cl != NULL);
        size_t body_len = strtoul(cl + 15, NULL, 10);
        if (c->in_len < head_len + body_len) {
            free(head);
            return;
        }
        response *r = &c->responses[c->nresponses++];
        r->status = status;
        r->head = head;
        r->body = strndup(c->in + head_len, body_len);
        r->body_len = body_len;
        memmove(c->in, c->in + head_len + body_len, c->in_len - head_len - body_len);
        c->in_len -= head_len + body_len;
    }
}

static void client_on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    client *c = handle->data;
    if (c->in_cap - c->in_len < 65536) {
        c->in_cap = c->in_cap * 2 + 65536;
        c->in = realloc(c->in, c->in_cap);
        ASSERT(c->in != NULL);
    }
    *buf = uv_buf_init(c->in + c->in_len, (unsigned int)(c->in_cap - c->in_len));
}

static void client_on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    client *c = stream->data;
    if (nread < 0) {
        c->eof = 1;
        client_finish(c);
        return;
    }
    c->in_len += (size_t)nread;
    client_parse(c);
    if (c->nresponses >= c->expected)
        client_finish(c);
    else
        client_write_due(c);
}

static void client_on_connect(uv_connect_t *req, int status)
{
    client *c = req->data;
    ASSERT_INT_EQ(status, 0);
    ASSERT_INT_EQ(uv_read_start((uv_stream_t *)&c->tcp, client_on_alloc, client_on_read), 0);
    client_write_due(c);
}

static void client_on_deadline(uv_timer_t *timer)
{
    client *c = timer->data;
    c->timed_out = 1;
    client_finish(c);
}

static void client_on_closed(uv_handle_t *handle)
{
    client *c = handle->data;
    c->closed_handles++;
}

/* Runs the script against port; waits for `expected` responses or timeout_ms. */
static void client_run(client *c, uv_loop_t *loop, int port, int expected, int timeout_ms)
{
    struct sockaddr_in addr;
    c->loop = loop;
    c->expected = expected;
    ASSERT_INT_EQ(uv_ip4_addr("127.0.0.1", port, &addr), 0);
    uv_tcp_init(loop, &c->tcp);
    uv_timer_init(loop, &c->pace_timer);
    uv_timer_init(loop, &c->deadline);
    c->tcp.data = c->pace_timer.data = c->deadline.data = c->connect.data = c;
    ASSERT_INT_EQ(uv_tcp_connect(&c->connect, &c->tcp, (const struct sockaddr *)&addr, client_on_connect), 0);
    uv_timer_start(&c->deadline, client_on_deadline, (uint64_t)timeout_ms, 0);
    while (!c->done)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&c->tcp, client_on_closed);
    uv_close((uv_handle_t *)&c->pace_timer, client_on_closed);
    uv_close((uv_handle_t *)&c->deadline, client_on_closed);
    while (c->closed_handles < 3)
        uv_run(loop, UV_RUN_ONCE);
}

static void client_free(client *c)
{
    for (int i = 0; i < c->nresponses; i++) {
        free(c->responses[i].head);
        free(c->responses[i].body);
    }
    free(c->in);
    for (int i = 0; i < c->nchunks; i++)
        free((char *)c->chunks[i].data);
    memset(c, 0, sizeof *c);
}

/* Adds a chunk (copied). */
static void client_add(client *c, const char *data, size_t len, int after_responses, int delay_ms)
{
    ASSERT(c->nchunks < MAX_CHUNKS);
    char *copy = malloc(len + 1);
    ASSERT(copy != NULL);
    memcpy(copy, data, len);
    c->chunks[c->nchunks++] = (chunk){copy, len, after_responses, delay_ms};
}

/* Builds a full HTTP request (malloc'd). */
static char *make_request(const char *method, const char *path, const char *body, const char *extra_headers)
{
    size_t body_len = body ? strlen(body) : 0;
    size_t size = strlen(method) + strlen(path) + body_len + (extra_headers ? strlen(extra_headers) : 0) + 256;
    char *out = malloc(size);
    ASSERT(out != NULL);
    snprintf(out, size, "%s %s HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n%s\r\n%s",
             method, path, body_len, extra_headers ? extra_headers : "", body ? body : "");
    return out;
}

/* One request, one response: returns the client (caller frees). */
static void exchange(client *c, uv_loop_t *loop, int port, const char *method, const char *path,
                     const char *body, const char *headers, int timeout_ms)
{
    memset(c, 0, sizeof *c);
    char *req = make_request(method, path, body, headers);
    client_add(c, req, strlen(req), 0, 0);
    free(req);
    client_run(c, loop, port, 1, timeout_ms);
}

static int base64_value(char ch)
{
    if (ch >= 'A' && ch <= 'Z') return ch - 'A';
    if (ch >= 'a' && ch <= 'z') return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9') return ch - '0' + 52;
    if (ch == '+') return 62;
    if (ch == '/') return 63;
    return -1;
}

/* Decodes base64 of little-endian float32 into out; returns the count. */
static size_t decode_base64_floats(const char *text, float *out, size_t max)
{
    size_t len = strlen(text), nbytes = 0;
    unsigned char *bytes = malloc(len);
    ASSERT(bytes != NULL);
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len && text[i] != '='; i++) {
        int v = base64_value(text[i]);
        ASSERT(v >= 0);
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            bytes[nbytes++] = (unsigned char)((acc >> bits) & 0xFF);
        }
    }
    ASSERT_INT_EQ(nbytes % 4, 0);
    size_t count = nbytes / 4;
    ASSERT(count <= max);
    for (size_t i = 0; i < count; i++) {
        uint32_t u = (uint32_t)bytes[4 * i] | (uint32_t)bytes[4 * i + 1] << 8 | (uint32_t)bytes[4 * i + 2] << 16 |
                     (uint32_t)bytes[4 * i + 3] << 24;
        memcpy(&out[i], &u, 4);
    }
    free(bytes);
    return count;
}

/* Extracts data[i].embedding as floats (array or base64). Returns the count. */
static size_t embedding_of(json_t *root, size_t i, float *out, size_t max)
{
    json_t *item = json_array_get(json_object_get(root, "data"), i);
    ASSERT(item != NULL);
    ASSERT_INT_EQ(json_integer_value(json_object_get(item, "index")), (long long)i);
    json_t *emb = json_object_get(item, "embedding");
    if (json_is_string(emb))
        return decode_base64_floats(json_string_value(emb), out, max);
    ASSERT(json_is_array(emb));
    ASSERT(json_array_size(emb) <= max);
    for (size_t k = 0; k < json_array_size(emb); k++)
        out[k] = (float)json_number_value(json_array_get(emb, k));
    return json_array_size(emb);
}

static json_t *parse_body(const response *r)
{
    json_error_t err;
    json_t *root = json_loadb(r->body, r->body_len, 0, &err);
    ASSERT(root != NULL);
    return root;
}

static long long stat_of(uv_loop_t *loop, int port, const char *name)
{
    client c;
    exchange(&c, loop, port, "GET", "/stats", NULL, NULL, 2000);
    ASSERT_INT_EQ(c.nresponses, 1);
    ASSERT_INT_EQ(c.responses[0].status, 200);
    json_t *root = parse_body(&c.responses[0]);
    json_t *value = json_object_get(root, name);
    ASSERT(json_is_integer(value));
    long long out = json_integer_value(value);
    json_decref(root);
    client_free(&c);
    return out;
}

static embed_server *start(uv_loop_t *loop, embed_server_opts *opts)
{
    char *err = NULL;
    opts->port = 0;
    embed_server *server = embed_server_start(loop, opts, &err);
    if (server == NULL)
        fprintf(stderr, "embed_server_start: %s\n", err ? err : "?");
    ASSERT(server != NULL);
    ASSERT(embed_server_port(server) > 0);
    return server;
}

/* ------------------------------------------------------------------ */

static void test_float_base64_batch_and_stats(uv_loop_t *loop)
{
    embed_server_opts opts;
    embed_server_opts_init(&opts);
    opts.dim = 64;
    embed_server *server = start(loop, &opts);
    int port = embed_server_port(server);
    client c;
    const char *texts[] = {"In the beginning God created the heaven and the earth.", "Olá, mundo!", "zebra"};
    const char *batch = "{\"model\":\"m\",\"input\":[\"In the beginning God created the heaven and the earth.\","
                        "\"Olá, mundo!\",\"zebra\"]}";
    const char *batch64 = "{\"model\":\"m\",\"encoding_format\":\"base64\",\"input\":[\"In the beginning God "
                          "created the heaven and the earth.\",\"Olá, mundo!\",\"zebra\"]}";
    float got[64], got64[64], want[64];

    exchange(&c, loop, port, "POST", "/v1/embeddings", batch, NULL, 2000);
    ASSERT_INT_EQ(c.nresponses, 1);
    ASSERT_INT_EQ(c.responses[0].status, 200);
    json_t *floats = parse_body(&c.responses[0]);
    client_free(&c);
    exchange(&c, loop, port, "POST", "/v1/embeddings", batch64, NULL, 2000);
    ASSERT_INT_EQ(c.responses[0].status, 200);
    json_t *b64 = parse_body(&c.responses[0]);
    client_free(&c);

    ASSERT_STR_EQ(json_string_value(json_object_get(floats, "object")), "list");
    ASSERT_STR_EQ(json_string_value(json_object_get(floats, "model")), "m");
    ASSERT_INT_EQ(json_array_size(json_object_get(floats, "data")), 3);
    /* usage: words + punctuation per input (not bytes/4, which gives 19):
     * 10 words + "." -> 11, "Olá", "mundo" + "," "!" -> 4, "zebra" -> 1 */
    json_t *usage = json_object_get(floats, "usage");
    ASSERT_INT_EQ(json_integer_value(json_object_get(usage, "prompt_tokens")), 16);
    ASSERT_INT_EQ(json_integer_value(json_object_get(usage, "total_tokens")), 16);
    for (size_t i = 0; i < 3; i++) {
        ASSERT_INT_EQ(embedding_of(floats, i, got, 64), 64);
        ASSERT_INT_EQ(embedding_of(b64, i, got64, 64), 64);
        featurehash_embed(texts[i], strlen(texts[i]), want, 64);
        /* Same vectors, in order, bit for bit (9 digits round-trip a float). */
        ASSERT(memcmp(got, want, sizeof want) == 0);
        ASSERT(memcmp(got64, want, sizeof want) == 0);
    }
    json_decref(floats);
    json_decref(b64);

    /* dimensions: computed at that dimension. */
    exchange(&c, loop, port, "POST", "/v1/embeddings", "{\"model\":\"m\",\"input\":\"zebra\",\"dimensions\":16}", NULL,
             2000);
    ASSERT_INT_EQ(c.responses[0].status, 200);
    json_t *small = parse_body(&c.responses[0]);
    float got16[64], want16[16];
    ASSERT_INT_EQ(embedding_of(small, 0, got16, 64), 16);
    featurehash_embed("zebra", 5, want16, 16);
    ASSERT(memcmp(got16, want16, sizeof want16) == 0);
    json_decref(small);

    client_free(&c);
    exchange(&c, loop, port, "POST", "/v1/embeddings", "{\"model\":\"m\",\"input\":\"zebra\",\"dimensions\":65}", NULL,
             2000);
    ASSERT_INT_EQ(c.responses[0].status, 400);
    client_free(&c);

    ASSERT_INT_EQ(stat_of(loop, port, "requests"), 4);
    ASSERT_INT_EQ(stat_of(loop, port, "inputs"), 7);
    ASSERT_INT_EQ(stat_of(loop, port, "ok"), 3);
    embed_server_stats stats;
    embed_server_get_stats(server, &stats);
    ASSERT_INT_EQ(stats.bad_requests, 1);

    exchange(&c, loop, port, "POST", "/stats/reset", "", NULL, 2000);
    ASSERT_INT_EQ(c.responses[0].status, 200);
    client_free(&c);
    ASSERT_INT_EQ(stat_of(loop, port, "requests"), 0);
    ASSERT_INT_EQ(stat_of(loop, port, "inputs"), 0);

    exchange(&c, loop, port, "GET", "/health", NULL, NULL, 2000);
    ASSERT_INT_EQ(c.responses[0].status, 200);
    ASSERT_STR_EQ(c.responses[0].body, "ok");
    client_free(&c);
    exchange(&c, loop, port, "GET", "/v2/whatever", NULL, NULL, 2000);
    ASSERT_INT_EQ(c.responses[0].status, 404);
    client_free(&c);
    /* base64 whose last group has 1 or 2 bytes (4 x dim bytes: dim 7 -> 28,
     * dim 5 -> 20), bit for bit, and the padding right. */
    for (int d = 5; d <= 7; d += 2) {
        char request[160];
        float got_d[64], want_d[7];
        snprintf(request, sizeof request,
                 "{\"model\":\"m\",\"input\":\"zebra\",\"dimensions\":%d,\"encoding_format\":\"base64\"}", d);
        exchange(&c, loop, port, "POST", "/v1/embeddings", request, NULL, 2000);
        ASSERT_INT_EQ(c.responses[0].status, 200);
        json_t *odd = parse_body(&c.responses[0]);
        const char *text = json_string_value(json_object_get(json_array_get(json_object_get(odd, "data"), 0), "embedding"));
        ASSERT(text != NULL);
        ASSERT_INT_EQ(strlen(text), (size_t)((4 * d + 2) / 3 * 4));
        ASSERT_STR_EQ(text + strlen(text) - (d == 5 ? 1 : 2), d == 5 ? "=" : "==");
        ASSERT_INT_EQ(embedding_of(odd, 0, got_d, 64), (size_t)d);
        featurehash_embed("zebra", 5, want_d, (size_t)d);
        ASSERT(memcmp(got_d, want_d, (size_t)d * sizeof(float)) == 0);
        json_decref(odd);
        client_free(&c);
    }
    embed_server_stop(server);
}

static void test_keepalive_pipelining_split(uv_loop_t *loop)
{
    embed_server_opts opts;
    embed_server_opts_init(&opts);
    opts.dim = 32;
    opts.latency_ms = 20; /* answers are delayed: order must still hold */
    embed_server *server = start(loop, &opts);
    int port = embed_server_port(server);
    client c;
    char *r1 = make_request("POST", "/v1/embeddings", "{\"model\":\"m\",\"input\":\"primeiro\"}", NULL);
    char *r2 = make_request("POST", "/v1/embeddings", "{\"model\":\"m\",\"input\":[\"segundo\",\"terceiro\"]}", NULL);
    char *r3 = make_request("GET", "/health", NULL, "Connection: close\r\n");

    /* Keep-alive: second request only after the first answer, same socket. */
    memset(&c, 0, sizeof c);
    client_add(&c, r1, strlen(r1), 0, 0);
    client_add(&c, r2, strlen(r2), 1, 0);
    client_run(&c, loop, port, 2, 2000);
    ASSERT_INT_EQ(c.nresponses, 2);
    ASSERT_INT_EQ(c.responses[0].status, 200);
    ASSERT_INT_EQ(c.responses[1].status, 200);
    json_t *second = parse_body(&c.responses[1]);
    ASSERT_INT_EQ(json_array_size(json_object_get(second, "data")), 2);
    json_decref(second);
    ASSERT(!c.eof);
    client_free(&c);

    /* Pipelining: three requests in one write; the last asks to close. */
    size_t total = strlen(r1) + strlen(r2) + strlen(r3);
    char *all = malloc(total + 1);
    ASSERT(all != NULL);
    snprintf(all, total + 1, "%s%s%s", r1, r2, r3);
    memset(&c, 0, sizeof c);
    client_add(&c, all, total, 0, 0);
    client_run(&c, loop, port, 4, 2000); /* wait for EOF after 3 answers */
    ASSERT_INT_EQ(c.nresponses, 3);
    ASSERT(c.eof);
    ASSERT(!c.timed_out);
    json_t *first = parse_body(&c.responses[0]);
    ASSERT_INT_EQ(json_array_size(json_object_get(first, "data")), 1);
    json_decref(first);
    second = parse_body(&c.responses[1]);
    ASSERT_INT_EQ(json_array_size(json_object_get(second, "data")), 2);
    json_decref(second);
    ASSERT_STR_EQ(c.responses[2].body, "ok");
    ASSERT(strstr(c.responses[2].head, "Connection: close") != NULL);
    client_free(&c);

    /* Split: one request in four writes, cut inside the head and the body. */
    size_t len = strlen(r2);
    size_t cut1 = 7, cut2 = 40, cut3 = len - 5;
    memset(&c, 0, sizeof c);
    client_add(&c, r2, cut1, 0, 0);
    client_add(&c, r2 + cut1, cut2 - cut1, 0, 30);
    client_add(&c, r2 + cut2, cut3 - cut2, 0, 30);
    client_add(&c, r2 + cut3, len - cut3, 0, 30);
    client_run(&c, loop, port, 1, 2000);
    ASSERT_INT_EQ(c.nresponses, 1);
    ASSERT_INT_EQ(c.responses[0].status, 200);
    second = parse_body(&c.responses[0]);
    ASSERT_INT_EQ(json_array_size(json_object_get(second, "data")), 2);
    json_decref(second);
    client_free(&c);

    /* Expect: 100-continue gets an interim answer before the body. */
    const char *body4 = "{\"model\":\"m\",\"input\":\"x\"}";
    char head4[256];
    snprintf(head4, sizeof head4,
             "POST /v1/embeddings HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: %zu\r\n\r\n", strlen(body4));
    memset(&c, 0, sizeof c);
    client_add(&c, head4, strlen(head4), 0, 0);
    client_add(&c, body4, strlen(body4), 0, 50);
    client_run(&c, loop, port, 1, 2000);
    ASSERT_INT_EQ(c.nresponses, 1);
    ASSERT_INT_EQ(c.responses[0].status, 200);
    client_free(&c);

    free(r1);
    free(r2);
    free(r3);
    free(all);
    embed_server_stop(server);
}

static void test_faults(uv_loop_t *loop)
{
    const char *body = "{\"model\":\"m\",\"input\":[\"um texto\",\"outro texto\"]}";
    client c;
    embed_server_opts opts;

    /* --reject-pattern */
    embed_server_opts_init(&opts);
    opts.dim = 16;
    opts.reject_pattern = "proibid[oa]";
    embed_server *server = start(loop, &opts);
    exchange(&c, loop, embed_server_port(server), "POST", "/v1/embeddings",
             "{\"model\":\"m\",\"input\":[\"ok\",\"texto proibido aqui\"]}", NULL, 2000);
    ASSERT_INT_EQ(c.responses[0].status, 400);
    json_t *root = parse_body(&c.responses[0]);
    const char *message = json_string_value(json_object_get(json_object_get(root, "error"), "message"));
    ASSERT(message != NULL && strncmp(message, "entrada rejeitada: ", 19) == 0);
    ASSERT_STR_EQ(json_string_value(json_object_get(json_object_get(root, "error"), "type")), "invalid_request_error");
    json_decref(root);
    client_free(&c);
    exchange(&c, loop, embed_server_port(server), "POST", "/v1/embeddings", body, NULL, 2000);
    ASSERT_INT_EQ(c.responses[0].status, 200);
    client_free(&c);
    ASSERT_INT_EQ(stat_of(loop, embed_server_port(server), "rejected"), 1);
    embed_server_stop(server);

    /* --rate-429 1.0 with --retry-after 7 */
    embed_server_opts_init(&opts);
    opts.dim = 16;
    opts.rate_429 = 1.0;
    opts.retry_after_s = 7;
    server = start(loop, &opts);
    exchange(&c, loop, embed_server_port(server), "POST", "/v1/embeddings", body, NULL, 2000);
    ASSERT_INT_EQ(c.responses[0].status, 429);
    ASSERT(strstr(c.responses[0].head, "Retry-After: 7\r\n") != NULL);
    client_free(&c);
    ASSERT_INT_EQ(stat_of(loop, embed_server_port(server), "rate_limited"), 1);
    embed_server_stop(server);

    /* --fail-rate 1.0: always 500, 502 or 503 */
    embed_server_opts_init(&opts);
    opts.dim = 16;
    opts.fail_rate = 1.0;
    server = start(loop, &opts);
    for (int i = 0; i < 5; i++) {
        exchange(&c, loop, embed_server_port(server), "POST", "/v1/embeddings", body, NULL, 2000);
        int status = c.responses[0].status;
        ASSERT(status == 500 || status == 502 || status == 503);
        client_free(&c);
    }
    ASSERT_INT_EQ(stat_of(loop, embed_server_port(server), "errors_5xx"), 5);
    ASSERT_INT_EQ(stat_of(loop, embed_server_port(server), "ok"), 0);
    embed_server_stop(server);

    /* --malformed-rate 1.0: 200 whose body is not a valid answer */
    embed_server_opts_init(&opts);
    opts.dim = 16;
    opts.malformed_rate = 1.0;
    server = start(loop, &opts);
    for (int i = 0; i < 6; i++) {
        exchange(&c, loop, embed_server_port(server), "POST", "/v1/embeddings", body, NULL, 2000);
        ASSERT_INT_EQ(c.responses[0].status, 200);
        json_error_t err;
        json_t *answer = json_loadb(c.responses[0].body, c.responses[0].body_len, 0, &err);
        int valid = answer != NULL;
        json_t *data = answer ? json_object_get(answer, "data") : NULL;
        if (valid && json_array_size(data) != 2)
            valid = 0;
        for (size_t k = 0; valid && k < json_array_size(data); k++)
            if (json_array_size(json_object_get(json_array_get(data, k), "embedding")) != 16)
                valid = 0;
        ASSERT(!valid);
        json_decref(answer);
        client_free(&c);
    }
    ASSERT_INT_EQ(stat_of(loop, embed_server_port(server), "malformed"), 6);
    ASSERT_INT_EQ(stat_of(loop, embed_server_port(server), "inputs"), 0);
    embed_server_stop(server);

    /* --timeout-rate 1.0: accepted, never answered */
    embed_server_opts_init(&opts);
    opts.dim = 16;
    opts.timeout_rate = 1.0;
    server = start(loop, &opts);
    exchange(&c, loop, embed_server_port(server), "POST", "/v1/embeddings", body, NULL, 300);
    ASSERT(c.timed_out);
    ASSERT_INT_EQ(c.nresponses, 0);
    client_free(&c);
    ASSERT_INT_EQ(stat_of(loop, embed_server_port(server), "timeouts"), 1);
    /* A hanging connection is still open here: stop must close it. */
    memset(&c, 0, sizeof c);
    char *req = make_request("POST", "/v1/embeddings", body, NULL);
    client_add(&c, req, strlen(req), 0, 0);
    free(req);
    client_run(&c, loop, embed_server_port(server), 1, 100);
    ASSERT(c.timed_out);
    client_free(&c);
    embed_server_stop(server);

    /* --hang-pattern: exactly the requests with a matching input hang */
    embed_server_opts_init(&opts);
    opts.dim = 16;
    opts.hang_pattern = "TRAV[AO]";
    server = start(loop, &opts);
    exchange(&c, loop, embed_server_port(server), "POST", "/v1/embeddings",
             "{\"model\":\"m\",\"input\":[\"ok\",\"isto TRAVA\"]}", NULL, 300);
    ASSERT(c.timed_out);
    ASSERT_INT_EQ(c.nresponses, 0);
    client_free(&c);
    exchange(&c, loop, embed_server_port(server), "POST", "/v1/embeddings", body, NULL, 2000);
    ASSERT_INT_EQ(c.responses[0].status, 200);
    client_free(&c);
    ASSERT_INT_EQ(stat_of(loop, embed_server_port(server), "timeouts"), 1);
    ASSERT_INT_EQ(stat_of(loop, embed_server_port(server), "ok"), 1);
    embed_server_stop(server);

    /* --bad-usage-rate 1.0: valid vectors, usage.prompt_tokens = -1 */
    embed_server_opts_init(&opts);
    opts.dim = 16;
    opts.bad_usage_rate = 1.0;
    server = start(loop, &opts);
    exchange(&c, loop, embed_server_port(server), "POST", "/v1/embeddings", body, NULL, 2000);
    ASSERT_INT_EQ(c.responses[0].status, 200);
    root = parse_body(&c.responses[0]);
    ASSERT_INT_EQ(json_array_size(json_object_get(root, "data")), 2);
    ASSERT_INT_EQ(json_integer_value(json_object_get(json_object_get(root, "usage"), "prompt_tokens")), -1);
    json_decref(root);
    client_free(&c);
    ASSERT_INT_EQ(stat_of(loop, embed_server_port(server), "malformed"), 1);
    embed_server_stop(server);
}

static void test_errors(uv_loop_t *loop)
{
    embed_server_opts opts;
    embed_server_opts_init(&opts);
    opts.dim = 16;
    opts.model = "ragops-hash";
    opts.api_key = "segredo-123";
    opts.max_inputs = 2;
    embed_server *server = start(loop, &opts);
    int port = embed_server_port(server);
    const char *auth = "Authorization: Bearer segredo-123\r\n";
    client c;

    struct {
        const char *body;   /* request body */
        const char *headers; /* extra headers */
        int status;         /* expected status */
        const char *code;   /* expected error.code or NULL */
    } cases[] = {
        {"{\"model\":\"ragops-hash\",\"input\":\"x\"}", NULL, 401, "invalid_api_key"},
        {"{\"model\":\"ragops-hash\",\"input\":\"x\"}", "Authorization: Bearer errada\r\n", 401, "invalid_api_key"},
        {"{\"model\":\"ragops-hash\",\"input\":\"x\"}", auth, 200, NULL},
        {"{\"model\": \"ragops-hash\", \"input\": [", auth, 400, NULL},
        {"[1,2]", auth, 400, NULL},
        {"{\"model\":\"ragops-hash\"}", auth, 400, NULL},
        {"{\"model\":\"ragops-hash\",\"input\":\"\"}", auth, 400, NULL},
        {"{\"model\":\"ragops-hash\",\"input\":[]}", auth, 400, NULL},
        {"{\"model\":\"ragops-hash\",\"input\":[1,2]}", auth, 400, NULL},
        {"{\"model\":\"ragops-hash\",\"input\":[\"a\",\"b\",\"c\"]}", auth, 400, NULL},
        {"{\"model\":\"ragops-hash\",\"input\":\"x\",\"encoding_format\":\"int8\"}", auth, 400, NULL},
        {"{\"input\":\"x\"}", auth, 400, NULL},
        {"{\"model\":\"outro\",\"input\":\"x\"}", auth, 404, "model_not_found"},
    };
    /* every embeddings answer, error or not, has an x-request-id of its own */
    exchange(&c, loop, port, "POST", "/v1/embeddings", cases[0].body, "X-Request-Id: rg-teste-1\r\n", 2000);
    ASSERT_INT_EQ(c.responses[0].status, 401);
    ASSERT(strcasestr(c.responses[0].head, "\r\nx-request-id: es-") != NULL);
    client_free(&c);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        exchange(&c, loop, port, "POST", "/v1/embeddings", cases[i].body, cases[i].headers, 2000);
        ASSERT_INT_EQ(c.nresponses, 1);
        if (c.responses[0].status != cases[i].status)
            fprintf(stderr, "caso %zu: %s\n", i, c.responses[0].body);
        ASSERT_INT_EQ(c.responses[0].status, cases[i].status);
        if (cases[i].status != 200) {
            json_t *root = parse_body(&c.responses[0]);
            json_t *error = json_object_get(root, "error");
            ASSERT(json_is_string(json_object_get(error, "message")));
            ASSERT(json_is_string(json_object_get(error, "type")));
            if (cases[i].code)
                ASSERT_STR_EQ(json_string_value(json_object_get(error, "code")), cases[i].code);
            /* The key never leaks into error bodies. */
            ASSERT(strstr(c.responses[0].body, "segredo") == NULL);
            json_decref(root);
        }
        client_free(&c);
    }
    json_t *root;
    exchange(&c, loop, port, "POST", "/v1/embeddings", "{\"model\":\"outro\",\"input\":\"x\"}", auth, 2000);
    root = parse_body(&c.responses[0]);
    ASSERT_STR_EQ(json_string_value(json_object_get(json_object_get(root, "error"), "message")),
                  "modelo 'outro' não encontrado");
    json_decref(root);
    client_free(&c);

    /* Protocol errors: oversized body announced, garbage request line. */
    memset(&c, 0, sizeof c);
    const char *huge = "POST /v1/embeddings HTTP/1.1\r\nContent-Length: 67108865\r\n\r\n";
    client_add(&c, huge, strlen(huge), 0, 0);
    client_run(&c, loop, port, 2, 2000);
    ASSERT_INT_EQ(c.nresponses, 1);
    ASSERT_INT_EQ(c.responses[0].status, 413);
    ASSERT(c.eof);
    client_free(&c);
    memset(&c, 0, sizeof c);
    const char *garbage = "HELLO\r\n\r\n";
    client_add(&c, garbage, strlen(garbage), 0, 0);
    client_run(&c, loop, port, 2, 2000);
    ASSERT_INT_EQ(c.nresponses, 1);
    ASSERT_INT_EQ(c.responses[0].status, 400);
    ASSERT(c.eof);
    client_free(&c);

    embed_server_stop(server);
}

static void test_cli_usage(void)
{
    char *bad_dim[] = {"embed-server", "--dim", "abc", NULL};
    char *bad_rate[] = {"embed-server", "--fail-rate", "1.5", NULL};
    char *unknown[] = {"embed-server", "--nope", NULL};
    char *missing[] = {"embed-server", "--port", NULL};
    char *bad_regex[] = {"embed-server", "--reject-pattern", "(", NULL};
    char *bad_hang[] = {"embed-server", "--hang-pattern", "(", NULL};
    char *bad_usage[] = {"embed-server", "--bad-usage-rate", "2", NULL};
    char *help[] = {"embed-server", "--help", NULL};
    ASSERT_INT_EQ(embed_server_main(3, bad_dim), 2);
    ASSERT_INT_EQ(embed_server_main(3, bad_rate), 2);
    ASSERT_INT_EQ(embed_server_main(2, unknown), 2);
    ASSERT_INT_EQ(embed_server_main(2, missing), 2);
    ASSERT_INT_EQ(embed_server_main(3, bad_regex), 2);
    ASSERT_INT_EQ(embed_server_main(3, bad_hang), 2);
    ASSERT_INT_EQ(embed_server_main(3, bad_usage), 2);
    ASSERT_INT_EQ(embed_server_main(2, help), 0);
}

/* Spawns the real binary (if present), reads its first line, SIGTERM => 0. */
typedef struct spawn_state {
    char line[256];  /* first stdout line */
    size_t len;      /* bytes in line */
    int exited;      /* 1 after exit callback */
    int64_t status;  /* exit status */
    int term_signal; /* terminating signal */
    uv_process_t *proc; /* the child */
} spawn_state;

static void spawn_on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    spawn_state *s = handle->data;
    *buf = uv_buf_init(s->line + s->len, (unsigned int)(sizeof s->line - 1 - s->len));
}

static void spawn_on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    spawn_state *s = stream->data;
    if (nread > 0) {
        s->len += (size_t)nread;
        s->line[s->len] = '\0';
        if (strchr(s->line, '\n')) {
            uv_read_stop(stream);
            uv_process_kill(s->proc, SIGTERM);
        }
    } else if (nread < 0) {
        uv_read_stop(stream);
    }
}

static void spawn_on_exit(uv_process_t *proc, int64_t status, int term_signal)
{
    spawn_state *s = proc->data;
    s->exited = 1;
    s->status = status;
    s->term_signal = term_signal;
}

static void test_binary(uv_loop_t *loop)
{
    const char *bin = getenv("RAGOPS_BIN");
    if (bin == NULL || access(bin, X_OK) != 0) {
        fprintf(stderr, "aviso: RAGOPS_BIN ausente; teste do binário ignorado\n");
        return;
    }
    spawn_state s;
    uv_process_t proc;
    uv_pipe_t out;
    memset(&s, 0, sizeof s);
    s.proc = &proc;
    uv_pipe_init(loop, &out, 0);
    out.data = &s;
    proc.data = &s;
    char *args[] = {(char *)bin, "embed-server", "--port", "0", "--dim", "8", NULL};
    uv_stdio_container_t stdio[3] = {
        {.flags = UV_IGNORE},
        {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&out},
        {.flags = UV_INHERIT_FD, .data.fd = 2},
    };
    uv_process_options_t options = {.exit_cb = spawn_on_exit, .file = bin, .args = args, .stdio_count = 3,
                                     .stdio = stdio};
    ASSERT_INT_EQ(uv_spawn(loop, &proc, &options), 0);
    ASSERT_INT_EQ(uv_read_start((uv_stream_t *)&out, spawn_on_alloc, spawn_on_read), 0);
    while (!s.exited)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&out, NULL);
    uv_close((uv_handle_t *)&proc, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    int port = 0;
    ASSERT_INT_EQ(sscanf(s.line, "embed-server escutando em http://127.0.0.1:%d/v1 (dim=8)", &port), 1);
    ASSERT(port > 0);
    ASSERT_INT_EQ(s.term_signal, 0);
    ASSERT_INT_EQ(s.status, 0);
}

int main(void)
{
    uv_loop_t loop;
    signal(SIGPIPE, SIG_IGN);
    ASSERT_INT_EQ(uv_loop_init(&loop), 0);
    test_float_base64_batch_and_stats(&loop);
    test_keepalive_pipelining_split(&loop);
    test_faults(&loop);
    test_errors(&loop);
    ASSERT_INT_EQ(uv_run(&loop, UV_RUN_DEFAULT), 0);
    test_binary(&loop);
    ASSERT_INT_EQ(uv_loop_close(&loop), 0);
    test_cli_usage();
    return 0;
}
