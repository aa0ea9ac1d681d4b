/*
 * bridge.h: the C <-> Lua boundary. One libuv loop (uv_default_loop()), one
 * main lua_State, plans and workers as Lua coroutines.
 *
 * The pattern (OpenResty cosocket style): an async primitive checks its
 * arguments, stores the calling coroutine in an rg_task, starts the I/O and
 * returns rg_task_suspend(L, &task). When the I/O completes, the callback
 * pushes the results onto task.co and calls rg_task_resume(&task, nresults):
 * the coroutine continues as if the primitive had returned those values.
 *
 * Runtime failures return nil, err to Lua; misuse raises a Lua error.
 */
#ifndef RAGOPS_BRIDGE_H
#define RAGOPS_BRIDGE_H

#include <lua.h>
#include <lauxlib.h>
#include <uv.h>

/* A coroutine parked on one pending async call. */
typedef struct rg_task {
    lua_State *co; /* the yielded coroutine, NULL when nothing waits */
    int ref;       /* registry reference pinning co while it waits */
} rg_task;

/* Initialises an empty task (co NULL, ref LUA_NOREF). */
void rg_task_init(rg_task *task);

/* Parks the running coroutine L in task and yields. Use as
 * `return rg_task_suspend(L, &req->task);` as the last statement of a
 * lua_CFunction. Raises a Lua error when called outside a coroutine. */
int rg_task_suspend(lua_State *L, rg_task *task);

/* Raises a Lua error unless L is a coroutine that may yield. Call it
 * before allocating anything for an async request. */
void rg_check_yieldable(lua_State *L);

/* Resumes the coroutine parked in task with the nresults values the caller
 * has pushed onto task->co. Clears task before resuming, so the coroutine may
 * park on the same task again. An error escaping the coroutine is reported
 * with its traceback and recorded as the process exit status 2. */
void rg_task_resume(rg_task *task, int nresults);

/* True when a coroutine is parked in task. */
int rg_task_pending(const rg_task *task);

/* The main Lua state (owner of the registry). */
lua_State *rg_main_state(void);

/* Creates the Lua state, opens the standard libraries, registers the C
 * modules in package.preload (ragops.core, ragops.pg, ragops.http,
 * ragops.embed) and sets package.path to lua_dir. Returns NULL on failure. */
lua_State *rg_bridge_open(const char *lua_dir);

/* Runs fn (on top of L's stack) with the given string arguments in a new
 * coroutine, drives the loop until every handle is closed, and returns the
 * exit status: the coroutine's numeric return value, or 2 after an error. */
int rg_bridge_run_main(lua_State *L, int argc, char **argv);

/* Closes the Lua state (which closes handles owned by userdata __gc) and
 * runs the loop until its handles are closed. */
void rg_bridge_close(lua_State *L);

/* Module openers registered by rg_bridge_open; each lives in its own file. */
int luaopen_ragops_core(lua_State *L);  /* bridge.c: spawn, suspend, wake, sleep, now, hash */
int luaopen_ragops_pg(lua_State *L);    /* pg_lua.c */
int luaopen_ragops_http(lua_State *L);  /* http_lua.c */
int luaopen_ragops_embed(lua_State *L); /* embed_lua.c */
int luaopen_ragops_vecsearch(lua_State *L); /* vecsearch.c */

#endif
