/*
 * test_http_ratelimit.c: the provider's rate-limit headers (http_ratelimit.c):
 * the parsers of counts (x-ratelimit-limit-*, -remaining-*), Go durations
 * (x-ratelimit-reset-*) and retry-after-ms, case by case (valid, decimals,
 * several units, empty, negative, overflow, junk), and their reading from a
 * real answer of a raw HTTP peer on the test's loop: every field of a 2xx,
 * retry-after-ms preferred to Retry-After on a 429, Retry-After when
 * retry-after-ms is junk, and nothing at all when no header is there.
 */
#include "http/http.h"
#include "test_assert.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>

/* The parse of value: its state, and the value (or sentinel -7 untouched). */
static long count_of(const char *value, http_value_state *state)
{
    long out = -7;
    *state = http_parse_count(value, &out);
    return out;
}

static long duration_of(const char *value, http_value_state *state)
{
    long out = -7;
    *state = http_parse_duration_ms(value, &out);
    return out;
}

static long retry_ms_of(const char *value, http_value_state *state)
{
    long out = -7;
    *state = http_parse_retry_after_ms(value, &out);
    return out;
}

#define EXPECT(fn, value, want_state, want)      \
    do {                                         \
        http_value_state st_;                    \
        long got_ = fn(value, &st_);             \
        ASSERT_INT_EQ(st_, want_state);          \
        ASSERT_INT_EQ(got_, want);               \
    } while (0)

static void test_counts(void)
{
    EXPECT(count_of, "60", HTTP_VALUE_VALID, 60);
    EXPECT(count_of, "0", HTTP_VALUE_VALID, 0);
    EXPECT(count_of, " 149984 \r\n", HTTP_VALUE_VALID, 149984);
    EXPECT(count_of, "1000000000000000", HTTP_VALUE_VALID, HTTP_RATELIMIT_MAX_COUNT);
    EXPECT(count_of, NULL, HTTP_VALUE_ABSENT, -7);
    EXPECT(count_of, "", HTTP_VALUE_ABSENT, -7);
    EXPECT(count_of, "  \t", HTTP_VALUE_ABSENT, -7);
    EXPECT(count_of, "-1", HTTP_VALUE_INVALID, -7);
    EXPECT(count_of, "+5", HTTP_VALUE_INVALID, -7);
    EXPECT(count_of, "1000000000000001", HTTP_VALUE_INVALID, -7);      /* over the bound */
    EXPECT(count_of, "99999999999999999999999", HTTP_VALUE_INVALID, -7); /* overflow */
    EXPECT(count_of, "12.5", HTTP_VALUE_INVALID, -7);
    EXPECT(count_of, "1e6", HTTP_VALUE_INVALID, -7);
    EXPECT(count_of, "0x10", HTTP_VALUE_INVALID, -7);
    EXPECT(count_of, "muitos", HTTP_VALUE_INVALID, -7);
    EXPECT(count_of, "1 2", HTTP_VALUE_INVALID, -7);
}

