/*
 * embed_server.c: the local OpenAI-compatible embedding server: a libuv TCP
 * listener, a minimal HTTP/1.1 parser (keep-alive, pipelining, partial reads,
 * Expect: 100-continue), the /v1/embeddings, /stats, /stats/reset and /health
 * routes, fault injection and the `embed-server` command line.
 */
#define _GNU_SOURCE /* memmem, strndup */
#include "embed_server.h"
#include "featurehash.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <regex.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ES_MAX_HEAD (64 * 1024)                 /* request line + headers */
#define ES_MAX_BODY ((size_t)64 * 1024 * 1024)  /* 64 MiB */
#define ES_READ_CHUNK (64 * 1024)               /* bytes offered to each read */
#define ES_MAX_DIM 65536                        /* largest --dim accepted */

/* Growable byte buffer. */
typedef struct es_buf {
    char *data; /* bytes (not NUL-terminated unless stated) */
    size_t len; /* bytes used */
    size_t cap; /* bytes allocated */
} es_buf;

/* One parsed request head (request line + the headers we care about). */
typedef struct es_request {
    char method[16];       /* e.g. "POST" */
    char *path;            /* target without query string (malloc'd) */
    char *authorization;   /* Authorization header value or NULL (malloc'd) */
    size_t head_len;       /* bytes of request line + headers + blank line */
    size_t content_length; /* body bytes announced */
    int keep_alive;        /* 1 if the connection stays open after the answer */
    int expect_continue;   /* 1 if the client sent Expect: 100-continue */
    int chunked;           /* 1 if Transfer-Encoding was present (unsupported) */
} es_request;

/* An answer waiting to be written (held while the latency timer runs). */
typedef struct es_response {
    int status;               /* HTTP status code */
    const char *content_type; /* static string */
    char *body;               /* malloc'd body */
    size_t body_len;          /* body bytes */
    int retry_after_s;        /* > 0: send a Retry-After header */
    int close_after;          /* 1: close the connection after writing */
} es_response;

typedef struct es_conn es_conn;

struct embed_server {
    uv_loop_t *loop;          /* loop the server runs on */
    uv_tcp_t listener;        /* listening socket */
    int listener_open;        /* 1 while listener has to be closed */
    int port;                 /* bound port */
    int dim;                  /* default vector dimension */
    char *host;               /* copy of opts.host */
    char *model;              /* copy of opts.model or NULL */
    char *api_key;            /* copy of opts.api_key or NULL */
    int latency_ms;           /* see embed_server_opts */
    double fail_rate;         /* see embed_server_opts */
    double rate_429;          /* see embed_server_opts */
    int retry_after_s;        /* see embed_server_opts */
    double timeout_rate;      /* see embed_server_opts */
    double malformed_rate;    /* see embed_server_opts */
    int max_inputs;           /* see embed_server_opts */
    regex_t reject_re;        /* compiled --reject-pattern */
    int has_reject_re;        /* 1 if reject_re is compiled */
    regex_t hang_re;          /* compiled --hang-pattern */
    int has_hang_re;          /* 1 if hang_re is compiled */
    double bad_usage_rate;    /* see embed_server_opts */
    uint64_t rng_state;       /* splitmix64 state for fault injection */
    embed_server_stats stats; /* counters for /stats */
    es_conn *conns;           /* open connections (doubly linked) */
    int open_handles;         /* listener + connections not yet freed */
    int stopping;             /* 1 after embed_server_stop */
};

struct es_conn {
    embed_server *server;     /* owning server */
    uv_tcp_t tcp;             /* the client socket */
    uv_timer_t delay_timer;   /* fires the pending answer after --latency-ms */
    uv_shutdown_t shutdown;   /* used to close after the last answer */
    int open_handles;         /* tcp + timer handles not yet closed */
    int closing;              /* 1 once uv_close was requested */
    int shutting_down;        /* 1 once no more requests are read */
    es_buf in;                /* received bytes */
    size_t in_start;          /* offset of the first unconsumed byte in in */
    int have_head;            /* 1 when req holds the head of the next request */
    es_request req;           /* head of the request being received */
    int continue_sent;        /* 1 when "100 Continue" was sent for req */
    int busy;                 /* 1 while an answer is pending (delay or timeout) */
    es_response *pending;     /* answer waiting for delay_timer */
    es_conn *prev;            /* list links in server->conns */
    es_conn *next;            /* list links in server->conns */
};

/* One uv_write in flight with the memory it owns. */
typedef struct es_write {
    uv_write_t req; /* libuv request */
    char *head;     /* status line + headers (malloc'd) */
    char *body;     /* body (malloc'd, may be NULL) */
} es_write;

/* ------------------------------------------------------------------ */
/* Small helpers                                                        */

static int es_buf_reserve(es_buf *buf, size_t extra)
{
    if (buf->cap - buf->len >= extra)
        return 0;
    size_t cap = buf->cap ? buf->cap : 256;
    while (cap - buf->len < extra)
        cap *= 2;
    char *data = realloc(buf->data, cap);
    if (data == NULL)
        return -1;
    buf->data = data;
    buf->cap = cap;
    return 0;
}

static int es_buf_append(es_buf *buf, const char *data, size_t len)
{
    if (es_buf_reserve(buf, len + 1) != 0)
        return -1;
    memcpy(buf->data + buf->len, data, len);
    buf->len += len;
    buf->data[buf->len] = '\0';
    return 0;
}

static int es_buf_appendf(es_buf *buf, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int needed = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (needed < 0 || es_buf_reserve(buf, (size_t)needed + 1) != 0)
        return -1;
    va_start(ap, fmt);
    vsnprintf(buf->data + buf->len, (size_t)needed + 1, fmt, ap);
    va_end(ap);
    buf->len += (size_t)needed;
    return 0;
}

static char *es_strdup_or_null(const char *text)
{
    return text ? strdup(text) : NULL;
}

static char *es_format_alloc(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int needed = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (needed < 0)
        return NULL;
    char *out = malloc((size_t)needed + 1);
    if (out == NULL)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(out, (size_t)needed + 1, fmt, ap);
    va_end(ap);
    return out;
}

