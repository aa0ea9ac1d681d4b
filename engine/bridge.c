/*
 * bridge.c: the Lua state, the coroutine scheduler and the `ragops.core`
 * module (spawn, suspend, wake, sleep, clocks, content hash, signals, heap
 * cap for the plan sandbox).
 *
 * Every coroutine is resumed from a libuv callback, never from another
 * coroutine: spawn, wake and cancellations put the coroutine on a ready
 * queue drained by a uv_idle handle; I/O completions resume through
 * rg_async_complete. Every parked async call (rg_async) is on one list, so a
 * signal can cancel them all and closing the state can drop them.
 */
#include "bridge.h"
#include "vecbatch.h"

#include <errno.h>
#include <lualib.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>
#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack (core.hash) */
#include <xxhash.h>

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
    uv_signal_t sigint;        /* SIGINT watcher installed by core.trap_signals */
    uv_signal_t sigterm;       /* SIGTERM watcher installed by core.trap_signals */
    int signals_init;          /* the two signal handles were initialised */
    int signal_handler_ref;    /* Lua function called on the first signal */
    int signals_seen;          /* signals received so far */
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

/* Reports an error that escaped coroutine co and records exit status 2. */
static void report_coroutine_error(lua_State *co)
{
    const char *msg = lua_tostring(co, -1);
    luaL_traceback(bridge.L, co, msg ? msg : "(erro sem mensagem)", 0);
    fprintf(stderr, "ragops: erro não tratado: %s\n", lua_tostring(bridge.L, -1));
    lua_pop(bridge.L, 1);
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
        report_coroutine_error(co);
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

/* Queues the coroutine at idx of L (its stack already holds nargs values). */
static void ready_push(lua_State *L, int idx, lua_State *co, int nargs)
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
    ready_push(L, co_idx, co, nargs);
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
    ready_push(L, 1, co, nargs);
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

/* core.now() -> milliseconds of monotonic time (high resolution). */
static int core_now(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)uv_hrtime() / 1e6);
    return 1;
}

/* core.wallclock() -> seconds since the epoch, with microseconds. */
static int core_wallclock(lua_State *L)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    lua_pushnumber(L, (lua_Number)tv.tv_sec + tv.tv_usec / 1e6);
    return 1;
}

/* core.process_id() -> "hostname:pid", naming this process as a lease owner. */
static int core_process_id(lua_State *L)
{
    char host[256];
    size_t size = sizeof host;
    if (uv_os_gethostname(host, &size) != 0)
        snprintf(host, sizeof host, "desconhecido");
    lua_pushfstring(L, "%s:%d", host, (int)uv_os_getpid());
    return 1;
}

/* core.isatty(fd) -> true when fd (0, 1, 2) is a terminal: the progress
 * line is redrawn in place only there. */
static int core_isatty(lua_State *L)
{
    lua_Integer fd = luaL_checkinteger(L, 1);
    luaL_argcheck(L, fd >= 0 && fd <= 2, 1, "esperado 0, 1 ou 2");
    lua_pushboolean(L, uv_guess_handle((uv_file)fd) == UV_TTY);
    return 1;
}

/* core.file_kind(path) -> "file" | "directory" | "other", size in bytes;
 * or nil, errno text when path cannot be stat'ed. Plan and config files are
 * checked with it before they are opened (a FIFO would block the open, a
 * device or a huge file would be read whole). */
static int core_file_kind(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    struct stat st;
    if (stat(path, &st) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, strerror(errno));
        return 2;
    }
    lua_pushstring(L, S_ISREG(st.st_mode) ? "file" : S_ISDIR(st.st_mode) ? "directory" : "other");
    lua_pushnumber(L, (lua_Number)st.st_size);
    return 2;
}

/* core.hash(s, ...) -> 32 hex chars: XXH3-128 over the arguments, each
 * length-prefixed so ("ab","c") and ("a","bc") differ. Once per chunk: the
 * state lives on the stack and the hex is written by hand (no malloc, no
 * snprintf). */
static int core_hash(lua_State *L)
{
    static const char digits[] = "0123456789abcdef";
    int n = lua_gettop(L);
    XXH3_state_t state;
    XXH3_INITSTATE(&state);
    XXH3_128bits_reset(&state);
    for (int i = 1; i <= n; i++) {
        size_t len;
        const char *s = luaL_checklstring(L, i, &len);
        unsigned long long len64 = len;
        XXH3_128bits_update(&state, &len64, sizeof len64);
        XXH3_128bits_update(&state, s, len);
    }
    XXH128_hash_t h = XXH3_128bits_digest(&state);
    char hex[32];
    for (int k = 0; k < 16; k++) {
        hex[15 - k] = digits[(h.high64 >> (4 * k)) & 15];
        hex[31 - k] = digits[(h.low64 >> (4 * k)) & 15];
    }
    lua_pushlstring(L, hex, 32);
    return 1;
}

/* core.utf8_length(s) -> characters of s (bytes that do not continue a
 * UTF-8 sequence); per text sent, for the token calibration. */
static int core_utf8_length(lua_State *L)
{
    size_t len, continuation = 0;
    const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &len);
    for (size_t i = 0; i < len; i++)
        continuation += (s[i] & 0xC0) == 0x80;
    lua_pushnumber(L, (lua_Number)(len - continuation));
    return 1;
}

/* core.vecbatch(vectors) -> batch: builds a vecbatch from Lua arrays of
 * numbers (fake embedders, tests). All vectors must have the same length. */
