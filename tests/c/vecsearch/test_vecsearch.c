/*
 * test_vecsearch.c: exact top-k cosine search (vecsearch.c): real[] text
 * parsing and its errors, ranking and ties, k larger than the data, and the
 * Lua module ragops.vecsearch on a plain Lua state (no loop needed: the
 * module is synchronous).
 */
#include "core/bridge.h"
#include "test_assert.h"
#include "core/vecbatch.h"
#include "vecsearch/vecsearch.h"

#include <lauxlib.h>
#include <lualib.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

static int parse(const char *text, float *out, int dim, char *err)
{
    return rg_parse_real_array(text, strlen(text), out, dim, err, 160);
}

static void test_parse(void)
{
    float v[4];
    char err[160];
    ASSERT_INT_EQ(parse("{0.5,-1,2e-05,3}", v, 4, err), 4);
    ASSERT_NEAR(v[0], 0.5, 1e-7);
    ASSERT_NEAR(v[1], -1.0, 1e-7);
    ASSERT_NEAR(v[2], 2e-05, 1e-10);
    ASSERT_NEAR(v[3], 3.0, 1e-7);
    ASSERT_INT_EQ(parse(" { 1 , 2 ,3,4 } ", v, 4, err), 4);
    ASSERT_NEAR(v[1], 2.0, 1e-7);

    ASSERT_INT_EQ(parse("{1,2,3}", v, 4, err), -1);
    ASSERT(strstr(err, "3 valores; esperado 4") != NULL);
    ASSERT_INT_EQ(parse("{1,2,3,4,5}", v, 4, err), -1);
    ASSERT(strstr(err, "mais de 4") != NULL);
    ASSERT_INT_EQ(parse("{1,NULL,3,4}", v, 4, err), -1);
    ASSERT(strstr(err, "elemento 2 NULL") != NULL);
    ASSERT_INT_EQ(parse("{1,abc,3,4}", v, 4, err), -1);
    ASSERT(strstr(err, "elemento 2 inválido") != NULL);
    ASSERT_INT_EQ(parse("{1,NaN,3,4}", v, 4, err), -1);
    ASSERT_INT_EQ(parse("[1,2,3,4]", v, 4, err), -1);
    ASSERT(strstr(err, "'{'") != NULL);
    ASSERT_INT_EQ(parse("{1,2,3,4", v, 4, err), -1);
    ASSERT(strstr(err, "truncado") != NULL);
    ASSERT_INT_EQ(parse("{1,2,3,4}x", v, 4, err), -1);
    ASSERT_INT_EQ(parse("{1,,3,4}", v, 4, err), -1);
    ASSERT_INT_EQ(parse("{}", v, 4, err), -1);
    /* Length is honoured: the same text cut short is truncated. */
    ASSERT_INT_EQ(rg_parse_real_array("{1,2,3,4}", 8, v, 4, err, sizeof err), -1);
}

