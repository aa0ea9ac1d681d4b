/*
 * embed_server_internal.h: what the files of the embed-server share (not a
 * public API; see embed_server.h for that). The server is split by job:
 *
 *   embed_server.c         lifecycle: options, start (bind/listen), stop, stats
 *   embed_server_cli.c     the `ragops embed-server` command line
 *   embed_server_net.c     serving through engine/http's httpd: requests in, answers out
 *   embed_server_http.c    the answers (OpenAI-style JSON errors)
 *   embed_server_routes.c  routes and validation of POST /v1/embeddings
 *   embed_server_faults.c  fault injection (PRNG, patterns, which fault)
 *   embed_server_format.c  the body of a 200 answer (JSON floats or base64)
 *   embed_server_buf.c     growable byte buffers and formatted strings
 */
#ifndef RAGOPS_EMBED_SERVER_INTERNAL_H
#define RAGOPS_EMBED_SERVER_INTERNAL_H

#include "embed_server.h"
#include "http/httpd.h"

#include <jansson.h>
#include <regex.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define ES_MAX_HEAD (64 * 1024)                 /* request line + headers */
#define ES_MAX_BODY ((size_t)64 * 1024 * 1024)  /* 64 MiB */
#define ES_MAX_DIM 65536                        /* largest --dim accepted */
#define ES_ENDLESS_CHUNK (1024 * 1024)          /* body bytes per chunk of an endless answer */

/* Growable byte buffer. */
typedef struct es_buf {
    char *data; /* bytes (not NUL-terminated unless stated) */
    size_t len; /* bytes used */
    size_t cap; /* bytes allocated */
} es_buf;

/* An answer waiting to be written (held while the latency timer runs). */
typedef struct es_response {
    int status;               /* HTTP status code */
    const char *content_type; /* static string */
    char *body;               /* malloc'd body */
    size_t body_len;          /* body bytes */
    int retry_after_s;        /* > 0: send a Retry-After header */
    int close_after;          /* 1: close the connection after writing */
    int endless;              /* 1: body is only the start of a chunked body that never ends */
    int gzip;                 /* 1 (with endless): the body is sent gzip-encoded */
    char request_id[160];     /* "es-<n>" (or --echo-auth's echo) sent as x-request-id, "" for none */
} es_response;

/* Fault-injection settings and state (embed_server_faults.c). */
typedef struct es_faults {
    double fail_rate;      /* see embed_server_opts */
    double rate_429;       /* see embed_server_opts */
    int retry_after_s;     /* see embed_server_opts */
    double timeout_rate;   /* see embed_server_opts */
    double malformed_rate; /* see embed_server_opts */
    double bad_usage_rate; /* see embed_server_opts */
    regex_t reject_re;     /* compiled --reject-pattern */
    int has_reject_re;     /* 1 if reject_re is compiled */
    regex_t hang_re;       /* compiled --hang-pattern */
    int has_hang_re;       /* 1 if hang_re is compiled */
    regex_t endless_re;    /* compiled --endless-pattern */
    int has_endless_re;    /* 1 if endless_re is compiled */
    int endless_gzip;      /* see embed_server_opts */
    uint64_t rng_state;    /* splitmix64 state */
} es_faults;

/* How the body of a 200 answer is broken (embed_server_format.c). */
typedef enum es_malformed {
    ES_VALID = 0,         /* a correct answer */
    ES_TRUNCATED = 1,     /* JSON cut in half */
    ES_EXTRA_VECTOR = 2,  /* one vector more than inputs */
    ES_SHORT_VECTORS = 3, /* every vector one component short */
    ES_BAD_USAGE = 4      /* valid vectors, usage.prompt_tokens = -1 */
} es_malformed;

struct embed_server {
    httpd *http;              /* the HTTP server (engine/http) */
    int dim;                  /* default vector dimension */
    char *model;              /* copy of opts.model or NULL */
    char *api_key;            /* copy of opts.api_key or NULL */
    int latency_ms;           /* see embed_server_opts */
    int max_inputs;           /* see embed_server_opts */
    int dense;                /* see embed_server_opts */
    int echo_auth;            /* see embed_server_opts */
    es_faults faults;         /* fault injection */
    embed_server_stats stats; /* counters for /stats */
    uint64_t last_request_id; /* n of the last "es-<n>" given (never reset) */
};

