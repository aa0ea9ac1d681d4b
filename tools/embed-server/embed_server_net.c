/*
 * embed_server_net.c: the connections of the embed-server on the libuv
 * loop: accepting, reading into a buffer, the request pipeline (keep-alive,
 * pipelining, partial reads, Expect: 100-continue, answers held for
 * --latency-ms or never sent) and writing answers (an endless one written
 * chunk after chunk until the client leaves).
 */
#include "embed_server_internal.h"

#include <stdlib.h>
#include <string.h>

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
    http_head req;            /* head of the request being received */
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

static void es_conn_process(es_conn *conn);

/* ------------------------------------------------------------------ */
/* Closing                                                              */

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

void es_server_close_conns(embed_server *server)
{
    for (es_conn *conn = server->conns; conn; conn = conn->next)
        es_conn_close(conn);
}

static void es_conn_on_shutdown(uv_shutdown_t *req, int status)
{
    es_conn_close(req->data);
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

/* ------------------------------------------------------------------ */
/* Writing                                                              */

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
    char *head = es_response_head(resp);
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

/* One chunk of an endless answer in flight; the next is written when it
 * is done, until the write fails (the client left) or the connection closes. */
typedef struct es_endless_write {
    uv_write_t req;     /* libuv request */
    es_conn *conn;      /* the connection (valid in the callback: libuv runs it before the close) */
    es_endless *chunks; /* the chunk generator */
} es_endless_write;

static void es_endless_on_write(uv_write_t *req, int status);

/* Writes the next chunk; frees w (and closes the connection) on failure. */
static void es_endless_pump(es_endless_write *w)
{
    size_t len = 0;
    const char *chunk = es_endless_next(w->chunks, &len);
    uv_buf_t buf = uv_buf_init((char *)chunk, (unsigned int)len);
    if (chunk == NULL || uv_write(&w->req, (uv_stream_t *)&w->conn->tcp, &buf, 1, es_endless_on_write) != 0) {
        es_conn_close(w->conn);
        es_endless_free(w->chunks);
        free(w);
    }
}

static void es_endless_on_write(uv_write_t *req, int status)
{
    es_endless_write *w = (es_endless_write *)req;
    if (status < 0 || w->conn->closing) {
        es_conn_close(w->conn);
        es_endless_free(w->chunks);
        free(w);
        return;
    }
    es_endless_pump(w);
}

/* Sends the head of resp (consumed), then its body as an endless chunked
 * stream; the connection answers nothing else. */
static void es_conn_send_endless(es_conn *conn, es_response *resp)
{
    char *head = es_response_head(resp);
    es_endless_write *w = calloc(1, sizeof *w);
    if (w)
        w->chunks = es_endless_new(resp->body, resp->body_len, resp->gzip);
    es_response_free(resp);
    if (head == NULL || w == NULL || w->chunks == NULL) {
        free(head);
        if (w)
            es_endless_free(w->chunks);
        free(w);
        es_conn_close(conn);
        return;
    }
    w->conn = conn;
    if (es_conn_write(conn, head, strlen(head), NULL, 0) != 0) {
        es_endless_free(w->chunks);
        free(w);
        es_conn_close(conn);
        return;
    }
    es_endless_pump(w);
}

/* Answers a protocol error and closes the connection. */
static void es_conn_fail(es_conn *conn, int status, const char *message)
{
    es_response *resp = es_bad_request(conn->server, status, NULL, "%s", message);
    if (resp)
        resp->close_after = 1;
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
/* The request pipeline                                                 */

/* Parses the head at data when it is complete. Returns 1 with conn->req
 * filled, 0 when more bytes are needed or the connection failed. */
static int es_conn_take_head(es_conn *conn, const char *data, size_t avail)
{
    size_t head_len = 0;
    http_head_state state = http_head_find(data, avail, ES_MAX_HEAD, &head_len);
    if (state == HTTP_HEAD_TOO_LARGE)
        es_conn_fail(conn, 431, "cabeçalhos da requisição grandes demais");
    if (state != HTTP_HEAD_COMPLETE)
        return 0;
    http_head_reset(&conn->req);
    if (http_head_parse(data, head_len, &conn->req) != 0) {
        es_conn_fail(conn, 400, "requisição HTTP malformada");
        return 0;
    }
    conn->have_head = 1;
    conn->continue_sent = 0;
    if (conn->req.chunked) {
        es_conn_fail(conn, 501, "Transfer-Encoding não é suportado; envie Content-Length");
        return 0;
    }
    if (conn->req.content_length > ES_MAX_BODY) {
        es_conn_fail(conn, 413, "corpo da requisição maior que o limite de 64 MiB");
        return 0;
    }
    return 1;
}

/* The body is still incomplete: answer Expect: 100-continue once. */
static void es_conn_send_continue(es_conn *conn)
{
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    if (!conn->req.expect_continue || conn->continue_sent)
        return;
    char *copy = strdup(cont);
    conn->continue_sent = 1;
    if (copy == NULL || es_conn_write(conn, copy, sizeof cont - 1, NULL, 0) != 0)
        es_conn_close(conn);
}

/* Answers the complete request at data; returns 0 to go on with the next. */
static int es_conn_answer(es_conn *conn, const char *data, size_t total)
{
    int never_answer = 0, delayed = 0;
    es_response *resp = es_dispatch(conn->server, &conn->req, data + conn->req.head_len,
                                    conn->req.content_length, &never_answer, &delayed);
    int keep_alive = conn->req.keep_alive;
    conn->in_start += total;
    conn->have_head = 0;
    http_head_reset(&conn->req);
    if (never_answer) {
        conn->busy = 1; /* hold the connection: nothing else is answered */
        return -1;
    }
    if (resp && resp->endless) {
        conn->busy = 1;
        es_conn_send_endless(conn, resp);
        return -1;
    }
    if (resp && !keep_alive)
        resp->close_after = 1;
    if (resp && delayed) {
        conn->pending = resp;
        conn->busy = 1;
        if (uv_timer_start(&conn->delay_timer, es_conn_on_delay, (uint64_t)conn->server->latency_ms, 0) != 0)
            es_conn_close(conn);
        return -1;
    }
    es_conn_send(conn, resp);
    return 0;
}

/* Parses and answers every complete request in the buffer, in order. */
static void es_conn_process(es_conn *conn)
{
    while (!conn->busy && !conn->closing && !conn->shutting_down) {
        char *data = conn->in.data + conn->in_start;
        size_t avail = conn->in.len - conn->in_start;
        if (!conn->have_head && !es_conn_take_head(conn, data, avail))
            return;
        size_t total = conn->req.head_len + conn->req.content_length;
        if (avail < total) {
            es_conn_send_continue(conn);
            return;
        }
        if (es_conn_answer(conn, data, total) != 0)
            return;
    }
}

/* ------------------------------------------------------------------ */
/* Reading and accepting                                                */

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

void es_server_on_connection(uv_stream_t *listener, int status)
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