static void test_durations(void)
{
    /* what OpenAI and the embed-server write */
    EXPECT(duration_of, "1s", HTTP_VALUE_VALID, 1000);
    EXPECT(duration_of, "6m0s", HTTP_VALUE_VALID, 360000);
    EXPECT(duration_of, "20ms", HTTP_VALUE_VALID, 20);
    EXPECT(duration_of, "1.5s", HTTP_VALUE_VALID, 1500);
    EXPECT(duration_of, "59.999s", HTTP_VALUE_VALID, 59999);
    EXPECT(duration_of, "1m30s", HTTP_VALUE_VALID, 90000);
    EXPECT(duration_of, "2m59.56s", HTTP_VALUE_VALID, 179560);
    EXPECT(duration_of, "0.5h1m3.5s", HTTP_VALUE_VALID, 1863500);
    EXPECT(duration_of, "1h", HTTP_VALUE_VALID, 3600000);
    EXPECT(duration_of, "0s", HTTP_VALUE_VALID, 0);
    EXPECT(duration_of, "0", HTTP_VALUE_VALID, 0);
    EXPECT(duration_of, ".5s", HTTP_VALUE_VALID, 500);
    EXPECT(duration_of, "1.5m", HTTP_VALUE_VALID, 90000);
    /* below a millisecond: rounded up, never early */
    EXPECT(duration_of, "500us", HTTP_VALUE_VALID, 1);
    EXPECT(duration_of, "500\xc2\xb5s", HTTP_VALUE_VALID, 1);
    EXPECT(duration_of, "1500\xce\xbcs", HTTP_VALUE_VALID, 2);
    EXPECT(duration_of, "1ns", HTTP_VALUE_VALID, 1);
    EXPECT(duration_of, "1.0001s", HTTP_VALUE_VALID, 1001);
    /* bounded: cut to one hour */
    EXPECT(duration_of, "1h0m0.001s", HTTP_VALUE_VALID, HTTP_RATELIMIT_MAX_RESET_MS);
    EXPECT(duration_of, "1h2m3.5s", HTTP_VALUE_VALID, HTTP_RATELIMIT_MAX_RESET_MS);
    EXPECT(duration_of, "17h3m20s", HTTP_VALUE_VALID, HTTP_RATELIMIT_MAX_RESET_MS);
    EXPECT(duration_of, "99999999999999999999999h", HTTP_VALUE_VALID, HTTP_RATELIMIT_MAX_RESET_MS);
    /* absent or junk */
    EXPECT(duration_of, NULL, HTTP_VALUE_ABSENT, -7);
    EXPECT(duration_of, "", HTTP_VALUE_ABSENT, -7);
    EXPECT(duration_of, "-1s", HTTP_VALUE_INVALID, -7);
    EXPECT(duration_of, "+1s", HTTP_VALUE_INVALID, -7);
    EXPECT(duration_of, "1", HTTP_VALUE_INVALID, -7); /* no unit */
    EXPECT(duration_of, "s", HTTP_VALUE_INVALID, -7);
    EXPECT(duration_of, "1d", HTTP_VALUE_INVALID, -7);
    EXPECT(duration_of, "1s junk", HTTP_VALUE_INVALID, -7);
    EXPECT(duration_of, "1.2.3s", HTTP_VALUE_INVALID, -7);
    EXPECT(duration_of, "1e3s", HTTP_VALUE_INVALID, -7);
    EXPECT(duration_of, "amanhã", HTTP_VALUE_INVALID, -7);
    EXPECT(duration_of, "1s1s1s1s1s1s1s1s1s1s1s1s1s1s1s1s1s1s1s1s1s1s1s1s1s1s1s1s1s1s1s1s1s", HTTP_VALUE_INVALID,
           -7); /* longer than HTTP_RATELIMIT_MAX_VALUE */
}

static void test_retry_after_ms(void)
{
    EXPECT(retry_ms_of, "1500", HTTP_VALUE_VALID, 1500);
    EXPECT(retry_ms_of, " 0 ", HTTP_VALUE_VALID, 0);
    EXPECT(retry_ms_of, "20.5", HTTP_VALUE_VALID, 21); /* rounded up: never early */
    EXPECT(retry_ms_of, "20.0", HTTP_VALUE_VALID, 20);
    EXPECT(retry_ms_of, "99999999999999999999999", HTTP_VALUE_VALID, HTTP_MAX_RETRY_AFTER_MS);
    EXPECT(retry_ms_of, NULL, HTTP_VALUE_ABSENT, -7);
    EXPECT(retry_ms_of, "", HTTP_VALUE_ABSENT, -7);
    EXPECT(retry_ms_of, "-3", HTTP_VALUE_INVALID, -7);
    EXPECT(retry_ms_of, "1e3", HTTP_VALUE_INVALID, -7);
    EXPECT(retry_ms_of, "0x10", HTTP_VALUE_INVALID, -7);
    EXPECT(retry_ms_of, "1500ms", HTTP_VALUE_INVALID, -7);
    EXPECT(retry_ms_of, "inf", HTTP_VALUE_INVALID, -7);
    EXPECT(retry_ms_of, "nan", HTTP_VALUE_INVALID, -7);
}

