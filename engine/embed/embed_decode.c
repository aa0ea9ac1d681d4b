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
 * item of "data" is decoded as soon as it closes.
 */
#include "embed.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DECODE_MAX_DEPTH 64
/* Largest token count accepted: exact in a double (Lua numbers). */
#define DECODE_MAX_TOKENS 9007199254740991LL

/* A read position in the body. */
typedef struct cursor {
    const char *start; /* first byte of the body (for error positions) */
    const char *p;     /* next byte to read */
    const char *end;   /* one past the last byte */
} cursor;

/* A JSON string seen in the body, without its quotes. */
typedef struct span {
    const char *s;  /* first byte after the opening quote */
    size_t len;     /* bytes up to the closing quote */
    int escaped;    /* contains backslash escapes */
} span;

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

static void skip_ws(cursor *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\n' || *c->p == '\r' || *c->p == '\t'))
        c->p++;
}

/* Consumes byte ch after white space; 0 or -1. */
static int expect(cursor *c, char ch)
{
    skip_ws(c);
    if (c->p >= c->end || *c->p != ch)
        return -1;
    c->p++;
    return 0;
}

/* Walks an escaped (or suspicious) string byte by byte from just after its
 * opening quote; returns its closing quote, or NULL if it is not valid. */
static const char *string_end_slow(const cursor *c, const char *q)
{
    while (q < c->end && *q != '"') {
        if ((unsigned char)*q < 0x20)
            return NULL;
        if (*q == '\\') {
            q++;
            if (q >= c->end || !strchr("\"\\/bfnrtu", *q))
                return NULL;
            if (*q == 'u') {
                for (int k = 1; k <= 4; k++)
                    if (q + k >= c->end || !strchr("0123456789abcdefABCDEF", q[k]))
                        return NULL;
                q += 4;
            }
        }
        q++;
    }
    return q < c->end ? q : NULL;
}

/* 1 when [s, s + len) holds a backslash or a control byte. Written as a
 * branch-free reduction so the compiler vectorises it: base64 vectors are
 * ~8 KB strings, and a byte-by-byte walk was 6.5% of the engine's CPU. */
static int has_escape_or_control(const unsigned char *s, size_t len)
{
    unsigned char found = 0;
    for (size_t i = 0; i < len; i++)
        found |= (unsigned char)((s[i] < 0x20) | (s[i] == '\\'));
    return found != 0;
}

/* Reads a string at the cursor (which is on the quote). 0 or -1. The fast
 * path finds the closing quote with memchr and checks the span at once;
 * a backslash or control byte sends it to the byte-by-byte walk. */
static int read_string(cursor *c, span *out)
{
    const char *q = c->p + 1;
    const char *quote = memchr(q, '"', (size_t)(c->end - q));
    out->escaped = 0;
    if (quote == NULL || has_escape_or_control((const unsigned char *)q, (size_t)(quote - q))) {
        out->escaped = 1;
        quote = string_end_slow(c, q);
        if (quote == NULL)
            return -1;
    }
    out->s = q;
    out->len = (size_t)(quote - q);
    c->p = quote + 1;
    return 0;
}

static int is_digit(const cursor *c, const char *q) { return q < c->end && *q >= '0' && *q <= '9'; }

/* End of the JSON number at q (RFC 8259 grammar), or NULL. */
static const char *number_end(const cursor *c, const char *q, int *integral)
{
    *integral = 1;
    if (q < c->end && *q == '-')
        q++;
    if (!is_digit(c, q))
        return NULL;
    if (*q == '0')
        q++;
    else
        while (is_digit(c, q))
            q++;
    if (q < c->end && *q == '.') {
        *integral = 0;
        if (!is_digit(c, ++q))
            return NULL;
        while (is_digit(c, q))
            q++;
    }
    if (q < c->end && (*q == 'e' || *q == 'E')) {
        *integral = 0;
        q++;
        if (q < c->end && (*q == '+' || *q == '-'))
            q++;
        if (!is_digit(c, q))
            return NULL;
        while (is_digit(c, q))
            q++;
    }
    return q;
}

