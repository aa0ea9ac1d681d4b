/*
 * signals.c: SIGINT/SIGTERM for ragops.core (core.trap_signals): the first
 * signal runs the Lua handler in a new coroutine, a second one ends the
 * process at once (128 + signal), also while the loop is stuck.
 */
#include "core_internal.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* The libuv watchers of core.trap_signals and the Lua handler they run. */
static struct {
    uv_signal_t sigint;  /* SIGINT watcher */
    uv_signal_t sigterm; /* SIGTERM watcher */
    int init;            /* the two signal handles were initialised */
    int handler_ref;     /* Lua function called on the first signal */
    int seen;            /* signals received by the watchers */
} watchers = {.handler_ref = LUA_NOREF};

/* SIGINT/SIGTERM as counted by the process's own handler, which runs even
 * while the loop is stuck (plan code inside a C function, a blocking
 * call): the first signal goes on to libuv's handler (its watchers then
 * run core.trap_signals' function when the loop turns), the second one
 * ends the process at once with 128 + signal. */
static struct {
    atomic_int seen;            /* signals received by hard_signal_handler */
    void (*libuv[2])(int);      /* libuv's handlers for SIGINT, SIGTERM */
} hard_signals;

#define SECOND_SIGNAL_MSG "ragops: segundo sinal recebido; saindo imediatamente\n"

static void hard_signal_handler(int signum)
{
    int index = signum == SIGINT ? 0 : 1;
    if (atomic_fetch_add(&hard_signals.seen, 1) >= 1) {
        ssize_t ignored = write(STDERR_FILENO, SECOND_SIGNAL_MSG, sizeof SECOND_SIGNAL_MSG - 1);
        (void)ignored;
        _exit(128 + signum);
    }
    if (hard_signals.libuv[index] != NULL)
        hard_signals.libuv[index](signum);
}

/* Puts hard_signal_handler in front of the handler libuv installed for
 * signum (once: libuv installs its own only for its first watcher). */
static void install_hard_handler(int signum)
{
    struct sigaction current, ours;
    if (sigaction(signum, NULL, &current) != 0 || current.sa_handler == hard_signal_handler)
        return;
    if ((current.sa_flags & SA_SIGINFO) || current.sa_handler == SIG_DFL || current.sa_handler == SIG_IGN)
        return; /* not libuv's: leave it alone */
    hard_signals.libuv[signum == SIGINT ? 0 : 1] = current.sa_handler;
    memset(&ours, 0, sizeof ours);
    sigfillset(&ours.sa_mask);
    ours.sa_flags = SA_RESTART;
    ours.sa_handler = hard_signal_handler;
    sigaction(signum, &ours, NULL);
}

static void signal_cb(uv_signal_t *handle, int signum)
{
    lua_State *L = rg_main_state();
    watchers.seen++;
    if (watchers.seen > 1) {
        fprintf(stderr, "ragops: segundo sinal recebido; saindo imediatamente\n");
        _exit(128 + signum);
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, watchers.handler_ref);
    lua_State *co = lua_newthread(L);
    lua_insert(L, -2);
    lua_pushstring(L, signum == SIGINT ? "SIGINT" : "SIGTERM");
    lua_xmove(L, co, 2);
    rg_ready_push(L, -1, co, 1);
    lua_pop(L, 1);
}

/* core.trap_signals(fn): on the first SIGINT/SIGTERM, runs fn(name) in a new
 * coroutine; a second signal exits the process at once (128 + signal), also
 * while the loop is stuck. */
static int core_trap_signals(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_pushvalue(L, 1);
    if (watchers.handler_ref != LUA_NOREF)
        luaL_unref(L, LUA_REGISTRYINDEX, watchers.handler_ref);
    watchers.handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    if (!watchers.init) {
        uv_signal_init(uv_default_loop(), &watchers.sigint);
        uv_signal_init(uv_default_loop(), &watchers.sigterm);
        watchers.init = 1;
    }
    uv_signal_start(&watchers.sigint, signal_cb, SIGINT);
    uv_signal_start(&watchers.sigterm, signal_cb, SIGTERM);
    install_hard_handler(SIGINT);
    install_hard_handler(SIGTERM);
    /* Signal watchers must not keep the loop alive on their own. */
    uv_unref((uv_handle_t *)&watchers.sigint);
    uv_unref((uv_handle_t *)&watchers.sigterm);
    return 0;
}

void rg_signals_reset(void)
{
    memset(&watchers, 0, sizeof watchers);
    watchers.handler_ref = LUA_NOREF;
    atomic_store(&hard_signals.seen, 0);
}

const luaL_Reg rg_core_signal_funcs[] = {
    {"trap_signals", core_trap_signals},
    {NULL, NULL},
};
