/*
 * bridge.c: the Lua state and the coroutine scheduler: the ready queue,
 * rg_async (calls parked on the loop), the scheduler's primitives of
 * ragops.core (spawn, suspend, wake, sleep, cancel_all) and the state's
 * lifecycle (open, run the entry point, close).
 *
 * Every coroutine is resumed from a libuv callback, never from another
 * coroutine: spawn, wake and cancellations put the coroutine on a ready
 * queue drained by a uv_idle handle; I/O completions resume through
 * rg_async_complete. Every parked async call (rg_async) is on one list, so a
 * signal can cancel them all and closing the state can drop them.
 */
#include "core_internal.h"

#include <lualib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


/* One coroutine waiting on the ready queue. */
typedef struct ready_entry {
    lua_State *co;            /* coroutine to resume */
    int ref;                  /* registry reference pinning co until resumed */
    int nargs;                /* values on co's stack passed to lua_resume */
    struct ready_entry *next; /* next entry in FIFO order */
} ready_entry;

/* A pending core.sleep. */
typedef struct sleep_request {
    uv_timer_t timer; /* fires once after the requested delay */
    rg_async async;   /* the sleeping coroutine */
} sleep_request;

/* A push function and its outcome, run by push_protected. */
typedef struct push_job {
    rg_push_fn push; /* pushes the results onto the main state */
    void *outcome;   /* push's argument */
    lua_State *co;   /* receives the values */
    int nresults;    /* values moved onto co */
} push_job;

/* Process-wide bridge state: one loop, one Lua state. */
static struct {
    lua_State *L;              /* main state, owner of the registry */
    lua_State *main_co;        /* coroutine running the CLI entry point */
    int exit_status;           /* status reported by rg_bridge_run_main */
    int main_done;             /* the entry coroutine has returned */
    uv_idle_t ready_idle;      /* drains the ready queue while non-empty */
    int ready_idle_init;       /* ready_idle was initialised */
    ready_entry *ready_head;   /* first coroutine to resume */
    ready_entry *ready_tail;   /* last coroutine to resume */
    rg_async *pending;         /* parked async calls (cancel_all, close) */
} bridge;

#define SUSPENDED_KEY "ragops.suspended"


lua_State *rg_main_state(void) { return bridge.L; }

void rg_async_init(rg_async *op)
{
    memset(op, 0, sizeof *op);
    op->ref = LUA_NOREF;
}

int rg_async_pending(const rg_async *op) { return op->co != NULL; }

void rg_check_coroutine(lua_State *L, const char *what)
{
    int is_main = lua_pushthread(L);
    lua_pop(L, 1);
    if (is_main)
        luaL_error(L, "%s: primitiva assíncrona chamada fora de uma corrotina", what);
}

int rg_push_interrupted(lua_State *L)
{
    lua_pushnil(L);
    lua_pushliteral(L, RG_INTERRUPTED_MSG);
    return 2;
}

void rg_register_class(lua_State *L, const char *name, const luaL_Reg *methods, const luaL_Reg *metamethods)
{
    if (luaL_newmetatable(L, name)) {
        lua_newtable(L);
        luaL_register(L, NULL, methods);
        lua_setfield(L, -2, "__index");
        luaL_register(L, NULL, metamethods);
    }
    lua_pop(L, 1);
}

int rg_opt_field(lua_State *L, int index, const char *field)
{
    lua_getfield(L, index, field);
    if (!lua_isnil(L, -1))
        return 1;
    lua_pop(L, 1);
    return 0;
}

int rg_async_suspend(lua_State *L, rg_async *op, rg_push_fn push, rg_cancel_fn cancel)
{
    lua_pushthread(L);
    op->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    op->co = L;
    op->push = push;
    op->cancel = cancel;
    op->prev = NULL;
    op->next = bridge.pending;
    if (bridge.pending)
        bridge.pending->prev = op;
    bridge.pending = op;
    return lua_yield(L, 0);
}

/* Takes op off the pending list and makes it idle (fields read before). */
static void unlink_pending(rg_async *op)
{
    if (op->prev)
        op->prev->next = op->next;
    else
        bridge.pending = op->next;
    if (op->next)
        op->next->prev = op->prev;
    rg_async_init(op);
}

static int push_trampoline(lua_State *L)
{
    push_job *job = lua_touserdata(L, 1);
    int base;
    lua_settop(L, 0);
    job->nresults = job->push(L, job->outcome);
    base = lua_gettop(L) - job->nresults;
    luaL_checkstack(job->co, job->nresults + LUA_MINSTACK, "resultados demais");
    lua_xmove(L, job->co, job->nresults);
    lua_settop(L, base);
    return 0;
}

