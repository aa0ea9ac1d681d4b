/*
 * vecbatch.c: the float-array batch userdata shared by the embedding client
 * (producer), the COPY writer (consumer) and the vector search (vecsearch).
 */
#include "vecbatch.h"
#include "bridge.h"

#include <lauxlib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

rg_vecbatch *rg_vecbatch_push_new(lua_State *L, int count, int dim)
{
    if (count < 0 || dim < 0)
        luaL_error(L, "vecbatch: tamanho inválido (%d x %d)", count, dim);
    rg_vecbatch *b = lua_newuserdata(L, sizeof *b);
    b->count = 0;
    b->dim = 0;
    b->tokens = 0;
    b->data = NULL;
    luaL_getmetatable(L, RG_VECBATCH_MT);
    lua_setmetatable(L, -2);
    size_t n = (size_t)count * (size_t)dim;
    if (n > 0) {
        b->data = calloc(n, sizeof(float));
        if (b->data == NULL)
            luaL_error(L, "memória insuficiente para %d vetores de dimensão %d", count, dim);
    }
    b->count = count;
    b->dim = dim;
    return b;
}

rg_vecbatch *rg_vecbatch_push_adopt(lua_State *L, float **data, int count, int dim)
{
    rg_vecbatch *b = rg_vecbatch_push_new(L, 0, 0);
    b->data = *data;
    *data = NULL;
    b->count = count;
    b->dim = dim;
    return b;
}

rg_vecbatch *rg_vecbatch_check(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, RG_VECBATCH_MT);
}

/* __gc, and b:release(): frees the floats now (they live outside the Lua
 * heap, so the collector does not feel them); the batch is then empty. */
static int vecbatch_gc(lua_State *L)
{
    rg_vecbatch *b = rg_vecbatch_check(L, 1);
    free(b->data);
    b->data = NULL;
    b->count = 0;
    return 0;
}

static int vecbatch_count(lua_State *L)
{
    lua_pushinteger(L, rg_vecbatch_check(L, 1)->count);
    return 1;
}

static int vecbatch_dim(lua_State *L)
{
    lua_pushinteger(L, rg_vecbatch_check(L, 1)->dim);
    return 1;
}

static int vecbatch_tokens(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)rg_vecbatch_check(L, 1)->tokens);
    return 1;
}

/* b:vector(i) -> array of numbers (1-based i). */
static int vecbatch_vector(lua_State *L)
{
    rg_vecbatch *b = rg_vecbatch_check(L, 1);
    int i = (int)luaL_checkinteger(L, 2);
    luaL_argcheck(L, i >= 1 && i <= b->count, 2, "índice de vetor fora do intervalo");
    const float *row = rg_vecbatch_row(b, i - 1);
    lua_createtable(L, b->dim, 0);
    for (int j = 0; j < b->dim; j++) {
        lua_pushnumber(L, row[j]);
        lua_rawseti(L, -2, j + 1);
    }
    return 1;
}

/* b:cosine(i, other, j) -> cosine similarity of b[i] and other[j]. */
static int vecbatch_cosine(lua_State *L)
{
    rg_vecbatch *a = rg_vecbatch_check(L, 1);
    int i = (int)luaL_checkinteger(L, 2);
    rg_vecbatch *b = rg_vecbatch_check(L, 3);
    int j = (int)luaL_checkinteger(L, 4);
    luaL_argcheck(L, i >= 1 && i <= a->count, 2, "índice de vetor fora do intervalo");
    luaL_argcheck(L, j >= 1 && j <= b->count, 4, "índice de vetor fora do intervalo");
    luaL_argcheck(L, a->dim == b->dim, 3, "dimensões diferentes");
    const float *x = rg_vecbatch_row(a, i - 1), *y = rg_vecbatch_row(b, j - 1);
    double dot = 0, nx = 0, ny = 0;
    for (int k = 0; k < a->dim; k++) {
        dot += (double)x[k] * y[k];
        nx += (double)x[k] * x[k];
        ny += (double)y[k] * y[k];
    }
    lua_pushnumber(L, (nx > 0 && ny > 0) ? dot / sqrt(nx * ny) : 0.0);
    return 1;
}

void rg_vecbatch_register(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"count", vecbatch_count},   {"dim", vecbatch_dim},
        {"tokens", vecbatch_tokens}, {"vector", vecbatch_vector},
        {"cosine", vecbatch_cosine}, {"release", vecbatch_gc},
        {NULL, NULL},
    };
    static const luaL_Reg metamethods[] = {
        {"__gc", vecbatch_gc},
        {"__len", vecbatch_count},
        {NULL, NULL},
    };
    rg_register_class(L, RG_VECBATCH_MT, methods, metamethods);
}
