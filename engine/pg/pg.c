/*
 * pg.c: one asynchronous PostgreSQL connection (libpq non-blocking API)
 * driven by a uv_poll on PQsocket(). See pg.h for the contract.
 *
 * Host names are resolved first, off the loop thread (pg_resolve.c), so
 * libpq never runs a blocking getaddrinfo.
 *
 * State machine:
 *   RESOLVING --names resolved--> CONNECTING (skipped when nothing to resolve)
 *   CONNECTING --PQconnectPoll OK--> IDLE --query/copy--> READING --> IDLE
 *                                          copy: READING --COPY_IN--> COPY_DATA
 *                                                --> COPY_END --> READING
 *   IDLE --wait_notify--> WAITING --notification, timeout--> IDLE
 *   any failure of the link --> FAILED; pg_conn_close --> CLOSED (freed later)
 */
#include "pg.h"
#include "pg_resolve.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Size of each PQputCopyData call. */
#define PG_COPY_CHUNK (64 * 1024)

typedef enum pg_state {
    PG_STATE_RESOLVING,  /* waiting for uv_getaddrinfo on the host names */
    PG_STATE_CONNECTING, /* PQconnectPoll sequence in progress */
    PG_STATE_IDLE,       /* connected, nothing pending */
    PG_STATE_READING,    /* command sent: flushing output, collecting results */
    PG_STATE_COPY_DATA,  /* in COPY IN: streaming the caller's buffer */
    PG_STATE_COPY_END,   /* in COPY IN: PQputCopyEnd not yet accepted */
    PG_STATE_WAITING,    /* waiting for a NOTIFY (socket watched for input) */
    PG_STATE_FAILED,     /* connect failed or connection lost */
    PG_STATE_CLOSED      /* pg_conn_close called; waiting for handles */
} pg_state;

struct pg_conn {
    uv_loop_t *loop;            /* loop driving this connection */
    pg_resolve *resolve;        /* name resolution in progress, NULL when none */
    PGconn *conn;               /* libpq connection; NULL once closed */
    pg_state state;             /* where the state machine is */
    uv_poll_t *poll;            /* poll on the current PQsocket, NULL if none */
    int poll_fd;                /* fd that poll watches (-1 when none) */
    uv_timer_t defer;           /* delivers an immediate connect failure from the loop;
                                   the timeout (or a buffered note) of a notification wait */
    int open_handles;           /* handles not yet closed; free when 0 after close */
    pg_connect_cb connect_cb;   /* pending connect callback, NULL when none */
    pg_result_cb result_cb;     /* pending query/COPY callback, NULL when none */
    pg_notify_cb notify_cb;     /* pending notification wait callback, NULL when none */
    PGnotify *note_ready;       /* note libpq had buffered when the wait began, delivered from the loop */
    void *cb_data;              /* user data of the pending callback */
    int need_flush;             /* 1 while PQflush has not returned 0 yet */
    int is_copy;                /* 1 when the pending operation is a COPY IN */
    const char *copy_buf;       /* caller's COPY data (not owned) */
    size_t copy_len;            /* bytes in copy_buf */
    size_t copy_off;            /* bytes of copy_buf already handed to libpq */
    PGresult *result;           /* result kept for the callback (last, or first error) */
    char err[1024];             /* last pt-BR error message */
    char sqlstate[6];           /* SQLSTATE of the last error */
    pg_notice notices[PG_NOTICES_MAX]; /* server notices not yet taken, oldest first */
    int notice_count;           /* entries used in notices */
    int notices_dropped;        /* notices that arrived with notices full */
};

static void on_poll(uv_poll_t *handle, int status, int events);
static int notify_pump(pg_conn *c, int from_timer);
static void on_defer(uv_timer_t *timer);
static void connect_begin(pg_conn *c);

/* Copies libpq's message into out, folding newlines/tabs into single spaces
 * and trimming, so one error fits on one log line. */
