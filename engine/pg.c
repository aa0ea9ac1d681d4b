/*
 * pg.c: one asynchronous PostgreSQL connection (libpq non-blocking API)
 * driven by a uv_poll on PQsocket(). See pg.h for the contract.
 *
 * libpq resolves host NAMES with a blocking getaddrinfo inside
 * PQconnectStart. To keep the loop thread free, the conninfo is parsed first
 * (PQconninfoParse); every host entry that is a name is resolved with
 * uv_getaddrinfo (libuv threadpool) and libpq is then started with
 * PQconnectStartParams and hostaddr=<numeric addresses>, keeping host= so TLS
 * verification, pgpass and messages still use the name. A name with several
 * addresses becomes several host entries (host=n,n hostaddr=a1,a2), so libpq
 * still tries each address in turn, as it does for names it resolves itself.
 *
 * State machine:
 *   RESOLVING --names resolved--> CONNECTING (skipped when nothing to resolve)
 *   CONNECTING --PQconnectPoll OK--> IDLE --query/copy--> READING --> IDLE
 *                                          copy: READING --COPY_IN--> COPY_DATA
 *                                                --> COPY_END --> READING
 *   any failure of the link --> FAILED; pg_conn_close --> CLOSED (freed later)
 */
#include "pg.h"

#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* Size of each PQputCopyData call. */
#define PG_COPY_CHUNK (64 * 1024)
/* Addresses kept per resolved name (each becomes one libpq host entry). */
#define PG_MAX_ADDRS_PER_NAME 8
/* Host entries accepted in one conninfo before giving the list to libpq as is. */
#define PG_MAX_HOSTS 64

typedef enum pg_state {
    PG_STATE_RESOLVING,  /* waiting for uv_getaddrinfo on the host names */
    PG_STATE_CONNECTING, /* PQconnectPoll sequence in progress */
    PG_STATE_IDLE,       /* connected, nothing pending */
    PG_STATE_READING,    /* command sent: flushing output, collecting results */
    PG_STATE_COPY_DATA,  /* in COPY IN: streaming the caller's buffer */
    PG_STATE_COPY_END,   /* in COPY IN: PQputCopyEnd not yet accepted */
    PG_STATE_FAILED,     /* connect failed or connection lost */
    PG_STATE_CLOSED      /* pg_conn_close called; waiting for handles */
} pg_state;

/* One entry of the conninfo's host list. */
typedef struct pg_host {
    uv_getaddrinfo_t req;       /* pending lookup (only when is_name) */
    struct pg_conn *owner;      /* connection this entry belongs to */
    char *name;                 /* host entry as written ("" = libpq default) */
    char *port;                 /* its own port when the port list has one per host, else NULL */
    int is_name;                /* 1 when the entry is a DNS name to resolve */
    int pending;                /* 1 while req has not called back */
    int status;                 /* 0 or the libuv error of the lookup */
    struct addrinfo *addrs;     /* lookup result, freed with uv_freeaddrinfo */
} pg_host;

/* What is needed to start libpq once the names are resolved. */
typedef struct pg_resolve {
    PQconninfoOption *opts;     /* the parsed conninfo (PQconninfoParse) */
    pg_host *hosts;             /* host entries, in conninfo order */
    int nhosts;                 /* entries in hosts */
    int per_host_ports;         /* 1 when the port list has one port per host */
    int pending;                /* lookups that have not called back yet */
} pg_resolve;

