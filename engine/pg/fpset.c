/*
 * fpset.c: the fingerprint set of fpset.h (open addressing over uint64
 * fingerprints, which are already uniform hashes: the low bits index) and
 * its Lua userdata.
 */
#include "fpset.h"

#include <inttypes.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A slot holds a fingerprint (63 bits, never 0) and, in its top bit, the
 * seen mark: one cache line per lookup. */
#define FPSET_SEEN (UINT64_C(1) << 63)

/* Grows to `capacity` slots (a power of two, more than now) and reinserts
 * the members with their marks. */
static int fpset_resize(rg_fpset *s, size_t capacity)
{
    uint64_t *slots = calloc(capacity, sizeof *slots);
    if (slots == NULL)
        return -1;
    for (size_t i = 0; i < s->capacity; i++) {
        size_t j;
        if (s->slots[i] == 0)
            continue;
        for (j = (s->slots[i] & ~FPSET_SEEN) & (capacity - 1); slots[j] != 0; j = (j + 1) & (capacity - 1))
            ;
        slots[j] = s->slots[i];
    }
    free(s->slots);
    s->slots = slots;
    s->capacity = capacity;
    return 0;
}

/* Slot of fp (normalised), or of the empty slot where it would go. */
static size_t fpset_slot(const rg_fpset *s, uint64_t fp)
{
    size_t mask = s->capacity - 1, i = fp & mask;
    while (s->slots[i] != 0 && (s->slots[i] & ~FPSET_SEEN) != fp)
        i = (i + 1) & mask;
    return i;
}

int rg_fpset_reserve(rg_fpset *s, size_t members)
{
    size_t capacity = s->capacity ? s->capacity : 1024;
    /* At most half full: short probes. */
    while (members * 2 > capacity)
        capacity *= 2;
    return capacity > s->capacity ? fpset_resize(s, capacity) : 0;
}

int rg_fpset_add(rg_fpset *s, uint64_t fp)
{
    size_t i;
    fp = rg_fpset_normal(fp);
    if (rg_fpset_reserve(s, s->members + 1) != 0)
        return -1;
    i = fpset_slot(s, fp);
    if (s->slots[i] != 0)
        return 0;
    s->slots[i] = fp;
    s->members++;
    s->unseen++;
    return 0;
}

void rg_fpset_prefetch(const rg_fpset *s, uint64_t fp)
{
    if (s->capacity > 0)
        __builtin_prefetch(&s->slots[rg_fpset_normal(fp) & (s->capacity - 1)]);
}

int rg_fpset_match(rg_fpset *s, uint64_t fp)
{
    size_t i;
    if (s->members == 0)
        return 0;
    fp = rg_fpset_normal(fp);
    i = fpset_slot(s, fp);
    if (s->slots[i] == 0)
        return 0;
    if (!(s->slots[i] & FPSET_SEEN)) {
        s->slots[i] |= FPSET_SEEN;
        s->unseen--;
    }
    return 1;
}

void rg_fpset_free(rg_fpset *s)
{
    free(s->slots);
    s->slots = NULL;
    s->capacity = s->members = s->unseen = s->unknown = 0;
}

int rg_fpset_parse(const char *text, uint64_t *fp)
{
    const char *p = text;
    uint64_t v = 0, limit = UINT64_C(9223372036854775807);
    int negative = *p == '-';
    if (negative) {
        p++;
        limit++; /* -2^63 */
    }
    if (*p == '\0')
        return -1;
    for (; *p != '\0'; p++) {
        unsigned digit = (unsigned)(*p - '0');
        if (digit > 9 || v > (limit - digit) / 10)
            return -1;
        v = v * 10 + digit;
    }
    *fp = negative ? (uint64_t)0 - v : v;
    return 0;
}

void rg_fpset_format(uint64_t fp, char *out)
{
    snprintf(out, 21, "%" PRId64, (int64_t)fp);
}

/* ---- Lua ------------------------------------------------------------- */

rg_fpset *rg_fpset_push_new(lua_State *L)
{
    rg_fpset *s = lua_newuserdata(L, sizeof *s);
    memset(s, 0, sizeof *s);
    luaL_getmetatable(L, RG_FPSET_MT);
    lua_setmetatable(L, -2);
    return s;
}

rg_fpset *rg_fpset_check(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, RG_FPSET_MT);
}

/* The fingerprint in the decimal text at idx, or a Lua error. */
static uint64_t check_fp(lua_State *L, int idx)
{
    uint64_t fp = 0;
    if (rg_fpset_parse(luaL_checkstring(L, idx), &fp) != 0)
        luaL_argerror(L, idx, "impressão digital inválida (esperado um bigint em texto)");
    return fp;
}

static int fpset_add_lua(lua_State *L)
{
    rg_fpset *s = rg_fpset_check(L, 1);
    if (rg_fpset_add(s, check_fp(L, 2)) != 0)
        return luaL_error(L, "memória insuficiente para o conjunto de impressões digitais");
    return 0;
}

static int fpset_contains_lua(lua_State *L)
{
    rg_fpset *s = rg_fpset_check(L, 1);
    lua_pushboolean(L, rg_fpset_match(s, check_fp(L, 2)));
    return 1;
}

static int fpset_stats_lua(lua_State *L)
{
    rg_fpset *s = rg_fpset_check(L, 1);
    lua_createtable(L, 0, 3);
    lua_pushnumber(L, (lua_Number)s->members);
    lua_setfield(L, -2, "members");
    lua_pushnumber(L, (lua_Number)s->unseen);
    lua_setfield(L, -2, "unseen");
    lua_pushnumber(L, (lua_Number)s->unknown);
    lua_setfield(L, -2, "unknown");
    return 1;
}

static int fpset_gc(lua_State *L)
{
    rg_fpset_free(rg_fpset_check(L, 1));
    return 0;
}

void rg_fpset_register(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"add", fpset_add_lua}, {"contains", fpset_contains_lua}, {"stats", fpset_stats_lua}, {NULL, NULL}};
    luaL_newmetatable(L, RG_FPSET_MT);
    lua_pushcfunction(L, fpset_gc);
    lua_setfield(L, -2, "__gc");
    lua_newtable(L);
    luaL_register(L, NULL, methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
}
