/*
 * embed_server_internal.h: what the files of the embed-server share (not a
 * public API; see embed_server.h for that). The server is split by job:
 *
 *   embed_server.c          lifecycle (options, start, stop, stats) and the
 *                           serving through engine/http's httpd
 *   embed_server_cli.c      the `ragops embed-server` command line
 *   embed_server_dialects.c what each dialect accepts: its route, auth,
 *                           fields and default limits (the es_dialect table)
 *   embed_server_routes.c   the routes and the common path of an embeddings
 *                           request (body, inputs, model, limits, truncation)
 *   embed_server_faults.c   fault injection (PRNG, patterns, which fault),
 *                           the chunks of an endless answer and the
 *                           provider's rate limits (--rpm, --tpm,
 *                           --max-concurrency) shared by every client
 *   embed_server_format.c   what each dialect answers (es_answer_ops: 200
 *                           bodies, error bodies), the token count, and
 *                           growable byte buffers, formatted strings, answers
 *   embed_server_batch.c    OpenAI's files and batches (multipart upload,
 *                           a simulated queue, output and error files)
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
    int retry_after_ms;       /* > 0: send a retry-after-ms header (the rate limits' 429) */
    int immediate;            /* 1: answered at once even with --latency-ms (a rate-limit refusal) */
    char limit_headers[320];  /* the x-ratelimit-* header lines, each ending in "\r\n" ("" for none) */
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
    ES_BAD_USAGE = 4      /* valid vectors, the usage's token count = -1 */
} es_malformed;

/* What went wrong, for the error body of each dialect (es_answer_ops). */
typedef enum es_error_kind {
    ES_ERR_INVALID = 0,     /* a body the dialect does not accept */
    ES_ERR_AUTH,            /* missing or wrong key (401) */
    ES_ERR_MODEL,           /* unknown model or deployment (404) */
    ES_ERR_ROUTE,           /* no such route (404) */
    ES_ERR_RATE,            /* injected 429 */
    ES_ERR_SERVER,          /* injected 5xx */
    ES_ERR_REJECTED,        /* an input matched --reject-pattern */
    ES_ERR_TOO_MANY_INPUTS, /* more inputs than max_inputs */
    ES_ERR_INPUT_TOKENS,    /* an input over max_input_tokens, not truncated */
    ES_ERR_REQUEST_TOKENS,  /* the request over max_request_tokens */
    ES_ERR_RATE_TOKENS,     /* 429 of --tpm (ES_ERR_RATE is the one of --rpm and --rate-429) */
    ES_ERR_RATE_CONCURRENCY /* 429 of --max-concurrency */
} es_error_kind;

/* What becomes of an input over max_input_tokens. */
typedef enum es_truncate {
    ES_TRUNCATE_NONE = 0, /* refused (size error) */
    ES_TRUNCATE_END,      /* its first max_input_tokens tokens are embedded */
    ES_TRUNCATE_START     /* its last max_input_tokens tokens are embedded */
} es_truncate;

/* An embeddings request while it is read, checked and answered. */
typedef struct es_embed_request {
    json_t *root;         /* the parsed body (owned reference) */
    json_t *inputs;       /* array of non-empty strings, as sent (owned reference) */
    json_t *texts;        /* what is embedded: inputs, cut where truncated (owned reference) */
    const char *model;    /* the model named (inside root, or deployment), NULL for none */
    char *deployment;     /* Azure: the {deployment} of the path (malloc'd), NULL otherwise */
    size_t dim;           /* dimension of the answered vectors */
    int base64;           /* 1: vectors as base64 of little-endian float32 */
    es_truncate truncate; /* what the request asked for over-long inputs */
    uint64_t tokens;      /* tokens embedded (the usage answered) */
} es_embed_request;

/* What one 200 body is made of (see es_answer_ops). */
typedef struct es_answer_ctx {
    const es_embed_request *req; /* the request answered */
    const char *model_json;      /* the model as a JSON string */
    long long tokens;            /* usage to report (-1 for --bad-usage-rate) */
    unsigned long long id;       /* n of the answer's "es-<n>" */
} es_answer_ctx;

/* What a dialect answers (embed_server_format.c): the body of an error, and
 * a 200 written as head, one entry per vector, tail. */
typedef struct es_answer_ops {
    json_t *(*error_body)(es_error_kind kind, const char *message); /* NULL when out of memory */
    int (*head)(es_buf *out, const es_answer_ctx *ctx);             /* 0 or -1 (out of memory) */
    int (*tail)(es_buf *out, const es_answer_ctx *ctx);             /* 0 or -1 (out of memory) */
    int wrapped;               /* 1: each vector is {"object":"embedding","index":i,"embedding":...} */
    int has_usage;             /* 0: no token count (--bad-usage-rate adds a vector instead) */
    const char *endless_start; /* the first bytes of an endless 200 (--endless-pattern) */
} es_answer_ops;

extern const es_answer_ops es_answer_openai; /* OpenAI and Azure */
extern const es_answer_ops es_answer_ollama;
extern const es_answer_ops es_answer_tei;
extern const es_answer_ops es_answer_voyage;
extern const es_answer_ops es_answer_cohere;