/* splitmix64: returns a double uniform in [0, 1). */
static double es_random_unit(embed_server *server)
{
    uint64_t z = (server->rng_state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

/* Draws only when rate > 0, so the sequence depends only on enabled faults. */
static int es_random_hit(embed_server *server, double rate)
{
    if (rate <= 0.0)
        return 0;
    return es_random_unit(server) < rate;
}

static const double es_pow10_table[] = {
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
};

/*
 * Writes value with 9 significant digits (enough to round-trip a float) into
 * out (>= 32 bytes); returns the length. Much faster than snprintf("%.9g").
 */
static size_t es_format_float(char *out, float value)
{
    if (value == 0.0f || !isfinite(value)) {
        out[0] = '0';
        return 1;
    }
    double magnitude = fabs((double)value);
    int exp10 = (int)floor(log10(magnitude));
    int scale = 8 - exp10;
    if (scale < 0 || scale > 22 || exp10 < -14)
        return (size_t)snprintf(out, 32, "%.9g", (double)value);
    uint64_t mantissa = (uint64_t)llround(magnitude * es_pow10_table[scale]);
    if (mantissa >= 1000000000ULL) {
        exp10++;
        scale--;
        mantissa = (uint64_t)llround(magnitude * es_pow10_table[scale]);
    } else if (mantissa < 100000000ULL && scale < 22) {
        exp10--;
        scale++;
        mantissa = (uint64_t)llround(magnitude * es_pow10_table[scale]);
    }
    char digits[10];
    for (int i = 8; i >= 0; i--) {
        digits[i] = (char)('0' + mantissa % 10);
        mantissa /= 10;
    }
    int ndigits = 9;
    while (ndigits > 1 && digits[ndigits - 1] == '0')
        ndigits--;

    char *p = out;
    if (value < 0)
        *p++ = '-';
    if (exp10 < 0 && exp10 >= -5) {
        *p++ = '0';
        *p++ = '.';
        for (int i = 0; i < -exp10 - 1; i++)
            *p++ = '0';
        memcpy(p, digits, (size_t)ndigits);
        p += ndigits;
    } else if (exp10 >= 0 && exp10 < 9) {
        for (int i = 0; i <= exp10; i++)
            *p++ = i < ndigits ? digits[i] : '0';
        if (ndigits > exp10 + 1) {
            *p++ = '.';
            memcpy(p, digits + exp10 + 1, (size_t)(ndigits - exp10 - 1));
            p += ndigits - exp10 - 1;
        }
    } else {
        *p++ = digits[0];
        if (ndigits > 1) {
            *p++ = '.';
            memcpy(p, digits + 1, (size_t)(ndigits - 1));
            p += ndigits - 1;
        }
        p += sprintf(p, "e%c%02d", exp10 < 0 ? '-' : '+', abs(exp10));
    }
    return (size_t)(p - out);
}

/* Appends the base64 of the little-endian float32 bytes of vec. */
static int es_append_base64_floats(es_buf *buf, const float *vec, size_t dim)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t nbytes = dim * 4;
    if (es_buf_reserve(buf, (nbytes + 2) / 3 * 4 + 1) != 0)
        return -1;
    char *p = buf->data + buf->len;
    uint32_t carry = 0; /* pending bytes, big-endian inside the group */
    int carried = 0;    /* number of pending bytes (0..2) */
    for (size_t i = 0; i < dim; i++) {
        uint32_t bits;
        memcpy(&bits, &vec[i], sizeof bits);
        for (int b = 0; b < 4; b++) {
            carry = (carry << 8) | ((bits >> (8 * b)) & 0xFFu);
            if (++carried == 3) {
                *p++ = alphabet[(carry >> 18) & 63];
                *p++ = alphabet[(carry >> 12) & 63];
                *p++ = alphabet[(carry >> 6) & 63];
                *p++ = alphabet[carry & 63];
                carry = 0;
                carried = 0;
            }
        }
    }
    if (carried == 1) {
        carry <<= 16;
        *p++ = alphabet[(carry >> 18) & 63];
        *p++ = alphabet[(carry >> 12) & 63];
        *p++ = '=';
        *p++ = '=';
    } else if (carried == 2) {
        carry <<= 8;
        *p++ = alphabet[(carry >> 18) & 63];
        *p++ = alphabet[(carry >> 12) & 63];
        *p++ = alphabet[(carry >> 6) & 63];
        *p++ = '=';
    }
    buf->len = (size_t)(p - buf->data);
    buf->data[buf->len] = '\0';
    return 0;
}

/* ------------------------------------------------------------------ */
/* Responses                                                            */

static void es_response_free(es_response *resp)
{
    if (resp == NULL)
        return;
    free(resp->body);
    free(resp);
}

/* Takes ownership of body (malloc'd). Returns NULL when out of memory. */
static es_response *es_response_new(int status, const char *content_type, char *body, size_t body_len)
{
    es_response *resp = calloc(1, sizeof *resp);
    if (resp == NULL) {
        free(body);
        return NULL;
    }
    resp->status = status;
    resp->content_type = content_type;
    resp->body = body;
    resp->body_len = body_len;
    return resp;
}

/* OpenAI-style error: {"error":{"message","type","param","code"}}. */
static es_response *es_response_error(int status, const char *type, const char *code, const char *fmt, ...)
{
    char message[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    json_t *root = json_pack("{s:{s:s, s:s, s:n, s:s?}}", "error", "message", message, "type", type,
                             "param", "code", code);
    char *body = root ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    if (body == NULL)
        return NULL;
    return es_response_new(status, "application/json", body, strlen(body));
}

static es_response *es_response_json(int status, json_t *root)
{
    char *body = root ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    if (body == NULL)
        return NULL;
    return es_response_new(status, "application/json", body, strlen(body));
}

static const char *es_status_text(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 413: return "Payload Too Large";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    default: return "Unknown";
    }
}

/* ------------------------------------------------------------------ */
/* Connections                                                          */

static void es_server_maybe_free(embed_server *server);
static void es_conn_process(es_conn *conn);

static void es_conn_free(es_conn *conn)
{
    embed_server *server = conn->server;
    if (conn->prev)
        conn->prev->next = conn->next;
    else
        server->conns = conn->next;
    if (conn->next)
        conn->next->prev = conn->prev;
    free(conn->in.data);
    free(conn->req.path);
    free(conn->req.authorization);
    es_response_free(conn->pending);
    free(conn);
    server->open_handles--;
    es_server_maybe_free(server);
}

static void es_conn_on_handle_closed(uv_handle_t *handle)
{
    es_conn *conn = handle->data;
    if (--conn->open_handles == 0)
        es_conn_free(conn);
}

static void es_conn_close(es_conn *conn)
{
    if (conn->closing)
        return;
    conn->closing = 1;
    uv_close((uv_handle_t *)&conn->delay_timer, es_conn_on_handle_closed);
    uv_close((uv_handle_t *)&conn->tcp, es_conn_on_handle_closed);
}

static void es_conn_on_shutdown(uv_shutdown_t *req, int status)
{
    es_conn_close(req->data);
}

static void es_conn_on_write(uv_write_t *req, int status)
{
    es_write *write = (es_write *)req;
    free(write->head);
    free(write->body);
    free(write);
}

/* Writes raw bytes (takes ownership of head and body). */
static int es_conn_write(es_conn *conn, char *head, size_t head_len, char *body, size_t body_len)
{
    es_write *write = calloc(1, sizeof *write);
    if (write == NULL)
        goto fail;
    write->head = head;
    write->body = body;
    uv_buf_t bufs[2] = {uv_buf_init(head, (unsigned int)head_len), uv_buf_init(body, (unsigned int)body_len)};
    if (uv_write(&write->req, (uv_stream_t *)&conn->tcp, bufs, body_len > 0 ? 2 : 1, es_conn_on_write) != 0) {
        free(write);
        goto fail;
    }
    return 0;

fail:
    free(head);
    free(body);
    return -1;
}

/* Stops reading and closes once the queued writes are flushed. */
static void es_conn_finish(es_conn *conn)
{
    if (conn->shutting_down || conn->closing)
        return;
    conn->shutting_down = 1;
    uv_read_stop((uv_stream_t *)&conn->tcp);
    conn->shutdown.data = conn;
    if (uv_shutdown(&conn->shutdown, (uv_stream_t *)&conn->tcp, es_conn_on_shutdown) != 0)
        es_conn_close(conn);
}

/* Sends resp (consumed). NULL resp (out of memory) closes the connection. */
static void es_conn_send(es_conn *conn, es_response *resp)
{
    if (conn->closing || conn->shutting_down) {
        es_response_free(resp);
        return;
    }
    if (resp == NULL) {
        es_conn_close(conn);
        return;
    }
    char retry_header[64] = "";
    if (resp->retry_after_s > 0)
        snprintf(retry_header, sizeof retry_header, "Retry-After: %d\r\n", resp->retry_after_s);
    char *head = es_format_alloc("HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s%s\r\n",
                                 resp->status, es_status_text(resp->status), resp->content_type,
                                 resp->body_len, retry_header,
                                 resp->close_after ? "Connection: close\r\n" : "");
    int close_after = resp->close_after;
    char *body = resp->body;
    size_t body_len = resp->body_len;
    resp->body = NULL;
    es_response_free(resp);
    if (head == NULL) {
        free(body);
        es_conn_close(conn);
        return;
    }
    if (es_conn_write(conn, head, strlen(head), body, body_len) != 0) {
        es_conn_close(conn);
        return;
    }
    if (close_after)
        es_conn_finish(conn);
}

/* Answers a protocol error and closes the connection. */
static void es_conn_fail(es_conn *conn, int status, const char *message)
{
    es_response *resp = es_response_error(status, "invalid_request_error", NULL, "%s", message);
    if (resp)
        resp->close_after = 1;
    conn->server->stats.bad_requests++;
    es_conn_send(conn, resp);
}

static void es_conn_on_delay(uv_timer_t *timer)
{
    es_conn *conn = timer->data;
    es_response *resp = conn->pending;
    conn->pending = NULL;
    conn->busy = 0;
    es_conn_send(conn, resp);
    es_conn_process(conn);
}

/* ------------------------------------------------------------------ */
/* HTTP head parsing                                                    */

static void es_request_reset(es_request *req)
{
    free(req->path);
    free(req->authorization);
    memset(req, 0, sizeof *req);
}

/* Case-insensitive search of token in a comma-separated header value. */
static int es_header_has_token(const char *value, size_t len, const char *token)
{
    size_t token_len = strlen(token);
    size_t pos = 0;
    while (pos < len) {
        while (pos < len && (value[pos] == ' ' || value[pos] == '\t' || value[pos] == ','))
            pos++;
        size_t start = pos;
        while (pos < len && value[pos] != ',')
            pos++;
        size_t end = pos;
        while (end > start && (value[end - 1] == ' ' || value[end - 1] == '\t'))
            end--;
        if (end - start == token_len && strncasecmp(value + start, token, token_len) == 0)
            return 1;
    }
    return 0;
}

/* Parses head[0..head_len) into req. Returns 0 or -1 (malformed). */
static int es_parse_head(const char *head, size_t head_len, es_request *req)
{
    const char *end = head + head_len;
    const char *line_end = memchr(head, '\r', head_len);
    if (line_end == NULL)
        return -1;
    /* Request line: METHOD SP TARGET SP HTTP/1.x */
    const char *sp1 = memchr(head, ' ', (size_t)(line_end - head));
    if (sp1 == NULL || sp1 == head || (size_t)(sp1 - head) >= sizeof req->method)
        return -1;
    const char *sp2 = memchr(sp1 + 1, ' ', (size_t)(line_end - sp1 - 1));
    if (sp2 == NULL || sp2 == sp1 + 1)
        return -1;
    memcpy(req->method, head, (size_t)(sp1 - head));
    req->method[sp1 - head] = '\0';
    const char *target = sp1 + 1;
    size_t target_len = (size_t)(sp2 - target);
    const char *query = memchr(target, '?', target_len);
    if (query)
        target_len = (size_t)(query - target);
    req->path = strndup(target, target_len);
    if (req->path == NULL)
        return -1;
    const char *version = sp2 + 1;
    size_t version_len = (size_t)(line_end - version);
    if (version_len == 8 && memcmp(version, "HTTP/1.1", 8) == 0)
        req->keep_alive = 1;
    else if (version_len == 8 && memcmp(version, "HTTP/1.0", 8) == 0)
        req->keep_alive = 0;
    else
        return -1;

    int saw_length = 0;
    const char *line = line_end + 2;
    while (line < end) {
        const char *eol = memchr(line, '\r', (size_t)(end - line));
        if (eol == NULL || eol == line)
            break; /* blank line ends the head */
        const char *colon = memchr(line, ':', (size_t)(eol - line));
        if (colon == NULL || colon == line)
            return -1;
        size_t name_len = (size_t)(colon - line);
        const char *value = colon + 1;
        while (value < eol && (*value == ' ' || *value == '\t'))
            value++;
        size_t value_len = (size_t)(eol - value);
        while (value_len > 0 && (value[value_len - 1] == ' ' || value[value_len - 1] == '\t'))
            value_len--;

        if (name_len == 14 && strncasecmp(line, "Content-Length", 14) == 0) {
            if (value_len == 0 || value_len > 18)
                return -1;
            size_t length = 0;
            for (size_t i = 0; i < value_len; i++) {
                if (value[i] < '0' || value[i] > '9')
                    return -1;
                length = length * 10 + (size_t)(value[i] - '0');
            }
            if (saw_length && length != req->content_length)
                return -1;
            saw_length = 1;
            req->content_length = length;
        } else if (name_len == 17 && strncasecmp(line, "Transfer-Encoding", 17) == 0) {
            req->chunked = 1;
        } else if (name_len == 10 && strncasecmp(line, "Connection", 10) == 0) {
            if (es_header_has_token(value, value_len, "close"))
                req->keep_alive = 0;
            else if (es_header_has_token(value, value_len, "keep-alive"))
                req->keep_alive = 1;
        } else if (name_len == 6 && strncasecmp(line, "Expect", 6) == 0) {
            if (es_header_has_token(value, value_len, "100-continue"))
                req->expect_continue = 1;
        } else if (name_len == 13 && strncasecmp(line, "Authorization", 13) == 0) {
            free(req->authorization);
            req->authorization = strndup(value, value_len);
            if (req->authorization == NULL)
                return -1;
        }
        line = eol + 2;
    }
    req->head_len = head_len;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Routes                                                               */

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

/* Builds the 200 body. malformed_kind: 0 valid, 1 truncated JSON,
 * 2 one vector too many, 3 vectors one component short, 4 valid vectors
 * with usage.prompt_tokens = -1. */
static es_response *es_build_embeddings(embed_server *server, json_t *inputs, const char *model,
                                        size_t dim, int base64, int malformed_kind)
{
    es_buf out = {0};
    float *vec = NULL;
    char *model_json = NULL;
    size_t count = json_array_size(inputs);
    uint64_t tokens = 0;

    vec = malloc(dim * sizeof(float));
    json_t *model_str = json_string(model);
    model_json = model_str ? json_dumps(model_str, JSON_ENCODE_ANY) : NULL;
    json_decref(model_str);
    if (vec == NULL || model_json == NULL)
        goto fail;
    if (es_buf_appendf(&out, "{\"object\":\"list\",\"data\":[") != 0)
        goto fail;
    size_t entries = malformed_kind == 2 ? count + 1 : count;
    size_t emitted_dim = malformed_kind == 3 ? dim - 1 : dim;
    for (size_t i = 0; i < entries; i++) {
        json_t *item = json_array_get(inputs, i < count ? i : count - 1);
        size_t len = json_string_length(item);
        if (i < count)
            tokens += (len + 3) / 4;
        featurehash_embed(json_string_value(item), len, vec, dim);
        if (es_buf_appendf(&out, "%s{\"object\":\"embedding\",\"index\":%zu,\"embedding\":",
                           i ? "," : "", i) != 0)
            goto fail;
        if (base64) {
            if (es_buf_append(&out, "\"", 1) != 0 || es_append_base64_floats(&out, vec, emitted_dim) != 0 ||
                es_buf_append(&out, "\"}", 2) != 0)
                goto fail;
        } else {
            if (es_buf_reserve(&out, emitted_dim * 17 + 8) != 0)
                goto fail;
            char *p = out.data + out.len;
            *p++ = '[';
            for (size_t k = 0; k < emitted_dim; k++) {
                if (k)
                    *p++ = ',';
                p += es_format_float(p, vec[k]);
            }
            *p++ = ']';
            *p++ = '}';
            out.len = (size_t)(p - out.data);
            out.data[out.len] = '\0';
        }
    }
    if (es_buf_appendf(&out, "],\"model\":%s,\"usage\":{\"prompt_tokens\":%lld,\"total_tokens\":%llu}}",
                       model_json, malformed_kind == 4 ? -1LL : (long long)tokens,
                       (unsigned long long)tokens) != 0)
        goto fail;
    if (malformed_kind == 1)
        out.len = out.len / 2; /* truncated JSON */
    free(vec);
    free(model_json);
    return es_response_new(200, "application/json", out.data, out.len);

fail:
    free(out.data);
    free(vec);
    free(model_json);
    return NULL;
}

/* Index of the first input matching re, or -1. */
static long es_first_match(const regex_t *re, json_t *inputs)
{
    for (size_t i = 0; i < json_array_size(inputs); i++)
        if (regexec(re, json_string_value(json_array_get(inputs, i)), 0, NULL, 0) == 0)
            return (long)i;
    return -1;
}

/* Returns the answer, or NULL with *never_answer = 1 for an injected timeout.
 * NULL with *never_answer = 0 means out of memory. */
static es_response *es_route_embeddings(es_conn *conn, const char *body, size_t body_len, int *never_answer)
{
    embed_server *server = conn->server;
    es_response *resp = NULL;
    json_error_t jerr;
    json_t *root = NULL;
    json_t *inputs = NULL;

    server->stats.requests++;
    if (server->api_key) {
        const char *auth = conn->req.authorization;
        size_t key_len = strlen(server->api_key);
        if (auth == NULL || strncasecmp(auth, "Bearer ", 7) != 0 || strlen(auth + 7) != key_len ||
            memcmp(auth + 7, server->api_key, key_len) != 0) {
            server->stats.bad_requests++;
            return es_response_error(401, "invalid_request_error", "invalid_api_key",
                                     "chave de API ausente ou inválida (use o cabeçalho Authorization: Bearer)");
        }
    }

    root = json_loadb(body, body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL || !json_is_object(root)) {
        server->stats.bad_requests++;
        if (root == NULL)
            resp = es_response_error(400, "invalid_request_error", NULL,
                                     "o corpo da requisição não é um JSON válido (linha %d, coluna %d)",
                                     jerr.line, jerr.column);
        else
            resp = es_response_error(400, "invalid_request_error", NULL,
                                     "o corpo da requisição deve ser um objeto JSON");
        goto done;
    }

    json_t *model = json_object_get(root, "model");
    if (!json_is_string(model) || json_string_length(model) == 0) {
        server->stats.bad_requests++;
        resp = es_response_error(400, "invalid_request_error", NULL,
                                 "o campo 'model' é obrigatório e deve ser um texto não vazio");
        goto done;
    }

    json_t *input = json_object_get(root, "input");
    if (json_is_string(input)) {
        inputs = json_array();
        if (inputs == NULL || json_array_append(inputs, input) != 0)
            goto done;
    } else if (json_is_array(input)) {
        inputs = json_incref(input);
    } else {
        server->stats.bad_requests++;
        resp = es_response_error(400, "invalid_request_error", NULL,
                                 "o campo 'input' é obrigatório e deve ser um texto ou uma lista de textos");
        goto done;
    }
    size_t count = json_array_size(inputs);
    if (count == 0) {
        server->stats.bad_requests++;
        resp = es_response_error(400, "invalid_request_error", NULL, "o campo 'input' não pode ser uma lista vazia");
        goto done;
    }
    if (count > (size_t)server->max_inputs) {
        server->stats.bad_requests++;
        resp = es_response_error(400, "invalid_request_error", NULL,
                                 "excesso de entradas: %zu recebidas, o máximo é %d", count, server->max_inputs);
        goto done;
    }
    for (size_t i = 0; i < count; i++) {
        json_t *item = json_array_get(inputs, i);
        if (!json_is_string(item)) {
            server->stats.bad_requests++;
            resp = es_response_error(400, "invalid_request_error", NULL,
                                     "a entrada %zu não é um texto (apenas textos são aceitos)", i);
            goto done;
        }
        if (json_string_length(item) == 0) {
            server->stats.bad_requests++;
            resp = es_response_error(400, "invalid_request_error", NULL, "a entrada %zu é um texto vazio", i);
            goto done;
        }
    }

    int base64 = 0;
    json_t *format = json_object_get(root, "encoding_format");
    if (format != NULL && !json_is_null(format)) {
        const char *value = json_string_value(format);
        if (value != NULL && strcmp(value, "base64") == 0) {
            base64 = 1;
        } else if (value == NULL || strcmp(value, "float") != 0) {
            server->stats.bad_requests++;
            resp = es_response_error(400, "invalid_request_error", NULL,
                                     "'encoding_format' deve ser \"float\" ou \"base64\"");
            goto done;
        }
    }

    size_t dim = (size_t)server->dim;
    json_t *dimensions = json_object_get(root, "dimensions");
    if (dimensions != NULL && !json_is_null(dimensions)) {
        json_int_t wanted = json_is_integer(dimensions) ? json_integer_value(dimensions) : 0;
        if (wanted < 1 || wanted > server->dim) {
            server->stats.bad_requests++;
            resp = es_response_error(400, "invalid_request_error", NULL,
                                     "'dimensions' deve ser um inteiro entre 1 e %d", server->dim);
            goto done;
        }
        dim = (size_t)wanted;
    }

    const char *model_name = json_string_value(model);
    if (server->model && strcmp(server->model, model_name) != 0) {
        server->stats.bad_requests++;
        resp = es_response_error(404, "invalid_request_error", "model_not_found", "modelo '%s' não encontrado",
                                 model_name);
        goto done;
    }

    /* Fault injection, in this order: hang, timeout, 429, 5xx, reject, malformed, bad usage. */
    if ((server->has_hang_re && es_first_match(&server->hang_re, inputs) >= 0) ||
        es_random_hit(server, server->timeout_rate)) {
        server->stats.timeouts++;
        *never_answer = 1;
        goto done;
    }
    if (es_random_hit(server, server->rate_429)) {
        server->stats.rate_limited++;
        resp = es_response_error(429, "requests", "rate_limit_exceeded",
                                 "limite de requisições excedido (simulado); tente novamente em %d s",
                                 server->retry_after_s);
        if (resp)
            resp->retry_after_s = server->retry_after_s;
        goto done;
    }
    if (es_random_hit(server, server->fail_rate)) {
        static const int codes[] = {500, 502, 503};
        int status = codes[(int)(es_random_unit(server) * 3) % 3];
        server->stats.errors_5xx++;
        resp = es_response_error(status, "server_error", NULL, "falha simulada do servidor de embeddings (HTTP %d)",
                                 status);
        goto done;
    }
    long rejected = server->has_reject_re ? es_first_match(&server->reject_re, inputs) : -1;
    if (rejected >= 0) {
        server->stats.rejected++;
        resp = es_response_error(400, "invalid_request_error", NULL,
                                 "entrada rejeitada: a entrada %ld corresponde ao padrão de rejeição", rejected);
        goto done;
    }
    int malformed_kind = 0;
    if (es_random_hit(server, server->malformed_rate)) {
        server->stats.malformed++;
        malformed_kind = 1 + (int)(es_random_unit(server) * 3) % 3;
        if (malformed_kind == 3 && dim == 1)
            malformed_kind = 2;
    } else if (es_random_hit(server, server->bad_usage_rate)) {
        server->stats.malformed++;
        malformed_kind = 4;
    } else {
        server->stats.ok++;
        server->stats.inputs += count;
    }
    resp = es_build_embeddings(server, inputs, model_name, dim, base64, malformed_kind);

done:
    json_decref(inputs);
    json_decref(root);
    return resp;
}

/* Dispatches one complete request; returns the answer (NULL: see never_answer). */
static es_response *es_dispatch(es_conn *conn, const char *body, size_t body_len, int *never_answer, int *delayed)
{
    embed_server *server = conn->server;
    const es_request *req = &conn->req;
    int is_get = strcmp(req->method, "GET") == 0;
    int is_post = strcmp(req->method, "POST") == 0;

    if (is_post && strcmp(req->path, "/v1/embeddings") == 0) {
        *delayed = server->latency_ms > 0;
        return es_route_embeddings(conn, body, body_len, never_answer);
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
    server->stats.bad_requests++;
    return es_response_error(404, "invalid_request_error", "not_found", "rota não encontrada: %s %s", req->method,
                             req->path);
}

/* Parses and answers every complete request in the buffer, in order. */
static void es_conn_process(es_conn *conn)
{
    while (!conn->busy && !conn->closing && !conn->shutting_down) {
        char *data = conn->in.data + conn->in_start;
        size_t avail = conn->in.len - conn->in_start;
        if (!conn->have_head) {
            char *head_end = avail >= 4 ? memmem(data, avail, "\r\n\r\n", 4) : NULL;
            if (head_end == NULL) {
                if (avail > ES_MAX_HEAD)
                    es_conn_fail(conn, 431, "cabeçalhos da requisição grandes demais");
                return;
            }
            size_t head_len = (size_t)(head_end - data) + 4;
            if (head_len > ES_MAX_HEAD) {
                es_conn_fail(conn, 431, "cabeçalhos da requisição grandes demais");
                return;
            }
            es_request_reset(&conn->req);
            if (es_parse_head(data, head_len, &conn->req) != 0) {
                es_conn_fail(conn, 400, "requisição HTTP malformada");
                return;
            }
            conn->have_head = 1;
            conn->continue_sent = 0;
            if (conn->req.chunked) {
                es_conn_fail(conn, 501, "Transfer-Encoding não é suportado; envie Content-Length");
                return;
            }
            if (conn->req.content_length > ES_MAX_BODY) {
                es_conn_fail(conn, 413, "corpo da requisição maior que o limite de 64 MiB");
                return;
            }
        }
        size_t total = conn->req.head_len + conn->req.content_length;
        if (avail < total) {
            if (conn->req.expect_continue && !conn->continue_sent) {
                static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
                char *copy = strdup(cont);
                conn->continue_sent = 1;
                if (copy == NULL || es_conn_write(conn, copy, sizeof cont - 1, NULL, 0) != 0)
                    es_conn_close(conn);
            }
            return;
        }

        int never_answer = 0, delayed = 0;
        es_response *resp = es_dispatch(conn, data + conn->req.head_len, conn->req.content_length,
                                        &never_answer, &delayed);
        int keep_alive = conn->req.keep_alive;
        conn->in_start += total;
        conn->have_head = 0;
        es_request_reset(&conn->req);
        if (never_answer) {
            conn->busy = 1; /* hold the connection: nothing else is answered */
            return;
        }
        if (resp && !keep_alive)
            resp->close_after = 1;
        if (resp && delayed) {
            conn->pending = resp;
            conn->busy = 1;
            if (uv_timer_start(&conn->delay_timer, es_conn_on_delay, (uint64_t)conn->server->latency_ms, 0) != 0)
                es_conn_close(conn);
            return;
        }
        es_conn_send(conn, resp);
    }
}

static void es_conn_on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    es_conn *conn = handle->data;
    es_buf *in = &conn->in;
    /* Drop consumed bytes before growing. */
    if (conn->in_start > 0 && (conn->in_start == in->len || conn->in_start >= in->cap / 2)) {
        memmove(in->data, in->data + conn->in_start, in->len - conn->in_start);
        in->len -= conn->in_start;
        conn->in_start = 0;
    }
    if (es_buf_reserve(in, ES_READ_CHUNK) != 0) {
        *buf = uv_buf_init(NULL, 0);
        return;
    }
    *buf = uv_buf_init(in->data + in->len, (unsigned int)(in->cap - in->len));
}

static void es_conn_on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    es_conn *conn = stream->data;
    if (nread < 0) {
        es_conn_close(conn);
        return;
    }
    conn->in.len += (size_t)nread;
    if (conn->in.len - conn->in_start > ES_MAX_BODY + ES_MAX_HEAD) {
        es_conn_close(conn); /* client keeps sending while we hold an answer */
        return;
    }
    es_conn_process(conn);
}

static void es_server_on_connection(uv_stream_t *listener, int status)
{
    embed_server *server = listener->data;
    if (status < 0 || server->stopping)
        return;
    es_conn *conn = calloc(1, sizeof *conn);
    if (conn == NULL)
        return;
    conn->server = server;
    uv_tcp_init(server->loop, &conn->tcp);
    uv_timer_init(server->loop, &conn->delay_timer);
    conn->tcp.data = conn;
    conn->delay_timer.data = conn;
    conn->open_handles = 2;
    conn->next = server->conns;
    if (server->conns)
        server->conns->prev = conn;
    server->conns = conn;
    server->open_handles++;
    if (uv_accept(listener, (uv_stream_t *)&conn->tcp) != 0) {
        es_conn_close(conn);
        return;
    }
    uv_tcp_nodelay(&conn->tcp, 1);
    if (uv_read_start((uv_stream_t *)&conn->tcp, es_conn_on_alloc, es_conn_on_read) != 0)
        es_conn_close(conn);
}

/* ------------------------------------------------------------------ */
/* Server lifecycle                                                     */

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

static void es_server_free(embed_server *server)
{
    if (server->has_reject_re)
        regfree(&server->reject_re);
    if (server->has_hang_re)
        regfree(&server->hang_re);
    free(server->host);
    free(server->model);
    free(server->api_key);
    free(server);
}

static void es_server_maybe_free(embed_server *server)
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

static void es_set_err(char **err, char *message)
{
    if (err)
        *err = message;
    else
        free(message);
}

/* Compiles pattern (the value of flag) into re. Returns 0, or -1 with a
 * malloc'd pt-BR message in *err. */
static int es_compile_pattern(regex_t *re, const char *pattern, const char *flag, char **err)
{
    int rc = regcomp(re, pattern, REG_EXTENDED | REG_NOSUB);
    char detail[256];
    if (rc == 0)
        return 0;
    regerror(rc, re, detail, sizeof detail);
    es_set_err(err, es_format_alloc("%s inválido: %s", flag, detail));
    return -1;
}

embed_server *embed_server_start(uv_loop_t *loop, const embed_server_opts *opts, char **err)
{
    embed_server *server = NULL;
    struct sockaddr_storage addr;
    int rc;

    if (err)
        *err = NULL;
    if (opts->dim < 1 || opts->dim > ES_MAX_DIM || opts->port < 0 || opts->port > 65535 || opts->max_inputs < 1) {
        es_set_err(err, es_format_alloc("opções inválidas: dim deve estar entre 1 e %d, porta entre 0 e 65535",
                                        ES_MAX_DIM));
        return NULL;
    }
    server = calloc(1, sizeof *server);
    if (server == NULL)
        goto fail;
    server->loop = loop;
    server->host = strdup(opts->host ? opts->host : "127.0.0.1");
    server->model = es_strdup_or_null(opts->model);
    server->api_key = es_strdup_or_null(opts->api_key);
    if (server->host == NULL || (opts->model && !server->model) || (opts->api_key && !server->api_key))
        goto fail;
    server->dim = opts->dim;
    server->latency_ms = opts->latency_ms;
    server->fail_rate = opts->fail_rate;
    server->rate_429 = opts->rate_429;
    server->retry_after_s = opts->retry_after_s;
    server->timeout_rate = opts->timeout_rate;
    server->malformed_rate = opts->malformed_rate;
    server->max_inputs = opts->max_inputs;
    server->bad_usage_rate = opts->bad_usage_rate;
    server->rng_state = opts->seed;

    if (opts->reject_pattern) {
        if (es_compile_pattern(&server->reject_re, opts->reject_pattern, "--reject-pattern", err) != 0)
            goto fail;
        server->has_reject_re = 1;
    }
    if (opts->hang_pattern) {
        if (es_compile_pattern(&server->hang_re, opts->hang_pattern, "--hang-pattern", err) != 0)
            goto fail;
        server->has_hang_re = 1;
    }

    const char *host = strcmp(server->host, "localhost") == 0 ? "127.0.0.1" : server->host;
    if (uv_ip4_addr(host, opts->port, (struct sockaddr_in *)&addr) != 0 &&
        uv_ip6_addr(host, opts->port, (struct sockaddr_in6 *)&addr) != 0) {
        es_set_err(err, es_format_alloc("endereço inválido '%s': use um IP numérico (ex.: 127.0.0.1)", server->host));
        goto fail;
    }

    rc = uv_tcp_init(loop, &server->listener);
    if (rc != 0) {
        es_set_err(err, es_format_alloc("não foi possível criar o socket: %s", uv_strerror(rc)));
        goto fail;
    }
    server->listener.data = server;
    server->listener_open = 1;
    server->open_handles = 1;
    rc = uv_tcp_bind(&server->listener, (const struct sockaddr *)&addr, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&server->listener, 128, es_server_on_connection);
    if (rc != 0) {
        es_set_err(err, es_format_alloc("não foi possível escutar em %s:%d: %s", server->host, opts->port,
                                        uv_strerror(rc)));
        goto fail;
    }
    struct sockaddr_storage bound;
    int bound_len = sizeof bound;
    rc = uv_tcp_getsockname(&server->listener, (struct sockaddr *)&bound, &bound_len);
    if (rc != 0) {
        es_set_err(err, es_format_alloc("não foi possível obter a porta: %s", uv_strerror(rc)));
        goto fail;
    }
    server->port = bound.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&bound)->sin6_port)
                                               : ntohs(((struct sockaddr_in *)&bound)->sin_port);
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
    for (es_conn *conn = server->conns; conn; conn = conn->next)
        es_conn_close(conn);
    uv_close((uv_handle_t *)&server->listener, es_server_on_listener_closed);
}

