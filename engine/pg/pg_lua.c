/*
 * pg_lua.c: the Lua module `ragops.pg` on top of pg.c (async connection) and
 * copy.c (binary COPY), cosocket style: connect/query/copy_documents check
 * their arguments, start the I/O, park the coroutine and yield; the pg.c
 * callback converts the outcome and resumes it.
 *
 *   pg.connect(conninfo) -> conn | nil, err
 *   pg.conninfo_error(conninfo) -> nil | libpq's message (checked, not sent)
 *   conn:query(sql, ...) -> rows | nil, err, sqlstate  (sql is one statement:
 *     always the extended protocol, so stacked statements are refused, 42601)
 *   conn:query_page({ seed, key, set }, sql, ...) -> rows (each with its source
 *     row's fingerprint; those in `set` only their key, see pg_rows.h)
 *   conn:load_fingerprints(set, sql, ...) -> rows read | nil, err, sqlstate
 *   pg.fpset() -> an empty fingerprint set (fpset.h)
 *   conn:copy_documents(staging, docs, vecbatch [, format [, into_target]]) -> n | nil, err, sqlstate
 *     format of the embedding column: "real[]" (default), "vector" or "halfvec"
 *     (pgvector's binary input); into_target: `staging` is the documents
 *     table itself, already quoted, and metadata/source_updated_at go in its
 *     own types (jsonb, and timestamptz from docs[i].source_updated_us);
 *     docs[i].source_hash: the source row's fingerprint (bigint text) or nil
 *   conn:wait_notification([timeout_ms]) -> { channel, payload, pid }
 *        | false (timeout) | nil, err, sqlstate (connection lost, interrupted)
 *   conn:close(), conn:is_ok(), pg.quote_ident(s)
 *   pg.DOCUMENT_COLUMNS: the COPY's columns, in order (document_columns)
 *
 * Ownership: the userdata owns the pg_conn. While an operation is pending the
 * userdata is pinned in the registry. Cancelling a pending operation
 * (rg_async_cancel, core.cancel_all) closes the pg_conn, whose callback is
 * then never called: the server sees the session end, the coroutine gets
 * nil, "interrompido", "57014" (libpq 15's PQcancel blocks, so no cancel
 * request is sent). An explicit conn:close() with a coroutine waiting wakes
 * that coroutine on the next loop pass with nil, "conexão fechada", "08003".
 */
#include "core/bridge.h"
#include "copy.h"
#include "pg.h"
#include "pg_rows.h"
#include "core/vecbatch.h"

#include <xxhash.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LPG_CONN_MT "ragops.pg.conn"
#define LPG_CLOSED_MSG "conexão fechada"

/* SQLSTATE returned by an interrupted operation (query_canceled). */
#define LPG_SQLSTATE_INTERRUPTED "57014"

/* The userdata behind a Lua connection. */
typedef struct lpg_conn {
    pg_conn *pg;    /* the async connection; NULL once closed */
    rg_async async; /* coroutine parked on the pending operation */
    int self_ref;   /* registry ref pinning this userdata while pending */
    copy_buf copy;  /* COPY stream that must outlive the send */
    int opts_ref;   /* registry ref of what the pending query_page/load_fingerprints
                       reads its result with (opts table, fpset); LUA_NOREF otherwise */
} lpg_conn;

/* What a pg.c callback (or close) reports, for the push functions. */
typedef struct lpg_outcome {
    int conn_ref;         /* connect: registry ref of the userdata to return */
    PGresult *res;        /* query/COPY result; NULL on failure */
    const char *err;      /* pt-BR message; NULL on success */
    const char *sqlstate; /* SQLSTATE of err ("" when unknown) */
    const PGnotify *note; /* wait_notification: the notification; NULL on timeout or failure */
    struct lpg_conn *conn; /* query_page/load_fingerprints: the connection (its opts_ref) */
} lpg_outcome;

/* ---- helpers -------------------------------------------------------- */

static lpg_conn *check_conn(lua_State *L)
{
    return luaL_checkudata(L, 1, LPG_CONN_MT);
}

static void pin_self(lua_State *L, lpg_conn *lc, int idx)
{
    lua_pushvalue(L, idx);
    lc->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

static void unpin_self(lpg_conn *lc)
{
    if (lc->self_ref != LUA_NOREF && lc->self_ref != LUA_REFNIL)
        luaL_unref(rg_main_state(), LUA_REGISTRYINDEX, lc->self_ref);
    lc->self_ref = LUA_NOREF;
}

/* Pushes what the pending query reads its result with, and forgets it. */
static void take_opts(lua_State *L, lpg_conn *lc)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, lc->opts_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, lc->opts_ref);
    lc->opts_ref = LUA_NOREF;
}

