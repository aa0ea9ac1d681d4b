/*
 * guards.c: the limits ragops.sandbox puts on plan code, in C: the heap
 * caps of the Lua state (core.heap_limit, core.heap_run_limit,
 * core.heap_refused, core.heap_near_run_cap), the C-stack guard of string.gsub and table.sort, and
 * the CPU watchdog of a call stuck inside C (core.watchdog).
 */
#define _GNU_SOURCE /* pthread_getattr_np (the C-stack guard) */
#include "core_internal.h"

#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- heap caps (ragops.sandbox's memory limits) ---- */

/* Which cap refused the last refused allocation (core.heap_refused). */
enum { HEAP_REFUSED_NONE = 0, HEAP_REFUSED_RUN = 1, HEAP_REFUSED_CALL = 2 };

/* Bytes held by the Lua state and its caps: one for the whole run
 * (sandbox.memory_mb) and one around the sandboxed call in progress. */
static struct {
    size_t in_use;     /* bytes currently allocated through heap_alloc */
    size_t limit;      /* effective cap: the smaller set one of the two; 0 = none */
    size_t run_limit;  /* cap for the whole process; 0 = none */
    size_t call_limit; /* cap of the sandboxed call in progress; 0 = none */
    int refused;       /* HEAP_REFUSED_* of the last refusal, until read */
    size_t near_at;    /* in_use past which the run's cap is near (3/4 of it); 0 = none */
    int near;          /* in_use passed near_at once (kept) */
    lua_Alloc base;    /* allocator heap_alloc delegates to: LuaJIT's own */
    void *base_ud;     /* its userdata */
} heap;

/* lua_Alloc that counts bytes and refuses growth past heap.limit (LuaJIT
 * then raises "not enough memory" in the code that allocated). Strings,
 * tables, userdata and LuaJIT's buffers all come through here. */
static void *heap_alloc(void *ud, void *ptr, size_t old_size, size_t new_size)
{
    (void)ud;
    if (new_size == 0) {
        heap.base(heap.base_ud, ptr, old_size, 0);
        heap.in_use -= old_size;
        return NULL;
    }
    if (heap.limit != 0 && new_size > old_size && heap.in_use - old_size + new_size > heap.limit) {
        heap.refused = heap.limit == heap.run_limit ? HEAP_REFUSED_RUN : HEAP_REFUSED_CALL;
        return NULL;
    }
    void *grown = heap.base(heap.base_ud, ptr, old_size, new_size);
    if (grown != NULL) {
        heap.in_use = heap.in_use - old_size + new_size;
        if (heap.near_at != 0 && heap.in_use > heap.near_at)
            heap.near = 1;
    }
    return grown;
}

/* True once the run's cap refused an allocation (the flag is kept). */
int rg_heap_run_cap_reached(void)
{
    return heap.refused == HEAP_REFUSED_RUN;
}

static void heap_update_limit(void)
{
    if (heap.run_limit == 0 || (heap.call_limit != 0 && heap.call_limit < heap.run_limit))
        heap.limit = heap.call_limit;
    else
        heap.limit = heap.run_limit;
}

static size_t check_bytes(lua_State *L)
{
    lua_Number limit = luaL_checknumber(L, 1);
    luaL_argcheck(L, limit >= 0, 1, "limite de memória negativo");
    return (size_t)limit;
}

/* core.heap_limit(bytes): caps the Lua heap at bytes for the sandboxed call
 * in progress (0 removes that cap; the run's cap stays) and returns the
 * bytes in use. */
static int core_heap_limit(lua_State *L)
{
    heap.call_limit = check_bytes(L);
    heap_update_limit();
    lua_pushnumber(L, (lua_Number)heap.in_use);
    return 1;
}

/* core.heap_run_limit(bytes): caps the Lua heap of the whole process at
 * bytes (0 removes the cap) and returns the bytes in use. */
static int core_heap_run_limit(lua_State *L)
{
    heap.run_limit = check_bytes(L);
    heap.near_at = heap.run_limit - heap.run_limit / 4;
    heap_update_limit();
    lua_pushnumber(L, (lua_Number)heap.in_use);
    return 1;
}

/* core.heap_near_run_cap() -> boolean: true once the heap passed 3/4 of
 * the run's cap (the flag is kept). ragops.plan.sandbox then turns the JIT
 * compiler off, so that the refusal at the cap is raised from the
 * interpreter: Debian 12's LuaJIT (2.1.0~beta3+git20220320) may crash on
 * an out-of-memory error raised inside compiled code (fixed upstream in
 * 2d8300c1). The allocator only sets the flag: the JIT is never touched
 * from inside it. */
static int core_heap_near_run_cap(lua_State *L)
{
    lua_pushboolean(L, heap.near);
    return 1;
}

/* core.heap_refused() -> "run" | "call" | nil: which cap refused the last
 * allocation refused since the previous call (then forgotten). */