/* What a dialect accepts (embed_server_dialects.c): one row of the table,
 * in the ops-table style (a name, its defaults and its functions). */
typedef struct es_dialect {
    const char *name;            /* --api value */
    int max_inputs;              /* default --max-inputs (0 = no cap) */
    int max_input_tokens;        /* default --max-input-tokens (0 = no cap) */
    int max_request_tokens;      /* default --max-request-tokens (0 = no cap) */
    int request_tokens_by_bytes; /* 1: the request cap counts ceil(bytes/4) per input, as OpenAI does */
    int body_status;             /* status of a body the dialect does not accept */
    int size_status;             /* status of a request over a limit (400 or 413) */
    const char *inputs_field;    /* "input", "inputs" or "texts" */
    int inputs_array_only;       /* 1: a bare text is not accepted in inputs_field */
    /* 1 when head is this dialect's embeddings request. */
    int (*route)(const http_head *head);
    /* 0 when the request may go on, else -1 with the 401 in *resp. */
    int (*authorize)(embed_server *server, const http_head *head, es_response **resp);
    /* Reads the dialect's own fields (model, dimension, encoding,
     * truncation, input type) into req: 0, or -1 with the error in *resp. */
    int (*read_fields)(embed_server *server, const http_head *head, es_embed_request *req, es_response **resp);
    /* Its other routes (TEI's GET /info), NULL for none: 1 when head is
     * one, with the answer in *resp (NULL: out of memory). */
    int (*extra_route)(embed_server *server, const http_head *head, es_response **resp);
    /* The provider's own text of a size error into out (returns 1), or 0
     * for the pt-BR default. NULL: always the default. */
    int (*size_message)(es_error_kind kind, size_t index, uint64_t given, long max, char *out, size_t size);
    const es_answer_ops *answer; /* what it answers */
} es_dialect;

#define ES_WINDOW_SECONDS 60 /* the window of /stats' window_requests and window_tokens */

/* A token bucket of one per-minute limit (embed_server_faults.c): holds up
 * to limit, refilled continuously at limit/60 per second, full at start. */
typedef struct es_bucket {
    long limit;       /* capacity and refill per minute, 0 = no limit */
    double level;     /* what it holds at last_ms */
    uint64_t last_ms; /* loop time (uv_now) of the last refill */
} es_bucket;

/* What was admitted during one second of the loop clock (the window). */
typedef struct es_window_slot {
    uint64_t second;   /* uv_now / 1000 of the slot (0 with the counts: unused) */
    uint64_t requests; /* requests admitted during that second */
    uint64_t tokens;   /* tokens admitted during that second */
} es_window_slot;

/* The provider's rate limits, global to the server (every connection
 * draws from the same buckets), and the last minute's admissions. */
typedef struct es_limits {
    es_bucket requests;       /* --rpm */
    es_bucket tokens;         /* --tpm */
    int max_concurrency;      /* --max-concurrency, 0 = no cap */
    uint64_t *busy_until;     /* ring (max_concurrency entries) of the loop times at which the admitted
                                 requests still in flight end (admission + --latency-ms), oldest first */
    int busy_head;            /* index of the oldest entry of busy_until */
    int busy_count;           /* entries in busy_until: requests in flight */
    es_window_slot window[ES_WINDOW_SECONDS]; /* admissions of the last minute, one slot per second */
} es_limits;

/* OpenAI's files and batches (embed_server_batch.c), opaque. */
typedef struct es_batch_store es_batch_store;

struct embed_server {
    httpd *http;               /* the HTTP server (engine/http) */
    uv_loop_t *loop;           /* the loop served on (its clock drives the batch queue) */
    es_batch_store *batches;   /* uploaded files and batches (openai dialect) */
    uint64_t seed;             /* see embed_server_opts (the batch draws and shuffles) */
    const es_dialect *dialect; /* the one dialect spoken */
    int dim;                   /* default vector dimension */
    char *model;               /* copy of opts.model or NULL */
    char *api_key;             /* copy of opts.api_key or NULL */
    int latency_ms;            /* see embed_server_opts */
    int max_inputs;            /* inputs per request, 0 = no cap (the option or the dialect's default) */
    int max_input_tokens;      /* tokens per input, 0 = no cap (idem) */
    int max_request_tokens;    /* tokens per request, 0 = no cap (idem) */
    int dense;                 /* see embed_server_opts */
    int echo_auth;             /* see embed_server_opts */
    es_faults faults;          /* fault injection */
    es_limits limits;          /* the rate limits shared by every client */
    embed_server_stats stats;  /* counters for /stats */
    uint64_t last_request_id;  /* n of the last "es-<n>" given (never reset) */
};

/* ---- embed_server_dialects.c ---- */

/* The dialect called name, NULL when there is none. */
const es_dialect *es_dialect_find(const char *name);

/* The names of the dialects, for messages ("openai, azure, ..."). */
extern const char es_dialect_names[];

/* The value of name in a query string (NULL for none): a pointer into query,
 * ending at the next '&' or the end; NULL when absent or empty. */
const char *es_query_value(const char *query, const char *name);

