/*
 * test_http.c: the libuv + curl multi HTTP client (http.c) against a real
 * HTTP server, the project's `ragops embed-server`, whose base URL comes in
 * RAGOPS_EMBED_URL (e.g. http://127.0.0.1:PORT/v1). Covers both embedding
 * encodings, concurrency, keep-alive, timeouts against a peer that never
 * answers, one hung request not holding up the others (in-process server
 * with --hang-pattern), connection refused, cancel and close in flight;
 * the bounds on bodies: a 2xx body past max_body (endless, gzip bomb from
 * the in-process server's --endless-pattern/--endless-gzip, or a long
 * Content-Length from a raw test server) stops with body_too_large, an
 * error body keeps only its start, and all error bodies of a client stay
 * under HTTP_MAX_ERROR_BODIES.
 * Every test runs on its own loop and checks that uv_loop_close returns 0.
 */
#include "embed/embed.h"
#include "embed-server/embed_server.h"
#include "http/http.h"
#include "test_assert.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>


/* Decodes a whole 2xx body through the client's streaming decoder. */
static int parse_whole(const char *body, size_t len, int count, int dim, embed_vectors *out, char *err,
                       size_t err_size)
{
    embed_stream *s = embed_stream_new(count, dim);
    ASSERT(s != NULL);
    embed_stream_feed(s, body, len);
    int rc = embed_stream_finish(s, out, err, err_size);
    embed_stream_free(s);
    return rc;
}

static char embeddings_url[512]; /* RAGOPS_EMBED_URL + "/embeddings" */
static char stats_url[512];      /* server root + "/stats" */

/* One finished request as seen by the test. */
typedef struct outcome {
    int calls;            /* how many times the callback ran */
    CURLcode curl_code;   /* copied from the response */
    long status;          /* copied from the response */
    long retry_after_ms;  /* copied from the response */
    long new_connections; /* copied from the response */
    int aborted;          /* copied from the response */
    char *body;           /* copy of the response body */
    size_t body_len;      /* bytes in body */
    char request_id[HTTP_MAX_REQUEST_ID + 1]; /* copied from the response, "" when NULL */
} outcome;

static void record_cb(http_request *req, const http_response *resp, void *data)
{
    outcome *o = data;
    o->calls++;
    o->curl_code = resp->curl_code;
    o->status = resp->status;
    o->retry_after_ms = resp->retry_after_ms;
    o->new_connections = resp->new_connections;
    o->aborted = resp->aborted;
    snprintf(o->request_id, sizeof o->request_id, "%s", resp->request_id ? resp->request_id : "");
    free(o->body);
    o->body = malloc(resp->body_len + 1);
    ASSERT(o->body != NULL);
    memcpy(o->body, resp->body, resp->body_len + 1);
    o->body_len = resp->body_len;
    ASSERT(resp->latency_ms >= 0);
}

static const char *const json_headers[] = {"Content-Type: application/json", "Accept: application/json", NULL};

static http_request *post_embeddings(http_client *hc, const char *const *texts, int n, embed_encoding enc,
                                     outcome *o)
{
    char err[256];
    size_t len = 0;
    char *body = embed_build_request("text-embedding-3-small", texts, NULL, n, enc, 0, &len, err, sizeof err);
    http_request_opts opts = {0};
    http_request *req;
    ASSERT(body != NULL);
    opts.method = "POST";
    opts.url = embeddings_url;
    opts.headers = json_headers;
    opts.body = body;
    opts.body_len = len;
    opts.timeout_ms = 20000;
    req = http_request_start(hc, &opts, record_cb, o);
    free(body); /* the request keeps its own copy */
    ASSERT(req != NULL);
    return req;
}

static void finish_loop(uv_loop_t *loop, http_client *hc)
{
    http_client_close(hc);
    ASSERT_INT_EQ(uv_run(loop, UV_RUN_DEFAULT), 0);
    ASSERT_INT_EQ(uv_loop_close(loop), 0);
}