/* Reads a JSON number; *integral = no fraction or exponent. 0 or -1. */
static int read_number(cursor *c, double *value, long long *integer, int *integral)
{
    char buf[64];
    const char *q = number_end(c, c->p, integral);
    size_t n;
    if (!q || (n = (size_t)(q - c->p)) >= sizeof buf)
        return -1;
    memcpy(buf, c->p, n);
    buf[n] = '\0';
    *value = strtod(buf, NULL);
    *integer = *integral ? strtoll(buf, NULL, 10) : 0;
    c->p = q;
    return 0;
}

static int skip_value(cursor *c, int depth);

/* Steps into the array or object at the cursor; 1 when it is empty (and
 * already closed), 0 otherwise. */
static int enter(cursor *c, char close)
{
    c->p++;
    skip_ws(c);
    if (c->p < c->end && *c->p == close) {
        c->p++;
        return 1;
    }
    return 0;
}

/* Skips an array or object at the cursor (on '[' or '{'). */
static int skip_container(cursor *c, int depth)
{
    char close = *c->p == '[' ? ']' : '}';
    int object = close == '}';
    if (enter(c, close))
        return 0;
    for (;;) {
        if (object) {
            span key;
            skip_ws(c);
            if (c->p >= c->end || *c->p != '"' || read_string(c, &key) != 0 || expect(c, ':') != 0)
                return -1;
        }
        if (skip_value(c, depth + 1) != 0)
            return -1;
        skip_ws(c);
        if (c->p < c->end && *c->p == ',') {
            c->p++;
            continue;
        }
        return expect(c, close);
    }
}

/* Skips any value at the cursor (nesting bounded by DECODE_MAX_DEPTH). */
static int skip_value(cursor *c, int depth)
{
    double value;
    long long integer;
    int integral;
    span s;
    skip_ws(c);
    if (c->p >= c->end || depth > DECODE_MAX_DEPTH)
        return -1;
    switch (*c->p) {
    case '"':
        return read_string(c, &s);
    case '[':
    case '{':
        return skip_container(c, depth);
    case 't':
        return (c->end - c->p >= 4 && memcmp(c->p, "true", 4) == 0) ? (c->p += 4, 0) : -1;
    case 'f':
        return (c->end - c->p >= 5 && memcmp(c->p, "false", 5) == 0) ? (c->p += 5, 0) : -1;
    case 'n':
        return (c->end - c->p >= 4 && memcmp(c->p, "null", 4) == 0) ? (c->p += 4, 0) : -1;
    default:
        return read_number(c, &value, &integer, &integral);
    }
}

static int key_is(const span *key, const char *name)
{
    size_t n = strlen(name);
    return !key->escaped && key->len == n && memcmp(key->s, name, n) == 0;
}

/* Walks an object at the cursor, calling on_key(d, key, ctx) with the
 * cursor on each value; on_key must consume the value. 0 or -1 (a syntax
 * error leaves err empty: the caller reports it). */
static int walk_object(decoder *d, int (*on_key)(decoder *, const span *, void *), void *ctx)
{
    cursor *c = &d->c;
    skip_ws(c);
    if (c->p >= c->end || *c->p != '{')
        return -1;
    if (enter(c, '}'))
        return 0;
    for (;;) {
        span key;
        skip_ws(c);
        if (c->p >= c->end || *c->p != '"' || read_string(c, &key) != 0 || expect(c, ':') != 0)
            return -1;
        skip_ws(c);
        if (on_key(d, &key, ctx) != 0)
            return -1;
        skip_ws(c);
        if (c->p < c->end && *c->p == ',') {
            c->p++;
            continue;
        }
        return expect(c, '}');
    }
}

/* ---- base64 vectors ---------------------------------------------------- */