/* ---- embed_server_routes.c ---- */

/* Answers one complete request. NULL means out of memory, or never answer
 * when *never_answer is set; *delayed: hold the answer for --latency-ms. */
es_response *es_dispatch(embed_server *server, const http_head *req, const char *body, size_t body_len,
                         int *never_answer, int *delayed);

/* An error in the server's dialect (not counted in /stats). */
es_response *es_error(embed_server *server, int status, es_error_kind kind, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Counts a 4xx caused by the client and builds its error in the dialect. */
es_response *es_bad_request(embed_server *server, int status, es_error_kind kind, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The answer to one embeddings body already parsed (a line of a batch):
 * the same checks and vectors as the embeddings route, --reject-pattern as
 * its only fault, not counted in requests/ok. NULL when out of memory. */
es_response *es_embed_parsed(embed_server *server, const http_head *head, json_t *root);

/* es_bad_request with the dialect's status for a body it does not accept. */
es_response *es_invalid(embed_server *server, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- embed_server_batch.c ---- */

/* A store for the batch options of opts, NULL when out of memory. */
es_batch_store *es_batch_store_new(const embed_server_opts *opts);

void es_batch_store_free(es_batch_store *store);

/* Answers the files and batches routes (openai dialect only): 1 when head
 * is one of them, with the answer in *resp (NULL: out of memory), else 0. */
int es_batch_route(embed_server *server, const http_head *head, const char *body, size_t body_len,
                   es_response **resp);

/* {"validating": n, ...}: the batches in each state, NULL when out of memory. */
json_t *es_batch_status_counts(const embed_server *server);

/* One part of a multipart/form-data body. */
typedef struct es_part {
    const char *data;   /* its body (inside the request body) */
    size_t len;         /* bytes of data */
    char filename[256]; /* its filename="..." ("" for none; cut when longer) */
} es_part;

/* Finds the part called name in body (content_type gives the boundary).
 * Returns 0 with *out filled, or -1 when the body is not multipart or has
 * no such part. */
int es_multipart_find(const char *content_type, const char *body, size_t len, const char *name, es_part *out);

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

/* The rate limits of opts (--rpm, --tpm, --max-concurrency), buckets full.
 * Returns 0 or -1 (out of memory). */
int es_limits_init(es_limits *limits, const embed_server_opts *opts);

void es_limits_free(es_limits *limits);

/* Admits a request of tokens tokens or refuses it: the refill, then too
 * large for --tpm, --max-concurrency, --rpm, --tpm. Returns 0 when it is
 * admitted (taken from the buckets, holding a slot for --latency-ms,
 * counted in admitted_* and the window), or -1 with the 429 in *resp
 * (counted in rate_limited; NULL: out of memory). */
int es_limits_admit(embed_server *server, uint64_t tokens, es_response **resp);

/* Adds the x-ratelimit-* headers of the limits set (none without --rpm and
 * --tpm) to resp, a 200 or 429 of the embeddings route. */
void es_limits_tag(embed_server *server, es_response *resp);

/* {"limits": {...}, "rate_limited_by": {...}, "admitted_requests",
 * "admitted_tokens", "window_requests", "window_tokens", "in_flight"} for
 * /stats, NULL when out of memory. */
json_t *es_limits_stats(embed_server *server);

/* Forgets the window's admissions (POST /stats/reset; the buckets stay). */
void es_limits_reset_window(es_limits *limits);

/* The chunks of an endless answer (--endless-pattern): the first carries
 * start, each later one ES_ENDLESS_CHUNK more bytes of a string that never
 * ends; with gzip, one deflate stream runs across them. NULL when out of
 * memory. */
typedef struct es_endless es_endless;
es_endless *es_endless_new(const char *start, size_t start_len, int gzip);

/* The next chunk, framed for Transfer-Encoding: chunked; valid until the
 * next call. NULL when out of memory. */
const char *es_endless_next(es_endless *e, size_t *len);

void es_endless_free(es_endless *e);

/* ---- embed_server_format.c ---- */

/* The 200 answer to req in the server's dialect, NULL when out of memory. */
es_response *es_build_embeddings(const embed_server *server, const es_embed_request *req, es_malformed malformed);

/* Tokens of text[0..len) by the server's tokenizer (the usage it reports):
 * one per word (a run of letters, digits or UTF-8 bytes) and one per
 * visible ASCII punctuation mark. */
uint64_t es_count_tokens(const char *text, size_t len);

/* The byte offset where token k (from 0) of text starts, len when it has k
 * tokens or fewer. Never inside a UTF-8 character. */
size_t es_token_offset(const char *text, size_t len, uint64_t k);

/* ---- embed_server_format.c: buffers and answers ---- */

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

/* Takes ownership of body (malloc'd). Returns NULL when out of memory. */
es_response *es_response_new(int status, const char *content_type, char *body, size_t body_len);

/* A JSON answer (root is consumed; NULL root: out of memory). */
es_response *es_response_json(int status, json_t *root);

/* The JSON string of text (malloc'd), NULL when out of memory. */
char *es_json_quote(const char *text);

void es_response_free(es_response *resp);

#endif