/* ---------- through a real answer ---------- */

/* A raw HTTP peer: every connection gets `reply` once its request starts
 * arriving, and is closed when the client closes it. */
typedef struct raw_peer {
    uv_tcp_t tcp;      /* listener */
    const char *reply; /* bytes written to each connection */
} raw_peer;

static void raw_on_closed(uv_handle_t *handle)
{
    free(handle); /* an accepted connection */
}

static void raw_on_written(uv_write_t *req, int status)
{
    free(req);
}

static void raw_on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    static char sink[65536]; /* the requests are read and dropped */
    *buf = uv_buf_init(sink, sizeof sink);
}

static void raw_on_read(uv_stream_t *conn, ssize_t nread, const uv_buf_t *buf)
{
    raw_peer *rp = conn->data;
    if (nread < 0) {
        uv_close((uv_handle_t *)conn, raw_on_closed);
        return;
    }
    if (nread > 0 && rp != NULL) {
        uv_write_t *write = malloc(sizeof *write);
        uv_buf_t out = uv_buf_init((char *)rp->reply, (unsigned int)strlen(rp->reply));
        ASSERT(write != NULL);
        ASSERT_INT_EQ(uv_write(write, conn, &out, 1, raw_on_written), 0);
        conn->data = NULL; /* answered once */
    }
}

static void raw_on_connection(uv_stream_t *listener, int status)
{
    uv_tcp_t *conn = calloc(1, sizeof *conn);
    ASSERT(status == 0 && conn != NULL);
    ASSERT_INT_EQ(uv_tcp_init(listener->loop, conn), 0);
    ASSERT_INT_EQ(uv_accept(listener, (uv_stream_t *)conn), 0);
    conn->data = listener->data;
    ASSERT_INT_EQ(uv_read_start((uv_stream_t *)conn, raw_on_alloc, raw_on_read), 0);
}

/* One answer as the test saw it. */
typedef struct seen {
    int calls;               /* callbacks run */
    long status;             /* resp->status */
    long retry_after_ms;     /* resp->retry_after_ms */
    http_ratelimit ratelimit; /* resp->ratelimit */
} seen;

static void seen_cb(http_request *req, const http_response *resp, void *data)
{
    seen *s = data;
    s->calls++;
    s->status = resp->status;
    s->retry_after_ms = resp->retry_after_ms;
    s->ratelimit = resp->ratelimit;
}

/* The response of one GET to a peer answering head (status line and
 * headers, without the blank line) with an empty body. */
static seen answer_with(const char *head)
{
    uv_loop_t loop;
    raw_peer rp;
    struct sockaddr_in addr;
    int alen = sizeof addr;
    char reply[2048], url[64];
    http_request_opts opts = {0};
    seen s = {0};
    snprintf(reply, sizeof reply, "%s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", head);
    ASSERT_INT_EQ(uv_loop_init(&loop), 0);
    memset(&rp, 0, sizeof rp);
    rp.reply = reply;
    ASSERT_INT_EQ(uv_tcp_init(&loop, &rp.tcp), 0);
    rp.tcp.data = &rp;
    ASSERT_INT_EQ(uv_ip4_addr("127.0.0.1", 0, &addr), 0);
    ASSERT_INT_EQ(uv_tcp_bind(&rp.tcp, (const struct sockaddr *)&addr, 0), 0);
    ASSERT_INT_EQ(uv_listen((uv_stream_t *)&rp.tcp, 16, raw_on_connection), 0);
    ASSERT_INT_EQ(uv_tcp_getsockname(&rp.tcp, (struct sockaddr *)&addr, &alen), 0);
    http_client *hc = http_client_new(&loop);
    ASSERT(hc != NULL);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", ntohs(addr.sin_port));
    opts.url = url;
    opts.proxy = "";
    opts.timeout_ms = 20000;
    ASSERT(http_request_start(hc, &opts, seen_cb, &s) != NULL);
    while (s.calls == 0)
        uv_run(&loop, UV_RUN_ONCE);
    http_client_close(hc);
    uv_close((uv_handle_t *)&rp.tcp, NULL);
    ASSERT_INT_EQ(uv_run(&loop, UV_RUN_DEFAULT), 0);
    ASSERT_INT_EQ(uv_loop_close(&loop), 0);
    ASSERT_INT_EQ(s.calls, 1);
    return s;
}