static const signed char B64[256] = {
    ['A'] = 1,  ['B'] = 2,  ['C'] = 3,  ['D'] = 4,  ['E'] = 5,  ['F'] = 6,  ['G'] = 7,  ['H'] = 8,
    ['I'] = 9,  ['J'] = 10, ['K'] = 11, ['L'] = 12, ['M'] = 13, ['N'] = 14, ['O'] = 15, ['P'] = 16,
    ['Q'] = 17, ['R'] = 18, ['S'] = 19, ['T'] = 20, ['U'] = 21, ['V'] = 22, ['W'] = 23, ['X'] = 24,
    ['Y'] = 25, ['Z'] = 26, ['a'] = 27, ['b'] = 28, ['c'] = 29, ['d'] = 30, ['e'] = 31, ['f'] = 32,
    ['g'] = 33, ['h'] = 34, ['i'] = 35, ['j'] = 36, ['k'] = 37, ['l'] = 38, ['m'] = 39, ['n'] = 40,
    ['o'] = 41, ['p'] = 42, ['q'] = 43, ['r'] = 44, ['s'] = 45, ['t'] = 46, ['u'] = 47, ['v'] = 48,
    ['w'] = 49, ['x'] = 50, ['y'] = 51, ['z'] = 52, ['0'] = 53, ['1'] = 54, ['2'] = 55, ['3'] = 56,
    ['4'] = 57, ['5'] = 58, ['6'] = 59, ['7'] = 60, ['8'] = 61, ['9'] = 62, ['+'] = 63, ['/'] = 64,
};

/* Number of floats a base64 text of len characters holds, or -1. */
static int base64_dim(const char *s, size_t len)
{
    size_t pad = 0;
    if (len % 4 == 0)
        while (pad < 2 && len > pad && s[len - 1 - pad] == '=')
            pad++;
    if ((len - pad) % 4 == 1 || ((len - pad) * 3 / 4) % 4 != 0)
        return -1;
    return (int)((len - pad) * 3 / 4 / 4);
}

/* Base64 decoding tables in the style of modp_b64: B64_SHIFTED[k][ch] is
 * character ch's 6 bits already placed where they land in the 3 output bytes
 * when the quad is stored as one little-endian uint32 (k = position in the
 * quad); an invalid character has bit 24 set in every table, so one OR of
 * four lookups decodes a quad and one compare validates it. Built once from
 * B64 by base64_tables(). */
static uint32_t B64_SHIFTED[4][256];

static void base64_tables_build(void)
{
    for (int ch = 0; ch < 256; ch++) {
        uint32_t x = (uint32_t)(B64[ch] - 1);
        if (B64[ch] == 0) {
            for (int k = 0; k < 4; k++)
                B64_SHIFTED[k][ch] = 0x01000000u;
            continue;
        }
        B64_SHIFTED[0][ch] = x << 2;                                  /* byte 0, high 6 bits */
        B64_SHIFTED[1][ch] = (x >> 4) | ((x & 0x0f) << 12);           /* byte 0 low 2, byte 1 high 4 */
        B64_SHIFTED[2][ch] = ((x >> 2) << 8) | ((x & 0x03) << 22);    /* byte 1 low 4, byte 2 high 2 */
        B64_SHIFTED[3][ch] = x << 16;                                 /* byte 2, low 6 bits */
    }
}

static void base64_tables(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, base64_tables_build);
}

/* Index of the first value of row[0..dim) that is not finite, or -1. The
 * scan is a branch-free reduction over the exponent bits (vectorised), and
 * only a hit walks again to find where. */
static int first_non_finite(const float *row, int dim)
{
    uint32_t all_ones = 0;
    for (int j = 0; j < dim; j++) {
        uint32_t u;
        memcpy(&u, &row[j], sizeof u);
        all_ones |= (uint32_t)((u & 0x7f800000u) == 0x7f800000u);
    }
    if (all_ones == 0)
        return -1;
    for (int j = 0; j < dim; j++)
        if (!isfinite(row[j]))
            return j;
    return -1;
}

/* Decodes dim little-endian float32 from base64 s straight into row, four
 * characters (three bytes) per step. Returns 0, -1 (bad base64), or
 * -2 - j when value j is not finite. */
