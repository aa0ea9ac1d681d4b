/*
 * embed_server_http.c: the answers of the embed-server (status, body,
 * OpenAI-style JSON errors); engine/http's httpd writes them.
 */
#include "embed_server_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
