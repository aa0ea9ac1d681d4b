/*
 * embed_lua.c: module `ragops.embed`, the embeddings client seen from Lua.
 * client:embed(texts) yields until the provider answers and returns an
 * rg_vecbatch (vectors stay in C), or nil, a pt-BR message and an info
 * table whose "class" drives the Lua retry policy. A 400 rejecting base64
 * switches this client to "float" and retries once (not with
 * encoding_field = "none"). Every HTTP request carries an X-Request-Id
 * unique in the process ("rg-<8 hex>-<n>"); info.request_id is it,
 * info.provider_request_id the provider's own x-request-id answer (nil when
 * absent), and both end the message of a failure so a support ticket can
 * quote them. No message ever holds a secret (api_key, header values).
 * A success returns batch, nil, info ({ status, latency_ms, request ids }).
 * Both info tables carry info.ratelimit when the answer (2xx or not) had
 * OpenAI's x-ratelimit-* headers: { remaining_requests, remaining_tokens,
 * limit_requests, limit_tokens, reset_requests_ms, reset_tokens_ms }, only
 * the fields present (see rg_http_push_ratelimit); info.retry_after_ms of
 * a failure comes from retry-after-ms when valid, else Retry-After.
 * embed.decode_answer(body, count, dim) decodes an answer given as text (a
 * line of a Batch API output file) through the same strict decoder.
 *
 * embed.client{...} options (embed_conf.c reads them; a bad one raises):
 *   url            base URL: the endpoint is url + "/embeddings" (OpenAI)
 *   endpoint       full URL used as is (exactly one of url or endpoint)
 *   model          "model" of the body (required without body_fields)
 *   api_key        sent as "Authorization: Bearer <api_key>"
 *   headers        list of "Name: value" lines sent with every request (at
 *                  most 32, 8 KiB each, no CR/LF/NUL; Content-Type, Accept,
 *                  X-Request-Id and Content-Length are the engine's, and
 *                  Authorization too with api_key); every value is a secret:
 *                  scrubbed from messages, zeroed on free
 *   body_fields    JSON object members written verbatim first in the body
 *                  ('"model":"m","truncate":false'; at most 64 KiB); absent:
 *                  "model" and "dimensions" are built as for OpenAI
 *   dimensions     "dimensions" sent when > 0 (built members only); also
 *                  the default expected_dim
 *   inputs_key     "input" (default) | "inputs" | "texts"
 *   encoding       "base64" (default) | "float"
 *   encoding_field "always" (default: "encoding_format" always sent) |
 *                  "base64_only" (sent only for base64: Voyage) | "none"
 *                  (never sent; encoding is then "float", no fallback)
 *   answer         "data" (default: OpenAI {"data":[{"index","embedding"}],
 *                  "usage"}; prompt_tokens, or total_tokens when alone) |
 *                  "rows" (an array of vectors, row i = input i, at
 *                  rows_path: {} the root (TEI), {"embeddings"} (Ollama),
 *                  {"embeddings","float"} (Cohere))
 *   rows_path      with answer "rows" (required): list of keys, at most 8
 *   usage_path     with answer "rows": list of keys to the integer token
 *                  count (absent in the answer: no tokens)
 *   expected_dim   dimension every vector must have (kind "dimension")
 *   timeout_ms     per-request limit (default 60000)
 *   ca_file        CA certificates file for https (CURLOPT_CAINFO)
 *   proxy          proxy URL; "" = no proxy even with http_proxy/https_proxy
 *                  set; absent = libcurl's default (those variables); its
 *                  user:password is a secret like the header values
 */
#include "core/bridge.h"
#include "embed_conf.h"
#include "http/http.h"
#include "core/vecbatch.h"

#include <math.h>
#include <stdint.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EMBED_CLIENT_MT "ragops.embed.client"
#define EMBED_CONNECT_TIMEOUT_MS 10000L
#define EMBED_MAX_PROVIDER_MESSAGE 300
#define EMBED_REQUEST_ID_SIZE 40

/* The Lua userdata. */
typedef struct embed_client {
    embed_conf *conf; /* NULL after close */
} embed_client;

