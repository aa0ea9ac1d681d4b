/*
 * httpd.c: lifecycle of the HTTP server (see httpd.h): bind and
 * listen with pt-BR errors, accept under the connection bound (the oldest
 * connection is closed to make room, so a scrape always gets in), close.
 */
#include "httpd_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Why a bind or listen failed, in pt-BR. */
static const char *httpd_uv_error_ptbr(int code)
{
    switch (code) {
    case UV_EADDRINUSE: return "endereço em uso";
    case UV_EADDRNOTAVAIL: return "endereço indisponível nesta máquina";
    case UV_EACCES: return "permissão negada";
    case UV_EINVAL: return "endereço IP inválido";
    case UV_EAFNOSUPPORT: return "família de endereços não suportada";
    default: return uv_strerror(code);
    }
}

static char *httpd_error(const char *host, int port, int code)
{
    const char *fmt = strchr(host, ':') ? "não foi possível escutar em [%s]:%d: %s"
                                        : "não foi possível escutar em %s:%d: %s";
    int len = snprintf(NULL, 0, fmt, host, port, httpd_uv_error_ptbr(code));
    char *msg = malloc((size_t)len + 1);
    if (msg)
        snprintf(msg, (size_t)len + 1, fmt, host, port, httpd_uv_error_ptbr(code));
    return msg;
}

/* The address host:port (IPv6 when host has a colon). */
static int httpd_parse_addr(const char *host, int port, struct sockaddr_storage *addr)
{
    if (strchr(host, ':'))
        return uv_ip6_addr(host, port, (struct sockaddr_in6 *)addr);
    return uv_ip4_addr(host, port, (struct sockaddr_in *)addr);
}

static void httpd_fill_defaults(httpd_opts *opts)
{
    if (opts->max_head == 0)
        opts->max_head = HTTPD_DEFAULT_MAX_HEAD;
    if (opts->read_timeout_ms <= 0 && opts->read_timeout_ms != HTTPD_TIMEOUT_NONE)
        opts->read_timeout_ms = HTTPD_DEFAULT_READ_TIMEOUT_MS;
    if (opts->idle_timeout_ms <= 0 && opts->idle_timeout_ms != HTTPD_TIMEOUT_NONE)
        opts->idle_timeout_ms = HTTPD_DEFAULT_IDLE_TIMEOUT_MS;
    if (opts->max_queued == 0)
        opts->max_queued = HTTPD_MAX_QUEUED_BYTES;
    if (opts->max_conns <= 0)
        opts->max_conns = HTTPD_DEFAULT_MAX_CONNS;
    opts->host = NULL;
}

static void httpd_on_connection(uv_stream_t *listener, int status)
{
    httpd *srv = listener->data;
    if (status < 0 || srv->closing)
        return;
    if (srv->conn_count >= srv->opts.max_conns)
        httpd_conn_close(srv->oldest);
    httpd_conn_accept(srv);
}

/* The port the kernel gave the listener. */
static int httpd_bound_port(uv_tcp_t *listener)
{
    struct sockaddr_storage addr;
    int len = sizeof addr;
    if (uv_tcp_getsockname(listener, (struct sockaddr *)&addr, &len) != 0)
        return -1;
    if (addr.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&addr)->sin6_port);
    return ntohs(((struct sockaddr_in *)&addr)->sin_port);
}

static void httpd_on_listener_closed(uv_handle_t *handle)
{
    httpd *srv = handle->data;
    srv->open_handles--;
    httpd_maybe_free(srv);
}

httpd *httpd_start(uv_loop_t *loop, const httpd_opts *opts, char **err)
{
    struct sockaddr_storage addr;
    int rc = httpd_parse_addr(opts->host, opts->port, &addr);
    if (rc != 0) {
        *err = httpd_error(opts->host, opts->port, UV_EINVAL);
        return NULL;
    }
    httpd *srv = calloc(1, sizeof *srv);
    if (srv == NULL) {
        *err = strdup("sem memória para o servidor HTTP");
        return NULL;
    }
    srv->loop = loop;
    srv->opts = *opts;
    httpd_fill_defaults(&srv->opts);
    uv_tcp_init(loop, &srv->listener);
    srv->listener.data = srv;
    srv->open_handles = 1;
    rc = uv_tcp_bind(&srv->listener, (const struct sockaddr *)&addr, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&srv->listener, 128, httpd_on_connection);
    if (rc == 0)
        srv->port = httpd_bound_port(&srv->listener);
    if (rc != 0 || srv->port < 0)
        goto fail;
    return srv;

fail:
    *err = httpd_error(opts->host, opts->port, rc != 0 ? rc : UV_EINVAL);
    httpd_close(srv);
    return NULL;
}

int httpd_port(const httpd *srv) { return srv->port; }

int httpd_conn_count(const httpd *srv) { return srv->conn_count; }

void httpd_maybe_free(httpd *srv)
{
    if (srv->closing && srv->open_handles == 0)
        free(srv);
}

void httpd_close(httpd *srv)
{
    if (srv->closing)
        return;
    srv->closing = 1;
    while (srv->conns) {
        httpd_conn *conn = srv->conns;
        httpd_conn_close(conn); /* unlinks conn */
    }
    uv_close((uv_handle_t *)&srv->listener, httpd_on_listener_closed);
}
