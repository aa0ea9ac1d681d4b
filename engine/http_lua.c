/*
 * http_lua.c: module `ragops.http` (http.request, a yielding HTTP call used
 * for alert webhooks) and the http_client shared with ragops.embed: one per
 * Lua state, created lazily on uv_default_loop() and closed by the __gc of a
 * sentinel userdata in the registry, i.e. when the Lua state closes.
 */
#include "bridge.h"
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
    rg_task task; /* the coroutine to resume */
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

/* Protected builder run on the main state by rg_http_push_protected. */
typedef struct http_push_job {
    int (*build)(lua_State *L, void *arg); /* pushes the results */
    void *arg;                             /* build's argument */
} http_push_job;

static int http_push_trampoline(lua_State *L)
{
    http_push_job *job = lua_touserdata(L, 1);
    lua_remove(L, 1);
    return job->build(L, job->arg);
}

int rg_http_push_protected(lua_State *co, int nresults, int (*build)(lua_State *L, void *arg), void *arg)
{
    lua_State *main = rg_main_state();
    http_push_job job = {build, arg};
    int base;
    if (!main)
        main = co;
    base = lua_gettop(main);
    lua_pushcfunction(main, http_push_trampoline);
    lua_pushlightuserdata(main, &job);
    if (lua_pcall(main, 1, nresults, 0) != 0) {
        lua_settop(main, base);
        lua_pushnil(co);
        lua_pushliteral(co, "sem memória para entregar o resultado");
        return 2;
    }
    lua_xmove(main, co, nresults);
    return nresults;
}

/* Result of one http.request, for the protected builder. */
typedef struct http_lua_result {
    const http_response *resp; /* the answer */
} http_lua_result;

static int http_build_response(lua_State *L, void *arg)
{
    const http_response *resp = ((http_lua_result *)arg)->resp;
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

static void http_lua_done(http_request *req, const http_response *resp, void *data)
{
    http_lua_call *call = data;
    rg_task task = call->task;
    lua_State *co = task.co;
    int n;
    free(call);
    if (resp->aborted || !co)
        return; /* the Lua state is closing: nobody to resume */
    if (resp->curl_code == CURLE_OK) {
        http_lua_result result = {resp};
        lua_checkstack(co, 4);
        n = rg_http_push_protected(co, 1, http_build_response, &result);
    } else {
        lua_checkstack(co, 4);
        lua_pushnil(co);
        if (resp->curl_code == CURLE_OPERATION_TIMEDOUT)
            lua_pushliteral(co, "requisição HTTP: tempo esgotado");
        else
            lua_pushfstring(co, "requisição HTTP falhou: %s (curl %d)", http_curl_error_ptbr(resp->curl_code),
                            (int)resp->curl_code);
        n = 2;
    }
    rg_task_resume(&task, n);
}

/* Reads an optional non-negative integer field of the table at 1. */
static long http_opt_ms(lua_State *L, const char *field, long fallback)
{
    long v;
    lua_getfield(L, 1, field);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return fallback;
    }
    if (!lua_isnumber(L, -1) || lua_tonumber(L, -1) < 0)
        luaL_error(L, "http.request: \"%s\" deve ser um número não negativo", field);
    v = (long)lua_tonumber(L, -1);
    lua_pop(L, 1);
    return v;
}

/* http.request{ method=, url=, headers={name=value}, body=, timeout_ms=, connect_timeout_ms= } */
static int http_lua_request(lua_State *L)
{
    http_request_opts opts;
    const char **headers = NULL;
    int nheaders = 0;
    http_lua_call *call;
    http_client *hc;
    int is_main;

    memset(&opts, 0, sizeof opts);
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    is_main = lua_pushthread(L);
    lua_pop(L, 1);
    if (is_main)
        return luaL_error(L, "http.request: primitiva assíncrona chamada fora de uma corrotina");

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
    opts.timeout_ms = http_opt_ms(L, "timeout_ms", HTTP_DEFAULT_TIMEOUT_MS);
    opts.connect_timeout_ms = http_opt_ms(L, "connect_timeout_ms", HTTP_DEFAULT_CONNECT_TIMEOUT_MS);

    lua_getfield(L, 1, "headers");
    if (!lua_isnil(L, -1)) {
        int idx = lua_gettop(L);
        int cap = 0;
        int lines;
        if (!lua_istable(L, idx))
            return luaL_argerror(L, 1, "campo \"headers\" deve ser uma tabela nome = valor");
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
                return luaL_argerror(L, 1, "cabeçalhos devem ser pares texto = texto");
            name = lua_tostring(L, -2);
            value = lua_tostring(L, -1);
            if (strpbrk(name, "\r\n:") || strpbrk(value, "\r\n") || !*name)
                return luaL_argerror(L, 1, "cabeçalho com nome vazio ou caracteres proibidos");
            lua_pushfstring(L, "%s: %s", name, value);
            headers[nheaders++] = lua_tostring(L, -1);
            lua_rawseti(L, lines, nheaders);
            lua_pop(L, 1);
        }
        headers[nheaders] = NULL;
        opts.headers = headers;
    }

    hc = rg_http_shared_client(L);
    call = malloc(sizeof *call);
    if (!call)
        return luaL_error(L, "sem memória");
    rg_task_init(&call->task);
    if (!http_request_start(hc, &opts, http_lua_done, call)) {
        free(call);
        lua_pushnil(L);
        lua_pushliteral(L, "requisição HTTP não pôde ser iniciada (URL inválida ou sem memória)");
        return 2;
    }
    return rg_task_suspend(L, &call->task);
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
