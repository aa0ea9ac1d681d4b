/*
 * embed_conf.c: the options of embed.client{...} (see embed_lua.c's header
 * for the whole list) read into an embed_conf, strictly: a bad option
 * raises a pt-BR argument error naming it. Also the client's secrets: the
 * api_key, every header value (and its last word, the credential of
 * "Bearer TOKEN") and a proxy's user:password, scrubbed from every message
 * and zeroed when freed.
 */
#include "embed_conf.h"
#include "core/bridge.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define EMBED_DEFAULT_TIMEOUT_MS 60000L
/* Secrets shorter than this are not told apart from ordinary text. */
#define EMBED_MIN_SECRET 4
#define EMBED_MAX_PATH_KEY 256
#define EMBED_MAX_CA_FILE 4096
#define EMBED_MAX_PROXY 2048

/* Raises "campo \"field\" ...": the option named in a pt-BR reason. */
static int conf_error(lua_State *L, const char *field, const char *what)
{
    return luaL_argerror(L, 1, lua_pushfstring(L, "campo \"%s\" %s", field, what));
}

static char *conf_copy(lua_State *L, const char *s, size_t len)
{
    char *d = malloc(len + 1);
    if (!d)
        luaL_error(L, "sem memória");
    memcpy(d, s, len);
    d[len] = '\0';
    return d;
}

/* Optional string option: NULL when absent; refuses another type, a NUL
 * byte, more than max bytes and (unless allow_empty) "". */
static const char *opt_text(lua_State *L, const char *field, int allow_empty, size_t max, size_t *len)
{
    const char *s;
    size_t n;
    lua_getfield(L, 1, field);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return NULL;
    }
    if (lua_type(L, -1) != LUA_TSTRING)
        conf_error(L, field, "deve ser texto");
    s = lua_tolstring(L, -1, &n);
    lua_pop(L, 1); /* the string stays referenced by the options table */
    if (n == 0 && !allow_empty)
        conf_error(L, field, "deve ser um texto não vazio");
    if (memchr(s, '\0', n))
        conf_error(L, field, "contém um byte nulo");
    if (n > max)
        conf_error(L, field, lua_pushfstring(L, "passa de %d bytes", (int)max));
    if (len)
        *len = n;
    return s;
}

/* Optional positive integer option. */
static int opt_int(lua_State *L, const char *field, int fallback)
{
    lua_Number v;
    if (!rg_opt_field(L, 1, field))
        return fallback;
    v = lua_tonumber(L, -1);
    if (!lua_isnumber(L, -1) || v < 1 || v > 1e9 || v != (lua_Number)(long)v)
        conf_error(L, field, "deve ser um inteiro positivo");
    lua_pop(L, 1);
    return (int)v;
}

/* Optional positive duration in ms (any number, rounded up to whole ms). */
static long opt_ms(lua_State *L, const char *field, long fallback)
{
    lua_Number v;
    if (!rg_opt_field(L, 1, field))
        return fallback;
    v = lua_tonumber(L, -1);
    if (!lua_isnumber(L, -1) || !(v > 0) || v > 1e9)
        conf_error(L, field, "deve ser um número positivo (até 1e9 ms)");
    lua_pop(L, 1);
    return (long)ceil(v);
}

/* Optional option among choices (NULL-terminated): its index, or fallback. */
static int opt_choice(lua_State *L, const char *field, const char *const *choices, const char *shown, int fallback)
{
    const char *s = opt_text(L, field, 0, 64, NULL);
    if (!s)
        return fallback;
    for (int i = 0; choices[i]; i++)
        if (strcmp(s, choices[i]) == 0)
            return i;
    return conf_error(L, field, lua_pushfstring(L, "deve ser %s", shown));
}

