/*
 * embed.c: the embeddings wire format, without I/O: the request body of
 * every dialect (fixed members, inputs key, encoding member), UTF-8
 * sanitising, base64, error body messages and the failure classification
 * used by the Lua retry loop. The answer's vectors are parsed by
 * embed_decode.c ("data" items, the hot path) and embed_rows.c (rows).
 */
#include "embed.h"
#include "core/utf8.h"

#include <ctype.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Writes s (len bytes) as a JSON string, quotes included, at out, which has
 * room for 6 * len + 2 bytes; returns the bytes written, or 0 when s is not
 * valid UTF-8. Escapes what JSON requires (quote, backslash, control
 * bytes), like jansson's compact output. */
static size_t put_json_string(char *out, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    char *o = out;
    *o++ = '"';
    for (size_t i = 0; i < len;) {
        unsigned char c = u[i];
        if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
            *o++ = (char)c;
            i++;
            continue;
        }
        if (c >= 0x80) {
            size_t n = rg_utf8_sequence(u + i, len - i);
            if (n == 0)
                return 0;
            memcpy(o, u + i, n);
            o += n;
            i += n;
            continue;
        }
        *o++ = '\\';
        switch (c) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '\b': *o++ = 'b'; break;
        case '\f': *o++ = 'f'; break;
        case '\n': *o++ = 'n'; break;
        case '\r': *o++ = 'r'; break;
        case '\t': *o++ = 't'; break;
        default:
            memcpy(o, "u00", 3);
            o[3] = hex[c >> 4];
            o[4] = hex[c & 15];
            o += 5;
        }
        i++;
    }
    *o++ = '"';
    return (size_t)(o - out);
}

/* Bytes the body of shape may take for texts (JSON escapes at most 6x),
 * or 0 when that does not fit in a size_t. */
static size_t body_capacity(const embed_request_shape *shape, const size_t *lens, const char *const *texts,
                            int count)
{
    size_t cap = 160 + 6 * (shape->model ? strlen(shape->model) : 0) + shape->body_fields_len;
    for (int i = 0; i < count; i++) {
        size_t len = lens ? lens[i] : strlen(texts[i]);
        if (len > (SIZE_MAX - cap) / 7)
            return 0;
        cap += 6 * len + 3;
    }
    return cap;
}

/* body_fields holds more than white space. */
static int has_fields(const embed_request_shape *shape)
{
    for (size_t i = 0; i < shape->body_fields_len; i++)
        if (!strchr(" \t\r\n", shape->body_fields[i]))
            return 1;
    return 0;
}

/* Writes the members before the inputs at o: the caller's verbatim, or
 * "model". Returns the end, or NULL when the model is not UTF-8. */
static char *put_fields(char *o, const embed_request_shape *shape)
{
    size_t n;
    if (shape->body_fields) {
        memcpy(o, shape->body_fields, shape->body_fields_len);
        o += shape->body_fields_len;
        if (has_fields(shape))
            *o++ = ',';
        return o;
    }
    memcpy(o, "\"model\":", 8);
    n = put_json_string(o + 8, shape->model, strlen(shape->model));
    if (n == 0)
        return NULL;
    o += 8 + n;
    *o++ = ',';
    return o;
}

/* Writes the members after the inputs at o: "encoding_format" as the shape
 * says, then "dimensions" (built members only). Returns the end. */
static char *put_trailer(char *o, const embed_request_shape *shape, embed_encoding encoding)
{
    int base64 = encoding != EMBED_ENCODING_FLOAT;
    if (shape->encoding_field == EMBED_ENCODING_FIELD_ALWAYS ||
        (shape->encoding_field == EMBED_ENCODING_FIELD_BASE64_ONLY && base64))
        o += sprintf(o, ",\"encoding_format\":\"%s\"", base64 ? "base64" : "float");
    if (!shape->body_fields && shape->dimensions > 0)
        o += sprintf(o, ",\"dimensions\":%d", shape->dimensions);
    return o;
}

/* The request body, written directly: jansson's tree and json_dumps were
 * ~5% of the engine's CPU in a cold backfill (64 texts per request). */
