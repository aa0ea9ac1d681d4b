/*
 * test_httpd.c: the HTTP server (engine/http/httpd.c) on its own loop in
 * a second thread, spoken to with blocking sockets from the test thread:
 * routes, 404, HEAD, keep-alive and pipelining, 405/400 for what is not a
 * plain GET/HEAD, a malformed request line (400 + close), a 1 MiB header
 * (431 + close), a slow client (closed by the read timeout), 200 idle
 * connections (bounded, /metrics still answers), bind errors in pt-BR and a
 * clean close of the loop (ASan checks the rest). A second server answers
 * through on_request: bodies (echo, Expect: 100-continue, 413 past the
 * bound, 501 for chunked, errors formatted by on_error), an answer held by
 * a delay keeps pipelined answers in order, an unanswered request holds the
 * connection, chunked streams (ended by the stream, or by a client that
 * leaves).
 */
#define _GNU_SOURCE /* memmem */
#include "http/httpd.h"
#include "test_assert.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#define TEST_READ_TIMEOUT_MS 300 /* read timeout of the server under test */
#define TEST_WAIT_MS 10000       /* longest a socket read waits in the tests */
#define TEST_MAX_CONNS 64        /* the default bound, checked explicitly */
#define TEST_MAX_BODY 1024       /* body bound of the on_request server */

/* The server under test and the thread running its loop. */
typedef struct fixture {
    uv_loop_t loop;    /* the server's loop */
    uv_async_t stop;   /* asks the loop thread to close the server */
    httpd *srv;        /* the server */
    httpd *app;        /* the server answering through on_request */
    pthread_t thread;  /* runs the loop */
    int handler_calls; /* requests answered by the handler (loop thread) */
    int streams_freed; /* streams the app server freed (loop thread) */
} fixture;

static fixture fx;

/* Routes: /metrics, /conns (open connections), /fail (handler error), 404. */
static int test_handler(void *data, const char *path, httpd_answer *answer)
{
    fixture *f = data;
    char body[64];
    f->handler_calls++;
    if (strcmp(path, "/fail") == 0)
        return -1;
    if (strcmp(path, "/metrics") == 0) {
        snprintf(body, sizeof body, "ragops_up 1\n");
        answer->status = 200;
    } else if (strcmp(path, "/conns") == 0) {
        snprintf(body, sizeof body, "%d", httpd_conn_count(f->srv));
        answer->status = 200;
    } else {
        snprintf(body, sizeof body, "não encontrado\n");
        answer->status = 404;
    }
    snprintf(answer->content_type, sizeof answer->content_type, "text/plain; version=0.0.4");
    answer->body = strdup(body);
    answer->body_len = strlen(body);
    return answer->body ? 0 : -1;
}

/* A stream of `left` chunks "5\r\nhello\r\n" (-1: endless), then the end. */
typedef struct test_stream {
    int left; /* chunks still to give; -1 = never ends */
} test_stream;

static const char *test_stream_next(void *stream, size_t *len)
{
    static const char chunk[] = "5\r\nhello\r\n";
    test_stream *ts = stream;
    if (ts->left == 0)
        return NULL;
    if (ts->left > 0)
        ts->left--;
    *len = sizeof chunk - 1;
    return chunk;
}

static void test_stream_free(void *stream)
{
    fx.streams_freed++;
    free(stream);
}

/* Fills answer with status and a copy of body (len bytes). */
static void test_answer(httpd_answer *answer, int status, const char *body, size_t len)
{
    memset(answer, 0, sizeof *answer);
    answer->status = status;
    snprintf(answer->content_type, sizeof answer->content_type, "text/plain");
    answer->body = malloc(len + 1);
    ASSERT(answer->body != NULL);
    memcpy(answer->body, body, len);
    answer->body_len = len;
}

/* Routes of the app server: POST /echo (the body back, with a header),
 * /later (after 100 ms), /now, /never (no answer), /stream (3 chunks),
 * /endless (chunks until the client leaves). */