/* Runs push in protected mode on the main state (lua_cpcall) and moves its
 * values onto co; on a memory error moves nil and a pt-BR message instead.
 * Returns the number of values now on top of co. */
static int push_protected(lua_State *co, rg_push_fn push, void *outcome)
{
    push_job job = {push, outcome, co, 0};
    if (lua_cpcall(bridge.L, push_trampoline, &job) != 0) {
        lua_pop(bridge.L, 1);
        lua_pushnil(co);
        lua_pushliteral(co, "sem memória para entregar o resultado");
        return 2;
    }
    return job.nresults;
}

/* Reports an error (status) that escaped coroutine co and records exit
 * status 2; a memory error is said in pt-BR, without a traceback. */
static void report_coroutine_error(lua_State *co, int status)
{
    const char *msg = lua_tostring(co, -1);
    if (status == LUA_ERRMEM && rg_heap_run_cap_reached()) {
        fprintf(stderr, "ragops: a memória do Lua do processo chegou ao limite de sandbox.memory_mb; "
                        "corrija o plano (dados guardados entre chamadas, textos enormes) ou aumente o limite\n");
    } else if (status == LUA_ERRMEM) {
        fprintf(stderr, "ragops: memória insuficiente\n");
    } else {
        luaL_traceback(bridge.L, co, msg ? msg : "(erro sem mensagem)", 0);
        fprintf(stderr, "ragops: erro não tratado: %s\n", lua_tostring(bridge.L, -1));
        lua_pop(bridge.L, 1);
    }
    bridge.exit_status = 2;
    if (co == bridge.main_co) {
        bridge.main_done = 1;
        uv_stop(uv_default_loop());
    }
}

/* Resumes co with nargs values on its stack and handles its outcome. */
static void resume_coroutine(lua_State *co, int nargs)
{
    int status = lua_resume(co, nargs);
    if (status == LUA_YIELD)
        return;
    if (status != 0) {
        report_coroutine_error(co, status);
        return;
    }
    if (co == bridge.main_co) {
        bridge.exit_status = lua_isnumber(co, 1) ? (int)lua_tointeger(co, 1) : 0;
        bridge.main_done = 1;
        uv_stop(uv_default_loop());
    }
    lua_settop(co, 0);
}

void rg_async_complete(rg_async *op, void *outcome)
{
    lua_State *co = op->co;
    int ref = op->ref;
    rg_push_fn push = op->push;
    if (co == NULL)
        return;
    unlink_pending(op);
    resume_coroutine(co, push_protected(co, push, outcome));
    luaL_unref(bridge.L, LUA_REGISTRYINDEX, ref);
}

/* ---- ready queue ---- */

static void ready_idle_cb(uv_idle_t *handle)
{
    /* Resume only what was queued before this pass, so a coroutine that
     * keeps waking others cannot starve I/O. */
    ready_entry *batch = bridge.ready_head;
    bridge.ready_head = bridge.ready_tail = NULL;
    while (batch) {
        ready_entry *entry = batch;
        batch = entry->next;
        resume_coroutine(entry->co, entry->nargs);
        luaL_unref(bridge.L, LUA_REGISTRYINDEX, entry->ref);
        free(entry);
    }
    if (bridge.ready_head == NULL)
        uv_idle_stop(handle);
}

/* Queues co (pinned by the registry reference ref, its stack holding nargs
 * values). Returns 0, or -1 when memory is short (nothing queued). */
static int ready_enqueue(lua_State *co, int ref, int nargs)
{
    ready_entry *entry = malloc(sizeof *entry);
    if (entry == NULL)
        return -1;
    entry->ref = ref;
    entry->co = co;
    entry->nargs = nargs;
    entry->next = NULL;
    if (bridge.ready_tail)
        bridge.ready_tail->next = entry;
    else
        bridge.ready_head = entry;
    bridge.ready_tail = entry;
    if (!bridge.ready_idle_init) {
        uv_idle_init(uv_default_loop(), &bridge.ready_idle);
        bridge.ready_idle_init = 1;
    }
    uv_idle_start(&bridge.ready_idle, ready_idle_cb);
    return 0;
}

void rg_ready_push(lua_State *L, int idx, lua_State *co, int nargs)
{
    lua_pushvalue(L, idx);
    int ref = luaL_ref(L, LUA_REGISTRYINDEX);
    if (ready_enqueue(co, ref, nargs) != 0) {
        luaL_unref(L, LUA_REGISTRYINDEX, ref);
        luaL_error(L, "memória insuficiente");
    }
}

