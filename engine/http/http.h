/*
 * http.h: asynchronous HTTP client on one libcurl multi handle driven by the
 * libuv loop (uv_poll per socket, one uv_timer for curl's timeouts). Pure C,
 * no Lua: callbacks fire on the loop thread. Connections are kept alive in
 * the multi handle's cache and reused across requests.
 */
#ifndef RAGOPS_HTTP_H
#define RAGOPS_HTTP_H

#include <limits.h>
#include <stddef.h>
#include <curl/curl.h>
#include <uv.h>

/* Longest x-request-id kept from a response (longer values are cut). */
#define HTTP_MAX_REQUEST_ID 127
/* Most decoded bytes of a 2xx body when http_request_opts.max_body is 0. */
#define HTTP_DEFAULT_MAX_BODY ((size_t)16 * 1024 * 1024)
/* Bytes kept of a non-2xx body: its start carries the message; the rest
 * is not read (the transfer stops there, see http_response.body_truncated). */
#define HTTP_MAX_ERROR_BODY ((size_t)64 * 1024)
/* Non-2xx body bytes one client keeps at once, over all its requests:
 * beyond it a further error body is delivered empty (truncated). */
#define HTTP_MAX_ERROR_BODIES ((size_t)8 * 1024 * 1024)

typedef struct http_client http_client;
typedef struct http_request http_request;

/* One text part of a multipart/form-data body. */
typedef struct http_mime_field {
    const char *name;  /* part name */
    const char *value; /* part content (NUL-terminated text) */
} http_mime_field;

/* A multipart/form-data body: text fields, then one file part that libcurl
 * reads from disk while sending (never held in memory). */
typedef struct http_mime {
    const http_mime_field *fields; /* nfields text parts, or NULL */
    size_t nfields;                /* entries in fields */
    const char *file_field;        /* name of the file part (required) */
    const char *file_path;         /* file sent as the part's content (required) */
    const char *file_name;         /* filename= of the part, or NULL: the path's base name */
    const char *content_type;      /* Content-Type of the file part, or NULL: libcurl's guess */
} http_mime;

/* What to send. Every pointer is copied by http_request_start. */
typedef struct http_request_opts {
    const char *method;          /* "GET", "POST", ...; NULL: POST when body is set, else GET */
    const char *url;             /* absolute URL (required) */
    const char *const *headers;  /* NULL-terminated "Name: value" lines, or NULL */
    const char *body;            /* request body, or NULL */
    size_t body_len;             /* bytes in body */
    long timeout_ms;             /* whole-transfer limit; <= 0 means none */
    long connect_timeout_ms;     /* connection limit; <= 0 means curl's default */
    /* When set, the bytes of a 2xx body go to on_body(bytes, n, on_body_data)
     * as they arrive instead of into resp->body (which stays empty): a
     * streaming decoder. Other statuses are kept in resp->body as usual. */
    void (*on_body)(const char *bytes, size_t n, void *on_body_data);
    void *on_body_data;          /* user pointer for on_body */
    /* Most bytes of a 2xx body, counted after content decoding (gzip,
     * deflate...: what on_body or resp->body receive), so a compressed
     * "bomb" is bounded too; 0 means HTTP_DEFAULT_MAX_BODY. Passing it
     * stops the transfer: resp->body_too_large. */
    size_t max_body;
    const char *ca_file;         /* CA certificates file (CURLOPT_CAINFO), or NULL: the system's */
    const char *proxy;           /* CURLOPT_PROXY: NULL follows libcurl's default (the http_proxy,
                                    https_proxy and no_proxy environment variables); "" means no
                                    proxy even when those are set */
    const http_mime *mime;       /* multipart/form-data body (POST unless method says
                                    otherwise), or NULL; not together with body */
} http_request_opts;

/* Result of parsing one header value (http_parse_count and friends). */
typedef enum http_value_state {
    HTTP_VALUE_ABSENT = 0,  /* value NULL, empty or only blanks: *out untouched */
    HTTP_VALUE_VALID = 1,   /* *out holds the value */
    HTTP_VALUE_INVALID = 2  /* garbage, a sign, too long or (counts) over the bound:
                               *out untouched; callers treat it as absent */
} http_value_state;

/* Largest count accepted in an x-ratelimit-limit-* / -remaining-* header. */
#define HTTP_RATELIMIT_MAX_COUNT 1000000000000000L /* 10^15, exact in a Lua number */
/* Longest x-ratelimit-reset-* wait kept: a longer one is cut to this. */
#define HTTP_RATELIMIT_MAX_RESET_MS 3600000L /* one hour */
/* Longest header value the rate-limit parsers read (longer: invalid). */
#define HTTP_RATELIMIT_MAX_VALUE 64
/* Largest Retry-After / retry-after-ms kept, in ms (a longer one is cut). */
#define HTTP_MAX_RETRY_AFTER_MS (LONG_MAX / 1000 * 1000)

/* The provider's rate-limit headers (OpenAI's names; Azure, Groq and the
 * embed-server send the same), read from every answer, 2xx or not. Each
 * field is -1 when its header is absent or invalid. */