/* One client:embed call in flight. */
typedef struct embed_call {
    rg_async async;          /* the coroutine to resume */
    http_request *req;       /* the request in flight */
    embed_conf *conf;        /* settings (one reference held) */
    char **texts;            /* private copies of the inputs (valid UTF-8) */
    size_t *lens;            /* byte length of each text */
    int count;               /* number of texts */
    embed_encoding encoding; /* encoding of the request in flight */
    int fell_back;           /* 1 once retried with "float" */
    uint64_t started_ns;     /* uv_hrtime() when embed was called */
    embed_stream *stream;    /* decodes the 2xx answer of the request in flight as it arrives */
    char request_id[EMBED_REQUEST_ID_SIZE];           /* X-Request-Id of the request in flight */
    char provider_request_id[HTTP_MAX_REQUEST_ID + 1]; /* the provider's x-request-id, "" when absent */
} embed_call;

static void embed_call_free(embed_call *call)
{
    if (!call)
        return;
    for (int i = 0; i < call->count; i++)
        free(call->texts ? call->texts[i] : NULL);
    free(call->texts);
    free(call->lens);
    embed_stream_free(call->stream);
    embed_conf_release(call->conf);
    free(call);
}

/* ---------- request ids ---------- */

/* Writes a new request id into out: "rg-" + 8 hex fixed per process (so
 * processes of a scale-out run differ) + "-" + a counter. */
static void embed_next_request_id(char *out, size_t size)
{
    static uint32_t prefix;
    static unsigned long long counter;
    if (prefix == 0) {
        uint64_t z = uv_hrtime() ^ ((uint64_t)getpid() << 32) ^ 0x9e3779b97f4a7c15ULL;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        prefix = (uint32_t)(z ^ (z >> 31)) | 1u;
    }
    snprintf(out, size, "rg-%08x-%llu", (unsigned)prefix, ++counter);
}

/* ---------- messages ---------- */

/* Writes the pt-BR message of an answer saying the configuration is wrong:
 * the endpoint (without secrets), the status, what the provider said and
 * which setting to check. status 0: curl refused the URL itself. */
static void embed_fatal_message(const embed_conf *conf, long status, const char *provider, const char *code,
                                char *out, size_t size)
{
    char url[256];
    char said[EMBED_MAX_PROVIDER_MESSAGE + 4] = "";
    const char *hint = embed_fatal_hint_for(status, provider, code, conf->endpoint_as_is);
    embed_display_url(conf->url, url, sizeof url);
    if (provider)
        embed_conf_scrub(conf, provider, 1, said, sizeof said);
    if (status == 0)
        snprintf(out, size, "URL do provedor de embeddings inválida (%s); %s", url, hint);
    else if (said[0])
        snprintf(out, size, "POST %s respondeu HTTP %ld (%s); %s", url, status, said, hint);
    else
        snprintf(out, size, "POST %s respondeu HTTP %ld; %s", url, status, hint);
}

/* ---------- pushing results (run protected on the main state) ---------- */

/* Everything a result builder needs. */
typedef struct embed_result {
    embed_vectors *vectors; /* success: the parsed vectors */
    const char *message;    /* failure: pt-BR message */
    long status;            /* HTTP status or 0 */
    embed_class cls;        /* failure class */
    embed_kind kind;        /* failure kind */
    long retry_after_ms;    /* -1 when absent */
    http_ratelimit ratelimit; /* the answer's x-ratelimit-* headers (present 0: none, or no answer) */
    double latency_ms;      /* since client:embed was called */
    const char *request_id;          /* X-Request-Id sent, or NULL (never sent) */
    const char *provider_request_id; /* the provider's x-request-id, or NULL */
} embed_result;

/* Sets info.request_id and info.provider_request_id (table on top). */
static void embed_set_request_ids(lua_State *L, const embed_result *r)
{
    if (r->request_id) {
        lua_pushstring(L, r->request_id);
        lua_setfield(L, -2, "request_id");
    }
    if (r->provider_request_id) {
        lua_pushstring(L, r->provider_request_id);
        lua_setfield(L, -2, "provider_request_id");
    }
}

