/*
 * embed_conf.h: internal to engine/embed: the settings of one ragops.embed
 * client (embed_conf.c reads them from the options table of embed.client,
 * embed_lua.c uses them for every call) and the secrets scrubbed from every
 * message the client produces.
 */
#ifndef RAGOPS_EMBED_CONF_H
#define RAGOPS_EMBED_CONF_H

#include "embed.h"

#include <lua.h>

/* Most "headers" lines and bytes of one line. */
#define EMBED_MAX_HEADERS 32
#define EMBED_MAX_HEADER_LINE ((size_t)8 * 1024)
/* Secrets: api_key, per header its value and the value's last word, and a
 * proxy's user:password, its base64 and the password. */
#define EMBED_MAX_SECRETS (4 + 2 * EMBED_MAX_HEADERS)

/* Settings shared by a client and its calls in flight (reference counted,
 * so closing or collecting the client never frees what a call still uses). */
typedef struct embed_conf {
    int refs;                   /* owners: the client userdata + each call in flight */
    char *url;                  /* the endpoint: "endpoint" as is, or "url" + "/embeddings" */
    int endpoint_as_is;         /* url came from "endpoint" */
    char *model;                /* "model" (NULL when absent: body_fields given) */
    char *api_key;              /* the key itself, or NULL */
    char *auth_header;          /* "Authorization: Bearer <api_key>", or NULL */
    char *headers[EMBED_MAX_HEADERS]; /* "headers" lines */
    int header_count;           /* lines in headers */
    char *secrets[EMBED_MAX_SECRETS]; /* texts scrubbed from messages, longest first */
    int secret_count;           /* texts in secrets */
    char *body_fields;          /* "body_fields" (NULL: built from model and dimensions) */
    embed_request_shape request; /* the body's shape (pointers into this conf) */
    int rows;                   /* answer = "rows" */
    char *rows_path[EMBED_ROWS_MAX_PATH];  /* "rows_path" keys */
    char *usage_path[EMBED_ROWS_MAX_PATH]; /* "usage_path" keys */
    embed_rows_shape answer;    /* the rows answer's shape (pointers into this conf) */
    char *ca_file;              /* "ca_file", or NULL */
    char *proxy;                /* "proxy" ("" = none), or NULL = libcurl's default */
    int dimensions;             /* "dimensions" sent when > 0 (built members only) */
    int expected_dim;           /* validation of every vector when > 0 */
    long timeout_ms;            /* per-request limit */
    embed_encoding encoding;    /* current encoding (may switch to float once) */
    int fallback_allowed;       /* a 400 rejecting base64 may switch to float */
} embed_conf;

/* Reads the options table at index 1 into conf (already referenced by the
 * client userdata, so a raise leaves nothing behind): raises a pt-BR
 * luaL_argerror on a bad option, luaL_error when memory is short. */
void embed_conf_read(lua_State *L, embed_conf *conf);

/* Drops one reference; the last one zeroes the secrets and frees conf. */
void embed_conf_release(embed_conf *conf);

/* Copies msg into out (size bytes), truncated, with every secret of conf
 * (and, when sk_tokens, any "sk-..." token) replaced by "***". */
void embed_conf_scrub(const embed_conf *conf, const char *msg, int sk_tokens, char *out, size_t size);

/* True when text holds one of conf's secrets. */
int embed_conf_has_secret(const embed_conf *conf, const char *text);

#endif
