/*
 * pg_rows.h: PGresults turned into Lua values for ragops.pg (pg_lua.c):
 * plain rows; a source page with each row's fingerprint, where the rows a
 * fingerprint set says are unchanged stay keys only; and the fingerprints
 * of a target loaded into a set without any Lua value per row.
 */
#ifndef RAGOPS_PG_ROWS_H
#define RAGOPS_PG_ROWS_H

#include "fpset.h"

#include <libpq-fe.h>
#include <lua.h>
#include <stdint.h>

/* Columns a page query adds to the source's (never part of a fingerprint,
 * never shown to the plan): names start with this prefix. */
#define LPG_HELPER_PREFIX "__ragops_"
/* A helper column that, when true, keeps its row from being skipped. */
#define LPG_OPEN_FAILURE_COL "__ragops_open_failure"
/* Set on a row that came with its fingerprint (decimal text). */
#define LPG_FP_FIELD "__ragops_fp"

/* How a page is read: the fingerprint of a row is XXH3-64 over its source
 * columns (names, null flags, lengths, values), seeded by `seed`. */
typedef struct lpg_page_opts {
    uint64_t seed;  /* XXH3-64 of the plan's fingerprint seed text */
    const char *key; /* name of the key column (what a skipped row is) */
    rg_fpset *set;  /* members are skipped (NULL: nothing is) */
} lpg_page_opts;

/* Pushes rows (array of tables keyed by column name) with .affected and
 * .columns onto co. */
void lpg_push_rows(lua_State *co, PGresult *res);

/* Pushes the rows of a page: each row with LPG_FP_FIELD, except those
 * whose fingerprint is in opts->set (and that have no open failure): those
 * are their key's value alone, not a table. rows.skipped counts them;
 * rows.types maps each column name to its type oid. */
void lpg_push_page(lua_State *co, PGresult *res, const lpg_page_opts *opts);

/* Adds column 0 of every row (a bigint fingerprint, or NULL: counted as
 * unknown) to set. Returns 0, or -1 (memory short, or a value that is
 * not a bigint). */
int lpg_load_fingerprints(PGresult *res, rg_fpset *set);

#endif
