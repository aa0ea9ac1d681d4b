/*
 * embed_decode.c: the hot path of the embeddings protocol. Parses a 2xx
 * answer of POST /embeddings without building a JSON tree: one pass over the
 * body finds "data" (each item's "index" and "embedding") and "usage", and
 * decodes each base64 vector (or number array) straight into its row of the
 * batch's float array. Validation stays strict: the body is well-formed
 * JSON, counts, index range and duplicates, dimensions, finiteness, usage.
 * A general JSON parser (jansson) spent ~56% of the engine's CPU here on
 * ~0.5 MB answers; see docs/desempenho.md. embed_stream (at the end) runs
 * the same parse while the body arrives, so the body is never kept: each
 * item of "data" is decoded as soon as it closes. The JSON primitives live
 * in embed_json.c; a stream made by embed_stream_new_rows hands its bytes
 * to the "rows" decoder (embed_rows.c) instead.
 */
#include "embed_json.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The primitives' names, as this file has always called them. */
typedef ej_cursor cursor;
typedef ej_span span;

/* One item of "data", as found (decoded once its index is known). */
typedef struct item {
    long long index;     /* "index", -1 until seen */
    int has_index;       /* "index" was an integer */
    int kind;            /* 0 none, 1 base64 string, 2 number array */
    span b64;            /* the base64 text (kind 1) */
    const char *array;   /* the '[' of the number array (kind 2) */
    int array_len;       /* elements of the number array (kind 2) */
} item;

/* The whole parse. */
typedef struct decoder {
    cursor c;            /* where we are */
    int expected_count;  /* vectors asked for */
    int expected_dim;    /* dimension asked for, 0 = any (all equal) */
    embed_vectors v;     /* the result being filled */
    unsigned char *seen; /* seen[index] = 1 once a vector was placed */
    long items;          /* items of "data" found */
    int reported;        /* a reason was written (not a plain syntax error) */
    int wrong_dim;       /* the failure is a vector of another dimension than expected_dim */
    char *err;           /* pt-BR reason on failure */
    size_t err_size;     /* size of err */
} decoder;

