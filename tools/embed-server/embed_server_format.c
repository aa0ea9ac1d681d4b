/*
 * embed_server_format.c: the body of a 200 answer to POST /v1/embeddings:
 * feature-hashed vectors written as JSON floats (9 significant digits, so a
 * float round-trips) or as base64 of little-endian float32, plus usage, and
 * the deliberately broken variants of --malformed-rate / --bad-usage-rate,
 * and the chunks of an endless answer (--endless-pattern, --endless-gzip).
 */
#include "embed_server_internal.h"
#include "featurehash.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static const double es_pow10_table[] = {
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
};

/*
 * Writes value with 9 significant digits (enough to round-trip a float) into
 * out (>= 32 bytes); returns the length. Much faster than snprintf("%.9g").
 */
static size_t es_format_float(char *out, float value)
{
    if (value == 0.0f || !isfinite(value)) {
        out[0] = '0';
        return 1;
    }
    double magnitude = fabs((double)value);
    int exp10 = (int)floor(log10(magnitude));
    int scale = 8 - exp10;
    if (scale < 0 || scale > 22 || exp10 < -14)
        return (size_t)snprintf(out, 32, "%.9g", (double)value);
    uint64_t mantissa = (uint64_t)llround(magnitude * es_pow10_table[scale]);
    if (mantissa >= 1000000000ULL) {
        exp10++;
        scale--;
        mantissa = (uint64_t)llround(magnitude * es_pow10_table[scale]);
    } else if (mantissa < 100000000ULL && scale < 22) {
        exp10--;
        scale++;
        mantissa = (uint64_t)llround(magnitude * es_pow10_table[scale]);
    }
    char digits[10];
    for (int i = 8; i >= 0; i--) {
        digits[i] = (char)('0' + mantissa % 10);
        mantissa /= 10;
    }
    int ndigits = 9;
    while (ndigits > 1 && digits[ndigits - 1] == '0')
        ndigits--;

    char *p = out;
    if (value < 0)
        *p++ = '-';
    if (exp10 < 0 && exp10 >= -5) {
        *p++ = '0';
        *p++ = '.';
        for (int i = 0; i < -exp10 - 1; i++)
            *p++ = '0';
        memcpy(p, digits, (size_t)ndigits);
        p += ndigits;
    } else if (exp10 >= 0 && exp10 < 9) {
        for (int i = 0; i <= exp10; i++)
            *p++ = i < ndigits ? digits[i] : '0';
        if (ndigits > exp10 + 1) {
            *p++ = '.';
            memcpy(p, digits + exp10 + 1, (size_t)(ndigits - exp10 - 1));
            p += ndigits - exp10 - 1;
        }
    } else {
        *p++ = digits[0];
        if (ndigits > 1) {
            *p++ = '.';
            memcpy(p, digits + 1, (size_t)(ndigits - 1));
            p += ndigits - 1;
        }
        p += sprintf(p, "e%c%02d", exp10 < 0 ? '-' : '+', abs(exp10));
    }
    return (size_t)(p - out);
}

/* Byte `at` of the little-endian float32 bytes of vec, whatever the host's order. */
static unsigned char es_float_byte(const float *vec, size_t at)
{
    uint32_t bits;
    memcpy(&bits, &vec[at / 4], sizeof bits);
    return (unsigned char)(bits >> (8 * (at % 4)));
}

/* Appends the base64 of the little-endian float32 bytes of vec: three
 * bytes to four characters per step (on a little-endian host the floats'
 * own bytes are read in place; this was a quarter of the server's CPU). */
static int es_append_base64_floats(es_buf *buf, const float *vec, size_t dim)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t nbytes = dim * 4, i = 0;
    if (es_buf_reserve(buf, (nbytes + 2) / 3 * 4 + 1) != 0)
        return -1;
    char *p = buf->data + buf->len;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    const unsigned char *in = (const unsigned char *)vec;
    for (; i + 3 <= nbytes; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        p[0] = alphabet[v >> 18];
        p[1] = alphabet[(v >> 12) & 63];
        p[2] = alphabet[(v >> 6) & 63];
        p[3] = alphabet[v & 63];
        p += 4;
    }
