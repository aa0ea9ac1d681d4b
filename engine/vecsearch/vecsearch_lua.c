/*
 * vecsearch_lua.c: the Lua module `ragops.vecsearch` on top of vecsearch.c
 * (exact top-k cosine search over real[] texts):
 *
 *   vecsearch.new(queries, k) -> searcher      (queries: an rg_vecbatch)
 *   searcher:add(label, embedding_text) -> true | nil, err
 *   searcher:results(q) -> { { label = n, score = x }, ... } best first
 *   searcher:rows() -> vectors scored so far
 *   vecsearch.vector_literal(batch, i) -> "[0.1,-0.2,...]" (pgvector input text)
 */
#include "core/bridge.h"
#include "core/vecbatch.h"
#include "vecsearch.h"

#include <lauxlib.h>
#include <stdio.h>
#include <string.h>

#define VECSEARCH_MT "ragops.vecsearch.searcher"

/* The Lua userdata: a searcher owned by the Lua state. */
typedef struct vecsearch_ud {
    rg_vecsearch search; /* the state; zeroed after __gc */
} vecsearch_ud;

static vecsearch_ud *vecsearch_check(lua_State *L)
{
    vecsearch_ud *ud = luaL_checkudata(L, 1, VECSEARCH_MT);
    if (ud->search.queries == NULL)
        luaL_error(L, "vecsearch: objeto já liberado");
    return ud;
}

/* vecsearch.new(queries_batch, k) */
static int vecsearch_new(lua_State *L)
{
    rg_vecbatch *batch = rg_vecbatch_check(L, 1);
    int k = (int)luaL_checkinteger(L, 2);
    luaL_argcheck(L, batch->count > 0 && batch->dim > 0, 1, "lote de consultas vazio");
    luaL_argcheck(L, k >= 1 && k <= RG_VECSEARCH_MAX_K, 2, "k deve estar entre 1 e 1000");
    vecsearch_ud *ud = lua_newuserdata(L, sizeof *ud);
    memset(ud, 0, sizeof *ud);
    luaL_getmetatable(L, VECSEARCH_MT);
    lua_setmetatable(L, -2);
    if (rg_vecsearch_init(&ud->search, batch->data, batch->count, batch->dim, k) != 0)
        return luaL_error(L, "memória insuficiente para a busca vetorial");
    return 1;
}

/* searcher:add(label, text) -> true | nil, err */
static int vecsearch_add(lua_State *L)
{
    vecsearch_ud *ud = vecsearch_check(L);
    lua_Integer label = luaL_checkinteger(L, 2);
    size_t len;
    const char *text = luaL_checklstring(L, 3, &len);
    char err[160];
    if (rg_vecsearch_add_text(&ud->search, (long)label, text, len, err, sizeof err) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* searcher:results(q) -> array of { label, score }, best first (q 1-based) */
static int vecsearch_results(lua_State *L)
{
    vecsearch_ud *ud = vecsearch_check(L);
    int q = (int)luaL_checkinteger(L, 2);
    luaL_argcheck(L, q >= 1 && q <= ud->search.nqueries, 2, "índice de consulta fora do intervalo");
    rg_vecsearch_hit *hits = lua_newuserdata(L, (size_t)ud->search.k * sizeof *hits);
    int n = rg_vecsearch_results(&ud->search, q - 1, hits);
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_createtable(L, 0, 2);
        lua_pushinteger(L, (lua_Integer)hits[i].label);
        lua_setfield(L, -2, "label");
        lua_pushnumber(L, hits[i].score);
        lua_setfield(L, -2, "score");
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static int vecsearch_rows(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)vecsearch_check(L)->search.rows);
    return 1;
}

static int vecsearch_gc(lua_State *L)
{
    vecsearch_ud *ud = luaL_checkudata(L, 1, VECSEARCH_MT);
    rg_vecsearch_free(&ud->search);
    return 0;
}

/* vecsearch.vector_literal(batch, i) -> "[x,y,...]" with 9 significant
 * digits (a float round-trips), the input format of pgvector's vector. */
static int vecsearch_vector_literal(lua_State *L)
{
    rg_vecbatch *batch = rg_vecbatch_check(L, 1);
    int i = (int)luaL_checkinteger(L, 2);
    luaL_argcheck(L, i >= 1 && i <= batch->count, 2, "índice de vetor fora do intervalo");
    const float *row = rg_vecbatch_row(batch, i - 1);
    luaL_Buffer buffer;
    char number[32];
    luaL_buffinit(L, &buffer);
    luaL_addchar(&buffer, '[');
    for (int j = 0; j < batch->dim; j++) {
        int n = snprintf(number, sizeof number, j == 0 ? "%.9g" : ",%.9g", (double)row[j]);
        luaL_addlstring(&buffer, number, (size_t)n);
    }
    luaL_addchar(&buffer, ']');
    luaL_pushresult(&buffer);
    return 1;
}

int luaopen_ragops_vecsearch(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"add", vecsearch_add},
        {"results", vecsearch_results},
        {"rows", vecsearch_rows},
        {NULL, NULL},
    };
    static const luaL_Reg functions[] = {
        {"new", vecsearch_new},
        {"vector_literal", vecsearch_vector_literal},
        {NULL, NULL},
    };
    static const luaL_Reg metamethods[] = {
        {"__gc", vecsearch_gc},
        {NULL, NULL},
    };
    /* The vecbatch metatable lives in ragops.core; make sure it exists. */
    rg_vecbatch_register(L);
    rg_register_class(L, VECSEARCH_MT, methods, metamethods);
    lua_newtable(L);
    luaL_register(L, NULL, functions);
    return 1;
}