static int fail(decoder *d, const char *fmt, ...)
{
    char reason[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    d->reported = 1;
    if (d->err && d->err_size)
        snprintf(d->err, d->err_size, "resposta malformada do provedor: %s", reason);
    return -1;
}

/* A syntax error (the body is gone: no position to point at). */
static int fail_syntax(decoder *d)
{
    return fail(d, "JSON inválido");
}

/* Walks an object at the cursor, calling on_key(d, key, ctx) with the
 * cursor on each value; on_key must consume the value. 0 or -1 (a syntax
 * error leaves err empty: the caller reports it). */
static int walk_object(decoder *d, int (*on_key)(decoder *, const span *, void *), void *ctx)
{
    cursor *c = &d->c;
    ej_skip_ws(c);
    if (c->p >= c->end || *c->p != '{')
        return -1;
    if (ej_enter(c, '}'))
        return 0;
    for (;;) {
        span key;
        ej_skip_ws(c);
        if (c->p >= c->end || *c->p != '"' || ej_read_string(c, &key) != 0 || ej_expect(c, ':') != 0)
            return -1;
        ej_skip_ws(c);
        if (on_key(d, &key, ctx) != 0)
            return -1;
        ej_skip_ws(c);
        if (c->p < c->end && *c->p == ',') {
            c->p++;
            continue;
        }
        return ej_expect(c, '}');
    }
}

/* Decodes the number array starting at open into row. 0 or -1 (err set). */
static int array_row(decoder *d, const char *open, int index, int dim, float *row)
{
    int bad = 0, rc = ej_number_row(open, d->c.end, dim, row, &bad);
    if (rc == -1)
        return fail(d, "valor %d do vetor %d não é número", bad, index);
    if (rc == -2)
        return fail(d, "valor %d do vetor %d não é finito", bad, index);
    return 0;
}

/* ---- data items -------------------------------------------------------- */

static int on_item_key(decoder *d, const span *key, void *ctx)
{
    item *it = ctx;
    cursor *c = &d->c;
    if (ej_key_is(key, "index")) {
        double value;
        int integral = 0;
        if (ej_at_number(c))
            return ej_read_number(c, &value, &it->index, &integral) != 0 ? -1 : (it->has_index = integral, 0);
        return ej_skip_value(c, 2);
    }
    if (ej_key_is(key, "embedding")) {
        if (c->p < c->end && *c->p == '"') {
            it->kind = 1;
            return ej_read_string(c, &it->b64);
        }
        if (c->p < c->end && *c->p == '[') {
            it->kind = 2;
            it->array = c->p;
            return ej_count_array(c, &it->array_len);
        }
        it->kind = 3; /* neither: reported once the item is complete */
    }
    return ej_skip_value(c, 2);
}

/* Dimension of an item's vector, or -1 (err set). */
static int item_dim(decoder *d, const item *it, int index)
{
    if (it->kind == 2)
        return it->array_len;
    if (it->kind == 1) {
        int dim = ej_base64_dim(it->b64.s, it->b64.len);
        if (dim < 0)
            return fail(d, "base64 do vetor %d tem tamanho inválido (%zu caracteres)", index, it->b64.len);
        return dim;
    }
    return fail(d, "campo \"embedding\" do item %d não é lista nem texto base64", index);
}

/* Decodes an item's vector into its row. 0 or -1 (err set). */
static int item_fill(decoder *d, const item *it, int index, float *row)
{
    int rc;
    if (it->kind == 2)
        return array_row(d, it->array, index, d->v.dim, row);
    rc = ej_base64_row(it->b64.s, it->b64.len, d->v.dim, row);
    if (rc == -1)
        return fail(d, "base64 inválido no vetor %d", index);
    if (rc <= -2)
        return fail(d, "valor %d do vetor %d não é finito", -2 - rc, index);
    return 0;
}

/* Checks an item's index and dimension, then decodes its vector in place. */
static int place_checked(decoder *d, const item *it, long k)
{
    int dim, index;
    if (!it->has_index)
        return fail(d, "item %ld de \"data\" sem \"index\" inteiro", k);
    if (it->index < 0 || it->index >= d->expected_count)
        return fail(d, "índice %lld fora do intervalo 0..%d", it->index, d->expected_count - 1);
    index = (int)it->index;
    if (d->seen[index])
        return fail(d, "índice %d repetido", index);
    d->seen[index] = 1;
    if ((dim = item_dim(d, it, index)) < 0)
        return -1;
    if (dim == 0)
        return fail(d, "vetor %d vazio", index);
    if (d->expected_dim > 0 && dim != d->expected_dim) {
        d->wrong_dim = 1;
        return fail(d, "vetor %d tem dimensão %d, esperada %d", index, dim, d->expected_dim);
    }
    if (d->v.data == NULL) {
        d->v.dim = dim;
        d->v.data = malloc((size_t)d->v.count * (size_t)dim * sizeof(float));
        if (!d->v.data)
            return fail(d, "sem memória para %d vetores de dimensão %d", d->v.count, dim);
    } else if (dim != d->v.dim) {
        return fail(d, "vetores com dimensões diferentes (%d e %d)", d->v.dim, dim);
    }
    return item_fill(d, it, index, d->v.data + (size_t)index * (size_t)dim);
}

/* place_checked, after unescaping a base64 text that has escapes (rare: a
 * server that writes '/' as "\/"). */
static int place_item(decoder *d, item *it, long k)
{
    char *plain = NULL;
    int rc;
    if (it->kind == 1 && it->b64.escaped) {
        if (!(plain = ej_unescape_base64(&it->b64, &it->b64.len)))
            return fail(d, "base64 inválido no vetor %lld", it->index);
        it->b64.s = plain;
    }
    rc = place_checked(d, it, k);
    free(plain);
    return rc;
}

/* "data": items past expected_count are only counted (and checked as JSON). */
static int read_data(decoder *d)
{
    cursor *c = &d->c;
    if (c->p >= c->end || *c->p != '[')
        return fail(d, "campo \"data\" ausente ou não é lista");
    if (ej_enter(c, ']'))
        return 0;
    for (;;) {
        int counted = 0; /* an object item the stream decoded (and counted) already */
        ej_skip_ws(c);
        if (c->p < c->end && *c->p == '#') {
            c->p++;
            counted = 1;
        } else if (d->items < d->expected_count && c->p < c->end && *c->p == '{') {
            item it = {-1, 0, 0, {NULL, 0, 0}, NULL, 0};
            if (walk_object(d, on_item_key, &it) != 0)
                return d->reported ? -1 : fail_syntax(d);
            if (place_item(d, &it, d->items) != 0)
                return -1;
        } else if (d->items < d->expected_count) {
            if (ej_skip_value(c, 1) != 0)
                return fail_syntax(d);
            return fail(d, "item %ld de \"data\" sem \"index\" inteiro", d->items);
        } else if (ej_skip_value(c, 1) != 0) {
            return fail_syntax(d);
        }
        if (!counted)
            d->items++;
        ej_skip_ws(c);
        if (c->p < c->end && *c->p == ',') {
            c->p++;
            continue;
        }
        return ej_expect(c, ']') == 0 ? 0 : fail_syntax(d);
    }
}

/* ---- usage ------------------------------------------------------------- */

/* The token counts of "usage" (-1 while absent). */
typedef struct usage_counts {
    long long prompt; /* usage.prompt_tokens */
    long long total;  /* usage.total_tokens */
} usage_counts;

static int on_usage_key(decoder *d, const span *key, void *ctx)
{
    usage_counts *counts = ctx;
    int is_prompt = ej_key_is(key, "prompt_tokens");
    if (is_prompt || ej_key_is(key, "total_tokens")) {
        long long n;
        int rc = ej_read_count(&d->c, &n);
        if (rc == -2)
            return fail(d, "\"usage.%s\" não é um inteiro entre 0 e %lld",
                        is_prompt ? "prompt_tokens" : "total_tokens", EJ_MAX_TOKENS);
        if (rc == 0)
            *(is_prompt ? &counts->prompt : &counts->total) = n;
        return rc;
    }
    return ej_skip_value(&d->c, 2);
}

/* "usage": prompt_tokens, or total_tokens when only it came (Voyage). */
static int read_usage(decoder *d)
{
    cursor *c = &d->c;
    usage_counts counts = {-1, -1};
    if (c->p < c->end && *c->p == 'n')
        return ej_skip_value(c, 1) == 0 ? 0 : fail_syntax(d);
    if (c->p >= c->end || *c->p != '{') {
        if (ej_skip_value(c, 1) != 0)
            return fail_syntax(d);
        return fail(d, "campo \"usage\" não é um objeto");
    }
    d->v.has_usage = 1;
    if (walk_object(d, on_usage_key, &counts) != 0)
        return d->reported ? -1 : fail_syntax(d);
    d->v.prompt_tokens = (long)(counts.prompt >= 0 ? counts.prompt : counts.total >= 0 ? counts.total : 0);
    return 0;
}

/* ---- the answer -------------------------------------------------------- */

/* Top-level keys: "data" and "usage" are read, others skipped. */
static int on_root_key(decoder *d, const span *key, void *ctx)
{
    int *found_data = ctx;
    if (ej_key_is(key, "data")) {
        if (*found_data)
            return fail(d, "campo \"data\" repetido");
        *found_data = 1;
        return read_data(d);
    }
    if (ej_key_is(key, "usage"))
        return read_usage(d);
    return ej_skip_value(&d->c, 1) == 0 ? 0 : fail_syntax(d);
}

static int decode(decoder *d)
{
    int found_data = 0;
    ej_skip_ws(&d->c);
    if (d->c.p >= d->c.end)
        return fail(d, "corpo vazio");
    if (*d->c.p != '{') {
        if (ej_skip_value(&d->c, 0) != 0)
            return fail_syntax(d);
        ej_skip_ws(&d->c);
        return d->c.p == d->c.end ? fail(d, "campo \"data\" ausente ou não é lista") : fail_syntax(d);
    }
    if (walk_object(d, on_root_key, &found_data) != 0)
        return d->reported ? -1 : fail_syntax(d);
    ej_skip_ws(&d->c);
    if (d->c.p != d->c.end)
        return fail_syntax(d);
    if (!found_data)
        return fail(d, "campo \"data\" ausente ou não é lista");
    if (d->items != d->expected_count)
        return fail(d, "esperados %d vetores, recebidos %ld", d->expected_count, d->items);
    return 0;
}

/* ---- streaming: the answer decoded while it arrives -------------------- */

/* A growable byte buffer of the stream. */
typedef struct stream_buf {
    char *data; /* bytes (owned) */
    size_t len; /* bytes used */
    size_t cap; /* bytes allocated */
} stream_buf;

static int stream_buf_append(stream_buf *b, const char *p, size_t n)
{
    if (n == 0)
        return 0;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n)
            cap *= 2;
        char *grown = realloc(b->data, cap);
        if (!grown)
            return -1;
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

/* The structure of the body is followed byte by byte outside strings
 * (strings are jumped with memchr); each object item of the root's "data"
 * array is collected alone and decoded into its row as soon as it closes,
 * and the rest of the body (small) is kept with a '#' in place of each item
 * and parsed at the end by decode(), which checks everything else. */
struct embed_stream {
    decoder d;        /* item decoding state: seen, vectors, items, first failure */
    char err[512];    /* d.err: pt-BR reason of the first failure */
    int failed;       /* a failure was found: later bytes are ignored */
    int depth;        /* nesting outside strings: 1 inside the root object */
    int in_string;    /* inside a string */
    int escape;       /* the previous byte of the string was a backslash */
    int expect_key;   /* at depth 1, the next string is a key */
    int in_key;       /* reading a root key */
    char key[5];      /* its first bytes */
    size_t key_len;   /* its length so far */
    int key_escaped;  /* it had an escape */
    int key_is_data;  /* the current root key is exactly "data" */
    int in_data;      /* inside the array value of root key "data" */
    int in_item;      /* collecting an object item of "data" */
    int hash_outside; /* a '#' outside strings: not JSON ('#' marks items in rest) */
    stream_buf item;  /* bytes of the item being collected */
    stream_buf rest;  /* the body without its object items */
    ej_rows *rows;    /* a "rows" answer (embed_stream_new_rows): decoded there, the rest is unused */
};

embed_stream *embed_stream_new(int expected_count, int expected_dim)
{
    embed_stream *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->d.err = s->err;
    s->d.err_size = sizeof s->err;
    s->d.expected_count = expected_count;
    s->d.expected_dim = expected_dim;
    s->d.v.count = expected_count;
    s->d.seen = expected_count > 0 ? calloc((size_t)expected_count, 1) : NULL;
    if (expected_count > 0 && !s->d.seen) {
        free(s);
        return NULL;
    }
    return s;
}

embed_stream *embed_stream_new_rows(int expected_count, int expected_dim, const embed_rows_shape *shape)
{
    embed_stream *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->rows = ej_rows_new(expected_count, expected_dim, shape);
    if (!s->rows) {
        free(s);
        return NULL;
    }
    return s;
}

void embed_stream_free(embed_stream *s)
{
    if (!s)
        return;
    ej_rows_free(s->rows);
    free(s->d.seen);
    free(s->d.v.data);
    free(s->item.data);
    free(s->rest.data);
    free(s);
}

static int stream_fail(embed_stream *s, const char *reason)
{
    if (!s->d.reported)
        fail(&s->d, "%s", reason);
    s->failed = 1;
    return -1;
}

/* Decodes the collected item (as read_data does) and forgets its bytes. */
static int stream_item(embed_stream *s)
{
    decoder *d = &s->d;
    d->c = (cursor){s->item.data, s->item.data, s->item.data + s->item.len};
    if (d->items < d->expected_count) {
        item it = {-1, 0, 0, {NULL, 0, 0}, NULL, 0};
        if (walk_object(d, on_item_key, &it) != 0)
            return stream_fail(s, "JSON inválido");
        if (place_item(d, &it, d->items) != 0)
            return stream_fail(s, "item inválido");
    } else if (ej_skip_value(&d->c, 1) != 0) {
        return stream_fail(s, "JSON inválido");
    }
    d->items++;
    s->item.len = 0;
    return 0;
}

/* The bytes of a string up to (not including) its end, at p[0..n). */
static void stream_key_bytes(embed_stream *s, const char *p, size_t n)
{
    if (!s->in_key)
        return;
    for (size_t k = 0; k < n && s->key_len + k < sizeof s->key; k++)
        s->key[s->key_len + k] = p[k];
    s->key_len += n;
}

/* One byte outside strings at p[i]; moves items between rest and item.
 * *span is where the bytes not yet copied to their buffer start. */
static int stream_structure(embed_stream *s, const char *p, size_t i, size_t *span)
{
    char ch = p[i];
    if (s->in_data && s->depth == 2 && !s->in_item && ch != '{' && ch != ',' && ch != ']' && ch != ' ' &&
        ch != '\n' && ch != '\r' && ch != '\t' && s->d.items < s->d.expected_count) {
        /* an item of "data" that is not an object, where a vector is due (as read_data says) */
        fail(&s->d, "item %ld de \"data\" sem \"index\" inteiro", s->d.items);
        s->failed = 1;
        return -1;
    }
    switch (ch) {
    case '"':
        s->in_string = 1;
        s->in_key = s->depth == 1 && s->expect_key;
        s->key_len = 0;
        s->key_escaped = 0;
        return 0;
    case '{':
    case '[':
        if (ch == '{' && s->in_data && s->depth == 2 && !s->in_item) {
            if (stream_buf_append(&s->rest, p + *span, i - *span) != 0 || stream_buf_append(&s->rest, "#", 1) != 0)
                return stream_fail(s, "sem memória");
            *span = i;
            s->in_item = 1;
        } else if (ch == '[' && s->depth == 1 && s->key_is_data) {
            s->in_data = 1;
        } else if (ch == '{' && s->depth == 0) {
            s->expect_key = 1;
        }
        s->depth++;
        return 0;
    case '}':
    case ']':
        s->depth--;
        if (s->in_item && s->depth == 2) {
            if (stream_buf_append(&s->item, p + *span, i + 1 - *span) != 0)
                return stream_fail(s, "sem memória");
            *span = i + 1;
            s->in_item = 0;
            return stream_item(s);
        }
        if (s->in_data && s->depth == 1)
            s->in_data = 0;
        return 0;
    case ',':
        if (s->depth == 1) {
            s->expect_key = 1;
            s->key_is_data = 0;
        }
        return 0;
    case ':':
        if (s->depth == 1)
            s->expect_key = 0;
        return 0;
    case '#':
        s->hash_outside = 1;
        return 0;
    default:
        return 0;
    }
}

int embed_stream_feed(embed_stream *s, const char *p, size_t n)
{
    size_t i = 0, span = 0;
    if (s->rows)
        return ej_rows_feed(s->rows, p, n);
    while (i < n && !s->failed) {
        if (!s->in_string) {
            if (stream_structure(s, p, i, &span) != 0)
                break;
            i++;
            continue;
        }
        if (s->escape) { /* the escaped byte (a quote does not end the string) */
            s->escape = 0;
            stream_key_bytes(s, p + i, 1);
            i++;
            continue;
        }
        const char *quote = memchr(p + i, '"', n - i);
        size_t upto = quote ? (size_t)(quote - (p + i)) : n - i;
        const char *backslash = memchr(p + i, '\\', upto);
        if (backslash) {
            stream_key_bytes(s, p + i, (size_t)(backslash - (p + i)));
            s->key_escaped |= s->in_key;
            s->escape = 1;
            i = (size_t)(backslash - p) + 1;
            continue;
        }
        stream_key_bytes(s, p + i, upto);
        i += upto;
        if (quote) {
            s->in_string = 0;
            if (s->in_key)
                s->key_is_data = !s->key_escaped && s->key_len == 4 && memcmp(s->key, "data", 4) == 0;
            s->in_key = 0;
            i++;
        }
    }
    if (!s->failed &&
        stream_buf_append(s->in_item ? &s->item : &s->rest, p + span, (i < n ? i : n) - span) != 0)
        stream_fail(s, "sem memória");
    return s->failed ? -1 : 0;
}

int embed_stream_finish(embed_stream *s, embed_vectors *out, char *err, size_t err_size)
{
    decoder *d = &s->d;
    int rc = -1;
    if (s->rows)
        return ej_rows_finish(s->rows, out, err, err_size);
    memset(out, 0, sizeof *out);
    if (!s->failed && (s->in_item || s->in_string || s->hash_outside))
        stream_fail(s, "JSON inválido");
    if (!s->failed) {
        const char *body = s->rest.data ? s->rest.data : "";
        d->c = (cursor){body, body, body + s->rest.len};
        if (d->expected_count <= 0)
            fail(d, "esperados %d vetores, recebidos 0", d->expected_count);
        else
            rc = decode(d);
    }
    if (rc == 0) {
        *out = d->v;
        d->v.data = NULL;
    } else if (err && err_size) {
        snprintf(err, err_size, "%s", s->err);
    }
    return rc;
}

embed_kind embed_stream_failure_kind(const embed_stream *s)
{
    if (s->rows)
        return ej_rows_failure_kind(s->rows);
    return s->d.wrong_dim ? EMBED_KIND_DIMENSION : EMBED_KIND_MALFORMED;
}
