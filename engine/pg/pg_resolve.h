/*
 * pg_resolve.h: host name resolution for pg.c. libpq resolves host NAMES
 * with a blocking getaddrinfo inside PQconnectStart; to keep the loop thread
 * free, the conninfo is parsed first (PQconninfoParse), every host entry that
 * is a name is resolved with uv_getaddrinfo (libuv threadpool) and libpq is
 * then started with PQconnectStartParams and hostaddr=<numeric addresses>,
 * keeping host= so TLS verification, pgpass and messages still use the name.
 * A name with several addresses becomes several host entries (host=n,n
 * hostaddr=a1,a2), so libpq still tries each address in turn, as it does for
 * names it resolves itself.
 */
#ifndef RAGOPS_PG_RESOLVE_H
#define RAGOPS_PG_RESOLVE_H

#include <stddef.h>
#include <libpq-fe.h>
#include <uv.h>

typedef struct pg_resolve pg_resolve;

/* Called from the loop once every lookup has called back. */
typedef void (*pg_resolve_cb)(void *data);

/* Decides whether conninfo names hosts that libpq would resolve itself
 * (blocking). *out is the plan when so, NULL when libpq can start directly:
 * hostaddr given, only addresses/sockets, host taken from a service file, or
 * a conninfo libpq will reject anyway (it then reports the error itself).
 * Returns -1 only when memory is short. */
int pg_resolve_plan(const char *conninfo, pg_resolve **out);

/* Starts one uv_getaddrinfo per name; cb(data) runs when the last one calls
 * back. Returns how many started: with 0, cb is never called and the caller
 * goes on (pg_resolve_connect reports the names that could not start). */
int pg_resolve_start(pg_resolve *r, uv_loop_t *loop, pg_resolve_cb cb, void *data);

/* Asks libuv to cancel the lookups still running; they call back anyway
 * (cb still runs when the last one does). */
void pg_resolve_cancel(pg_resolve *r);

/* Lookups that have not called back yet (r must not be freed before 0). */
int pg_resolve_pending(const pg_resolve *r);

/* Once nothing is pending: starts libpq with the numeric addresses. Returns
 * 0 with *conn from PQconnectStartParams (NULL when libpq is short of
 * memory), or -1 when no host entry is left or memory is short, with a pt-BR
 * message in prefix and its detail in *detail (a static string). */
int pg_resolve_connect(const pg_resolve *r, PGconn **conn, char *prefix, size_t prefix_size,
                       const char **detail);

/* Releases r (NULL is fine); only when nothing is pending. */
void pg_resolve_free(pg_resolve *r);

#endif
