/*
 * fpset.h: the set of source-row fingerprints a target holds (one 64-bit
 * XXH3 per stored entity: the hash of the row it was indexed from, seeded
 * by the plan), with a seen mark per member. A re-run loads it once per
 * source; a row whose fingerprint is a member was indexed from exactly this
 * row by exactly this plan, and skips decide without becoming a Lua table.
 * When every member was seen, every stored entity is still in the source.
 * Lua sees it as userdata with metatable RG_FPSET_MT (pg.fpset()):
 *   s:stats() -> { members, unseen, unknown }
 *   s:add(fp_text), s:contains(fp_text) (tests)
 */
#ifndef RAGOPS_FPSET_H
#define RAGOPS_FPSET_H

#include <lua.h>
#include <stddef.h>
#include <stdint.h>

#define RG_FPSET_MT "ragops.fpset"

typedef struct rg_fpset {
    uint64_t *slots;   /* open addressing, linear probing; 0 = empty; the top
                          bit is the seen mark (a row matched it) */
    size_t capacity;   /* number of slots, a power of two (0 before the first add) */
    size_t members;    /* distinct fingerprints held */
    size_t unseen;     /* members not matched by any row yet */
    size_t unknown;    /* stored entities loaded without a fingerprint */
} rg_fpset;

/* The fingerprint as stored: 63 bits (the top one is the slot's seen mark),
 * never 0 (an empty slot). */
static inline uint64_t rg_fpset_normal(uint64_t fp)
{
    fp &= ~(UINT64_C(1) << 63);
    return fp != 0 ? fp : 1;
}

/* Makes room for `members` members without growing again; 0 or -1 (memory). */
int rg_fpset_reserve(rg_fpset *s, size_t members);

/* Adds fp (normalised); 0 on success, -1 when memory is short. */
int rg_fpset_add(rg_fpset *s, uint64_t fp);

/* Asks the CPU to bring fp's slot into cache (a batch of lookups overlaps
 * its misses). */
void rg_fpset_prefetch(const rg_fpset *s, uint64_t fp);

/* 1 when fp is a member (and marks it seen), 0 otherwise. */
int rg_fpset_match(rg_fpset *s, uint64_t fp);

/* Frees the slots (the struct itself belongs to the caller). */
void rg_fpset_free(rg_fpset *s);

/* Pushes a new empty set userdata; returns it. */
rg_fpset *rg_fpset_push_new(lua_State *L);

/* Returns the set at idx or raises a Lua type error. */
rg_fpset *rg_fpset_check(lua_State *L, int idx);

/* Parses the decimal text of a PostgreSQL bigint ("-42") into *fp; 0 on
 * success, -1 when it is not one. */
int rg_fpset_parse(const char *text, uint64_t *fp);

/* Writes fp as the decimal text of a signed bigint into out (>= 21 bytes). */
void rg_fpset_format(uint64_t fp, char *out);

/* Registers the metatable (called by luaopen_ragops_pg). */
void rg_fpset_register(lua_State *L);

#endif
