/*
 * http_lua.c: module `ragops.http` (http.request, a yielding HTTP call used
 * for alert webhooks and provider APIs; http.upload, a multipart/form-data
 * POST of a file streamed from disk; http.download, a 2xx body streamed into
 * a new file) and the http_client shared with ragops.embed: one per
 * Lua state, created lazily on uv_default_loop() and closed by the __gc of a
 * sentinel userdata in the registry, i.e. when the Lua state closes.
 * Failures return nil, a pt-BR message and a kind: "body_too_large",
 * "timeout", "transport", "start"; http.upload also "file" and
 * "file_too_large"; http.download also "exists" and "file".
 */
#include "core/bridge.h"
#include "http.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define HTTP_SENTINEL_KEY "ragops.http.shared_client"
#define HTTP_SENTINEL_MT "ragops.http.sentinel"
#define HTTP_DEFAULT_TIMEOUT_MS 30000L
#define HTTP_DEFAULT_CONNECT_TIMEOUT_MS 10000L
/* Whole-transfer limit of http.upload and http.download by default. */
#define HTTP_FILE_DEFAULT_TIMEOUT_MS (30L * 60 * 1000)
/* Largest file http.upload sends by default (the Batch API's input limit). */
#define HTTP_UPLOAD_DEFAULT_MAX_FILE ((long)200 * 1024 * 1024)
/* Largest body http.download writes by default. */
#define HTTP_DOWNLOAD_DEFAULT_MAX ((long)1024 * 1024 * 1024)
/* Most text fields of http.upload. */
#define HTTP_UPLOAD_MAX_FIELDS 32

/* Registry-held owner of the shared client. */
typedef struct http_sentinel {
    http_client *hc; /* the shared client, NULL once closed */
} http_sentinel;

/* One http.request, http.upload or http.download call waiting for its answer. */
typedef struct http_lua_call {
    rg_async async;    /* the coroutine to resume */
    http_request *req; /* the request in flight */
    int fd;            /* download: the new file being written, -1 once closed */
    int write_errno;   /* download: errno of the first failed write, 0 if none */
    size_t written;    /* download: bytes written to fd */
    char *path;        /* download: the file's path (removed unless complete), else NULL */
} http_lua_call;

/* What a finished http.download hands its push function. */
typedef struct http_download_outcome {
    const http_response *resp; /* the answer */
    const http_lua_call *call; /* the call (path, bytes written) */
    int file_errno;            /* errno of a failed write/fsync/close of a 2xx body, 0 if none */
} http_download_outcome;

static int http_sentinel_gc(lua_State *L)
{
    http_sentinel *s = luaL_checkudata(L, 1, HTTP_SENTINEL_MT);
    if (s->hc) {
        http_client_close(s->hc); /* pending calls complete as aborted */
        s->hc = NULL;
    }
    return 0;
}

