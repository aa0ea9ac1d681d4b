/*
 * embed_server_buf.c: growable byte buffers and formatted strings for the
 * embed-server (answer bodies, messages), and the answers themselves
 * (es_response: status, type, body) before engine/http's httpd writes them.
 */
#include "embed_server_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int es_buf_reserve(es_buf *buf, size_t extra)
{
    if (buf->cap - buf->len >= extra)
        return 0;
    size_t cap = buf->cap ? buf->cap : 256;
    while (cap - buf->len < extra)
        cap *= 2;
    char *data = realloc(buf->data, cap);
    if (data == NULL)
        return -1;
    buf->data = data;
    buf->cap = cap;
    return 0;
}

int es_buf_append(es_buf *buf, const char *data, size_t len)
{
    if (es_buf_reserve(buf, len + 1) != 0)
        return -1;
    memcpy(buf->data + buf->len, data, len);
    buf->len += len;
    buf->data[buf->len] = '\0';
    return 0;
}

static int es_buf_vappendf(es_buf *buf, const char *fmt, va_list ap)
{
    va_list again;
    va_copy(again, ap);
    int needed = vsnprintf(NULL, 0, fmt, ap);
    if (needed < 0 || es_buf_reserve(buf, (size_t)needed + 1) != 0) {
        va_end(again);
        return -1;
    }
    vsnprintf(buf->data + buf->len, (size_t)needed + 1, fmt, again);
    va_end(again);
    buf->len += (size_t)needed;
    return 0;
}

int es_buf_appendf(es_buf *buf, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = es_buf_vappendf(buf, fmt, ap);
    va_end(ap);
    return rc;
}

char *es_format_alloc(const char *fmt, ...)
{
    es_buf out = {0};
    va_list ap;
    va_start(ap, fmt);
    int rc = es_buf_vappendf(&out, fmt, ap);
    va_end(ap);
    if (rc != 0) {
        free(out.data);
        return NULL;
    }
    return out.data;
}

void es_set_err(char **err, char *message)
{
    if (err)
        *err = message;
    else
        free(message);
}

/* ---------- answers ---------- */

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

/* The JSON string of text (malloc'd), NULL when out of memory. */
char *es_json_quote(const char *text)
{
    json_t *str = json_string(text);
    char *quoted = str ? json_dumps(str, JSON_ENCODE_ANY) : NULL;
    json_decref(str);
    return quoted;
}