/* The fields of every info table: status, latency_ms, the request ids and
 * the provider's rate-limit headers (info.ratelimit, only when present). */
static void embed_set_common(lua_State *L, embed_result *r)
{
    lua_pushinteger(L, r->status);
    lua_setfield(L, -2, "status");
    lua_pushnumber(L, r->latency_ms);
    lua_setfield(L, -2, "latency_ms");
    embed_set_request_ids(L, r);
    rg_http_push_ratelimit(L, &r->ratelimit);
}

static int embed_build_success(lua_State *L, embed_result *r)
{
    /* The decoded floats become the batch's (no copy of ~400 KB per answer). */
    rg_vecbatch *batch = rg_vecbatch_push_adopt(L, &r->vectors->data, r->vectors->count, r->vectors->dim);
    batch->tokens = r->vectors->prompt_tokens;
    lua_pushnil(L);
    lua_createtable(L, 0, 4);
    embed_set_common(L, r);
    return 3;
}

static int embed_build_failure(lua_State *L, embed_result *r)
{
    lua_pushnil(L);
    lua_pushstring(L, r->message);
    lua_createtable(L, 0, 7);
    embed_set_common(L, r);
    lua_pushstring(L, embed_class_name(r->cls));
    lua_setfield(L, -2, "class");
    lua_pushstring(L, embed_kind_name(r->kind));
    lua_setfield(L, -2, "kind");
    if (r->retry_after_ms >= 0) {
        lua_pushnumber(L, (lua_Number)r->retry_after_ms);
        lua_setfield(L, -2, "retry_after_ms");
    }
    return 3;
}

/* Results of client:embed (see the file header); an interrupted call
 * returns nil, "interrompido", { class = "cancelled", kind = "cancelled" }. */
static int embed_push_result(lua_State *L, void *arg)
{
    embed_result *r = arg;
    if (r == NULL) {
        rg_push_interrupted(L);
        lua_createtable(L, 0, 3);
        lua_pushinteger(L, 0);
        lua_setfield(L, -2, "status");
        lua_pushliteral(L, "cancelled");
        lua_setfield(L, -2, "class");
        lua_pushliteral(L, "cancelled");
        lua_setfield(L, -2, "kind");
        return 3;
    }
    return r->vectors ? embed_build_success(L, r) : embed_build_failure(L, r);
}

static void embed_call_cancel(rg_async *op)
{
    embed_call *call = RG_CONTAINER_OF(op, embed_call, async);
    http_request_cancel(call->req);
    embed_call_free(call);
}

/* ---------- requests ---------- */

static void embed_on_done(http_request *req, const http_response *resp, void *data);

/* http on_body: a 2xx answer goes to the call's stream decoder as it arrives. */
static void embed_on_body(const char *bytes, size_t n, void *stream)
{
    embed_stream_feed(stream, bytes, n);
}

/* A new decoder for the answer of the request about to start (a float
 * fallback starts a new answer). 0, or -1 when memory is short. */
static int embed_call_stream(embed_call *call)
{
    const embed_conf *conf = call->conf;
    embed_stream_free(call->stream);
    call->stream = conf->rows ? embed_stream_new_rows(call->count, conf->expected_dim, &conf->answer)
                              : embed_stream_new(call->count, conf->expected_dim);
    return call->stream ? 0 : -1;
}

/* The request's header lines (NULL-terminated) into headers, which has room
 * for EMBED_MAX_HEADERS + 5; id_header receives the X-Request-Id line. */
static void embed_call_headers(embed_call *call, const char **headers, char *id_header, size_t id_size)
{
    const embed_conf *conf = call->conf;
    int nh = 0;
    headers[nh++] = "Content-Type: application/json";
    headers[nh++] = "Accept: application/json";
    if (conf->auth_header)
        headers[nh++] = conf->auth_header;
    for (int i = 0; i < conf->header_count; i++)
        headers[nh++] = conf->headers[i];
    embed_next_request_id(call->request_id, sizeof call->request_id);
    snprintf(id_header, id_size, "X-Request-Id: %s", call->request_id);
    headers[nh++] = id_header;
    headers[nh] = NULL;
}

