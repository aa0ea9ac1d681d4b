/*
 * embed_server_http.c: the HTTP/1.1 messages of the embed-server: parsing a
 * request head (request line, Content-Length, Transfer-Encoding, Connection,
 * Expect, Authorization) and building responses (OpenAI-style JSON errors,
 * status line and headers).
 */
#define _GNU_SOURCE /* strndup */
#include "embed_server_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ------------------------------------------------------------------ */
/* Request heads                                                        */

void es_request_reset(es_request *req)
{
    free(req->path);
    free(req->authorization);
    free(req->request_id);
    memset(req, 0, sizeof *req);
}

/* Case-insensitive search of token in a comma-separated header value. */
static int es_header_has_token(const char *value, size_t len, const char *token)
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
static int es_parse_request_line(const char *head, const char *line_end, es_request *req)
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
    if (query)
        target_len = (size_t)(query - target);
    req->path = strndup(target, target_len);
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
static int es_parse_content_length(const char *value, size_t value_len, int *saw_length, es_request *req)
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
static int es_header_is(const char *name, size_t name_len, const char *want)
{
    return name_len == strlen(want) && strncasecmp(name, want, name_len) == 0;
}

/* Records one header we care about. Returns 0 or -1 (malformed). */
static int es_parse_header(const char *name, size_t name_len, const char *value, size_t value_len,
                           int *saw_length, es_request *req)
{
    if (es_header_is(name, name_len, "Content-Length"))
        return es_parse_content_length(value, value_len, saw_length, req);
    if (es_header_is(name, name_len, "Transfer-Encoding")) {
        req->chunked = 1;
    } else if (es_header_is(name, name_len, "Connection")) {
        if (es_header_has_token(value, value_len, "close"))
            req->keep_alive = 0;
        else if (es_header_has_token(value, value_len, "keep-alive"))
            req->keep_alive = 1;
    } else if (es_header_is(name, name_len, "Expect")) {
        if (es_header_has_token(value, value_len, "100-continue"))
            req->expect_continue = 1;
    } else if (es_header_is(name, name_len, "Authorization")) {
        free(req->authorization);
        req->authorization = strndup(value, value_len);
        if (req->authorization == NULL)
            return -1;
    } else if (es_header_is(name, name_len, "X-Request-Id")) {
        free(req->request_id);
        req->request_id = strndup(value, value_len);
        if (req->request_id == NULL)
            return -1;
    }
    return 0;
}

int es_parse_head(const char *head, size_t head_len, es_request *req)
{
    const char *end = head + head_len;
    const char *line_end = memchr(head, '\r', head_len);
    if (line_end == NULL || es_parse_request_line(head, line_end, req) != 0)
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
        if (es_parse_header(line, (size_t)(colon - line), value, value_len, &saw_length, req) != 0)
            return -1;
        line = eol + 2;
    }
    req->head_len = head_len;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Responses                                                            */

void es_response_free(es_response *resp)
{
    if (resp == NULL)
        return;
    free(resp->body);
    free(resp);
}

es_response *es_response_new(int status, const char *content_type, char *body, size_t body_len)
{
    es_response *resp = calloc(1, sizeof *resp);
    if (resp == NULL) {
        free(body);
        return NULL;
    }
    resp->status = status;
    resp->content_type = content_type;
    resp->body = body;
    resp->body_len = body_len;
    return resp;
}

es_response *es_response_json(int status, json_t *root)
{
    char *body = root ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    if (body == NULL)
        return NULL;
    return es_response_new(status, "application/json", body, strlen(body));
}

es_response *es_response_verror(int status, const char *type, const char *code, const char *fmt, va_list ap)
{
    char message[1024];
    vsnprintf(message, sizeof message, fmt, ap);
    return es_response_json(status, json_pack("{s:{s:s, s:s, s:n, s:s?}}", "error", "message", message,
                                              "type", type, "param", "code", code));
}

es_response *es_response_error(int status, const char *type, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    es_response *resp = es_response_verror(status, type, code, fmt, ap);
    va_end(ap);
    return resp;
}

static const char *es_status_text(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 413: return "Payload Too Large";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    default: return "Unknown";
    }
}

char *es_response_head(const es_response *resp)
{
    char retry_header[64] = "";
    char id_header[64] = "";
    if (resp->retry_after_s > 0)
        snprintf(retry_header, sizeof retry_header, "Retry-After: %d\r\n", resp->retry_after_s);
    if (resp->request_id[0])
        snprintf(id_header, sizeof id_header, "x-request-id: %s\r\n", resp->request_id);
    return es_format_alloc("HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s%s%s\r\n",
                           resp->status, es_status_text(resp->status), resp->content_type, resp->body_len,
                           retry_header, id_header, resp->close_after ? "Connection: close\r\n" : "");
}
