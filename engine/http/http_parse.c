/*
 * http_parse.c: HTTP/1.1 request heads for the engine's servers (see
 * http_parse.h): the end of the head, the request line (path and query
 * string), Content-Length, Transfer-Encoding, Connection, Expect,
 * Authorization, api-key and X-Request-Id, reason phrases.
 */
#define _GNU_SOURCE /* memmem */
#include "http_parse.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

http_head_state http_head_find(const char *data, size_t avail, size_t max_head, size_t *head_len)
{
    const char *head_end = avail >= 4 ? memmem(data, avail, "\r\n\r\n", 4) : NULL;
    if (head_end == NULL)
        return avail > max_head ? HTTP_HEAD_TOO_LARGE : HTTP_HEAD_PARTIAL;
    *head_len = (size_t)(head_end - data) + 4;
    return *head_len > max_head ? HTTP_HEAD_TOO_LARGE : HTTP_HEAD_COMPLETE;
}

void http_head_reset(http_head *req)
{
    free(req->path);
    free(req->query);
    free(req->authorization);
    free(req->api_key);
    free(req->request_id);
    free(req->content_type);
    memset(req, 0, sizeof *req);
}

/* A NUL-terminated copy of the n bytes at p (malloc'd), NULL when out of
 * memory. Not strndup: the bytes come from a connection's buffer, which
 * may hold no NUL after them, and strndup may look for one. */
static char *copy_bytes(const char *p, size_t n)
{
    char *copy = malloc(n + 1);
    if (copy == NULL)
        return NULL;
    memcpy(copy, p, n);
    copy[n] = '\0';
    return copy;
}

/* Case-insensitive search of token in a comma-separated header value. */
static int header_has_token(const char *value, size_t len, const char *token)
{
    size_t token_len = strlen(token);
    size_t pos = 0;
    while (pos < len) {
        while (pos < len && (value[pos] == ' ' || value[pos] == '\t' || value[pos] == ','))
            pos++;
        size_t start = pos;
        while (pos < len && value[pos] != ',')
            pos++;
        size_t end = pos;
        while (end > start && (value[end - 1] == ' ' || value[end - 1] == '\t'))
            end--;
        if (end - start == token_len && strncasecmp(value + start, token, token_len) == 0)
            return 1;
    }
    return 0;
}

/* Request line: METHOD SP TARGET SP HTTP/1.x (line_end points at its CR). */
static int parse_request_line(const char *head, const char *line_end, http_head *req)
{
    const char *sp1 = memchr(head, ' ', (size_t)(line_end - head));
    if (sp1 == NULL || sp1 == head || (size_t)(sp1 - head) >= sizeof req->method)
        return -1;
    const char *sp2 = memchr(sp1 + 1, ' ', (size_t)(line_end - sp1 - 1));
    if (sp2 == NULL || sp2 == sp1 + 1)
        return -1;
    memcpy(req->method, head, (size_t)(sp1 - head));
    req->method[sp1 - head] = '\0';
    const char *target = sp1 + 1;
    size_t target_len = (size_t)(sp2 - target);
    const char *query = memchr(target, '?', target_len);
    if (query) {
        req->query = copy_bytes(query + 1, (size_t)(sp2 - query - 1));
        if (req->query == NULL)
            return -1;
        target_len = (size_t)(query - target);
    }
    req->path = copy_bytes(target, target_len);
    if (req->path == NULL)
        return -1;
    const char *version = sp2 + 1;
    size_t version_len = (size_t)(line_end - version);
    if (version_len == 8 && memcmp(version, "HTTP/1.1", 8) == 0)
        req->keep_alive = 1;
    else if (version_len == 8 && memcmp(version, "HTTP/1.0", 8) == 0)
        req->keep_alive = 0;
    else
        return -1;
    return 0;
}

/* Content-Length: digits only; a repeated header must agree. */
static int parse_content_length(const char *value, size_t value_len, int *saw_length, http_head *req)
{
    if (value_len == 0 || value_len > 18)
        return -1;
    size_t length = 0;
    for (size_t i = 0; i < value_len; i++) {
        if (value[i] < '0' || value[i] > '9')
            return -1;
        length = length * 10 + (size_t)(value[i] - '0');
    }
    if (*saw_length && length != req->content_length)
        return -1;
    *saw_length = 1;
    req->content_length = length;
    return 0;
}

/* 1 when the header name (name_len bytes) is want, case-insensitively. */
static int header_is(const char *name, size_t name_len, const char *want)
{
    return name_len == strlen(want) && strncasecmp(name, want, name_len) == 0;
}

/* Replaces *field with a copy of value. Returns 0 or -1 (out of memory). */
static int keep_header(char **field, const char *value, size_t value_len)
{
    free(*field);
    *field = copy_bytes(value, value_len);
    return *field ? 0 : -1;
}

/* Records one header we care about. Returns 0 or -1 (malformed). */
static int parse_header(const char *name, size_t name_len, const char *value, size_t value_len,
                           int *saw_length, http_head *req)
{
    if (header_is(name, name_len, "Content-Length"))
        return parse_content_length(value, value_len, saw_length, req);
    if (header_is(name, name_len, "Transfer-Encoding")) {
        req->chunked = 1;
    } else if (header_is(name, name_len, "Connection")) {
        if (header_has_token(value, value_len, "close"))
            req->keep_alive = 0;
        else if (header_has_token(value, value_len, "keep-alive"))
            req->keep_alive = 1;
    } else if (header_is(name, name_len, "Expect")) {
        if (header_has_token(value, value_len, "100-continue"))
            req->expect_continue = 1;
    } else if (header_is(name, name_len, "Authorization")) {
        return keep_header(&req->authorization, value, value_len);
    } else if (header_is(name, name_len, "api-key")) {
        return keep_header(&req->api_key, value, value_len);
    } else if (header_is(name, name_len, "X-Request-Id")) {
        return keep_header(&req->request_id, value, value_len);
    } else if (header_is(name, name_len, "Content-Type")) {
        return keep_header(&req->content_type, value, value_len);
    }
    return 0;
}

int http_head_parse(const char *head, size_t head_len, http_head *req)
{
    const char *end = head + head_len;
    const char *line_end = memchr(head, '\r', head_len);
    if (line_end == NULL || parse_request_line(head, line_end, req) != 0)
        return -1;
    int saw_length = 0;
    const char *line = line_end + 2;
    while (line < end) {
        const char *eol = memchr(line, '\r', (size_t)(end - line));
        if (eol == NULL || eol == line)
            break; /* blank line ends the head */
        const char *colon = memchr(line, ':', (size_t)(eol - line));
        if (colon == NULL || colon == line)
            return -1;
        const char *value = colon + 1;
        while (value < eol && (*value == ' ' || *value == '\t'))
            value++;
        size_t value_len = (size_t)(eol - value);
        while (value_len > 0 && (value[value_len - 1] == ' ' || value[value_len - 1] == '\t'))
            value_len--;
        if (parse_header(line, (size_t)(colon - line), value, value_len, &saw_length, req) != 0)
            return -1;
        line = eol + 2;
    }
    req->head_len = head_len;
    return 0;
}


const char *http_status_text(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Payload Too Large";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    default: return "Unknown";
    }
}
