/*
 * httpd.h: a small HTTP/1.1 server on the libuv loop for GET/HEAD routes
 * (the metrics endpoint). It is part of a run and must not be able to hurt
 * it, so every resource is bounded: the head of a request (431 and close),
 * the time a head may take to arrive (slow clients are closed), the idle
 * time of a keep-alive connection, the open connections (the oldest one is
 * closed to make room) and the answers queued to a client that does not
 * read. Anything but GET/HEAD without a body is refused. Requests are
 * answered by a synchronous handler, in order.
 */
#ifndef RAGOPS_HTTPD_H
#define RAGOPS_HTTPD_H

#include <stddef.h>
#include <uv.h>

#define HTTPD_DEFAULT_MAX_HEAD (16 * 1024)    /* bytes of request line + headers */
#define HTTPD_DEFAULT_READ_TIMEOUT_MS 5000    /* a head must arrive within this */
#define HTTPD_DEFAULT_IDLE_TIMEOUT_MS 15000   /* keep-alive wait for the next request */
#define HTTPD_DEFAULT_MAX_CONNS 64            /* open connections */
#define HTTPD_MAX_QUEUED_BYTES (1024 * 1024)  /* answers queued to one client */

typedef struct httpd httpd;

/* What a handler answers. */
typedef struct httpd_answer {
    int status;             /* HTTP status code (100..599) */
    char content_type[128]; /* Content-Type value */
    char *body;             /* malloc'd body, owned by the server afterwards */
    size_t body_len;        /* body bytes */
} httpd_answer;

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
    httpd_handler_fn handler; /* answers the requests */
    void *handler_data;       /* handler's first argument */
} httpd_opts;

/* Binds and listens on loop. Returns the server, or NULL with a malloc'd
 * pt-BR message in *err (e.g. "endereço em uso"). */
httpd *httpd_start(uv_loop_t *loop, const httpd_opts *opts, char **err);

/* The bound port. */
int httpd_port(const httpd *srv);

/* Open connections (for tests of the bound). */
int httpd_conn_count(const httpd *srv);

/* Stops listening and closes every connection; the handler is never called
 * again and the memory is freed once libuv has closed the handles. */
void httpd_close(httpd *srv);

#endif