static void drop_opts(lpg_conn *lc)
{
    if (lc->opts_ref != LUA_NOREF)
        luaL_unref(rg_main_state(), LUA_REGISTRYINDEX, lc->opts_ref);
    lc->opts_ref = LUA_NOREF;
}

/* Pushes nil, err, sqlstate (an interruption when outcome is NULL). */
static int push_failure(lua_State *L, const lpg_outcome *outcome)
{
    if (outcome == NULL) {
        rg_push_interrupted(L);
        lua_pushliteral(L, LPG_SQLSTATE_INTERRUPTED);
        return 3;
    }
    lua_pushnil(L);
    lua_pushstring(L, outcome->err);
    lua_pushstring(L, outcome->sqlstate);
    return 3;
}

static int push_closed(lua_State *L)
{
    lua_pushnil(L);
    lua_pushliteral(L, LPG_CLOSED_MSG);
    lua_pushliteral(L, PG_SQLSTATE_NO_CONNECTION);
    return 3;
}

/* Pushes s as a double-quoted SQL identifier (inner quotes doubled). */
static void push_quoted_ident(lua_State *L, int idx)
{
    size_t len;
    const char *s = luaL_checklstring(L, idx, &len);
    luaL_Buffer b;
    luaL_argcheck(L, len > 0, idx, "identificador vazio");
    luaL_argcheck(L, memchr(s, '\0', len) == NULL, idx, "identificador com byte nulo");
    luaL_buffinit(L, &b);
    luaL_addchar(&b, '"');
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '"')
            luaL_addchar(&b, '"');
        luaL_addchar(&b, s[i]);
    }
    luaL_addchar(&b, '"');
    luaL_pushresult(&b);
}

/* Formats a Lua number as Postgres text: integers without ".0". */
static void format_number(char *out, size_t outlen, lua_Number d)
{
    if (isnan(d))
        snprintf(out, outlen, "NaN");
    else if (isinf(d))
        snprintf(out, outlen, d > 0 ? "Infinity" : "-Infinity");
    else if (d == floor(d) && fabs(d) < 9.2e18)
        snprintf(out, outlen, "%lld", (long long)d);
    else
        snprintf(out, outlen, "%.17g", d);
}

/* Appends element i of the array at stack index arg to b: double-quoted with
 * \\ and " escaped; nil holes become NULL. The element is popped before
 * anything is added, because a luaL_Buffer owns the top of the stack (a
 * string stays alive in the table it came from). */
static void add_array_element(lua_State *L, luaL_Buffer *b, int arg, int nparam, int i)
{
    char num[64];
    const char *s = NULL;
    size_t len = 0;
    int type;
    lua_rawgeti(L, arg, i);
    type = lua_type(L, -1);
    if (type == LUA_TBOOLEAN)
        s = lua_toboolean(L, -1) ? "true" : "false";
    else if (type == LUA_TNUMBER)
        format_number(num, sizeof num, lua_tonumber(L, -1)), s = num;
    else if (type == LUA_TSTRING)
        s = lua_tolstring(L, -1, &len);
    lua_pop(L, 1);
    switch (type) {
    case LUA_TNIL:
        luaL_addstring(b, "NULL");
        return;
    case LUA_TBOOLEAN:
    case LUA_TNUMBER:
        luaL_addstring(b, s);
        return;
    case LUA_TSTRING:
        luaL_addchar(b, '"');
        for (size_t k = 0; k < len; k++) {
            if (s[k] == '"' || s[k] == '\\')
                luaL_addchar(b, '\\');
            luaL_addchar(b, s[k]);
        }
        luaL_addchar(b, '"');
        return;
    default:
        luaL_error(L, "parâmetro %d: elemento %d do array tem tipo %s não suportado",
                   nparam, i, lua_typename(L, type));
    }
}

/* Pushes the text form of query parameter arg (array table -> '{...}').
 * Returns 0 when the parameter is SQL NULL (nothing pushed). */