#endif
    for (; i < nbytes; i += 3) {
        size_t left = nbytes - i;
        uint32_t v = (uint32_t)es_float_byte(vec, i) << 16;
        if (left > 1)
            v |= (uint32_t)es_float_byte(vec, i + 1) << 8;
        if (left > 2)
            v |= es_float_byte(vec, i + 2);
        *p++ = alphabet[v >> 18];
        *p++ = alphabet[(v >> 12) & 63];
        *p++ = left > 1 ? alphabet[(v >> 6) & 63] : '=';
        *p++ = left > 2 ? alphabet[v & 63] : '=';
    }
    buf->len = (size_t)(p - buf->data);
    buf->data[buf->len] = '\0';
    return 0;
}

/* Appends vec (dim floats) as a JSON array of numbers. */
static int es_append_float_array(es_buf *buf, const float *vec, size_t dim)
{
    if (es_buf_reserve(buf, dim * 17 + 8) != 0)
        return -1;
    char *p = buf->data + buf->len;
    *p++ = '[';
    for (size_t k = 0; k < dim; k++) {
        if (k)
            *p++ = ',';
        p += es_format_float(p, vec[k]);
    }
    *p++ = ']';
    buf->len = (size_t)(p - buf->data);
    buf->data[buf->len] = '\0';
    return 0;
}

/* Appends one {"object":"embedding",...} entry of the data array. */
static int es_append_entry(es_buf *out, size_t index, const float *vec, size_t dim, int base64)
{
    if (es_buf_appendf(out, "%s{\"object\":\"embedding\",\"index\":%zu,\"embedding\":", index ? "," : "",
                       index) != 0)
        return -1;
    if (base64) {
        if (es_buf_append(out, "\"", 1) != 0 || es_append_base64_floats(out, vec, dim) != 0)
            return -1;
        return es_buf_append(out, "\"}", 2);
    }
    if (es_append_float_array(out, vec, dim) != 0)
        return -1;
    return es_buf_append(out, "}", 1);
}

/* usage.prompt_tokens of one input, by a rule that is not bytes/4 (so the
 * engine's calibration has something to learn): one token per word (a run
 * of letters or digits, UTF-8 multibyte characters counting as letters)
 * and one per punctuation mark (any other visible ASCII character). */
static uint64_t es_count_tokens(const char *text, size_t len)
{
    uint64_t tokens = 0;
    int in_word = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        int word_char = (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') || c >= 0x80;
        if (word_char) {
            tokens += !in_word;
            in_word = 1;
            continue;
        }
        in_word = 0;
        if (c > ' ' && c < 0x7f)
            tokens++;
    }
    return tokens;
}

/* The model name as a JSON string (malloc'd), NULL when out of memory. */
static char *es_json_quote(const char *text)
{
    json_t *str = json_string(text);
    char *quoted = str ? json_dumps(str, JSON_ENCODE_ANY) : NULL;
    json_decref(str);
    return quoted;
}

es_response *es_build_embeddings(json_t *inputs, const char *model, size_t dim, int base64,
                                 int dense, es_malformed malformed)
{
    es_buf out = {0};
    size_t count = json_array_size(inputs);
    uint64_t tokens = 0;
    float *vec = malloc(dim * sizeof(float));
    char *model_json = es_json_quote(model);

    if (vec == NULL || model_json == NULL)
        goto fail;
    if (es_buf_appendf(&out, "{\"object\":\"list\",\"data\":[") != 0)
        goto fail;
    size_t entries = malformed == ES_EXTRA_VECTOR ? count + 1 : count;
    size_t emitted_dim = malformed == ES_SHORT_VECTORS ? dim - 1 : dim;
    for (size_t i = 0; i < entries; i++) {
        json_t *item = json_array_get(inputs, i < count ? i : count - 1);
        size_t len = json_string_length(item);
        if (i < count)
            tokens += es_count_tokens(json_string_value(item), len);
        (dense ? featurehash_embed_dense : featurehash_embed)(json_string_value(item), len, vec, dim);
        if (es_append_entry(&out, i, vec, emitted_dim, base64) != 0)
            goto fail;
    }
    if (es_buf_appendf(&out, "],\"model\":%s,\"usage\":{\"prompt_tokens\":%lld,\"total_tokens\":%llu}}",
                       model_json, malformed == ES_BAD_USAGE ? -1LL : (long long)tokens,
                       (unsigned long long)tokens) != 0)
        goto fail;
    if (malformed == ES_TRUNCATED)
        out.len = out.len / 2; /* truncated JSON */
    free(vec);
    free(model_json);
    return es_response_new(200, "application/json", out.data, out.len);

fail:
    free(out.data);
    free(vec);
    free(model_json);
    return NULL;
}

