/*
 * test_pg.c: the async PostgreSQL connection (pg.c) and the binary COPY
 * encoder (copy.c) against a REAL server, plus the Lua binding ragops.pg
 * when run through the bridge. Needs RAGOPS_TEST_DATABASE_URL.
 */
#include "core/bridge.h"
#include "core/vecbatch.h"
#include "pg/copy.h"
#include "pg/pg.h"
#include "test_assert.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What one callback saw, copied out because res dies with the callback. */
typedef struct outcome {
    int called;         /* times the callback ran */
    int failed;         /* 1 when err was set */
    char err[1024];     /* pt-BR error message */
    char sqlstate[6];   /* SQLSTATE on failure */
    char cmdtuples[32]; /* PQcmdTuples of the result */
    PGresult *copy;     /* PQcopyResult of the result (tuples), or NULL */
} outcome;

static uv_loop_t loop;
static const char *db_url;

static void outcome_reset(outcome *o)
{
    PQclear(o->copy);
    memset(o, 0, sizeof *o);
}

static void on_connect(pg_conn *c, const char *err, void *data)
{
    outcome *o = data;
    o->called++;
    if (err != NULL) {
        o->failed = 1;
        snprintf(o->err, sizeof o->err, "%s", err);
    }
}

static void on_result(pg_conn *c, PGresult *res, const char *err, const char *sqlstate, void *data)
{
    outcome *o = data;
    o->called++;
    if (err != NULL) {
        o->failed = 1;
        snprintf(o->err, sizeof o->err, "%s", err);
        snprintf(o->sqlstate, sizeof o->sqlstate, "%s", sqlstate);
        return;
    }
    ASSERT(res != NULL);
    snprintf(o->cmdtuples, sizeof o->cmdtuples, "%s", PQcmdTuples(res));
    o->copy = PQcopyResult(res, PG_COPYRES_ATTRS | PG_COPYRES_TUPLES);
}

static pg_conn *connect_ok(void)
{
    outcome o = {0};
    pg_conn *c = pg_conn_start(&loop, db_url, on_connect, &o);
    ASSERT(c != NULL);
    ASSERT_INT_EQ(o.called, 0); /* never synchronous */
    uv_run(&loop, UV_RUN_DEFAULT);
    if (o.failed)
        fprintf(stderr, "conexão falhou: %s\n", o.err);
    ASSERT_INT_EQ(o.called, 1);
    ASSERT_INT_EQ(o.failed, 0);
    ASSERT(pg_conn_is_ok(c));
    return c;
}

/* Runs sql to completion; the outcome is in *o. */
static void run_query(pg_conn *c, outcome *o, const char *sql, int n, const char *const *values)
{
    outcome_reset(o);
    ASSERT_INT_EQ(pg_conn_query(c, sql, n, values, on_result, o), PG_OK);
    ASSERT_INT_EQ(o->called, 0);
    ASSERT(pg_conn_is_busy(c));
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_INT_EQ(o->called, 1);
    ASSERT(!pg_conn_is_busy(c));
}

static void exec_ok(pg_conn *c, const char *sql)
{
    outcome o = {0};
    run_query(c, &o, sql, 0, NULL);
    if (o.failed)
        fprintf(stderr, "%s -> %s\n", sql, o.err);
    ASSERT_INT_EQ(o.failed, 0);
    outcome_reset(&o);
}

