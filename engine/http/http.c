/*
 * http.c: asynchronous HTTP requests on one curl multi handle per client,
 * driven by the libuv loop: curl tells us which sockets to watch
 * (CURLMOPT_SOCKETFUNCTION -> one uv_poll per socket) and when to wake it up
 * (CURLMOPT_TIMERFUNCTION -> one uv_timer); we feed readiness back with
 * curl_multi_socket_action and collect finished transfers with
 * curl_multi_info_read. The multi handle's connection cache gives keep-alive.
 */
#include "http.h"

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* Idle connections kept in the multi handle's cache. */
#define HTTP_MAX_CACHED_CONNECTIONS 64L

/* One socket curl asked us to watch. */
typedef struct http_socket {
    uv_poll_t poll;            /* libuv watcher on fd; data points back here */
    curl_socket_t fd;          /* the socket curl owns */
    http_client *hc;           /* owning client */
    struct http_socket *prev;  /* previous watcher in hc->sockets */
    struct http_socket *next;  /* next watcher in hc->sockets */
} http_socket;

struct http_client {
    uv_loop_t *loop;           /* loop every handle belongs to */
    CURLM *multi;              /* the multi handle (connection cache lives here) */
    uv_timer_t timer;          /* curl's single timeout */
    uv_async_t liveness;       /* referenced only while requests are pending: keeps the loop alive */
    http_request *requests;    /* doubly linked list of pending requests */
    http_socket *sockets;      /* doubly linked list of open socket watchers */
    int pending;               /* number of requests in the list */
    size_t error_bytes;        /* non-2xx body bytes kept by pending requests (<= HTTP_MAX_ERROR_BODIES) */
    int open_handles;          /* libuv handles whose close callback has not run yet */
    int closing;               /* set by http_client_close; no new work accepted */
};

struct http_request {
    http_client *hc;               /* owning client */
    CURL *easy;                    /* the transfer */
    struct curl_slist *headers;    /* request headers given to curl */
    char *body;                    /* private copy of the request body */
    curl_mime *mime;               /* multipart body (libcurl copies every string), or NULL */
    char *resp;                    /* response body being received (NUL-terminated) */
    size_t resp_len;               /* bytes received */
    size_t resp_cap;               /* bytes allocated in resp */
    size_t max_body;               /* most decoded bytes of a 2xx body */
    size_t received;               /* decoded 2xx body bytes so far (streamed or kept) */
    size_t error_kept;             /* bytes of resp counted in hc->error_bytes */
    int too_large;                 /* 1: the 2xx body passed max_body (transfer stopped) */
    int error_cut;                 /* 1: the non-2xx body was cut (transfer stopped on purpose) */
    void (*on_body)(const char *, size_t, void *); /* streaming sink of a 2xx body, or NULL */
    void *on_body_data;            /* user pointer for on_body */
    http_done_cb cb;               /* completion callback */
    void *data;                    /* user pointer for cb */
    uint64_t started_ns;           /* uv_hrtime() at start, for latency */
    int delivering;                /* 1 while cb runs: cancel becomes a no-op */
    int awaited_read;              /* curl waited to read on a socket (TCP was connected) */
    char error[CURL_ERROR_SIZE];   /* curl's error text (English; not shown to people) */
    char request_id[HTTP_MAX_REQUEST_ID + 1]; /* the response's x-request-id, cleaned (see http_response) */
    http_request *prev;            /* previous in hc->requests */
    http_request *next;            /* next in hc->requests */
};

/* ---------- bookkeeping ---------- */

static void http_handle_closed(uv_handle_t *handle)
{
    http_client *hc = handle->data;
    if (handle->type == UV_POLL)
        free(handle); /* the http_socket starts with its uv_poll_t */
    hc->open_handles--;
    if (hc->closing && hc->open_handles == 0) {
        free(hc);
        curl_global_cleanup();
    }
}

/* Closes handles in a way that routes the close callback to the client. */
static void http_socket_close(http_socket *sock)
{
    http_client *hc = sock->hc;
    if (sock->prev)
        sock->prev->next = sock->next;
    else
        hc->sockets = sock->next;
    if (sock->next)
        sock->next->prev = sock->prev;
    sock->prev = sock->next = NULL;
    sock->poll.data = hc;
    uv_close((uv_handle_t *)&sock->poll, http_handle_closed);
}