/* ---------- endless answers ---------- */

struct es_endless {
    char *start;      /* the body's first bytes (sent once), then NULL */
    size_t start_len; /* bytes in start */
    char *filler;     /* ES_ENDLESS_CHUNK bytes of 'A': the string that never ends */
    int gzip;         /* 1: deflate (gzip wrapper) through z */
    z_stream z;       /* the one deflate stream of the answer */
    char *out;        /* the framed chunk handed out by es_endless_next */
    size_t out_cap;   /* bytes allocated in out */
};

es_endless *es_endless_new(const char *start, size_t start_len, int gzip)
{
    es_endless *e = calloc(1, sizeof *e);
    if (e == NULL)
        return NULL;
    e->gzip = gzip;
    e->start = malloc(start_len + 1);
    e->filler = malloc(ES_ENDLESS_CHUNK);
    /* a compressed chunk is smaller than its input; framing takes 16 bytes */
    e->out_cap = (start_len > ES_ENDLESS_CHUNK ? start_len : ES_ENDLESS_CHUNK) + 1024;
    e->out = malloc(e->out_cap);
    if (e->start == NULL || e->filler == NULL || e->out == NULL ||
        (gzip && deflateInit2(&e->z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)) {
        e->gzip = 0; /* nothing to end in z */
        es_endless_free(e);
        return NULL;
    }
    memcpy(e->start, start, start_len);
    e->start_len = start_len;
    memset(e->filler, 'A', ES_ENDLESS_CHUNK);
    return e;
}

/* Deflates n bytes of in into dst (room bytes), flushed so that the client
 * can inflate them at once. Returns the compressed length, 0 on failure. */
static size_t es_endless_deflate(es_endless *e, const char *in, size_t n, char *dst, size_t room)
{
    e->z.next_in = (Bytef *)in;
    e->z.avail_in = (uInt)n;
    e->z.next_out = (Bytef *)dst;
    e->z.avail_out = (uInt)room;
    if (deflate(&e->z, Z_SYNC_FLUSH) != Z_OK || e->z.avail_in != 0)
        return 0;
    return room - e->z.avail_out;
}

const char *es_endless_next(es_endless *e, size_t *len)
{
    const char *in = e->start ? e->start : e->filler;
    size_t n = e->start ? e->start_len : ES_ENDLESS_CHUNK;
    char *data = e->out + 16; /* room for the "<hex size>\r\n" prefix */
    size_t data_len = n;
    int prefix;
    if (e->gzip) {
        data_len = es_endless_deflate(e, in, n, data, e->out_cap - 16 - 2);
        if (data_len == 0)
            return NULL;
    } else {
        memcpy(data, in, n);
    }
    free(e->start);
    e->start = NULL;
    prefix = snprintf(e->out, 16, "%zx\r\n", data_len);
    memmove(e->out + prefix, data, data_len);
    memcpy(e->out + prefix + data_len, "\r\n", 2);
    *len = (size_t)prefix + data_len + 2;
    return e->out;
}

void es_endless_free(es_endless *e)
{
    if (e == NULL)
        return;
    if (e->gzip)
        deflateEnd(&e->z);
    free(e->start);
    free(e->filler);
    free(e->out);
    free(e);
}