static void test_on_request(void *data, httpd_request *req, const http_head *head, const char *body,
                            size_t body_len)
{
    httpd_answer answer;
    if (strcmp(head->path, "/never") == 0)
        return;
    if (strcmp(head->path, "/stream") == 0 || strcmp(head->path, "/endless") == 0) {
        test_stream *ts = malloc(sizeof *ts);
        ASSERT(ts != NULL);
        ts->left = strcmp(head->path, "/stream") == 0 ? 3 : -1;
        test_answer(&answer, 200, "", 0);
        httpd_respond_stream(req, &answer, ts, test_stream_next, test_stream_free);
        return;
    }
    if (strcmp(head->path, "/echo") == 0) {
        test_answer(&answer, 200, body, body_len);
        snprintf(answer.extra_headers, sizeof answer.extra_headers, "X-Teste: eco\r\n");
        httpd_respond(req, &answer);
    } else if (strcmp(head->path, "/later") == 0) {
        test_answer(&answer, 200, "tarde", 5);
        httpd_respond_later(req, &answer, 100);
    } else {
        test_answer(&answer, 200, "agora", 5);
        httpd_respond(req, &answer);
    }
}

/* Protocol errors of the app server: "erro <status>: <text>". */
static void test_on_error(void *data, int status, const char *text, httpd_answer *answer)
{
    char body[256];
    int len = snprintf(body, sizeof body, "erro %d: %s", status, text);
    test_answer(answer, status, body, (size_t)len);
}

static void on_stop(uv_async_t *async)
{
    httpd_close(fx.srv);
    httpd_close(fx.app);
    uv_close((uv_handle_t *)async, NULL);
}

static void *loop_thread(void *arg)
{
    uv_run(&fx.loop, UV_RUN_DEFAULT);
    return NULL;
}

static void fixture_start(void)
{
    memset(&fx, 0, sizeof fx);
    ASSERT_INT_EQ(uv_loop_init(&fx.loop), 0);
    httpd_opts opts = {.host = "127.0.0.1", .port = 0, .read_timeout_ms = TEST_READ_TIMEOUT_MS,
                       .idle_timeout_ms = 60000, .handler = test_handler, .handler_data = &fx};
    char *err = NULL;
    fx.srv = httpd_start(&fx.loop, &opts, &err);
    ASSERT(fx.srv != NULL);
    ASSERT(httpd_port(fx.srv) > 0);
    httpd_opts app = {.host = "127.0.0.1", .port = 0, .read_timeout_ms = HTTPD_TIMEOUT_NONE,
                      .idle_timeout_ms = HTTPD_TIMEOUT_NONE, .handler_data = &fx, .on_request = test_on_request,
                      .max_body = TEST_MAX_BODY, .on_error = test_on_error};
    fx.app = httpd_start(&fx.loop, &app, &err);
    ASSERT(fx.app != NULL);
    ASSERT_INT_EQ(uv_async_init(&fx.loop, &fx.stop, on_stop), 0);
    ASSERT_INT_EQ(pthread_create(&fx.thread, NULL, loop_thread, NULL), 0);
}

/* Closes the server from its loop; the loop must then end with every
 * handle closed (uv_loop_close fails with UV_EBUSY otherwise). */
static void fixture_stop(void)
{
    uv_async_send(&fx.stop);
    ASSERT_INT_EQ(pthread_join(fx.thread, NULL), 0);
    ASSERT_INT_EQ(uv_loop_close(&fx.loop), 0);
}

static int connect_to(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT(fd >= 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_INT_EQ(connect(fd, (struct sockaddr *)&addr, sizeof addr), 0);
    return fd;
}

/* Sends what it can; a server that closed on us is not an error here. */
static void send_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        data += n;
        len -= (size_t)n;
    }
}

/* Reads until the server closes (or TEST_WAIT_MS without bytes); returns
 * the bytes (malloc'd, NUL-terminated) and sets *closed. */
