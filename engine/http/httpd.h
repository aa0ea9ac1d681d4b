/*
 * httpd.h: a small HTTP/1.1 server on the libuv loop. Every resource is
 * bounded: the head of a request (431 and close), the time a head may take
 * to arrive (slow clients are closed), the idle time of a keep-alive
 * connection, the open connections (the oldest one is closed to make room)
 * and the answers queued to a client that does not read.
 *
 * Two ways to answer, in order on each connection (keep-alive, pipelining):
 *   - handler (the metrics endpoint): GET/HEAD without a body, answered at
 *     once by a synchronous function of the path; anything else is refused.
 *   - on_request (the embed-server): any method, a body up to max_body bytes
 *     (Content-Length; Expect: 100-continue answered), answered now
 *     (httpd_respond), after a delay (httpd_respond_later), as a chunked
 *     stream (httpd_respond_stream) or never (no call: the connection stays
 *     held until the client leaves). Until the answer is on its way, later
 *     requests of the connection wait in its buffer.
 */
#ifndef RAGOPS_HTTPD_H
#define RAGOPS_HTTPD_H

#include "http_parse.h"

#include <stddef.h>
#include <uv.h>

#define HTTPD_DEFAULT_MAX_HEAD (16 * 1024)    /* bytes of request line + headers */
#define HTTPD_DEFAULT_READ_TIMEOUT_MS 5000    /* a head must arrive within this */
#define HTTPD_DEFAULT_IDLE_TIMEOUT_MS 15000   /* keep-alive wait for the next request */
#define HTTPD_DEFAULT_MAX_CONNS 64            /* open connections */
#define HTTPD_MAX_QUEUED_BYTES (1024 * 1024)  /* answers queued to one client */
#define HTTPD_TIMEOUT_NONE (-1)               /* read_timeout_ms / idle_timeout_ms: never */

typedef struct httpd httpd;

/* What a handler answers. */
typedef struct httpd_answer {
    int status;               /* HTTP status code (100..599) */
    char content_type[128];   /* Content-Type value */
    char *body;               /* malloc'd body, owned by the server afterwards */
    size_t body_len;          /* body bytes */
    char extra_headers[1024]; /* more header lines, each ending in "\r\n" ("" for none) */
    int close_after;          /* 1: close the connection after this answer */
} httpd_answer;

/* One request being answered by on_request; valid only during that call. */
typedef struct httpd_request httpd_request;

/* Answers (or not) the request req: head, then body_len bytes of body. */
typedef void (*httpd_request_fn)(void *handler_data, httpd_request *req, const http_head *head, const char *body,
                                 size_t body_len);

/* Fills answer (a malloc'd body) for a protocol error of the server
 * (status 400, 413, 431, 501, with a pt-BR text); leaving answer->body NULL
 * keeps the plain-text answer. The connection closes after it. */
typedef void (*httpd_error_fn)(void *handler_data, int status, const char *text, httpd_answer *answer);

/* The next chunk of a streamed body, framed for Transfer-Encoding: chunked
 * and valid until the next call; NULL closes the connection. */
typedef const char *(*httpd_stream_next_fn)(void *stream, size_t *len);

/* Frees a stream once the connection is done with it. */
typedef void (*httpd_stream_free_fn)(void *stream);

/* Fills answer for path (query string removed). Returns 0, or -1 for a 500.
 * It may call httpd_close. */
typedef int (*httpd_handler_fn)(void *handler_data, const char *path, httpd_answer *answer);

/* Settings of a server; zero fields take the defaults above. */
typedef struct httpd_opts {
    const char *host;         /* IPv4 or IPv6 literal to bind */
    int port;                 /* TCP port; 0 = any free one */
    size_t max_head;          /* bound of a request head */
    int read_timeout_ms;      /* time a head may take to arrive */
    int idle_timeout_ms;      /* keep-alive idle time */
    int max_conns;            /* open connections */
    httpd_handler_fn handler; /* answers GET/HEAD requests (when on_request is NULL) */
    void *handler_data;       /* first argument of handler, on_request and on_error */
    httpd_request_fn on_request; /* answers every request, bodies included (instead of handler) */
    size_t max_body;          /* with on_request: bound of a request body (413 past it) */
    size_t max_queued;        /* bytes of answers queued to one client (0 = HTTPD_MAX_QUEUED_BYTES) */
    httpd_error_fn on_error;  /* optional: the answer to a protocol error */
} httpd_opts;

/* Binds and listens on loop. Returns the server, or NULL with a malloc'd
 * pt-BR message in *err (e.g. "endereço em uso"). */
httpd *httpd_start(uv_loop_t *loop, const httpd_opts *opts, char **err);

/* The bound port. */
int httpd_port(const httpd *srv);

/* Open connections (for tests of the bound). */
int httpd_conn_count(const httpd *srv);

/* Sends answer (its body is consumed) to req, from on_request. */
void httpd_respond(httpd_request *req, httpd_answer *answer);

/* Sends answer (its body is consumed) to req delay_ms from now, from
 * on_request; dropped if the connection closes first. */
void httpd_respond_later(httpd_request *req, httpd_answer *answer, int delay_ms);

/* Sends the status line and headers of answer (its body is freed, unsent)
 * with Transfer-Encoding: chunked, then the chunks of stream, one after the
 * other as the client reads them, until next returns NULL or the client
 * leaves; the connection answers nothing else. From on_request. free_fn
 * frees the stream (also when this call fails). */
void httpd_respond_stream(httpd_request *req, httpd_answer *answer, void *stream, httpd_stream_next_fn next,
                          httpd_stream_free_fn free_fn);

/* Stops listening and closes every connection; the handler is never called
 * again and the memory is freed once libuv has closed the handles. */
void httpd_close(httpd *srv);

#endif