static void test_connect_failure(void)
{
    outcome o = {0};
    pg_conn *c = pg_conn_start(&loop, "host=127.0.0.1 port=1 user=postgres password=segredo-nao-vaza connect_timeout=5",
                               on_connect, &o);
    ASSERT(c != NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_INT_EQ(o.called, 1);
    ASSERT_INT_EQ(o.failed, 1);
    ASSERT(strstr(o.err, "falha ao conectar ao PostgreSQL: ") == o.err);
    ASSERT(strstr(o.err, "127.0.0.1") != NULL); /* libpq's own explanation */
    ASSERT(strstr(o.err, "segredo-nao-vaza") == NULL);
    ASSERT(strchr(o.err, '\n') == NULL);
    ASSERT(!pg_conn_is_ok(c));
    ASSERT_INT_EQ(pg_conn_query(c, "select 1", 0, NULL, on_result, &o), PG_ERR_CLOSED);
    pg_conn_close(c);

    /* Unparseable conninfo fails too, still asynchronously. */
    outcome_reset(&o);
    c = pg_conn_start(&loop, "isto não é = uma conninfo válida '", on_connect, &o);
    ASSERT(c != NULL);
    ASSERT_INT_EQ(o.called, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_INT_EQ(o.called, 1);
    ASSERT_INT_EQ(o.failed, 1);
    pg_conn_close(c);
    uv_run(&loop, UV_RUN_DEFAULT);
}

static void test_params_and_errors(void)
{
    pg_conn *c = connect_ok();
    outcome o = {0};
    const char *hostile = "'); drop table x; -- \"aspas\" \\barra ção";
    const char *values[3] = {hostile, NULL, "42"};
    run_query(c, &o, "select $1::text as a, $2::text as b, $3::int + 1 as n", 3, values);
    ASSERT_INT_EQ(o.failed, 0);
    ASSERT_INT_EQ(PQntuples(o.copy), 1);
    ASSERT_STR_EQ(PQgetvalue(o.copy, 0, 0), hostile);
    ASSERT(PQgetisnull(o.copy, 0, 1));
    ASSERT_STR_EQ(PQgetvalue(o.copy, 0, 2), "43");
    ASSERT_STR_EQ(PQfname(o.copy, 2), "n");

    /* SQL error: sqlstate and a pt-BR prefix around the server message. */
    run_query(c, &o, "select * from tabela_que_nao_existe", 0, NULL);
    ASSERT_INT_EQ(o.failed, 1);
    ASSERT_STR_EQ(o.sqlstate, "42P01");
    ASSERT(strstr(o.err, "erro do PostgreSQL: ") == o.err);
    ASSERT(strstr(o.err, "tabela_que_nao_existe") != NULL);
    ASSERT(pg_conn_is_ok(c));

    /* Unique violation, then the connection is still usable. */
    exec_ok(c, "create temp table u (k int primary key)");
    run_query(c, &o, "insert into u values (1), (2)", 0, NULL);
    ASSERT_INT_EQ(o.failed, 0);
    ASSERT_STR_EQ(o.cmdtuples, "2");
    run_query(c, &o, "insert into u values (1)", 0, NULL);
    ASSERT_STR_EQ(o.sqlstate, "23505");
    ASSERT(strstr(o.err, "u_pkey") != NULL);
    ASSERT(strstr(o.err, "Key (k)") == NULL); /* DETAIL carries the key's value */

    /* Errors never carry row content (DETAIL "Failing row contains", CONTEXT). */
    exec_ok(c, "create temp table docs (content text check (length(content) < 5))");
    run_query(c, &o, "insert into docs values ('segredo-do-paciente')", 0, NULL);
    ASSERT_STR_EQ(o.sqlstate, "23514");
    ASSERT(strstr(o.err, "docs_content_check") != NULL);
    ASSERT(strstr(o.err, "segredo") == NULL);
    ASSERT(strstr(o.err, "DETAIL") == NULL);
    outcome_reset(&o);
    ASSERT_INT_EQ(pg_conn_copy_in(c, "copy docs from stdin", "segredo-do-paciente\n", 20, on_result, &o), PG_OK);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_STR_EQ(o.sqlstate, "23514");
    ASSERT(strstr(o.err, "segredo") == NULL);
    ASSERT(strstr(pg_conn_error(c), "segredo") == NULL);

    /* One statement per query, with or without parameters (extended
     * protocol): stacked statements are refused and none of them runs. */
    run_query(c, &o, "select 1; select 2 as dois", 0, NULL);
    ASSERT_INT_EQ(o.failed, 1);
    ASSERT_STR_EQ(o.sqlstate, "42601");
    run_query(c, &o, "select 1; create temp table stacked (x int)", 0, NULL);
    ASSERT_STR_EQ(o.sqlstate, "42601");
    run_query(c, &o, "select to_regclass('pg_temp.stacked') is null", 0, NULL);
    ASSERT_INT_EQ(o.failed, 0);
    ASSERT_STR_EQ(PQgetvalue(o.copy, 0, 0), "t");

    /* A second operation while one is pending is refused, not queued. */
    outcome_reset(&o);
    ASSERT_INT_EQ(pg_conn_query(c, "select 1", 0, NULL, on_result, &o), PG_OK);
    {
        outcome other = {0};
        ASSERT_INT_EQ(pg_conn_query(c, "select 2", 0, NULL, on_result, &other), PG_ERR_BUSY);
        ASSERT_INT_EQ(pg_conn_copy_in(c, "copy u from stdin", "", 0, on_result, &other), PG_ERR_BUSY);
        uv_run(&loop, UV_RUN_DEFAULT);
        ASSERT_INT_EQ(other.called, 0);
    }
    ASSERT_INT_EQ(o.called, 1);
    ASSERT_INT_EQ(o.failed, 0);
    outcome_reset(&o);
    pg_conn_close(c);
    uv_run(&loop, UV_RUN_DEFAULT);
}

/* Encodes one staging row (the column set used by copy_documents). */
static void put_row(copy_buf *b, const char *id, int chunk, const float *v, int n)
{
    ASSERT_INT_EQ(copy_tuple_begin(b, 3), 0);
    ASSERT_INT_EQ(copy_field_text(b, id), 0);
    ASSERT_INT_EQ(copy_field_int4(b, chunk), 0);
    ASSERT_INT_EQ(copy_field_float4_array(b, v, n), 0);
}

/* Server notices are kept on the connection (bounded), not printed by libpq. */
static void test_notices_kept_not_printed(void)
{
    pg_conn *c = connect_ok();
    ASSERT_INT_EQ(pg_conn_notice_count(c), 0);
    exec_ok(c, "do $$ begin raise notice 'aviso % de teste', 1 using hint = 'uma dica'; end $$");
    ASSERT_INT_EQ(pg_conn_notice_count(c), 1);
    ASSERT_STR_EQ(pg_conn_notice(c, 0)->severity, "NOTICE");
    ASSERT_STR_EQ(pg_conn_notice(c, 0)->sqlstate, "00000");
    ASSERT_STR_EQ(pg_conn_notice(c, 0)->message, "aviso 1 de teste");
    ASSERT_STR_EQ(pg_conn_notice(c, 0)->hint, "uma dica");
    ASSERT(pg_conn_notice(c, 1) == NULL);
    pg_conn_clear_notices(c);
    /* More than PG_NOTICES_MAX: the first ones are kept, the rest counted. */
    exec_ok(c, "do $$ begin for i in 1..11 loop raise warning 'w%', i; end loop; end $$");
    ASSERT_INT_EQ(pg_conn_notice_count(c), PG_NOTICES_MAX);
    ASSERT_INT_EQ(pg_conn_notices_dropped(c), 11 - PG_NOTICES_MAX);
    ASSERT_STR_EQ(pg_conn_notice(c, 0)->severity, "WARNING");
    ASSERT_STR_EQ(pg_conn_notice(c, 0)->message, "w1");
    pg_conn_clear_notices(c);
    ASSERT_INT_EQ(pg_conn_notice_count(c), 0);
    ASSERT_INT_EQ(pg_conn_notices_dropped(c), 0);
    pg_conn_close(c);
}

static void test_copy_round_trip(void)
{
    pg_conn *c = connect_ok();
    outcome o = {0};
    copy_buf b;
    static float big[1536];
    const float small[4] = {-1.5f, 1e-38f, -3.4028235e38f, 0.1f};
    const float tiny[2] = {1.4e-45f, -2.5e-30f};
    int rows = 0;

    for (int i = 0; i < 1536; i++)
        big[i] = sinf((float)i) * (i % 2 ? -1.0f : 1.0f) / (float)(i + 1);
    exec_ok(c, "create temp table st (entity_id text, chunk_index int4, embedding real[])");

    copy_buf_init(&b);
    ASSERT_INT_EQ(copy_begin(&b), 0);
    put_row(&b, "pequeno", 0, small, 4);
    put_row(&b, "minúsculo", 1, tiny, 2);
    for (int r = 0; r < 50; r++) { /* ~600 KB: several chunks and flushes */
        char id[32];
        snprintf(id, sizeof id, "grande-%d", r);
        put_row(&b, id, 2 + r, big, 1536);
    }
    ASSERT_INT_EQ(copy_tuple_begin(&b, 3), 0);
    ASSERT_INT_EQ(copy_field_null(&b), 0);
    ASSERT_INT_EQ(copy_field_int4(&b, -7), 0);
    ASSERT_INT_EQ(copy_field_float4_array(&b, NULL, 0), 0);
    ASSERT_INT_EQ(copy_end(&b), 0);

    outcome_reset(&o);
    ASSERT_INT_EQ(pg_conn_copy_in(c, "copy st (entity_id, chunk_index, embedding) from stdin (format binary)",
                                  b.data, b.len, on_result, &o), PG_OK);
    uv_run(&loop, UV_RUN_DEFAULT);
    if (o.failed)
        fprintf(stderr, "copy: %s\n", o.err);
    ASSERT_INT_EQ(o.called, 1);
    ASSERT_INT_EQ(o.failed, 0);
    ASSERT_STR_EQ(o.cmdtuples, "53");

    run_query(c, &o,
              "select entity_id, chunk_index, i, v from st, unnest(embedding) with ordinality u(v, i) "
              "order by chunk_index, i", 0, NULL);
    ASSERT_INT_EQ(o.failed, 0);
    ASSERT_INT_EQ(PQntuples(o.copy), 4 + 2 + 50 * 1536);
    for (int t = 0; t < PQntuples(o.copy); t++) {
        int chunk = atoi(PQgetvalue(o.copy, t, 1));
        int i = atoi(PQgetvalue(o.copy, t, 2)) - 1;
        float got = strtof(PQgetvalue(o.copy, t, 3), NULL);
        float want = chunk == 0 ? small[i] : chunk == 1 ? tiny[i] : big[i];
        if (got != want)
            fprintf(stderr, "linha %d chunk %d i %d: %s != %.9g\n", t, chunk, i, PQgetvalue(o.copy, t, 3), want);
        ASSERT(got == want);
        rows++;
    }
    ASSERT_INT_EQ(rows, 4 + 2 + 50 * 1536);
    ASSERT_STR_EQ(PQgetvalue(o.copy, 0, 0), "pequeno");
    ASSERT_STR_EQ(PQgetvalue(o.copy, 4, 0), "minúsculo");

    run_query(c, &o, "select entity_id is null, cardinality(embedding), chunk_index from st where chunk_index < 0", 0, NULL);
    ASSERT_INT_EQ(PQntuples(o.copy), 1);
    ASSERT_STR_EQ(PQgetvalue(o.copy, 0, 0), "t");
    ASSERT_STR_EQ(PQgetvalue(o.copy, 0, 1), "0");
    ASSERT_STR_EQ(PQgetvalue(o.copy, 0, 2), "-7");

    /* Bad data: the server's error comes back and the link stays usable. */
    outcome_reset(&o);
    ASSERT_INT_EQ(pg_conn_copy_in(c, "copy st (entity_id, chunk_index, embedding) from stdin (format binary)",
                                  "lixo", 4, on_result, &o), PG_OK);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_INT_EQ(o.failed, 1);
    ASSERT(strstr(o.err, "falha no COPY: ") == o.err);
    ASSERT_STR_EQ(o.sqlstate, "22P04");
    ASSERT(pg_conn_is_ok(c));

    /* COPY into a missing table: error before any data. */
    outcome_reset(&o);
    ASSERT_INT_EQ(pg_conn_copy_in(c, "copy nao_existe from stdin (format binary)", b.data, b.len, on_result, &o), PG_OK);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_STR_EQ(o.sqlstate, "42P01");

    /* A plain query that starts COPY FROM STDIN fails cleanly. */
    run_query(c, &o, "copy st from stdin", 0, NULL);
    ASSERT_INT_EQ(o.failed, 1);
    run_query(c, &o, "select count(*) from st", 0, NULL);
    ASSERT_INT_EQ(o.failed, 0);
    ASSERT_STR_EQ(PQgetvalue(o.copy, 0, 0), "53");

    copy_buf_free(&b);
    outcome_reset(&o);
    pg_conn_close(c);
    uv_run(&loop, UV_RUN_DEFAULT);
}

/* The floats of v as pgvector's text input, "[a,b,...]", each exact (%.9g). */
static void vector_literal(char *out, size_t outlen, const float *v, int n)
{
    size_t used = 0;
    for (int i = 0; i < n; i++)
        used += (size_t)snprintf(out + used, outlen - used, "%c%.9g", i ? ',' : '[', (double)v[i]);
    snprintf(out + used, outlen - used, "]");
}

/* Binary vector/halfvec fields land as the same values pgvector's own text
 * input gives for the same floats (`select embedding::text`). */
static void test_pgvector_round_trip(void)
{
    pg_conn *c = connect_ok();
    outcome o = {0};
    copy_buf b;
    static float big[1536];
    static char literal[1536 * 20];
    const float edge[9] = {0.1f, -1.0f / 3.0f, 65504.0f, 1e-7f, -6.1e-5f, 1.0f + 1.0f / 2048, 3.0e-8f, 0.0f, 2.5f};
    const char *params[1] = {literal};

    run_query(c, &o, "select count(*) from pg_available_extensions where name = 'vector'", 0, NULL);
    ASSERT_INT_EQ(o.failed, 0);
    if (strcmp(PQgetvalue(o.copy, 0, 0), "0") == 0) {
        fprintf(stderr, "test_pg: pgvector ausente neste servidor; ida e volta de vector/halfvec não testada\n");
        outcome_reset(&o);
        pg_conn_close(c);
        uv_run(&loop, UV_RUN_DEFAULT);
        return;
    }
    exec_ok(c, "create extension if not exists vector");
    for (int i = 0; i < 1536; i++)
        big[i] = sinf((float)i * 0.37f) / (float)(1 + i % 7);
    exec_ok(c, "create temp table vt (id int4, v vector, h halfvec)");
    copy_buf_init(&b);
    ASSERT_INT_EQ(copy_begin(&b), 0);
    ASSERT_INT_EQ(copy_tuple_begin(&b, 3), 0);
    ASSERT_INT_EQ(copy_field_int4(&b, 1), 0);
    ASSERT_INT_EQ(copy_field_vector(&b, edge, 9), 0);
    ASSERT_INT_EQ(copy_field_halfvec(&b, edge, 9), 0);
    ASSERT_INT_EQ(copy_tuple_begin(&b, 3), 0);
    ASSERT_INT_EQ(copy_field_int4(&b, 2), 0);
    ASSERT_INT_EQ(copy_field_vector(&b, big, 1536), 0);
    ASSERT_INT_EQ(copy_field_halfvec(&b, big, 1536), 0);
    ASSERT_INT_EQ(copy_end(&b), 0);
    outcome_reset(&o);
    ASSERT_INT_EQ(pg_conn_copy_in(c, "copy vt (id, v, h) from stdin (format binary)", b.data, b.len, on_result, &o),
                  PG_OK);
    uv_run(&loop, UV_RUN_DEFAULT);
    if (o.failed)
        fprintf(stderr, "copy: %s\n", o.err);
    ASSERT_INT_EQ(o.failed, 0);
    ASSERT_STR_EQ(o.cmdtuples, "2");
    for (int id = 1; id <= 2; id++) {
        vector_literal(literal, sizeof literal, id == 1 ? edge : big, id == 1 ? 9 : 1536);
        run_query(c, &o, id == 1 ? "select v::text, $1::vector::text, h::text, $1::halfvec::text from vt where id = 1"
                                 : "select v::text, $1::vector::text, h::text, $1::halfvec::text from vt where id = 2",
                  1, params);
        ASSERT_INT_EQ(o.failed, 0);
        ASSERT_INT_EQ(PQntuples(o.copy), 1);
        ASSERT_STR_EQ(PQgetvalue(o.copy, 0, 0), PQgetvalue(o.copy, 0, 1));
        ASSERT_STR_EQ(PQgetvalue(o.copy, 0, 2), PQgetvalue(o.copy, 0, 3));
    }
    run_query(c, &o, "select h::text from vt where id = 1", 0, NULL);
    ASSERT_STR_EQ(PQgetvalue(o.copy, 0, 0), "[0.099975586,-0.33325195,65504,1.1920929e-07,-6.097555e-05,1,5.9604645e-08,0,2.5]");
    copy_buf_free(&b);
    outcome_reset(&o);
    pg_conn_close(c);
    uv_run(&loop, UV_RUN_DEFAULT);
}

static void test_two_connections_concurrently(void)
{
    pg_conn *a = connect_ok(), *b = connect_ok();
    outcome oa = {0}, ob = {0};
    uint64_t start;
    const char *va[1] = {"a"}, *vb[1] = {"b"};
    uv_update_time(&loop);
    start = uv_now(&loop);
    ASSERT_INT_EQ(pg_conn_query(a, "select $1::text, pg_sleep(0.4)", 1, va, on_result, &oa), PG_OK);
    ASSERT_INT_EQ(pg_conn_query(b, "select $1::text, pg_sleep(0.4)", 1, vb, on_result, &ob), PG_OK);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_update_time(&loop);
    ASSERT_INT_EQ(oa.called, 1);
    ASSERT_INT_EQ(ob.called, 1);
    ASSERT_STR_EQ(PQgetvalue(oa.copy, 0, 0), "a");
    ASSERT_STR_EQ(PQgetvalue(ob.copy, 0, 0), "b");
    /* Both slept at the same time: well under the 0.8 s of a serial run. */
    ASSERT(uv_now(&loop) - start < 750);
    outcome_reset(&oa);
    outcome_reset(&ob);
    pg_conn_close(a);
    pg_conn_close(b);
    uv_run(&loop, UV_RUN_DEFAULT);
}

static void close_from_timer(uv_timer_t *t)
{
    pg_conn_close(t->data);
    uv_close((uv_handle_t *)t, NULL);
}

static void test_close_while_pending(void)
{
    pg_conn *c = connect_ok();
    outcome o = {0};
    uv_timer_t t;
    uint64_t start;
    ASSERT_INT_EQ(pg_conn_query(c, "select pg_sleep(2)", 0, NULL, on_result, &o), PG_OK);
    uv_timer_init(&loop, &t);
    t.data = c;
    uv_timer_start(&t, close_from_timer, 50, 0);
    uv_update_time(&loop);
    start = uv_now(&loop);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_update_time(&loop);
    ASSERT_INT_EQ(o.called, 0); /* documented: never called after close */
    ASSERT(uv_now(&loop) - start < 1500);

    /* Close while still connecting. */
    outcome_reset(&o);
    c = pg_conn_start(&loop, db_url, on_connect, &o);
    pg_conn_close(c);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_INT_EQ(o.called, 0);
}

/* A callback that closes its own connection (re-entrancy). */
static void close_in_callback(pg_conn *c, PGresult *res, const char *err, const char *sqlstate, void *data)
{
    on_result(c, res, err, sqlstate, data);
    pg_conn_close(c);
}

static void test_connection_loss(void)
{
    pg_conn *victim = connect_ok(), *killer = connect_ok();
    outcome o = {0};
    char pid[32];
    const char *values[1] = {pid};
    snprintf(pid, sizeof pid, "%d", PQbackendPID(pg_conn_raw(victim)));
    run_query(killer, &o, "select pg_terminate_backend($1::int)", 1, values);
    ASSERT_INT_EQ(o.failed, 0);
    ASSERT_STR_EQ(PQgetvalue(o.copy, 0, 0), "t");
    run_query(killer, &o, "select pg_sleep(0.2)", 0, NULL); /* let the backend go */

    outcome_reset(&o);
    {
        int rc = pg_conn_query(victim, "select 1", 0, NULL, on_result, &o);
        if (rc == PG_OK)
            uv_run(&loop, UV_RUN_DEFAULT);
        else
            snprintf(o.sqlstate, sizeof o.sqlstate, "%s", pg_conn_sqlstate(victim));
    }
    ASSERT(strncmp(o.sqlstate, "08", 2) == 0);
    ASSERT(!pg_conn_is_ok(victim));
    ASSERT_INT_EQ(pg_conn_query(victim, "select 1", 0, NULL, on_result, &o), PG_ERR_CLOSED);
    ASSERT_STR_EQ(pg_conn_sqlstate(victim), "08006");
    pg_conn_close(victim);

    outcome_reset(&o);
    ASSERT_INT_EQ(pg_conn_query(killer, "select 5", 0, NULL, close_in_callback, &o), PG_OK);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_INT_EQ(o.called, 1);
    ASSERT_STR_EQ(PQgetvalue(o.copy, 0, 0), "5");
    outcome_reset(&o);
}

/* ---- LISTEN / NOTIFY ---------------------------------------------------- */

/* What one notification wait saw. */
typedef struct notified {
    int called;        /* times the callback ran */
    int timed_out;     /* 1 when neither a note nor an error came */
    char channel[64];  /* channel of the note */
    char payload[64];  /* payload of the note */
    char err[1024];    /* pt-BR error on a lost link */
    char sqlstate[6];  /* SQLSTATE of err */
} notified;

static void on_notified(pg_conn *c, const PGnotify *note, const char *err, void *data)
{
    notified *n = data;
    n->called++;
    if (err != NULL) {
        snprintf(n->err, sizeof n->err, "%s", err);
        snprintf(n->sqlstate, sizeof n->sqlstate, "%s", pg_conn_sqlstate(c));
    } else if (note == NULL) {
        n->timed_out = 1;
    } else {
        snprintf(n->channel, sizeof n->channel, "%s", note->relname);
        snprintf(n->payload, sizeof n->payload, "%s", note->extra);
    }
}

/* Sends a NOTIFY from a timer while the listener waits on the loop. */
static void notify_from_timer(uv_timer_t *t)
{
    static outcome o;
    outcome_reset(&o);
    ASSERT_INT_EQ(pg_conn_query(t->data, "notify ragops_t, 'olá'", 0, NULL, on_result, &o), PG_OK);
    uv_close((uv_handle_t *)t, NULL);
}

static void wait_notified(pg_conn *c, notified *n, uint64_t timeout_ms)
{
    memset(n, 0, sizeof *n);
    ASSERT_INT_EQ(pg_conn_wait_notify(c, timeout_ms, on_notified, n), PG_OK);
    ASSERT_INT_EQ(n->called, 0); /* never synchronous */
    ASSERT(pg_conn_is_busy(c));
}

static void test_notifications(void)
{
    pg_conn *listener = connect_ok(), *sender = connect_ok();
    notified n;
    outcome o = {0};
    uv_timer_t t;
    char pid[32];
    const char *values[1] = {pid};
    exec_ok(listener, "listen ragops_t");
    /* Nothing arrives: the timeout ends the wait, the connection stays usable. */
    wait_notified(listener, &n, 50);
    ASSERT_INT_EQ(pg_conn_query(listener, "select 1", 0, NULL, on_result, &o), PG_ERR_BUSY);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_INT_EQ(n.called, 1);
    ASSERT_INT_EQ(n.timed_out, 1);
    exec_ok(listener, "select 1");
    /* A NOTIFY sent while waiting (no timeout) wakes the wait. */
    wait_notified(listener, &n, 0);
    uv_timer_init(&loop, &t);
    t.data = sender;
    uv_timer_start(&t, notify_from_timer, 30, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_INT_EQ(n.called, 1);
    ASSERT_INT_EQ(n.timed_out, 0);
    ASSERT_STR_EQ(n.channel, "ragops_t");
    ASSERT_STR_EQ(n.payload, "olá");
    /* A note libpq buffered during a query is delivered at once. */
    exec_ok(sender, "notify ragops_t, 'antes'");
    exec_ok(listener, "select pg_sleep(0.05)");
    wait_notified(listener, &n, 5000);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_STR_EQ(n.payload, "antes");
    /* The link lost while waiting: an error with class 08. */
    snprintf(pid, sizeof pid, "%d", PQbackendPID(pg_conn_raw(listener)));
    wait_notified(listener, &n, 0);
    run_query(sender, &o, "select pg_terminate_backend($1::int)", 1, values);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_INT_EQ(n.called, 1);
    ASSERT_STR_EQ(n.sqlstate, "08006");
    ASSERT(strstr(n.err, "perdida") != NULL);
    ASSERT(!pg_conn_is_ok(listener));
    ASSERT_INT_EQ(pg_conn_wait_notify(listener, 10, on_notified, &n), PG_ERR_CLOSED);
    outcome_reset(&o);
    pg_conn_close(listener);
    pg_conn_close(sender);
    uv_run(&loop, UV_RUN_DEFAULT);
}

/* ---- host names resolved off the loop thread ---------------------------- */

/* Appends " key='value'" (libpq quoting) to out. */
static void kv_append(char *out, size_t outlen, const char *key, const char *value)
{
    size_t n = strlen(out);
    n += (size_t)snprintf(out + n, outlen - n, " %s='", key);
    for (const char *p = value; *p != '\0' && n + 3 < outlen; p++) {
        if (*p == '\'' || *p == '\\')
            out[n++] = '\\';
        out[n++] = *p;
    }
    ASSERT(n + 2 < outlen);
    out[n++] = '\'';
    out[n] = '\0';
}

/* db_url as key=value with every option but host/hostaddr/port, then
 * host=<host> port=<port> (port NULL = the test server's). */
static void conninfo_with_host(char *out, size_t outlen, const char *host, const char *port)
{
    char *errmsg = NULL;
    PQconninfoOption *opts = PQconninfoParse(db_url, &errmsg);
    const char *server_port = NULL;
    ASSERT(opts != NULL);
    out[0] = '\0';
    for (PQconninfoOption *o = opts; o->keyword != NULL; o++) {
        if (o->val == NULL)
            continue;
        if (strcmp(o->keyword, "port") == 0)
            server_port = o->val;
        else if (strcmp(o->keyword, "host") != 0 && strcmp(o->keyword, "hostaddr") != 0)
            kv_append(out, outlen, o->keyword, o->val);
    }
    ASSERT(server_port != NULL);
    kv_append(out, outlen, "host", host);
    kv_append(out, outlen, "port", port ? port : server_port);
    PQconninfoFree(opts);
}

/* The test server's port, from db_url. */
static void server_port(char *out, size_t outlen)
{
    PQconninfoOption *opts = PQconninfoParse(db_url, NULL);
    ASSERT(opts != NULL);
    out[0] = '\0';
    for (PQconninfoOption *o = opts; o->keyword != NULL; o++)
        if (strcmp(o->keyword, "port") == 0 && o->val != NULL)
            snprintf(out, outlen, "%s", o->val);
    PQconninfoFree(opts);
    ASSERT(out[0] != '\0');
}

/* Connects with conninfo, which names a host: libpq must not have been
 * started yet when pg_conn_start returns (no blocking lookup inside it). */
static pg_conn *connect_by_name_ok(const char *conninfo)
{
    outcome o = {0};
    pg_conn *c = pg_conn_start(&loop, conninfo, on_connect, &o);
    ASSERT(c != NULL);
    ASSERT_INT_EQ(o.called, 0);
    ASSERT(pg_conn_raw(c) == NULL); /* still resolving on the threadpool */
    ASSERT(pg_conn_is_busy(c));
    ASSERT(!pg_conn_is_ok(c));
    ASSERT_INT_EQ(pg_conn_query(c, "select 1", 0, NULL, on_result, &o), PG_ERR_BUSY);
    uv_run(&loop, UV_RUN_DEFAULT);
    if (o.failed)
        fprintf(stderr, "conexão por nome falhou: %s\n", o.err);
    ASSERT_INT_EQ(o.called, 1);
    ASSERT_INT_EQ(o.failed, 0);
    ASSERT(pg_conn_is_ok(c));
    return c;
}

static void test_resolve_localhost(void)
{
    char conninfo[2048], port[32], uri[2048];
    outcome o = {0};
    const char *at;
    pg_conn *c;
    server_port(port, sizeof port);

    /* key=value form. The name is kept for libpq (TLS, pgpass, messages). */
    conninfo_with_host(conninfo, sizeof conninfo, "localhost", NULL);
    c = connect_by_name_ok(conninfo);
    ASSERT_STR_EQ(PQhost(pg_conn_raw(c)), "localhost");
    ASSERT_STR_EQ(PQhostaddr(pg_conn_raw(c)), "127.0.0.1");
    run_query(c, &o, "select host(inet_server_addr())", 0, NULL);
    ASSERT_INT_EQ(o.failed, 0);
    ASSERT_STR_EQ(PQgetvalue(o.copy, 0, 0), "127.0.0.1");
    outcome_reset(&o);
    pg_conn_close(c);

    /* URI form: the same URL with "localhost" instead of 127.0.0.1. */
    at = strstr(db_url, "127.0.0.1");
    ASSERT(at != NULL);
    snprintf(uri, sizeof uri, "%.*slocalhost%s", (int)(at - db_url), db_url, at + strlen("127.0.0.1"));
    c = connect_by_name_ok(uri);
    ASSERT_STR_EQ(PQhost(pg_conn_raw(c)), "localhost");
    pg_conn_close(c);

    /* Multi-host list with one port per host: the unresolvable name is
     * skipped, localhost:1 is refused, localhost:<server> answers. The ports
     * must stay paired with their hosts after the expansion. */
    {
        char ports[128];
        snprintf(ports, sizeof ports, "%s,1,%s", port, port);
        conninfo_with_host(conninfo, sizeof conninfo, "nao-existe.invalid,localhost,localhost", ports);
    }
    c = connect_by_name_ok(conninfo);
    ASSERT_STR_EQ(PQhost(pg_conn_raw(c)), "localhost");
    ASSERT_STR_EQ(PQport(pg_conn_raw(c)), port);
    pg_conn_close(c);

    /* A name mixed with a numeric address and a single port. */
    conninfo_with_host(conninfo, sizeof conninfo, "localhost,127.0.0.1", NULL);
    c = connect_by_name_ok(conninfo);
    ASSERT_STR_EQ(PQhost(pg_conn_raw(c)), "localhost");
    pg_conn_close(c);

    /* Nothing to resolve (numeric host): libpq starts at once, as before. */
    c = pg_conn_start(&loop, db_url, on_connect, &o);
    ASSERT(c != NULL);
    ASSERT(pg_conn_raw(c) != NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_INT_EQ(o.called, 1);
    ASSERT_INT_EQ(o.failed, 0);
    pg_conn_close(c);
    uv_run(&loop, UV_RUN_DEFAULT);
}

/* Expects the pt-BR resolution error for conninfo, naming `name`. */
static void expect_resolve_error(const char *conninfo, const char *name, const char *secret)
{
    outcome o = {0};
    char want[256];
    pg_conn *c = pg_conn_start(&loop, conninfo, on_connect, &o);
    ASSERT(c != NULL);
    ASSERT_INT_EQ(o.called, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_INT_EQ(o.called, 1);
    ASSERT_INT_EQ(o.failed, 1);
    snprintf(want, sizeof want, "falha ao resolver o host do PostgreSQL \"%s\": ", name);
    if (strstr(o.err, want) != o.err)
        fprintf(stderr, "mensagem inesperada: %s\n", o.err);
    ASSERT(strstr(o.err, want) == o.err);
    ASSERT(strlen(o.err) > strlen(want)); /* uv_strerror's explanation follows */
    ASSERT(strstr(o.err, secret) == NULL);
    ASSERT(strchr(o.err, '\n') == NULL);
    ASSERT_STR_EQ(pg_conn_error(c), o.err);
    ASSERT_STR_EQ(pg_conn_sqlstate(c), PG_SQLSTATE_CONNECTION_FAILURE);
    ASSERT(!pg_conn_is_ok(c));
    ASSERT(!pg_conn_is_busy(c));
    ASSERT_INT_EQ(pg_conn_query(c, "select 1", 0, NULL, on_result, &o), PG_ERR_CLOSED);
    ASSERT_INT_EQ(o.called, 1);
    pg_conn_close(c);
    uv_run(&loop, UV_RUN_DEFAULT);
}

static void close_in_connect(pg_conn *c, const char *err, void *data)
{
    on_connect(c, err, data);
    pg_conn_close(c);
}

static void test_resolve_failure(void)
{
    outcome o = {0};
    pg_conn *c;
    expect_resolve_error("host=nao-existe.invalid port=5432 user=postgres password=segredo-dns connect_timeout=5",
                         "nao-existe.invalid", "segredo-dns");
    expect_resolve_error("postgresql://postgres:segredo-uri@nao-existe.invalid:5432/postgres",
                         "nao-existe.invalid", "segredo-uri");
    /* Every name of a list fails: the first one is reported. */
    expect_resolve_error("host=nao-existe.invalid,tambem-nao.invalid port=5432 password=segredo-lista",
                         "nao-existe.invalid", "segredo-lista");

    /* The connect callback may close the connection it reports. */
    c = pg_conn_start(&loop, "host=nao-existe.invalid", close_in_connect, &o);
    ASSERT(c != NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_INT_EQ(o.called, 1);
    ASSERT_INT_EQ(o.failed, 1);
}

static void test_close_during_resolution(void)
{
    char conninfo[2048];
    outcome o = {0};
    pg_conn *c;
    uv_timer_t t;

    /* Closed right away: the lookup is cancelled or its late result ignored. */
    conninfo_with_host(conninfo, sizeof conninfo, "localhost", NULL);
    c = pg_conn_start(&loop, conninfo, on_connect, &o);
    ASSERT(c != NULL);
    ASSERT(pg_conn_raw(c) == NULL);
    pg_conn_close(c);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_INT_EQ(o.called, 0);

    /* Several lookups in flight, one failing, closed right away. */
    conninfo_with_host(conninfo, sizeof conninfo, "localhost,nao-existe.invalid,localhost", NULL);
    c = pg_conn_start(&loop, conninfo, on_connect, &o);
    ASSERT(c != NULL);
    pg_conn_close(c);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_INT_EQ(o.called, 0);

    /* Closed from the loop, racing the threadpool: no callback either way. */
    for (int i = 0; i < 20; i++) {
        c = pg_conn_start(&loop, i % 2 ? "host=nao-existe.invalid" : conninfo, on_connect, &o);
        ASSERT(c != NULL);
        uv_timer_init(&loop, &t);
        t.data = c;
        uv_timer_start(&t, close_from_timer, 0, 0);
        uv_run(&loop, UV_RUN_DEFAULT);
        ASSERT_INT_EQ(o.called, 0);
    }
}

/* ---- Lua binding through the bridge ------------------------------------ */

static const char lua_chunk[] =
    "local url = ...\n"
    "local pg = require 'ragops.pg'\n"
    "local core = require 'ragops.core'\n"
    "assert(pg.quote_ident('a\"b') == '\"a\"\"b\"')\n"
    "assert(not pcall(pg.quote_ident, ''))\n"
    "-- connect failure: nil, pt-BR message, no password\n"
    "local bad, e = pg.connect('host=127.0.0.1 port=1 password=segredo-lua connect_timeout=5')\n"
    "assert(bad == nil and e:find('falha ao conectar', 1, true) and not e:find('segredo-lua', 1, true), e)\n"
    "local conn, err = pg.connect(url)\n"
    "assert(conn, err)\n"
    "assert(conn:is_ok() and tostring(conn):find('aberta'))\n"
    "-- parameters and type conversion (trailing nil counts)\n"
    "local rows, qerr = conn:query([[select $1::int4 as i, $2::int8 as big, $3::float8 as f, $4::bool as b,\n"
    "  $5::text as t, $6::text as n, $7::text[] as arr, cardinality($7::text[]) as card,\n"
    "  9007199254740993::int8 as huge, $8::text as last, 2.5::numeric as num, $9::float8 as ff, $10::text as s]],\n"
    "  7, 2^40, 0.1, true, 'x\"y', nil, {'a', 'b\"c', 'd\\\\e'}, nil, 1e300, 3)\n"
    "assert(rows, qerr)\n"
    "assert(#rows == 1 and rows.affected == 1, 'linhas')\n"
    "local r = rows[1]\n"
    "assert(r.i == 7 and r.big == 2^40 and r.f == 0.1 and r.b == true, 'tipos')\n"
    "assert(r.t == 'x\"y' and r.n == nil and r.last == nil and r.card == 3, 'nulos')\n"
    "assert(r.arr == [[{a,\"b\\\"c\",\"d\\\\e\"}]], r.arr)\n"
    "assert(r.huge == '9007199254740993', tostring(r.huge))\n"
    "assert(r.num == '2.5' and r.ff == 1e300 and r.s == '3', 'numeric/float/inteiro')\n"
    "assert(rows.columns[1] == 'i' and rows.columns[13] == 's' and #rows.columns == 13)\n"
    "local any = assert(conn:query('select count(*)::int as c from unnest($1::text[]) x where x = any($2::text[])', {'a', 'b'}, {}))\n"
    "assert(any[1].c == 0)\n"
    "any = assert(conn:query('select count(*)::int as c from unnest($1::text[]) x where x = any($2::text[])', {'a', 'b'}, {'b', 'z'}))\n"
    "assert(any[1].c == 1)\n"
    "-- SQL error: nil, message, sqlstate\n"
    "local none, qe, st = conn:query('select * from nao_existe')\n"
    "assert(none == nil and qe:find('nao_existe', 1, true) and st == '42P01', qe)\n"
    "assert(not pcall(conn.query, conn, 'select $1', {{}}))\n"
    "-- copy_documents\n"
    "assert(conn:query([[create temp table st (entity_type text, entity_id text, chunk_index int4, content text,\n"
    "  content_hash text, metadata text, embedding_model text, source_updated_at text, source_hash int8, embedding real[])]]))\n"
    "local vb = test_vecbatch -- { {0.5, -1.25, 3}, {1e-20, 0, -7} }, built in C\n"
    "local docs = {\n"
    "  { entity_type = 'verse', entity_id = 'Gn 1:1', chunk_index = 0, content = 'No princípio', content_hash = 'h1',\n"
    "    metadata = '{\"livro\":\"Gn\"}', embedding_model = 'm', source_updated_at = '2024-01-01', vec = 2,\n"
    "    source_hash = '-9223372036854775807' },\n"
    "  { entity_type = 'verse', entity_id = 42, chunk_index = 3, content = \"aspas ' \\\" \", content_hash = 'h2',\n"
    "    embedding_model = 'm', vec = 1 },\n"
    "}\n"
    "local n, ce, cs = conn:copy_documents('st', docs, vb)\n"
    "assert(n == 2, ce)\n"
    "local back = assert(conn:query('select * from st order by chunk_index'))\n"
    "assert(#back == 2)\n"
    "assert(back[1].entity_id == 'Gn 1:1' and back[1].content == 'No princípio' and back[1].metadata == '{\"livro\":\"Gn\"}')\n"
    "assert(back[1].embedding == '{1e-20,0,-7}', back[1].embedding)\n"
    "assert(back[2].entity_id == '42' and back[2].metadata == nil and back[2].source_updated_at == nil)\n"
    "assert(back[1].source_hash == '-9223372036854775807' and back[2].source_hash == nil, tostring(back[1].source_hash))\n"
    "assert(not pcall(conn.copy_documents, conn, 'st', { { entity_type = 'x', entity_id = 'y', chunk_index = 0,\n"
    "  content = 'c', content_hash = 'h', embedding_model = 'm', vec = 1, source_hash = '12x' } }, vb))\n"
    "-- query_page: each row's fingerprint; the rows of a fingerprint set come back as keys\n"
    "local q = [[select * from (values (1, 'a', false), (2, 'b', false), (3, null, true))\n"
    "  as t(id, txt, __ragops_open_failure) order by id]]\n"
    "local all = assert(conn:query_page({ seed = 's', key = 'id' }, q))\n"
    "assert(#all == 3 and all.skipped == 0 and all[1].txt == 'a' and all[3].txt == nil)\n"
    "assert(all[1].__ragops_fp:match('^%-?%d+$') and all[1].__ragops_fp ~= all[2].__ragops_fp)\n"
    "assert(all.types.id == 23 and all.types.txt == 25)\n"
    "local again = assert(conn:query_page({ seed = 's', key = 'id' }, q))\n"
    "assert(again[3].__ragops_fp == all[3].__ragops_fp)\n"
    "local other = assert(conn:query_page({ seed = 't', key = 'id' }, q))\n"
    "assert(other[1].__ragops_fp ~= all[1].__ragops_fp)\n"
    "-- the helper column is not part of the fingerprint\n"
    "local flipped = assert(conn:query_page({ seed = 's', key = 'id' },\n"
    "  [[select 1 as id, 'a' as txt, true as __ragops_open_failure]]))\n"
    "assert(flipped[1].__ragops_fp == all[1].__ragops_fp)\n"
    "local set = pg.fpset()\n"
    "set:add(all[2].__ragops_fp); set:add(all[3].__ragops_fp)\n"
    "local page = assert(conn:query_page({ seed = 's', key = 'id', set = set }, q))\n"
    "assert(page.skipped == 1 and page[2] == 2 and page[1].txt == 'a')\n"
    "-- an open failure keeps a member's row whole (and it counts as seen)\n"
    "assert(type(page[3]) == 'table' and page[3].__ragops_fp == all[3].__ragops_fp)\n"
    "assert(set:stats().members == 2 and set:stats().unseen == 0)\n"
    "-- load_fingerprints: column 0 into the set, NULL counted as unknown\n"
    "local loaded = pg.fpset()\n"
    "local ln = conn:load_fingerprints(loaded, [[select * from (values ('5', 10), (null, 11), ('-7', 12), ('5', 13))\n"
    "  as t(fp, id)]])\n"
    "assert(ln == 4, tostring(ln))\n"
    "local ls = loaded:stats()\n"
    "assert(ls.members == 2 and ls.unknown == 1 and ls.unseen == 2)\n"
    "assert(loaded:contains('-7') and not loaded:contains('6') and loaded:stats().unseen == 1)\n"
    "local bad, be, bs = conn:load_fingerprints(loaded, [[select 'x' as fp]])\n"
    "assert(bad == nil and be:find('impressões', 1, true) and bs == '53200', tostring(be))\n"
    "assert(back[2].content == \"aspas ' \\\" \" and back[2].embedding == '{0.5,-1.25,3}', back[2].embedding)\n"
    "assert(not pcall(conn.copy_documents, conn, 'st', { { entity_type = 'x', entity_id = 'y', chunk_index = 0,\n"
    "  content = 'c', content_hash = 'h', embedding_model = 'm', vec = 3 } }, vb))\n"
    "local nn, ne, ns = conn:copy_documents('nao\"existe', docs, vb)\n"
    "assert(nn == nil and ns == '42P01' and ne:find('nao\"existe', 1, true), ne)\n"
    "-- one operation at a time; a second coroutine gets a Lua error\n"
    "local other_err\n"
    "core.spawn(function()\n"
    "  local ok, e2 = pcall(conn.query, conn, 'select 1')\n"
    "  other_err = not ok and e2 or 'sem erro'\n"
    "end)\n"
    "assert(conn:query('select pg_sleep(0.1)'))\n"
    "assert(other_err and other_err:find('conexão ocupada', 1, true), other_err)\n"
    "-- close while another coroutine waits: it gets nil, \"conexão fechada\"\n"
    "local waiter = {}\n"
    "core.spawn(function() waiter.r, waiter.e = conn:query('select pg_sleep(3)') end)\n"
    "core.sleep(50)\n"
    "local t0 = core.now()\n"
    "conn:close()\n"
    "conn:close()\n"
    "core.sleep(10)\n"
    "assert(waiter.r == nil and waiter.e == 'conexão fechada', tostring(waiter.e))\n"
    "assert(core.now() - t0 < 1000)\n"
    "assert(not conn:is_ok())\n"
    "local cr, cm = conn:query('select 1')\n"
    "assert(cr == nil and cm == 'conexão fechada')\n"
    "assert(select(2, conn:copy_documents('st', docs, vb)) == 'conexão fechada')\n"
    "-- connection loss: class 08, is_ok false\n"
    "local victim = assert(pg.connect(url))\n"
    "local killer = assert(pg.connect(url))\n"
    "local pid = assert(victim:query('select pg_backend_pid() as p'))[1].p\n"
    "assert(killer:query('select pg_terminate_backend($1)', pid))\n"
    "core.sleep(200)\n"
    "local lr, le, ls = victim:query('select 1')\n"
    "assert(lr == nil and ls:sub(1, 2) == '08', tostring(le) .. ' ' .. tostring(ls))\n"
    "assert(not victim:is_ok())\n"
    "killer:close()\n"
    "-- wait_notification: a note, a timeout (false), an interruption\n"
    "local lis = assert(pg.connect(url))\n"
    "local snd = assert(pg.connect(url))\n"
    "assert(lis:query('listen ragops_lua'))\n"
    "assert(lis:wait_notification(20) == false)\n"
    "core.spawn(function() core.sleep(20); assert(snd:query([[select pg_notify('ragops_lua', 'x1')]])) end)\n"
    "local note = assert(lis:wait_notification())\n"
    "assert(note.channel == 'ragops_lua' and note.payload == 'x1' and note.pid > 0, note.payload)\n"
    "assert(not pcall(lis.wait_notification, lis, -1))\n"
    "local waited = {}\n"
    "core.spawn(function() waited.r, waited.e, waited.s = lis:wait_notification() end)\n"
    "core.sleep(20)\n"
    "assert(core.cancel_all() >= 1)\n"
    "core.sleep(10)\n"
    "assert(waited.r == nil and waited.e == 'interrompido' and waited.s == '57014', tostring(waited.e))\n"
    "snd:close()\n"
    "-- left open on purpose: __gc must close it\n"
    "local _ = assert(pg.connect(url))\n"
    "return 0\n";

/* The batch copy_documents writes in the Lua test, as the embedding client
 * builds one (a C float array). */
static void push_test_vecbatch(lua_State *L)
{
    static const float rows[2][3] = {{0.5f, -1.25f, 3}, {1e-20f, 0, -7}};
    rg_vecbatch_register(L);
    rg_vecbatch *vb = rg_vecbatch_push_new(L, 2, 3);
    memcpy(vb->data, rows, sizeof rows);
}

static void test_lua_binding(void)
{
    const char *src = getenv("RAGOPS_SOURCE_DIR");
    char dir[4096];
    lua_State *L;
    char *argv[1];
    int status;
    snprintf(dir, sizeof dir, "%s/lua", src ? src : RAGOPS_SOURCE_DIR);
    L = rg_bridge_open(dir);
    ASSERT(L != NULL);
    push_test_vecbatch(L);
    lua_setglobal(L, "test_vecbatch");
    ASSERT_INT_EQ(luaL_loadbuffer(L, lua_chunk, sizeof lua_chunk - 1, "=test_pg_lua"), 0);
    argv[0] = (char *)db_url;
    status = rg_bridge_run_main(L, 1, argv);
    ASSERT_INT_EQ(status, 0);
    rg_bridge_close(L);
}

int main(void)
{
    db_url = getenv("RAGOPS_TEST_DATABASE_URL");
    if (db_url == NULL || db_url[0] == '\0') {
        fprintf(stderr, "test_pg: defina RAGOPS_TEST_DATABASE_URL (ex.: postgresql://postgres@127.0.0.1:55401/postgres); "
                        "este teste precisa de um PostgreSQL real\n");
        return 1;
    }
    ASSERT_INT_EQ(uv_loop_init(&loop), 0);
    test_connect_failure();
    test_params_and_errors();
    test_notices_kept_not_printed();
    test_copy_round_trip();
    test_pgvector_round_trip();
    test_two_connections_concurrently();
    test_close_while_pending();
    test_connection_loss();
    test_notifications();
    test_resolve_localhost();
    test_resolve_failure();
    test_close_during_resolution();
    ASSERT_INT_EQ(uv_run(&loop, UV_RUN_DEFAULT), 0);
    ASSERT_INT_EQ(uv_loop_close(&loop), 0);
    test_lua_binding();
    printf("test_pg: ok\n");
    return 0;
}