/* Adds text (len bytes) to the secrets, longest first. */
static void add_secret(lua_State *L, embed_conf *conf, const char *text, size_t len)
{
    int i;
    if (len < EMBED_MIN_SECRET || conf->secret_count >= EMBED_MAX_SECRETS)
        return;
    for (i = conf->secret_count; i > 0 && strlen(conf->secrets[i - 1]) < len; i--)
        conf->secrets[i] = conf->secrets[i - 1];
    conf->secrets[i] = NULL;
    conf->secret_count++;
    conf->secrets[i] = conf_copy(L, text, len);
}

/* "endpoint" (as is) or "url" (+ "/embeddings"): exactly one. */
static void read_endpoint(lua_State *L, embed_conf *conf)
{
    const char *url = opt_text(L, "url", 0, 8192, NULL);
    const char *endpoint = opt_text(L, "endpoint", 0, 8192, NULL);
    if (!url == !endpoint)
        luaL_argerror(L, 1, "informe exatamente um de \"url\" (base; o motor acrescenta /embeddings) ou "
                            "\"endpoint\" (URL completa, usada como está)");
    if (endpoint && strpbrk(endpoint, "\r\n"))
        conf_error(L, "endpoint", "contém quebra de linha");
    conf->endpoint_as_is = endpoint != NULL;
    conf->url = endpoint ? conf_copy(L, endpoint, strlen(endpoint)) : embed_endpoint_url(url);
    if (!conf->url)
        luaL_error(L, "sem memória");
}

/* "api_key": sent as "Authorization: Bearer <key>". */
static void read_api_key(lua_State *L, embed_conf *conf)
{
    size_t len = 0;
    const char *key = opt_text(L, "api_key", 1, EMBED_MAX_HEADER_LINE, &len);
    if (!key || len == 0)
        return;
    if (strpbrk(key, "\r\n"))
        conf_error(L, "api_key", "contém quebra de linha");
    conf->api_key = conf_copy(L, key, len);
    conf->auth_header = malloc(len + sizeof "Authorization: Bearer ");
    if (!conf->auth_header)
        luaL_error(L, "sem memória");
    snprintf(conf->auth_header, len + sizeof "Authorization: Bearer ", "Authorization: Bearer %s", key);
    add_secret(L, conf, key, len);
}

/* Why header line i (1-based) of len bytes cannot be sent, or NULL. With
 * an api_key, "Authorization" is the engine's too. */
static const char *header_problem(lua_State *L, const embed_conf *conf, int i, const char *line, size_t len)
{
    static const char *const engine_owned[] = {"content-type", "accept", "x-request-id", "content-length"};
    const char *sep = strstr(line, ": ");
    size_t name_len = sep ? (size_t)(sep - line) : 0;
    if (memchr(line, '\0', len) || strpbrk(line, "\r\n"))
        return lua_pushfstring(L, "cabeçalho %d contém quebra de linha ou byte nulo", i);
    if (len > EMBED_MAX_HEADER_LINE)
        return lua_pushfstring(L, "cabeçalho %d passa de %d bytes", i, (int)EMBED_MAX_HEADER_LINE);
    if (!sep || name_len == 0)
        return lua_pushfstring(L, "cabeçalho %d não tem a forma \"Nome: valor\"", i);
    for (size_t k = 0; k < name_len; k++)
        if (!isalnum((unsigned char)line[k]) && !strchr("!#$%&'*+-.^_`|~", line[k]))
            return lua_pushfstring(L, "cabeçalho %d: nome inválido", i);
    if (strspn(sep + 2, " \t") == strlen(sep + 2))
        return lua_pushfstring(L, "cabeçalho %d sem valor", i);
    for (size_t k = 0; k < sizeof engine_owned / sizeof engine_owned[0]; k++)
        if (strlen(engine_owned[k]) == name_len && strncasecmp(line, engine_owned[k], name_len) == 0)
            return lua_pushfstring(L, "cabeçalho %d: %s é enviado pelo motor", i, engine_owned[k]);
    if (conf->api_key && name_len == 13 && strncasecmp(line, "authorization", 13) == 0)
        return lua_pushfstring(L, "cabeçalho %d: Authorization já vem de \"api_key\" (informe um só)", i);
    return NULL;
}

