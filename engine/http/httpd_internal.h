/*
 * httpd_internal.h: what the files of the HTTP server share (not a public
 * API; see httpd.h):
 *
 *   httpd.c         lifecycle: bind, listen, accept (with the connection bound), close
 *   httpd_conn.c    one connection: read under the bounds, parse, dispatch, timers, close
 *   httpd_answer.c  writing: answers now or later, 100 Continue, chunked streams
 */
#ifndef RAGOPS_HTTPD_INTERNAL_H
#define RAGOPS_HTTPD_INTERNAL_H

#include "httpd.h"

typedef struct httpd_conn httpd_conn;

/* What the connection's timer is waiting for. */
typedef enum httpd_wait {
    WAIT_NONE = 0,  /* nothing: the timer is stopped */
    WAIT_HEAD = 1,  /* the rest of a request (read timeout) */
    WAIT_IDLE = 2,  /* the next request of a keep-alive connection */
    WAIT_ANSWER = 3 /* the delay of httpd_respond_later */
} httpd_wait;

/* Why no later request of the connection is answered yet. */
typedef enum httpd_busy {
    BUSY_NONE = 0,    /* requests are answered as they arrive */
    BUSY_DELAYED = 1, /* an answer waits for the timer */
    BUSY_HELD = 2,    /* the last request is never answered */
    BUSY_STREAM = 3   /* a streamed answer is being written */
} httpd_busy;

struct httpd_conn {
    httpd *srv;             /* owning server */
    uv_tcp_t tcp;           /* the client socket */
    uv_timer_t timer;       /* read timeout, keep-alive idle timeout or answer delay */
    httpd_wait waiting;     /* what timer is armed for */
    httpd_busy busy;        /* what holds the next requests back */
    int open_handles;       /* tcp + timer handles not yet closed */
    int closing;            /* 1 once uv_close was requested */
    int finishing;          /* 1 once no more requests are answered (lingering) */
    uv_shutdown_t shutdown; /* closes after the last answer is flushed */
    char *in;               /* received bytes */
    size_t in_len;          /* bytes used in in */
    size_t in_cap;          /* bytes allocated for in (grows up to httpd_conn_capacity) */
    http_head head;         /* head of the request at the start of in, when have_head */
    int have_head;          /* head is parsed; its body may still be arriving */
    int continue_sent;      /* "100 Continue" was sent for head */
    httpd_answer delayed;   /* the answer of httpd_respond_later */
    int delayed_with_body;  /* send delayed's body (not a HEAD request) */
    httpd_conn *prev;       /* newer connection in srv->conns */
    httpd_conn *next;       /* older connection in srv->conns */
};

/* One request being answered by on_request. */
struct httpd_request {
    httpd_conn *conn; /* its connection */
    int with_body;    /* 0 for HEAD: the answer's body is not sent */
    int close_after;  /* the client asked to close after the answer */
    int answered;     /* an httpd_respond* was called */
};

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

/* Arms the timer for what comes next (see httpd_wait) with the server's
 * timeout for it; a head already being waited for keeps its deadline. */
void httpd_conn_wait(httpd_conn *conn, httpd_wait what);

/* Arms the timer for what, ms from now (HTTPD_TIMEOUT_NONE: stops it). */
void httpd_conn_arm(httpd_conn *conn, httpd_wait what, int ms);

/* Answers every complete request in the buffer, then arms the timer. */
void httpd_conn_process(httpd_conn *conn);

/* ---- httpd_answer.c ---- */

/* Queues head and body (both consumed; body may be NULL). Returns 0 or -1. */
int httpd_conn_write(httpd_conn *conn, char *head, char *body, size_t body_len);

/* Sends answer (its body is consumed); with_body 0 for HEAD; close_after:
 * FIN after it, and nothing more is answered. */
void httpd_conn_send(httpd_conn *conn, httpd_answer *answer, int with_body, int close_after);

/* Answers a protocol error with text (through on_error when set) and closes. */
void httpd_conn_fail(httpd_conn *conn, int status, const char *text);

/* The body of head is still arriving: answers Expect: 100-continue once. */
void httpd_conn_send_continue(httpd_conn *conn);

/* The timer of httpd_respond_later fired: sends the held answer. */
void httpd_conn_send_delayed(httpd_conn *conn);

#endif
