/*
 * bridge.h: the C <-> Lua boundary. One libuv loop (uv_default_loop()), one
 * main lua_State, plans and workers as Lua coroutines.
 *
 * The pattern (OpenResty cosocket style): an async primitive checks its
 * arguments (rg_check_coroutine), starts the I/O and returns
 * rg_async_suspend(L, op, push, cancel): the coroutine, a function that
 * pushes the results and a function that stops the I/O are stored in op.
 * When the I/O completes, the callback calls rg_async_complete(op, outcome):
 * push runs protected on the main state (an out-of-memory error cannot
 * longjmp through C callbacks), the values move to the coroutine and it
 * continues as if the primitive had returned them. rg_async_cancel and
 * rg_async_cancel_all (the signal path) stop the I/O and resume the
 * coroutine with nil, "interrompido", ... instead.
 *
 * Runtime failures return nil, err to Lua; misuse raises a Lua error.
 */
#ifndef RAGOPS_BRIDGE_H
#define RAGOPS_BRIDGE_H

#include <lua.h>
#include <lauxlib.h>
#include <stddef.h>
#include <uv.h>

/* The struct of the given type holding member at ptr (for cancel functions). */
#define RG_CONTAINER_OF(ptr, type, member) ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

/* One Lua call waiting on the loop (an rg_async lives inside the
 * primitive's request or connection). */
typedef struct rg_async rg_async;

/* Pushes the results of a call onto L (the main state, in protected mode)
 * and returns how many. outcome is what the primitive handed to
 * rg_async_complete or rg_async_cancel; NULL means "interrupted": push
 * rg_push_interrupted's values plus the primitive's own third value. */
typedef int (*rg_push_fn)(lua_State *L, void *outcome);

/* Stops the I/O behind a pending call. Afterwards the primitive must never
 * complete op; it may free the memory holding op. */
typedef void (*rg_cancel_fn)(rg_async *op);

struct rg_async {
    lua_State *co;       /* the parked coroutine, NULL when nothing waits */
    int ref;             /* registry reference pinning co while it waits */
    rg_push_fn push;     /* pushes the results (see rg_push_fn) */
    rg_cancel_fn cancel; /* stops the I/O on cancellation or state close */
    rg_async *prev;      /* previous pending call (the bridge's list) */
    rg_async *next;      /* next pending call */
};

/* Message every cancelled call returns after nil. */
#define RG_INTERRUPTED_MSG "interrompido"

/* Initialises an idle call. */
void rg_async_init(rg_async *op);

/* Raises a Lua error unless L is a coroutine that may yield. what names the
 * primitive in the message. Call it before allocating anything. */
void rg_check_coroutine(lua_State *L, const char *what);

/* Parks the running coroutine L on op (listed as pending, so it can be
 * cancelled) and yields. Use as `return rg_async_suspend(L, op, push,
 * cancel);` as the last statement of a lua_CFunction, after
 * rg_check_coroutine. */
int rg_async_suspend(lua_State *L, rg_async *op, rg_push_fn push, rg_cancel_fn cancel);

/* From a loop callback: pushes op's results for outcome (protected) and
 * resumes its coroutine now. op is idle again before the coroutine runs, so
 * the coroutine may park on it again; a no-op when nothing waits. An error
 * escaping the coroutine is reported and recorded as exit status 2. */
void rg_async_complete(rg_async *op, void *outcome);

/* Cancels a pending call: stops its I/O (op->cancel), pushes the results for
 * outcome (NULL: interrupted) and queues the coroutine to resume on the next
 * loop pass (never from inside the caller). A no-op when nothing waits. */
void rg_async_cancel(rg_async *op, void *outcome);

/* Cancels every pending call of the loop as interrupted; returns how many. */
int rg_async_cancel_all(void);

/* True when a coroutine is parked on op. */
int rg_async_pending(const rg_async *op);

/* Pushes nil, "interrompido" and returns 2 (for push functions). */
int rg_push_interrupted(lua_State *L);

/* Creates the metatable name (once per state): methods become its __index,
 * then the metamethods ({"__gc", f}, {"__tostring", g}, ...). Leaves the
 * stack as it was. */
void rg_register_class(lua_State *L, const char *name, const luaL_Reg *methods, const luaL_Reg *metamethods);

/* Optional field of the options table at index: pushes it and returns 1, or
 * returns 0 with nothing pushed when it is nil. */
int rg_opt_field(lua_State *L, int index, const char *field);

/* The main Lua state (owner of the registry). */
lua_State *rg_main_state(void);

/* Creates the Lua state, opens the standard libraries, registers the C
 * modules in package.preload (ragops.core, ragops.pg, ragops.http,
 * ragops.embed, ragops.vecsearch, ragops.httpd) and sets package.path to lua_dir. Returns NULL on failure. */
lua_State *rg_bridge_open(const char *lua_dir);

/* Runs fn (on top of L's stack) with the given string arguments in a new
 * coroutine, drives the loop until every handle is closed, and returns the
 * exit status: the coroutine's numeric return value, or 2 after an error. */
int rg_bridge_run_main(lua_State *L, int argc, char **argv);

/* Closes the Lua state (which closes handles owned by userdata __gc) and
 * runs the loop until its handles are closed. */
void rg_bridge_close(lua_State *L);

/* Module openers registered by rg_bridge_open; each lives in its own file. */
int luaopen_ragops_core(lua_State *L);      /* core/core_lua.c (functions listed there) */
int luaopen_ragops_pg(lua_State *L);        /* pg/pg_lua.c */
int luaopen_ragops_http(lua_State *L);      /* http/http_lua.c */
int luaopen_ragops_embed(lua_State *L);     /* embed/embed_lua.c */
int luaopen_ragops_vecsearch(lua_State *L); /* vecsearch/vecsearch_lua.c */
int luaopen_ragops_httpd(lua_State *L);     /* http/httpd_lua.c */

#endif
