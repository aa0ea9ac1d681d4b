/*
 * httpd_conn.c: one connection of the metrics HTTP server (see httpd.h):
 * reads into a buffer of max_head bytes (the memory of a connection is
 * bounded), parses heads with the shared http_parse.c, answers GET/HEAD in
 * order through the handler, writes, and closes on the timers (a head that
 * takes too long, a keep-alive connection left idle).
 */
#include "http_parse.h"
#include "httpd_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What the connection's timer is waiting for. */
typedef enum httpd_wait { WAIT_NONE = 0, WAIT_HEAD = 1, WAIT_IDLE = 2 } httpd_wait;

struct httpd_conn {
    httpd *srv;          /* owning server */
    uv_tcp_t tcp;        /* the client socket */
    uv_timer_t timer;    /* read timeout of a head, or keep-alive idle timeout */
    httpd_wait waiting;  /* what timer is armed for */
    int open_handles;    /* tcp + timer handles not yet closed */
    int closing;         /* 1 once uv_close was requested */
    int finishing;       /* 1 once no more requests are answered (lingering) */
    uv_shutdown_t shutdown; /* closes after the last answer is flushed */
    char *in;            /* received bytes (max_head + 1 allocated) */
    size_t in_len;       /* bytes used in in */
    httpd_conn *prev;    /* newer connection in srv->conns */
    httpd_conn *next;    /* older connection in srv->conns */
};

/* One uv_write in flight with the memory it owns. */
typedef struct httpd_write {
    uv_write_t req; /* libuv request */
    char *head;     /* status line + headers (malloc'd) */
    char *body;     /* body (malloc'd, may be NULL) */
} httpd_write;

/* ------------------------------------------------------------------ */
/* Closing                                                              */

static void httpd_conn_unlink(httpd_conn *conn)
{
    httpd *srv = conn->srv;
    if (conn->prev)
        conn->prev->next = conn->next;
    else
        srv->conns = conn->next;
    if (conn->next)
        conn->next->prev = conn->prev;
    else
        srv->oldest = conn->prev;
    conn->prev = conn->next = NULL;
    srv->conn_count--;
}

static void httpd_conn_on_handle_closed(uv_handle_t *handle)
{
    httpd_conn *conn = handle->data;
    if (--conn->open_handles > 0)
        return;
    httpd *srv = conn->srv;
    free(conn->in);
    free(conn);
    srv->open_handles--;
    httpd_maybe_free(srv);
}

void httpd_conn_close(httpd_conn *conn)
{
    if (conn->closing)
        return;
    conn->closing = 1;
    httpd_conn_unlink(conn);
    uv_close((uv_handle_t *)&conn->timer, httpd_conn_on_handle_closed);
    uv_close((uv_handle_t *)&conn->tcp, httpd_conn_on_handle_closed);
}

/* ------------------------------------------------------------------ */
/* Timers                                                               */

static void httpd_conn_on_timer(uv_timer_t *timer)
{
    httpd_conn_close(timer->data);
}

/* Arms the timer for what comes next; a head already being waited for keeps
 * its deadline (a client sending a byte at a time is still closed). */
static void httpd_conn_wait(httpd_conn *conn, httpd_wait what)
{
    if (conn->closing || (what == WAIT_HEAD && conn->waiting == WAIT_HEAD))
        return;
    const httpd_opts *opts = &conn->srv->opts;
    int ms = what == WAIT_HEAD ? opts->read_timeout_ms : opts->idle_timeout_ms;
    conn->waiting = what;
    if (uv_timer_start(&conn->timer, httpd_conn_on_timer, (uint64_t)ms, 0) != 0)
        httpd_conn_close(conn);
}

static void httpd_conn_on_shutdown(uv_shutdown_t *req, int status)
{
    if (status != 0)
        httpd_conn_close(req->data);
}

/* Sends FIN once the queued answers are flushed and lingers: what the
 * client still sends is read and dropped until it closes or the read
 * timeout fires (closing with unread bytes would reset the connection and
 * could lose the answer). */