static void fold_message(char *out, size_t outlen, const char *msg)
{
    size_t n = 0;
    int pending_space = 0;
    if (msg == NULL)
        msg = "";
    for (const char *p = msg; *p != '\0' && n + 1 < outlen; p++) {
        if (*p == '\n' || *p == '\t' || *p == '\r' || *p == ' ') {
            pending_space = n > 0;
            continue;
        }
        if (pending_space && n + 2 < outlen)
            out[n++] = ' ';
        pending_space = 0;
        out[n++] = *p;
    }
    out[n] = '\0';
}

/* Records a pt-BR error "prefix: detail" and its SQLSTATE on c. */
static void set_error(pg_conn *c, const char *prefix, const char *detail, const char *sqlstate)
{
    char folded[768];
    fold_message(folded, sizeof folded, detail);
    /* prefix is a short pt-BR literal: 254 + ": " + 767 + NUL fit in err. */
    if (folded[0] != '\0')
        snprintf(c->err, sizeof c->err, "%.254s: %s", prefix, folded);
    else
        snprintf(c->err, sizeof c->err, "%.254s", prefix);
    snprintf(c->sqlstate, sizeof c->sqlstate, "%s", sqlstate ? sqlstate : "");
}

/* Frees c once closed, its handles closed and no lookup can call back. */
static void maybe_free(pg_conn *c)
{
    if (c->state != PG_STATE_CLOSED || c->open_handles != 0)
        return;
    if (c->resolve != NULL && pg_resolve_pending(c->resolve) != 0)
        return;
    pg_resolve_free(c->resolve);
    free(c);
}

static void on_poll_closed(uv_handle_t *handle)
{
    pg_conn *c = handle->data;
    free(handle);
    c->open_handles--;
    maybe_free(c);
}

static void on_defer_closed(uv_handle_t *handle)
{
    pg_conn *c = handle->data;
    c->open_handles--;
    maybe_free(c);
}

static void drop_poll(pg_conn *c)
{
    if (c->poll == NULL)
        return;
    uv_close((uv_handle_t *)c->poll, on_poll_closed);
    c->poll = NULL;
    c->poll_fd = -1;
}

/* Watches PQsocket for events. When the socket changed (libpq may reopen it
 * while connecting) a fresh poll handle is created; otherwise the poll is
 * stopped and restarted so the epoll registration is renewed even if libpq
 * reused the same fd number for a new socket. Returns 0 or a libuv error. */
static int watch(pg_conn *c, int events)
{
    int fd = PQsocket(c->conn);
    int rc;
    if (fd < 0)
        return UV_EBADF;
    if (c->poll != NULL && c->poll_fd != fd)
        drop_poll(c);
    if (c->poll == NULL) {
        uv_poll_t *p = malloc(sizeof *p);
        if (p == NULL)
            return UV_ENOMEM;
        rc = uv_poll_init(c->loop, p, fd);
        if (rc != 0) {
            free(p);
            return rc;
        }
        p->data = c;
        c->poll = p;
        c->poll_fd = fd;
        c->open_handles++;
    } else if (c->state == PG_STATE_CONNECTING) {
        uv_poll_stop(c->poll);
    }
    return uv_poll_start(c->poll, events, on_poll);
}

static void unwatch(pg_conn *c)
{
    if (c->poll != NULL)
        uv_poll_stop(c->poll);
}

/* ---- connect ---------------------------------------------------------- */

static void connect_done(pg_conn *c, const char *err)
{
    pg_connect_cb cb = c->connect_cb;
    void *data = c->cb_data;
    c->connect_cb = NULL;
    c->cb_data = NULL;
    if (cb != NULL)
        cb(c, err, data);
}

static void connect_fail(pg_conn *c, const char *detail)
{
    c->state = PG_STATE_FAILED;
    unwatch(c);
    set_error(c, "falha ao conectar ao PostgreSQL", detail, PG_SQLSTATE_CONNECTION_FAILURE);
    connect_done(c, c->err);
}

static void connect_step(pg_conn *c)
{
    PostgresPollingStatusType st = PQconnectPoll(c->conn);
    int rc;
    switch (st) {
    case PGRES_POLLING_READING:
        rc = watch(c, UV_READABLE);
        break;
    case PGRES_POLLING_WRITING:
        rc = watch(c, UV_WRITABLE);
        break;
    case PGRES_POLLING_OK:
        if (PQsetnonblocking(c->conn, 1) != 0) {
            connect_fail(c, PQerrorMessage(c->conn));
            return;
        }
        c->state = PG_STATE_IDLE;
        unwatch(c);
        connect_done(c, NULL);
        return;
    default:
        connect_fail(c, PQerrorMessage(c->conn));
        return;
    }
    if (rc != 0)
        connect_fail(c, uv_strerror(rc));
}