/* ------------------------------------------------------------------ */
/* Command line                                                         */

static const char es_usage[] =
    "Uso: ragops embed-server [opções]\n"
    "\n"
    "Servidor local de embeddings compatível com a API da OpenAI (POST /v1/embeddings),\n"
    "determinístico (feature hashing de palavras e trigramas), com injeção de falhas.\n"
    "\n"
    "Opções:\n"
    "  --host H             endereço IP de escuta (padrão 127.0.0.1)\n"
    "  --port P             porta (padrão 8080; 0 = porta livre escolhida pelo sistema)\n"
    "  --dim D              dimensão dos vetores (padrão 1536)\n"
    "  --model NOME         aceita apenas este modelo (padrão: qualquer nome; outro => 404)\n"
    "  --latency-ms N       atraso adicionado a cada requisição, em ms (padrão 0)\n"
    "  --fail-rate F        probabilidade (0..1) de responder 500/502/503\n"
    "  --rate-429 F         probabilidade (0..1) de responder 429 com Retry-After\n"
    "  --retry-after S      segundos no cabeçalho Retry-After (padrão 1)\n"
    "  --timeout-rate F     probabilidade (0..1) de aceitar a requisição e nunca responder\n"
    "  --malformed-rate F   probabilidade (0..1) de responder 200 com corpo inválido\n"
    "  --reject-pattern RE  regex POSIX estendida: entrada que casar => 400 (erro permanente)\n"
    "  --hang-pattern RE    regex POSIX estendida: requisição com entrada que casar nunca é respondida\n"
    "  --bad-usage-rate F   probabilidade (0..1) de responder 200 com usage.prompt_tokens = -1\n"
    "  --seed N             semente da aleatoriedade das falhas (padrão 42)\n"
    "  --api-key CHAVE      exige o cabeçalho Authorization: Bearer CHAVE (senão 401)\n"
    "  --max-inputs N       máximo de entradas por requisição (padrão 2048; acima => 400)\n"
    "  --help               mostra esta ajuda\n"
    "\n"
    "Rotas: POST /v1/embeddings, GET /stats, POST /stats/reset, GET /health.\n"
    "Encerra de forma limpa com SIGINT/SIGTERM.\n";