static int core_heap_refused(lua_State *L)
{
    int refused = heap.refused;
    heap.refused = HEAP_REFUSED_NONE;
    if (refused == HEAP_REFUSED_NONE)
        return 0;
    lua_pushstring(L, refused == HEAP_REFUSED_RUN ? "run" : "call");
    return 1;
}

/* ---- C-stack guard ---- */

/* LuaJIT never checks the C stack: a replacement function of string.gsub
 * that calls string.gsub again (each level holds an 8 KiB buffer on the C
 * stack) ends in SIGSEGV. The C functions that call back into Lua are
 * wrapped so that they raise a Lua error once less than `reserve` bytes of
 * the thread's stack are left. */
static struct {
    const char *low;  /* lowest usable address of the stack running Lua */
    size_t reserve;   /* bytes that must stay free below a wrapped call */
} cstack;

#define CSTACK_RESERVE_MAX ((size_t)1 << 20)  /* 1 MiB kept free ... */
#define CSTACK_FALLBACK ((size_t)4 << 20)     /* stack assumed when unknown */

/* Finds the bounds of the calling thread's stack (the loop thread). */
static void cstack_init(void)
{
    pthread_attr_t attr;
    void *addr = NULL;
    size_t size = 0;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
        if (pthread_attr_getstack(&attr, &addr, &size) != 0)
            addr = NULL;
        pthread_attr_destroy(&attr);
    }
    if (addr == NULL || size == 0) {
        size = CSTACK_FALLBACK;
        addr = (char *)__builtin_frame_address(0) - size;
    }
    cstack.low = addr;
    /* ... or a quarter of a small stack. */
    cstack.reserve = size / 4 < CSTACK_RESERVE_MAX ? size / 4 : CSTACK_RESERVE_MAX;
}

/* The wrapped C function (upvalue 1, named by upvalue 2) called with this
 * call's arguments, after checking that the C stack has room for another
 * level. */
static int cstack_call(lua_State *L)
{
    /* The frame address, not a local's: ASan may move locals to a heap
     * "fake stack". */
    const char *here = __builtin_frame_address(0);
    if (here < cstack.low + cstack.reserve) {
        const char *name = lua_tostring(L, lua_upvalueindex(2));
        return luaL_error(L, "%s: chamadas aninhadas demais (uma função passada a %s chama %s de novo, "
                             "direta ou indiretamente, sem fim); a pilha C do processo está quase esgotada",
                          name, name, name);
    }
    int nargs = lua_gettop(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, nargs, LUA_MULTRET);
    return lua_gettop(L);
}

/* Guarded string.gsub. Arguments are checked here, where a wrong one is
 * reported with the function's name and the caller's numbering (methods). */
static int cstack_gsub(lua_State *L)
{
    int repl = lua_type(L, 3);
    luaL_checkstring(L, 1);
    luaL_checkstring(L, 2);
    luaL_argcheck(L, repl == LUA_TNUMBER || repl == LUA_TSTRING || repl == LUA_TFUNCTION ||
                     repl == LUA_TTABLE, 3, "string/function/table expected");
    luaL_optinteger(L, 4, 0);
    return cstack_call(L);
}

/* Guarded table.sort (a comparison function may sort again). */
static int cstack_sort(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    if (!lua_isnoneornil(L, 2))
        luaL_checktype(L, 2, LUA_TFUNCTION);
    return cstack_call(L);
}

/* Replaces lib.name (a standard C function that calls back into Lua) with
 * guarded, which checks its arguments and calls cstack_call. */
static void cstack_guard(lua_State *L, const char *lib, const char *name, lua_CFunction guarded)
{
    lua_getglobal(L, lib);
    lua_getfield(L, -1, name);
    lua_pushfstring(L, "%s.%s", lib, name);
    lua_pushcclosure(L, guarded, 2);
    lua_setfield(L, -2, name);
    lua_pop(L, 1);
}

/* ---- watchdog ---- */

/* Plan code stuck inside one C call (a string.find whose pattern
 * backtracks exponentially) never reaches the sandbox's count hook. A
 * thread checks the CPU time of the loop thread while a sandboxed call is
 * armed (core.watchdog) and, past the armed limit, writes the armed pt-BR
 * message and ends the process with the armed exit status. After a second
 * without an armed call it waits on a condition until the next arm (an
 * idle follower does not wake it). */
static struct {
    pthread_mutex_t lock;       /* guards the fields below */
    pthread_cond_t wake;        /* signalled by an arm while the thread waits */
    int started;                /* the thread runs */
    int waiting;                /* the thread waits on wake */
    clockid_t cpu_clock;        /* CPU clock of the loop thread */
    unsigned long generation;   /* bumped by every arm */
    uint64_t limit_ns;          /* CPU time allowed to the armed call; 0 = disarmed */
    int status;                 /* exit status when it fires */
    char message[768];          /* written to stderr when it fires */
} watchdog = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, 0, 0, 2, ""};