/* ---- host name resolution ---------------------------------------------- */

/* The last lookup called back: forget a closed connection, or start libpq
 * with the numeric addresses (fails when no host entry is left). */
static void on_names_resolved(void *data)
{
    pg_conn *c = data;
    pg_resolve *r = c->resolve;
    char prefix[512];
    const char *detail = NULL;
    if (c->state == PG_STATE_CLOSED) {
        maybe_free(c);
        return;
    }
    c->resolve = NULL;
    if (pg_resolve_connect(r, &c->conn, prefix, sizeof prefix, &detail) != 0) {
        pg_resolve_free(r);
        c->state = PG_STATE_FAILED;
        set_error(c, prefix, detail, PG_SQLSTATE_CONNECTION_FAILURE);
        connect_done(c, c->err);
        return;
    }
    pg_resolve_free(r);
    c->state = PG_STATE_CONNECTING;
    connect_begin(c);
}

static void on_defer(uv_timer_t *timer)
{
    pg_conn *c = timer->data;
    if (c->state == PG_STATE_WAITING)
        notify_pump(c, 1);
    else if (c->state == PG_STATE_FAILED)
        connect_done(c, c->err);
    else if (c->state == PG_STATE_RESOLVING && c->resolve != NULL && pg_resolve_pending(c->resolve) == 0)
        on_names_resolved(c);
}

/* libpq's notice receiver: keeps the notice on c (bounded) instead of
 * printing it; the caller decides what the operator sees, in pt-BR. */