http_client *rg_http_shared_client(lua_State *L)
{
    http_sentinel *s;
    lua_getfield(L, LUA_REGISTRYINDEX, HTTP_SENTINEL_KEY);
    s = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (s && s->hc)
        return s->hc;
    s = lua_newuserdata(L, sizeof *s);
    s->hc = NULL;
    if (luaL_newmetatable(L, HTTP_SENTINEL_MT)) {
        lua_pushcfunction(L, http_sentinel_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    s->hc = http_client_new(uv_default_loop());
    if (!s->hc) {
        lua_pop(L, 1);
        luaL_error(L, "não foi possível iniciar o cliente HTTP (libcurl/libuv)");
        return NULL;
    }
    lua_setfield(L, LUA_REGISTRYINDEX, HTTP_SENTINEL_KEY);
    return s->hc;
}

/* nil, a pt-BR message and a kind for a transfer that failed. */
static int http_push_failure(lua_State *L, const http_response *resp)
{
    lua_pushnil(L);
    if (resp->body_too_large) {
        lua_pushfstring(L, "requisição HTTP: resposta maior que o limite de %f bytes; transferência interrompida",
                        (lua_Number)resp->max_body);
        lua_pushliteral(L, "body_too_large");
    } else if (resp->curl_code == CURLE_OPERATION_TIMEDOUT) {
        lua_pushliteral(L, "requisição HTTP: tempo esgotado");
        lua_pushliteral(L, "timeout");
    } else {
        lua_pushfstring(L, "requisição HTTP falhou: %s (curl %d)", http_curl_error_ptbr(resp->curl_code),
                        (int)resp->curl_code);
        lua_pushliteral(L, "transport");
    }
    return 3;
}

/* Sets t[name] = value (table on top) when value >= 0. */
static void http_set_known(lua_State *L, const char *name, long value)
{
    if (value < 0)
        return;
    lua_pushnumber(L, (lua_Number)value);
    lua_setfield(L, -2, name);
}

void rg_http_push_ratelimit(lua_State *L, const http_ratelimit *rl)
{
    if (!rl->present)
        return;
    lua_createtable(L, 0, 6);
    http_set_known(L, "remaining_requests", rl->remaining_requests);
    http_set_known(L, "remaining_tokens", rl->remaining_tokens);
    http_set_known(L, "limit_requests", rl->limit_requests);
    http_set_known(L, "limit_tokens", rl->limit_tokens);
    http_set_known(L, "reset_requests_ms", rl->reset_requests_ms);
    http_set_known(L, "reset_tokens_ms", rl->reset_tokens_ms);
    lua_setfield(L, -2, "ratelimit");
}

/* Results of http.request and http.upload: { status, body, retry_after_ms,
 * ratelimit } (see rg_http_push_ratelimit), or nil, err, kind (nil,
 * "interrompido" when cancelled). */
static int http_push_response(lua_State *L, void *arg)
{
    const http_response *resp = arg;
    if (resp == NULL)
        return rg_push_interrupted(L);
    if (resp->curl_code != CURLE_OK)
        return http_push_failure(L, resp);
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, resp->status);
    lua_setfield(L, -2, "status");
    lua_pushlstring(L, resp->body, resp->body_len);
    lua_setfield(L, -2, "body");
    if (resp->retry_after_ms >= 0) {
        lua_pushnumber(L, (lua_Number)resp->retry_after_ms);
        lua_setfield(L, -2, "retry_after_ms");
    }
    rg_http_push_ratelimit(L, &resp->ratelimit);
    return 1;
}

/* Closes a download's file (when open) and removes it; frees the call. */
static void http_call_free(http_lua_call *call)
{
    if (call->fd >= 0)
        close(call->fd);
    if (call->path)
        unlink(call->path);
    free(call->path);
    free(call);
}

static void http_lua_cancel(rg_async *op)
{
    http_lua_call *call = RG_CONTAINER_OF(op, http_lua_call, async);
    http_request_cancel(call->req);
    http_call_free(call);
}

/* Also reached with resp->aborted when the client closes; by then nothing
 * waits (the bridge cancels pending calls first) and completing is a no-op. */
static void http_lua_done(http_request *req, const http_response *resp, void *data)
{
    http_lua_call *call = data;
    rg_async_complete(&call->async, (void *)resp);
    http_call_free(call);
}

/* Reads an optional non-negative integer field of the table at 1. */
static long http_opt_nonneg(lua_State *L, const char *field, long fallback)
{
    long v;
    if (!rg_opt_field(L, 1, field))
        return fallback;
    if (!lua_isnumber(L, -1) || lua_tonumber(L, -1) < 0)
        luaL_error(L, "ragops.http: \"%s\" deve ser um número não negativo", field);
    v = (long)lua_tonumber(L, -1);
    lua_pop(L, 1);
    return v;
}

/* The "headers" field (name = value) of the table at 1 as NULL-terminated
 * "Name: value" lines, anchored on the stack (a table of lines and a
 * userdata array: a Lua error cannot leak them); NULL without headers. */
static const char **http_lua_headers(lua_State *L)
{
    const char **headers = NULL;
    int nheaders = 0;
    lua_getfield(L, 1, "headers");
    if (!lua_isnil(L, -1)) {
        int idx = lua_gettop(L);
        int cap = 0;
        int lines;
        if (!lua_istable(L, idx))
            {
            luaL_argerror(L, 1, "campo \"headers\" deve ser uma tabela nome = valor");
            return NULL; /* not reached */
        }
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            cap++;
            lua_pop(L, 1);
        }
        /* lines are anchored in a table, the array in a userdata: a Lua
         * error cannot leak either (curl copies the lines at start) */
        lua_createtable(L, cap, 0);
        lines = lua_gettop(L);
        headers = lua_newuserdata(L, sizeof(char *) * (size_t)(cap + 1));
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            const char *name, *value;
            if (lua_type(L, -2) != LUA_TSTRING || !lua_isstring(L, -1))
                {
                luaL_argerror(L, 1, "cabeçalhos devem ser pares texto = texto");
                return NULL; /* not reached */
            }
            name = lua_tostring(L, -2);
            value = lua_tostring(L, -1);
            if (strpbrk(name, "\r\n:") || strpbrk(value, "\r\n") || !*name)
                {
                luaL_argerror(L, 1, "cabeçalho com nome vazio ou caracteres proibidos");
                return NULL; /* not reached */
            }
            lua_pushfstring(L, "%s: %s", name, value);
            headers[nheaders++] = lua_tostring(L, -1);
            lua_rawseti(L, lines, nheaders);
            lua_pop(L, 1);
        }
        headers[nheaders] = NULL;
    }
    return headers;
}

