/*
 * pg_rows.c: PGresults into Lua values (see pg_rows.h). Values are
 * converted by type OID: integers and floats to numbers (a bigint past
 * 2^53 stays text), booleans to booleans, everything else to text.
 */
#include "pg_rows.h"

#include <errno.h>
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>
#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack (row_fingerprint) */
#include <xxhash.h>

/* Type OIDs converted to Lua numbers/booleans (pg_type.h values). */
#define OID_BOOL 16
#define OID_INT8 20
#define OID_INT2 21
#define OID_INT4 23
#define OID_OID 26
#define OID_FLOAT4 700
#define OID_FLOAT8 701

/* Largest magnitude a double holds exactly as an integer (2^53). */
#define LPG_EXACT_INT 9007199254740992.0

/* Rows ahead whose set slot is prefetched while a row is matched. */
#define LPG_PREFETCH_AHEAD 8

/* Most columns a page may have (PostgreSQL's own limit is 1664). */
#define LPG_MAX_COLUMNS 1664

/* Pushes one column value converted by type OID. */
static void push_value(lua_State *co, PGresult *res, int row, int col)
{
    const char *v = PQgetvalue(res, row, col);
    int len = PQgetlength(res, row, col);
    switch (PQftype(res, col)) {
    case OID_INT2:
    case OID_INT4:
    case OID_OID:
    case OID_FLOAT4:
    case OID_FLOAT8:
        lua_pushnumber(co, strtod(v, NULL));
        return;
    case OID_INT8: {
        long long n;
        errno = 0;
        n = strtoll(v, NULL, 10);
        if (errno == 0 && (double)llabs(n) < LPG_EXACT_INT)
            lua_pushnumber(co, (lua_Number)n);
        else
            lua_pushlstring(co, v, (size_t)len);
        return;
    }
    case OID_BOOL:
        lua_pushboolean(co, v[0] == 't');
        return;
    default:
        lua_pushlstring(co, v, (size_t)len);
    }
}

/* Pushes the column names as an array (each cell's key is then a copy of
 * the reference, not a new lookup of the name); returns its stack index. */
static int push_columns(lua_State *co, PGresult *res)
{
    int nfields = PQnfields(res);
    lua_createtable(co, nfields, 0);
    for (int f = 0; f < nfields; f++) {
        lua_pushstring(co, PQfname(res, f));
        lua_rawseti(co, -2, f + 1);
    }
    return lua_gettop(co);
}

/* Pushes row r as a table keyed by column name (names from `columns`). */
static void push_row(lua_State *co, PGresult *res, int r, int columns)
{
    int nfields = PQnfields(res);
    lua_createtable(co, 0, nfields + 1);
    for (int f = 0; f < nfields; f++) {
        if (PQgetisnull(res, r, f))
            continue;
        lua_rawgeti(co, columns, f + 1);
        push_value(co, res, r, f);
        lua_rawset(co, -3);
    }
}

/* Sets .affected and .columns on the rows at `rows`, and drops `columns`. */
static void finish_rows(lua_State *co, PGresult *res, int rows, int columns)
{
    const char *affected = PQcmdTuples(res);
    lua_pushnumber(co, affected[0] ? strtod(affected, NULL) : 0);
    lua_setfield(co, rows, "affected");
    lua_pushvalue(co, columns);
    lua_setfield(co, rows, "columns");
    lua_remove(co, columns);
}

void lpg_push_rows(lua_State *co, PGresult *res)
{
    int ntuples = PQntuples(res), columns, rows;
    lua_checkstack(co, 8);
    columns = push_columns(co, res);
    lua_createtable(co, ntuples, 2);
    rows = lua_gettop(co);
    for (int r = 0; r < ntuples; r++) {
        push_row(co, res, r, columns);
        lua_rawseti(co, rows, r + 1);
    }
    finish_rows(co, res, rows, columns);
}

/* ---- pages with fingerprints ---------------------------------------- */

/* What a page's rows are hashed over: the source columns (not the
 * helpers), and the seed mixed with their names. */
typedef struct page_layout {
    int source_cols[LPG_MAX_COLUMNS]; /* indexes of the source columns */
    int nsource;                      /* how many */
    int key_col;                      /* index of the key column (-1: absent) */
    int open_failure_col;             /* index of LPG_OPEN_FAILURE_COL (-1: absent) */
    uint64_t seed;                    /* opts->seed mixed with the source column names */
} page_layout;

static void page_layout_of(PGresult *res, const lpg_page_opts *opts, page_layout *out)
{
    int nfields = PQnfields(res);
    uint64_t seed = opts->seed;
    out->nsource = 0;
    out->key_col = out->open_failure_col = -1;
    for (int f = 0; f < nfields && f < LPG_MAX_COLUMNS; f++) {
        const char *name = PQfname(res, f);
        if (strcmp(name, LPG_OPEN_FAILURE_COL) == 0)
            out->open_failure_col = f;
        if (strncmp(name, LPG_HELPER_PREFIX, sizeof LPG_HELPER_PREFIX - 1) == 0)
            continue;
        if (opts->key != NULL && strcmp(name, opts->key) == 0)
            out->key_col = f;
        out->source_cols[out->nsource++] = f;
        seed = XXH3_64bits_withSeed(name, strlen(name) + 1, seed);
    }
    out->seed = seed;
}