/* Builds the body for call->encoding and starts the request. Returns 0, or
 * -1 with a pt-BR reason in err. */
static int embed_call_start(embed_call *call, char *err, size_t err_size)
{
    const char *headers[EMBED_MAX_HEADERS + 5];
    char id_header[EMBED_REQUEST_ID_SIZE + sizeof "X-Request-Id: "];
    const embed_conf *conf = call->conf;
    http_request_opts opts;
    size_t len = 0;
    char *body = embed_build_body(&conf->request, (const char *const *)call->texts, call->lens, call->count,
                                  call->encoding, &len, err, err_size);
    if (!body)
        return -1;
    if (embed_call_stream(call) != 0) {
        free(body);
        snprintf(err, err_size, "sem memória para a requisição de embeddings");
        return -1;
    }
    embed_call_headers(call, headers, id_header, sizeof id_header);
    memset(&opts, 0, sizeof opts);
    opts.method = "POST";
    opts.url = conf->url;
    opts.headers = headers;
    opts.body = body;
    opts.body_len = len;
    opts.timeout_ms = conf->timeout_ms;
    opts.on_body = embed_on_body;
    opts.on_body_data = call->stream;
    opts.max_body = embed_expected_body_max(call->count, conf->expected_dim);
    opts.connect_timeout_ms = EMBED_CONNECT_TIMEOUT_MS < conf->timeout_ms ? EMBED_CONNECT_TIMEOUT_MS : conf->timeout_ms;
    opts.ca_file = conf->ca_file;
    opts.proxy = conf->proxy;
    call->req = http_request_start(rg_http_shared_client(rg_main_state()), &opts, embed_on_done, call);
    free(body);
    if (!call->req) {
        snprintf(err, err_size, "não foi possível iniciar a requisição ao provedor de embeddings");
        return -1;
    }
    return 0;
}

/* Resumes the call's coroutine with the outcome (r->vectors set on
 * success; a failure's message gets the request ids) and frees the call. */
static void embed_call_finish(embed_call *call, embed_result *r)
{
    char message[1400], scrubbed[1400];
    r->latency_ms = (double)(uv_hrtime() - call->started_ns) / 1e6;
    r->request_id = call->request_id;
    r->provider_request_id = call->provider_request_id[0] ? call->provider_request_id : NULL;
    if (!r->vectors) {
        snprintf(message, sizeof message, "%s (pedido %s%s%s)", r->message, r->request_id,
                 r->provider_request_id ? ", id no provedor " : "",
                 r->provider_request_id ? r->provider_request_id : "");
        embed_conf_scrub(call->conf, message, 0, scrubbed, sizeof scrubbed); /* the last guard */
        r->message = scrubbed;
    }
    rg_async_complete(&call->async, r);
    embed_call_free(call);
}

/* Keeps the provider's request id of resp in call, without the secrets
 * when the provider echoed the request's headers in it. */
static void embed_keep_request_id(embed_call *call, const http_response *resp)
{
    snprintf(call->provider_request_id, sizeof call->provider_request_id, "%s",
             resp->request_id ? resp->request_id : "");
    if (embed_conf_has_secret(call->conf, call->provider_request_id)) {
        char id[HTTP_MAX_REQUEST_ID + 1];
        memcpy(id, call->provider_request_id, sizeof id);
        embed_conf_scrub(call->conf, id, 1, call->provider_request_id, sizeof call->provider_request_id);
    }
}

/* An answer cut short (past the expected size) or a transfer that failed:
 * fills r's class, kind and message and returns 1; 0 for a whole answer. */