/* An optional text field of the table at 1, left on the stack (alive during
 * the call); NULL when absent. */
static const char *http_opt_text(lua_State *L, const char *field)
{
    lua_getfield(L, 1, field);
    if (lua_isnil(L, -1))
        return NULL;
    if (lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "ragops.http: \"%s\" deve ser texto", field);
    return lua_tostring(L, -1);
}

/* Reads the options every call shares from the table at 1 into opts: url,
 * headers, timeout_ms, connect_timeout_ms, ca_file and proxy (strings stay
 * on the stack, alive during the call). */
static void http_lua_common_opts(lua_State *L, http_request_opts *opts, long default_timeout_ms)
{
    lua_getfield(L, 1, "url");
    if (!lua_isstring(L, -1))
        luaL_argerror(L, 1, "campo \"url\" (texto) é obrigatório");
    opts->url = lua_tostring(L, -1);
    opts->timeout_ms = http_opt_nonneg(L, "timeout_ms", default_timeout_ms);
    opts->connect_timeout_ms = http_opt_nonneg(L, "connect_timeout_ms", HTTP_DEFAULT_CONNECT_TIMEOUT_MS);
    opts->ca_file = http_opt_text(L, "ca_file");
    opts->proxy = http_opt_text(L, "proxy");
    opts->headers = http_lua_headers(L);
}

/* Starts opts on the shared client for call (malloc'd; a download's file
 * open) and yields; done completes it, push builds the results. When it
 * cannot start, frees call (removing a download's file) and returns
 * nil, err, "start". */
static int http_lua_start(lua_State *L, http_lua_call *call, const http_request_opts *opts, rg_push_fn push,
                          http_done_cb done)
{
    http_client *hc = rg_http_shared_client(L);
    rg_async_init(&call->async);
    call->req = http_request_start(hc, opts, done, call);
    if (!call->req) {
        http_call_free(call);
        lua_pushnil(L);
        lua_pushliteral(L, "requisição HTTP não pôde ser iniciada (URL inválida ou sem memória)");
        lua_pushliteral(L, "start");
        return 3;
    }
    return rg_async_suspend(L, &call->async, push, http_lua_cancel);
}

/* A new call without a file, after creating the shared client (both may
 * raise: nothing to free yet). */
static http_lua_call *http_call_new(lua_State *L)
{
    http_lua_call *call;
    rg_http_shared_client(L);
    call = calloc(1, sizeof *call);
    if (!call)
        luaL_error(L, "sem memória");
    call->fd = -1;
    return call;
}

/* http.request{ method=, url=, headers={name=value}, body=, timeout_ms=, connect_timeout_ms=,
 * max_body_bytes= (most bytes of a 2xx answer, default HTTP_DEFAULT_MAX_BODY), ca_file=,
 * proxy= (as http_request_opts) } */
static int http_lua_request(lua_State *L)
{
    http_request_opts opts;

    memset(&opts, 0, sizeof opts);
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    rg_check_coroutine(L, "http.request");

    http_lua_common_opts(L, &opts, HTTP_DEFAULT_TIMEOUT_MS);
    lua_getfield(L, 1, "method");
    if (!lua_isnil(L, -1) && !lua_isstring(L, -1))
        return luaL_argerror(L, 1, "campo \"method\" deve ser texto");
    opts.method = lua_tostring(L, -1);
    lua_getfield(L, 1, "body");
    if (!lua_isnil(L, -1) && !lua_isstring(L, -1))
        return luaL_argerror(L, 1, "campo \"body\" deve ser texto");
    opts.body = lua_tolstring(L, -1, &opts.body_len);
    opts.max_body = (size_t)http_opt_nonneg(L, "max_body_bytes", 0);
    return http_lua_start(L, http_call_new(L), &opts, http_push_response, http_lua_done);
}

/* ---------- http.upload ---------- */