static void http_request_link(http_request *req)
{
    http_client *hc = req->hc;
    req->prev = NULL;
    req->next = hc->requests;
    if (hc->requests)
        hc->requests->prev = req;
    hc->requests = req;
    if (hc->pending++ == 0)
        uv_ref((uv_handle_t *)&hc->liveness);
}

static void http_request_unlink(http_request *req)
{
    http_client *hc = req->hc;
    if (req->prev)
        req->prev->next = req->next;
    else
        hc->requests = req->next;
    if (req->next)
        req->next->prev = req->prev;
    req->prev = req->next = NULL;
    if (--hc->pending == 0)
        uv_unref((uv_handle_t *)&hc->liveness);
}

static void http_request_free(http_request *req)
{
    req->hc->error_bytes -= req->error_kept;
    if (req->easy)
        curl_easy_cleanup(req->easy);
    curl_mime_free(req->mime); /* after the easy handle that used it */
    for (struct curl_slist *h = req->headers; h; h = h->next)
        memset(h->data, 0, strlen(h->data)); /* they may carry credentials */
    curl_slist_free_all(req->headers);
    free(req->body);
    free(req->resp);
    free(req);
}

/* Copies the x-request-id header of the response into req->request_id,
 * keeping printable ASCII only (it reaches logs and the failures table).
 * Returns req->request_id, or NULL when the header is absent or empty. */
static const char *http_capture_request_id(http_request *req)
{
    struct curl_header *header = NULL;
    size_t n = 0;
    if (curl_easy_header(req->easy, "x-request-id", 0, CURLH_HEADER, -1, &header) != CURLHE_OK || !header)
        return NULL;
    for (const char *p = header->value; *p && n < HTTP_MAX_REQUEST_ID; p++)
        if (*p > ' ' && *p < 127)
            req->request_id[n++] = *p;
    req->request_id[n] = '\0';
    return n > 0 ? req->request_id : NULL;
}

/* A timeout of an https:// request whose TCP connection was made (curl
 * waited to read: the TLS handshake's answer) but which never reached the
 * transfer (no pretransfer time: the handshake never ended) is, almost
 * always, a server that does not speak TLS (an https:// URL pointed at an
 * http server): it is reported as a TLS failure, not as a slow server. */
static CURLcode http_tls_stall(const http_request *req, CURLcode code)
{
    curl_off_t pretransfer = 0;
    char *scheme = NULL;
    if (code != CURLE_OPERATION_TIMEDOUT || !req->awaited_read)
        return code;
    curl_easy_getinfo(req->easy, CURLINFO_SCHEME, &scheme);
    curl_easy_getinfo(req->easy, CURLINFO_PRETRANSFER_TIME_T, &pretransfer);
    if (scheme != NULL && strcasecmp(scheme, "https") == 0 && pretransfer == 0)
        return CURLE_SSL_CONNECT_ERROR;
    return code;
}

/* Removes req from the client and curl, delivers the result, frees req. */
static void http_request_finish(http_request *req, CURLcode code, int aborted)
{
    http_client *hc = req->hc;
    http_response resp;

    http_request_unlink(req);
    if (hc->multi)
        curl_multi_remove_handle(hc->multi, req->easy);

    memset(&resp, 0, sizeof resp);
    /* an error body cut on purpose is a complete answer: its status and start */
    if (code == CURLE_WRITE_ERROR && req->error_cut && !req->too_large)
        code = CURLE_OK;
    resp.curl_code = http_tls_stall(req, code);
    resp.aborted = aborted;
    resp.body_too_large = req->too_large;
    resp.body_truncated = req->error_cut;
    resp.max_body = req->max_body;
    curl_easy_getinfo(req->easy, CURLINFO_RESPONSE_CODE, &resp.status);
    curl_easy_getinfo(req->easy, CURLINFO_NUM_CONNECTS, &resp.new_connections);
    resp.retry_after_ms = http_read_retry_after(req->easy);
    http_ratelimit_read(req->easy, &resp.ratelimit);
    resp.request_id = http_capture_request_id(req);
    resp.body = req->resp ? req->resp : "";
    resp.body_len = req->resp_len;
    resp.latency_ms = (double)(uv_hrtime() - req->started_ns) / 1e6;

    req->delivering = 1;
    req->cb(req, &resp, req->data);
    http_request_free(req);
}

