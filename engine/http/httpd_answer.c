/*
 * httpd_answer.c: the writing side of an HTTP server connection (see
 * httpd.h): answers sent now or after a delay, "100 Continue", protocol
 * errors, chunked streams written chunk after chunk as the client reads,
 * the write bound of a client that does not read, and the FIN after the
 * last answer (lingering until the client closes).
 */
#include "httpd_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One uv_write in flight with the memory it owns. */
typedef struct httpd_write {
    uv_write_t req; /* libuv request */
    char *head;     /* status line + headers (malloc'd) */
    char *body;     /* body (malloc'd, may be NULL) */
} httpd_write;

/* One chunk of a streamed answer in flight; the next one is written when
 * it is done, until the stream ends or the connection closes. */
typedef struct httpd_stream_write {
    uv_write_t req;            /* libuv request */
    httpd_conn *conn;          /* valid in the callback: libuv runs it before the close */
    void *stream;              /* the application's chunk generator */
    httpd_stream_next_fn next; /* its next chunk */
    httpd_stream_free_fn free; /* frees it */
} httpd_stream_write;

/* ------------------------------------------------------------------ */
/* Writing                                                              */

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

static void httpd_conn_on_write(uv_write_t *req, int status)
{
    httpd_write *write = (httpd_write *)req;
    free(write->head);
    free(write->body);
    free(write);
}

int httpd_conn_write(httpd_conn *conn, char *head, char *body, size_t body_len)
{
    httpd_write *write = NULL;
    if (head == NULL || uv_stream_get_write_queue_size((uv_stream_t *)&conn->tcp) > conn->srv->opts.max_queued)
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

/* Status line and headers (malloc'd), NULL when out of memory. chunked:
 * Transfer-Encoding: chunked instead of Content-Length. */
static char *httpd_format_head(const httpd_answer *answer, int close_after, int chunked)
{
    char length[64];
    const char *conn_header = close_after ? "Connection: close\r\n" : "";
    const char *reason = http_status_text(answer->status);
    if (chunked)
        snprintf(length, sizeof length, "Transfer-Encoding: chunked\r\n");
    else
        snprintf(length, sizeof length, "Content-Length: %zu\r\n", answer->body_len);
    static const char fmt[] = "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n%s%s%s\r\n";
    int len = snprintf(NULL, 0, fmt, answer->status, reason, answer->content_type, length,
                       answer->extra_headers, conn_header);
    char *head = malloc((size_t)len + 1);
    if (head)
        snprintf(head, (size_t)len + 1, fmt, answer->status, reason, answer->content_type, length,
                 answer->extra_headers, conn_header);
    return head;
}

void httpd_conn_send(httpd_conn *conn, httpd_answer *answer, int with_body, int close_after)
{
    char *body = with_body ? answer->body : NULL;
    if (!with_body)
        free(answer->body);
    answer->body = NULL;
    close_after = close_after || answer->close_after;
    if (conn->closing || conn->finishing) {
        free(body);
        return;
    }
    if (httpd_conn_write(conn, httpd_format_head(answer, close_after, 0), body, answer->body_len) != 0)
        httpd_conn_close(conn);
    else if (close_after)
        httpd_conn_finish(conn);
}

void httpd_conn_fail(httpd_conn *conn, int status, const char *text)
{
    httpd *srv = conn->srv;
    httpd_answer answer = {status, "text/plain; charset=utf-8", NULL, 0, "", 1};
    if (srv->opts.on_error)
        srv->opts.on_error(srv->opts.handler_data, status, text, &answer);
    if (answer.body == NULL) {
        snprintf(answer.content_type, sizeof answer.content_type, "text/plain; charset=utf-8");
        answer.extra_headers[0] = '\0';
        answer.body_len = strlen(text) + 1;
        answer.body = malloc(answer.body_len + 1);
        if (answer.body == NULL) {
            httpd_conn_close(conn);
            return;
        }
        snprintf(answer.body, answer.body_len + 1, "%s\n", text);
    }
    httpd_conn_send(conn, &answer, 1, 1);
}

void httpd_conn_send_continue(httpd_conn *conn)
{
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    if (!conn->head.expect_continue || conn->continue_sent)
        return;
    conn->continue_sent = 1;
    if (httpd_conn_write(conn, strdup(cont), NULL, 0) != 0)
        httpd_conn_close(conn);
}

void httpd_conn_send_delayed(httpd_conn *conn)
{
    httpd_answer answer = conn->delayed;
    conn->delayed.body = NULL;
    conn->busy = BUSY_NONE;
    httpd_conn_send(conn, &answer, conn->delayed_with_body, 0);
    httpd_conn_process(conn);
}

/* ------------------------------------------------------------------ */
/* The answers of on_request                                            */

void httpd_respond(httpd_request *req, httpd_answer *answer)
{
    req->answered = 1;
    httpd_conn_send(req->conn, answer, req->with_body, req->close_after);
}

void httpd_respond_later(httpd_request *req, httpd_answer *answer, int delay_ms)
{
    httpd_conn *conn = req->conn;
    req->answered = 1;
    if (conn->closing || conn->finishing) {
        free(answer->body);
        answer->body = NULL;
        return;
    }
    conn->delayed = *answer;
    conn->delayed.close_after = answer->close_after || req->close_after;
    conn->delayed_with_body = req->with_body;
    answer->body = NULL;
    conn->busy = BUSY_DELAYED;
    httpd_conn_arm(conn, WAIT_ANSWER, delay_ms);
}

static void httpd_stream_end(httpd_stream_write *w)
{
    httpd_conn_close(w->conn);
    w->free(w->stream);
    free(w);
}

static void httpd_stream_on_write(uv_write_t *req, int status);

/* Writes the next chunk; ends the stream (and the connection) on failure. */
static void httpd_stream_pump(httpd_stream_write *w)
{
    size_t len = 0;
    const char *chunk = w->next(w->stream, &len);
    uv_buf_t buf = uv_buf_init((char *)chunk, (unsigned int)len);
    if (chunk == NULL || uv_write(&w->req, (uv_stream_t *)&w->conn->tcp, &buf, 1, httpd_stream_on_write) != 0)
        httpd_stream_end(w);
}

static void httpd_stream_on_write(uv_write_t *req, int status)
{
    httpd_stream_write *w = (httpd_stream_write *)req;
    if (status < 0 || w->conn->closing)
        httpd_stream_end(w);
    else
        httpd_stream_pump(w);
}

void httpd_respond_stream(httpd_request *req, httpd_answer *answer, void *stream, httpd_stream_next_fn next,
                          httpd_stream_free_fn free_fn)
{
    httpd_conn *conn = req->conn;
    req->answered = 1;
    free(answer->body);
    answer->body = NULL;
    conn->busy = BUSY_STREAM;
    httpd_stream_write *w = conn->closing || conn->finishing ? NULL : calloc(1, sizeof *w);
    if (w == NULL) {
        free_fn(stream);
        httpd_conn_close(conn);
        return;
    }
    *w = (httpd_stream_write){.conn = conn, .stream = stream, .next = next, .free = free_fn};
    if (httpd_conn_write(conn, httpd_format_head(answer, 0, 1), NULL, 0) != 0) {
        httpd_stream_end(w);
        return;
    }
    httpd_stream_pump(w);
}