struct pg_conn {
    uv_loop_t *loop;            /* loop driving this connection */
    pg_resolve *resolve;        /* name resolution in progress, NULL when none */
    PGconn *conn;               /* libpq connection; NULL once closed */
    pg_state state;             /* where the state machine is */
    uv_poll_t *poll;            /* poll on the current PQsocket, NULL if none */
    int poll_fd;                /* fd that poll watches (-1 when none) */
    uv_timer_t defer;           /* delivers an immediate connect failure from the loop */
    int open_handles;           /* handles not yet closed; free when 0 after close */
    pg_connect_cb connect_cb;   /* pending connect callback, NULL when none */
    pg_result_cb result_cb;     /* pending query/COPY callback, NULL when none */
    void *cb_data;              /* user data of the pending callback */
    int need_flush;             /* 1 while PQflush has not returned 0 yet */
    int is_copy;                /* 1 when the pending operation is a COPY IN */
    const char *copy_buf;       /* caller's COPY data (not owned) */
    size_t copy_len;            /* bytes in copy_buf */
    size_t copy_off;            /* bytes of copy_buf already handed to libpq */
    PGresult *result;           /* result kept for the callback (last, or first error) */
    char err[1024];             /* last pt-BR error message */
    char sqlstate[6];           /* SQLSTATE of the last error */
};

static void on_poll(uv_poll_t *handle, int status, int events);
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
    if (folded[0] != '\0')
        snprintf(c->err, sizeof c->err, "%s: %s", prefix, folded);
    else
        snprintf(c->err, sizeof c->err, "%s", prefix);
    snprintf(c->sqlstate, sizeof c->sqlstate, "%s", sqlstate ? sqlstate : "");
}

static void resolve_free(pg_resolve *r)
{
    if (r == NULL)
        return;
    for (int i = 0; r->hosts != NULL && i < r->nhosts; i++) {
        free(r->hosts[i].name);
        free(r->hosts[i].port);
        if (r->hosts[i].addrs != NULL)
            uv_freeaddrinfo(r->hosts[i].addrs);
    }
    free(r->hosts);
    PQconninfoFree(r->opts);
    free(r);
}