/* Keeps header line i (checked) and its value and credential as secrets. */
static void keep_header(lua_State *L, embed_conf *conf, const char *line, size_t len)
{
    const char *value = strstr(line, ": ") + 2;
    size_t value_len = len - (size_t)(value - line);
    const char *last = value + value_len;
    while (last > value && last[-1] != ' ' && last[-1] != '\t')
        last--;
    conf->headers[conf->header_count++] = conf_copy(L, line, len);
    add_secret(L, conf, value, value_len);
    if (last > value)
        add_secret(L, conf, last, (size_t)(value + value_len - last));
}

/* "headers": a list of "Name: value" lines, every value a secret. */
static void read_headers(lua_State *L, embed_conf *conf)
{
    int n, entries = 0;
    lua_getfield(L, 1, "headers");
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return;
    }
    if (!lua_istable(L, -1))
        conf_error(L, "headers", "deve ser uma lista de linhas \"Nome: valor\"");
    n = (int)lua_objlen(L, -1);
    for (lua_pushnil(L); lua_next(L, -2); lua_pop(L, 1))
        entries++;
    if (entries != n)
        conf_error(L, "headers", "deve ser uma lista de linhas \"Nome: valor\"");
    if (n > EMBED_MAX_HEADERS)
        conf_error(L, "headers", lua_pushfstring(L, "passa de %d linhas", EMBED_MAX_HEADERS));
    for (int i = 1; i <= n; i++) {
        size_t len;
        const char *line, *problem;
        lua_rawgeti(L, -1, i);
        if (lua_type(L, -1) != LUA_TSTRING)
            conf_error(L, "headers", lua_pushfstring(L, "tem o item %d que não é texto", i));
        line = lua_tolstring(L, -1, &len);
        if ((problem = header_problem(L, conf, i, line, len)) != NULL)
            luaL_argerror(L, 1, lua_pushfstring(L, "campo \"headers\": %s", problem));
        keep_header(L, conf, line, len);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

/* "body_fields", "model", "dimensions", "inputs_key", "encoding_field", "encoding". */
static void read_body(lua_State *L, embed_conf *conf)
{
    static const char *const inputs_keys[] = {"input", "inputs", "texts", NULL};
    static const char *const fields[] = {"always", "base64_only", "none", NULL};
    static const char *const encodings[] = {"base64", "float", NULL};
    size_t len = 0;
    const char *body_fields = opt_text(L, "body_fields", 1, EMBED_MAX_BODY_FIELDS, &len);
    const char *model = opt_text(L, "model", 0, 1024, NULL);
    int field;
    if (!model && !body_fields)
        conf_error(L, "model", "deve ser um texto não vazio (ou informe \"body_fields\")");
    conf->model = model ? conf_copy(L, model, strlen(model)) : NULL;
    conf->body_fields = body_fields ? conf_copy(L, body_fields, len) : NULL;
    conf->dimensions = opt_int(L, "dimensions", 0);
    conf->request.body_fields = conf->body_fields;
    conf->request.body_fields_len = len;
    conf->request.model = conf->model;
    conf->request.dimensions = conf->dimensions;
    conf->request.inputs_key =
        inputs_keys[opt_choice(L, "inputs_key", inputs_keys, "\"input\", \"inputs\" ou \"texts\"", 0)];
    field = opt_choice(L, "encoding_field", fields, "\"always\", \"base64_only\" ou \"none\"", 0);
    conf->request.encoding_field = (embed_encoding_field)field;
    conf->encoding = opt_choice(L, "encoding", encodings, "\"base64\" ou \"float\"", 0) == 1 ? EMBED_ENCODING_FLOAT
                                                                                          : EMBED_ENCODING_BASE64;
    if (conf->request.encoding_field == EMBED_ENCODING_FIELD_NONE)
        conf->encoding = EMBED_ENCODING_FLOAT; /* nothing asks for base64: the answer is floats */
    conf->fallback_allowed = conf->request.encoding_field != EMBED_ENCODING_FIELD_NONE;
}

/* A list of keys (rows_path, usage_path) into out; its length, -1 when absent. */
static int read_path(lua_State *L, const char *field, char **out)
{
    int n, entries = 0;
    lua_getfield(L, 1, field);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return -1;
    }
    if (!lua_istable(L, -1))
        conf_error(L, field, "deve ser uma lista de chaves");
    n = (int)lua_objlen(L, -1);
    for (lua_pushnil(L); lua_next(L, -2); lua_pop(L, 1))
        entries++;
    if (entries != n || n > EMBED_ROWS_MAX_PATH)
        conf_error(L, field, lua_pushfstring(L, "deve ser uma lista de até %d chaves", EMBED_ROWS_MAX_PATH));
    for (int i = 1; i <= n; i++) {
        size_t len;
        const char *key;
        lua_rawgeti(L, -1, i);
        key = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
        if (!key || len == 0 || len > EMBED_MAX_PATH_KEY || memchr(key, '\0', len))
            conf_error(L, field, lua_pushfstring(L, "tem a chave %d vazia, longa demais ou que não é texto", i));
        out[i - 1] = conf_copy(L, key, len);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return n;
}

/* "answer", "rows_path", "usage_path". */
static void read_answer(lua_State *L, embed_conf *conf)
{
    static const char *const answers[] = {"data", "rows", NULL};
    int rows_depth, usage_depth;
    conf->rows = opt_choice(L, "answer", answers, "\"data\" ou \"rows\"", 0) == 1;
    rows_depth = read_path(L, "rows_path", conf->rows_path);
    usage_depth = read_path(L, "usage_path", conf->usage_path);
    if (!conf->rows && (rows_depth >= 0 || usage_depth >= 0))
        conf_error(L, rows_depth >= 0 ? "rows_path" : "usage_path", "só vale com answer = \"rows\"");
    if (conf->rows && rows_depth < 0)
        conf_error(L, "rows_path", "é obrigatório com answer = \"rows\" ({} quando a raiz é a lista)");
    conf->answer.rows_path = (const char *const *)conf->rows_path;
    conf->answer.rows_depth = rows_depth > 0 ? rows_depth : 0;
    conf->answer.usage_path = (const char *const *)conf->usage_path;
    conf->answer.usage_depth = usage_depth > 0 ? usage_depth : 0;
}

/* Adds the standard base64 of text (len bytes) to the secrets: a proxy's
 * "Proxy-Authorization: Basic <base64 of user:password>". */
static void add_base64_secret(lua_State *L, embed_conf *conf, const char *text, size_t len)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char out[EMBED_MAX_PROXY / 3 * 4 + 8];
    size_t o = 0;
    for (size_t k = 0; k < len && o + 4 < sizeof out; k += 3) {
        unsigned char a = (unsigned char)text[k], b = k + 1 < len ? (unsigned char)text[k + 1] : 0,
                      c = k + 2 < len ? (unsigned char)text[k + 2] : 0;
        out[o++] = abc[a >> 2];
        out[o++] = abc[(a & 3) << 4 | b >> 4];
        out[o++] = k + 1 < len ? abc[(b & 15) << 2 | c >> 6] : '=';
        out[o++] = k + 2 < len ? abc[c & 63] : '=';
    }
    add_secret(L, conf, out, o);
    memset(out, 0, sizeof out);
}