static int push_param(lua_State *L, int arg, int nparam)
{
    char num[64];
    switch (lua_type(L, arg)) {
    case LUA_TNIL:
        return 0;
    case LUA_TBOOLEAN:
        lua_pushstring(L, lua_toboolean(L, arg) ? "true" : "false");
        return 1;
    case LUA_TNUMBER:
        format_number(num, sizeof num, lua_tonumber(L, arg));
        lua_pushstring(L, num);
        return 1;
    case LUA_TSTRING:
        lua_pushvalue(L, arg);
        return 1;
    case LUA_TTABLE: {
        luaL_Buffer b;
        int n = (int)lua_objlen(L, arg);
        luaL_buffinit(L, &b);
        luaL_addchar(&b, '{');
        for (int i = 1; i <= n; i++) {
            if (i > 1)
                luaL_addchar(&b, ',');
            add_array_element(L, &b, arg, nparam, i);
        }
        luaL_addchar(&b, '}');
        luaL_pushresult(&b);
        return 1;
    }
    default:
        return luaL_error(L, "parâmetro %d: tipo %s não suportado", nparam, luaL_typename(L, arg));
    }
}

/* ---- pg.connect ----------------------------------------------------- */

/* Results of pg.connect: the connection, or nil, err (sqlstate when known). */
static int push_connected(lua_State *L, void *arg)
{
    lpg_outcome *outcome = arg;
    if (outcome == NULL || outcome->err != NULL)
        return push_failure(L, outcome);
    lua_rawgeti(L, LUA_REGISTRYINDEX, outcome->conn_ref);
    return 1;
}

/* Stops whatever is pending on lc: closes the pg_conn (its callback is then
 * never called) and unpins the userdata. */
static void close_conn(lpg_conn *lc)
{
    if (lc->pg != NULL) {
        pg_conn_close(lc->pg);
        lc->pg = NULL;
    }
    copy_buf_free(&lc->copy);
    drop_opts(lc);
    unpin_self(lc);
}

static void lpg_cancel(rg_async *op)
{
    close_conn(RG_CONTAINER_OF(op, lpg_conn, async));
}

static void on_connect(pg_conn *c, const char *err, void *data)
{
    lpg_conn *lc = data;
    lpg_outcome outcome = {lc->self_ref, NULL, err, "", NULL, NULL};
    lc->self_ref = LUA_NOREF;
    if (err != NULL) {
        pg_conn_close(c);
        lc->pg = NULL;
    }
    rg_async_complete(&lc->async, &outcome);
    luaL_unref(rg_main_state(), LUA_REGISTRYINDEX, outcome.conn_ref);
}

static int lpg_connect(lua_State *L)
{
    const char *conninfo = luaL_checkstring(L, 1);
    lpg_conn *lc;
    rg_check_coroutine(L, "pg.connect");
    lc = lua_newuserdata(L, sizeof *lc);
    memset(lc, 0, sizeof *lc);
    rg_async_init(&lc->async);
    lc->self_ref = LUA_NOREF;
    lc->opts_ref = LUA_NOREF;
    copy_buf_init(&lc->copy);
    luaL_getmetatable(L, LPG_CONN_MT);
    lua_setmetatable(L, -2);
    lc->pg = pg_conn_start(uv_default_loop(), conninfo, on_connect, lc);
    if (lc->pg == NULL) {
        lua_pushnil(L);
        lua_pushliteral(L, "falha ao conectar ao PostgreSQL: memória insuficiente");
        return 2;
    }
    pin_self(L, lc, -1);
    return rg_async_suspend(L, &lc->async, push_connected, lpg_cancel);
}

/* pg.conninfo_error(conninfo) -> nil when libpq accepts it (syntax, option
 * names, sslmode), else libpq's message (English: ragops.messages
 * translates it). Nothing is sent anywhere. */
static int lpg_conninfo_error(lua_State *L)
{
    char err[512];
    if (pg_conninfo_check(luaL_checkstring(L, 1), err, sizeof err) == 0)
        lua_pushnil(L);
    else
        lua_pushstring(L, err);
    return 1;
}

/* ---- conn:query ----------------------------------------------------- */

/* Results of conn:query: rows, or nil, err, sqlstate. */
static int push_queried(lua_State *L, void *arg)
{
    lpg_outcome *outcome = arg;
    if (outcome == NULL || outcome->err != NULL)
        return push_failure(L, outcome);
    lpg_push_rows(L, outcome->res);
    return 1;
}

/* nil, err, sqlstate for a query_page/load_fingerprints that failed; what
 * it would have read the result with is let go. */
