/*
 * test_http_mime.c: the multipart/form-data body of http_request_opts.mime
 * (http.c) against a capturing HTTP peer on the test's loop: the text
 * fields and the file's bytes (read from disk while sent, larger than one
 * socket read) arrive in one well-formed multipart body with its boundary,
 * filename and content type; body and mime together, no file or a missing
 * file are refused at start; a file removed after the start fails the
 * request without a crash.
 * Every test runs on its own loop and checks that uv_loop_close returns 0.
 */
#include "http/http.h"
#include "test_assert.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <unistd.h>

#define CAPTURE_MAX ((size_t)4 * 1024 * 1024)
static const char REPLY[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n"
                            "Connection: close\r\n\r\n{\"id\":\"file-1\"}";

/* A peer that keeps one whole request (head and Content-Length body), then
 * answers REPLY and closes. */
typedef struct capture {
    uv_tcp_t tcp;   /* listener */
    uv_tcp_t peer;  /* the one accepted connection */
    int accepted;   /* 1 once peer is in use */
    int port;       /* bound port */
    char *data;     /* bytes received (NUL-terminated) */
    size_t len;     /* bytes in data */
    int answered;   /* 1 once REPLY was written */
    uv_write_t write;
} capture;

static void capture_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    static char chunk[16384]; /* small: the file arrives over many reads */
    *buf = uv_buf_init(chunk, sizeof chunk);
}

/* 1 when data holds a whole request. */
static int capture_complete(const capture *c)
{
    const char *end = strstr(c->data, "\r\n\r\n");
    const char *length = strstr(c->data, "Content-Length: ");
    if (!end || !length || length > end)
        return 0;
    return c->len >= (size_t)(end + 4 - c->data) + strtoul(length + 16, NULL, 10);
}

static void capture_closed(uv_handle_t *handle) {}

static void capture_written(uv_write_t *req, int status)
{
    uv_close((uv_handle_t *)req->handle, capture_closed);
}

static void capture_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    capture *c = stream->data;
    uv_buf_t reply = uv_buf_init((char *)REPLY, sizeof REPLY - 1);
    if (nread < 0) {
        uv_read_stop(stream);
        return;
    }
    ASSERT(c->len + (size_t)nread < CAPTURE_MAX);
    memcpy(c->data + c->len, buf->base, (size_t)nread);
    c->len += (size_t)nread;
    c->data[c->len] = '\0';
    if (!c->answered && capture_complete(c)) {
        c->answered = 1;
        uv_read_stop(stream);
        ASSERT_INT_EQ(uv_write(&c->write, stream, &reply, 1, capture_written), 0);
    }
}

static void capture_connection(uv_stream_t *listener, int status)
{
    capture *c = listener->data;
    ASSERT(status == 0 && !c->accepted);
    c->accepted = 1;
    ASSERT_INT_EQ(uv_tcp_init(listener->loop, &c->peer), 0);
    c->peer.data = c;
    ASSERT_INT_EQ(uv_accept(listener, (uv_stream_t *)&c->peer), 0);
    ASSERT_INT_EQ(uv_read_start((uv_stream_t *)&c->peer, capture_alloc, capture_read), 0);
    uv_close((uv_handle_t *)listener, capture_closed); /* one connection only */
}

static void capture_start(uv_loop_t *loop, capture *c)
{
    struct sockaddr_in addr;
    int alen = sizeof addr;
    memset(c, 0, sizeof *c);
    c->data = malloc(CAPTURE_MAX);
    ASSERT(c->data != NULL);
    c->data[0] = '\0';
    ASSERT_INT_EQ(uv_tcp_init(loop, &c->tcp), 0);
    c->tcp.data = c;
    ASSERT_INT_EQ(uv_ip4_addr("127.0.0.1", 0, &addr), 0);
    ASSERT_INT_EQ(uv_tcp_bind(&c->tcp, (const struct sockaddr *)&addr, 0), 0);
    ASSERT_INT_EQ(uv_listen((uv_stream_t *)&c->tcp, 8, capture_connection), 0);
    ASSERT_INT_EQ(uv_tcp_getsockname(&c->tcp, (struct sockaddr *)&addr, &alen), 0);
    c->port = ntohs(addr.sin_port);
}

/* One finished request as seen by the test. */
typedef struct outcome {
    int calls;          /* callbacks run */
    CURLcode curl_code; /* copied from the response */
    long status;        /* copied from the response */
    char body[64];      /* the response body's start */
} outcome;

static void record_cb(http_request *req, const http_response *resp, void *data)
{
    outcome *o = data;
    o->calls++;
    o->curl_code = resp->curl_code;
    o->status = resp->status;
    snprintf(o->body, sizeof o->body, "%s", resp->body);
}

/* Writes len bytes of a JSONL-ish pattern to a new temporary file; returns
 * its malloc'd content and fills path. */
static char *write_part(char *path, size_t path_size, size_t len)
{
    char *content = malloc(len);
    FILE *f;
    ASSERT(content != NULL);
    for (size_t i = 0; i < len; i++)
        content[i] = (i % 100 == 99) ? '\n' : "{\"custom_id\":1}"[i % 15];
    snprintf(path, path_size, "/tmp/ragops-test-mime-%ld.jsonl", (long)getpid());
    f = fopen(path, "wb");
    ASSERT(f != NULL);
    ASSERT_INT_EQ(fwrite(content, 1, len, f), len);
    ASSERT_INT_EQ(fclose(f), 0);
    return content;
}

