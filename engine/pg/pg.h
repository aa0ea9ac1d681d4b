/*
 * pg.h: one asynchronous PostgreSQL connection driven by the libuv loop.
 *
 * libpq's non-blocking API (PQconnectStart/PQconnectPoll, PQsendQueryParams,
 * PQflush, PQconsumeInput, PQputCopyData) is driven by a uv_poll on
 * PQsocket(); no call here blocks the loop thread: host names are resolved
 * first with uv_getaddrinfo (threadpool) and handed to libpq as hostaddr=.
 *
 * Every outcome is reported through a callback invoked from the loop, never
 * synchronously from the function that started the operation. One operation
 * at a time per connection: starting a second one while the first is pending
 * fails with PG_ERR_BUSY (no queue).
 *
 * Lifetime: the caller owns the pg_conn from pg_conn_start until it calls
 * pg_conn_close (also after a failed connect). pg_conn_close is safe at any
 * time, including from inside a callback and while an operation is pending:
 * the pending callback is then NEVER called. Memory is released later, from
 * the loop, once the poll handles are closed; the caller must not use the
 * pointer after pg_conn_close returns.
 *
 * Messages are in pt-BR, wrap the server's/libpq's message and never include
 * the conninfo (it may carry a password).
 */
#ifndef RAGOPS_PG_H
#define RAGOPS_PG_H

#include <stddef.h>
#include <stdint.h>
#include <libpq-fe.h>
#include <uv.h>

typedef struct pg_conn pg_conn;

/* Synchronous return codes of pg_conn_query / pg_conn_copy_in. */
enum {
    PG_OK = 0,          /* started; the callback will be called */
    PG_ERR_BUSY = -1,   /* another operation is pending (caller misuse) */
    PG_ERR_CLOSED = -2, /* not connected: never connected, lost or closed */
    PG_ERR_SEND = -3    /* libpq refused to send; see pg_conn_error() */
};

/* SQLSTATE reported when the connection is lost or unusable. */
#define PG_SQLSTATE_CONNECTION_FAILURE "08006"
/* SQLSTATE reported when the connection was never established/closed. */
#define PG_SQLSTATE_NO_CONNECTION "08003"

/* Connection established (err NULL) or failed (err = pt-BR message). */
typedef void (*pg_connect_cb)(pg_conn *c, const char *err, void *data);

/*
 * Query/COPY finished. On success err and sqlstate are NULL and res is the
 * last result (PGRES_TUPLES_OK or PGRES_COMMAND_OK). On failure err is a
 * pt-BR message, sqlstate the 5-char SQLSTATE ("08006" when the connection
 * was lost) and res is the first error result, or NULL. res belongs to the
 * connection and is cleared when the callback returns. The callback may start
 * the next operation or close the connection.
 */
typedef void (*pg_result_cb)(pg_conn *c, PGresult *res, const char *err,
                             const char *sqlstate, void *data);

/*
 * Wait for a notification finished: note is the first one received (err
 * NULL), or note and err are both NULL (the timeout passed), or err is a
 * pt-BR message with SQLSTATE 08006 in pg_conn_sqlstate (the connection was
 * lost). note belongs to the connection and is freed when the callback
 * returns. The callback may start the next operation or close the connection.
 */
typedef void (*pg_notify_cb)(pg_conn *c, const PGnotify *note, const char *err, void *data);

/* Starts connecting; cb is called once from the loop. NULL only when memory
 * is short. */
pg_conn *pg_conn_start(uv_loop_t *loop, const char *conninfo, pg_connect_cb cb, void *data);

/* Sends sql with nparams text parameters (values[i] NULL = SQL NULL),
 * always through the extended protocol (also with nparams == 0): sql is ONE
 * statement; several are refused by the server with SQLSTATE 42601. */
int pg_conn_query(pg_conn *c, const char *sql, int nparams, const char *const *values,
                  pg_result_cb cb, void *data);

/* Runs a `COPY ... FROM STDIN` statement and streams buf[0..len) as its
 * data. buf must stay valid until cb is called or the connection is closed. */
int pg_conn_copy_in(pg_conn *c, const char *sql, const char *buf, size_t len,
                    pg_result_cb cb, void *data);

/* Waits, without polling the server, for a NOTIFY on a channel this session
 * LISTENs to: the socket is watched for input and the callback is called on
 * the first notification (also one libpq already buffered during an earlier
 * query), after timeout_ms (0: no timeout) or when the link is lost. Counts
 * as the pending operation (a query meanwhile is PG_ERR_BUSY). */
int pg_conn_wait_notify(pg_conn *c, uint64_t timeout_ms, pg_notify_cb cb, void *data);

/* Closes the connection (idempotent per pointer: call it exactly once). A
 * pending callback is never called afterwards. */
void pg_conn_close(pg_conn *c);

/* 1 when connected and not lost; 0 while connecting, after a failure or loss. */
int pg_conn_is_ok(const pg_conn *c);

/* 1 while a connect, query, COPY or notification wait is pending. */
int pg_conn_is_busy(const pg_conn *c);

/* Last error message (pt-BR) recorded on c, "" if none. */
const char *pg_conn_error(const pg_conn *c);

/* SQLSTATE of the last error recorded on c, "" if none. */
const char *pg_conn_sqlstate(const pg_conn *c);

/* Checks conninfo without connecting: libpq's own parse (key=value or URI
 * syntax, known option names) and the sslmode value. Returns 0, or -1 with
 * libpq's message (English, one line) in err: a configuration error, not a
 * database that may come back. */
int pg_conninfo_check(const char *conninfo, char *err, size_t errlen);

/* Most server notices (NOTICE, WARNING, ...) a connection keeps until they
 * are taken; later ones are counted as dropped. libpq's default processor,
 * which prints them to stderr in the server's language, is never used. */
#define PG_NOTICES_MAX 8

/* One server notice, truncated to fit. */
typedef struct pg_notice {
    char severity[16]; /* non-localized severity: NOTICE, WARNING, INFO, ... */
    char sqlstate[6];  /* its SQLSTATE ("" when the server sent none) */
    char message[384]; /* primary message, on one line */
    char hint[256];    /* hint, on one line ("" when none) */
} pg_notice;

/* Notices kept since the last pg_conn_clear_notices (0..PG_NOTICES_MAX). */
int pg_conn_notice_count(const pg_conn *c);

/* Notice i (0-based, oldest first), or NULL when out of range. */
const pg_notice *pg_conn_notice(const pg_conn *c, int i);

/* Notices that arrived while PG_NOTICES_MAX were kept (not stored). */
int pg_conn_notices_dropped(const pg_conn *c);

/* Forgets the kept notices and the dropped count. */
void pg_conn_clear_notices(pg_conn *c);

/* The underlying PGconn (escaping helpers, tests). NULL once closed. */
PGconn *pg_conn_raw(pg_conn *c);

#endif