static void test_ranking(void)
{
    /* Two queries in 3-d: x axis and y axis (query norms do not matter). */
    const float queries[] = {2, 0, 0, 0, 5, 0};
    rg_vecsearch s;
    char err[160];
    ASSERT_INT_EQ(rg_vecsearch_init(&s, queries, 2, 3, 2), 0);
    ASSERT_INT_EQ(rg_vecsearch_add_text(&s, 10, "{1,0,0}", 7, err, sizeof err), 0);   /* x: 1 */
    ASSERT_INT_EQ(rg_vecsearch_add_text(&s, 11, "{0,3,0}", 7, err, sizeof err), 0);   /* y: 1 */
    ASSERT_INT_EQ(rg_vecsearch_add_text(&s, 12, "{1,1,0}", 7, err, sizeof err), 0);   /* both 0.707 */
    ASSERT_INT_EQ(rg_vecsearch_add_text(&s, 13, "{-1,0,0}", 8, err, sizeof err), 0);  /* x: -1 */
    ASSERT_INT_EQ(rg_vecsearch_add_text(&s, 14, "{0,0,0}", 7, err, sizeof err), 0);   /* zero: 0 */
    ASSERT_INT_EQ(rg_vecsearch_add_text(&s, 15, "{1,0}", 5, err, sizeof err), -1);    /* wrong dim */
    ASSERT_INT_EQ(s.rows, 5);

    rg_vecsearch_hit hits[2];
    ASSERT_INT_EQ(rg_vecsearch_results(&s, 0, hits), 2);
    ASSERT_INT_EQ(hits[0].label, 10);
    ASSERT_NEAR(hits[0].score, 1.0, 1e-6);
    ASSERT_INT_EQ(hits[1].label, 12);
    ASSERT_NEAR(hits[1].score, sqrt(0.5), 1e-6);
    ASSERT_INT_EQ(rg_vecsearch_results(&s, 1, hits), 2);
    ASSERT_INT_EQ(hits[0].label, 11);
    ASSERT_INT_EQ(hits[1].label, 12);
    ASSERT_INT_EQ(rg_vecsearch_results(&s, 2, hits), 0);
    rg_vecsearch_free(&s);
    rg_vecsearch_free(&s); /* idempotent */

    /* Ties keep the smaller label whatever the arrival order; k > rows. */
    const float q[] = {1, 0};
    rg_vecsearch_hit many[5];
    ASSERT_INT_EQ(rg_vecsearch_init(&s, q, 1, 2, 5), 0);
    const float same[] = {4, 0};
    rg_vecsearch_add_vector(&s, 7, same);
    rg_vecsearch_add_vector(&s, 3, same);
    rg_vecsearch_add_vector(&s, 5, same);
    ASSERT_INT_EQ(rg_vecsearch_results(&s, 0, many), 3);
    ASSERT_INT_EQ(many[0].label, 3);
    ASSERT_INT_EQ(many[1].label, 5);
    ASSERT_INT_EQ(many[2].label, 7);
    rg_vecsearch_free(&s);

    /* A larger stream: the heap keeps exactly the k best. */
    ASSERT_INT_EQ(rg_vecsearch_init(&s, q, 1, 2, 3), 0);
    for (int i = 0; i < 1000; i++) {
        double angle = (double)((i * 7919) % 1000) / 1000.0 * 3.14159;
        float v[2] = {(float)cos(angle), (float)sin(angle)};
        rg_vecsearch_add_vector(&s, i, v);
    }
    ASSERT_INT_EQ(rg_vecsearch_results(&s, 0, many), 3);
    /* angles 0, 1/1000, 2/1000 of pi come from i with (i*7919)%1000 = 0,1,2 */
    ASSERT_INT_EQ(many[0].label, 0);
    ASSERT_INT_EQ((many[1].label * 7919) % 1000, 1);
    ASSERT_INT_EQ((many[2].label * 7919) % 1000, 2);
    ASSERT(many[0].score >= many[1].score && many[1].score >= many[2].score);
    rg_vecsearch_free(&s);

    ASSERT_INT_EQ(rg_vecsearch_init(&s, q, 1, 2, 0), -1);
    rg_vecsearch_free(&s);
    ASSERT_INT_EQ(rg_vecsearch_init(&s, q, 1, 2, RG_VECSEARCH_MAX_K + 1), -1);
    rg_vecsearch_free(&s);
}

static void test_lua_module(void)
{
    lua_State *L = luaL_newstate();
    ASSERT(L != NULL);
    luaL_openlibs(L);
    lua_pushcfunction(L, luaopen_ragops_vecsearch);
    lua_call(L, 0, 1);
    lua_setglobal(L, "vecsearch");
    rg_vecbatch *b = rg_vecbatch_push_new(L, 2, 3);
    float *row0 = rg_vecbatch_row(b, 0), *row1 = rg_vecbatch_row(b, 1);
    row0[0] = 1; /* query 1: x axis */
    row1[2] = 0.25f; /* query 2: z axis */
    lua_setglobal(L, "queries");
    const char *script =
        "local s = vecsearch.new(queries, 2)\n"
        "assert(s:add(1, '{0,0,1}'))\n"
        "assert(s:add(2, '{1,0,0.5}'))\n"
        "assert(s:add(3, '{0.5,0,0}'))\n"
        "local ok, err = s:add(4, '{1,2}')\n"
        "assert(ok == nil and err:find('esperado 3'), err)\n"
        "assert(s:rows() == 3)\n"
        "local r = s:results(1)\n"
        "assert(#r == 2 and r[1].label == 3 and r[2].label == 2, 'ordem x')\n"
        "assert(math.abs(r[1].score - 1) < 1e-6)\n"
        "r = s:results(2)\n"
        "assert(r[1].label == 1 and r[2].label == 2, 'ordem z')\n"
        "assert(not pcall(s.results, s, 3))\n"
        "assert(not pcall(vecsearch.new, queries, 0))\n"
        "assert(not pcall(vecsearch.new, {}, 2))\n"
        "assert(vecsearch.vector_literal(queries, 2) == '[0,0,0.25]', vecsearch.vector_literal(queries, 2))\n"
        "assert(not pcall(vecsearch.vector_literal, queries, 3))\n";
    if (luaL_dostring(L, script) != 0) {
        fprintf(stderr, "erro no script: %s\n", lua_tostring(L, -1));
        ASSERT(0);
    }
    lua_close(L);
}

int main(void)
{
    test_parse();
    test_ranking();
    test_lua_module();
    printf("test_vecsearch: ok\n");
    return 0;
}