char *embed_build_body(const embed_request_shape *shape, const char *const *texts, const size_t *lens,
                       int count, embed_encoding encoding, size_t *out_len, char *err, size_t err_size)
{
    const char *key = shape->inputs_key ? shape->inputs_key : "input";
    size_t cap;
    char *body = NULL, *o;
    if (err && err_size)
        err[0] = '\0';
    if ((!shape->body_fields && !shape->model) || count <= 0 || !texts) {
        snprintf(err, err_size, "requisição de embeddings sem modelo ou sem textos");
        return NULL;
    }
    if (shape->body_fields_len > EMBED_MAX_BODY_FIELDS || strlen(key) > 16) {
        snprintf(err, err_size, "campos fixos do corpo da requisição grandes demais");
        return NULL;
    }
    if ((cap = body_capacity(shape, lens, texts, count)) == 0 || !(body = malloc(cap))) {
        snprintf(err, err_size, "sem memória para montar a requisição de embeddings");
        return NULL;
    }
    body[0] = '{';
    if (!(o = put_fields(body + 1, shape))) {
        snprintf(err, err_size, "nome do modelo não é UTF-8 válido");
        goto fail;
    }
    o += sprintf(o, "\"%s\":[", key);
    for (int i = 0; i < count; i++) {
        size_t n = put_json_string(o + (i > 0), texts[i], lens ? lens[i] : strlen(texts[i]));
        if (n == 0) {
            snprintf(err, err_size, "texto %d do lote não é UTF-8 válido", i + 1);
            goto fail;
        }
        if (i > 0)
            *o++ = ',';
        o += n;
    }
    *o++ = ']';
    o = put_trailer(o, shape, encoding);
    *o++ = '}';
    *o = '\0';
    if (out_len)
        *out_len = (size_t)(o - body);
    return body;
fail:
    free(body);
    return NULL;
}

char *embed_build_request(const char *model, const char *const *texts, const size_t *lens,
                          int count, embed_encoding encoding, int dimensions,
                          size_t *out_len, char *err, size_t err_size)
{
    embed_request_shape shape = {NULL, 0, model, dimensions, "input", EMBED_ENCODING_FIELD_ALWAYS};
    return embed_build_body(&shape, texts, lens, count, encoding, out_len, err, err_size);
}

char *embed_utf8_sanitize(const char *s, size_t len, size_t *out_len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    size_t o = 0;
    char *out;
    *out_len = len;
    while (i < len) { /* ASCII runs 8 bytes at a time, then one sequence */
        i += rg_utf8_plain_prefix(u + i, len - i);
        if (i == len)
            break;
        size_t n = rg_utf8_sequence(u + i, len - i);
        if (n == 0)
            break;
        i += n;
    }
    if (i == len)
        return NULL;
    out = malloc(len * 3 + 1); /* each bad byte becomes 3 bytes */
    if (!out) {
        *out_len = 0;
        return NULL;
    }
    for (i = 0; i < len;) {
        size_t n = rg_utf8_sequence(u + i, len - i);
        if (n == 0) {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i += 1;
        } else {
            memcpy(out + o, s + i, n);
            o += n;
            i += n;
        }
    }
    out[o] = '\0';
    *out_len = o;
    return out;
}

/* Decoding table: 0..63 for the alphabet, -1 otherwise. */
static int embed_base64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