static char *read_until_close(int fd, int *closed)
{
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap);
    ASSERT(buf != NULL);
    *closed = 0;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, TEST_WAIT_MS) <= 0)
            break;
        if (len + 1024 > cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            ASSERT(buf != NULL);
        }
        ssize_t n = recv(fd, buf + len, cap - len - 1, 0);
        if (n <= 0) {
            *closed = 1;
            break;
        }
        len += (size_t)n;
    }
    buf[len] = '\0';
    return buf;
}

/* Reads until `answers` complete answers (head + Content-Length bytes of
 * body) arrived and returns the bytes (malloc'd, NUL-terminated). */
static char *read_answers(int fd, int answers)
{
    size_t len = 0, cap = 65536;
    char *buf = calloc(1, cap);
    ASSERT(buf != NULL);
    int seen = 0;
    size_t at = 0;
    while (seen < answers) {
        char *end = memmem(buf + at, len - at, "\r\n\r\n", 4);
        if (end) {
            const char *cl = strstr(buf + at, "Content-Length: ");
            size_t body = cl && cl < end ? strtoul(cl + 16, NULL, 10) : 0;
            size_t next = (size_t)(end - buf) + 4 + body;
            if (len >= next) {
                at = next;
                seen++;
                continue;
            }
        }
        struct pollfd p = {.fd = fd, .events = POLLIN};
        ASSERT(poll(&p, 1, TEST_WAIT_MS) > 0);
        ssize_t n = recv(fd, buf + len, cap - len - 1, 0);
        ASSERT(n > 0);
        len += (size_t)n;
    }
    return buf;
}

/* One request on a new connection; returns the whole answer. */
static char *get_once(const char *request)
{
    int fd = connect_to(httpd_port(fx.srv));
    send_all(fd, request, strlen(request));
    char *answer = read_answers(fd, 1);
    close(fd);
    return answer;
}

static void test_routes_keepalive_pipelining(void)
{
    char *a = get_once("GET /metrics?x=1 HTTP/1.1\r\nHost: t\r\n\r\n");
    ASSERT(strncmp(a, "HTTP/1.1 200 OK\r\n", 17) == 0);
    ASSERT(strstr(a, "Content-Type: text/plain; version=0.0.4\r\n") != NULL);
    ASSERT(strstr(a, "Content-Length: 12\r\n") != NULL);
    ASSERT(strstr(a, "\r\n\r\nragops_up 1\n") != NULL);
    ASSERT(strstr(a, "Connection: close") == NULL);
    free(a);

    a = get_once("GET /nada HTTP/1.1\r\n\r\n");
    ASSERT(strncmp(a, "HTTP/1.1 404 Not Found\r\n", 24) == 0);
    free(a);

    a = get_once("GET /fail HTTP/1.1\r\n\r\n");
    ASSERT(strncmp(a, "HTTP/1.1 500 Internal Server Error\r\n", 36) == 0);
    free(a);

    /* Three pipelined requests on one connection, answered in order. */
    int fd = connect_to(httpd_port(fx.srv));
    const char *three = "GET /nada HTTP/1.1\r\n\r\nGET /metrics HTTP/1.1\r\n\r\nGET /nada HTTP/1.1\r\n\r\n";
    send_all(fd, three, strlen(three));
    a = read_answers(fd, 3);
    char *second = strstr(a + 1, "HTTP/1.1 ");
    ASSERT(strncmp(a, "HTTP/1.1 404", 12) == 0);
    ASSERT(second != NULL && strncmp(second, "HTTP/1.1 200", 12) == 0);
    ASSERT(strstr(second + 1, "HTTP/1.1 404") != NULL);
    free(a);
    close(fd);
}