static int push_failure_dropping(lua_State *L, lpg_outcome *outcome)
{
    if (outcome != NULL && outcome->conn != NULL)
        drop_opts(outcome->conn);
    return push_failure(L, outcome);
}

/* Results of conn:query_page: rows (see lpg_push_page), or nil, err, sqlstate. */
static int push_paged(lua_State *L, void *arg)
{
    lpg_outcome *outcome = arg;
    lpg_page_opts opts;
    lpg_conn *lc;
    int top = lua_gettop(L);
    if (outcome == NULL || outcome->err != NULL)
        return push_failure_dropping(L, outcome);
    lc = outcome->conn;
    take_opts(L, lc);
    lua_getfield(L, top + 1, "seed");
    opts.seed = lua_isstring(L, -1) ? XXH3_64bits(lua_tostring(L, -1), lua_objlen(L, -1)) : 0;
    lua_getfield(L, top + 1, "key");
    opts.key = lua_tostring(L, -1);
    lua_getfield(L, top + 1, "set");
    opts.set = lua_isuserdata(L, -1) ? rg_fpset_check(L, -1) : NULL;
    lpg_push_page(L, outcome->res, &opts);
    lua_replace(L, top + 1);
    lua_settop(L, top + 1);
    return 1;
}

/* Results of conn:load_fingerprints: the rows read, or nil, err, sqlstate. */
static int push_loaded(lua_State *L, void *arg)
{
    lpg_outcome *outcome = arg;
    if (outcome == NULL || outcome->err != NULL)
        return push_failure_dropping(L, outcome);
    take_opts(L, outcome->conn);
    if (lpg_load_fingerprints(outcome->res, rg_fpset_check(L, -1)) != 0) {
        lua_pushnil(L);
        lua_pushliteral(L, "impressões digitais ilegíveis ou memória insuficiente para elas");
        lua_pushliteral(L, "53200");
        return 3;
    }
    lua_pushnumber(L, PQntuples(outcome->res));
    return 1;
}

/* Results of conn:copy_documents: rows copied, or nil, err, sqlstate. */
static int push_copied(lua_State *L, void *arg)
{
    lpg_outcome *outcome = arg;
    const char *n;
    if (outcome == NULL || outcome->err != NULL)
        return push_failure(L, outcome);
    n = PQcmdTuples(outcome->res);
    lua_pushnumber(L, n[0] ? strtod(n, NULL) : 0);
    return 1;
}

static void on_result(pg_conn *c, PGresult *res, const char *err, const char *sqlstate, void *data)
{
    lpg_conn *lc = data;
    lpg_outcome outcome = {LUA_NOREF, res, err, sqlstate ? sqlstate : "", NULL, lc};
    int self_ref = lc->self_ref;
    lc->self_ref = LUA_NOREF; /* the coroutine may pin lc again for its next call */
    copy_buf_reset(&lc->copy);
    rg_async_complete(&lc->async, &outcome);
    luaL_unref(rg_main_state(), LUA_REGISTRYINDEX, self_ref);
}

/* Parks on the operation already sent (rc from pg.c) or reports why not. */
static int park_or_fail(lua_State *L, lpg_conn *lc, int rc, rg_push_fn push)
{
    if (rc == PG_ERR_BUSY)
        return luaL_error(L, "conexão ocupada: outra operação está em andamento nesta conexão");
    if (rc != PG_OK) {
        copy_buf_reset(&lc->copy);
        drop_opts(lc);
        lua_pushnil(L);
        lua_pushstring(L, pg_conn_error(lc->pg));
        lua_pushstring(L, pg_conn_sqlstate(lc->pg));
        return 3;
    }
    pin_self(L, lc, 1);
    return rg_async_suspend(L, &lc->async, push, lpg_cancel);
}

/* Sends the query at stack index sql_idx with the parameters after it,
 * and parks on it (push converts the result). */
static int send_query(lua_State *L, lpg_conn *lc, int sql_idx, const char *who, rg_push_fn push)
{
    const char *sql = luaL_checkstring(L, sql_idx);
    int nparams = lua_gettop(L) - sql_idx;
    const char **values;
    int rc;
    if (lc->pg == NULL)
        return push_closed(L);
    if (rg_async_pending(&lc->async))
        return luaL_error(L, "conexão ocupada: outra operação está em andamento nesta conexão");
    rg_check_coroutine(L, who);
    luaL_argcheck(L, nparams <= 65535, sql_idx + 1, "parâmetros demais");
    luaL_checkstack(L, nparams + 8, "parâmetros demais");
    values = lua_newuserdata(L, sizeof *values * (size_t)(nparams > 0 ? nparams : 1));
    for (int i = 0; i < nparams; i++) {
        /* Each text value stays on the stack (anchored) until sent. */
        if (push_param(L, sql_idx + 1 + i, i + 1))
            values[i] = lua_tostring(L, -1);
        else
            values[i] = NULL;
    }
    rc = pg_conn_query(lc->pg, sql, nparams, values, on_result, lc);
    return park_or_fail(L, lc, rc, push);
}