/* XXH3-64 of row r's source columns: per column a null flag and the
 * length, then the value's text. */
static uint64_t row_fingerprint(PGresult *res, int r, const page_layout *lay)
{
    XXH3_state_t state;
    XXH3_INITSTATE(&state);
    XXH3_64bits_reset_withSeed(&state, lay->seed);
    for (int i = 0; i < lay->nsource; i++) {
        int f = lay->source_cols[i];
        unsigned char head[5];
        int null = PQgetisnull(res, r, f);
        uint32_t len = null ? 0 : (uint32_t)PQgetlength(res, r, f);
        head[0] = (unsigned char)null;
        memcpy(head + 1, &len, sizeof len);
        XXH3_64bits_update(&state, head, sizeof head);
        XXH3_64bits_update(&state, PQgetvalue(res, r, f), len);
    }
    return rg_fpset_normal(XXH3_64bits_digest(&state));
}

/* Row r's fingerprint, its slot in set (when there is one) asked for. */
static uint64_t fingerprint_prefetched(PGresult *res, int r, const page_layout *lay, const rg_fpset *set)
{
    uint64_t fp = row_fingerprint(res, r, lay);
    if (set != NULL)
        rg_fpset_prefetch(set, fp);
    return fp;
}

/* True when row r's open-failure helper column says it has one. */
static int has_open_failure(PGresult *res, int r, const page_layout *lay)
{
    int f = lay->open_failure_col;
    return f >= 0 && !PQgetisnull(res, r, f) && PQgetvalue(res, r, f)[0] == 't';
}

/* Pushes the skipped row r: its key value alone (false without a key). */
static void push_skipped(lua_State *co, PGresult *res, int r, const page_layout *lay)
{
    if (lay->key_col >= 0 && !PQgetisnull(res, r, lay->key_col))
        push_value(co, res, r, lay->key_col);
    else
        lua_pushboolean(co, 0);
}

void lpg_push_page(lua_State *co, PGresult *res, const lpg_page_opts *opts)
{
    static page_layout lay; /* the loop thread's; too big for its stack frame */
    int ntuples = PQntuples(res), columns, rows, skipped = 0;
    lua_checkstack(co, 8);
    page_layout_of(res, opts, &lay);
    columns = push_columns(co, res);
    lua_createtable(co, ntuples, 3);
    rows = lua_gettop(co);
    /* The fingerprints of the next LPG_PREFETCH_AHEAD rows, their slots
     * already asked for: the lookups' cache misses overlap. */
    uint64_t ahead[LPG_PREFETCH_AHEAD];
    for (int r = 0; r < ntuples && r < LPG_PREFETCH_AHEAD; r++)
        ahead[r] = fingerprint_prefetched(res, r, &lay, opts->set);
    for (int r = 0; r < ntuples; r++) {
        uint64_t fp = ahead[r % LPG_PREFETCH_AHEAD];
        int same;
        if (r + LPG_PREFETCH_AHEAD < ntuples)
            ahead[r % LPG_PREFETCH_AHEAD] = fingerprint_prefetched(res, r + LPG_PREFETCH_AHEAD, &lay, opts->set);
        /* Matched even with an open failure: the entity is in the source. */
        same = opts->set != NULL && rg_fpset_match(opts->set, fp);
        if (same && !has_open_failure(res, r, &lay)) {
            push_skipped(co, res, r, &lay);
            skipped++;
        } else {
            char text[24];
            push_row(co, res, r, columns);
            rg_fpset_format(fp, text);
            lua_pushstring(co, text);
            lua_setfield(co, -2, LPG_FP_FIELD);
        }
        lua_rawseti(co, rows, r + 1);
    }
    lua_pushinteger(co, skipped);
    lua_setfield(co, rows, "skipped");
    lua_createtable(co, 0, PQnfields(res));
    for (int f = 0; f < PQnfields(res); f++) {
        lua_pushinteger(co, (lua_Integer)PQftype(res, f));
        lua_setfield(co, -2, PQfname(res, f));
    }
    lua_setfield(co, rows, "types");
    finish_rows(co, res, rows, columns);
}

int lpg_load_fingerprints(PGresult *res, rg_fpset *set)
{
    int ntuples = PQntuples(res);
    if (PQnfields(res) < 1 || rg_fpset_reserve(set, set->members + (size_t)ntuples) != 0)
        return -1;
    /* Parsed LPG_PREFETCH_AHEAD rows ahead of the insert, slots asked for. */
    uint64_t ahead[LPG_PREFETCH_AHEAD];
    int known[LPG_PREFETCH_AHEAD];
    for (int r = 0; r < ntuples + LPG_PREFETCH_AHEAD; r++) {
        int slot = r % LPG_PREFETCH_AHEAD;
        if (r >= LPG_PREFETCH_AHEAD) {
            if (!known[slot])
                set->unknown++;
            else if (rg_fpset_add(set, ahead[slot]) != 0)
                return -1;
        }
        if (r >= ntuples)
            continue;
        known[slot] = !PQgetisnull(res, r, 0);
        if (known[slot]) {
            if (rg_fpset_parse(PQgetvalue(res, r, 0), &ahead[slot]) != 0)
                return -1;
            rg_fpset_prefetch(set, ahead[slot]);
        }
    }
    return 0;
}
