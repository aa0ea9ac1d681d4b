/*
 * embed_json.c: the JSON primitives of the answer decoders (see
 * embed_json.h): strings found with memchr and a vectorised check, numbers
 * by their grammar and an exact fast conversion, values skipped without a
 * tree, and vectors decoded straight into their row: base64 float32 four
 * characters at a time (modp_b64-style tables) or number arrays. Moved out
 * of embed_decode.c so the "rows" decoder (embed_rows.c) uses the same code.
 */
#include "embed_json.h"

#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- strings ----------------------------------------------------------- */

/* Walks an escaped (or suspicious) string byte by byte from just after its
 * opening quote; returns its closing quote, or NULL if it is not valid. */
static const char *string_end_slow(const ej_cursor *c, const char *q)
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
int ej_read_string(ej_cursor *c, ej_span *out)
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

int ej_key_is(const ej_span *key, const char *name)
{
    size_t n = strlen(name);
    return !key->escaped && key->len == n && memcmp(key->s, name, n) == 0;
}

/* ---- numbers ----------------------------------------------------------- */

static int is_digit(const ej_cursor *c, const char *q) { return q < c->end && *q >= '0' && *q <= '9'; }

/* End of the JSON number at q (RFC 8259 grammar), or NULL. */
static const char *number_end(const ej_cursor *c, const char *q, int *integral)
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

/* Exact powers of ten of a double (10^22 is the last one). */
static const double POW10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* Converts the number [p, q) (grammar already checked) when Clinger's fast
 * path applies: at most 19 significant digits forming a mantissa <= 2^53
 * and a decimal exponent within +-22. Both are exact doubles, so the one
 * multiplication or division rounds correctly: the same double strtod
 * gives, ~10x cheaper. Returns 0, or -1 to fall back to strtod. */
static int fast_number(const char *p, const char *q, double *value, long long *integer)
{
    uint64_t m = 0;
    int digits = 0, exp10 = 0, negative = *p == '-', fraction = 0;
    for (p += negative; p < q && ((*p >= '0' && *p <= '9') || *p == '.'); p++) {
        if (*p == '.') {
            fraction = 1;
            continue;
        }
        exp10 -= fraction;
        if (digits == 0 && *p == '0')
            continue; /* a leading zero */
        if (digits == 19)
            return -1; /* a 20th significant digit */
        m = m * 10 + (uint64_t)(*p - '0');
        digits++;
    }
    if (p < q) { /* the exponent (grammar checked): "e", a sign, digits */
        int esign = p[1] == '-' ? -1 : 1, e = 0;
        for (p += (p[1] == '+' || p[1] == '-') ? 2 : 1; p < q; p++)
            if ((e = e * 10 + (*p - '0')) > 400)
                return -1;
        exp10 += esign * e;
    }
    if (m > ((uint64_t)1 << 53) || exp10 < -22 || exp10 > 22 || FLT_EVAL_METHOD != 0)
        return -1;
    *value = exp10 < 0 ? (double)m / POW10[-exp10] : (double)m * POW10[exp10];
    if (negative)
        *value = -*value;
    *integer = negative ? -(long long)m : (long long)m; /* used only when integral (exp10 is 0) */
    return 0;
}

int ej_read_number(ej_cursor *c, double *value, long long *integer, int *integral)
{
    char buf[64];
    const char *q = number_end(c, c->p, integral);
    size_t n;
    if (!q)
        return -1;
    if (fast_number(c->p, q, value, integer) == 0) {
        if (!*integral)
            *integer = 0;
        c->p = q;
        return 0;
    }
    if ((n = (size_t)(q - c->p)) >= sizeof buf)
        return -1;
    memcpy(buf, c->p, n);
    buf[n] = '\0';
    *value = strtod(buf, NULL);
    *integer = *integral ? strtoll(buf, NULL, 10) : 0;
    c->p = q;
    return 0;
}

int ej_read_count(ej_cursor *c, long long *n)
{
    double value;
    int integral = 0;
    *n = -1;
    if (ej_at_number(c)) {
        if (ej_read_number(c, &value, n, &integral) != 0)
            return -1;
    } else if (ej_skip_value(c, 2) != 0) {
        return -1;
    }
    return integral && *n >= 0 && *n <= EJ_MAX_TOKENS ? 0 : -2;
}

/* ---- skipping values --------------------------------------------------- */