/* ---- embed_server_net.c ---- */

/* Starts server->http on loop at opts' host and port. Returns 0, or -1
 * with the pt-BR message in *err (when err is not NULL). */
int es_server_listen(embed_server *server, uv_loop_t *loop, const embed_server_opts *opts, char **err);

/* ---- embed_server_http.c ---- */

/* Takes ownership of body (malloc'd). Returns NULL when out of memory. */
es_response *es_response_new(int status, const char *content_type, char *body, size_t body_len);

/* OpenAI-style error: {"error":{"message","type","param","code"}}. */
es_response *es_response_error(int status, const char *type, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* es_response_error with a va_list. */
es_response *es_response_verror(int status, const char *type, const char *code, const char *fmt, va_list ap);

/* A JSON answer (root is consumed). */
es_response *es_response_json(int status, json_t *root);

void es_response_free(es_response *resp);

/* ---- embed_server_routes.c ---- */

/* Answers one complete request. NULL means out of memory, or never answer
 * when *never_answer is set; *delayed: hold the answer for --latency-ms. */
es_response *es_dispatch(embed_server *server, const http_head *req, const char *body, size_t body_len,
                         int *never_answer, int *delayed);

/* Counts a 4xx caused by the client and builds its OpenAI-style error. */
es_response *es_bad_request(embed_server *server, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ---- embed_server_faults.c ---- */

/* Copies the fault settings of opts and compiles the patterns. Returns 0, or
 * -1 with a malloc'd pt-BR message in *err (when err is not NULL). */
int es_faults_init(es_faults *faults, const embed_server_opts *opts, char **err);

/* Releases the compiled patterns. */
void es_faults_free(es_faults *faults);

/* Compiles pattern (the value of flag) into re. Returns 0, or -1 with a
 * malloc'd pt-BR message in *err (when err is not NULL). */
int es_compile_pattern(regex_t *re, const char *pattern, const char *flag, char **err);

/* Decides the injected fault of a valid request, in this order: hang,
 * endless body, timeout, 429, 5xx, reject, malformed, bad usage; counts it
 * in stats.
 * Returns 1 when the fault is the whole answer: *resp (NULL: never answer
 * when *never_answer is set, else out of memory). Returns 0 when a 200
 * answers, broken as *malformed says. */
int es_faults_inject(embed_server *server, json_t *inputs, size_t dim, es_response **resp, int *never_answer,
                     es_malformed *malformed);

/* ---- embed_server_format.c ---- */

/* The 200 answer to inputs (an array of strings), NULL when out of memory. */
es_response *es_build_embeddings(json_t *inputs, const char *model, size_t dim, int base64,
                                 int dense, es_malformed malformed);

/* The chunks of an endless answer (--endless-pattern): the first carries
 * start, each later one ES_ENDLESS_CHUNK more bytes of the "embedding"
 * string; with gzip, one deflate stream runs across them. NULL when out of
 * memory. */
typedef struct es_endless es_endless;
es_endless *es_endless_new(const char *start, size_t start_len, int gzip);

/* The next chunk, framed for Transfer-Encoding: chunked; valid until the
 * next call. NULL when out of memory. */
const char *es_endless_next(es_endless *e, size_t *len);

void es_endless_free(es_endless *e);

/* ---- embed_server_buf.c ---- */

/* Makes room for extra more bytes. Returns 0 or -1 (out of memory). */
int es_buf_reserve(es_buf *buf, size_t extra);

/* Appends len bytes and keeps the buffer NUL-terminated. */
int es_buf_append(es_buf *buf, const char *data, size_t len);

/* Appends printf-formatted text. */
int es_buf_appendf(es_buf *buf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* malloc'd printf-formatted string, NULL when out of memory. */
char *es_format_alloc(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Sets *err to message (malloc'd) when err is not NULL, else frees it. */
void es_set_err(char **err, char *message);

#endif