static void test_read_from_answers(void)
{
    seen s = answer_with("HTTP/1.1 200 OK\r\n"
                         "x-ratelimit-limit-requests: 60\r\nx-ratelimit-remaining-requests: 59\r\n"
                         "x-ratelimit-reset-requests: 1s\r\nX-RateLimit-Limit-Tokens: 1000\r\n"
                         "x-ratelimit-remaining-tokens: 994\r\nx-ratelimit-reset-tokens: 360ms");
    ASSERT_INT_EQ(s.status, 200);
    ASSERT_INT_EQ(s.retry_after_ms, -1);
    ASSERT_INT_EQ(s.ratelimit.present, 1);
    ASSERT_INT_EQ(s.ratelimit.limit_requests, 60);
    ASSERT_INT_EQ(s.ratelimit.remaining_requests, 59);
    ASSERT_INT_EQ(s.ratelimit.reset_requests_ms, 1000);
    ASSERT_INT_EQ(s.ratelimit.limit_tokens, 1000);
    ASSERT_INT_EQ(s.ratelimit.remaining_tokens, 994);
    ASSERT_INT_EQ(s.ratelimit.reset_tokens_ms, 360);

    /* a 429: retry-after-ms is preferred (more precise); junk fields are absent */
    s = answer_with("HTTP/1.1 429 Too Many Requests\r\nRetry-After: 2\r\nretry-after-ms: 1250\r\n"
                    "x-ratelimit-remaining-tokens: 0\r\nx-ratelimit-limit-tokens: muitos\r\n"
                    "x-ratelimit-reset-tokens: -1s");
    ASSERT_INT_EQ(s.status, 429);
    ASSERT_INT_EQ(s.retry_after_ms, 1250);
    ASSERT_INT_EQ(s.ratelimit.present, 1);
    ASSERT_INT_EQ(s.ratelimit.remaining_tokens, 0);
    ASSERT_INT_EQ(s.ratelimit.limit_tokens, -1);
    ASSERT_INT_EQ(s.ratelimit.reset_tokens_ms, -1);
    ASSERT_INT_EQ(s.ratelimit.remaining_requests, -1);

    /* retry-after-ms junk: Retry-After still counts */
    s = answer_with("HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\nretry-after-ms: logo");
    ASSERT_INT_EQ(s.retry_after_ms, 3000);
    ASSERT_INT_EQ(s.ratelimit.present, 0);

    /* nothing: every field -1 */
    s = answer_with("HTTP/1.1 503 Service Unavailable\r\nx-ratelimit-reset-tokens: nunca");
    ASSERT_INT_EQ(s.retry_after_ms, -1);
    ASSERT_INT_EQ(s.ratelimit.present, 0);
    ASSERT_INT_EQ(s.ratelimit.limit_requests, -1);
    ASSERT_INT_EQ(s.ratelimit.limit_tokens, -1);
    ASSERT_INT_EQ(s.ratelimit.remaining_requests, -1);
    ASSERT_INT_EQ(s.ratelimit.remaining_tokens, -1);
    ASSERT_INT_EQ(s.ratelimit.reset_requests_ms, -1);
    ASSERT_INT_EQ(s.ratelimit.reset_tokens_ms, -1);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    test_counts();
    test_durations();
    test_retry_after_ms();
    test_read_from_answers();
    printf("test_http_ratelimit: ok\n");
    return 0;
}