/* The body expected for fields purpose=batch, extra="a b" and the file. */
static size_t expected_body(char *out, const char *boundary, const char *content, size_t len)
{
    int n = sprintf(out,
                    "--%s\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n"
                    "--%s\r\nContent-Disposition: form-data; name=\"extra\"\r\n\r\na b\r\n"
                    "--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=\"part-1.jsonl\"\r\n"
                    "Content-Type: application/jsonl\r\n\r\n",
                    boundary, boundary, boundary);
    memcpy(out + n, content, len);
    n += (int)len;
    n += sprintf(out + n + 0, "\r\n--%s--\r\n", boundary);
    return (size_t)n;
}

static void test_mime_upload(void)
{
    uv_loop_t loop;
    capture c;
    outcome o = {0};
    char url[64], path[128], boundary[128];
    static const char *const headers[] = {"Authorization: Bearer sk-1", NULL};
    static const http_mime_field fields[] = {{"purpose", "batch"}, {"extra", "a b"}};
    size_t len = 300 * 1000;
    char *content = write_part(path, sizeof path, len);
    http_mime mime = {fields, 2, "file", path, "part-1.jsonl", "application/jsonl"};
    http_request_opts opts = {0};
    const char *type, *body;
    char *expected = malloc(len + 4096);
    size_t expected_len;
    http_client *hc;

    ASSERT(expected != NULL);
    ASSERT_INT_EQ(uv_loop_init(&loop), 0);
    capture_start(&loop, &c);
    hc = http_client_new(&loop);
    ASSERT(hc != NULL);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/files", c.port);
    opts.url = url;
    opts.headers = headers;
    opts.mime = &mime;
    opts.timeout_ms = 20000;
    opts.proxy = "";
    ASSERT(http_request_start(hc, &opts, record_cb, &o) != NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_INT_EQ(o.calls, 1);
    ASSERT_INT_EQ(o.curl_code, CURLE_OK);
    ASSERT_INT_EQ(o.status, 200);
    ASSERT_STR_EQ(o.body, "{\"id\":\"file-1\"}");

    ASSERT(strncmp(c.data, "POST /v1/files HTTP/1.1\r\n", 25) == 0);
    ASSERT(strstr(c.data, "\r\nAuthorization: Bearer sk-1\r\n") != NULL);
    ASSERT(strstr(c.data, "\r\nExpect:") == NULL);
    type = strstr(c.data, "\r\nContent-Type: multipart/form-data; boundary=");
    ASSERT(type != NULL);
    ASSERT_INT_EQ(sscanf(type + 46, "%127[^\r\n]", boundary), 1);
    body = strstr(c.data, "\r\n\r\n") + 4;
    expected_len = expected_body(expected, boundary, content, len);
    ASSERT_INT_EQ(c.len - (size_t)(body - c.data), expected_len);
    ASSERT(memcmp(body, expected, expected_len) == 0);

    http_client_close(hc);
    ASSERT_INT_EQ(uv_run(&loop, UV_RUN_DEFAULT), 0);
    ASSERT_INT_EQ(uv_loop_close(&loop), 0);
    unlink(path);
    free(content);
    free(expected);
    free(c.data);
}

static void test_mime_refusals_and_missing_file(void)
{
    uv_loop_t loop;
    capture c;
    outcome o = {0};
    char url[64];
    http_mime mime = {NULL, 0, "file", "/nonexistent/ragops-part.jsonl", NULL, NULL};
    http_mime no_path = {NULL, 0, "file", NULL, NULL, NULL};
    http_request_opts opts = {0};
    http_request *req;
    http_client *hc;
    char path[128];
    char *content;

    ASSERT_INT_EQ(uv_loop_init(&loop), 0);
    capture_start(&loop, &c);
    hc = http_client_new(&loop);
    ASSERT(hc != NULL);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/files", c.port);
    opts.url = url;
    opts.timeout_ms = 20000;
    opts.proxy = "";
    opts.body = "{}";
    opts.body_len = 2;
    opts.mime = &mime;
    ASSERT(http_request_start(hc, &opts, record_cb, &o) == NULL); /* body and mime together */
    opts.body = NULL;
    opts.body_len = 0;
    opts.mime = &no_path;
    ASSERT(http_request_start(hc, &opts, record_cb, &o) == NULL); /* no file */
    opts.mime = &mime;
    ASSERT(http_request_start(hc, &opts, record_cb, &o) == NULL); /* libcurl checks the file at start */
    /* a file removed after the start: libcurl opens it while sending and fails */
    content = write_part(path, sizeof path, 1000);
    mime.file_path = path;
    req = http_request_start(hc, &opts, record_cb, &o);
    ASSERT(req != NULL);
    unlink(path);
    while (o.calls == 0)
        uv_run(&loop, UV_RUN_ONCE);
    ASSERT_INT_EQ(o.calls, 1);
    ASSERT_INT_EQ(o.curl_code, CURLE_READ_ERROR);
    ASSERT_STR_EQ(http_curl_error_ptbr(o.curl_code), "falha ao ler o arquivo a enviar");
    ASSERT(!c.answered);
    http_client_close(hc);
    if (!c.accepted)
        uv_close((uv_handle_t *)&c.tcp, capture_closed);
    else
        uv_close((uv_handle_t *)&c.peer, capture_closed);
    ASSERT_INT_EQ(uv_run(&loop, UV_RUN_DEFAULT), 0);
    ASSERT_INT_EQ(uv_loop_close(&loop), 0);
    free(content);
    free(c.data);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    test_mime_upload();
    test_mime_refusals_and_missing_file();
    printf("test_http_mime: ok\n");
    return 0;
}
