/*
 * http_parse.h: parsing of HTTP/1.1 request heads, shared by the servers of
 * the engine (the embed-server and the metrics endpoint, httpd.c): finding
 * the end of the head under a size bound, the request line (path and query
 * string) and the headers the servers care about, and the reason phrase of a
 * status code.
 */
#ifndef RAGOPS_HTTP_PARSE_H
#define RAGOPS_HTTP_PARSE_H

#include <stddef.h>

/* One parsed request head (request line + the headers we care about). */
typedef struct http_head {
    char method[16];       /* e.g. "POST" */
    char *path;            /* target without query string (malloc'd) */
    char *query;           /* query string after '?', or NULL when the target has none (malloc'd) */
    char *authorization;   /* Authorization header value or NULL (malloc'd) */
    char *api_key;         /* api-key header value (Azure's key header) or NULL (malloc'd) */
    char *request_id;      /* X-Request-Id header value or NULL (malloc'd) */
    char *content_type;    /* Content-Type header value or NULL (malloc'd) */
    size_t head_len;       /* bytes of request line + headers + blank line */
    size_t content_length; /* body bytes announced */
    int keep_alive;        /* 1 if the connection stays open after the answer */
    int expect_continue;   /* 1 if the client sent Expect: 100-continue */
    int chunked;           /* 1 if Transfer-Encoding was present (unsupported) */
} http_head;

/* What http_head_find saw at the start of the received bytes. */
typedef enum http_head_state {
    HTTP_HEAD_PARTIAL = 0,  /* no blank line yet, still within the bound */
    HTTP_HEAD_COMPLETE = 1, /* *head_len bytes hold the whole head */
    HTTP_HEAD_TOO_LARGE = 2 /* the head is (or will be) larger than max_head */
} http_head_state;

/* Looks for the blank line ending the head in data[0..avail). */
http_head_state http_head_find(const char *data, size_t avail, size_t max_head, size_t *head_len);

/* Frees head's strings and zeroes it. */
void http_head_reset(http_head *head);

/* Parses text[0..len) (a complete head) into head. Returns 0 or -1 (malformed). */
int http_head_parse(const char *text, size_t len, http_head *head);

/* Reason phrase of status ("Unknown" for codes the servers do not send). */
const char *http_status_text(int status);

#endif