#define WATCHDOG_PERIOD_NS 50000000L /* 50 ms between checks */
#define WATCHDOG_IDLE_CHECKS 20      /* checks without an armed call before waiting */

static uint64_t clock_ns(clockid_t clock)
{
    struct timespec ts;
    if (clock_gettime(clock, &ts) != 0)
        return 0;
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The armed call's CPU time starts counting at the first check that sees
 * its generation (at most one period late). */
static void *watchdog_main(void *arg)
{
    unsigned long seen = 0;
    uint64_t start = 0;
    int idle = 0;
    const struct timespec period = {0, WATCHDOG_PERIOD_NS};
    (void)arg;
    pthread_mutex_lock(&watchdog.lock);
    for (;;) {
        watchdog.waiting = idle >= WATCHDOG_IDLE_CHECKS;
        while (watchdog.waiting && watchdog.limit_ns == 0)
            pthread_cond_wait(&watchdog.wake, &watchdog.lock);
        watchdog.waiting = 0;
        pthread_mutex_unlock(&watchdog.lock);
        nanosleep(&period, NULL);
        pthread_mutex_lock(&watchdog.lock);
        if (watchdog.limit_ns == 0) {
            idle++;
            continue;
        }
        idle = 0;
        uint64_t now = clock_ns(watchdog.cpu_clock);
        if (watchdog.generation != seen) {
            seen = watchdog.generation;
            start = now;
        } else if (now - start > watchdog.limit_ns) {
            ssize_t ignored = write(STDERR_FILENO, watchdog.message, strlen(watchdog.message));
            (void)ignored;
            _exit(watchdog.status);
        }
    }
    return NULL;
}

/* Starts the thread on the first arm (on the loop thread). 0 or -1. */
static int watchdog_start(void)
{
    pthread_t thread;
    pthread_attr_t attr;
    int rc;
    if (watchdog.started)
        return 0;
    if (pthread_getcpuclockid(pthread_self(), &watchdog.cpu_clock) != 0)
        return -1;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    rc = pthread_create(&thread, &attr, watchdog_main, NULL);
    pthread_attr_destroy(&attr);
    if (rc != 0)
        return -1;
    watchdog.started = 1;
    return 0;
}

/* core.watchdog(ms, message [, status]): arms the watchdog for the call
 * about to run (ms of CPU time of this thread; message ends with a newline
 * and is written as is, nil keeps the previous one; status defaults to 2).
 * core.watchdog(0) disarms. Returns true, or false when the thread could
 * not start (no watchdog). */
static int core_watchdog(lua_State *L)
{
    lua_Number ms = luaL_checknumber(L, 1);
    luaL_argcheck(L, ms >= 0, 1, "tempo negativo");
    if (ms == 0) {
        pthread_mutex_lock(&watchdog.lock);
        watchdog.limit_ns = 0;
        pthread_mutex_unlock(&watchdog.lock);
        lua_pushboolean(L, 1);
        return 1;
    }
    size_t len = 0;
    const char *message = lua_isnil(L, 2) ? NULL : luaL_checklstring(L, 2, &len);
    int status = (int)luaL_optinteger(L, 3, 2);
    luaL_argcheck(L, len < sizeof watchdog.message, 2, "mensagem longa demais");
    if (watchdog_start() != 0) {
        lua_pushboolean(L, 0);
        return 1;
    }
    pthread_mutex_lock(&watchdog.lock);
    if (message != NULL)
        memcpy(watchdog.message, message, len + 1);
    watchdog.status = status;
    watchdog.generation++;
    watchdog.limit_ns = (uint64_t)(ms * 1e6);
    if (watchdog.waiting)
        pthread_cond_signal(&watchdog.wake);
    pthread_mutex_unlock(&watchdog.lock);
    lua_pushboolean(L, 1);
    return 1;
}

void rg_heap_install(lua_State *L)
{
    memset(&heap, 0, sizeof heap);
    heap.base = lua_getallocf(L, &heap.base_ud);
    heap.in_use = (size_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024 + (size_t)lua_gc(L, LUA_GCCOUNTB, 0);
    lua_setallocf(L, heap_alloc, NULL);
}

void rg_cstack_install(lua_State *L)
{
    cstack_init();
    cstack_guard(L, "string", "gsub", cstack_gsub);
    cstack_guard(L, "table", "sort", cstack_sort);
}

const luaL_Reg rg_core_guard_funcs[] = {
    {"heap_limit", core_heap_limit},
    {"heap_run_limit", core_heap_run_limit},
    {"heap_refused", core_heap_refused},
    {"heap_near_run_cap", core_heap_near_run_cap},
    {"watchdog", core_watchdog},
    {NULL, NULL},
};