/* Frees c once closed, its handles closed and no lookup can call back. */
static void maybe_free(pg_conn *c)
{
    if (c->state != PG_STATE_CLOSED || c->open_handles != 0)
        return;
    if (c->resolve != NULL && c->resolve->pending != 0)
        return;
    resolve_free(c->resolve);
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

/* Growable string for the host/hostaddr/port lists. */
typedef struct pg_list {
    char *data;  /* NUL-terminated text, NULL until the first append */
    size_t len;  /* bytes used, without the NUL */
    size_t cap;  /* bytes allocated */
    int count;   /* items appended */
    int oom;     /* 1 once an allocation failed */
} pg_list;

/* Appends item to the comma-separated list l. */
static void list_add(pg_list *l, const char *item)
{
    size_t n = strlen(item), need = l->len + n + 2;
    if (l->oom)
        return;
    if (need > l->cap) {
        size_t cap = l->cap ? l->cap : 64;
        char *p;
        while (cap < need)
            cap *= 2;
        p = realloc(l->data, cap);
        if (p == NULL) {
            l->oom = 1;
            return;
        }
        l->data = p;
        l->cap = cap;
    }
    if (l->count > 0)
        l->data[l->len++] = ',';
    memcpy(l->data + l->len, item, n);
    l->len += n;
    l->data[l->len] = '\0';
    l->count++;
}

static const char *opt_value(const PQconninfoOption *opts, const char *keyword)
{
    for (const PQconninfoOption *o = opts; o->keyword != NULL; o++)
        if (strcmp(o->keyword, keyword) == 0)
            return o->val;
    return NULL;
}

/* Items in a comma-separated list (libpq's host/port syntax). */
static int list_count(const char *list)
{
    int n = 1;
    for (const char *p = list; *p != '\0'; p++)
        n += *p == ',';
    return n;
}

/* malloc'd copy of the index-th item of a comma-separated list. */
static char *list_item(const char *list, int index)
{
    const char *start = list, *end;
    char *out;
    for (int i = 0; i < index; i++)
        start = strchr(start, ',') + 1;
    end = strchr(start, ',');
    if (end == NULL)
        end = start + strlen(start);
    out = malloc((size_t)(end - start) + 1);
    if (out != NULL) {
        memcpy(out, start, (size_t)(end - start));
        out[end - start] = '\0';
    }
    return out;
}

/* 1 when a host entry is a DNS name: not empty (libpq's default), not a
 * unix-socket directory ('/' or '@' first, as libpq decides), not a numeric
 * IPv4 address nor an IPv6 literal (the only entries with ':'). */
static int host_is_name(const char *host)
{
    unsigned char addr[16];
    if (host[0] == '\0' || host[0] == '/' || host[0] == '@')
        return 0;
    if (strchr(host, ':') != NULL)
        return 0;
    return uv_inet_pton(AF_INET, host, addr) != 0;
}

/*
 * Decides whether conninfo names hosts that libpq would resolve itself
 * (blocking). *out is the plan when so, NULL when libpq can start directly:
 * hostaddr given, only addresses/sockets, host taken from a service file, or a
 * conninfo libpq will reject anyway (it then reports the error itself).
 * Returns -1 only when memory is short.
 */
static int resolve_plan(const char *conninfo, pg_resolve **out)
{
    pg_resolve *r = calloc(1, sizeof *r);
    const char *host, *hostaddr, *port;
    char *errmsg = NULL;
    int any_name = 0, nports;
    *out = NULL;
    if (r == NULL)
        goto fail;
    r->opts = PQconninfoParse(conninfo, &errmsg);
    if (r->opts == NULL) {
        PQfreemem(errmsg);
        goto direct;
    }
    /* The same environment fallbacks libpq applies to absent options. */
    hostaddr = opt_value(r->opts, "hostaddr");
    if (hostaddr == NULL)
        hostaddr = getenv("PGHOSTADDR");
    if (hostaddr != NULL && hostaddr[0] != '\0')
        goto direct;
    host = opt_value(r->opts, "host");
    if (host == NULL) {
        if (opt_value(r->opts, "service") != NULL || getenv("PGSERVICE") != NULL)
            goto direct;
        host = getenv("PGHOST");
    }
    if (host == NULL || host[0] == '\0')
        goto direct;
    port = opt_value(r->opts, "port");
    if (port == NULL)
        port = getenv("PGPORT");
    r->nhosts = list_count(host);
    nports = port != NULL && port[0] != '\0' ? list_count(port) : 0;
    if (r->nhosts > PG_MAX_HOSTS || (nports > 1 && nports != r->nhosts))
        goto direct;
    r->per_host_ports = nports > 1;
    r->hosts = calloc((size_t)r->nhosts, sizeof *r->hosts);
    if (r->hosts == NULL)
        goto fail;
    for (int i = 0; i < r->nhosts; i++) {
        pg_host *h = &r->hosts[i];
        h->name = list_item(host, i);
        if (h->name == NULL)
            goto fail;
        if (r->per_host_ports && (h->port = list_item(port, i)) == NULL)
            goto fail;
        h->is_name = host_is_name(h->name);
        any_name |= h->is_name;
    }
    if (!any_name)
        goto direct;
    *out = r;
    return 0;

direct:
    resolve_free(r);
    return 0;

fail:
    resolve_free(r);
    return -1;
}

static void resolve_finish(pg_conn *c);

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    pg_host *h = req->data;
    pg_conn *c = h->owner;
    h->pending = 0;
    h->status = status;
    h->addrs = res;
    c->resolve->pending--;
    if (c->state == PG_STATE_CLOSED) {
        maybe_free(c);
        return;
    }
    if (c->resolve->pending == 0)
        resolve_finish(c);
}

/* Starts one uv_getaddrinfo per name. When none could start, the outcome is
 * delivered from the loop through the defer timer. */