static void on_notice(void *arg, const PGresult *res)
{
    pg_conn *c = arg;
    const char *severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *sqlstate = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    pg_notice *n;
    if (c->notice_count >= PG_NOTICES_MAX) {
        c->notices_dropped++;
        return;
    }
    n = &c->notices[c->notice_count++];
    snprintf(n->severity, sizeof n->severity, "%s", severity ? severity : "NOTICE");
    snprintf(n->sqlstate, sizeof n->sqlstate, "%s", sqlstate ? sqlstate : "");
    fold_message(n->message, sizeof n->message, PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
    fold_message(n->hint, sizeof n->hint, PQresultErrorField(res, PG_DIAG_MESSAGE_HINT));
}

/* libpq has been started (c->conn, or NULL when memory was short): report an
 * immediate failure from the loop, or wait for the socket. */
static void connect_begin(pg_conn *c)
{
    int rc;
    if (c->conn != NULL)
        PQsetNoticeReceiver(c->conn, on_notice, c);
    if (c->conn == NULL || PQstatus(c->conn) == CONNECTION_BAD) {
        c->state = PG_STATE_FAILED;
        set_error(c, "falha ao conectar ao PostgreSQL",
                  c->conn ? PQerrorMessage(c->conn) : "memória insuficiente",
                  PG_SQLSTATE_CONNECTION_FAILURE);
        uv_timer_start(&c->defer, on_defer, 0, 0);
        return;
    }
    /* Per libpq docs: behave as if PQconnectPoll had returned WRITING. */
    rc = watch(c, UV_WRITABLE);
    if (rc != 0) {
        c->state = PG_STATE_FAILED;
        set_error(c, "falha ao conectar ao PostgreSQL", uv_strerror(rc),
                  PG_SQLSTATE_CONNECTION_FAILURE);
        uv_timer_start(&c->defer, on_defer, 0, 0);
    }
}

pg_conn *pg_conn_start(uv_loop_t *loop, const char *conninfo, pg_connect_cb cb, void *data)
{
    pg_conn *c = calloc(1, sizeof *c);
    pg_resolve *plan = NULL;
    if (c == NULL)
        goto fail;
    c->loop = loop;
    c->poll_fd = -1;
    c->connect_cb = cb;
    c->cb_data = data;
    if (pg_resolve_plan(conninfo, &plan) != 0)
        goto fail;
    if (plan == NULL) {
        /* Nothing to resolve: libpq will not look a name up. */
        c->conn = PQconnectStart(conninfo);
        if (c->conn == NULL)
            goto fail;
    }
    uv_timer_init(loop, &c->defer);
    c->defer.data = c;
    c->open_handles = 1;
    if (plan != NULL) {
        c->state = PG_STATE_RESOLVING;
        c->resolve = plan;
        /* When no lookup could start, the outcome comes from the loop. */
        if (pg_resolve_start(plan, loop, on_names_resolved, c) == 0)
            uv_timer_start(&c->defer, on_defer, 0, 0);
        return c;
    }
    c->state = PG_STATE_CONNECTING;
    connect_begin(c);
    return c;

fail:
    free(c);
    return NULL;
}

/* ---- query / copy ----------------------------------------------------- */

/* Ends the pending operation: the kept result (or err) goes to the callback,
 * then the result is cleared. */
static void op_finish(pg_conn *c, const char *err, const char *sqlstate)
{
    pg_result_cb cb = c->result_cb;
    void *data = c->cb_data;
    PGresult *res = c->result;
    c->result = NULL;
    c->result_cb = NULL;
    c->cb_data = NULL;
    c->copy_buf = NULL;
    c->copy_len = c->copy_off = 0;
    c->is_copy = 0;
    c->need_flush = 0;
    if (c->state != PG_STATE_FAILED)
        c->state = PG_STATE_IDLE;
    unwatch(c);
    if (cb != NULL)
        cb(c, res, err, sqlstate, data);
    PQclear(res);
}

/* The link failed (a libpq I/O call returned an error). The protocol state is
 * unknown afterwards, so the connection is given up and the error carries
 * SQLSTATE 08006: callers reconnect. */
static void op_fail(pg_conn *c, const char *prefix)
{
    if (PQstatus(c->conn) == CONNECTION_BAD)
        prefix = "conexão com o PostgreSQL perdida";
    c->state = PG_STATE_FAILED;
    set_error(c, prefix, PQerrorMessage(c->conn), PG_SQLSTATE_CONNECTION_FAILURE);
    op_finish(c, c->err, c->sqlstate);
}

/* PQflush: 0 all sent, 1 wait until the socket is writable, -1 failed (the
 * operation has then ended with prefix). */
static int flush_or_fail(pg_conn *c, const char *prefix)
{
    int rc = PQflush(c->conn);
    if (rc < 0)
        op_fail(c, prefix);
    return rc;
}

/* What op_pump does after PQputCopyData/PQputCopyEnd. */
typedef enum copy_put_next {
    COPY_PUT_ACCEPTED, /* libpq took the data (or the end) */
    COPY_PUT_WAIT,     /* libpq's buffer is full: wait until writable */
    COPY_PUT_READ,     /* libpq left COPY mode: pump again, reading results */
    COPY_PUT_ENDED     /* the link failed: the operation has ended */
} copy_put_next;

/* Interprets rc of PQputCopyData/PQputCopyEnd. On -1 with the link still up,
 * libpq has left COPY mode (the server reported an error): go read the
 * results, where that error is. */
static copy_put_next copy_put_outcome(pg_conn *c, int rc)
{
    if (rc > 0)
        return COPY_PUT_ACCEPTED;
    if (rc == 0)
        return COPY_PUT_WAIT;
    if (PQstatus(c->conn) == CONNECTION_BAD) {
        op_fail(c, "falha no COPY");
        return COPY_PUT_ENDED;
    }
    c->state = PG_STATE_READING;
    c->need_flush = 0;
    return COPY_PUT_READ;
}

/* The server's primary message only: DETAIL and CONTEXT may quote the row
 * ("Failing row contains (...)", the COPY line), which must never reach an
 * operator log. The SQLSTATE travels separately; the full fields stay in
 * the PGresult handed to the callback. */
static const char *result_primary_message(pg_conn *c, const PGresult *res)
{
    const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (primary != NULL && primary[0] != '\0')
        return primary;
    return res ? "o servidor não informou a mensagem" : PQerrorMessage(c->conn);
}

/* Collected every result: report the kept one. */
static void op_complete(pg_conn *c)
{
    PGresult *res = c->result;
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    const char *sqlstate;
    if (PQstatus(c->conn) == CONNECTION_BAD)
        c->state = PG_STATE_FAILED;
    if (res != NULL && st != PGRES_FATAL_ERROR && st != PGRES_BAD_RESPONSE) {
        op_finish(c, NULL, NULL);
        return;
    }
    sqlstate = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (sqlstate == NULL || sqlstate[0] == '\0')
        sqlstate = "XX000";
    /* A lost link is reported as class 08 whatever the last message said
     * (e.g. 57P01 before the server closed the socket): callers reconnect. */
    if (c->state == PG_STATE_FAILED)
        sqlstate = PG_SQLSTATE_CONNECTION_FAILURE;
    if (c->state == PG_STATE_FAILED)
        set_error(c, "conexão com o PostgreSQL perdida", result_primary_message(c, res), sqlstate);
    else
        set_error(c, c->is_copy ? "falha no COPY" : "erro do PostgreSQL", result_primary_message(c, res),
                  sqlstate);
    op_finish(c, c->err, c->sqlstate);
}

/* Keeps the last result, or the first error (later results are dropped). */
static void keep_result(pg_conn *c, PGresult *res)
{
    ExecStatusType kept = c->result ? PQresultStatus(c->result) : PGRES_EMPTY_QUERY;
    if (c->result != NULL && (kept == PGRES_FATAL_ERROR || kept == PGRES_BAD_RESPONSE)) {
        PQclear(res);
        return;
    }
    PQclear(c->result);
    c->result = res;
}

/* What a step of op_pump asks for next. */
typedef enum pump_next {
    PUMP_STOP,       /* the operation finished or failed: nothing to wait for */
    PUMP_AGAIN,      /* run the steps again from the top */
    PUMP_GO_ON,      /* go on to the next step */
    PUMP_WAIT_READ,  /* wait until the socket is readable */
    PUMP_WAIT_WRITE  /* wait until the socket is writable (or readable) */
} pump_next;

/* Sends the rows of a COPY, then its end (PG_STATE_COPY_DATA/COPY_END). */
static pump_next pump_copy(pg_conn *c)
{
    copy_put_next next;
    if (c->state == PG_STATE_COPY_DATA) {
        int rc = flush_or_fail(c, "falha no COPY");
        if (rc < 0)
            return PUMP_STOP;
        if (rc == 1)
            return PUMP_WAIT_WRITE;
        if (c->copy_off < c->copy_len) {
            size_t n = c->copy_len - c->copy_off;
            if (n > PG_COPY_CHUNK)
                n = PG_COPY_CHUNK;
            next = copy_put_outcome(c, PQputCopyData(c->conn, c->copy_buf + c->copy_off, (int)n));
            if (next == COPY_PUT_ENDED)
                return PUMP_STOP;
            if (next == COPY_PUT_WAIT)
                return PUMP_WAIT_WRITE;
            if (next == COPY_PUT_ACCEPTED)
                c->copy_off += n;
            return PUMP_AGAIN;
        }
        c->state = PG_STATE_COPY_END;
    }
    if (c->state == PG_STATE_COPY_END) {
        next = copy_put_outcome(c, PQputCopyEnd(c->conn, NULL));
        if (next == COPY_PUT_ENDED)
            return PUMP_STOP;
        if (next == COPY_PUT_WAIT)
            return PUMP_WAIT_WRITE;
        if (next == COPY_PUT_READ)
            return PUMP_AGAIN;
        c->state = PG_STATE_READING;
        c->need_flush = 1;
    }
    return PUMP_GO_ON;
}

/* Takes the results libpq has without blocking (PG_STATE_READING): keeps
 * them, completes the operation after the last, or switches to COPY. */
static pump_next pump_results(pg_conn *c)
{
    while (!PQisBusy(c->conn)) {
        PGresult *res = PQgetResult(c->conn);
        ExecStatusType st;
        if (res == NULL) {
            op_complete(c);
            return PUMP_STOP;
        }
        st = PQresultStatus(res);
        if (st == PGRES_COPY_IN) {
            PQclear(res);
            if (!c->is_copy) {
                /* A plain query may not start COPY FROM STDIN. */
                PQputCopyEnd(c->conn, "COPY FROM STDIN não suportado em query");
                c->need_flush = 1;
                break;
            }
            c->state = PG_STATE_COPY_DATA;
            break;
        }
        if (st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
            PQclear(res);
            set_error(c, "COPY TO STDOUT não é suportado", NULL, "0A000");
            c->state = PG_STATE_FAILED;
            op_finish(c, c->err, c->sqlstate);
            return PUMP_STOP;
        }
        keep_result(c, res);
    }
    return c->state == PG_STATE_READING && !c->need_flush ? PUMP_WAIT_READ : PUMP_AGAIN;
}

/* Flushes the command, then reads its results (PG_STATE_READING). */
static pump_next pump_read(pg_conn *c)
{
    if (c->need_flush) {
        int rc = flush_or_fail(c, "falha ao enviar comando ao PostgreSQL");
        if (rc < 0)
            return PUMP_STOP;
        if (rc == 1)
            return PUMP_WAIT_WRITE;
        c->need_flush = 0;
    }
    return pump_results(c);
}

/* Advances the pending operation as far as libpq allows without blocking,
 * then waits on the socket. readable: the socket reported input. */
static void op_pump(pg_conn *c, int readable)
{
    pump_next next;
    if (readable && !PQconsumeInput(c->conn)) {
        op_fail(c, "falha ao ler resposta do PostgreSQL");
        return;
    }
    do {
        next = pump_copy(c);
        if (next == PUMP_GO_ON)
            next = pump_read(c);
    } while (next == PUMP_AGAIN);
    if (next == PUMP_STOP)
        return;
    int rc = watch(c, next == PUMP_WAIT_WRITE ? UV_READABLE | UV_WRITABLE : UV_READABLE);
    if (rc != 0) {
        c->state = PG_STATE_FAILED;
        set_error(c, "conexão com o PostgreSQL perdida", uv_strerror(rc), PG_SQLSTATE_CONNECTION_FAILURE);
        op_finish(c, c->err, c->sqlstate);
    }
}

static void on_poll(uv_poll_t *handle, int status, int events)
{
    pg_conn *c = handle->data;
    if (handle != c->poll)
        return; /* a poll being replaced */
    if (c->state == PG_STATE_WAITING) {
        notify_pump(c, 0);
        return;
    }
    if (c->state == PG_STATE_CONNECTING) {
        /* libuv reports POLLERR (e.g. connection refused) as UV_EBADF; libpq
         * reads the socket error itself and explains it better. */
        connect_step(c);
        return;
    }
    if (c->state != PG_STATE_READING && c->state != PG_STATE_COPY_DATA &&
        c->state != PG_STATE_COPY_END) {
        unwatch(c);
        return;
    }
    /* On a poll error let libpq find out what happened to the socket. */
    op_pump(c, status < 0 || (events & UV_READABLE));
}

/* May an operation start on c now? PG_OK, or the code with the error set. */
static int check_ready(pg_conn *c)
{
    if (c->state == PG_STATE_CLOSED) {
        set_error(c, "conexão fechada", NULL, PG_SQLSTATE_NO_CONNECTION);
        return PG_ERR_CLOSED;
    }
    if (c->connect_cb != NULL || c->result_cb != NULL || c->notify_cb != NULL ||
        c->state == PG_STATE_CONNECTING ||
        c->state == PG_STATE_RESOLVING) {
        set_error(c, "conexão ocupada", NULL, "55000");
        return PG_ERR_BUSY;
    }
    if (c->state != PG_STATE_IDLE) {
        set_error(c, "conexão com o PostgreSQL indisponível", NULL, PG_SQLSTATE_CONNECTION_FAILURE);
        return PG_ERR_CLOSED;
    }
    return PG_OK;
}

/* Common checks and send for query and COPY. A query always goes through
 * the extended protocol, even without parameters: the server then refuses
 * several statements in one string (42601), so SQL written in a plan and
 * wrapped by the engine stays one statement. Only the engine's own COPY
 * statement uses the simple protocol (copy). */
static int op_start(pg_conn *c, const char *sql, int nparams, const char *const *values,
                    pg_result_cb cb, void *data, int copy)
{
    int rc = check_ready(c);
    if (rc != PG_OK)
        return rc;
    if (!(copy ? PQsendQuery(c->conn, sql)
               : PQsendQueryParams(c->conn, sql, nparams, NULL, values, NULL, NULL, 0))) {
        if (PQstatus(c->conn) == CONNECTION_BAD) {
            c->state = PG_STATE_FAILED;
            set_error(c, "conexão com o PostgreSQL perdida", PQerrorMessage(c->conn),
                      PG_SQLSTATE_CONNECTION_FAILURE);
        } else {
            set_error(c, "falha ao enviar comando ao PostgreSQL", PQerrorMessage(c->conn), "XX000");
        }
        return PG_ERR_SEND;
    }
    c->result_cb = cb;
    c->cb_data = data;
    c->state = PG_STATE_READING;
    c->need_flush = 1;
    c->err[0] = '\0';
    c->sqlstate[0] = '\0';
    /* Let the loop drive the flush so the callback never runs from here. */
    if (watch(c, UV_READABLE | UV_WRITABLE) != 0) {
        /* Without a poll nothing would ever complete: give up the link. */
        c->state = PG_STATE_FAILED;
        c->result_cb = NULL;
        c->cb_data = NULL;
        set_error(c, "conexão com o PostgreSQL perdida", "falha ao observar o socket",
                  PG_SQLSTATE_CONNECTION_FAILURE);
        return PG_ERR_SEND;
    }
    return PG_OK;
}

int pg_conn_query(pg_conn *c, const char *sql, int nparams, const char *const *values,
                  pg_result_cb cb, void *data)
{
    c->is_copy = 0;
    return op_start(c, sql, nparams, values, cb, data, 0);
}

int pg_conn_copy_in(pg_conn *c, const char *sql, const char *buf, size_t len,
                    pg_result_cb cb, void *data)
{
    int rc;
    if (c->result_cb != NULL || c->connect_cb != NULL || c->notify_cb != NULL)
        return op_start(c, sql, 0, NULL, cb, data, 1); /* reports busy */
    c->is_copy = 1;
    c->copy_buf = buf;
    c->copy_len = len;
    c->copy_off = 0;
    rc = op_start(c, sql, 0, NULL, cb, data, 1);
    if (rc != PG_OK) {
        c->is_copy = 0;
        c->copy_buf = NULL;
        c->copy_len = 0;
    }
    return rc;
}

/* ---- notifications ---------------------------------------------------- */

/* Ends the wait: the note (or err, or neither: timeout) goes to the callback. */
static void notify_finish(pg_conn *c, PGnotify *note, const char *err)
{
    pg_notify_cb cb = c->notify_cb;
    void *data = c->cb_data;
    c->notify_cb = NULL;
    c->cb_data = NULL;
    uv_timer_stop(&c->defer);
    if (c->state == PG_STATE_WAITING)
        c->state = PG_STATE_IDLE;
    unwatch(c);
    if (cb != NULL)
        cb(c, note, err, data);
    PQfreemem(note);
}

/* Reads what the socket holds and ends the wait with the first
 * notification or a lost link; called on input and when the timer fires
 * (from_timer: then, with nothing received, the timeout has passed).
 * Returns 1 when the wait ended. */
static int notify_pump(pg_conn *c, int from_timer)
{
    PGnotify *note = c->note_ready;
    c->note_ready = NULL;
    if (note == NULL && (!PQconsumeInput(c->conn) || PQstatus(c->conn) == CONNECTION_BAD)) {
        c->state = PG_STATE_FAILED;
        set_error(c, "conexão com o PostgreSQL perdida", PQerrorMessage(c->conn),
                  PG_SQLSTATE_CONNECTION_FAILURE);
        notify_finish(c, NULL, c->err);
        return 1;
    }
    if (note == NULL)
        note = PQnotifies(c->conn);
    if (note == NULL && !from_timer)
        return 0;
    notify_finish(c, note, NULL);
    return 1;
}

int pg_conn_wait_notify(pg_conn *c, uint64_t timeout_ms, pg_notify_cb cb, void *data)
{
    int rc = check_ready(c);
    if (rc != PG_OK)
        return rc;
    if (watch(c, UV_READABLE) != 0) {
        c->state = PG_STATE_FAILED;
        set_error(c, "conexão com o PostgreSQL perdida", "falha ao observar o socket",
                  PG_SQLSTATE_CONNECTION_FAILURE);
        return PG_ERR_SEND;
    }
    c->notify_cb = cb;
    c->cb_data = data;
    c->state = PG_STATE_WAITING;
    c->err[0] = '\0';
    c->sqlstate[0] = '\0';
    /* A note libpq buffered during an earlier query is delivered from the
     * loop at once (never from here); otherwise the timer is the timeout. */
    c->note_ready = PQnotifies(c->conn);
    if (c->note_ready != NULL)
        uv_timer_start(&c->defer, on_defer, 0, 0);
    else if (timeout_ms > 0)
        uv_timer_start(&c->defer, on_defer, timeout_ms, 0);
    return PG_OK;
}

/* ---- close and accessors ------------------------------------------------ */

void pg_conn_close(pg_conn *c)
{
    if (c == NULL || c->state == PG_STATE_CLOSED)
        return;
    c->state = PG_STATE_CLOSED;
    c->connect_cb = NULL;
    c->result_cb = NULL;
    c->notify_cb = NULL;
    c->cb_data = NULL;
    c->copy_buf = NULL;
    PQfreemem(c->note_ready);
    c->note_ready = NULL;
    PQclear(c->result);
    c->result = NULL;
    /* Lookups still running call back later (maybe_free waits for them). */
    if (c->resolve != NULL)
        pg_resolve_cancel(c->resolve);
    /* Stop polling the fd before libpq closes it. */
    drop_poll(c);
    PQfinish(c->conn);
    c->conn = NULL;
    uv_close((uv_handle_t *)&c->defer, on_defer_closed);
}

int pg_conn_is_ok(const pg_conn *c)
{
    if (c == NULL || c->conn == NULL)
        return 0;
    if (c->state == PG_STATE_RESOLVING || c->state == PG_STATE_CONNECTING ||
        c->state == PG_STATE_FAILED || c->state == PG_STATE_CLOSED)
        return 0;
    return PQstatus(c->conn) == CONNECTION_OK;
}

int pg_conn_is_busy(const pg_conn *c)
{
    return c != NULL && (c->connect_cb != NULL || c->result_cb != NULL || c->notify_cb != NULL);
}

const char *pg_conn_error(const pg_conn *c)
{
    return c ? c->err : "";
}

int pg_conn_notice_count(const pg_conn *c)
{
    return c->notice_count;
}

const pg_notice *pg_conn_notice(const pg_conn *c, int i)
{
    return i >= 0 && i < c->notice_count ? &c->notices[i] : NULL;
}

int pg_conn_notices_dropped(const pg_conn *c)
{
    return c->notices_dropped;
}

void pg_conn_clear_notices(pg_conn *c)
{
    c->notice_count = 0;
    c->notices_dropped = 0;
}

const char *pg_conn_sqlstate(const pg_conn *c)
{
    return c ? c->sqlstate : "";
}

/* sslmode values libpq accepts (PQconninfoParse does not check values). */
static int sslmode_known(const char *value)
{
    static const char *const modes[] = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"};
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++)
        if (strcmp(value, modes[i]) == 0)
            return 1;
    return 0;
}

int pg_conninfo_check(const char *conninfo, char *err, size_t errlen)
{
    char *msg = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &msg);
    int rc = 0;
    if (opts == NULL) {
        fold_message(err, errlen, msg ? msg : "memória insuficiente");
        PQfreemem(msg);
        return -1;
    }
    for (const PQconninfoOption *o = opts; o->keyword != NULL; o++) {
        if (strcmp(o->keyword, "sslmode") == 0 && o->val != NULL && !sslmode_known(o->val)) {
            snprintf(err, errlen, "invalid sslmode value: \"%.64s\"", o->val);
            rc = -1;
        }
    }
    PQconninfoFree(opts);
    return rc;
}

PGconn *pg_conn_raw(pg_conn *c)
{
    return c ? c->conn : NULL;
}