static void test_head_and_http10(void)
{
    int closed = 0;
    int fd = connect_to(httpd_port(fx.srv));
    const char *req = "HEAD /metrics HTTP/1.1\r\nConnection: close\r\n\r\n";
    send_all(fd, req, strlen(req));
    char *a = read_until_close(fd, &closed);
    ASSERT(closed);
    ASSERT(strncmp(a, "HTTP/1.1 200 OK\r\n", 17) == 0);
    ASSERT(strstr(a, "Content-Length: 12\r\n") != NULL);
    ASSERT(strstr(a, "Connection: close\r\n") != NULL);
    size_t len = strlen(a);
    ASSERT(len >= 4 && strcmp(a + len - 4, "\r\n\r\n") == 0); /* no body */
    free(a);
    close(fd);

    fd = connect_to(httpd_port(fx.srv));
    req = "GET /metrics HTTP/1.0\r\n\r\n";
    send_all(fd, req, strlen(req));
    a = read_until_close(fd, &closed);
    ASSERT(closed); /* HTTP/1.0 without keep-alive: closed after the answer */
    ASSERT(strstr(a, "\r\n\r\nragops_up 1\n") != NULL);
    free(a);
    close(fd);
}

/* req gets status and then the server closes the connection. */
static void expect_status_and_close(const char *req, size_t req_len, const char *status_line)
{
    int closed = 0;
    int fd = connect_to(httpd_port(fx.srv));
    send_all(fd, req, req_len);
    char *a = read_until_close(fd, &closed);
    ASSERT(closed);
    ASSERT_INT_EQ(strncmp(a, status_line, strlen(status_line)), 0);
    ASSERT(strstr(a, "Connection: close\r\n") != NULL);
    free(a);
    close(fd);
}

static void test_refusals(void)
{
    int calls = fx.handler_calls;
    const char *bad[] = {"GARBAGE\r\n\r\n", "GET /metrics\r\n\r\n", "GET /metrics HTTP/9.9\r\n\r\n",
                         "GET /metrics HTTP/1.1\r\nsem-dois-pontos\r\n\r\n", "\r\n\r\n"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_status_and_close(bad[i], strlen(bad[i]), "HTTP/1.1 400 Bad Request\r\n");
    const char *post = "POST /metrics HTTP/1.1\r\n\r\n";
    expect_status_and_close(post, strlen(post), "HTTP/1.1 405 Method Not Allowed\r\n");
    const char *body = "GET /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
    expect_status_and_close(body, strlen(body), "HTTP/1.1 400 Bad Request\r\n");
    ASSERT_INT_EQ(fx.handler_calls, calls); /* none of them reached the handler */
}

static void test_huge_header(void)
{
    size_t len = 1024 * 1024;
    char *req = malloc(len);
    ASSERT(req != NULL);
    const char *start = "GET /metrics HTTP/1.1\r\nX-Grande: ";
    memset(req, 'a', len);
    memcpy(req, start, strlen(start));
    expect_status_and_close(req, len, "HTTP/1.1 431 Request Header Fields Too Large\r\n");
    /* Just above the bound, in one write, too. */
    size_t just = HTTPD_DEFAULT_MAX_HEAD + 1;
    memcpy(req + just - 4, "\r\n\r\n", 4);
    expect_status_and_close(req, just, "HTTP/1.1 431 Request Header Fields Too Large\r\n");
    free(req);
}

static void test_slow_client(void)
{
    int calls = fx.handler_calls;
    int fd = connect_to(httpd_port(fx.srv));
    const char *part = "GET /metrics HTTP/1.1\r\nX-Lento: ";
    send_all(fd, part, strlen(part));
    /* One byte every 50 ms: each one would reset a naive timer. */
    int closed = 0;
    for (int i = 0; i < 200 && !closed; i++) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 50) > 0) {
            char byte;
            closed = recv(fd, &byte, 1, 0) <= 0;
            break;
        }
        send_all(fd, "a", 1);
    }
    ASSERT(closed); /* closed by the read timeout, without an answer */
    close(fd);
    ASSERT_INT_EQ(fx.handler_calls, calls);

    /* Connected and silent: closed too. */
    fd = connect_to(httpd_port(fx.srv));
    char *a = read_until_close(fd, &closed);
    ASSERT(closed);
    ASSERT_STR_EQ(a, "");
    free(a);
    close(fd);
}