static int es_parse_long(const char *text, long min, long max, long *out)
{
    char *end = NULL;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || value < min || value > max)
        return -1;
    *out = value;
    return 0;
}

static int es_parse_rate(const char *text, double *out)
{
    char *end = NULL;
    errno = 0;
    double value = strtod(text, &end);
    if (errno != 0 || end == text || *end != '\0' || !(value >= 0.0 && value <= 1.0))
        return -1;
    *out = value;
    return 0;
}

static int es_parse_seed(const char *text, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    if (text[0] == '-')
        return -1;
    unsigned long long value = strtoull(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0')
        return -1;
    *out = (uint64_t)value;
    return 0;
}

/* Fills opts from argv. Returns 0 ok, 1 help shown, 2 usage error. */
static int es_parse_args(int argc, char **argv, embed_server_opts *opts)
{
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            fputs(es_usage, stdout);
            return 1;
        }
        if (strncmp(arg, "--", 2) != 0) {
            fprintf(stderr, "embed-server: argumento inesperado '%s' (veja --help)\n", arg);
            return 2;
        }
        /* Accept both "--flag value" and "--flag=value". */
        char name[32];
        const char *value = NULL;
        const char *eq = strchr(arg, '=');
        size_t name_len = eq ? (size_t)(eq - arg) : strlen(arg);
        if (name_len >= sizeof name) {
            fprintf(stderr, "embed-server: opção desconhecida '%s' (veja --help)\n", arg);
            return 2;
        }
        memcpy(name, arg, name_len);
        name[name_len] = '\0';
        static const char *const known[] = {"--host", "--port", "--dim", "--model", "--latency-ms",
                                            "--fail-rate", "--rate-429", "--retry-after", "--timeout-rate",
                                            "--malformed-rate", "--reject-pattern", "--seed", "--api-key",
                                            "--max-inputs", "--hang-pattern", "--bad-usage-rate"};
        int is_known = 0;
        for (size_t k = 0; k < sizeof known / sizeof known[0]; k++)
            is_known |= strcmp(name, known[k]) == 0;
        if (!is_known) {
            fprintf(stderr, "embed-server: opção desconhecida '%s' (veja --help)\n", name);
            return 2;
        }
        if (eq) {
            value = eq + 1;
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            fprintf(stderr, "embed-server: a opção %s exige um valor\n", name);
            return 2;
        }

        long number = 0;
        int bad = 0;
        if (strcmp(name, "--host") == 0) {
            opts->host = value;
            bad = value[0] == '\0';
        } else if (strcmp(name, "--port") == 0) {
            bad = es_parse_long(value, 0, 65535, &number);
            opts->port = (int)number;
        } else if (strcmp(name, "--dim") == 0) {
            bad = es_parse_long(value, 1, ES_MAX_DIM, &number);
            opts->dim = (int)number;
        } else if (strcmp(name, "--model") == 0) {
            opts->model = value;
            bad = value[0] == '\0';
        } else if (strcmp(name, "--latency-ms") == 0) {
            bad = es_parse_long(value, 0, 3600000, &number);
            opts->latency_ms = (int)number;
        } else if (strcmp(name, "--fail-rate") == 0) {
            bad = es_parse_rate(value, &opts->fail_rate);
        } else if (strcmp(name, "--rate-429") == 0) {
            bad = es_parse_rate(value, &opts->rate_429);
        } else if (strcmp(name, "--retry-after") == 0) {
            bad = es_parse_long(value, 0, 86400, &number);
            opts->retry_after_s = (int)number;
        } else if (strcmp(name, "--timeout-rate") == 0) {
            bad = es_parse_rate(value, &opts->timeout_rate);
        } else if (strcmp(name, "--malformed-rate") == 0) {
            bad = es_parse_rate(value, &opts->malformed_rate);
        } else if (strcmp(name, "--reject-pattern") == 0) {
            opts->reject_pattern = value;
        } else if (strcmp(name, "--hang-pattern") == 0) {
            opts->hang_pattern = value;
        } else if (strcmp(name, "--bad-usage-rate") == 0) {
            bad = es_parse_rate(value, &opts->bad_usage_rate);
        } else if (strcmp(name, "--seed") == 0) {
            bad = es_parse_seed(value, &opts->seed);
        } else if (strcmp(name, "--api-key") == 0) {
            opts->api_key = value;
            bad = value[0] == '\0';
        } else if (strcmp(name, "--max-inputs") == 0) {
            bad = es_parse_long(value, 1, 1000000, &number);
            opts->max_inputs = (int)number;
        }
        if (bad) {
            /* Never echo the API key. */
            fprintf(stderr, "embed-server: valor inválido para %s: '%s'\n", name,
                    strcmp(name, "--api-key") == 0 ? "(oculto)" : value);
            return 2;
        }
    }
    static const char *const pattern_flags[] = {"--reject-pattern", "--hang-pattern"};
    const char *patterns[] = {opts->reject_pattern, opts->hang_pattern};
    for (int k = 0; k < 2; k++) {
        regex_t probe;
        char *err = NULL;
        if (!patterns[k])
            continue;
        if (es_compile_pattern(&probe, patterns[k], pattern_flags[k], &err) != 0) {
            fprintf(stderr, "embed-server: %s\n", err ? err : pattern_flags[k]);
            free(err);
            return 2;
        }
        regfree(&probe);
    }
    struct sockaddr_in6 probe_addr;
    if (strcmp(opts->host, "localhost") != 0 &&
        uv_ip4_addr(opts->host, 0, (struct sockaddr_in *)&probe_addr) != 0 &&
        uv_ip6_addr(opts->host, 0, &probe_addr) != 0) {
        fprintf(stderr, "embed-server: --host inválido '%s': use um IP numérico (ex.: 127.0.0.1)\n", opts->host);
        return 2;
    }
    return 0;
}