/* Skips an array or object at the cursor (on '[' or '{'). */
static int skip_container(ej_cursor *c, int depth)
{
    char close = *c->p == '[' ? ']' : '}';
    int object = close == '}';
    if (ej_enter(c, close))
        return 0;
    for (;;) {
        if (object) {
            ej_span key;
            ej_skip_ws(c);
            if (c->p >= c->end || *c->p != '"' || ej_read_string(c, &key) != 0 || ej_expect(c, ':') != 0)
                return -1;
        }
        if (ej_skip_value(c, depth + 1) != 0)
            return -1;
        ej_skip_ws(c);
        if (c->p < c->end && *c->p == ',') {
            c->p++;
            continue;
        }
        return ej_expect(c, close);
    }
}

/* Skips any value at the cursor (nesting bounded by EJ_MAX_DEPTH). */
int ej_skip_value(ej_cursor *c, int depth)
{
    int integral;
    ej_span s;
    const char *q;
    ej_skip_ws(c);
    if (c->p >= c->end || depth > EJ_MAX_DEPTH)
        return -1;
    switch (*c->p) {
    case '"':
        return ej_read_string(c, &s);
    case '[':
    case '{':
        return skip_container(c, depth);
    case 't':
        return (c->end - c->p >= 4 && memcmp(c->p, "true", 4) == 0) ? (c->p += 4, 0) : -1;
    case 'f':
        return (c->end - c->p >= 5 && memcmp(c->p, "false", 5) == 0) ? (c->p += 5, 0) : -1;
    case 'n':
        return (c->end - c->p >= 4 && memcmp(c->p, "null", 4) == 0) ? (c->p += 4, 0) : -1;
    default: /* a number: its grammar only (no conversion) */
        if (!(q = number_end(c, c->p, &integral)))
            return -1;
        c->p = q;
        return 0;
    }
}

/* ---- number arrays ----------------------------------------------------- */

/* Counts the elements of the array at the cursor and skips it. */
int ej_count_array(ej_cursor *c, int *count)
{
    int n = 0;
    *count = 0;
    if (ej_enter(c, ']'))
        return 0;
    for (;;) {
        if (ej_skip_value(c, 1) != 0)
            return -1;
        n++;
        ej_skip_ws(c);
        if (c->p < c->end && *c->p == ',') {
            c->p++;
            continue;
        }
        if (ej_expect(c, ']') != 0)
            return -1;
        *count = n;
        return 0;
    }
}

/* One element of a number row: stored when j < dim and all went well so
 * far (*rc 0); a bad value sets *rc and *bad once. 0, or -1 (syntax). */
static int row_element(ej_cursor *c, float *row, int dim, int j, int *rc, int *bad)
{
    double value;
    long long integer;
    int integral;
    if (!ej_at_number(c)) {
        if (ej_skip_value(c, 2) != 0)
            return -1;
        if (*rc == 0 && j < dim) {
            *rc = -2;
            *bad = j;
        }
        return 0;
    }
    if (ej_read_number(c, &value, &integer, &integral) != 0)
        return -1;
    if (*rc != 0 || j >= dim)
        return 0;
    if (!isfinite(value) || !isfinite((float)value)) {
        *rc = -3;
        *bad = j;
    } else {
        row[j] = (float)value;
    }
    return 0;
}

int ej_read_number_row(ej_cursor *c, float *row, int dim, int *count, int *bad)
{
    int n = 0, rc = 0;
    *count = 0;
    if (ej_enter(c, ']'))
        return 0;
    for (;;) {
        ej_skip_ws(c);
        if (row_element(c, row, dim, n, &rc, bad) != 0)
            return -1;
        n++;
        ej_skip_ws(c);
        if (c->p < c->end && *c->p == ',') {
            c->p++;
            continue;
        }
        if (ej_expect(c, ']') != 0)
            return -1;
        *count = n;
        return rc;
    }
}

int ej_number_row(const char *open, const char *end, int dim, float *row, int *bad)
{
    ej_cursor c = {open, open + 1, end};
    for (int j = 0; j < dim; j++) {
        double value;
        long long integer;
        int integral;
        ej_skip_ws(&c);
        *bad = j;
        if (ej_read_number(&c, &value, &integer, &integral) != 0)
            return -1;
        if (!isfinite(value) || !isfinite((float)value))
            return -2;
        row[j] = (float)value;
        ej_skip_ws(&c);
        if (c.p < c.end && *c.p == ',')
            c.p++;
    }
    return 0;
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
int ej_base64_dim(const char *s, size_t len)
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
int ej_base64_row(const char *s, size_t len, int dim, float *row)
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
char *ej_unescape_base64(const ej_span *s, size_t *len)
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
