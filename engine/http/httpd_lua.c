/*
 * httpd_lua.c: module `ragops.httpd`, the metrics HTTP server (httpd.c) for
 * Lua. httpd.listen(host, port, handler [, opts]) serves on the engine's
 * loop; handler(path) -> status, content_type, body is called from the loop
 * under lua_pcall with a traceback, on the main state, and must not yield.
 * srv:port(), srv:close() (also by __gc; releases the handler).
 */
#include "core/bridge.h"
#include "httpd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HTTPD_MT "ragops.httpd.server"

/* The userdata behind a server. */
typedef struct httpd_lua_server {
    httpd *srv;      /* the server, NULL once closed */
    int handler_ref; /* registry reference to the Lua handler */
} httpd_lua_server;

/* One handler call, run under lua_cpcall. */
typedef struct httpd_lua_call {
    httpd_lua_server *server; /* whose handler */
    const char *path;         /* request path */
    httpd_answer *answer;     /* filled on success */
    int ok;                   /* 1 when answer was filled */
} httpd_lua_call;

static int httpd_lua_traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    luaL_traceback(L, L, msg ? msg : "(erro sem mensagem)", 1);
    return 1;
}

/* Copies the handler's three results into call->answer. */
static int httpd_lua_take_answer(lua_State *L, httpd_lua_call *call)
{
    size_t ctype_len = 0, body_len = 0;
    const char *ctype = lua_tolstring(L, -2, &ctype_len);
    const char *body = lua_tolstring(L, -1, &body_len);
    if (!lua_isnumber(L, -3) || ctype == NULL || body == NULL || ctype_len >= sizeof call->answer->content_type ||
        strpbrk(ctype, "\r\n") != NULL) {
        fprintf(stderr, "ragops: o tratador HTTP deve devolver status, content_type, corpo (texto)\n");
        return 0;
    }
    char *copy = malloc(body_len + 1);
    if (copy == NULL)
        return 0;
    memcpy(copy, body, body_len);
    call->answer->status = (int)lua_tointeger(L, -3);
    memcpy(call->answer->content_type, ctype, ctype_len + 1);
    call->answer->body = copy;
    call->answer->body_len = body_len;
    return 1;
}

static int httpd_lua_call_trampoline(lua_State *L)
{
    httpd_lua_call *call = lua_touserdata(L, 1);
    lua_settop(L, 0);
    lua_pushcfunction(L, httpd_lua_traceback);
    lua_rawgeti(L, LUA_REGISTRYINDEX, call->server->handler_ref);
    lua_pushstring(L, call->path);
    if (lua_pcall(L, 1, 3, 1) != 0) {
        fprintf(stderr, "ragops: erro no tratador HTTP das métricas: %s\n", lua_tostring(L, -1));
        return 0;
    }
    call->ok = httpd_lua_take_answer(L, call);
    return 0;
}

/* httpd_handler_fn: the Lua handler, protected (memory errors included). */
static int httpd_lua_handle(void *data, const char *path, httpd_answer *answer)
{
    httpd_lua_call call = {data, path, answer, 0};
    lua_State *L = rg_main_state();
    if (L == NULL || lua_cpcall(L, httpd_lua_call_trampoline, &call) != 0) {
        if (L)
            lua_pop(L, 1);
        return -1;
    }
    return call.ok ? 0 : -1;
}

/* Integer option field of opts (index 4), 0 when absent. */
static int httpd_lua_opt_int(lua_State *L, const char *field)
{
    if (lua_isnoneornil(L, 4) || !rg_opt_field(L, 4, field))
        return 0;
    int value = (int)luaL_checkinteger(L, -1);
    lua_pop(L, 1);
    if (value < 1)
        luaL_error(L, "httpd.listen: %s deve ser um inteiro positivo", field);
    return value;
}

/* httpd.listen(host, port, handler [, {max_head=, read_timeout_ms=,
 * idle_timeout_ms=, max_conns=}]) -> server | nil, err */
static int httpd_lua_listen(lua_State *L)
{
    const char *host = luaL_checkstring(L, 1);
    lua_Integer port = luaL_checkinteger(L, 2);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    if (!lua_isnoneornil(L, 4))
        luaL_checktype(L, 4, LUA_TTABLE);
    luaL_argcheck(L, port >= 0 && port <= 65535, 2, "porta fora de 0..65535");
    httpd_opts opts = {host, (int)port, (size_t)httpd_lua_opt_int(L, "max_head"),
                       httpd_lua_opt_int(L, "read_timeout_ms"), httpd_lua_opt_int(L, "idle_timeout_ms"),
                       httpd_lua_opt_int(L, "max_conns"), httpd_lua_handle, NULL, NULL, 0, 0, NULL};
    httpd_lua_server *server = lua_newuserdata(L, sizeof *server);
    server->srv = NULL;
    server->handler_ref = LUA_NOREF;
    luaL_getmetatable(L, HTTPD_MT);
    lua_setmetatable(L, -2);
    opts.handler_data = server;
    char *err = NULL;
    server->srv = httpd_start(uv_default_loop(), &opts, &err);
    if (server->srv == NULL) {
        lua_pushnil(L);
        lua_pushstring(L, err ? err : "sem memória para o servidor HTTP");
        free(err);
        return 2;
    }
    lua_pushvalue(L, 3);
    server->handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 1;
}

static int httpd_lua_port(lua_State *L)
{
    httpd_lua_server *server = luaL_checkudata(L, 1, HTTPD_MT);
    if (server->srv == NULL)
        return luaL_error(L, "servidor HTTP já fechado");
    lua_pushinteger(L, httpd_port(server->srv));
    return 1;
}

static int httpd_lua_close(lua_State *L)
{
    httpd_lua_server *server = luaL_checkudata(L, 1, HTTPD_MT);
    if (server->srv) {
        httpd_close(server->srv);
        server->srv = NULL;
    }
    luaL_unref(L, LUA_REGISTRYINDEX, server->handler_ref);
    server->handler_ref = LUA_NOREF;
    return 0;
}

int luaopen_ragops_httpd(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"port", httpd_lua_port},
        {"close", httpd_lua_close},
        {NULL, NULL},
    };
    static const luaL_Reg metamethods[] = {
        {"__gc", httpd_lua_close},
        {NULL, NULL},
    };
    static const luaL_Reg funcs[] = {
        {"listen", httpd_lua_listen},
        {NULL, NULL},
    };
    rg_register_class(L, HTTPD_MT, methods, metamethods);
    lua_newtable(L);
    luaL_register(L, NULL, funcs);
    return 1;
}