static int lpg_query(lua_State *L)
{
    return send_query(L, check_conn(L), 2, "conn:query", push_queried);
}

/* Keeps argument 2 (what the result is read with) for the push function,
 * when the query can be sent. */
static void keep_opts(lua_State *L, lpg_conn *lc)
{
    if (lc->pg == NULL || rg_async_pending(&lc->async))
        return;
    drop_opts(lc);
    lua_pushvalue(L, 2);
    lc->opts_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

/* conn:query_page(opts, sql, ...): opts = { seed = text, key = column
 * name, set = fpset | nil } (see lpg_push_page). */
static int lpg_query_page(lua_State *L)
{
    lpg_conn *lc = check_conn(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    keep_opts(L, lc);
    return send_query(L, lc, 3, "conn:query_page", push_paged);
}

/* conn:load_fingerprints(set, sql, ...): column 0 of the rows into set. */
static int lpg_load_fingerprints_lua(lua_State *L)
{
    lpg_conn *lc = check_conn(L);
    rg_fpset_check(L, 2);
    keep_opts(L, lc);
    return send_query(L, lc, 3, "conn:load_fingerprints", push_loaded);
}

/* pg.fpset() -> an empty fingerprint set (see fpset.h). */
static int lpg_fpset(lua_State *L)
{
    rg_fpset_push_new(L);
    return 1;
}

/* ---- conn:copy_documents -------------------------------------------- */

/* The text at the top of the stack, docs[i].name (NULL when nil and not
 * required); raises a pt-BR error for a missing required field or a
 * non-text value. The value stays on the stack. */
static const char *doc_text_top(lua_State *L, const char *name, int required, int i, size_t *len)
{
    if (lua_isnil(L, -1)) {
        if (required)
            luaL_error(L, "docs[%d].%s é obrigatório", i, name);
        return NULL;
    }
    if (lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "docs[%d].%s deve ser texto (recebido %s)", i, name, luaL_typename(L, -1));
    return lua_tolstring(L, -1, len);
}

/* Reads the string docs[i].name; NULL when absent and optional; a Lua error
 * when absent and required or not a string. */
static const char *doc_text(lua_State *L, int doc, const char *name, int required, int i, size_t *len)
{
    const char *s;
    lua_getfield(L, doc, name);
    s = doc_text_top(L, name, required, i, len);
    lua_pop(L, 1); /* still referenced by the doc table */
    return s;
}

/* Appends a text field read from the doc at stack index doc (one lookup:
 * a number is written in its text form). */
static void copy_doc_text(lua_State *L, lpg_conn *lc, int doc, const char *name, int required, int i)
{
    lua_getfield(L, doc, name);
    if (lua_type(L, -1) == LUA_TNUMBER) {
        char num[64];
        format_number(num, sizeof num, lua_tonumber(L, -1));
        copy_field_text(&lc->copy, num);
    } else {
        size_t len = 0;
        const char *s = doc_text_top(L, name, required, i, &len);
        copy_field_text_len(&lc->copy, s, len);
    }
    lua_pop(L, 1);
}

/* Appends docs[i].metadata as a jsonb field (the target's own type). */
static void copy_doc_jsonb(lua_State *L, lpg_conn *lc, int doc, int i)
{
    size_t len = 0;
    const char *s = doc_text(L, doc, "metadata", 0, i, &len);
    copy_field_jsonb(&lc->copy, s, len);
}

/* Appends docs[i].source_updated_us (microseconds since the Unix epoch, an
 * integer, or absent: NULL) as a timestamptz field. */
static void copy_doc_timestamptz(lua_State *L, lpg_conn *lc, int doc, int i)
{
    lua_Number us;
    lua_getfield(L, doc, "source_updated_us");
    us = lua_tonumber(L, -1);
    if (lua_isnil(L, -1))
        copy_field_null(&lc->copy);
    else if (lua_type(L, -1) != LUA_TNUMBER || us != floor(us) || fabs(us) > 9007199254740992.0)
        luaL_error(L, "docs[%d].source_updated_us deve ser um inteiro (microssegundos)", i);
    else
        copy_field_timestamptz(&lc->copy, (int64_t)us);
    lua_pop(L, 1);
}

/* Appends docs[i].source_hash (a bigint's decimal text, or absent: NULL)
 * as an int8 field. */
static void copy_doc_fingerprint(lua_State *L, lpg_conn *lc, int doc, int i)
{
    size_t len = 0;
    const char *s = doc_text(L, doc, "source_hash", 0, i, &len);
    uint64_t fp = 0;
    if (s == NULL)
        copy_field_null(&lc->copy);
    else if (rg_fpset_parse(s, &fp) != 0)
        luaL_error(L, "docs[%d].source_hash deve ser um bigint em texto", i);
    else
        copy_field_int8(&lc->copy, (int64_t)fp);
}

/* Encoders of the embedding column, by conn:copy_documents's format name. */
typedef int (*copy_vector_fn)(copy_buf *b, const float *values, int n);
static const char *const vector_format_names[] = {"real[]", "vector", "halfvec", NULL};
static const copy_vector_fn vector_format_encoders[] = {copy_field_float4_array, copy_field_vector,
                                                        copy_field_halfvec};

/* The columns of a document in the COPY's order (the encoders below follow
 * it). Lua's list is ragops.store.contract DOCUMENT_COLUMNS; this one is
 * pg.DOCUMENT_COLUMNS, and tests/lua/store/contract_spec.lua and the
 * conformance spec fail when they disagree. */
static const char *const document_columns[] = {"entity_type",     "entity_id",         "chunk_index",
                                               "content",         "content_hash",      "metadata",
                                               "embedding_model", "source_updated_at", "source_hash",
                                               "embedding",       NULL};
#define DOCUMENT_COLUMNS (int)(sizeof(document_columns) / sizeof(document_columns[0]) - 1)

/* Pushes "entity_type, entity_id, ...": the COPY's column list. */
static void push_document_columns(lua_State *L)
{
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 0; i < DOCUMENT_COLUMNS; i++) {
        if (i > 0)
            luaL_addstring(&b, ", ");
        luaL_addstring(&b, document_columns[i]);
    }
    luaL_pushresult(&b);
}

/* Appends docs[i] (the table at the top of the stack, popped) with its
 * vector from vb as one tuple of the COPY stream; raises on a bad field
 * (returns 0 otherwise). */
static int copy_document(lua_State *L, lpg_conn *lc, rg_vecbatch *vb, int i, int into_target,
                          copy_vector_fn encode_vector)
{
    int doc, vec;
    lua_Number chunk, vecn;
    doc = lua_gettop(L);
    if (!lua_istable(L, doc))
        return luaL_error(L, "docs[%d] deve ser uma tabela", i);
    lua_getfield(L, doc, "chunk_index");
    chunk = lua_tonumber(L, -1);
    if (lua_type(L, -1) != LUA_TNUMBER || chunk != floor(chunk) || chunk < 0 || chunk > 2147483647.0)
        return luaL_error(L, "docs[%d].chunk_index deve ser um inteiro >= 0", i);
    lua_pop(L, 1);
    lua_getfield(L, doc, "vec");
    vecn = lua_tonumber(L, -1);
    if (lua_type(L, -1) != LUA_TNUMBER || vecn != floor(vecn) || vecn < 1 || vecn > vb->count)
        return luaL_error(L, "docs[%d].vec fora do intervalo 1..%d do lote de vetores", i, vb->count);
    lua_pop(L, 1);
    vec = (int)vecn;
    lua_getfield(L, doc, "metadata");
    if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING)
        return luaL_error(L, "docs[%d].metadata deve ser texto JSON (recebido %s)", i, luaL_typename(L, -1));
    lua_pop(L, 1);

    copy_tuple_begin(&lc->copy, DOCUMENT_COLUMNS);
    copy_doc_text(L, lc, doc, "entity_type", 1, i);
    copy_doc_text(L, lc, doc, "entity_id", 1, i);
    copy_field_int4(&lc->copy, (int32_t)chunk);
    copy_doc_text(L, lc, doc, "content", 1, i);
    copy_doc_text(L, lc, doc, "content_hash", 1, i);
    if (into_target)
        copy_doc_jsonb(L, lc, doc, i);
    else
        copy_doc_text(L, lc, doc, "metadata", 0, i);
    copy_doc_text(L, lc, doc, "embedding_model", 1, i);
    if (into_target)
        copy_doc_timestamptz(L, lc, doc, i);
    else
        copy_doc_text(L, lc, doc, "source_updated_at", 0, i);
    copy_doc_fingerprint(L, lc, doc, i);
    encode_vector(&lc->copy, rg_vecbatch_row(vb, vec - 1), vb->dim);
    lua_pop(L, 1);
    return 0;
}