static int embed_transfer_failed(embed_call *call, const http_response *resp, embed_result *r, char *message,
                                 size_t size)
{
    if (resp->body_too_large) {
        r->cls = EMBED_CLASS_FATAL;
        r->kind = EMBED_KIND_BODY_TOO_LARGE;
        snprintf(message, size,
                 "a resposta do provedor de embeddings passou de %zu bytes, o máximo esperado para %d "
                 "entrada(s) de dimensão %d; a transferência foi interrompida (provedor com defeito ou "
                 "resposta hostil: confira provider.url)",
                 resp->max_body, call->count, call->conf->expected_dim);
        return 1;
    }
    if (resp->curl_code == CURLE_OK)
        return 0;
    if (resp->curl_code == CURLE_SSL_CACERT_BADFILE)
        snprintf(message, size,
                 "o arquivo de certificados de CA %s não pôde ser lido (inexistente, ilegível ou inválido; "
                 "curl %d); confira provider.ca_file", call->conf->ca_file ? call->conf->ca_file : "do sistema",
                 (int)resp->curl_code);
    else if (r->cls == EMBED_CLASS_FATAL)
        embed_fatal_message(call->conf, 0, NULL, NULL, message, size);
    else if (r->kind == EMBED_KIND_TIMEOUT)
        snprintf(message, size, "tempo esgotado aguardando o provedor de embeddings (limite de %ld ms)",
                 call->conf->timeout_ms);
    else
        snprintf(message, size, "falha de conexão com o provedor de embeddings: %s (curl %d)",
                 http_curl_error_ptbr(resp->curl_code), (int)resp->curl_code);
    return 1;
}

/* A 2xx answer: the vectors decoded while it arrived, or why not. */
static void embed_on_vectors(embed_call *call, embed_result *r, char *message, size_t size)
{
    embed_vectors vectors;
    if (embed_stream_finish(call->stream, &vectors, message, size) != 0) {
        r->cls = EMBED_CLASS_TRANSIENT;
        r->kind = embed_stream_failure_kind(call->stream);
        embed_call_finish(call, r);
        return;
    }
    r->vectors = &vectors;
    embed_call_finish(call, r);
    embed_vectors_free(&vectors);
}

/* A non-2xx answer: classified by status and the provider's message; a
 * server that refuses base64 is asked again with floats (once). */
static void embed_on_http_error(embed_call *call, const http_response *resp, embed_result *r, char *message,
                                size_t size)
{
    char *code = NULL;
    char *provider = embed_parse_error_message(resp->body, resp->body_len, &code);
    r->cls = embed_classify(resp->curl_code, resp->status, provider, code, &r->kind);
    if (!call->fell_back && call->encoding == EMBED_ENCODING_BASE64 && call->conf->fallback_allowed &&
        embed_wants_float_fallback(resp->status, provider)) {
        char err[256];
        call->fell_back = 1;
        call->encoding = EMBED_ENCODING_FLOAT;
        call->conf->encoding = EMBED_ENCODING_FLOAT; /* remembered by this client */
        free(provider);
        free(code);
        if (embed_call_start(call, err, sizeof err) == 0)
            return;
        r->cls = EMBED_CLASS_TRANSIENT;
        r->kind = EMBED_KIND_CONNECTION;
        snprintf(message, size, "%s", err);
        embed_call_finish(call, r);
        return;
    }
    if (r->cls == EMBED_CLASS_FATAL) {
        embed_fatal_message(call->conf, resp->status, provider, code, message, size);
    } else if (provider) {
        char scrubbed[EMBED_MAX_PROVIDER_MESSAGE + 4];
        embed_conf_scrub(call->conf, provider, 1, scrubbed, sizeof scrubbed);
        snprintf(message, size, "provedor de embeddings respondeu HTTP %ld: %s", resp->status, scrubbed);
    } else {
        snprintf(message, size, "provedor de embeddings respondeu HTTP %ld", resp->status);
    }
    free(provider);
    free(code);
    embed_call_finish(call, r);
}

static void embed_on_done(http_request *req, const http_response *resp, void *data)
{
    embed_call *call = data;
    embed_result r;
    char message[1024];

    /* resp->aborted (the client closing) ends up here as a connection
     * failure; nothing waits by then, so finishing only frees the call. */
    memset(&r, 0, sizeof r);
    r.status = resp->status;
    r.retry_after_ms = resp->retry_after_ms;
    r.ratelimit = resp->ratelimit;
    embed_keep_request_id(call, resp);
    r.message = message;
    r.cls = embed_classify(resp->curl_code, resp->status, NULL, NULL, &r.kind);
    if (embed_transfer_failed(call, resp, &r, message, sizeof message))
        embed_call_finish(call, &r);
    else if (r.cls == EMBED_CLASS_OK)
        embed_on_vectors(call, &r, message, sizeof message);
    else
        embed_on_http_error(call, resp, &r, message, sizeof message);
}