void rg_async_cancel(rg_async *op, void *outcome)
{
    lua_State *co = op->co;
    int ref = op->ref;
    rg_push_fn push = op->push;
    rg_cancel_fn cancel = op->cancel;
    int nresults;
    if (co == NULL)
        return;
    unlink_pending(op);
    nresults = push_protected(co, push, outcome);
    cancel(op);
    if (ready_enqueue(co, ref, nresults) != 0) {
        /* No memory for the queue entry: resume it right here. */
        resume_coroutine(co, nresults);
        luaL_unref(bridge.L, LUA_REGISTRYINDEX, ref);
    }
}

int rg_async_cancel_all(void)
{
    int n = 0;
    while (bridge.pending) {
        rg_async_cancel(bridge.pending, NULL);
        n++;
    }
    return n;
}

/* core.spawn(fn, ...) -> coroutine: runs fn(...) in a new coroutine on the
 * next loop pass. Errors escaping fn are reported with a traceback. */
static int core_spawn(lua_State *L)
{
    int nargs = lua_gettop(L) - 1;
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_State *co = lua_newthread(L);
    int co_idx = lua_gettop(L);
    for (int i = 1; i <= nargs + 1; i++)
        lua_pushvalue(L, i);
    lua_xmove(L, co, nargs + 1);
    rg_ready_push(L, co_idx, co, nargs);
    return 1;
}

/* core.suspend() -> ...: parks the running coroutine until core.wake(co, ...);
 * returns the values given to wake. The caller keeps a reference to the
 * coroutine (e.g. in a waiters list). */
static int core_suspend(lua_State *L)
{
    rg_check_coroutine(L, "core.suspend");
    lua_pushthread(L);
    lua_getfield(L, LUA_REGISTRYINDEX, SUSPENDED_KEY);
    lua_insert(L, -2);
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);
    lua_pop(L, 1);
    return lua_yield(L, 0);
}

/* core.wake(co, ...): queues co (parked by core.suspend) to resume with the
 * given values. Waking a coroutine that is not suspended is a Lua error. */
static int core_wake(lua_State *L)
{
    int nargs = lua_gettop(L) - 1;
    lua_State *co = lua_tothread(L, 1);
    luaL_argcheck(L, co != NULL, 1, "corrotina esperada");
    lua_getfield(L, LUA_REGISTRYINDEX, SUSPENDED_KEY);
    lua_pushvalue(L, 1);
    lua_rawget(L, -2);
    int suspended = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (!suspended) {
        lua_pop(L, 1);
        return luaL_error(L, "core.wake: a corrotina não está suspensa por core.suspend");
    }
    lua_pushvalue(L, 1);
    lua_pushnil(L);
    lua_rawset(L, -3);
    lua_pop(L, 1);
    for (int i = 2; i <= nargs + 1; i++)
        lua_pushvalue(L, i);
    lua_xmove(L, co, nargs);
    rg_ready_push(L, 1, co, nargs);
    return 0;
}

static void sleep_closed_cb(uv_handle_t *handle)
{
    free(handle->data);
}

/* Results of core.sleep: true, or nil, "interrompido" when cancelled. */
static int push_slept(lua_State *L, void *outcome)
{
    if (outcome == NULL)
        return rg_push_interrupted(L);
    lua_pushboolean(L, 1);
    return 1;
}

static void sleep_cancel(rg_async *op)
{
    sleep_request *req = RG_CONTAINER_OF(op, sleep_request, async);
    uv_close((uv_handle_t *)&req->timer, sleep_closed_cb);
}

static void sleep_timer_cb(uv_timer_t *timer)
{
    sleep_request *req = timer->data;
    uv_close((uv_handle_t *)&req->timer, sleep_closed_cb); /* freed on a later pass */
    rg_async_complete(&req->async, req);
}

/* core.sleep(ms) -> true | nil, "interrompido": yields for ms milliseconds
 * without blocking the loop; core.cancel_all() ends it early. */
static int core_sleep(lua_State *L)
{
    lua_Number ms = luaL_checknumber(L, 1);
    luaL_argcheck(L, ms >= 0, 1, "tempo negativo");
    rg_check_coroutine(L, "core.sleep");
    sleep_request *req = malloc(sizeof *req);
    if (req == NULL)
        return luaL_error(L, "memória insuficiente");
    rg_async_init(&req->async);
    uv_timer_init(uv_default_loop(), &req->timer);
    req->timer.data = req;
    uv_timer_start(&req->timer, sleep_timer_cb, (uint64_t)ms, 0);
    return rg_async_suspend(L, &req->async, push_slept, sleep_cancel);
}