static void httpd_conn_finish(httpd_conn *conn)
{
    if (conn->finishing || conn->closing)
        return;
    conn->finishing = 1;
    conn->waiting = WAIT_NONE;
    httpd_conn_wait(conn, WAIT_HEAD);
    conn->shutdown.data = conn;
    if (uv_shutdown(&conn->shutdown, (uv_stream_t *)&conn->tcp, httpd_conn_on_shutdown) != 0)
        httpd_conn_close(conn);
}

/* ------------------------------------------------------------------ */
/* Writing                                                              */

static void httpd_conn_on_write(uv_write_t *req, int status)
{
    httpd_write *write = (httpd_write *)req;
    free(write->head);
    free(write->body);
    free(write);
}

/* Queues head and body (both consumed; body may be NULL). Returns 0 or -1. */
static int httpd_conn_write(httpd_conn *conn, char *head, char *body, size_t body_len)
{
    httpd_write *write = NULL;
    if (head == NULL || uv_stream_get_write_queue_size((uv_stream_t *)&conn->tcp) > HTTPD_MAX_QUEUED_BYTES)
        goto fail; /* out of memory, or a client that does not read its answers */
    write = calloc(1, sizeof *write);
    if (write == NULL)
        goto fail;
    write->head = head;
    write->body = body;
    uv_buf_t bufs[2] = {uv_buf_init(head, (unsigned int)strlen(head)), uv_buf_init(body, (unsigned int)body_len)};
    if (uv_write(&write->req, (uv_stream_t *)&conn->tcp, bufs, body ? 2 : 1, httpd_conn_on_write) != 0)
        goto fail;
    return 0;

fail:
    free(write);
    free(head);
    free(body);
    return -1;
}

/* Status line and headers (malloc'd), NULL when out of memory. */
static char *httpd_format_head(const httpd_answer *answer, int close_after)
{
    static const char fmt[] = "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s\r\n";
    const char *conn_header = close_after ? "Connection: close\r\n" : "";
    const char *reason = http_status_text(answer->status);
    int len = snprintf(NULL, 0, fmt, answer->status, reason, answer->content_type, answer->body_len, conn_header);
    char *head = malloc((size_t)len + 1);
    if (head)
        snprintf(head, (size_t)len + 1, fmt, answer->status, reason, answer->content_type, answer->body_len,
                 conn_header);
    return head;
}

/* Sends answer (its body is consumed); with_body 0 for HEAD. */
static void httpd_conn_send(httpd_conn *conn, httpd_answer *answer, int with_body, int close_after)
{
    char *body = with_body ? answer->body : NULL;
    if (!with_body)
        free(answer->body);
    answer->body = NULL;
    if (conn->closing || conn->finishing) {
        free(body);
        return;
    }
    if (httpd_conn_write(conn, httpd_format_head(answer, close_after), body, answer->body_len) != 0)
        httpd_conn_close(conn);
    else if (close_after)
        httpd_conn_finish(conn);
}

/* Answers a protocol error with a short text and closes. */
static void httpd_conn_fail(httpd_conn *conn, int status, const char *text)
{
    httpd_answer answer = {status, "text/plain; charset=utf-8", strdup(text), strlen(text)};
    if (answer.body == NULL) {
        httpd_conn_close(conn);
        return;
    }
    httpd_conn_send(conn, &answer, 1, 1);
}

/* ------------------------------------------------------------------ */
/* Requests                                                             */

/* Asks the handler; a failure becomes a 500. */
static void httpd_conn_dispatch(httpd_conn *conn, const http_head *head)
{
    static const char internal[] = "erro interno do servidor de métricas\n";
    httpd *srv = conn->srv;
    httpd_answer answer = {0, "", NULL, 0};
    if (srv->opts.handler(srv->opts.handler_data, head->path, &answer) != 0 || answer.status < 100 ||
        answer.status > 599) {
        free(answer.body);
        answer = (httpd_answer){500, "text/plain; charset=utf-8", strdup(internal), sizeof internal - 1};
        if (answer.body == NULL)
            answer.body_len = 0;
    }
    httpd_conn_send(conn, &answer, strcmp(head->method, "HEAD") != 0, !head->keep_alive);
}

