/*
 * embed_server_http.c: the HTTP/1.1 answers of the embed-server
 * (OpenAI-style JSON errors, status line and headers); request heads are
 * parsed by the shared http_parse.c.
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

char *es_response_head(const es_response *resp)
{
    char retry_header[64] = "";
    char id_header[192] = "";
    if (resp->retry_after_s > 0)
        snprintf(retry_header, sizeof retry_header, "Retry-After: %d\r\n", resp->retry_after_s);
    if (resp->request_id[0])
        snprintf(id_header, sizeof id_header, "x-request-id: %s\r\n", resp->request_id);
    if (resp->endless)
        return es_format_alloc("HTTP/1.1 %d %s\r\nContent-Type: %s\r\nTransfer-Encoding: chunked\r\n%s%s\r\n",
                               resp->status, http_status_text(resp->status), resp->content_type,
                               resp->gzip ? "Content-Encoding: gzip\r\n" : "", id_header);
    return es_format_alloc("HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s%s%s\r\n",
                           resp->status, http_status_text(resp->status), resp->content_type, resp->body_len,
                           retry_header, id_header, resp->close_after ? "Connection: close\r\n" : "");
}