long embed_base64_decode(const char *in, size_t len, unsigned char *out)
{
    size_t pad = 0;
    size_t n = 0;
    uint32_t acc = 0;
    int bits = 0;

    if (len % 4 == 0) {
        while (pad < 2 && len > pad && in[len - 1 - pad] == '=')
            pad++;
    }
    len -= pad;
    if (len % 4 == 1)
        return -1;
    for (size_t i = 0; i < len; i++) {
        int v = embed_base64_value((unsigned char)in[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (unsigned char)((acc >> bits) & 0xFF);
        }
    }
    return (long)n;
}


void embed_vectors_free(embed_vectors *out)
{
    if (!out)
        return;
    free(out->data);
    memset(out, 0, sizeof *out);
}

char *embed_parse_error_message(const char *body, size_t len, char **code)
{
    json_t *root;
    json_t *error;
    json_t *message = NULL;
    char *result = NULL;

    if (code)
        *code = NULL;
    if (!body || len == 0)
        return NULL;
    root = json_loadb(body, len, 0, NULL);
    if (!root)
        return NULL;
    error = json_object_get(root, "error");
    if (json_is_object(error)) {
        message = json_object_get(error, "message");
        if (code && json_is_string(json_object_get(error, "code")))
            *code = strdup(json_string_value(json_object_get(error, "code")));
    } else if (json_is_string(error))
        message = error;
    if (!json_is_string(message))
        message = json_object_get(root, "message");
    if (!json_is_string(message))
        message = json_object_get(root, "detail");
    if (json_is_string(message))
        result = strdup(json_string_value(message));
    json_decref(root);
    return result;
}

size_t embed_expected_body_max(int count, int dim)
{
    size_t items = count > 0 ? (size_t)count : 1;
    size_t floats = dim > 0 ? (size_t)dim : EMBED_BODY_UNKNOWN_DIM;
    return items * (floats * EMBED_BODY_BYTES_PER_FLOAT + EMBED_BODY_BYTES_PER_ITEM) + EMBED_BODY_SLACK_BYTES;
}

/* Case-insensitive substring test. */
static int embed_contains_ci(const char *haystack, const char *needle)
{
    size_t n = strlen(needle);
    if (!haystack)
        return 0;
    for (const char *p = haystack; *p; p++) {
        size_t i = 0;
        while (i < n && p[i] && tolower((unsigned char)p[i]) == tolower((unsigned char)needle[i]))
            i++;
        if (i == n)
            return 1;
    }
    return 0;
}

/* True when the provider says the requested model does not exist. */
static int embed_unknown_model(long status, const char *provider_message, const char *provider_code)
{
    static const char *const denials[] = {"not found", "does not exist", "unknown", "não encontrado",
                                          "não existe", "desconhecido"};
    if (provider_code && strcmp(provider_code, "model_not_found") == 0)
        return 1;
    if (!embed_contains_ci(provider_message, "model"))
        return 0;
    if (status == 404)
        return 1;
    for (size_t i = 0; i < sizeof denials / sizeof denials[0]; i++)
        if (embed_contains_ci(provider_message, denials[i]))
            return 1;
    return 0;
}

/* True for answers saying the URL does not serve the embeddings API. */
static int embed_wrong_endpoint(long status)
{
    return status == 404 || status == 405 || (status >= 300 && status < 400);
}

const char *embed_fatal_hint_for(long status, const char *provider_message, const char *provider_code,
                                 int endpoint_as_is)
{
    if ((status == 401 || status == 403) && endpoint_as_is)
        return "credencial recusada; confira a chave de API do provedor (provider.api_key) e os cabeçalhos "
               "de autenticação";
    if (status == 401 || status == 403)
        return "chave de API recusada; confira OPENAI_API_KEY (provider.api_key)";
    if (embed_unknown_model(status, provider_message, provider_code))
        return "modelo desconhecido pelo provedor; confira provider.model (RAGOPS_EMBED_MODEL)";
    if (embed_wrong_endpoint(status) && endpoint_as_is)
        return "este endereço não serve a API de embeddings; confira provider.url (RAGOPS_EMBED_URL) "
               "e o dialeto do provedor";
    if (embed_wrong_endpoint(status))
        return "este endereço não serve a API de embeddings; confira provider.url (RAGOPS_EMBED_URL): "
               "a URL base termina em /v1 e o motor acrescenta /embeddings";
    return "confira provider.url (RAGOPS_EMBED_URL)";
}

const char *embed_fatal_hint(long status, const char *provider_message, const char *provider_code)
{
    return embed_fatal_hint_for(status, provider_message, provider_code, 0);
}

char *embed_endpoint_url(const char *base)
{
    static const char suffix[] = "/embeddings";
    const char *rest = base + strcspn(base, "?#");
    size_t path_len = (size_t)(rest - base);
    size_t size;
    char *url;
    while (path_len > 0 && base[path_len - 1] == '/')
        path_len--;
    size = path_len + strlen(suffix) + strlen(rest) + 1;
    url = malloc(size);
    if (url)
        snprintf(url, size, "%.*s%s%s", (int)path_len, base, suffix, rest);
    return url;
}

void embed_display_url(const char *url, char *out, size_t size)
{
    const char *scheme = strstr(url, "://");
    const char *authority = scheme ? scheme + 3 : url;
    size_t authority_len = strcspn(authority, "/?#");
    const char *at = NULL;
    size_t path_len;
    if (size == 0)
        return;
    for (const char *p = authority; p < authority + authority_len; p++)
        if (*p == '@')
            at = p;
    path_len = strcspn(authority + authority_len, "?#");
    if (!scheme) {
        snprintf(out, size, "%s", url);
        return;
    }
    snprintf(out, size, "%.*s%.*s%.*s", (int)(authority - url), url,
             (int)(authority_len - (at ? (size_t)(at + 1 - authority) : 0)), at ? at + 1 : authority,
             (int)path_len, authority + authority_len);
}

embed_class embed_classify(CURLcode curl_code, long status, const char *provider_message,
                           const char *provider_code, embed_kind *kind)
{
    embed_kind k = EMBED_KIND_HTTP;
    embed_class cls;

    if (curl_code != CURLE_OK) {
        switch (curl_code) {
        case CURLE_OPERATION_TIMEDOUT:
            k = EMBED_KIND_TIMEOUT;
            cls = EMBED_CLASS_TRANSIENT;
            break;
        case CURLE_URL_MALFORMAT:
        case CURLE_UNSUPPORTED_PROTOCOL:
        case CURLE_SSL_CACERT_BADFILE:
            k = EMBED_KIND_CONNECTION; /* misconfigured URL or CA file: no request can work */
            cls = EMBED_CLASS_FATAL;
            break;
        case CURLE_WRITE_ERROR:
        case CURLE_BAD_CONTENT_ENCODING:
            k = EMBED_KIND_MALFORMED;
            cls = EMBED_CLASS_TRANSIENT;
            break;
        default: /* refused, reset, truncated body, DNS, TLS, HTTP/2 stream... */
            k = EMBED_KIND_CONNECTION;
            cls = EMBED_CLASS_TRANSIENT;
            break;
        }
    } else if (status >= 200 && status < 300) {
        k = EMBED_KIND_NONE;
        cls = EMBED_CLASS_OK;
    } else if (status == 408 || status == 409 || status == 424 || status == 425 || status == 429 ||
               status >= 500) {
        cls = EMBED_CLASS_TRANSIENT;
    } else if (status == 401 || status == 403 || embed_wrong_endpoint(status) ||
               embed_unknown_model(status, provider_message, provider_code)) {
        cls = EMBED_CLASS_FATAL;
    } else {
        cls = EMBED_CLASS_PERMANENT; /* 400, 413, 422, other client errors, 1xx */
    }
    if (kind)
        *kind = k;
    return cls;
}

int embed_wants_float_fallback(long status, const char *provider_message)
{
    return status == 400 && (embed_contains_ci(provider_message, "encoding_format") ||
                             embed_contains_ci(provider_message, "base64"));
}

const char *embed_class_name(embed_class cls)
{
    switch (cls) {
    case EMBED_CLASS_OK:
        return "ok";
    case EMBED_CLASS_TRANSIENT:
        return "transient";
    case EMBED_CLASS_PERMANENT:
        return "permanent";
    case EMBED_CLASS_FATAL:
        return "fatal";
    }
    return "transient";
}

const char *embed_kind_name(embed_kind kind)
{
    switch (kind) {
    case EMBED_KIND_NONE:
        return "";
    case EMBED_KIND_HTTP:
        return "http";
    case EMBED_KIND_TIMEOUT:
        return "timeout";
    case EMBED_KIND_CONNECTION:
        return "connection";
    case EMBED_KIND_MALFORMED:
        return "malformed";
    case EMBED_KIND_BODY_TOO_LARGE:
        return "body_too_large";
    case EMBED_KIND_DIMENSION:
        return "dimension";
    }
    return "";
}