static void resolve_start(pg_conn *c)
{
    pg_resolve *r = c->resolve;
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC; /* what libpq asks for */
    hints.ai_socktype = SOCK_STREAM;
    for (int i = 0; i < r->nhosts; i++) {
        pg_host *h = &r->hosts[i];
        int rc;
        if (!h->is_name)
            continue;
        h->owner = c;
        h->req.data = h;
        rc = uv_getaddrinfo(c->loop, &h->req, on_resolved, h->name, NULL, &hints);
        if (rc != 0) {
            h->status = rc;
            continue;
        }
        h->pending = 1;
        r->pending++;
    }
    if (r->pending == 0)
        uv_timer_start(&c->defer, on_defer, 0, 0);
}

/* Adds the entries for h to the host/hostaddr/port lists: one per distinct
 * address of a resolved name, one (empty hostaddr) for any other entry.
 * Returns how many entries were added. */
static int add_host_entries(const pg_resolve *r, const pg_host *h, pg_list *hosts,
                             pg_list *addrs, pg_list *ports)
{
    char seen[PG_MAX_ADDRS_PER_NAME][NI_MAXHOST];
    int nseen = 0;
    if (!h->is_name) {
        list_add(hosts, h->name);
        list_add(addrs, "");
        if (r->per_host_ports)
            list_add(ports, h->port);
        return 1;
    }
    for (const struct addrinfo *ai = h->addrs; ai != NULL && nseen < PG_MAX_ADDRS_PER_NAME;
         ai = ai->ai_next) {
        int dup = 0;
        if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
            continue;
        /* Numeric formatting only: no lookup happens here. */
        if (getnameinfo(ai->ai_addr, ai->ai_addrlen, seen[nseen], sizeof seen[nseen], NULL, 0,
                        NI_NUMERICHOST) != 0)
            continue;
        for (int k = 0; k < nseen && !dup; k++)
            dup = strcmp(seen[k], seen[nseen]) == 0;
        if (dup)
            continue;
        list_add(hosts, h->name);
        list_add(addrs, seen[nseen]);
        if (r->per_host_ports)
            list_add(ports, h->port);
        nseen++;
    }
    return nseen;
}

/* Every lookup called back: start libpq with the numeric addresses, or fail
 * when no host entry is left. Runs from a loop callback. */
static void resolve_finish(pg_conn *c)
{
    pg_resolve *r = c->resolve;
    pg_list hosts = {0}, addrs = {0}, ports = {0};
    const char **keywords = NULL, **values = NULL;
    const pg_host *failed = NULL; /* first name that gave no address */
    int failed_status = 0;        /* its libuv error */
    size_t nopts = 0, k = 0;
    char prefix[512];

    for (int i = 0; i < r->nhosts; i++) {
        const pg_host *h = &r->hosts[i];
        int status = h->status != 0 ? h->status : UV_EAI_NONAME;
        /* As libpq does with a name it cannot resolve: skip to the next. */
        if ((h->is_name && h->status != 0) || add_host_entries(r, h, &hosts, &addrs, &ports) == 0) {
            if (failed == NULL) {
                failed = h;
                failed_status = status;
            }
        }
    }
    if (hosts.oom || addrs.oom || ports.oom)
        goto oom;
    if (hosts.count == 0) {
        snprintf(prefix, sizeof prefix, "falha ao resolver o host do PostgreSQL \"%s\"",
                 failed ? failed->name : "");
        c->state = PG_STATE_FAILED;
        set_error(c, prefix, uv_strerror(failed_status ? failed_status : UV_EAI_NONAME),
                  PG_SQLSTATE_CONNECTION_FAILURE);
        goto report;
    }
    for (const PQconninfoOption *o = r->opts; o->keyword != NULL; o++)
        nopts++;
    keywords = calloc(nopts + 4, sizeof *keywords);
    values = calloc(nopts + 4, sizeof *values);
    if (keywords == NULL || values == NULL)
        goto oom;
    for (const PQconninfoOption *o = r->opts; o->keyword != NULL; o++) {
        if (o->val == NULL || strcmp(o->keyword, "host") == 0 || strcmp(o->keyword, "hostaddr") == 0 ||
            (r->per_host_ports && strcmp(o->keyword, "port") == 0))
            continue;
        keywords[k] = o->keyword;
        values[k++] = o->val;
    }
    keywords[k] = "host";
    values[k++] = hosts.data;
    keywords[k] = "hostaddr";
    values[k++] = addrs.data;
    if (r->per_host_ports) {
        keywords[k] = "port";
        values[k++] = ports.data;
    }
    c->conn = PQconnectStartParams(keywords, values, 0);
    c->resolve = NULL;
    resolve_free(r);
    c->state = PG_STATE_CONNECTING;
    connect_begin(c);
    goto done;

oom:
    c->state = PG_STATE_FAILED;
    set_error(c, "falha ao conectar ao PostgreSQL", "memória insuficiente", PG_SQLSTATE_CONNECTION_FAILURE);
report:
    c->resolve = NULL;
    resolve_free(r);
    connect_done(c, c->err);
done:
    free(keywords);
    free(values);
    free(hosts.data);
    free(addrs.data);
    free(ports.data);
}