static void test_many_idle_connections(void)
{
    int fds[200];
    for (int i = 0; i < 200; i++)
        fds[i] = connect_to(httpd_port(fx.srv));
    /* Half of them start a request and stall. */
    for (int i = 0; i < 200; i += 2)
        send_all(fds[i], "GET /metr", 9);
    char *a = get_once("GET /metrics HTTP/1.1\r\n\r\n");
    ASSERT(strstr(a, "\r\n\r\nragops_up 1\n") != NULL);
    free(a);
    a = get_once("GET /conns HTTP/1.1\r\n\r\n");
    char *body = strstr(a, "\r\n\r\n");
    ASSERT(body != NULL);
    int open = atoi(body + 4);
    ASSERT(open >= 1 && open <= TEST_MAX_CONNS);
    free(a);
    for (int i = 0; i < 200; i++)
        close(fds[i]);
}

static void test_bind_errors(void)
{
    uv_loop_t loop;
    ASSERT_INT_EQ(uv_loop_init(&loop), 0);
    char *err = NULL;
    httpd_opts opts = {.host = "127.0.0.1", .port = httpd_port(fx.srv), .handler = test_handler};
    ASSERT(httpd_start(&loop, &opts, &err) == NULL);
    ASSERT(err != NULL && strstr(err, "endereço em uso") != NULL);
    ASSERT(strstr(err, "127.0.0.1:") != NULL);
    free(err);
    err = NULL;
    opts.host = "localhost";
    ASSERT(httpd_start(&loop, &opts, &err) == NULL);
    ASSERT(err != NULL && strstr(err, "endereço IP inválido") != NULL);
    free(err);
    uv_run(&loop, UV_RUN_DEFAULT); /* the failed listener closes */
    ASSERT_INT_EQ(uv_loop_close(&loop), 0);
}

/* One request to the app server on a new connection; returns the answer
 * and the connection (open) in *fd_out when fd_out is not NULL. */
static char *app_once(const char *request, size_t len)
{
    int fd = connect_to(httpd_port(fx.app));
    send_all(fd, request, len);
    char *answer = read_answers(fd, 1);
    close(fd);
    return answer;
}

static void test_app_bodies(void)
{
    const char *post = "POST /echo HTTP/1.1\r\nContent-Length: 5\r\n\r\nolá!";
    char *a = app_once(post, strlen(post));
    ASSERT(strncmp(a, "HTTP/1.1 200 OK\r\n", 17) == 0);
    ASSERT(strstr(a, "X-Teste: eco\r\n") != NULL);
    ASSERT(strstr(a, "\r\n\r\nolá!") != NULL);
    free(a);

    /* Expect: 100-continue: the interim answer, then the body, then the answer. */
    int fd = connect_to(httpd_port(fx.app));
    const char *head = "POST /echo HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n";
    send_all(fd, head, strlen(head));
    char cont[64] = "";
    struct pollfd p = {.fd = fd, .events = POLLIN};
    ASSERT(poll(&p, 1, TEST_WAIT_MS) > 0);
    ASSERT(recv(fd, cont, sizeof cont - 1, 0) > 0);
    ASSERT_STR_EQ(cont, "HTTP/1.1 100 Continue\r\n\r\n");
    send_all(fd, "abc", 3);
    a = read_answers(fd, 1);
    ASSERT(strstr(a, "\r\n\r\nabc") != NULL);
    free(a);
    close(fd);

    /* Past the body bound, chunked: refused, formatted by on_error, closed. */
    char big[128];
    snprintf(big, sizeof big, "POST /echo HTTP/1.1\r\nContent-Length: %d\r\n\r\n", TEST_MAX_BODY + 1);
    int closed = 0;
    fd = connect_to(httpd_port(fx.app));
    send_all(fd, big, strlen(big));
    a = read_until_close(fd, &closed);
    ASSERT(closed);
    ASSERT(strncmp(a, "HTTP/1.1 413 ", 13) == 0);
    ASSERT(strstr(a, "erro 413: corpo da requisição maior que o limite") != NULL);
    free(a);
    close(fd);
    const char *chunked = "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    fd = connect_to(httpd_port(fx.app));
    send_all(fd, chunked, strlen(chunked));
    a = read_until_close(fd, &closed);
    ASSERT(closed);
    ASSERT(strncmp(a, "HTTP/1.1 501 ", 13) == 0);
    ASSERT(strstr(a, "erro 501: Transfer-Encoding não é suportado") != NULL);
    free(a);
    close(fd);
}

