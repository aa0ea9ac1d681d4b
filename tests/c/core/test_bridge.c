/*
 * test_bridge.c: the coroutine scheduler and the ragops.core module, run
 * through the real bridge (Lua state + libuv loop), one fresh state per case.
 */
#include "core/bridge.h"
#include "core/vecbatch.h"
#include "test_assert.h"

#include <lualib.h>
#include <unistd.h>

/* Sets the global test_vecbatch to a batch {{3, 4}, {4, 3}, {-3, -4}} built
 * in C, as the embedding client builds one. */
static void set_test_vecbatch(lua_State *L)
{
    static const float rows[3][2] = {{3, 4}, {4, 3}, {-3, -4}};
    rg_vecbatch_register(L);
    rg_vecbatch *b = rg_vecbatch_push_new(L, 3, 2);
    memcpy(b->data, rows, sizeof rows);
    lua_setglobal(L, "test_vecbatch");
}

/* Runs a Lua chunk as the main coroutine; returns its exit status. */
static int run_chunk(const char *code)
{
    char lua_dir[4096];
    const char *src = getenv("RAGOPS_SOURCE_DIR");
    snprintf(lua_dir, sizeof lua_dir, "%s/lua", src ? src : RAGOPS_SOURCE_DIR);
    lua_State *L = rg_bridge_open(lua_dir);
    ASSERT(L != NULL);
    set_test_vecbatch(L);
    if (luaL_loadstring(L, code) != 0) {
        fprintf(stderr, "erro de sintaxe: %s\n", lua_tostring(L, -1));
        abort();
    }
    char *argv[] = {"um", "dois"};
    int status = rg_bridge_run_main(L, 2, argv);
    rg_bridge_close(L);
    return status;
}

int main(void)
{
    /* The main coroutine's return value is the exit status; args arrive. */
    ASSERT_INT_EQ(run_chunk("local a, b = ...; assert(a == 'um' and b == 'dois'); return 5"), 5);

    /* sleep yields without blocking and takes at least the time asked. */
    ASSERT_INT_EQ(run_chunk(
        "local core = require 'ragops.core'\n"
        "local t0 = core.now(); core.sleep(30)\n"
        "return (core.now() - t0 >= 29) and 0 or 1"), 0);

    /* spawn + suspend/wake: values travel both ways, order is FIFO. */
    ASSERT_INT_EQ(run_chunk(
        "local core = require 'ragops.core'\n"
        "local main = coroutine.running(); local log = {}\n"
        "for i = 1, 3 do core.spawn(function(x) log[#log+1] = x; if x == 3 then core.wake(main, 'fim') end end, i) end\n"
        "local v = core.suspend()\n"
        "return (v == 'fim' and table.concat(log, ',') == '1,2,3') and 0 or 1"), 0);

    /* core.isatty agrees with isatty(3) on each standard fd; others raise. */
    {
        char code[512];
        snprintf(code, sizeof code,
                 "local core = require 'ragops.core'\n"
                 "local ok = pcall(core.isatty, 7)\n"
                 "return (not ok and core.isatty(0) == %s and core.isatty(2) == %s) and 0 or 1",
                 isatty(0) ? "true" : "false", isatty(2) ? "true" : "false");
        ASSERT_INT_EQ(run_chunk(code), 0);
    }

    /* Waking a coroutine that is not suspended is a Lua error (misuse). */
    ASSERT_INT_EQ(run_chunk(
        "local core = require 'ragops.core'\n"
        "local ok, err = pcall(core.wake, coroutine.create(function() end))\n"
        "return (not ok and err:find('não está suspensa')) and 0 or 1"), 0);

    /* A coroutine still sleeping when the main one returns is cleaned up
     * (ASan/LSan would report the pending sleep request otherwise). */
    ASSERT_INT_EQ(run_chunk(
        "local core = require 'ragops.core'\n"
        "core.spawn(function() core.sleep(60000) end)\n"
        "core.sleep(5); return 0"), 0);

    /* An error escaping the main coroutine gives status 2. */
    ASSERT_INT_EQ(run_chunk("require('ragops.core').sleep(1); error('boom')"), 2);

    /* Queue, group and semaphore from ragops.util.sched on the real loop. */
    ASSERT_INT_EQ(run_chunk(
        "local core, sched = require 'ragops.core', require 'ragops.util.sched'\n"
        "local s = sched.real(); local q = sched.queue(s, 2); local g = sched.group(s)\n"
        "local sem = sched.semaphore(s, 2); local inside, peak, got = 0, 0, 0\n"
        "for _ = 1, 4 do g:spawn(function() while true do local x = q:pop(); if not x then return end\n"
        "  sem:acquire(); inside = inside + 1; peak = math.max(peak, inside); core.sleep(2)\n"
        "  inside = inside - 1; sem:release(); got = got + x end end) end\n"
        "for i = 1, 20 do q:push(i) end; q:close(); g:wait()\n"
        "return (got == 210 and peak == 2) and 0 or 1"), 0);

    /* A task error is re-raised by group:wait with its traceback. */
    ASSERT_INT_EQ(run_chunk(
        "local sched = require 'ragops.util.sched'; local g = sched.group(sched.real())\n"
        "g:spawn(function() error('falhou aqui') end)\n"
        "local ok, err = pcall(g.wait, g)\n"
        "return (not ok and err:find('falhou aqui') and err:find('traceback')) and 0 or 1"), 0);

    /* Content hash: deterministic, 32 hex chars, argument boundaries matter. */
    ASSERT_INT_EQ(run_chunk(
        "local core = require 'ragops.core'\n"
        "local h = core.hash('ab', 'c')\n"
        "assert(#h == 32 and h:match('^%x+$'))\n"
        "assert(h == core.hash('ab', 'c'))\n"
        /* pinned: stored content_hash values must survive any rewrite of core.hash */
        "assert(h == 'f2eda2708bcfd51cc05c0ee4c9f60440', h)\n"
        "assert(core.hash('', 'olá') == 'c9dcc3c019c644b9ea33dff644b9a440')\n"
        "assert(core.utf8_length('olá, 😀') == 6 and core.utf8_length('') == 0)\n"
        "return (h ~= core.hash('a', 'bc')) and 0 or 1"), 0);

    /* vecbatch: count, dim, vector, cosine; bad index is an error. */
    ASSERT_INT_EQ(run_chunk(
        "local b = test_vecbatch\n"
        "assert(#b == 3 and b:dim() == 2 and b:vector(2)[1] == 4)\n"
        "assert(math.abs(b:cosine(1, b, 3) + 1) < 1e-6)\n"
        "assert(math.abs(b:cosine(1, b, 2) - 0.96) < 1e-6)\n"
        "return (not pcall(b.vector, b, 4)) and 0 or 1"), 0);

    /* Calling an async primitive outside a coroutine is refused. */
    {
        char lua_dir[4096];
        const char *src = getenv("RAGOPS_SOURCE_DIR");
        snprintf(lua_dir, sizeof lua_dir, "%s/lua", src ? src : RAGOPS_SOURCE_DIR);
        lua_State *L = rg_bridge_open(lua_dir);
        ASSERT(luaL_dostring(L, "require('ragops.core').sleep(1)") != 0);
        ASSERT(strstr(lua_tostring(L, -1), "fora de uma corrotina") != NULL);
        rg_bridge_close(L);
    }
    printf("test_bridge: ok\n");
    return 0;
}