static int lpg_copy_documents(lua_State *L)
{
    lpg_conn *lc = check_conn(L);
    rg_vecbatch *vb;
    int ndocs, rc;
    const char *sql;
    copy_vector_fn encode_vector;
    int into_target;
    luaL_checkstring(L, 2);
    luaL_checktype(L, 3, LUA_TTABLE);
    vb = rg_vecbatch_check(L, 4);
    encode_vector = vector_format_encoders[luaL_checkoption(L, 5, "real[]", vector_format_names)];
    into_target = lua_toboolean(L, 6);
    if (lc->pg == NULL)
        return push_closed(L);
    if (rg_async_pending(&lc->async))
        return luaL_error(L, "conexão ocupada: outra operação está em andamento nesta conexão");
    rg_check_coroutine(L, "conn:copy_documents");
    if (into_target)
        lua_pushvalue(L, 2);
    else
        push_quoted_ident(L, 2);
    push_document_columns(L);
    sql = lua_pushfstring(L, "COPY %s (%s) FROM STDIN (FORMAT binary)", lua_tostring(L, -2), lua_tostring(L, -1));
    ndocs = (int)lua_objlen(L, 3);
    copy_buf_reset(&lc->copy);
    /* The vectors dominate the stream: reserve them and ~1 KB of text per row at once. */
    copy_buf_reserve(&lc->copy, (size_t)ndocs * ((size_t)vb->dim * 4 + 1024));
    copy_begin(&lc->copy);
    for (int i = 1; i <= ndocs; i++) {
        lua_rawgeti(L, 3, i);
        copy_document(L, lc, vb, i, into_target, encode_vector);
    }
    if (copy_end(&lc->copy) != 0) {
        copy_buf_free(&lc->copy);
        lua_pushnil(L);
        lua_pushliteral(L, "falha no COPY: memória insuficiente para montar o lote");
        lua_pushliteral(L, "53200");
        return 3;
    }
    rc = pg_conn_copy_in(lc->pg, sql, lc->copy.data, lc->copy.len, on_result, lc);
    return park_or_fail(L, lc, rc, push_copied);
}

