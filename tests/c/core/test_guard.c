/*
 * test_guard.c: the bounds the bridge puts around plan code, through the
 * real bridge: the heap caps (the whole run's and a call's), the C-stack
 * guard of string.gsub/table.sort, the watchdog that ends a process stuck
 * in one C call, and the second SIGINT/SIGTERM that ends a process whose
 * loop is stuck. The last two run in a forked child.
 */
#include "core/bridge.h"
#include "test_assert.h"

#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* A pattern that backtracks for ages: string.find never returns. */
#define STUCK_FIND "local s = ('a'):rep(28); s:find(('a*'):rep(28) .. 'b')\n"

static void lua_dir(char *out, size_t size)
{
    const char *src = getenv("RAGOPS_SOURCE_DIR");
    snprintf(out, size, "%s/lua", src ? src : RAGOPS_SOURCE_DIR);
}

/* Runs a Lua chunk as the main coroutine; returns its exit status. */
static int run_chunk(const char *code)
{
    char dir[4096];
    lua_dir(dir, sizeof dir);
    lua_State *L = rg_bridge_open(dir);
    ASSERT(L != NULL);
    if (luaL_loadstring(L, code) != 0) {
        fprintf(stderr, "erro de sintaxe: %s\n", lua_tostring(L, -1));
        abort();
    }
    int status = rg_bridge_run_main(L, 0, NULL);
    rg_bridge_close(L);
    return status;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Waits up to timeout_s for child; kills it and fails when it is still
 * running. Returns its wait status. */
static int wait_child(pid_t child, int timeout_s)
{
    int status;
    for (int i = 0; i < timeout_s * 20; i++) {
        if (waitpid(child, &status, WNOHANG) == child)
            return status;
        sleep_ms(50);
    }
    kill(child, SIGKILL);
    waitpid(child, &status, 0);
    fprintf(stderr, "o processo filho não terminou em %d s\n", timeout_s);
    abort();
}

/* Forks a child running code with stderr (and stdout) into a pipe; returns
 * its pid and the read end in *out_fd. */
static pid_t spawn_chunk(const char *code, int *out_fd)
{
    int fds[2];
    ASSERT(pipe(fds) == 0);
    fflush(NULL);
    pid_t child = fork();
    ASSERT(child >= 0);
    if (child == 0) {
        close(fds[0]);
        dup2(fds[1], STDOUT_FILENO);
        dup2(fds[1], STDERR_FILENO);
        _exit(run_chunk(code));
    }
    close(fds[1]);
    *out_fd = fds[0];
    return child;
}

/* Everything the child wrote, until it closed its end. */
static void read_all(int fd, char *buf, size_t size)
{
    size_t used = 0;
    ssize_t n;
    while (used + 1 < size && (n = read(fd, buf + used, size - 1 - used)) > 0)
        used += (size_t)n;
    buf[used] = '\0';
    close(fd);
}

static void test_heap_caps(void)
{
    /* Strings count (one large string.rep) and the run's cap refuses them. */
    ASSERT_INT_EQ(run_chunk(
        "local core = require 'ragops.core'\n"
        "local in_use = core.heap_run_limit(0)\n"
        "core.heap_run_limit(in_use + 16 * 2^20)\n"
        "local ok, err = pcall(string.rep, 'x', 32 * 2^20)\n"
        "assert(not ok and err == 'not enough memory', tostring(err))\n"
        "assert(core.heap_refused() == 'run')\n"
        "assert(core.heap_refused() == nil) -- read once\n"
        /* a table growing by small steps stops at the cap too */
        "local t = {}\n"
        "ok = pcall(function() for i = 1, 1e9 do t[i] = 'v' .. i end end)\n"
        "assert(not ok and #t > 1000 and core.heap_refused() == 'run', #t)\n"
        "t = nil; collectgarbage()\n"
        "assert(#string.rep('y', 2^20) == 2^20) -- usable again once freed\n"
        /* a call's cap above the run's: the run's refuses */
        "core.heap_limit(core.heap_limit(0) + 64 * 2^20)\n"
        "ok = pcall(string.rep, 'x', 32 * 2^20)\n"
        "assert(not ok and core.heap_refused() == 'run')\n"
        /* a call's cap below the run's: the call's refuses */
        "core.heap_run_limit(0)\n"
        "core.heap_limit(core.heap_limit(0) + 2^20)\n"
        "ok = pcall(string.rep, 'x', 4 * 2^20)\n"
        "assert(not ok and core.heap_refused() == 'call')\n"
        "core.heap_limit(0)\n"
        "return #string.rep('x', 4 * 2^20) == 4 * 2^20 and 0 or 1"), 0);
}

static void test_cstack_guard(void)
{
    /* A gsub replacement function calling gsub again: a Lua error in pt-BR,
     * not SIGSEGV; the state is usable afterwards. */
    ASSERT_INT_EQ(run_chunk(
        "local function f(s) return (s:gsub('.', f)) end\n"
        "local ok, err = pcall(f, 'ab')\n"
        "assert(not ok and err:find('string.gsub: chamadas aninhadas demais', 1, true), err)\n"
        "assert(('abc'):gsub('b', function(c) return c:upper() end) == 'aBc')\n"
        "local ok2, err2 = pcall(function() local r = string.gsub('x'); return r end)\n"
        "assert(not ok2 and err2:find(\"bad argument #2 to 'gsub'\", 1, true), err2)\n"
        "return 0"), 0);
    /* Comparison functions that sort again end in an error too. */
    ASSERT_INT_EQ(run_chunk(
        "local function c(a, b) table.sort({3, 2, 1}, c) return a < b end\n"
        "local ok, err = pcall(table.sort, {3, 2, 1}, c)\n"
        "assert(not ok, 'sem erro')\n"
        "local t = {3, 1, 2}; table.sort(t, function(a, b) return a > b end)\n"
        "return (t[1] == 3 and t[3] == 1) and 0 or 1"), 0);
}

static void test_watchdog(void)
{
    char out[4096];
    int fd, status;
    /* Armed and stuck inside string.find: the message, then exit status 7. */
    pid_t child = spawn_chunk(
        "local core = require 'ragops.core'\n"
        "assert(core.watchdog(300, 'vigia: preso numa função C\\n', 7))\n" STUCK_FIND
        "return 0", &fd);
    read_all(fd, out, sizeof out);
    status = wait_child(child, 60);
    ASSERT(WIFEXITED(status));
    ASSERT_INT_EQ(WEXITSTATUS(status), 7);
    ASSERT_STR_EQ(out, "vigia: preso numa função C\n");

    /* Disarmed, the same CPU time in plain Lua does not end the process. */
    ASSERT_INT_EQ(run_chunk(
        "local core = require 'ragops.core'\n"
        "assert(core.watchdog(100, 'não deveria aparecer\\n'))\n"
        "assert(core.watchdog(0))\n"
        "local t0 = os.clock(); while os.clock() - t0 < 0.6 do end\n"
        "return 0"), 0);
}

static void test_second_signal(int first, int second)
{
    char out[4096];
    int fd, status;
    pid_t child = spawn_chunk(
        "local core = require 'ragops.core'\n"
        "core.trap_signals(function() end)\n"
        "io.stdout:write('pronto\\n'); io.stdout:flush()\n" STUCK_FIND
        "return 0", &fd);
    char ready[7] = {0};
    ASSERT_INT_EQ(read(fd, ready, 6), 6);
    ASSERT_STR_EQ(ready, "pronto");
    sleep_ms(100); /* into string.find */
    kill(child, first);
    sleep_ms(300);
    ASSERT_INT_EQ(waitpid(child, &status, WNOHANG), 0); /* the first one is for the loop */
    kill(child, second);
    read_all(fd, out, sizeof out);
    status = wait_child(child, 20);
    ASSERT(WIFEXITED(status));
    ASSERT_INT_EQ(WEXITSTATUS(status), 128 + second);
    ASSERT(strstr(out, "segundo sinal recebido") != NULL);
}

int main(void)
{
    test_heap_caps();
    test_cstack_guard();
    test_watchdog();
    test_second_signal(SIGTERM, SIGTERM);
    test_second_signal(SIGINT, SIGTERM);
    test_second_signal(SIGTERM, SIGINT);
    printf("test_guard: ok\n");
    return 0;
}