/* The user:password of a proxy URL ("http://user:pass@host:port"), the
 * password alone and the Basic credential made of them become secrets. */
static void proxy_secrets(lua_State *L, embed_conf *conf, const char *proxy)
{
    const char *scheme = strstr(proxy, "://");
    const char *authority = scheme ? scheme + 3 : proxy;
    const char *end = authority + strcspn(authority, "/?#"), *at = NULL, *colon;
    for (const char *p = authority; p < end; p++)
        if (*p == '@')
            at = p;
    if (!at)
        return;
    add_secret(L, conf, authority, (size_t)(at - authority));
    add_base64_secret(L, conf, authority, (size_t)(at - authority));
    colon = memchr(authority, ':', (size_t)(at - authority));
    if (colon)
        add_secret(L, conf, colon + 1, (size_t)(at - colon - 1));
}

/* "ca_file", "proxy". */
static void read_transport(lua_State *L, embed_conf *conf)
{
    size_t len = 0;
    const char *ca_file = opt_text(L, "ca_file", 0, EMBED_MAX_CA_FILE, NULL);
    const char *proxy = opt_text(L, "proxy", 1, EMBED_MAX_PROXY, &len);
    if (proxy && strpbrk(proxy, "\r\n"))
        conf_error(L, "proxy", "contém quebra de linha");
    conf->ca_file = ca_file ? conf_copy(L, ca_file, strlen(ca_file)) : NULL;
    conf->proxy = proxy ? conf_copy(L, proxy, len) : NULL;
    if (conf->proxy)
        proxy_secrets(L, conf, conf->proxy);
}