/* Delivers every transfer curl reports as finished. */
static void http_drain_finished(http_client *hc)
{
    CURLMsg *msg;
    int left;
    while (!hc->closing && (msg = curl_multi_info_read(hc->multi, &left)) != NULL) {
        http_request *req = NULL;
        if (msg->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&req);
        if (req)
            http_request_finish(req, msg->data.result, 0);
    }
}

/* ---------- libuv -> curl ---------- */

static void http_on_poll(uv_poll_t *handle, int status, int events)
{
    http_socket *sock = handle->data;
    http_client *hc = sock->hc;
    int flags = 0;
    int running = 0;
    if (hc->closing)
        return;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    curl_multi_socket_action(hc->multi, sock->fd, flags, &running);
    http_drain_finished(hc);
}

static void http_on_timer(uv_timer_t *timer)
{
    http_client *hc = timer->data;
    int running = 0;
    if (hc->closing)
        return;
    curl_multi_socket_action(hc->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    http_drain_finished(hc);
}

/* ---------- curl -> libuv ---------- */

static int http_socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    http_client *hc = userp;
    http_socket *sock = socketp;
    int events = 0;

    if (what == CURL_POLL_REMOVE) {
        if (sock) {
            curl_multi_assign(hc->multi, fd, NULL);
            http_socket_close(sock);
        }
        return 0;
    }
    if (!sock) {
        sock = calloc(1, sizeof *sock);
        if (!sock)
            return -1;
        if (uv_poll_init_socket(hc->loop, &sock->poll, fd) != 0) {
            free(sock);
            return -1;
        }
        hc->open_handles++;
        uv_unref((uv_handle_t *)&sock->poll); /* liveness comes from hc->liveness */
        sock->poll.data = sock;
        sock->fd = fd;
        sock->hc = hc;
        sock->next = hc->sockets;
        if (hc->sockets)
            hc->sockets->prev = sock;
        hc->sockets = sock;
        curl_multi_assign(hc->multi, fd, sock);
    }
    if (what & CURL_POLL_IN) {
        http_request *req = NULL;
        events |= UV_READABLE;
        if (easy && curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&req) == CURLE_OK && req)
            req->awaited_read = 1;
    }
    if (what & CURL_POLL_OUT)
        events |= UV_WRITABLE;
    if (uv_poll_start(&sock->poll, events, http_on_poll) != 0)
        return -1;
    return 0;
}

static int http_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    http_client *hc = userp;
    if (hc->closing)
        return 0;
    if (timeout_ms < 0)
        uv_timer_stop(&hc->timer);
    else
        uv_timer_start(&hc->timer, http_on_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

/* Makes room for n more bytes (plus the terminator) in req->resp, never
 * past limit + 1 bytes. Returns 0, or -1 when memory is short. */
static int http_reserve(http_request *req, size_t n, size_t limit)
{
    size_t cap = req->resp_cap ? req->resp_cap : 4096;
    curl_off_t announced = -1;
    char *grown;
    if (req->resp_len + n + 1 <= req->resp_cap)
        return 0;
    /* First bytes: size the buffer from Content-Length at once (a
     * ~0.5 MB answer grown by doubling from 4 KB copied ~1 MB). */
    if (req->resp_cap == 0 && curl_easy_getinfo(req->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &announced) == CURLE_OK &&
        announced > 0 && (curl_off_t)cap < announced + 1 && (curl_off_t)limit >= announced)
        cap = (size_t)announced + 1;
    while (cap < req->resp_len + n + 1)
        cap *= 2;
    if (cap > limit + 1)
        cap = limit + 1;
    grown = realloc(req->resp, cap);
    if (!grown)
        return -1;
    req->resp = grown;
    req->resp_cap = cap;
    return 0;
}

static void http_append(http_request *req, const char *ptr, size_t n)
{
    memcpy(req->resp + req->resp_len, ptr, n);
    req->resp_len += n;
    req->resp[req->resp_len] = '\0';
}

/* A non-2xx body: keeps its first HTTP_MAX_ERROR_BODY bytes (within the
 * client's HTTP_MAX_ERROR_BODIES) and stops the transfer after them. */
static size_t http_keep_error_start(http_request *req, const char *ptr, size_t n)
{
    http_client *hc = req->hc;
    size_t room = HTTP_MAX_ERROR_BODY - req->resp_len;
    size_t shared = HTTP_MAX_ERROR_BODIES - hc->error_bytes;
    size_t take = n < room ? n : room;
    if (take > shared)
        take = shared;
    if (take > 0) {
        if (http_reserve(req, take, HTTP_MAX_ERROR_BODY) != 0)
            return 0; /* CURLE_WRITE_ERROR: out of memory */
        http_append(req, ptr, take);
        req->error_kept += take;
        hc->error_bytes += take;
    }
    if (take < n) {
        req->error_cut = 1;
        return 0; /* stops the transfer; delivered as a complete answer */
    }
    return n;
}

/* Receives decoded body bytes: a 2xx body is bounded by max_body (streamed
 * to on_body or kept), any other keeps only its start. */
static size_t http_write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    http_request *req = userdata;
    size_t n = size * nmemb;
    long status = 0;
    curl_easy_getinfo(req->easy, CURLINFO_RESPONSE_CODE, &status);
    if (status < 200 || status >= 300)
        return http_keep_error_start(req, ptr, n);
    if (n > req->max_body - req->received) {
        req->too_large = 1;
        return 0; /* CURLE_WRITE_ERROR, flagged as body_too_large */
    }
    req->received += n;
    if (req->on_body) {
        req->on_body(ptr, n, req->on_body_data);
        return n;
    }
    if (http_reserve(req, n, req->max_body) != 0)
        return 0;
    http_append(req, ptr, n);
    return n;
}