/* The "fields" table (name = text) of the table at 1 as mime fields,
 * anchored on the stack in a userdata; *n gets their number. */
static http_mime_field *http_upload_fields(lua_State *L, size_t *n)
{
    http_mime_field *fields;
    int idx;
    *n = 0;
    lua_getfield(L, 1, "fields");
    if (lua_isnil(L, -1))
        return NULL;
    if (!lua_istable(L, -1))
        luaL_argerror(L, 1, "campo \"fields\" deve ser uma tabela nome = texto");
    idx = lua_gettop(L);
    fields = lua_newuserdata(L, sizeof *fields * HTTP_UPLOAD_MAX_FIELDS);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        size_t len;
        if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
            luaL_argerror(L, 1, "campos do formulário devem ser pares texto = texto");
        if (*n == HTTP_UPLOAD_MAX_FIELDS)
            luaL_argerror(L, 1, "campos do formulário demais (no máximo 32)");
        fields[*n].name = lua_tostring(L, -2);
        fields[*n].value = lua_tolstring(L, -1, &len);
        if (strlen(fields[*n].value) != len || !*fields[*n].name)
            luaL_argerror(L, 1, "campo do formulário com nome vazio ou byte nulo");
        (*n)++;
        lua_pop(L, 1); /* keys and values stay alive in the fields table */
    }
    return fields;
}

/* nil, message, kind when path is not a readable regular file of at most
 * max_bytes; 0 (nothing pushed) when it is. */
static int http_upload_check_file(lua_State *L, const char *path, long max_bytes)
{
    struct stat st;
    lua_pushnil(L);
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode) || access(path, R_OK) != 0) {
        lua_pushfstring(L, "envio de arquivo: %s não é um arquivo regular legível", path);
        lua_pushliteral(L, "file");
        return 3;
    }
    if (st.st_size > (off_t)max_bytes) {
        lua_pushfstring(L, "envio de arquivo: %s tem %f bytes, acima do limite de %f bytes", path,
                        (lua_Number)st.st_size, (lua_Number)max_bytes);
        lua_pushliteral(L, "file_too_large");
        return 3;
    }
    lua_pop(L, 1);
    return 0;
}

/* http.upload{ url=, headers=, fields={name=text}, file_field= (default "file"), path=,
 * filename=, content_type=, max_file_bytes= (default 200 MiB), timeout_ms= (default 30 min),
 * connect_timeout_ms=, max_body_bytes= (of the answer), ca_file=, proxy= } -> as http.request.
 * A POST of multipart/form-data: the text fields, then the file read from disk while sent. */
static int http_lua_upload(lua_State *L)
{
    http_request_opts opts;
    http_mime mime;
    long max_file;

    memset(&opts, 0, sizeof opts);
    memset(&mime, 0, sizeof mime);
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    rg_check_coroutine(L, "http.upload");

    http_lua_common_opts(L, &opts, HTTP_FILE_DEFAULT_TIMEOUT_MS);
    opts.max_body = (size_t)http_opt_nonneg(L, "max_body_bytes", 0);
    mime.fields = http_upload_fields(L, &mime.nfields);
    mime.file_field = http_opt_text(L, "file_field");
    if (!mime.file_field)
        mime.file_field = "file";
    mime.file_path = http_opt_text(L, "path");
    if (!mime.file_path)
        return luaL_argerror(L, 1, "campo \"path\" (texto) é obrigatório");
    mime.file_name = http_opt_text(L, "filename");
    mime.content_type = http_opt_text(L, "content_type");
    max_file = http_opt_nonneg(L, "max_file_bytes", HTTP_UPLOAD_DEFAULT_MAX_FILE);
    if (http_upload_check_file(L, mime.file_path, max_file) != 0)
        return 3;
    opts.mime = &mime; /* curl copies every string of it at start */
    return http_lua_start(L, http_call_new(L), &opts, http_push_response, http_lua_done);
}

/* ---------- http.download ---------- */

/* on_body of a download: appends the bytes to the file; after a failed
 * write the rest is ignored (the call then fails with kind "file"). */
static void http_download_write(const char *bytes, size_t n, void *data)
{
    http_lua_call *call = data;
    while (n > 0 && call->write_errno == 0) {
        ssize_t put = write(call->fd, bytes, n);
        if (put < 0 && errno == EINTR)
            continue;
        if (put <= 0) {
            call->write_errno = put < 0 ? errno : EIO;
            return;
        }
        bytes += put;
        n -= (size_t)put;
        call->written += (size_t)put;
    }
}