/* ---- conn:wait_notification --------------------------------------- */

/* Results of conn:wait_notification: { channel, payload, pid }, false
 * (timeout), or nil, err, sqlstate. */
static int push_notified(lua_State *L, void *arg)
{
    lpg_outcome *outcome = arg;
    if (outcome == NULL || outcome->err != NULL)
        return push_failure(L, outcome);
    if (outcome->note == NULL) {
        lua_pushboolean(L, 0);
        return 1;
    }
    lua_createtable(L, 0, 3);
    lua_pushstring(L, outcome->note->relname);
    lua_setfield(L, -2, "channel");
    lua_pushstring(L, outcome->note->extra ? outcome->note->extra : "");
    lua_setfield(L, -2, "payload");
    lua_pushnumber(L, outcome->note->be_pid);
    lua_setfield(L, -2, "pid");
    return 1;
}

static void on_notify(pg_conn *c, const PGnotify *note, const char *err, void *data)
{
    lpg_conn *lc = data;
    lpg_outcome outcome = {LUA_NOREF, NULL, err, err ? pg_conn_sqlstate(c) : "", note, NULL};
    int self_ref = lc->self_ref;
    lc->self_ref = LUA_NOREF;
    rg_async_complete(&lc->async, &outcome);
    luaL_unref(rg_main_state(), LUA_REGISTRYINDEX, self_ref);
}

/* conn:wait_notification([timeout_ms]): parks until a NOTIFY on a channel
 * the session LISTENs to, the timeout (nil or 0: none) or a lost link. */