/* ---------- Lua API ---------- */

static embed_client *embed_check_open(lua_State *L)
{
    embed_client *c = luaL_checkudata(L, 1, EMBED_CLIENT_MT);
    if (!c->conf)
        luaL_error(L, "cliente de embeddings já foi fechado");
    return c;
}

/* client:embed(texts) -> batch, nil, info | nil, err, info */
static int embed_client_embed(lua_State *L)
{
    embed_client *c = embed_check_open(L);
    embed_call *call;
    int count;
    char err[256];

    luaL_checktype(L, 2, LUA_TTABLE);
    count = (int)lua_objlen(L, 2);
    if (count <= 0)
        return luaL_argerror(L, 2, "lista de textos vazia");
    for (int i = 1; i <= count; i++) {
        lua_rawgeti(L, 2, i);
        if (lua_type(L, -1) != LUA_TSTRING)
            return luaL_argerror(L, 2, lua_pushfstring(L, "texto %d não é uma string", i));
        lua_pop(L, 1);
    }
    rg_check_coroutine(L, "client:embed");

    call = calloc(1, sizeof *call);
    if (!call)
        return luaL_error(L, "sem memória");
    rg_async_init(&call->async);
    call->conf = c->conf;
    call->conf->refs++;
    call->encoding = c->conf->encoding;
    call->started_ns = uv_hrtime();
    call->texts = calloc((size_t)count, sizeof *call->texts);
    call->lens = calloc((size_t)count, sizeof *call->lens);
    if (!call->texts || !call->lens)
        goto oom;
    call->count = count;
    for (int i = 0; i < count; i++) {
        size_t len;
        const char *s;
        char *fixed;
        lua_rawgeti(L, 2, i + 1);
        s = lua_tolstring(L, -1, &len);
        /* invalid UTF-8 (e.g. Latin-1 sources) is sent with U+FFFD instead */
        fixed = embed_utf8_sanitize(s, len, &call->lens[i]);
        if (fixed) {
            call->texts[i] = fixed;
        } else {
            if (call->lens[i] != len)
                goto oom_pop;
            call->texts[i] = malloc(len + 1);
            if (!call->texts[i])
                goto oom_pop;
            memcpy(call->texts[i], s, len);
            call->texts[i][len] = '\0';
        }
        lua_pop(L, 1);
    }
    rg_http_shared_client(L); /* create it here, where a Lua error is allowed */
    if (embed_call_start(call, err, sizeof err) != 0) {
        embed_result r;
        memset(&r, 0, sizeof r);
        r.message = err;
        r.cls = EMBED_CLASS_PERMANENT;
        r.kind = EMBED_KIND_HTTP;
        r.retry_after_ms = -1;
        r.latency_ms = (double)(uv_hrtime() - call->started_ns) / 1e6;
        embed_call_free(call);
        return embed_build_failure(L, &r);
    }
    return rg_async_suspend(L, &call->async, embed_push_result, embed_call_cancel);

oom_pop:
    lua_pop(L, 1);
oom:
    embed_call_free(call);
    return luaL_error(L, "sem memória para o lote de embeddings");
}

/* client:encoding() -> "base64" | "float" (after a fallback) */
static int embed_client_encoding(lua_State *L)
{
    embed_client *c = embed_check_open(L);
    lua_pushstring(L, c->conf->encoding == EMBED_ENCODING_FLOAT ? "float" : "base64");
    return 1;
}

/* client:close(): calls in flight finish normally; later calls raise. */
static int embed_client_close(lua_State *L)
{
    embed_client *c = luaL_checkudata(L, 1, EMBED_CLIENT_MT);
    embed_conf_release(c->conf);
    c->conf = NULL;
    return 0;
}