/* core.cancel_all() -> n: ends every pending sleep, query, HTTP request and
 * embedding call of the loop; each returns nil, "interrompido", ... */
static int core_cancel_all(lua_State *L)
{
    lua_pushinteger(L, rg_async_cancel_all());
    return 1;
}

const luaL_Reg rg_core_sched_funcs[] = {
    {"spawn", core_spawn},   {"suspend", core_suspend},       {"wake", core_wake},
    {"sleep", core_sleep},   {"cancel_all", core_cancel_all}, {NULL, NULL},
};

/* ---- state lifecycle ---- */

/* Last resort for an error outside any protected call. */
static int unprotected_error(lua_State *L)
{
    fprintf(stderr, "ragops: erro fora de chamada protegida no Lua: %s\n", lua_tostring(L, -1));
    return 0;
}

lua_State *rg_bridge_open(const char *lua_dir)
{
    static const luaL_Reg modules[] = {
        {"ragops.core", luaopen_ragops_core},
        {"ragops.pg", luaopen_ragops_pg},
        {"ragops.http", luaopen_ragops_http},
        {"ragops.embed", luaopen_ragops_embed},
        {"ragops.vecsearch", luaopen_ragops_vecsearch},
        {"ragops.httpd", luaopen_ragops_httpd},
        {NULL, NULL},
    };
    /* LuaJIT's own allocator (tuned for its small objects; the libc's and
     * mimalloc were slower: docs/desempenho.md), wrapped to count bytes. */
    lua_State *L = luaL_newstate();
    if (L == NULL)
        return NULL;
    rg_heap_install(L);
    lua_atpanic(L, unprotected_error);
    luaL_openlibs(L);
    rg_cstack_install(L);
    memset(&bridge, 0, sizeof bridge);
    rg_signals_reset();
    bridge.L = L;

    /* Weak-keyed set of coroutines parked by core.suspend. */
    lua_newtable(L);
    lua_newtable(L);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, SUSPENDED_KEY);

    lua_getglobal(L, "package");
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua", lua_dir, lua_dir);
    lua_setfield(L, -2, "path");
    lua_getfield(L, -1, "preload");
    for (const luaL_Reg *module = modules; module->name != NULL; module++) {
        lua_pushcfunction(L, module->func);
        lua_setfield(L, -2, module->name);
    }
    lua_pop(L, 2);
    return L;
}

int rg_bridge_run_main(lua_State *L, int argc, char **argv)
{
    luaL_checktype(L, -1, LUA_TFUNCTION);
    lua_State *co = lua_newthread(L);
    int co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_xmove(L, co, 1);
    for (int i = 0; i < argc; i++)
        lua_pushstring(co, argv[i]);
    bridge.main_co = co;
    bridge.exit_status = 0;
    bridge.main_done = 0;
    resume_coroutine(co, argc);
    if (!bridge.main_done)
        uv_run(uv_default_loop(), UV_RUN_DEFAULT);
    if (!bridge.main_done) {
        fprintf(stderr, "ragops: o laço de eventos terminou com a execução ainda suspensa "
                        "(uma operação assíncrona nunca respondeu)\n");
        bridge.exit_status = 2;
    }
    luaL_unref(L, LUA_REGISTRYINDEX, co_ref);
    bridge.main_co = NULL;
    return bridge.exit_status;
}

static void close_any_handle(uv_handle_t *handle, void *arg)
{
    if (!uv_is_closing(handle))
        uv_close(handle, NULL);
}

void rg_bridge_close(lua_State *L)
{
    ready_entry *entry = bridge.ready_head;
    while (entry) {
        ready_entry *next = entry->next;
        free(entry);
        entry = next;
    }
    bridge.ready_head = bridge.ready_tail = NULL;
    /* Calls still pending belong to coroutines abandoned with the run: stop
     * their I/O, never resume them. */
    while (bridge.pending) {
        rg_async *op = bridge.pending;
        rg_cancel_fn cancel = op->cancel;
        unlink_pending(op);
        cancel(op);
    }
    lua_close(L); /* __gc of userdata close their handles */
    bridge.L = NULL;
    uv_loop_t *loop = uv_default_loop();
    uv_run(loop, UV_RUN_NOWAIT);
    /* Whatever is still open (idle, signals, timers of dropped sleeps) is
     * owned by the bridge or was abandoned with its coroutine. */
    uv_walk(loop, close_any_handle, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
}