/* Answers the complete head at the start of the buffer. Returns 0 to go on. */
static int httpd_conn_answer(httpd_conn *conn, size_t head_len)
{
    http_head head = {0};
    int rc = http_head_parse(conn->in, head_len, &head);
    if (rc != 0)
        httpd_conn_fail(conn, 400, "requisição HTTP malformada\n");
    else if (head.content_length > 0 || head.chunked)
        httpd_conn_fail(conn, 400, "requisições com corpo não são aceitas\n");
    else if (strcmp(head.method, "GET") != 0 && strcmp(head.method, "HEAD") != 0)
        httpd_conn_fail(conn, 405, "somente GET e HEAD são aceitos\n");
    else
        httpd_conn_dispatch(conn, &head);
    http_head_reset(&head);
    memmove(conn->in, conn->in + head_len, conn->in_len - head_len);
    conn->in_len -= head_len;
    return conn->closing || conn->finishing ? -1 : 0;
}

/* Answers every complete request in the buffer, then arms the timer. */
static void httpd_conn_process(httpd_conn *conn)
{
    size_t head_len = 0;
    for (;;) {
        http_head_state state = http_head_find(conn->in, conn->in_len, conn->srv->opts.max_head, &head_len);
        if (state == HTTP_HEAD_TOO_LARGE) {
            httpd_conn_fail(conn, 431, "cabeçalhos da requisição grandes demais\n");
            return;
        }
        if (state == HTTP_HEAD_PARTIAL)
            break;
        conn->waiting = WAIT_NONE; /* the next head gets its own deadline */
        if (httpd_conn_answer(conn, head_len) != 0)
            return;
    }
    httpd_conn_wait(conn, conn->in_len > 0 ? WAIT_HEAD : WAIT_IDLE);
}

/* ------------------------------------------------------------------ */
/* Reading and accepting                                                */

static void httpd_conn_on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    httpd_conn *conn = handle->data;
    size_t cap = conn->srv->opts.max_head + 1;
    *buf = uv_buf_init(conn->in + conn->in_len, (unsigned int)(cap - conn->in_len));
}

static void httpd_conn_on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    httpd_conn *conn = stream->data;
    if (nread < 0) {
        httpd_conn_close(conn);
        return;
    }
    conn->in_len = conn->finishing ? 0 : conn->in_len + (size_t)nread;
    if (!conn->finishing)
        httpd_conn_process(conn);
}

static void httpd_conn_link(httpd *srv, httpd_conn *conn)
{
    conn->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = conn;
    else
        srv->oldest = conn;
    srv->conns = conn;
    srv->conn_count++;
    srv->open_handles++;
}

void httpd_conn_accept(httpd *srv)
{
    httpd_conn *conn = calloc(1, sizeof *conn);
    char *in = malloc(srv->opts.max_head + 1);
    if (conn == NULL || in == NULL) {
        free(conn);
        free(in);
        return;
    }
    conn->srv = srv;
    conn->in = in;
    uv_tcp_init(srv->loop, &conn->tcp);
    uv_timer_init(srv->loop, &conn->timer);
    conn->tcp.data = conn;
    conn->timer.data = conn;
    conn->open_handles = 2;
    httpd_conn_link(srv, conn);
    if (uv_accept((uv_stream_t *)&srv->listener, (uv_stream_t *)&conn->tcp) != 0 ||
        uv_read_start((uv_stream_t *)&conn->tcp, httpd_conn_on_alloc, httpd_conn_on_read) != 0) {
        httpd_conn_close(conn);
        return;
    }
    uv_tcp_nodelay(&conn->tcp, 1);
    httpd_conn_wait(conn, WAIT_HEAD);
}
