/*
 * httpd_internal.h: what the two files of the metrics HTTP server share
 * (not a public API; see httpd.h):
 *
 *   httpd.c       lifecycle: bind, listen, accept (with the connection bound), close
 *   httpd_conn.c  one connection: read under the bounds, parse, answer, write, timers
 */
#ifndef RAGOPS_HTTPD_INTERNAL_H
#define RAGOPS_HTTPD_INTERNAL_H

#include "httpd.h"

typedef struct httpd_conn httpd_conn;

struct httpd {
    uv_loop_t *loop;     /* loop the server runs on */
    uv_tcp_t listener;   /* listening socket */
    httpd_opts opts;     /* settings with the defaults filled in (host not kept) */
    int port;            /* bound port */
    httpd_conn *conns;   /* open connections, newest first (doubly linked) */
    httpd_conn *oldest;  /* last of conns: the first to go when full */
    int conn_count;      /* connections in conns */
    int open_handles;    /* listener + connections not yet freed */
    int closing;         /* 1 after httpd_close */
};

/* ---- httpd.c ---- */

/* Frees srv once it is closing and every handle is closed. */
void httpd_maybe_free(httpd *srv);

/* ---- httpd_conn.c ---- */

/* Accepts one connection from the listener and starts reading it. */
void httpd_conn_accept(httpd *srv);

/* Closes conn now (pending answers are dropped). */
void httpd_conn_close(httpd_conn *conn);

#endif
