/*
 * pg_resolve.c: resolves the host names of a libpq conninfo with
 * uv_getaddrinfo and starts libpq with hostaddr= (see pg_resolve.h), so
 * that connecting never blocks the loop thread on DNS.
 */
#include "pg_resolve.h"

#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* Addresses kept per resolved name (each becomes one libpq host entry). */
#define PG_MAX_ADDRS_PER_NAME 8
/* Host entries accepted in one conninfo before giving the list to libpq as is. */
#define PG_MAX_HOSTS 64

/* One entry of the conninfo's host list. */
typedef struct pg_host {
    uv_getaddrinfo_t req;       /* pending lookup (only when is_name) */
    struct pg_resolve *owner;   /* resolution this entry belongs to */
    char *name;                 /* host entry as written ("" = libpq default) */
    char *port;                 /* its own port when the port list has one per host, else NULL */
    int is_name;                /* 1 when the entry is a DNS name to resolve */
    int pending;                /* 1 while req has not called back */
    int status;                 /* 0 or the libuv error of the lookup */
    struct addrinfo *addrs;     /* lookup result, freed with uv_freeaddrinfo */
} pg_host;

/* What is needed to start libpq once the names are resolved. */
struct pg_resolve {
    PQconninfoOption *opts;     /* the parsed conninfo (PQconninfoParse) */
    pg_host *hosts;             /* host entries, in conninfo order */
    int nhosts;                 /* entries in hosts */
    int per_host_ports;         /* 1 when the port list has one port per host */
    int pending;                /* lookups that have not called back yet */
    pg_resolve_cb cb;           /* called when pending drops to 0 */
    void *cb_data;              /* argument of cb */
};

void pg_resolve_free(pg_resolve *r)
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

int pg_resolve_plan(const char *conninfo, pg_resolve **out)
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
    pg_resolve_free(r);
    return 0;

fail:
    pg_resolve_free(r);
    return -1;
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    pg_host *h = req->data;
    pg_resolve *r = h->owner;
    h->pending = 0;
    h->status = status;
    h->addrs = res;
    if (--r->pending == 0)
        r->cb(r->cb_data);
}

int pg_resolve_start(pg_resolve *r, uv_loop_t *loop, pg_resolve_cb cb, void *data)
{
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC; /* what libpq asks for */
    hints.ai_socktype = SOCK_STREAM;
    r->cb = cb;
    r->cb_data = data;
    for (int i = 0; i < r->nhosts; i++) {
        pg_host *h = &r->hosts[i];
        int rc;
        if (!h->is_name)
            continue;
        h->owner = r;
        h->req.data = h;
        rc = uv_getaddrinfo(loop, &h->req, on_resolved, h->name, NULL, &hints);
        if (rc != 0) {
            h->status = rc;
            continue;
        }
        h->pending = 1;
        r->pending++;
    }
    return r->pending;
}

void pg_resolve_cancel(pg_resolve *r)
{
    for (int i = 0; i < r->nhosts; i++)
        if (r->hosts[i].pending)
            uv_cancel((uv_req_t *)&r->hosts[i].req);
}

int pg_resolve_pending(const pg_resolve *r)
{
    return r->pending;
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

/* Fills the host/hostaddr/port lists with every entry that has an address
 * and returns the first entry that gave none (NULL when all did), with its
 * libuv error in *failed_status. */
static const pg_host *collect_entries(const pg_resolve *r, pg_list *hosts, pg_list *addrs, pg_list *ports,
                                      int *failed_status)
{
    const pg_host *failed = NULL;
    for (int i = 0; i < r->nhosts; i++) {
        const pg_host *h = &r->hosts[i];
        int status = h->status != 0 ? h->status : UV_EAI_NONAME;
        /* As libpq does with a name it cannot resolve: skip to the next. */
        if ((h->is_name && h->status != 0) || add_host_entries(r, h, hosts, addrs, ports) == 0) {
            if (failed == NULL) {
                failed = h;
                *failed_status = status;
            }
        }
    }
    return failed;
}

/* PQconnectStartParams with r's options, host/hostaddr (and port) replaced by
 * the lists. Returns -1 when memory is short. */
static int start_libpq(const pg_resolve *r, const pg_list *hosts, const pg_list *addrs, const pg_list *ports,
                       PGconn **conn)
{
    const char **keywords = NULL, **values = NULL;
    size_t nopts = 0, k = 0;
    for (const PQconninfoOption *o = r->opts; o->keyword != NULL; o++)
        nopts++;
    keywords = calloc(nopts + 4, sizeof *keywords);
    values = calloc(nopts + 4, sizeof *values);
    if (keywords == NULL || values == NULL)
        goto fail;
    for (const PQconninfoOption *o = r->opts; o->keyword != NULL; o++) {
        if (o->val == NULL || strcmp(o->keyword, "host") == 0 || strcmp(o->keyword, "hostaddr") == 0 ||
            (r->per_host_ports && strcmp(o->keyword, "port") == 0))
            continue;
        keywords[k] = o->keyword;
        values[k++] = o->val;
    }
    keywords[k] = "host";
    values[k++] = hosts->data;
    keywords[k] = "hostaddr";
    values[k++] = addrs->data;
    if (r->per_host_ports) {
        keywords[k] = "port";
        values[k++] = ports->data;
    }
    *conn = PQconnectStartParams(keywords, values, 0);
    free(keywords);
    free(values);
    return 0;

fail:
    free(keywords);
    free(values);
    return -1;
}

/* pt-BR for the lookups libuv reports most, with libuv's own text in
 * parentheses (what to search for); NULL for the others. */
static const char *lookup_error_ptbr(int status)
{
    switch (status) {
    case UV_EAI_NONAME:
        return "nome desconhecido no DNS; confira o host da URL (unknown node or service)";
    case UV_EAI_AGAIN:
        return "falha temporária na resolução de nomes; o DNS não respondeu (temporary failure)";
    case UV_EAI_FAIL:
        return "falha permanente na resolução de nomes (permanent failure)";
    case UV_EAI_NODATA:
        return "o nome não tem endereço no DNS (no address)";
    case UV_EAI_MEMORY:
        return "memória insuficiente para resolver o nome (out of memory)";
    case UV_EAI_CANCELED:
        return "resolução do nome cancelada (request canceled)";
    default:
        return NULL;
    }
}

int pg_resolve_connect(const pg_resolve *r, PGconn **conn, char *prefix, size_t prefix_size,
                       const char **detail)
{
    pg_list hosts = {0}, addrs = {0}, ports = {0};
    int failed_status = 0;
    int rc = -1;
    const pg_host *failed = collect_entries(r, &hosts, &addrs, &ports, &failed_status);

    *conn = NULL;
    if (hosts.oom || addrs.oom || ports.oom)
        goto oom;
    if (hosts.count == 0) {
        int status = failed_status ? failed_status : UV_EAI_NONAME;
        const char *ptbr = lookup_error_ptbr(status);
        snprintf(prefix, prefix_size, "falha ao resolver o host do PostgreSQL \"%s\"%s",
                 failed ? failed->name : "", ptbr ? "" : ": erro na resolução de nomes");
        *detail = ptbr ? ptbr : uv_strerror(status);
        goto done;
    }
    if (start_libpq(r, &hosts, &addrs, &ports, conn) != 0)
        goto oom;
    rc = 0;
    goto done;

oom:
    snprintf(prefix, prefix_size, "falha ao conectar ao PostgreSQL");
    *detail = "memória insuficiente";
done:
    free(hosts.data);
    free(addrs.data);
    free(ports.data);
    return rc;
}