static int lpg_wait_notification(lua_State *L)
{
    lpg_conn *lc = check_conn(L);
    lua_Number timeout = luaL_optnumber(L, 2, 0);
    luaL_argcheck(L, timeout >= 0 && timeout < 1e12, 2, "timeout_ms deve ser um número >= 0");
    if (lc->pg == NULL)
        return push_closed(L);
    if (rg_async_pending(&lc->async))
        return luaL_error(L, "conexão ocupada: outra operação está em andamento nesta conexão");
    rg_check_coroutine(L, "conn:wait_notification");
    return park_or_fail(L, lc, pg_conn_wait_notify(lc->pg, (uint64_t)ceil(timeout), on_notify, lc),
                        push_notified);
}

/* ---- close, gc, is_ok ----------------------------------------------- */

/* conn:close(): a coroutine waiting on this connection gets nil,
 * "conexão fechada" on the next loop pass. */
static int lpg_close(lua_State *L)
{
    static const lpg_outcome closed = {LUA_NOREF, NULL, LPG_CLOSED_MSG, PG_SQLSTATE_NO_CONNECTION, NULL, NULL};
    lpg_conn *lc = check_conn(L);
    if (rg_async_pending(&lc->async))
        rg_async_cancel(&lc->async, (void *)&closed);
    else
        close_conn(lc);
    return 0;
}

static int lpg_gc(lua_State *L)
{
    lpg_conn *lc = check_conn(L);
    /* The state is closing: the registry is going away with it. */
    lc->self_ref = LUA_NOREF;
    close_conn(lc);
    return 0;
}

static int lpg_is_ok(lua_State *L)
{
    lpg_conn *lc = check_conn(L);
    lua_pushboolean(L, lc->pg != NULL && pg_conn_is_ok(lc->pg));
    return 1;
}

/* conn:notices() -> { { severity, sqlstate, message, hint }, ... }, dropped:
 * the server notices received since the last call (oldest first, at most
 * PG_NOTICES_MAX; dropped counts the ones past that), then forgets them. */
static int lpg_notices(lua_State *L)
{
    lpg_conn *lc = check_conn(L);
    int n = lc->pg != NULL ? pg_conn_notice_count(lc->pg) : 0;
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        const pg_notice *note = pg_conn_notice(lc->pg, i);
        lua_createtable(L, 0, 4);
        lua_pushstring(L, note->severity);
        lua_setfield(L, -2, "severity");
        lua_pushstring(L, note->sqlstate);
        lua_setfield(L, -2, "sqlstate");
        lua_pushstring(L, note->message);
        lua_setfield(L, -2, "message");
        lua_pushstring(L, note->hint);
        lua_setfield(L, -2, "hint");
        lua_rawseti(L, -2, i + 1);
    }
    lua_pushinteger(L, lc->pg != NULL ? pg_conn_notices_dropped(lc->pg) : 0);
    if (lc->pg != NULL)
        pg_conn_clear_notices(lc->pg);
    return 2;
}

static int lpg_tostring(lua_State *L)
{
    lpg_conn *lc = check_conn(L);
    lua_pushfstring(L, "ragops.pg.conn (%s)", lc->pg == NULL ? "fechada"
                                             : pg_conn_is_ok(lc->pg) ? "aberta" : "indisponível");
    return 1;
}

static int lpg_quote_ident(lua_State *L)
{
    push_quoted_ident(L, 1);
    return 1;
}

int luaopen_ragops_pg(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"query", lpg_query},   {"copy_documents", lpg_copy_documents},
        {"query_page", lpg_query_page}, {"load_fingerprints", lpg_load_fingerprints_lua},
        {"close", lpg_close},   {"is_ok", lpg_is_ok},
        {"wait_notification", lpg_wait_notification},
        {"notices", lpg_notices},
        {NULL, NULL},
    };
    static const luaL_Reg metamethods[] = {
        {"__gc", lpg_gc},
        {"__tostring", lpg_tostring},
        {NULL, NULL},
    };
    static const luaL_Reg funcs[] = {
        {"connect", lpg_connect},
        {"conninfo_error", lpg_conninfo_error},
        {"quote_ident", lpg_quote_ident},
        {"fpset", lpg_fpset},
        {NULL, NULL},
    };
    rg_register_class(L, LPG_CONN_MT, methods, metamethods);
    rg_fpset_register(L);
    lua_newtable(L);
    luaL_register(L, NULL, funcs);
    lua_createtable(L, DOCUMENT_COLUMNS, 0);
    for (int i = 0; i < DOCUMENT_COLUMNS; i++) {
        lua_pushstring(L, document_columns[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "DOCUMENT_COLUMNS");
    return 1;
}
