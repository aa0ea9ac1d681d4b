/*
 * httpd_conn.c: one connection of the HTTP server (see httpd.h): reads into
 * a buffer that grows up to one request (head + body bound), parses heads
 * with the shared http_parse.c, refuses what the server does not take,
 * hands complete requests in order to the handler or on_request, and
 * closes on the timers (a request that takes too long, a keep-alive
 * connection left idle). Writing lives in httpd_answer.c.
 */
#include "httpd_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HTTPD_FIRST_BUFFER (64 * 1024) /* bytes allocated for in at first (at most) */

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
    http_head_reset(&conn->head);
    free(conn->delayed.body);
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
    httpd_conn *conn = timer->data;
    if (conn->waiting == WAIT_ANSWER) {
        conn->waiting = WAIT_NONE;
        httpd_conn_send_delayed(conn);
        return;
    }
    httpd_conn_close(conn);
}

void httpd_conn_arm(httpd_conn *conn, httpd_wait what, int ms)
{
    if (conn->closing)
        return;
    conn->waiting = what;
    if (ms == HTTPD_TIMEOUT_NONE) {
        uv_timer_stop(&conn->timer);
        return;
    }
    if (uv_timer_start(&conn->timer, httpd_conn_on_timer, (uint64_t)ms, 0) != 0)
        httpd_conn_close(conn);
}

void httpd_conn_wait(httpd_conn *conn, httpd_wait what)
{
    if (what == WAIT_HEAD && conn->waiting == WAIT_HEAD)
        return; /* a client sending a byte at a time is still closed */
    const httpd_opts *opts = &conn->srv->opts;
    httpd_conn_arm(conn, what, what == WAIT_HEAD ? opts->read_timeout_ms : opts->idle_timeout_ms);
}

/* ------------------------------------------------------------------ */
/* Requests                                                             */

/* Asks the synchronous handler; a failure becomes a 500. */
static void httpd_conn_dispatch(httpd_conn *conn, const http_head *head)
{
    static const char internal[] = "erro interno do servidor de métricas\n";
    httpd *srv = conn->srv;
    httpd_answer answer = {0, "", NULL, 0, "", 0};
    if (srv->opts.handler(srv->opts.handler_data, head->path, &answer) != 0 || answer.status < 100 ||
        answer.status > 599) {
        free(answer.body);
        answer = (httpd_answer){500, "text/plain; charset=utf-8", strdup(internal), sizeof internal - 1, "", 0};
        if (answer.body == NULL)
            answer.body_len = 0;
    }
    httpd_conn_send(conn, &answer, strcmp(head->method, "HEAD") != 0, !head->keep_alive);
}

/* Hands the complete request at the start of the buffer to on_request; a
 * request it leaves unanswered holds the connection. */
static void httpd_conn_hand_over(httpd_conn *conn, const http_head *head)
{
    httpd *srv = conn->srv;
    httpd_request req = {conn, strcmp(head->method, "HEAD") != 0, !head->keep_alive, 0};
    srv->opts.on_request(srv->opts.handler_data, &req, head, conn->in + head->head_len, head->content_length);
    if (!req.answered && !conn->closing)
        conn->busy = BUSY_HELD;
}

/* The status and pt-BR text refusing head, or 0 when it is taken. */
static int httpd_conn_refusal(const httpd_conn *conn, const http_head *head, char *text, size_t size)
{
    const httpd_opts *opts = &conn->srv->opts;
    if (opts->on_request == NULL) {
        if (head->content_length > 0 || head->chunked)
            return snprintf(text, size, "requisições com corpo não são aceitas"), 400;
        if (strcmp(head->method, "GET") != 0 && strcmp(head->method, "HEAD") != 0)
            return snprintf(text, size, "somente GET e HEAD são aceitos"), 405;
        return 0;
    }
    if (head->chunked)
        return snprintf(text, size, "Transfer-Encoding não é suportado; envie Content-Length"), 501;
    if (head->content_length > opts->max_body)
        return snprintf(text, size, "corpo da requisição maior que o limite de %zu MiB",
                        opts->max_body / (1024 * 1024)), 413;
    return 0;
}

