/*
 * core_internal.h: what the files of engine/core share (not a public API;
 * see bridge.h for that):
 *
 *   bridge.c      the Lua state, the ready queue, rg_async, the scheduler's
 *                 primitives (core.spawn, suspend, wake, sleep, cancel_all)
 *   core_lua.c    the ragops.core module and its small utilities
 *   signals.c     SIGINT/SIGTERM (core.trap_signals)
 *   guards.c      heap caps, C-stack guard, watchdog (ragops.sandbox)
 *   vecbatch.c    the vectors of one batch, shared by embed, pg, vecsearch
 */
#ifndef RAGOPS_CORE_INTERNAL_H
#define RAGOPS_CORE_INTERNAL_H

#include "bridge.h"

/* ---- bridge.c ---- */

/* core.spawn, core.suspend, core.wake, core.sleep, core.cancel_all. */
extern const luaL_Reg rg_core_sched_funcs[];

/* Queues the coroutine co, at idx of L (its stack already holds nargs
 * values), to resume on the next loop pass. Raises a Lua error when memory
 * is short. */
void rg_ready_push(lua_State *L, int idx, lua_State *co, int nargs);

/* ---- signals.c ---- */

/* core.trap_signals. */
extern const luaL_Reg rg_core_signal_funcs[];

/* Forgets the watchers and the signals seen (a new Lua state). */
void rg_signals_reset(void);

/* ---- guards.c ---- */

/* core.heap_limit, core.heap_run_limit, core.heap_refused, core.heap_near_run_cap,
 * core.watchdog. */
extern const luaL_Reg rg_core_guard_funcs[];

/* Wraps L's allocator to count bytes under the heap caps (right after
 * luaL_newstate). */
void rg_heap_install(lua_State *L);

/* True once the run's cap refused an allocation (the flag is kept). */
int rg_heap_run_cap_reached(void);

/* Guards string.gsub and table.sort against C-stack exhaustion (after
 * luaL_openlibs). */
void rg_cstack_install(lua_State *L);

#endif
