/*
 * copy.c: binary COPY (PGCOPY) encoder into a growable buffer. See copy.h.
 */
#include "copy.h"

#include <stdlib.h>
#include <string.h>

/* bits in network (big-endian) byte order, as a value to store with memcpy. */
static inline uint32_t to_big_endian32(uint32_t bits)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    return __builtin_bswap32(bits);
#else
    return bits;
#endif
}

static const char copy_signature[11] = {'P', 'G', 'C', 'O', 'P', 'Y', '\n', '\377', '\r', '\n', '\0'};

void copy_buf_init(copy_buf *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->failed = 0;
}

void copy_buf_free(copy_buf *b)
{
    free(b->data);
    copy_buf_init(b);
}

void copy_buf_reset(copy_buf *b)
{
    if (b->cap > COPY_BUF_KEEP_MAX) {
        copy_buf_free(b);
        return;
    }
    b->len = 0;
    b->failed = 0;
}

/* Makes room for extra more bytes. */
static int reserve(copy_buf *b, size_t extra)
{
    size_t need, cap;
    char *p;
    if (b->failed)
        return -1;
    if (extra > SIZE_MAX - b->len)
        goto fail;
    need = b->len + extra;
    if (need <= b->cap)
        return 0;
    cap = b->cap ? b->cap : 4096;
    while (cap < need) {
        if (cap > SIZE_MAX / 2) {
            cap = need;
            break;
        }
        cap *= 2;
    }
    p = realloc(b->data, cap);
    if (p == NULL)
        goto fail;
    b->data = p;
    b->cap = cap;
    return 0;

fail:
    b->failed = 1;
    return -1;
}

int copy_buf_reserve(copy_buf *b, size_t extra)
{
    return reserve(b, extra);
}

/* Appends without checks; callers reserved the room. */
static void put_raw(copy_buf *b, const void *p, size_t n)
{
    if (n > 0)
        memcpy(b->data + b->len, p, n);
    b->len += n;
}

static void put_u16(copy_buf *b, uint16_t v)
{
    unsigned char be[2] = {(unsigned char)(v >> 8), (unsigned char)v};
    put_raw(b, be, 2);
}

static void put_u32(copy_buf *b, uint32_t v)
{
    uint32_t be = to_big_endian32(v);
    put_raw(b, &be, 4);
}

int copy_begin(copy_buf *b)
{
    if (reserve(b, sizeof copy_signature + 8) != 0)
        return -1;
    put_raw(b, copy_signature, sizeof copy_signature);
    put_u32(b, 0); /* flags: no OIDs */
    put_u32(b, 0); /* header extension length */
    return 0;
}

int copy_end(copy_buf *b)
{
    if (reserve(b, 2) != 0)
        return -1;
    put_u16(b, 0xFFFF); /* int16 -1 */
    return 0;
}

int copy_tuple_begin(copy_buf *b, int nfields)
{
    if (nfields < 0 || nfields > 1600) { /* MaxTupleAttributeNumber */
        b->failed = 1;
        return -1;
    }
    if (reserve(b, 2) != 0)
        return -1;
    put_u16(b, (uint16_t)nfields);
    return 0;
}

int copy_field_null(copy_buf *b)
{
    if (reserve(b, 4) != 0)
        return -1;
    put_u32(b, 0xFFFFFFFFu); /* int32 -1 */
    return 0;
}

int copy_field_bytes(copy_buf *b, const void *bytes, size_t len)
{
    if (len > INT32_MAX) {
        b->failed = 1;
        return -1;
    }
    if (reserve(b, 4 + len) != 0)
        return -1;
    put_u32(b, (uint32_t)len);
    put_raw(b, bytes, len);
    return 0;
}

int copy_field_text(copy_buf *b, const char *s)
{
    if (s == NULL)
        return copy_field_null(b);
    return copy_field_bytes(b, s, strlen(s));
}

int copy_field_text_len(copy_buf *b, const char *s, size_t len)
{
    if (s == NULL)
        return copy_field_null(b);
    return copy_field_bytes(b, s, len);
}

int copy_field_int4(copy_buf *b, int32_t v)
{
    if (reserve(b, 8) != 0)
        return -1;
    put_u32(b, 4);
    put_u32(b, (uint32_t)v);
    return 0;
}

/* Microseconds between the Unix epoch and PostgreSQL's (2000-01-01 UTC). */
#define PG_EPOCH_UNIX_US INT64_C(946684800000000)

int copy_field_jsonb(copy_buf *b, const char *json, size_t len)
{
    static const unsigned char jsonb_version = 1;
    if (json == NULL)
        return copy_field_null(b);
    if (len > INT32_MAX - 1) {
        b->failed = 1;
        return -1;
    }
    if (reserve(b, 5 + len) != 0)
        return -1;
    put_u32(b, (uint32_t)(len + 1));
    put_raw(b, &jsonb_version, 1);
    put_raw(b, json, len);
    return 0;
}