static int base64_row(const char *s, size_t len, int dim, float *row)
{
    unsigned char *bytes = (unsigned char *)row;
    const unsigned char *in = (const unsigned char *)s;
    size_t need = (size_t)dim * 4, o = 0, i = 0, pad = 0;
    uint32_t invalid = 0;
    base64_tables();
    if (len % 4 == 0)
        while (pad < 2 && len > pad && s[len - 1 - pad] == '=')
            pad++;
    len -= pad;
    if ((len * 6) / 8 != need)
        return -1;
    /* Whole quads while a 4-byte store stays inside the row. */
    for (; i + 4 <= len && o + 4 <= need; i += 4, o += 3) {
        uint32_t v = B64_SHIFTED[0][in[i]] | B64_SHIFTED[1][in[i + 1]] | B64_SHIFTED[2][in[i + 2]] |
                     B64_SHIFTED[3][in[i + 3]];
        invalid |= v;
        memcpy(bytes + o, &v, sizeof v);
    }
    if (invalid & 0x01000000u)
        return -1;
    /* The last quads, and a final 2 or 3 characters (1 or 2 bytes). */
    for (; i < len; i += 4) {
        uint32_t v = 0;
        size_t chars = len - i < 4 ? len - i : 4;
        for (size_t k = 0; k < 4; k++) {
            int x = k < chars ? B64[in[i + k]] - 1 : 0;
            if (x < 0)
                return -1;
            v = v << 6 | (uint32_t)x;
        }
        for (size_t k = 0; k + 1 < chars; k++)
            bytes[o++] = (unsigned char)(v >> (16 - 8 * k));
    }
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    for (int k = 0; k < dim; k++) {
        uint32_t u;
        memcpy(&u, &row[k], sizeof u);
        u = __builtin_bswap32(u);
        memcpy(&row[k], &u, sizeof u);
    }
#endif
    int j = first_non_finite(row, dim);
    return j < 0 ? 0 : -2 - j;
}

/* The base64 text of an escaped JSON string (only "\/" is expected there). */
static char *unescape_base64(const span *s, size_t *len)
{
    char *out = malloc(s->len + 1);
    size_t n = 0;
    if (!out)
        return NULL;
    for (size_t i = 0; i < s->len; i++) {
        if (s->s[i] == '\\' && i + 1 < s->len) {
            i++;
            if (s->s[i] != '/' && s->s[i] != '\\' && s->s[i] != '"') {
                free(out);
                return NULL;
            }
        }
        out[n++] = s->s[i];
    }
    *len = n;
    return out;
}

/* ---- number arrays ----------------------------------------------------- */

/* Counts the elements of the array at the cursor and skips it. */
static int count_array(cursor *c, int *count)
{
    int n = 0;
    *count = 0;
    if (enter(c, ']'))
        return 0;
    for (;;) {
        if (skip_value(c, 1) != 0)
            return -1;
        n++;
        skip_ws(c);
        if (c->p < c->end && *c->p == ',') {
            c->p++;
            continue;
        }
        if (expect(c, ']') != 0)
            return -1;
        *count = n;
        return 0;
    }
}

/* Decodes the number array starting at open into row. 0 or -1 (err set). */
static int array_row(decoder *d, const char *open, int index, int dim, float *row)
{
    cursor c = {d->c.start, open + 1, d->c.end};
    for (int j = 0; j < dim; j++) {
        double value;
        long long integer;
        int integral;
        skip_ws(&c);
        if (read_number(&c, &value, &integer, &integral) != 0)
            return fail(d, "valor %d do vetor %d não é número", j, index);
        if (!isfinite(value) || !isfinite((float)value))
            return fail(d, "valor %d do vetor %d não é finito", j, index);
        row[j] = (float)value;
        skip_ws(&c);
        if (c.p < c.end && *c.p == ',')
            c.p++;
    }
    return 0;
}

/* ---- data items -------------------------------------------------------- */

static int on_item_key(decoder *d, const span *key, void *ctx)
{
    item *it = ctx;
    cursor *c = &d->c;
    if (key_is(key, "index")) {
        double value;
        int integral = 0;
        if (c->p < c->end && (*c->p == '-' || (*c->p >= '0' && *c->p <= '9')))
            return read_number(c, &value, &it->index, &integral) != 0 ? -1 : (it->has_index = integral, 0);
        return skip_value(c, 2);
    }
    if (key_is(key, "embedding")) {
        if (c->p < c->end && *c->p == '"') {
            it->kind = 1;
            return read_string(c, &it->b64);
        }
        if (c->p < c->end && *c->p == '[') {
            it->kind = 2;
            it->array = c->p;
            return count_array(c, &it->array_len);
        }
        it->kind = 3; /* neither: reported once the item is complete */
    }
    return skip_value(c, 2);
}