static void test_app_delay_and_hold(void)
{
    /* /later is held by its delay; /now, pipelined behind it, comes after. */
    const char *two = "GET /later HTTP/1.1\r\n\r\nGET /now HTTP/1.1\r\n\r\n";
    int fd = connect_to(httpd_port(fx.app));
    send_all(fd, two, strlen(two));
    char *a = read_answers(fd, 2);
    char *first = strstr(a, "\r\n\r\n");
    ASSERT(first != NULL && strncmp(first + 4, "tarde", 5) == 0);
    ASSERT(strstr(first + 4, "\r\n\r\nagora") != NULL);
    free(a);

    /* The same connection goes on answering after the delay. */
    send_all(fd, "GET /now HTTP/1.1\r\n\r\n", strlen("GET /now HTTP/1.1\r\n\r\n"));
    a = read_answers(fd, 1);
    ASSERT(strstr(a, "\r\n\r\nagora") != NULL);
    free(a);
    close(fd);

    /* /never holds the connection: /now behind it is not answered. */
    fd = connect_to(httpd_port(fx.app));
    const char *held = "GET /never HTTP/1.1\r\n\r\nGET /now HTTP/1.1\r\n\r\n";
    send_all(fd, held, strlen(held));
    struct pollfd p = {.fd = fd, .events = POLLIN};
    ASSERT_INT_EQ(poll(&p, 1, 300), 0);
    close(fd);
}

static void test_app_streams(void)
{
    int closed = 0;
    int fd = connect_to(httpd_port(fx.app));
    send_all(fd, "GET /stream HTTP/1.1\r\n\r\n", strlen("GET /stream HTTP/1.1\r\n\r\n"));
    char *a = read_until_close(fd, &closed);
    ASSERT(closed); /* the stream ended: the connection closes */
    ASSERT(strstr(a, "Transfer-Encoding: chunked\r\n") != NULL);
    ASSERT(strstr(a, "Content-Length") == NULL);
    char *body = strstr(a, "\r\n\r\n");
    ASSERT(body != NULL);
    ASSERT_STR_EQ(body + 4, "5\r\nhello\r\n5\r\nhello\r\n5\r\nhello\r\n");
    free(a);
    close(fd);

    /* An endless stream ends when the client leaves. */
    fd = connect_to(httpd_port(fx.app));
    send_all(fd, "GET /endless HTTP/1.1\r\n\r\n", strlen("GET /endless HTTP/1.1\r\n\r\n"));
    char some[4096];
    size_t got = 0;
    while (got < 3 * sizeof some) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        ASSERT(poll(&p, 1, TEST_WAIT_MS) > 0);
        ssize_t n = recv(fd, some, sizeof some, 0);
        ASSERT(n > 0);
        got += (size_t)n;
    }
    close(fd);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* the endless stream writes to a client that left */
    fixture_start();
    test_routes_keepalive_pipelining();
    test_head_and_http10();
    test_refusals();
    test_huge_header();
    test_slow_client();
    test_many_idle_connections();
    test_bind_errors();
    test_app_bodies();
    test_app_delay_and_hold();
    test_app_streams();
    /* Close with connections still open (one idle keep-alive, one mid-head). */
    int idle = connect_to(httpd_port(fx.srv));
    int mid = connect_to(httpd_port(fx.srv));
    send_all(mid, "GET /", 5);
    char *a = get_once("GET /metrics HTTP/1.1\r\n\r\n");
    free(a);
    fixture_stop();
    ASSERT_INT_EQ(fx.streams_freed, 2); /* the ended one and the one the client left */
    close(idle);
    close(mid);
    printf("test_httpd: ok\n");
    return 0;
}