int copy_field_int8(copy_buf *b, int64_t v)
{
    if (reserve(b, 12) != 0)
        return -1;
    put_u32(b, 8);
    put_u32(b, (uint32_t)((uint64_t)v >> 32));
    put_u32(b, (uint32_t)v);
    return 0;
}

int copy_field_timestamptz(copy_buf *b, int64_t unix_us)
{
    return copy_field_int8(b, (int64_t)((uint64_t)unix_us - (uint64_t)PG_EPOCH_UNIX_US));
}

int copy_field_float4_array(copy_buf *b, const float *values, int n)
{
    size_t body;
    if (n < 0 || (size_t)n > (INT32_MAX - 20) / 8) {
        b->failed = 1;
        return -1;
    }
    /* ndim, has_null, elemtype, then per dimension (length, lower bound). */
    body = n == 0 ? 12 : 20 + (size_t)n * 8;
    if (reserve(b, 4 + body) != 0)
        return -1;
    put_u32(b, (uint32_t)body);
    put_u32(b, n == 0 ? 0 : 1); /* ndim */
    put_u32(b, 0);              /* has_null */
    put_u32(b, COPY_FLOAT4_OID);
    if (n == 0)
        return 0;
    put_u32(b, (uint32_t)n); /* dimension length */
    put_u32(b, 1);           /* lower bound */
    /* Per element: int32 length 4, then the big-endian float4. */
    unsigned char *out = (unsigned char *)b->data + b->len;
    const uint32_t length4 = to_big_endian32(4);
    for (int i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, &values[i], sizeof bits);
        bits = to_big_endian32(bits);
        memcpy(out + 8 * (size_t)i, &length4, sizeof length4);
        memcpy(out + 8 * (size_t)i + 4, &bits, sizeof bits);
    }
    b->len += (size_t)n * 8;
    return 0;
}

uint16_t copy_float_to_half(float f)
{
    uint32_t x, abs, sign, mant, h, rem, halfway;
    int shift;
    memcpy(&x, &f, sizeof x);
    sign = (x >> 16) & 0x8000u;
    abs = x & 0x7FFFFFFFu;
    if (abs > 0x7F800000u) /* NaN: keep it quiet and its top payload bits */
        return (uint16_t)(sign | 0x7E00u | ((abs >> 13) & 0x3FFu));
    if (abs >= 0x477FF000u) /* >= 65520 rounds past the largest half: infinity */
        return (uint16_t)(sign | 0x7C00u);
    if (abs >= 0x38800000u) { /* normal half: rebias the exponent, round 13 bits */
        h = (abs - 0x38000000u) >> 13;
        rem = abs & 0x1FFFu;
        if (rem > 0x1000u || (rem == 0x1000u && (h & 1u)))
            h++;
        return (uint16_t)(sign | h);
    }
    if (abs < 0x33000000u) /* below 2^-25: rounds to zero */
        return (uint16_t)sign;
    /* Subnormal half: mantissa (with its implicit bit) shifted into 2^-24 units. */
    mant = (abs & 0x7FFFFFu) | 0x800000u;
    shift = 126 - (int)(abs >> 23);
    h = mant >> shift;
    rem = mant & ((1u << shift) - 1u);
    halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (h & 1u)))
        h++;
    return (uint16_t)(sign | h);
}

/* Field header shared by vector and halfvec: length, int16 dim, int16 unused. */
static int put_pgvector_header(copy_buf *b, int n, size_t elem_size)
{
    size_t body;
    if (n < 1 || n > COPY_VECTOR_MAX_DIM) {
        b->failed = 1;
        return -1;
    }
    body = 4 + (size_t)n * elem_size;
    if (reserve(b, 4 + body) != 0)
        return -1;
    put_u32(b, (uint32_t)body);
    put_u16(b, (uint16_t)n);
    put_u16(b, 0);
    return 0;
}

int copy_field_vector(copy_buf *b, const float *values, int n)
{
    unsigned char *out;
    if (put_pgvector_header(b, n, 4) != 0)
        return -1;
    out = (unsigned char *)b->data + b->len;
    /* Big-endian float4s: one load, byte swap and store each (vectorised). */
    for (int i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, &values[i], sizeof bits);
        bits = to_big_endian32(bits);
        memcpy(out + 4 * (size_t)i, &bits, sizeof bits);
    }
    b->len += (size_t)n * 4;
    return 0;
}

int copy_field_halfvec(copy_buf *b, const float *values, int n)
{
    unsigned char *out;
    if (put_pgvector_header(b, n, 2) != 0)
        return -1;
    out = (unsigned char *)b->data + b->len;
    for (int i = 0; i < n; i++) {
        uint16_t bits = copy_float_to_half(values[i]);
        out[0] = (unsigned char)(bits >> 8);
        out[1] = (unsigned char)bits;
        out += 2;
    }
    b->len += (size_t)n * 2;
    return 0;
}