/* Dimension of an item's vector, or -1 (err set). */
static int item_dim(decoder *d, const item *it, int index)
{
    if (it->kind == 2)
        return it->array_len;
    if (it->kind == 1) {
        int dim = base64_dim(it->b64.s, it->b64.len);
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
    rc = base64_row(it->b64.s, it->b64.len, d->v.dim, row);
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
        if (!(plain = unescape_base64(&it->b64, &it->b64.len)))
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
    if (enter(c, ']'))
        return 0;
    for (;;) {
        int counted = 0; /* an object item the stream decoded (and counted) already */
        skip_ws(c);
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
            if (skip_value(c, 1) != 0)
                return fail_syntax(d);
            return fail(d, "item %ld de \"data\" sem \"index\" inteiro", d->items);
        } else if (skip_value(c, 1) != 0) {
            return fail_syntax(d);
        }
        if (!counted)
            d->items++;
        skip_ws(c);
        if (c->p < c->end && *c->p == ',') {
            c->p++;
            continue;
        }
        return expect(c, ']') == 0 ? 0 : fail_syntax(d);
    }
}

/* ---- usage ------------------------------------------------------------- */

static int on_usage_key(decoder *d, const span *key, void *ctx)
{
    long *prompt_tokens = ctx;
    int is_prompt = key_is(key, "prompt_tokens");
    if (is_prompt || key_is(key, "total_tokens")) {
        double value;
        long long n = -1;
        int integral = 0;
        cursor *c = &d->c;
        const char *name = is_prompt ? "prompt_tokens" : "total_tokens";
        if (c->p < c->end && (*c->p == '-' || (*c->p >= '0' && *c->p <= '9'))) {
            if (read_number(c, &value, &n, &integral) != 0)
                return -1;
        } else if (skip_value(c, 2) != 0) {
            return -1;
        }
        if (!integral || n < 0 || n > DECODE_MAX_TOKENS)
            return fail(d, "\"usage.%s\" não é um inteiro entre 0 e %lld", name, DECODE_MAX_TOKENS);
        if (is_prompt)
            *prompt_tokens = (long)n;
        return 0;
    }
    return skip_value(&d->c, 2);
}

static int read_usage(decoder *d)
{
    cursor *c = &d->c;
    if (c->p < c->end && *c->p == 'n')
        return skip_value(c, 1) == 0 ? 0 : fail_syntax(d);
    if (c->p >= c->end || *c->p != '{') {
        if (skip_value(c, 1) != 0)
            return fail_syntax(d);
        return fail(d, "campo \"usage\" não é um objeto");
    }
    d->v.has_usage = 1;
    if (walk_object(d, on_usage_key, &d->v.prompt_tokens) != 0)
        return d->reported ? -1 : fail_syntax(d);
    return 0;
}

/* ---- the answer -------------------------------------------------------- */

/* Top-level keys: "data" and "usage" are read, others skipped. */
static int on_root_key(decoder *d, const span *key, void *ctx)
{
    int *found_data = ctx;
    if (key_is(key, "data")) {
        if (*found_data)
            return fail(d, "campo \"data\" repetido");
        *found_data = 1;
        return read_data(d);
    }
    if (key_is(key, "usage"))
        return read_usage(d);
    return skip_value(&d->c, 1) == 0 ? 0 : fail_syntax(d);
}

static int decode(decoder *d)
{
    int found_data = 0;
    skip_ws(&d->c);
    if (d->c.p >= d->c.end)
        return fail(d, "corpo vazio");
    if (*d->c.p != '{') {
        if (skip_value(&d->c, 0) != 0)
            return fail_syntax(d);
        skip_ws(&d->c);
        return d->c.p == d->c.end ? fail(d, "campo \"data\" ausente ou não é lista") : fail_syntax(d);
    }
    if (walk_object(d, on_root_key, &found_data) != 0)
        return d->reported ? -1 : fail_syntax(d);
    skip_ws(&d->c);
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

void embed_stream_free(embed_stream *s)
{
    if (!s)
        return;
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
    } else if (skip_value(&d->c, 1) != 0) {
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
    return s->d.wrong_dim ? EMBED_KIND_DIMENSION : EMBED_KIND_MALFORMED;
}