/* Builds req->mime from mime (every string copied by libcurl) and sets it
 * as the request body. Returns 0, or -1 when curl refuses or memory is short. */
static int http_set_mime(http_request *req, const http_mime *mime)
{
    curl_mimepart *part;
    if (!mime->file_field || !mime->file_path)
        return -1;
    req->mime = curl_mime_init(req->easy);
    if (!req->mime)
        return -1;
    for (size_t i = 0; i < mime->nfields; i++) {
        part = curl_mime_addpart(req->mime);
        if (!part || !mime->fields[i].name || !mime->fields[i].value ||
            curl_mime_name(part, mime->fields[i].name) != CURLE_OK ||
            curl_mime_data(part, mime->fields[i].value, CURL_ZERO_TERMINATED) != CURLE_OK)
            return -1;
    }
    part = curl_mime_addpart(req->mime);
    if (!part || curl_mime_name(part, mime->file_field) != CURLE_OK ||
        curl_mime_filedata(part, mime->file_path) != CURLE_OK)
        return -1;
    if (mime->file_name && curl_mime_filename(part, mime->file_name) != CURLE_OK)
        return -1;
    if (mime->content_type && curl_mime_type(part, mime->content_type) != CURLE_OK)
        return -1;
    return curl_easy_setopt(req->easy, CURLOPT_MIMEPOST, req->mime) == CURLE_OK ? 0 : -1;
}

/* Adds the request headers of opts, plus "Expect:" when a body is sent (no
 * 100-continue round trip). Returns 0, or -1 when memory is short. */
static int http_set_headers(http_request *req, const http_request_opts *opts)
{
    struct curl_slist *next;
    if (opts->headers) {
        for (const char *const *h = opts->headers; *h; h++) {
            next = curl_slist_append(req->headers, *h);
            if (!next)
                return -1;
            req->headers = next;
        }
    }
    if (!opts->body && !opts->mime)
        return 0;
    next = curl_slist_append(req->headers, "Expect:");
    if (!next)
        return -1;
    req->headers = next;
    return 0;
}

/* ---------- public API ---------- */

http_client *http_client_new(uv_loop_t *loop)
{
    http_client *hc;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return NULL;
    hc = calloc(1, sizeof *hc);
    if (!hc) {
        curl_global_cleanup();
        return NULL;
    }
    hc->loop = loop;
    hc->multi = curl_multi_init();
    if (!hc->multi)
        goto fail;
    if (uv_timer_init(loop, &hc->timer) != 0)
        goto fail;
    hc->timer.data = hc;
    hc->open_handles++;
    uv_unref((uv_handle_t *)&hc->timer);
    if (uv_async_init(loop, &hc->liveness, NULL) != 0) {
        /* the timer is open: close it and let its callback free hc */
        curl_multi_cleanup(hc->multi);
        hc->multi = NULL;
        hc->closing = 1;
        uv_close((uv_handle_t *)&hc->timer, http_handle_closed);
        return NULL;
    }
    hc->liveness.data = hc;
    hc->open_handles++;
    uv_unref((uv_handle_t *)&hc->liveness);

    curl_multi_setopt(hc->multi, CURLMOPT_SOCKETFUNCTION, http_socket_cb);
    curl_multi_setopt(hc->multi, CURLMOPT_SOCKETDATA, hc);
    curl_multi_setopt(hc->multi, CURLMOPT_TIMERFUNCTION, http_timer_cb);
    curl_multi_setopt(hc->multi, CURLMOPT_TIMERDATA, hc);
    curl_multi_setopt(hc->multi, CURLMOPT_MAXCONNECTS, HTTP_MAX_CACHED_CONNECTIONS);
    return hc;

fail:
    if (hc->multi)
        curl_multi_cleanup(hc->multi);
    free(hc);
    curl_global_cleanup();
    return NULL;
}