static void on_defer(uv_timer_t *timer)
{
    pg_conn *c = timer->data;
    if (c->state == PG_STATE_FAILED)
        connect_done(c, c->err);
    else if (c->state == PG_STATE_RESOLVING && c->resolve != NULL && c->resolve->pending == 0)
        resolve_finish(c);
}

/* libpq has been started (c->conn, or NULL when memory was short): report an
 * immediate failure from the loop, or wait for the socket. */
static void connect_begin(pg_conn *c)
{
    int rc;
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
    if (resolve_plan(conninfo, &plan) != 0)
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
        resolve_start(c);
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

/* PQputCopyData/PQputCopyEnd returned -1. With the link still up, libpq has
 * left COPY mode (the server reported an error): go read the results, where
 * that error is. Returns 1 when the caller should continue pumping. */
static int copy_put_failed(pg_conn *c)
{
    if (PQstatus(c->conn) == CONNECTION_BAD) {
        op_fail(c, "falha no COPY");
        return 0;
    }
    c->state = PG_STATE_READING;
    c->need_flush = 0;
    return 1;
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

/* Advances the pending operation as far as libpq allows without blocking,
 * then waits on the socket. readable: the socket reported input. */
static void op_pump(pg_conn *c, int readable)
{
    int rc;
    if (readable && !PQconsumeInput(c->conn)) {
        op_fail(c, "falha ao ler resposta do PostgreSQL");
        return;
    }
    for (;;) {
        if (c->state == PG_STATE_COPY_DATA) {
            rc = PQflush(c->conn);
            if (rc < 0) {
                op_fail(c, "falha no COPY");
                return;
            }
            if (rc == 1)
                goto wait_write;
            if (c->copy_off < c->copy_len) {
                size_t n = c->copy_len - c->copy_off;
                if (n > PG_COPY_CHUNK)
                    n = PG_COPY_CHUNK;
                rc = PQputCopyData(c->conn, c->copy_buf + c->copy_off, (int)n);
                if (rc < 0) {
                    if (!copy_put_failed(c))
                        return;
                    continue;
                }
                if (rc == 0)
                    goto wait_write;
                c->copy_off += n;
                continue;
            }
            c->state = PG_STATE_COPY_END;
        }
        if (c->state == PG_STATE_COPY_END) {
            rc = PQputCopyEnd(c->conn, NULL);
            if (rc < 0) {
                if (!copy_put_failed(c))
                    return;
                continue;
            }
            if (rc == 0)
                goto wait_write;
            c->state = PG_STATE_READING;
            c->need_flush = 1;
        }
        /* PG_STATE_READING */
        if (c->need_flush) {
            rc = PQflush(c->conn);
            if (rc < 0) {
                op_fail(c, "falha ao enviar comando ao PostgreSQL");
                return;
            }
            if (rc == 1)
                goto wait_write;
            c->need_flush = 0;
        }
        while (!PQisBusy(c->conn)) {
            PGresult *res = PQgetResult(c->conn);
            ExecStatusType st;
            if (res == NULL) {
                op_complete(c);
                return;
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
                return;
            }
            keep_result(c, res);
        }
        if (c->state == PG_STATE_READING && !c->need_flush)
            break;
    }
    rc = watch(c, UV_READABLE);
    if (rc != 0)
        goto watch_failed;
    return;

wait_write:
    rc = watch(c, UV_READABLE | UV_WRITABLE);
    if (rc != 0)
        goto watch_failed;
    return;

watch_failed:
    c->state = PG_STATE_FAILED;
    set_error(c, "conexão com o PostgreSQL perdida", uv_strerror(rc),
              PG_SQLSTATE_CONNECTION_FAILURE);
    op_finish(c, c->err, c->sqlstate);
}

static void on_poll(uv_poll_t *handle, int status, int events)
{
    pg_conn *c = handle->data;
    if (handle != c->poll)
        return; /* a poll being replaced */
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

/* Common checks and send for query and COPY. */
static int op_start(pg_conn *c, const char *sql, int nparams, const char *const *values,
                    pg_result_cb cb, void *data)
{
    if (c->state == PG_STATE_CLOSED) {
        set_error(c, "conexão fechada", NULL, PG_SQLSTATE_NO_CONNECTION);
        return PG_ERR_CLOSED;
    }
    if (c->connect_cb != NULL || c->result_cb != NULL || c->state == PG_STATE_CONNECTING ||
        c->state == PG_STATE_RESOLVING) {
        set_error(c, "conexão ocupada", NULL, "55000");
        return PG_ERR_BUSY;
    }
    if (c->state != PG_STATE_IDLE) {
        set_error(c, "conexão com o PostgreSQL indisponível", NULL, PG_SQLSTATE_CONNECTION_FAILURE);
        return PG_ERR_CLOSED;
    }
    /* Without parameters use the simple protocol, which accepts several
     * statements (migration scripts); with parameters the extended one. */
    if (!(nparams == 0 ? PQsendQuery(c->conn, sql)
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
    return op_start(c, sql, nparams, values, cb, data);
}

int pg_conn_copy_in(pg_conn *c, const char *sql, const char *buf, size_t len,
                    pg_result_cb cb, void *data)
{
    int rc;
    if (c->result_cb != NULL || c->connect_cb != NULL)
        return op_start(c, sql, 0, NULL, cb, data); /* reports busy */
    c->is_copy = 1;
    c->copy_buf = buf;
    c->copy_len = len;
    c->copy_off = 0;
    rc = op_start(c, sql, 0, NULL, cb, data);
    if (rc != PG_OK) {
        c->is_copy = 0;
        c->copy_buf = NULL;
        c->copy_len = 0;
    }
    return rc;
}

/* ---- close and accessors ------------------------------------------------ */

void pg_conn_close(pg_conn *c)
{
    if (c == NULL || c->state == PG_STATE_CLOSED)
        return;
    c->state = PG_STATE_CLOSED;
    c->connect_cb = NULL;
    c->result_cb = NULL;
    c->cb_data = NULL;
    c->copy_buf = NULL;
    PQclear(c->result);
    c->result = NULL;
    /* Lookups still running call back later (maybe_free waits for them). */
    for (int i = 0; c->resolve != NULL && i < c->resolve->nhosts; i++)
        if (c->resolve->hosts[i].pending)
            uv_cancel((uv_req_t *)&c->resolve->hosts[i].req);
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
    return c != NULL && (c->connect_cb != NULL || c->result_cb != NULL);
}

const char *pg_conn_error(const pg_conn *c)
{
    return c ? c->err : "";
}

const char *pg_conn_sqlstate(const pg_conn *c)
{
    return c ? c->sqlstate : "";
}

PGconn *pg_conn_raw(pg_conn *c)
{
    return c ? c->conn : NULL;
}
