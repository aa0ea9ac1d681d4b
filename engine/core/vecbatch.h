/*
 * vecbatch.h: a batch of embedding vectors held as one C float array, so the
 * hot path (provider -> COPY) never turns 1536 numbers per row into Lua values.
 * Lua sees it as userdata with metatable RG_VECBATCH_MT:
 *   #b / b:count(), b:dim(), b:tokens(), b:vector(i) -> table (tests, validation)
 */
#ifndef RAGOPS_VECBATCH_H
#define RAGOPS_VECBATCH_H

#include <lua.h>

#define RG_VECBATCH_MT "ragops.vecbatch"

typedef struct rg_vecbatch {
    int count;   /* number of vectors */
    int dim;     /* floats per vector */
    long tokens; /* prompt tokens the provider reported (0 if unknown) */
    float *data; /* count * dim floats, row-major; owned, freed by __gc or b:release() */
} rg_vecbatch;

/* Pushes a new zero-filled batch userdata onto L and returns it; raises a
 * Lua error when memory is short. */
rg_vecbatch *rg_vecbatch_push_new(lua_State *L, int count, int dim);

/* Pushes a batch that takes over *data (count * dim floats from malloc;
 * *data becomes NULL): no second array and no copy. */
rg_vecbatch *rg_vecbatch_push_adopt(lua_State *L, float **data, int count, int dim);

/* Returns the batch at idx or raises a Lua type error. */
rg_vecbatch *rg_vecbatch_check(lua_State *L, int idx);

/* Vector i (0-based) of b. */
static inline float *rg_vecbatch_row(rg_vecbatch *b, int i) { return b->data + (long)i * b->dim; }

/* Registers the metatable (called by luaopen_ragops_core). */
void rg_vecbatch_register(lua_State *L);

#endif