void embed_conf_read(lua_State *L, embed_conf *conf)
{
    int expected_dim;
    luaL_checktype(L, 1, LUA_TTABLE);
    read_endpoint(L, conf);
    read_api_key(L, conf);
    read_headers(L, conf);
    read_body(L, conf);
    read_answer(L, conf);
    read_transport(L, conf);
    expected_dim = opt_int(L, "expected_dim", 0);
    conf->expected_dim = expected_dim ? expected_dim : conf->dimensions;
    conf->timeout_ms = opt_ms(L, "timeout_ms", EMBED_DEFAULT_TIMEOUT_MS);
}

/* Zeroes and frees a string that may hold a secret. */
static void free_secret(char *s)
{
    if (!s)
        return;
    memset(s, 0, strlen(s));
    free(s);
}

void embed_conf_release(embed_conf *conf)
{
    if (!conf || --conf->refs > 0)
        return;
    free(conf->url);
    free(conf->model);
    free(conf->body_fields);
    free(conf->ca_file);
    free_secret(conf->proxy); /* may carry user:password */
    free_secret(conf->auth_header);
    free_secret(conf->api_key);
    for (int i = 0; i < conf->header_count; i++)
        free_secret(conf->headers[i]);
    for (int i = 0; i < conf->secret_count; i++)
        free_secret(conf->secrets[i]);
    for (int i = 0; i < EMBED_ROWS_MAX_PATH; i++) {
        free(conf->rows_path[i]);
        free(conf->usage_path[i]);
    }
    free(conf);
}

/* Length of the longest secret of conf at p, or 0. */
static size_t secret_at(const embed_conf *conf, const char *p)
{
    for (int i = 0; i < conf->secret_count; i++) { /* longest first */
        size_t n = strlen(conf->secrets[i]);
        if (strncmp(p, conf->secrets[i], n) == 0)
            return n;
    }
    return 0;
}

void embed_conf_scrub(const embed_conf *conf, const char *msg, int sk_tokens, char *out, size_t size)
{
    size_t o = 0, n;
    const char *p = msg;
    while (*p && o + 4 < size) {
        if ((n = secret_at(conf, p)) > 0) {
            memcpy(out + o, "***", 3);
            o += 3;
            p += n;
        } else if (sk_tokens && strncmp(p, "sk-", 3) == 0) {
            memcpy(out + o, "***", 3);
            o += 3;
            while (*p && *p != ' ' && *p != '.' && *p != ',' && *p != '"' && *p != '\'')
                p++;
        } else {
            out[o++] = *p++;
        }
    }
    out[o] = '\0';
}

int embed_conf_has_secret(const embed_conf *conf, const char *text)
{
    for (int i = 0; i < conf->secret_count; i++)
        if (strstr(text, conf->secrets[i]))
            return 1;
    return 0;
}