/* Results of http.download: { status, bytes, ratelimit } with the file
 * complete on disk; { status, body } for a non-2xx answer (no file); nil,
 * err, kind. */
static int http_push_download(lua_State *L, void *arg)
{
    const http_download_outcome *out = arg;
    if (out == NULL)
        return rg_push_interrupted(L);
    if (out->resp->curl_code != CURLE_OK)
        return http_push_failure(L, out->resp);
    if (out->file_errno != 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "download: falha ao gravar %s (%s)", out->call->path, strerror(out->file_errno));
        lua_pushliteral(L, "file");
        return 3;
    }
    if (out->resp->status < 200 || out->resp->status >= 300)
        return http_push_response(L, (void *)out->resp);
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, out->resp->status);
    lua_setfield(L, -2, "status");
    lua_pushnumber(L, (lua_Number)out->call->written);
    lua_setfield(L, -2, "bytes");
    rg_http_push_ratelimit(L, &out->resp->ratelimit);
    return 1;
}

/* A download finished: a whole 2xx body is flushed to disk and kept (the
 * path is forgotten, so freeing the call does not remove it); anything else
 * leaves no file. */
static void http_download_done(http_request *req, const http_response *resp, void *data)
{
    http_lua_call *call = data;
    http_download_outcome out = {resp, call, 0};
    int whole = resp->curl_code == CURLE_OK && resp->status >= 200 && resp->status < 300;
    (void)req;
    if (whole) {
        out.file_errno = call->write_errno;
        if (out.file_errno == 0 && fsync(call->fd) != 0)
            out.file_errno = errno;
        if (close(call->fd) != 0 && out.file_errno == 0)
            out.file_errno = errno;
        call->fd = -1;
    }
    rg_async_complete(&call->async, &out);
    if (whole && out.file_errno == 0) {
        free(call->path);
        call->path = NULL;
    }
    http_call_free(call);
}

/* Creates path (new, not a symlink, mode 0600) for call; 0, or pushes
 * nil, err, kind and returns 3. */
static int http_download_create(lua_State *L, http_lua_call *call, const char *path)
{
    int failure;
    call->fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    failure = errno;
    if (call->fd >= 0) {
        call->path = strdup(path);
        if (call->path)
            return 0;
        close(call->fd);
        unlink(path);
        free(call);
        luaL_error(L, "sem memória");
    }
    lua_pushnil(L);
    if (failure == EEXIST || failure == ELOOP) {
        lua_pushfstring(L, "download: %s já existe (um arquivo é sempre criado novo)", path);
        lua_pushliteral(L, "exists");
    } else {
        lua_pushfstring(L, "download: não foi possível criar %s (%s)", path, strerror(failure));
        lua_pushliteral(L, "file");
    }
    free(call);
    return 3;
}

/* http.download{ url=, headers=, path=, max_bytes= (default 1 GiB), timeout_ms= (default 30 min),
 * connect_timeout_ms=, ca_file=, proxy= } -> { status, bytes } | { status, body } (non-2xx) |
 * nil, err, kind. A GET whose 2xx body goes into a new file as it arrives. */
static int http_lua_download(lua_State *L)
{
    http_request_opts opts;
    http_lua_call *call;
    const char *path;

    memset(&opts, 0, sizeof opts);
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    rg_check_coroutine(L, "http.download");

    http_lua_common_opts(L, &opts, HTTP_FILE_DEFAULT_TIMEOUT_MS);
    opts.max_body = (size_t)http_opt_nonneg(L, "max_bytes", HTTP_DOWNLOAD_DEFAULT_MAX);
    if (opts.max_body == 0)
        return luaL_argerror(L, 1, "campo \"max_bytes\" deve ser positivo");
    path = http_opt_text(L, "path");
    if (!path)
        return luaL_argerror(L, 1, "campo \"path\" (texto) é obrigatório");
    call = http_call_new(L); /* may raise: before the file exists */
    if (http_download_create(L, call, path) != 0)
        return 3;
    opts.on_body = http_download_write;
    opts.on_body_data = call;
    return http_lua_start(L, call, &opts, http_push_download, http_download_done);
}

int luaopen_ragops_http(lua_State *L)
{
    static const luaL_Reg functions[] = {
        {"request", http_lua_request},
        {"upload", http_lua_upload},
        {"download", http_lua_download},
        {NULL, NULL},
    };
    lua_newtable(L);
    luaL_register(L, NULL, functions);
    return 1;
}