/* State of the running command (signal handles + server). */
typedef struct es_main_state {
    embed_server *server;  /* the running server */
    uv_signal_t sigint;    /* SIGINT watcher */
    uv_signal_t sigterm;   /* SIGTERM watcher */
} es_main_state;

static void es_main_on_signal(uv_signal_t *handle, int signum)
{
    es_main_state *state = handle->data;
    embed_server_stop(state->server);
    state->server = NULL;
    uv_close((uv_handle_t *)&state->sigint, NULL);
    uv_close((uv_handle_t *)&state->sigterm, NULL);
}

int embed_server_main(int argc, char **argv)
{
    embed_server_opts opts;
    es_main_state state;
    char *err = NULL;
    uv_loop_t *loop;

    embed_server_opts_init(&opts);
    int parsed = es_parse_args(argc, argv, &opts);
    if (parsed == 1)
        return 0;
    if (parsed != 0)
        return 2;

    signal(SIGPIPE, SIG_IGN);
    loop = uv_default_loop();
    memset(&state, 0, sizeof state);
    state.server = embed_server_start(loop, &opts, &err);
    if (state.server == NULL) {
        fprintf(stderr, "embed-server: %s\n", err ? err : "falha ao iniciar");
        free(err);
        uv_run(loop, UV_RUN_DEFAULT); /* let a half-opened listener close */
        return 4;
    }
    uv_signal_init(loop, &state.sigint);
    uv_signal_init(loop, &state.sigterm);
    state.sigint.data = &state;
    state.sigterm.data = &state;
    uv_signal_start(&state.sigint, es_main_on_signal, SIGINT);
    uv_signal_start(&state.sigterm, es_main_on_signal, SIGTERM);

    int ipv6 = strchr(opts.host, ':') != NULL;
    printf("embed-server escutando em http://%s%s%s:%d/v1 (dim=%d)\n", ipv6 ? "[" : "", opts.host,
           ipv6 ? "]" : "", embed_server_port(state.server), opts.dim);
    fflush(stdout);

    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    return 0;
}
