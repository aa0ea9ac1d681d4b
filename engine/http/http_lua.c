/*
 * http_lua.c: module `ragops.http` (http.request, a yielding HTTP call used
 * for alert webhooks) and the http_client shared with ragops.embed: one per
 * Lua state, created lazily on uv_default_loop() and closed by the __gc of a
 * sentinel userdata in the registry, i.e. when the Lua state closes.
 */
#include "core/bridge.h"
#include "http.h"

#include <stdlib.h>
#include <string.h>

#define HTTP_SENTINEL_KEY "ragops.http.shared_client"
#define HTTP_SENTINEL_MT "ragops.http.sentinel"
#define HTTP_DEFAULT_TIMEOUT_MS 30000L
#define HTTP_DEFAULT_CONNECT_TIMEOUT_MS 10000L

/* Registry-held owner of the shared client. */
typedef struct http_sentinel {
    http_client *hc; /* the shared client, NULL once closed */
} http_sentinel;

/* One http.request call waiting for its answer. */
typedef struct http_lua_call {
    rg_async async;    /* the coroutine to resume */
    http_request *req; /* the request in flight */
} http_lua_call;

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

/* Results of http.request: { status, body, retry_after_ms }, or nil, err
 * (nil, "interrompido" when cancelled). */
static int http_push_response(lua_State *L, void *arg)
{
    const http_response *resp = arg;
    if (resp == NULL)
        return rg_push_interrupted(L);
    if (resp->curl_code != CURLE_OK) {
        lua_pushnil(L);
        if (resp->body_too_large)
            lua_pushfstring(L, "requisição HTTP: resposta maior que o limite de %d bytes; transferência interrompida",
                            (int)resp->max_body);
        else if (resp->curl_code == CURLE_OPERATION_TIMEDOUT)
            lua_pushliteral(L, "requisição HTTP: tempo esgotado");
        else
            lua_pushfstring(L, "requisição HTTP falhou: %s (curl %d)", http_curl_error_ptbr(resp->curl_code),
                            (int)resp->curl_code);
        return 2;
    }
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, resp->status);
    lua_setfield(L, -2, "status");
    lua_pushlstring(L, resp->body, resp->body_len);
    lua_setfield(L, -2, "body");
    if (resp->retry_after_ms >= 0) {
        lua_pushnumber(L, (lua_Number)resp->retry_after_ms);
        lua_setfield(L, -2, "retry_after_ms");
    }
    return 1;
}

static void http_lua_cancel(rg_async *op)
{
    http_lua_call *call = RG_CONTAINER_OF(op, http_lua_call, async);
    http_request_cancel(call->req);
    free(call);
}

/* Also reached with resp->aborted when the client closes; by then nothing
 * waits (the bridge cancels pending calls first) and completing is a no-op. */
static void http_lua_done(http_request *req, const http_response *resp, void *data)
{
    http_lua_call *call = data;
    rg_async_complete(&call->async, (void *)resp);
    free(call);
}

/* Reads an optional non-negative integer field of the table at 1. */
static long http_opt_nonneg(lua_State *L, const char *field, long fallback)
{
    long v;
    if (!rg_opt_field(L, 1, field))
        return fallback;
    if (!lua_isnumber(L, -1) || lua_tonumber(L, -1) < 0)
        luaL_error(L, "http.request: \"%s\" deve ser um número não negativo", field);
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
        luaL_error(L, "http.request: \"%s\" deve ser texto", field);
    return lua_tostring(L, -1);
}

/* http.request{ method=, url=, headers={name=value}, body=, timeout_ms=, connect_timeout_ms=,
 * max_body_bytes= (most bytes of a 2xx answer, default HTTP_DEFAULT_MAX_BODY), ca_file=,
 * proxy= (as http_request_opts) } */
static int http_lua_request(lua_State *L)
{
    http_request_opts opts;
    http_lua_call *call;
    http_client *hc;

    memset(&opts, 0, sizeof opts);
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    rg_check_coroutine(L, "http.request");

    lua_getfield(L, 1, "url");
    if (!lua_isstring(L, -1))
        return luaL_argerror(L, 1, "campo \"url\" (texto) é obrigatório");
    opts.url = lua_tostring(L, -1); /* stays on the stack: alive during the call */
    lua_getfield(L, 1, "method");
    if (!lua_isnil(L, -1) && !lua_isstring(L, -1))
        return luaL_argerror(L, 1, "campo \"method\" deve ser texto");
    opts.method = lua_tostring(L, -1);
    lua_getfield(L, 1, "body");
    if (!lua_isnil(L, -1) && !lua_isstring(L, -1))
        return luaL_argerror(L, 1, "campo \"body\" deve ser texto");
    opts.body = lua_tolstring(L, -1, &opts.body_len);
    opts.timeout_ms = http_opt_nonneg(L, "timeout_ms", HTTP_DEFAULT_TIMEOUT_MS);
    opts.connect_timeout_ms = http_opt_nonneg(L, "connect_timeout_ms", HTTP_DEFAULT_CONNECT_TIMEOUT_MS);
    opts.max_body = (size_t)http_opt_nonneg(L, "max_body_bytes", 0);

    opts.ca_file = http_opt_text(L, "ca_file");
    opts.proxy = http_opt_text(L, "proxy");
    opts.headers = http_lua_headers(L);

    hc = rg_http_shared_client(L);
    call = malloc(sizeof *call);
    if (!call)
        return luaL_error(L, "sem memória");
    rg_async_init(&call->async);
    call->req = http_request_start(hc, &opts, http_lua_done, call);
    if (!call->req) {
        free(call);
        lua_pushnil(L);
        lua_pushliteral(L, "requisição HTTP não pôde ser iniciada (URL inválida ou sem memória)");
        return 2;
    }
    return rg_async_suspend(L, &call->async, http_push_response, http_lua_cancel);
}

int luaopen_ragops_http(lua_State *L)
{
    static const luaL_Reg functions[] = {
        {"request", http_lua_request},
        {NULL, NULL},
    };
    lua_newtable(L);
    luaL_register(L, NULL, functions);
    return 1;
}