static int embed_client_tostring(lua_State *L)
{
    embed_client *c = luaL_checkudata(L, 1, EMBED_CLIENT_MT);
    char url[256];
    if (c->conf && c->conf->model) {
        lua_pushfstring(L, "ragops.embed.client(%s)", c->conf->model);
    } else if (c->conf) {
        embed_display_url(c->conf->url, url, sizeof url);
        lua_pushfstring(L, "ragops.embed.client(%s)", url);
    } else {
        lua_pushliteral(L, "ragops.embed.client(fechado)");
    }
    return 1;
}

/* embed.client{...}: the options are listed in this file's header. */
static int embed_new_client(lua_State *L)
{
    embed_client *c;
    embed_conf *conf;

    luaL_checktype(L, 1, LUA_TTABLE);
    c = lua_newuserdata(L, sizeof *c);
    c->conf = NULL;
    luaL_getmetatable(L, EMBED_CLIENT_MT);
    lua_setmetatable(L, -2);
    conf = calloc(1, sizeof *conf);
    if (!conf)
        return luaL_error(L, "sem memória");
    conf->refs = 1;
    c->conf = conf; /* from here __gc releases it even if reading the options raises */
    embed_conf_read(L, conf);
    return 1;
}

/* Most inputs of one answer embed.decode_answer accepts (OpenAI takes at
 * most 2048 inputs per request). */
#define EMBED_DECODE_MAX_COUNT 65536

/* embed.decode_answer(body, count, dim) -> batch | nil, err, kind: the JSON
 * text of an OpenAI embeddings answer (a line of a Batch API output file
 * carries it as response.body) through the client's strict decoder: count
 * vectors of dimension dim (0: any, all equal), finite values, indexes in
 * range; usage tokens become batch:tokens(). kind is "malformed" or
 * "dimension". */
static int embed_decode_answer(lua_State *L)
{
    size_t len;
    const char *body = luaL_checklstring(L, 1, &len);
    lua_Integer count = luaL_checkinteger(L, 2);
    lua_Integer dim = luaL_optinteger(L, 3, 0);
    embed_stream *s;
    embed_vectors vectors;
    char message[512];
    rg_vecbatch *batch;

    luaL_argcheck(L, count >= 1 && count <= EMBED_DECODE_MAX_COUNT, 2, "quantidade fora de 1..65536");
    luaL_argcheck(L, dim >= 0 && dim <= EMBED_BODY_UNKNOWN_DIM, 3, "dimensão fora de 0..16000");
    s = embed_stream_new((int)count, (int)dim);
    if (!s)
        return luaL_error(L, "sem memória para decodificar a resposta de embeddings");
    embed_stream_feed(s, body, len);
    if (embed_stream_finish(s, &vectors, message, sizeof message) != 0) {
        embed_kind kind = embed_stream_failure_kind(s);
        embed_stream_free(s);
        lua_pushnil(L);
        lua_pushstring(L, message);
        lua_pushstring(L, embed_kind_name(kind));
        return 3;
    }
    embed_stream_free(s);
    batch = rg_vecbatch_push_adopt(L, &vectors.data, vectors.count, vectors.dim);
    batch->tokens = vectors.prompt_tokens;
    embed_vectors_free(&vectors);
    return 1;
}

int luaopen_ragops_embed(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"embed", embed_client_embed},
        {"encoding", embed_client_encoding},
        {"close", embed_client_close},
        {NULL, NULL},
    };
    static const luaL_Reg metamethods[] = {
        {"__gc", embed_client_close},
        {"__tostring", embed_client_tostring},
        {NULL, NULL},
    };
    static const luaL_Reg functions[] = {
        {"client", embed_new_client},
        {"decode_answer", embed_decode_answer},
        {NULL, NULL},
    };
    rg_vecbatch_register(L); /* batches get their metatable even without ragops.core */
    rg_register_class(L, EMBED_CLIENT_MT, methods, metamethods);
    lua_newtable(L);
    luaL_register(L, NULL, functions);
    return 1;
}