static int core_vecbatch(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    int count = (int)lua_objlen(L, 1);
    int dim = 0;
    if (count > 0) {
        lua_rawgeti(L, 1, 1);
        luaL_argcheck(L, lua_istable(L, -1), 1, "lista de vetores esperada");
        dim = (int)lua_objlen(L, -1);
        lua_pop(L, 1);
    }
    rg_vecbatch *b = rg_vecbatch_push_new(L, count, dim);
    for (int i = 0; i < count; i++) {
        lua_rawgeti(L, 1, i + 1);
        luaL_argcheck(L, lua_istable(L, -1) && (int)lua_objlen(L, -1) == dim, 1,
                      "vetores de tamanhos diferentes");
        float *row = rg_vecbatch_row(b, i);
        for (int j = 0; j < dim; j++) {
            lua_rawgeti(L, -1, j + 1);
            row[j] = (float)lua_tonumber(L, -1);
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    return 1;
}

/* ---- signals ---- */

static void signal_cb(uv_signal_t *handle, int signum)
{
    lua_State *L = bridge.L;
    bridge.signals_seen++;
    if (bridge.signals_seen > 1) {
        fprintf(stderr, "ragops: segundo sinal recebido; saindo imediatamente\n");
        _exit(128 + signum);
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, bridge.signal_handler_ref);
    lua_State *co = lua_newthread(L);
    lua_insert(L, -2);
    lua_pushstring(L, signum == SIGINT ? "SIGINT" : "SIGTERM");
    lua_xmove(L, co, 2);
    ready_push(L, -1, co, 1);
    lua_pop(L, 1);
}

/* core.trap_signals(fn): on the first SIGINT/SIGTERM, runs fn(name) in a new
 * coroutine; a second signal exits the process at once. */
static int core_trap_signals(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_pushvalue(L, 1);
    if (bridge.signal_handler_ref != LUA_NOREF)
        luaL_unref(L, LUA_REGISTRYINDEX, bridge.signal_handler_ref);
    bridge.signal_handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    if (!bridge.signals_init) {
        uv_signal_init(uv_default_loop(), &bridge.sigint);
        uv_signal_init(uv_default_loop(), &bridge.sigterm);
        bridge.signals_init = 1;
    }
    uv_signal_start(&bridge.sigint, signal_cb, SIGINT);
    uv_signal_start(&bridge.sigterm, signal_cb, SIGTERM);
    /* Signal watchers must not keep the loop alive on their own. */
    uv_unref((uv_handle_t *)&bridge.sigint);
    uv_unref((uv_handle_t *)&bridge.sigterm);
    return 0;
}

/* ---- heap cap (ragops.sandbox's memory limit) ---- */

/* Bytes held by the Lua state and the cap the sandbox sets around plan code. */
static struct {
    size_t in_use;     /* bytes currently allocated through heap_alloc */
    size_t limit;      /* growth past this many bytes is refused; 0 = no cap */
    lua_Alloc base;    /* allocator heap_alloc delegates to: LuaJIT's own */
    void *base_ud;     /* its userdata */
} heap;

/* lua_Alloc that counts bytes and refuses growth past heap.limit (LuaJIT
 * then raises "not enough memory" in the code that allocated). */
static void *heap_alloc(void *ud, void *ptr, size_t old_size, size_t new_size)
{
    (void)ud;
    if (new_size == 0) {
        heap.base(heap.base_ud, ptr, old_size, 0);
        heap.in_use -= old_size;
        return NULL;
    }
    if (heap.limit != 0 && new_size > old_size && heap.in_use - old_size + new_size > heap.limit)
        return NULL;
    void *grown = heap.base(heap.base_ud, ptr, old_size, new_size);
    if (grown != NULL)
        heap.in_use = heap.in_use - old_size + new_size;
    return grown;
}

/* core.heap_limit(bytes): caps the Lua heap at bytes (0 removes the cap) and
 * returns the bytes in use. */
static int core_heap_limit(lua_State *L)
{
    lua_Number limit = luaL_checknumber(L, 1);
    luaL_argcheck(L, limit >= 0, 1, "limite de memória negativo");
    heap.limit = (size_t)limit;
    lua_pushnumber(L, (lua_Number)heap.in_use);
    return 1;
}

int luaopen_ragops_core(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"spawn", core_spawn},       {"suspend", core_suspend},
        {"wake", core_wake},         {"sleep", core_sleep},
        {"now", core_now},           {"wallclock", core_wallclock},
        {"hash", core_hash},         {"vecbatch", core_vecbatch},
        {"trap_signals", core_trap_signals}, {"process_id", core_process_id},
        {"cancel_all", core_cancel_all},    {"isatty", core_isatty},
        {"heap_limit", core_heap_limit},  {"utf8_length", core_utf8_length},
        {"file_kind", core_file_kind},
        {NULL, NULL},
    };
    rg_vecbatch_register(L);
    lua_newtable(L);
    luaL_register(L, NULL, funcs);
    return 1;
}

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
    heap.in_use = 0;
    heap.limit = 0;
    /* LuaJIT's own allocator (tuned for its small objects: the libc's and
     * mimalloc's were 5-19% of the engine's CPU), wrapped to count bytes. */
    lua_State *L = luaL_newstate();
    if (L == NULL)
        return NULL;
    heap.base = lua_getallocf(L, &heap.base_ud);
    heap.in_use = (size_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024 + (size_t)lua_gc(L, LUA_GCCOUNTB, 0);
    lua_setallocf(L, heap_alloc, NULL);
    lua_atpanic(L, unprotected_error);
    luaL_openlibs(L);
    memset(&bridge, 0, sizeof bridge);
    bridge.L = L;
    bridge.signal_handler_ref = LUA_NOREF;

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