/* Reads GET /stats "requests". */
static long server_requests(void)
{
    uv_loop_t loop;
    http_client *hc;
    outcome o = {0};
    http_request_opts opts = {0};
    json_t *root;
    long n;
    ASSERT_INT_EQ(uv_loop_init(&loop), 0);
    hc = http_client_new(&loop);
    ASSERT(hc != NULL);
    opts.url = stats_url;
    opts.timeout_ms = 5000;
    ASSERT(http_request_start(hc, &opts, record_cb, &o) != NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_INT_EQ(o.calls, 1);
    ASSERT_INT_EQ(o.curl_code, CURLE_OK);
    ASSERT_INT_EQ(o.status, 200);
    root = json_loadb(o.body, o.body_len, 0, NULL);
    ASSERT(root != NULL);
    ASSERT(json_is_integer(json_object_get(root, "requests")));
    n = (long)json_integer_value(json_object_get(root, "requests"));
    json_decref(root);
    free(o.body);
    finish_loop(&loop, hc);
    return n;
}

static void test_embeddings_both_encodings(void)
{
    const char *texts[] = {"No princípio criou Deus os céus e a terra.", "In the beginning God created",
                           "No princípio criou Deus os céus e a terra."};
    uv_loop_t loop;
    http_client *hc;
    outcome ob = {0}, of = {0};
    embed_vectors vb, vf;
    char err[256];
    long before = server_requests();

    ASSERT_INT_EQ(uv_loop_init(&loop), 0);
    hc = http_client_new(&loop);
    ASSERT(hc != NULL);
    post_embeddings(hc, texts, 3, EMBED_ENCODING_BASE64, &ob);
    post_embeddings(hc, texts, 3, EMBED_ENCODING_FLOAT, &of);
    ASSERT_INT_EQ(http_client_pending(hc), 2);
    /* the loop stays alive while requests are pending, then ends by itself */
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_INT_EQ(http_client_pending(hc), 0);
    ASSERT_INT_EQ(ob.calls, 1);
    ASSERT_INT_EQ(of.calls, 1);
    ASSERT_INT_EQ(ob.curl_code, CURLE_OK);
    ASSERT_INT_EQ(ob.status, 200);
    ASSERT_INT_EQ(of.status, 200);
    ASSERT_INT_EQ(ob.retry_after_ms, -1);
    ASSERT(strstr(ob.body, "\"embedding\":\"") != NULL); /* really base64 on the wire */
    ASSERT(strstr(of.body, "\"embedding\":[") != NULL);

    ASSERT_INT_EQ(parse_whole(ob.body, ob.body_len, 3, 0, &vb, err, sizeof err), 0);
    ASSERT_INT_EQ(parse_whole(of.body, of.body_len, 3, 0, &vf, err, sizeof err), 0);
    ASSERT(vb.dim > 0);
    ASSERT_INT_EQ(vb.dim, vf.dim);
    ASSERT(vb.prompt_tokens > 0);
    {
        double norm = 0, diff01 = 0;
        for (int j = 0; j < vb.dim; j++) {
            ASSERT_NEAR(vb.data[j], vf.data[j], 1e-6);                          /* same vector both ways */
            ASSERT(vb.data[j] == vb.data[2 * vb.dim + j]);                      /* deterministic */
            norm += (double)vb.data[j] * vb.data[j];
            diff01 += ((double)vb.data[j] - vb.data[vb.dim + j]) * ((double)vb.data[j] - vb.data[vb.dim + j]);
        }
        ASSERT_NEAR(norm, 1.0, 1e-3); /* the server normalises */
        ASSERT(diff01 > 1e-6);        /* different texts, different vectors */
    }
    embed_vectors_free(&vb);
    embed_vectors_free(&vf);
    free(ob.body);
    free(of.body);
    finish_loop(&loop, hc);
    ASSERT(server_requests() >= before + 2);
}

/* The embed-server answers each embeddings request with its own
 * x-request-id ("es-<n>"); the client hands it over, and NULL without one. */
static void test_provider_request_id(void)
{
    const char *texts[] = {"pedido com id"};
    uv_loop_t loop;
    http_client *hc;
    outcome a = {0}, b = {0}, st = {0};
    http_request_opts opts = {0};
    ASSERT_INT_EQ(uv_loop_init(&loop), 0);
    hc = http_client_new(&loop);
    ASSERT(hc != NULL);
    post_embeddings(hc, texts, 1, EMBED_ENCODING_BASE64, &a);
    post_embeddings(hc, texts, 1, EMBED_ENCODING_BASE64, &b);
    opts.url = stats_url;
    opts.timeout_ms = 5000;
    ASSERT(http_request_start(hc, &opts, record_cb, &st) != NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_INT_EQ(a.status, 200);
    ASSERT_INT_EQ(st.status, 200);
    ASSERT(strncmp(a.request_id, "es-", 3) == 0);
    ASSERT(strncmp(b.request_id, "es-", 3) == 0);
    ASSERT(strcmp(a.request_id, b.request_id) != 0);
    ASSERT_STR_EQ(st.request_id, ""); /* GET /stats has none */
    free(a.body);
    free(b.body);
    free(st.body);
    finish_loop(&loop, hc);
}

static void test_concurrent_and_keepalive(void)
{
    enum { N = 20 };
    const char *texts[] = {"um", "dois"};
    uv_loop_t loop;
    http_client *hc;
    outcome o[N];
    long before = server_requests();
    long connections = 0;

    memset(o, 0, sizeof o);
    ASSERT_INT_EQ(uv_loop_init(&loop), 0);
    hc = http_client_new(&loop);
    ASSERT(hc != NULL);
    for (int i = 0; i < N; i++)
        post_embeddings(hc, texts, 2, i % 2 ? EMBED_ENCODING_FLOAT : EMBED_ENCODING_BASE64, &o[i]);
    ASSERT_INT_EQ(http_client_pending(hc), N);
    uv_run(&loop, UV_RUN_DEFAULT);
    for (int i = 0; i < N; i++) {
        embed_vectors v;
        char err[256];
        ASSERT_INT_EQ(o[i].calls, 1);
        ASSERT_INT_EQ(o[i].status, 200);
        ASSERT_INT_EQ(parse_whole(o[i].body, o[i].body_len, 2, 0, &v, err, sizeof err), 0);
        embed_vectors_free(&v);
        connections += o[i].new_connections;
        free(o[i].body);
        o[i].body = NULL;
    }
    ASSERT(connections >= 1 && connections <= N);

    /* a second wave, one at a time: every request reuses a cached connection */
    for (int i = 0; i < 10; i++) {
        memset(&o[0], 0, sizeof o[0]);
        post_embeddings(hc, texts, 2, EMBED_ENCODING_BASE64, &o[0]);
        uv_run(&loop, UV_RUN_DEFAULT);
        ASSERT_INT_EQ(o[0].status, 200);
        ASSERT_INT_EQ(o[0].new_connections, 0);
        free(o[0].body);
    }
    finish_loop(&loop, hc);
    ASSERT(server_requests() >= before + N + 10);
}

/* A TCP listener on 127.0.0.1 that never accepts: connections complete in
 * the kernel backlog but nobody ever answers. Returns the fd; *port set. */
static int silent_listener(int *port)
{
    struct sockaddr_in addr;
    socklen_t alen = sizeof addr;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT(fd >= 0);
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    ASSERT_INT_EQ(bind(fd, (struct sockaddr *)&addr, sizeof addr), 0);
    ASSERT_INT_EQ(listen(fd, 16), 0);
    ASSERT_INT_EQ(getsockname(fd, (struct sockaddr *)&addr, &alen), 0);
    *port = ntohs(addr.sin_port);
    return fd;
}

static void test_timeout(void)
{
    uv_loop_t loop;
    http_client *hc;
    outcome o = {0};
    http_request_opts opts = {0};
    char url[128];
    int port;
    int fd = silent_listener(&port);
    embed_kind kind = EMBED_KIND_NONE;
    uint64_t t0;
    double elapsed_ms;

    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/embeddings", port);
    ASSERT_INT_EQ(uv_loop_init(&loop), 0);
    hc = http_client_new(&loop);
    ASSERT(hc != NULL);
    opts.url = url;
    opts.body = "{}";
    opts.body_len = 2;
    opts.timeout_ms = 300;
    t0 = uv_hrtime();
    ASSERT(http_request_start(hc, &opts, record_cb, &o) != NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    elapsed_ms = (double)(uv_hrtime() - t0) / 1e6;
    ASSERT_INT_EQ(o.calls, 1);
    ASSERT_INT_EQ(o.curl_code, CURLE_OPERATION_TIMEDOUT);
    ASSERT_INT_EQ(o.status, 0);
    ASSERT(elapsed_ms >= 250 && elapsed_ms < 5000);
    ASSERT_INT_EQ(embed_classify(o.curl_code, o.status, NULL, NULL, &kind), EMBED_CLASS_TRANSIENT);
    ASSERT_STR_EQ(embed_kind_name(kind), "timeout");
    free(o.body);
    finish_loop(&loop, hc);
    close(fd);
}

static void test_connection_refused(void)
{
    uv_loop_t loop;
    http_client *hc;
    outcome o = {0};
    http_request_opts opts = {0};
    char url[128];
    int port;
    int fd = silent_listener(&port);
    embed_kind kind = EMBED_KIND_NONE;

    close(fd); /* nothing listens on port any more */
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/embeddings", port);
    ASSERT_INT_EQ(uv_loop_init(&loop), 0);
    hc = http_client_new(&loop);
    ASSERT(hc != NULL);
    opts.url = url;
    opts.timeout_ms = 5000;
    ASSERT(http_request_start(hc, &opts, record_cb, &o) != NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_INT_EQ(o.calls, 1);
    ASSERT_INT_EQ(o.curl_code, CURLE_COULDNT_CONNECT);
    ASSERT_INT_EQ(embed_classify(o.curl_code, o.status, NULL, NULL, &kind), EMBED_CLASS_TRANSIENT);
    ASSERT_STR_EQ(embed_kind_name(kind), "connection");
    ASSERT(strstr(http_curl_error_ptbr(o.curl_code), "conexão") != NULL);
    free(o.body);
    finish_loop(&loop, hc);
}

/* State for the cancel test: a timer cancels a request that hangs. */
typedef struct cancel_ctx {
    http_request *req; /* request to cancel */
    uv_timer_t timer;  /* fires once */
} cancel_ctx;

static void cancel_on_timer(uv_timer_t *timer)
{
    cancel_ctx *c = timer->data;
    http_request_cancel(c->req);
    c->req = NULL;
    uv_close((uv_handle_t *)timer, NULL);
}

static void test_cancel_and_close(void)
{
    uv_loop_t loop;
    http_client *hc;
    outcome cancelled = {0}, aborted = {0}, ok = {0};
    http_request_opts opts = {0};
    cancel_ctx c;
    char url[128];
    int port;
    int fd = silent_listener(&port);
    const char *texts[] = {"três"};

    snprintf(url, sizeof url, "http://127.0.0.1:%d/", port);
    ASSERT_INT_EQ(uv_loop_init(&loop), 0);
    hc = http_client_new(&loop);
    ASSERT(hc != NULL);
    opts.url = url;
    opts.timeout_ms = 30000;

    /* cancel a hanging request from a timer: its callback never runs, and
     * the loop ends as soon as nothing is pending */
    c.req = http_request_start(hc, &opts, record_cb, &cancelled);
    ASSERT(c.req != NULL);
    post_embeddings(hc, texts, 1, EMBED_ENCODING_BASE64, &ok); /* finishes normally alongside */
    ASSERT_INT_EQ(uv_timer_init(&loop, &c.timer), 0);
    c.timer.data = &c;
    ASSERT_INT_EQ(uv_timer_start(&c.timer, cancel_on_timer, 100, 0), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT(c.req == NULL);
    ASSERT_INT_EQ(cancelled.calls, 0);
    ASSERT_INT_EQ(ok.calls, 1);
    ASSERT_INT_EQ(ok.status, 200);
    ASSERT_INT_EQ(http_client_pending(hc), 0);

    /* close with a request in flight: it completes as aborted, then every
     * handle closes and the loop can be closed */
    ASSERT(http_request_start(hc, &opts, record_cb, &aborted) != NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    ASSERT_INT_EQ(aborted.calls, 0);
    http_client_close(hc);
    ASSERT_INT_EQ(aborted.calls, 1);
    ASSERT_INT_EQ(aborted.aborted, 1);
    ASSERT_INT_EQ(aborted.curl_code, CURLE_ABORTED_BY_CALLBACK);
    ASSERT_INT_EQ(uv_run(&loop, UV_RUN_DEFAULT), 0);
    ASSERT_INT_EQ(uv_loop_close(&loop), 0);
    free(ok.body);
    free(aborted.body);
    close(fd);
}

/* One hung request and a stream of others to the same server. */
typedef struct hang_ctx {
    http_client *hc;         /* client shared by every request */
    embed_server *server;    /* in-process server hanging on "TRAVA" */
    char url[128];           /* its /v1/embeddings URL */
    http_request *hung;      /* the request that is never answered */
    outcome hung_outcome;    /* must stay untouched: cancelled, never delivered */
    int wanted;              /* requests to complete while it hangs */
    int started;             /* normal requests started */
    int completed;           /* normal requests answered with 200 */
    embed_server_stats stats;/* server counters just before it stops */
} hang_ctx;

static void hang_start_normal(hang_ctx *h);

static void hang_normal_cb(http_request *req, const http_response *resp, void *data)
{
    hang_ctx *h = data;
    embed_vectors v;
    char err[256];
    ASSERT_INT_EQ(resp->curl_code, CURLE_OK);
    ASSERT_INT_EQ(resp->status, 200);
    ASSERT_INT_EQ(parse_whole(resp->body, resp->body_len, 1, 0, &v, err, sizeof err), 0);
    embed_vectors_free(&v);
    h->completed++;
    if (h->started < h->wanted) {
        hang_start_normal(h); /* sequential: each one may reuse a cached connection */
        return;
    }
    if (h->completed == h->wanted && h->hung) {
        ASSERT_INT_EQ(h->hung_outcome.calls, 0); /* still hanging while all the others finished */
        http_request_cancel(h->hung);
        embed_server_get_stats(h->server, &h->stats);
        embed_server_stop(h->server);
    }
}

static http_request *hang_post(hang_ctx *h, const char *text, http_done_cb cb, void *data)
{
    const char *texts[] = {text};
    char err[256];
    size_t len = 0;
    char *body = embed_build_request("m", texts, NULL, 1, EMBED_ENCODING_BASE64, 0, &len, err, sizeof err);
    http_request_opts opts = {0};
    http_request *req;
    ASSERT(body != NULL);
    opts.method = "POST";
    opts.url = h->url;
    opts.headers = json_headers;
    opts.body = body;
    opts.body_len = len;
    opts.timeout_ms = 30000;
    req = http_request_start(h->hc, &opts, cb, data);
    free(body);
    ASSERT(req != NULL);
    return req;
}

static void hang_start_normal(hang_ctx *h)
{
    h->started++;
    hang_post(h, "texto comum", hang_normal_cb, h);
}

static void test_hung_request_does_not_hold_up_others(void)
{
    uv_loop_t loop;
    hang_ctx h;
    embed_server_opts sopts;
    char *err = NULL;

    memset(&h, 0, sizeof h);
    ASSERT_INT_EQ(uv_loop_init(&loop), 0);
    embed_server_opts_init(&sopts);
    sopts.port = 0;
    sopts.dim = 8;
    sopts.hang_pattern = "TRAVA";
    h.server = embed_server_start(&loop, &sopts, &err);
    ASSERT(h.server != NULL);
    snprintf(h.url, sizeof h.url, "http://127.0.0.1:%d/v1/embeddings", embed_server_port(h.server));
    h.hc = http_client_new(&loop);
    ASSERT(h.hc != NULL);
    /* warm the connection cache, so the hung request may land on a reused connection */
    h.wanted = 4;
    for (int i = 0; i < 4; i++)
        hang_start_normal(&h);
    while (h.completed < 4)
        uv_run(&loop, UV_RUN_ONCE);

    h.hung = hang_post(&h, "esta entrada TRAVA o servidor", record_cb, &h.hung_outcome);
    h.wanted = 4 + 15; /* 15 more in three chains, each started when the previous answers */
    for (int i = 0; i < 3; i++)
        hang_start_normal(&h);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_INT_EQ(h.completed, h.wanted);
    ASSERT_INT_EQ(h.hung_outcome.calls, 0);
    ASSERT_INT_EQ(h.stats.timeouts, 1);
    ASSERT_INT_EQ(h.stats.ok, 19);
    finish_loop(&loop, h.hc);
}

/* Starting another request from a done callback, and closing the client
 * from a done callback, are both allowed. */
typedef struct chain_ctx {
    http_client *hc; /* client to reuse */
    int done;        /* completed requests */
    long statuses[3];/* statuses seen */
} chain_ctx;

static void chain_cb(http_request *req, const http_response *resp, void *data)
{
    chain_ctx *c = data;
    c->statuses[c->done++] = resp->status;
    if (c->done < 3) {
        http_request_opts opts = {0};
        opts.url = stats_url;
        opts.timeout_ms = 5000;
        ASSERT(http_request_start(c->hc, &opts, chain_cb, c) != NULL);
    } else {
        http_request_cancel(req); /* no-op inside its own callback */
        http_client_close(c->hc);
    }
}

static void test_chained_from_callback(void)
{
    uv_loop_t loop;
    chain_ctx c = {0};
    http_request_opts opts = {0};
    ASSERT_INT_EQ(uv_loop_init(&loop), 0);
    c.hc = http_client_new(&loop);
    ASSERT(c.hc != NULL);
    opts.url = stats_url;
    opts.timeout_ms = 5000;
    ASSERT(http_request_start(c.hc, &opts, chain_cb, &c) != NULL);
    ASSERT_INT_EQ(uv_run(&loop, UV_RUN_DEFAULT), 0);
    ASSERT_INT_EQ(c.done, 3);
    ASSERT_INT_EQ(c.statuses[0], 200);
    ASSERT_INT_EQ(c.statuses[2], 200);
    ASSERT_INT_EQ(uv_loop_close(&loop), 0);
}

static void test_bad_input_and_retry_after(void)
{
    uv_loop_t loop;
    http_client *hc;
    http_request_opts opts = {0};
    outcome o = {0};
    char date[64];
    time_t later = time(NULL) + 120;
    long ms;

    ASSERT_INT_EQ(uv_loop_init(&loop), 0);
    hc = http_client_new(&loop);
    ASSERT(hc != NULL);
    ASSERT(http_request_start(hc, &opts, record_cb, &o) == NULL); /* no URL */
    opts.url = "ftp://127.0.0.1/";
    ASSERT(http_request_start(hc, &opts, record_cb, &o) != NULL); /* refused by curl when run */
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_INT_EQ(o.calls, 1);
    ASSERT(o.curl_code == CURLE_UNSUPPORTED_PROTOCOL);
    free(o.body);
    finish_loop(&loop, hc);

    ASSERT_INT_EQ(http_parse_retry_after("120"), 120000);
    ASSERT_INT_EQ(http_parse_retry_after(" 0 "), 0);
    ASSERT_INT_EQ(http_parse_retry_after("1.5"), 1500);
    ASSERT_INT_EQ(http_parse_retry_after(NULL), -1);
    ASSERT_INT_EQ(http_parse_retry_after(""), -1);
    ASSERT_INT_EQ(http_parse_retry_after("amanhã"), -1);
    ASSERT_INT_EQ(http_parse_retry_after("-3"), -1);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", gmtime(&later));
    ms = http_parse_retry_after(date);
    ASSERT(ms > 115000 && ms <= 120000);
    ASSERT_INT_EQ(http_parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), 0); /* in the past */
}


/* ---------- bounded bodies ---------- */

/* A raw HTTP peer on the test's loop: every connection gets `reply` once
 * and is then held open (so a body shorter than its Content-Length stalls). */
typedef struct raw_server {
    uv_tcp_t tcp;          /* listener */
    const char *reply;     /* bytes written to each connection */
    size_t reply_len;      /* bytes in reply */
    int port;              /* bound port */
    uv_tcp_t *peers[256];  /* accepted connections */
    int npeers;            /* how many */
} raw_server;

static void raw_on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    static char sink[65536]; /* the requests are read and dropped */
    *buf = uv_buf_init(sink, sizeof sink);
}

static void raw_on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    if (nread < 0)
        uv_read_stop(stream);
}

static void raw_on_written(uv_write_t *req, int status)
{
    free(req);
}

static void raw_on_connection(uv_stream_t *listener, int status)
{
    raw_server *rs = listener->data;
    uv_tcp_t *peer = calloc(1, sizeof *peer); /* data NULL: freed on close */
    uv_write_t *write = malloc(sizeof *write);
    uv_buf_t buf = uv_buf_init((char *)rs->reply, (unsigned int)rs->reply_len);
    ASSERT(status == 0 && peer != NULL && write != NULL && rs->npeers < 256);
    ASSERT_INT_EQ(uv_tcp_init(listener->loop, peer), 0);
    ASSERT_INT_EQ(uv_accept(listener, (uv_stream_t *)peer), 0);
    rs->peers[rs->npeers++] = peer;
    ASSERT_INT_EQ(uv_read_start((uv_stream_t *)peer, raw_on_alloc, raw_on_read), 0);
    ASSERT_INT_EQ(uv_write(write, (uv_stream_t *)peer, &buf, 1, raw_on_written), 0);
}

static void raw_server_start(uv_loop_t *loop, raw_server *rs, const char *reply, size_t reply_len)
{
    struct sockaddr_in addr;
    int alen = sizeof addr;
    memset(rs, 0, sizeof *rs);
    rs->reply = reply;
    rs->reply_len = reply_len;
    ASSERT_INT_EQ(uv_tcp_init(loop, &rs->tcp), 0);
    rs->tcp.data = rs;
    ASSERT_INT_EQ(uv_ip4_addr("127.0.0.1", 0, &addr), 0);
    ASSERT_INT_EQ(uv_tcp_bind(&rs->tcp, (const struct sockaddr *)&addr, 0), 0);
    ASSERT_INT_EQ(uv_listen((uv_stream_t *)&rs->tcp, 256, raw_on_connection), 0);
    ASSERT_INT_EQ(uv_tcp_getsockname(&rs->tcp, (struct sockaddr *)&addr, &alen), 0);
    rs->port = ntohs(addr.sin_port);
}

static void raw_on_closed(uv_handle_t *handle)
{
    if (handle->data == NULL)
        free(handle); /* an accepted peer (the listener has data) */
}

static void raw_server_stop(raw_server *rs)
{
    for (int i = 0; i < rs->npeers; i++)
        uv_close((uv_handle_t *)rs->peers[i], raw_on_closed);
    uv_close((uv_handle_t *)&rs->tcp, raw_on_closed);
}

/* "HTTP/1.1 <status>" with a body of body_len bytes ("xyz..." cycling) of
 * which only sent bytes are written; malloc'd, its length in *len. */
static char *raw_reply(int status, size_t body_len, size_t sent, size_t *len)
{
    char head[128];
    int n = snprintf(head, sizeof head, "HTTP/1.1 %d X\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n\r\n",
                     status, body_len);
    char *out = malloc((size_t)n + sent);
    ASSERT(out != NULL);
    memcpy(out, head, (size_t)n);
    for (size_t i = 0; i < sent; i++)
        out[n + i] = "xyz"[i % 3];
    *len = (size_t)n + sent;
    return out;
}

/* One finished request with the bound flags; bytes counts what on_body got. */
typedef struct bounded {
    int calls;          /* callbacks run */
    CURLcode curl_code; /* copied from the response */
    long status;        /* copied from the response */
    int too_large;      /* resp->body_too_large */
    int truncated;      /* resp->body_truncated */
    size_t body_len;    /* resp->body_len */
    size_t max_body;    /* resp->max_body */
    size_t streamed;    /* bytes handed to on_body */
    char first[32];     /* the first bytes handed to on_body */
    http_client *close_on_truncated; /* when set: close this client on a truncated answer */
} bounded;

static void bounded_cb(http_request *req, const http_response *resp, void *data)
{
    bounded *b = data;
    b->calls++;
    b->curl_code = resp->curl_code;
    b->status = resp->status;
    b->too_large = resp->body_too_large;
    b->truncated = resp->body_truncated;
    b->body_len = resp->body_len;
    b->max_body = resp->max_body;
    ASSERT(strlen(resp->body) <= resp->body_len); /* NUL-terminated within body_len */
}

static void bounded_on_body(const char *bytes, size_t n, void *data)
{
    bounded *b = data;
    size_t have = strlen(b->first);
    if (have + 1 < sizeof b->first) {
        size_t take = n < sizeof b->first - 1 - have ? n : sizeof b->first - 1 - have;
        memcpy(b->first + have, bytes, take);
        b->first[have + take] = '\0';
    }
    b->streamed += n;
}

static void test_expected_body_bound(void)
{
    /* 64 inputs of 1536 floats: 32 B per number, 1 KiB per item, 64 KiB slack */
    ASSERT_INT_EQ(embed_expected_body_max(64, 1536), 64 * (1536 * 32 + 1024) + 65536);
    ASSERT_INT_EQ(embed_expected_body_max(1, 0), 16000 * 32 + 1024 + 65536); /* unknown dim */
    ASSERT_STR_EQ(embed_kind_name(EMBED_KIND_BODY_TOO_LARGE), "body_too_large");
    ASSERT_INT_EQ(HTTP_DEFAULT_MAX_BODY, 16 * 1024 * 1024);
}

/* An endless 2xx body (plain, then gzip: ~1 KiB on the wire per inflated
 * MiB) is stopped once the decoded bytes pass the batch's bound. */
static void test_endless_body_stopped(int gzip)
{
    uv_loop_t loop;
    embed_server_opts sopts;
    embed_server *server;
    http_client *hc;
    bounded b;
    http_request_opts opts = {0};
    const char *texts[] = {"uma entrada SEM-FIM"};
    char url[128], err[256];
    size_t len = 0;
    char *body = embed_build_request("m", texts, NULL, 1, EMBED_ENCODING_BASE64, 0, &len, err, sizeof err);
    char *serr = NULL;

    memset(&b, 0, sizeof b);
    ASSERT(body != NULL);
    ASSERT_INT_EQ(uv_loop_init(&loop), 0);
    embed_server_opts_init(&sopts);
    sopts.port = 0;
    sopts.dim = 8;
    sopts.endless_pattern = "SEM-FIM";
    sopts.endless_gzip = gzip;
    server = embed_server_start(&loop, &sopts, &serr);
    ASSERT(server != NULL);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/embeddings", embed_server_port(server));
    hc = http_client_new(&loop);
    ASSERT(hc != NULL);
    opts.url = url;
    opts.headers = json_headers;
    opts.body = body;
    opts.body_len = len;
    opts.timeout_ms = 20000;
    opts.on_body = bounded_on_body;
    opts.on_body_data = &b;
    opts.max_body = embed_expected_body_max(1, 8);
    ASSERT(http_request_start(hc, &opts, bounded_cb, &b) != NULL);
    free(body);
    while (b.calls == 0)
        uv_run(&loop, UV_RUN_ONCE);
    ASSERT_INT_EQ(b.status, 200);
    ASSERT_INT_EQ(b.curl_code, CURLE_WRITE_ERROR);
    ASSERT_INT_EQ(b.too_large, 1);
    ASSERT_INT_EQ(b.max_body, embed_expected_body_max(1, 8));
    ASSERT(b.streamed > 0 && b.streamed <= b.max_body);
    ASSERT(strncmp(b.first, "{\"object\":\"list\"", 16) == 0); /* decoded (gzip) bytes */
    embed_server_stop(server);
    finish_loop(&loop, hc);
}

static void start_raw(http_client *hc, int port, size_t max_body, bounded *b)
{
    http_request_opts opts = {0};
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", port);
    opts.url = url;
    opts.timeout_ms = 20000;
    opts.max_body = max_body;
    ASSERT(http_request_start(hc, &opts, bounded_cb, b) != NULL);
}

/* A kept 2xx body: exactly max_body bytes pass, one byte more stops. */
static void test_kept_body_bound(void)
{
    uv_loop_t loop;
    raw_server rs;
    http_client *hc;
    bounded at = {0}, over = {0};
    size_t len;
    char *reply = raw_reply(200, 5000, 5000, &len);
    ASSERT_INT_EQ(uv_loop_init(&loop), 0);
    raw_server_start(&loop, &rs, reply, len);
    hc = http_client_new(&loop);
    ASSERT(hc != NULL);
    start_raw(hc, rs.port, 5000, &at);
    start_raw(hc, rs.port, 4999, &over);
    while (at.calls == 0 || over.calls == 0)
        uv_run(&loop, UV_RUN_ONCE);
    ASSERT_INT_EQ(at.curl_code, CURLE_OK);
    ASSERT_INT_EQ(at.body_len, 5000);
    ASSERT_INT_EQ(at.too_large, 0);
    ASSERT_INT_EQ(over.curl_code, CURLE_WRITE_ERROR);
    ASSERT_INT_EQ(over.too_large, 1);
    raw_server_stop(&rs);
    finish_loop(&loop, hc);
    free(reply);
}

/* A 500 with a 1 MiB body: its status and first HTTP_MAX_ERROR_BODY bytes
 * arrive as a complete answer; the rest is never read. */
static void test_error_body_keeps_start(void)
{
    uv_loop_t loop;
    raw_server rs;
    http_client *hc;
    bounded b = {0};
    size_t len;
    char *reply = raw_reply(500, 1024 * 1024, 1024 * 1024, &len);
    ASSERT_INT_EQ(uv_loop_init(&loop), 0);
    raw_server_start(&loop, &rs, reply, len);
    hc = http_client_new(&loop);
    ASSERT(hc != NULL);
    start_raw(hc, rs.port, 0, &b);
    while (b.calls == 0)
        uv_run(&loop, UV_RUN_ONCE);
    ASSERT_INT_EQ(b.curl_code, CURLE_OK);
    ASSERT_INT_EQ(b.status, 500);
    ASSERT_INT_EQ(b.truncated, 1);
    ASSERT_INT_EQ(b.body_len, HTTP_MAX_ERROR_BODY);
    ASSERT_INT_EQ(http_client_error_bytes(hc), 0); /* given back when the request ended */
    raw_server_stop(&rs);
    finish_loop(&loop, hc);
    free(reply);
}

/* 130 answers of 500 whose bodies stall one byte short of 64 KiB: together
 * they would keep 8.1 MiB, so some are cut at the client's
 * HTTP_MAX_ERROR_BODIES, and the kept total never passes it. */
typedef struct shared_ctx {
    http_client *hc;     /* the client */
    bounded b[130];      /* one per request */
    int cut;             /* answers delivered truncated before 64 KiB - 1 */
    size_t peak;         /* most error bytes seen kept at once */
} shared_ctx;

static void shared_cb(http_request *req, const http_response *resp, void *data)
{
    shared_ctx *c = data;
    size_t kept = http_client_error_bytes(c->hc);
    if (kept > c->peak)
        c->peak = kept;
    if (resp->aborted)
        return;
    ASSERT_INT_EQ(resp->curl_code, CURLE_OK);
    ASSERT_INT_EQ(resp->status, 500);
    ASSERT_INT_EQ(resp->body_truncated, 1);
    ASSERT(resp->body_len < HTTP_MAX_ERROR_BODY - 1);
    if (c->cut++ == 0)
        http_client_close(c->hc); /* the others complete as aborted */
}

static void test_error_bodies_shared_bound(void)
{
    uv_loop_t loop;
    raw_server rs;
    static shared_ctx c;
    size_t len;
    char *reply = raw_reply(500, HTTP_MAX_ERROR_BODY, HTTP_MAX_ERROR_BODY - 1, &len);
    memset(&c, 0, sizeof c);
    ASSERT_INT_EQ(uv_loop_init(&loop), 0);
    raw_server_start(&loop, &rs, reply, len);
    c.hc = http_client_new(&loop);
    ASSERT(c.hc != NULL);
    for (int i = 0; i < 130; i++) {
        http_request_opts opts = {0};
        char url[64];
        snprintf(url, sizeof url, "http://127.0.0.1:%d/", rs.port);
        opts.url = url;
        opts.timeout_ms = 60000;
        ASSERT(http_request_start(c.hc, &opts, shared_cb, &c) != NULL);
    }
    while (c.cut == 0)
        uv_run(&loop, UV_RUN_ONCE);
    ASSERT(c.peak <= HTTP_MAX_ERROR_BODIES);
    ASSERT(c.peak > HTTP_MAX_ERROR_BODIES - HTTP_MAX_ERROR_BODY); /* the cap was what cut */
    raw_server_stop(&rs);
    ASSERT_INT_EQ(uv_run(&loop, UV_RUN_DEFAULT), 0);
    ASSERT_INT_EQ(uv_loop_close(&loop), 0);
    free(reply);
}

int main(void)
{
    const char *base = getenv("RAGOPS_EMBED_URL");
    size_t len;
    if (!base || !*base) {
        fprintf(stderr, "test_http: defina RAGOPS_EMBED_URL (ex.: http://127.0.0.1:PORTA/v1) apontando para "
                        "um `ragops embed-server` em execução\n");
        return 1;
    }
    len = strlen(base);
    while (len > 0 && base[len - 1] == '/')
        len--;
    signal(SIGPIPE, SIG_IGN); /* as ragops' main: the in-process server writes to clients that left */
    snprintf(embeddings_url, sizeof embeddings_url, "%.*s/embeddings", (int)len, base);
    if (len >= 3 && strncmp(base + len - 3, "/v1", 3) == 0)
        len -= 3;
    snprintf(stats_url, sizeof stats_url, "%.*s/stats", (int)len, base);

    test_bad_input_and_retry_after();
    test_embeddings_both_encodings();
    test_provider_request_id();
    test_concurrent_and_keepalive();
    test_timeout();
    test_connection_refused();
    test_cancel_and_close();
    test_hung_request_does_not_hold_up_others();
    test_chained_from_callback();
    test_expected_body_bound();
    test_endless_body_stopped(0);
    test_endless_body_stopped(1);
    test_kept_body_bound();
    test_error_body_keeps_start();
    test_error_bodies_shared_bound();
    printf("test_http: ok\n");
    return 0;
}