/* Parses the head at the start of the buffer. Returns 1 with conn->head
 * filled, 0 when more bytes are needed, -1 when the request was refused. */
static int httpd_conn_take_head(httpd_conn *conn)
{
    char text[160];
    size_t head_len = 0;
    http_head_state state = http_head_find(conn->in, conn->in_len, conn->srv->opts.max_head, &head_len);
    if (state == HTTP_HEAD_TOO_LARGE) {
        httpd_conn_fail(conn, 431, "cabeçalhos da requisição grandes demais");
        return -1;
    }
    if (state == HTTP_HEAD_PARTIAL)
        return 0;
    http_head_reset(&conn->head);
    if (http_head_parse(conn->in, head_len, &conn->head) != 0) {
        httpd_conn_fail(conn, 400, "requisição HTTP malformada");
        return -1;
    }
    int status = httpd_conn_refusal(conn, &conn->head, text, sizeof text);
    if (status != 0) {
        httpd_conn_fail(conn, status, text);
        return -1;
    }
    conn->have_head = 1;
    conn->continue_sent = 0;
    return 1;
}

/* Answers the complete request (total bytes) at the start of the buffer
 * and drops it from the buffer. */
static void httpd_conn_answer(httpd_conn *conn, size_t total)
{
    conn->waiting = WAIT_NONE; /* the next request gets its own deadline */
    uv_timer_stop(&conn->timer);
    if (conn->srv->opts.on_request)
        httpd_conn_hand_over(conn, &conn->head);
    else
        httpd_conn_dispatch(conn, &conn->head);
    http_head_reset(&conn->head);
    conn->have_head = 0;
    memmove(conn->in, conn->in + total, conn->in_len - total);
    conn->in_len -= total;
}

void httpd_conn_process(httpd_conn *conn)
{
    for (;;) {
        if (conn->busy != BUSY_NONE || conn->closing || conn->finishing)
            return;
        if (!conn->have_head) {
            int rc = httpd_conn_take_head(conn);
            if (rc < 0)
                return;
            if (rc == 0)
                break;
        }
        size_t total = conn->head.head_len + conn->head.content_length;
        if (conn->in_len < total) {
            httpd_conn_send_continue(conn);
            break;
        }
        httpd_conn_answer(conn, total);
    }
    httpd_conn_wait(conn, conn->in_len > 0 ? WAIT_HEAD : WAIT_IDLE);
}

/* ------------------------------------------------------------------ */
/* Reading and accepting                                                */

/* Bytes the buffer may hold: one request of the largest size taken. */
static size_t httpd_conn_capacity(const httpd *srv)
{
    size_t body = srv->opts.on_request ? srv->opts.max_body : 0;
    return srv->opts.max_head + body + 1;
}

/* A full buffer grows (doubling, up to the capacity); a full buffer at the
 * capacity gets no room, and the read fails (UV_ENOBUFS): the client sent
 * more than one request can hold while the connection was busy. */
static void httpd_conn_on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    httpd_conn *conn = handle->data;
    size_t cap = httpd_conn_capacity(conn->srv);
    if (conn->in_len == conn->in_cap && conn->in_cap < cap) {
        size_t grown = conn->in_cap * 2 < cap ? conn->in_cap * 2 : cap;
        char *in = realloc(conn->in, grown);
        if (in != NULL) {
            conn->in = in;
            conn->in_cap = grown;
        }
    }
    *buf = uv_buf_init(conn->in + conn->in_len, (unsigned int)(conn->in_cap - conn->in_len));
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
    size_t cap = httpd_conn_capacity(srv);
    size_t first = cap < HTTPD_FIRST_BUFFER ? cap : HTTPD_FIRST_BUFFER;
    httpd_conn *conn = calloc(1, sizeof *conn);
    char *in = malloc(first);
    if (conn == NULL || in == NULL) {
        free(conn);
        free(in);
        return;
    }
    conn->srv = srv;
    conn->in = in;
    conn->in_cap = first;
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
