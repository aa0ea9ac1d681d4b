/*
 * bridge.c: the Lua state, the coroutine scheduler and the `ragops.core`
 * module (spawn, suspend, wake, sleep, clocks, content hash, UTF-8 checks,
 * signals, heap caps, the C-stack guard and the watchdog of the plan sandbox).
 *
 * Every coroutine is resumed from a libuv callback, never from another
 * coroutine: spawn, wake and cancellations put the coroutine on a ready
 * queue drained by a uv_idle handle; I/O completions resume through
 * rg_async_complete. Every parked async call (rg_async) is on one list, so a
 * signal can cancel them all and closing the state can drop them.
 */
#define _GNU_SOURCE /* pthread_getattr_np (the C-stack guard) */
#include "bridge.h"
#include "vecbatch.h"

#include <errno.h>
#include <lualib.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
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

static int heap_run_cap_reached(void);

/* Reports an error (status) that escaped coroutine co and records exit
 * status 2; a memory error is said in pt-BR, without a traceback. */
static void report_coroutine_error(lua_State *co, int status)
{
    const char *msg = lua_tostring(co, -1);
    if (status == LUA_ERRMEM && heap_run_cap_reached()) {
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

/* Length of the valid UTF-8 sequence at s (at most left bytes; what
 * PostgreSQL accepts: no overlong forms, surrogates or code points past
 * U+10FFFF), or 0. */
static size_t utf8_sequence(const unsigned char *s, size_t left)
{
    unsigned char c = s[0];
    size_t n;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (left < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n;
}

/* core.utf8_check(s) -> true | false, kind ("nul" | "invalid_utf8"),
 * position (1-based byte): whether s is text PostgreSQL stores (valid
 * UTF-8, no NUL byte). Per document, before anything is embedded. */
static int core_utf8_check(lua_State *L)
{
    size_t len, i = 0;
    const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &len);
    while (i < len) {
        if (s[i] >= 0x80) {
            size_t n = utf8_sequence(s + i, len - i);
            if (n == 0)
                break;
            i += n;
        } else if (s[i] == 0) {
            break;
        } else {
            i++;
        }
    }
    if (i == len) {
        lua_pushboolean(L, 1);
        return 1;
    }
    lua_pushboolean(L, 0);
    lua_pushstring(L, s[i] == 0 ? "nul" : "invalid_utf8");
    lua_pushnumber(L, (lua_Number)(i + 1));
    return 3;
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
 * coroutine; a second signal exits the process at once (128 + signal), also
 * while the loop is stuck. */
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
    install_hard_handler(SIGINT);
    install_hard_handler(SIGTERM);
    /* Signal watchers must not keep the loop alive on their own. */
    uv_unref((uv_handle_t *)&bridge.sigint);
    uv_unref((uv_handle_t *)&bridge.sigterm);
    return 0;
}

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
    if (grown != NULL)
        heap.in_use = heap.in_use - old_size + new_size;
    return grown;
}

/* True once the run's cap refused an allocation (the flag is kept). */
static int heap_run_cap_reached(void)
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
    heap_update_limit();
    lua_pushnumber(L, (lua_Number)heap.in_use);
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
        {"utf8_check", core_utf8_check},
        {"heap_run_limit", core_heap_run_limit}, {"heap_refused", core_heap_refused},
        {"watchdog", core_watchdog},
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
    memset(&heap, 0, sizeof heap);
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
    cstack_init();
    cstack_guard(L, "string", "gsub", cstack_gsub);
    cstack_guard(L, "table", "sort", cstack_sort);
    memset(&bridge, 0, sizeof bridge);
    atomic_store(&hard_signals.seen, 0);
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