http_request *http_request_start(http_client *hc, const http_request_opts *opts,
                                 http_done_cb cb, void *data)
{
    http_request *req = NULL;
    const char *method;
    CURLMcode mc;

    if (!hc || hc->closing || !opts || !opts->url || !cb || (opts->body && opts->mime))
        return NULL;
    req = calloc(1, sizeof *req);
    if (!req)
        goto fail;
    req->hc = hc;
    req->cb = cb;
    req->data = data;
    req->on_body = opts->on_body;
    req->on_body_data = opts->on_body_data;
    req->max_body = opts->max_body ? opts->max_body : HTTP_DEFAULT_MAX_BODY;
    req->easy = curl_easy_init();
    if (!req->easy)
        goto fail;

    method = opts->method ? opts->method : (opts->body || opts->mime ? "POST" : "GET");
    if (http_set_headers(req, opts) != 0)
        goto fail;
    if (opts->mime && http_set_mime(req, opts->mime) != 0)
        goto fail;
    if (opts->body) {
        req->body = malloc(opts->body_len ? opts->body_len : 1);
        if (!req->body)
            goto fail;
        memcpy(req->body, opts->body, opts->body_len);
        curl_easy_setopt(req->easy, CURLOPT_POSTFIELDS, req->body);
        curl_easy_setopt(req->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)opts->body_len);
    }
    if (strcmp(method, "GET") == 0)
        curl_easy_setopt(req->easy, CURLOPT_HTTPGET, 1L);
    else if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(req->easy, CURLOPT_NOBODY, 1L);
    else if (strcmp(method, "POST") != 0 || !(opts->body || opts->mime))
        curl_easy_setopt(req->easy, CURLOPT_CUSTOMREQUEST, method);

    if (curl_easy_setopt(req->easy, CURLOPT_URL, opts->url) != CURLE_OK)
        goto fail;
    curl_easy_setopt(req->easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(req->easy, CURLOPT_HTTPHEADER, req->headers);
    curl_easy_setopt(req->easy, CURLOPT_PRIVATE, (char *)req);
    curl_easy_setopt(req->easy, CURLOPT_WRITEFUNCTION, http_write_cb);
    curl_easy_setopt(req->easy, CURLOPT_WRITEDATA, req);
    curl_easy_setopt(req->easy, CURLOPT_ERRORBUFFER, req->error);
    curl_easy_setopt(req->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(req->easy, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(req->easy, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(req->easy, CURLOPT_USERAGENT, "ragops/1");
    /* 64 KiB reads: fewer recvfrom/poll per answer (~0.76 system calls
     * per document in a cold backfill, docs/desempenho.md); 4 MiB at
     * in_flight 64, where 512 KiB would be 32 MiB */
    curl_easy_setopt(req->easy, CURLOPT_BUFFERSIZE, 64L * 1024);
    if (opts->timeout_ms > 0)
        curl_easy_setopt(req->easy, CURLOPT_TIMEOUT_MS, opts->timeout_ms);
    if (opts->connect_timeout_ms > 0)
        curl_easy_setopt(req->easy, CURLOPT_CONNECTTIMEOUT_MS, opts->connect_timeout_ms);
    /* libcurl keeps its own copies of both strings */
    if (opts->ca_file && curl_easy_setopt(req->easy, CURLOPT_CAINFO, opts->ca_file) != CURLE_OK)
        goto fail;
    if (opts->proxy && curl_easy_setopt(req->easy, CURLOPT_PROXY, opts->proxy) != CURLE_OK)
        goto fail;

    req->started_ns = uv_hrtime();
    mc = curl_multi_add_handle(hc->multi, req->easy);
    if (mc != CURLM_OK)
        goto fail;
    http_request_link(req);
    return req;

fail:
    if (req)
        http_request_free(req);
    return NULL;
}

void http_request_cancel(http_request *req)
{
    if (!req || req->delivering)
        return;
    http_request_unlink(req);
    if (req->hc->multi)
        curl_multi_remove_handle(req->hc->multi, req->easy);
    http_request_free(req);
}

void http_client_close(http_client *hc)
{
    if (!hc || hc->closing)
        return;
    hc->closing = 1;
    uv_timer_stop(&hc->timer);

    /* Complete pending requests first: removing them from curl may close
     * sockets through http_socket_cb, which still works while closing. */
    while (hc->requests)
        http_request_finish(hc->requests, CURLE_ABORTED_BY_CALLBACK, 1);

    /* Stop watching the sockets still in the connection cache, then let
     * curl close them without calling back into us. */
    while (hc->sockets)
        http_socket_close(hc->sockets);
    curl_multi_setopt(hc->multi, CURLMOPT_SOCKETFUNCTION, NULL);
    curl_multi_setopt(hc->multi, CURLMOPT_TIMERFUNCTION, NULL);
    curl_multi_cleanup(hc->multi);
    hc->multi = NULL;

    uv_close((uv_handle_t *)&hc->timer, http_handle_closed);
    uv_close((uv_handle_t *)&hc->liveness, http_handle_closed);
}

int http_client_pending(const http_client *hc)
{
    return hc ? hc->pending : 0;
}

size_t http_client_error_bytes(const http_client *hc)
{
    return hc ? hc->error_bytes : 0;
}

const char *http_curl_error_ptbr(CURLcode code)
{
    switch (code) {
    case CURLE_OK:
        return "sem erro";
    case CURLE_OPERATION_TIMEDOUT:
        return "tempo esgotado";
    case CURLE_COULDNT_RESOLVE_HOST:
        return "não foi possível resolver o nome do servidor";
    case CURLE_COULDNT_RESOLVE_PROXY:
        return "não foi possível resolver o nome do proxy";
    case CURLE_COULDNT_CONNECT:
        return "conexão recusada ou servidor inacessível";
    case CURLE_SEND_ERROR:
        return "falha ao enviar dados";
    case CURLE_RECV_ERROR:
        return "falha ao receber dados";
    case CURLE_GOT_NOTHING:
        return "o servidor fechou a conexão sem responder";
    case CURLE_PARTIAL_FILE:
        return "resposta truncada (conexão encerrada antes do fim)";
    case CURLE_SSL_CONNECT_ERROR:
        return "falha no handshake TLS (a URL é https://: o servidor fala TLS? confira http:// ou https://)";
    case CURLE_PEER_FAILED_VERIFICATION:
        return "certificado TLS do servidor não verificado";
    case CURLE_SSL_CACERT_BADFILE:
        return "o arquivo de certificados de CA não pôde ser lido (inexistente, ilegível ou inválido)";
    case CURLE_URL_MALFORMAT:
        return "URL malformada";
    case CURLE_UNSUPPORTED_PROTOCOL:
        return "protocolo não suportado (use http ou https)";
    case CURLE_READ_ERROR:
        return "falha ao ler o arquivo a enviar";
    case CURLE_WRITE_ERROR:
        return "resposta grande demais ou sem memória para recebê-la";
    case CURLE_OUT_OF_MEMORY:
        return "sem memória";
    case CURLE_ABORTED_BY_CALLBACK:
        return "requisição cancelada (encerramento)";
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return "erro no protocolo HTTP/2";
    case CURLE_BAD_CONTENT_ENCODING:
        return "codificação de conteúdo inválida na resposta";
    default:
        return "falha de transporte HTTP";
    }
}

long http_parse_retry_after(const char *value)
{
    const char *p = value;
    if (!p)
        return -1;
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p >= '0' && *p <= '9') {
        char *end = NULL;
        double seconds = strtod(p, &end);
        while (end && (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n'))
            end++;
        if (!end || *end != '\0' || seconds < 0)
            return -1;
        if (seconds > (double)(LONG_MAX / 1000))
            return LONG_MAX / 1000 * 1000;
        return (long)(seconds * 1000.0);
    }
    if (*p == '\0')
        return -1;
    {
        time_t at = curl_getdate(p, NULL);
        time_t now = time(NULL);
        if (at == (time_t)-1)
            return -1;
        if (at <= now)
            return 0;
        return (long)(at - now) * 1000L;
    }
}