typedef struct http_ratelimit {
    int present;             /* 1 when at least one field below is >= 0 */
    long limit_requests;     /* x-ratelimit-limit-requests: requests per window */
    long limit_tokens;       /* x-ratelimit-limit-tokens: tokens per window */
    long remaining_requests; /* x-ratelimit-remaining-requests: requests left now */
    long remaining_tokens;   /* x-ratelimit-remaining-tokens: tokens left now */
    long reset_requests_ms;  /* x-ratelimit-reset-requests (a Go duration) in ms, at most
                                HTTP_RATELIMIT_MAX_RESET_MS */
    long reset_tokens_ms;    /* x-ratelimit-reset-tokens (a Go duration) in ms, at most
                                HTTP_RATELIMIT_MAX_RESET_MS */
} http_ratelimit;

/* What came back; valid only during the done callback. */
typedef struct http_response {
    CURLcode curl_code;   /* CURLE_OK when a full HTTP response arrived */
    long status;          /* HTTP status, 0 when none was received */
    const char *body;     /* response body, NUL-terminated (never NULL) */
    size_t body_len;      /* bytes in body, excluding the terminator */
    long retry_after_ms;  /* in ms, -1 if absent: retry-after-ms (OpenAI, Azure) when valid,
                             else Retry-After (seconds or HTTP-date) */
    double latency_ms;    /* time from start to completion */
    long new_connections; /* connections opened for this request (0 = reused a cached one) */
    int aborted;          /* 1 when delivered by http_client_close: the owner is shutting down */
    const char *request_id; /* the provider's x-request-id header (printable ASCII, at most
                               HTTP_MAX_REQUEST_ID bytes), or NULL when absent */
    int body_too_large;   /* 1: a 2xx body passed opts.max_body and the transfer was stopped
                             (curl_code is CURLE_WRITE_ERROR; body holds nothing useful) */
    size_t max_body;      /* the limit that applied (opts.max_body or its default) */
    int body_truncated;   /* 1: a non-2xx answer whose body was cut at HTTP_MAX_ERROR_BODY (or
                             at the client's HTTP_MAX_ERROR_BODIES): status and the body's start
                             are delivered with curl_code CURLE_OK, the rest was never read */
    http_ratelimit ratelimit; /* the x-ratelimit-* headers of the answer (present 0 when none) */
} http_response;

/* Completion callback: called exactly once per request unless the request was
 * cancelled. The request is freed after the callback returns. */
typedef void (*http_done_cb)(http_request *req, const http_response *resp, void *data);

/* Creates a client on loop. Returns NULL when curl or libuv fail. */
http_client *http_client_new(uv_loop_t *loop);

/* Starts a request. Returns NULL (and never calls cb) when the client is
 * closing, the options are invalid or memory is short. cb is never called
 * from inside http_request_start. */
http_request *http_request_start(http_client *hc, const http_request_opts *opts,
                                 http_done_cb cb, void *data);

/* Cancels a pending request: its callback will not be called. Safe from any
 * callback; a no-op when called from the request's own done callback. */
void http_request_cancel(http_request *req);

/* Closes the client: every pending request is completed with
 * curl_code CURLE_ABORTED_BY_CALLBACK and aborted = 1, then the libuv handles
 * are closed; the client's memory is freed once their close callbacks ran
 * (keep running the loop). Safe to call from a done callback. */
void http_client_close(http_client *hc);

/* Number of requests still pending on hc. */
int http_client_pending(const http_client *hc);

/* Bytes of non-2xx bodies kept by hc's pending requests (at most
 * HTTP_MAX_ERROR_BODIES). */
size_t http_client_error_bytes(const http_client *hc);

/* A pt-BR description of a curl failure (for messages people read). */
const char *http_curl_error_ptbr(CURLcode code);

/* Parses a Retry-After value (delta-seconds or HTTP-date) into milliseconds
 * from now; -1 when value is NULL or unparseable. */
long http_parse_retry_after(const char *value);

/* Parses a count header (x-ratelimit-limit-*, -remaining-*): decimal digits
 * only, at most HTTP_RATELIMIT_MAX_COUNT. */
http_value_state http_parse_count(const char *value, long *out);

/* Parses a Go duration (x-ratelimit-reset-*: "1s", "6m0s", "20ms", "1.5s",
 * "1h2m3.5s", "0") into ms, rounded up and cut to HTTP_RATELIMIT_MAX_RESET_MS;
 * units h, m, s, ms, us, µs, ns; no sign. */
http_value_state http_parse_duration_ms(const char *value, long *out_ms);

/* Parses retry-after-ms (a decimal number of ms, "1500" or "20.5") into ms,
 * rounded up and cut to HTTP_MAX_RETRY_AFTER_MS. */
http_value_state http_parse_retry_after_ms(const char *value, long *out_ms);

/* Reads the rate-limit headers of the answer on easy into *rl (every field
 * -1 and present 0 when there are none); no allocation. */
void http_ratelimit_read(CURL *easy, http_ratelimit *rl);

/* Retry-After of the answer on easy in ms, -1 when absent: retry-after-ms
 * when valid (more precise), else Retry-After. */
long http_read_retry_after(CURL *easy);

/* Lua side (http_lua.c): the client shared by ragops.http and ragops.embed
 * for the state's loop, created lazily; it is closed by the __gc of a
 * sentinel userdata kept in the registry, i.e. when the Lua state closes.
 * Raises a Lua error when the client cannot be created. */
struct lua_State;
http_client *rg_http_shared_client(struct lua_State *L);

/* Sets t.ratelimit on the table on top of L's stack to { remaining_requests,
 * remaining_tokens, limit_requests, limit_tokens, reset_requests_ms,
 * reset_tokens_ms } with only the fields present; nothing when rl holds none. */
void rg_http_push_ratelimit(struct lua_State *L, const http_ratelimit *rl);

#endif
