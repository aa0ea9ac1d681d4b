/*
 * test_copy.c: byte-exact checks of the binary COPY encoder (copy.c). The
 * round trip through a real server is in test_pg.c.
 */
#include "pg/copy.h"
#include "test_assert.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

static uint32_t be32(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    return ((uint32_t)u[0] << 24) | ((uint32_t)u[1] << 16) | ((uint32_t)u[2] << 8) | u[3];
}

static uint16_t be16(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    return (uint16_t)((u[0] << 8) | u[1]);
}

static void test_header_and_trailer(void)
{
    copy_buf b;
    static const char expected[] = "PGCOPY\n\377\r\n\0\0\0\0\0\0\0\0\0\377\377";
    copy_buf_init(&b);
    ASSERT_INT_EQ(copy_begin(&b), 0);
    ASSERT_INT_EQ(copy_end(&b), 0);
    ASSERT_INT_EQ(b.len, 21);
    ASSERT(memcmp(b.data, expected, 21) == 0);
    copy_buf_free(&b);
    ASSERT(b.data == NULL);
}

static void test_scalar_fields(void)
{
    copy_buf b;
    copy_buf_init(&b);
    ASSERT_INT_EQ(copy_tuple_begin(&b, 4), 0);
    ASSERT_INT_EQ(copy_field_text(&b, "olá"), 0);      /* 4 bytes in UTF-8 */
    ASSERT_INT_EQ(copy_field_text(&b, NULL), 0);
    ASSERT_INT_EQ(copy_field_int4(&b, -2), 0);
    ASSERT_INT_EQ(copy_field_text_len(&b, "ab\0c", 4), 0);
    ASSERT_INT_EQ(b.len, 2 + (4 + 4) + 4 + (4 + 4) + (4 + 4));
    ASSERT_INT_EQ(be16(b.data), 4);
    ASSERT_INT_EQ(be32(b.data + 2), 4);
    ASSERT(memcmp(b.data + 6, "ol\xc3\xa1", 4) == 0);
    ASSERT_INT_EQ(be32(b.data + 10), 0xFFFFFFFFu);
    ASSERT_INT_EQ(be32(b.data + 14), 4);
    ASSERT_INT_EQ(be32(b.data + 18), 0xFFFFFFFEu);
    ASSERT_INT_EQ(be32(b.data + 22), 4);
    ASSERT(memcmp(b.data + 26, "ab\0c", 4) == 0);
    copy_buf_free(&b);
}

/* jsonb: version 1 + text; timestamptz: int64 µs since 2000-01-01 UTC. */
static void test_jsonb_and_timestamptz(void)
{
    copy_buf b;
    copy_buf_init(&b);
    ASSERT_INT_EQ(copy_field_jsonb(&b, "{\"a\":1}", 7), 0);
    ASSERT_INT_EQ(copy_field_jsonb(&b, NULL, 0), 0);
    /* 2024-01-01 00:00:00 UTC = 1704067200 s after the Unix epoch */
    ASSERT_INT_EQ(copy_field_timestamptz(&b, INT64_C(1704067200000000) + 5), 0);
    ASSERT_INT_EQ(copy_field_timestamptz(&b, 0), 0);
    ASSERT_INT_EQ(b.len, (4 + 8) + 4 + (4 + 8) + (4 + 8));
    ASSERT_INT_EQ(be32(b.data), 8);
    ASSERT_INT_EQ((unsigned char)b.data[4], 1);
    ASSERT(memcmp(b.data + 5, "{\"a\":1}", 7) == 0);
    ASSERT_INT_EQ(be32(b.data + 12), 0xFFFFFFFFu);
    ASSERT_INT_EQ(be32(b.data + 16), 8);
    /* (1704067200 - 946684800) s = 757382400 s = 757382400000005 µs */
    ASSERT_INT_EQ(((uint64_t)be32(b.data + 20) << 32) | be32(b.data + 24), UINT64_C(757382400000005));
    ASSERT_INT_EQ(be32(b.data + 28), 8);
    ASSERT_INT_EQ(((uint64_t)be32(b.data + 32) << 32) | be32(b.data + 36), (uint64_t)-INT64_C(946684800000000));
    copy_buf_free(&b);
}

static void test_float_array(void)
{
    copy_buf b;
    const float v[3] = {1.0f, -2.5f, 1e-30f};
    uint32_t bits;
    copy_buf_init(&b);
    ASSERT_INT_EQ(copy_field_float4_array(&b, v, 3), 0);
    ASSERT_INT_EQ(b.len, 4 + 20 + 3 * 8);
    ASSERT_INT_EQ(be32(b.data), 20 + 3 * 8); /* field length */
    ASSERT_INT_EQ(be32(b.data + 4), 1);      /* ndim */
    ASSERT_INT_EQ(be32(b.data + 8), 0);      /* has_null */
    ASSERT_INT_EQ(be32(b.data + 12), 700);   /* float4 */
    ASSERT_INT_EQ(be32(b.data + 16), 3);     /* length */
    ASSERT_INT_EQ(be32(b.data + 20), 1);     /* lower bound */
    ASSERT_INT_EQ(be32(b.data + 24), 4);
    ASSERT_INT_EQ(be32(b.data + 28), 0x3F800000u); /* 1.0f */
    ASSERT_INT_EQ(be32(b.data + 32), 4);
    ASSERT_INT_EQ(be32(b.data + 36), 0xC0200000u); /* -2.5f */
    memcpy(&bits, &v[2], 4);
    ASSERT_INT_EQ(be32(b.data + 44), bits);
    copy_buf_free(&b);

    /* Empty array: ndim 0, no dimensions. */
    copy_buf_init(&b);
    ASSERT_INT_EQ(copy_field_float4_array(&b, NULL, 0), 0);
    ASSERT_INT_EQ(b.len, 16);
    ASSERT_INT_EQ(be32(b.data), 12);
    ASSERT_INT_EQ(be32(b.data + 4), 0);
    ASSERT_INT_EQ(be32(b.data + 12), 700);
    copy_buf_free(&b);
}

static void test_vector_field(void)
{
    copy_buf b;
    const float v[2] = {1.0f, -2.5f};
    copy_buf_init(&b);
    ASSERT_INT_EQ(copy_field_vector(&b, v, 2), 0);
    ASSERT_INT_EQ(b.len, 4 + 4 + 2 * 4);
    ASSERT_INT_EQ(be32(b.data), 4 + 2 * 4); /* field length */
    ASSERT_INT_EQ(be16(b.data + 4), 2);     /* dim */
    ASSERT_INT_EQ(be16(b.data + 6), 0);     /* unused */
    ASSERT_INT_EQ(be32(b.data + 8), 0x3F800000u);
    ASSERT_INT_EQ(be32(b.data + 12), 0xC0200000u);
    /* pgvector accepts 1..16000 dimensions: anything else fails, and sticks. */
    ASSERT_INT_EQ(copy_field_vector(&b, v, 0), -1);
    ASSERT_INT_EQ(copy_field_vector(&b, v, 2), -1);
    copy_buf_free(&b);
    copy_buf_init(&b);
    ASSERT_INT_EQ(copy_field_halfvec(&b, v, 16001), -1);
    copy_buf_free(&b);
}

static void test_halfvec_field(void)
{
    copy_buf b;
    const float v[3] = {1.0f, -2.0f, 0.1f};
    copy_buf_init(&b);
    ASSERT_INT_EQ(copy_field_halfvec(&b, v, 3), 0);
    ASSERT_INT_EQ(b.len, 4 + 4 + 3 * 2);
    ASSERT_INT_EQ(be32(b.data), 4 + 3 * 2);
    ASSERT_INT_EQ(be16(b.data + 4), 3);
    ASSERT_INT_EQ(be16(b.data + 6), 0);
    ASSERT_INT_EQ(be16(b.data + 8), 0x3C00);
    ASSERT_INT_EQ(be16(b.data + 10), 0xC000);
    ASSERT_INT_EQ(be16(b.data + 12), 0x2E66); /* 0.1 rounds down to 0.0999756 */
    copy_buf_free(&b);
}

/* Rounding to half precision: nearest, ties to even, at every boundary. */
static void test_float_to_half(void)
{
    ASSERT_INT_EQ(copy_float_to_half(0.0f), 0x0000);
    ASSERT_INT_EQ(copy_float_to_half(-0.0f), 0x8000);
    ASSERT_INT_EQ(copy_float_to_half(1.0f / 3.0f), 0x3555);
    ASSERT_INT_EQ(copy_float_to_half(65504.0f), 0x7BFF);    /* largest half */
    ASSERT_INT_EQ(copy_float_to_half(65519.0f), 0x7BFF);    /* below the tie */
    ASSERT_INT_EQ(copy_float_to_half(65520.0f), 0x7C00);    /* tie to even: infinity */
    ASSERT_INT_EQ(copy_float_to_half(1.0f + 1.0f / 2048), 0x3C00); /* tie, even stays */
    ASSERT_INT_EQ(copy_float_to_half(1.0f + 3.0f / 2048), 0x3C02); /* tie, odd goes up */
    ASSERT_INT_EQ(copy_float_to_half(ldexpf(1.0f, -14)), 0x0400);  /* smallest normal */
    ASSERT_INT_EQ(copy_float_to_half(ldexpf(1.0f, -24)), 0x0001);  /* smallest subnormal */
    ASSERT_INT_EQ(copy_float_to_half(ldexpf(1.0f, -25)), 0x0000);  /* tie to even: zero */
    ASSERT_INT_EQ(copy_float_to_half(ldexpf(1.5f, -25)), 0x0001);
    ASSERT_INT_EQ(copy_float_to_half(ldexpf(3.0f, -25)), 0x0002);  /* 1.5 units: tie, up to even */
    ASSERT_INT_EQ(copy_float_to_half(-ldexpf(1.0f, -14) + ldexpf(1.0f, -26)), 0x8400);
    ASSERT_INT_EQ(copy_float_to_half(ldexpf(1.0f, -30)), 0x0000);
    ASSERT_INT_EQ(copy_float_to_half(INFINITY), 0x7C00);
    ASSERT_INT_EQ(copy_float_to_half(-INFINITY), 0xFC00);
    ASSERT(copy_float_to_half(NAN) > 0x7C00 && copy_float_to_half(NAN) < 0x8000);
}

/* copy_buf_reset: the next stream starts empty and clean (even after a
 * failure) in the same memory, byte for byte like a fresh buffer; past
 * COPY_BUF_KEEP_MAX the memory is given back. */
static void test_reset_reuses_memory(void)
{
    static float row[1536];
    copy_buf fresh, reused;
    for (int i = 0; i < 1536; i++)
        row[i] = (float)i - 3.25f;
    copy_buf_init(&fresh);
    copy_buf_init(&reused);
    ASSERT_INT_EQ(copy_buf_reserve(&reused, 500000), 0);
    char *memory = reused.data;
    ASSERT_INT_EQ(copy_field_int4(&reused, 7), 0);
    ASSERT_INT_EQ(copy_tuple_begin(&reused, -1), -1); /* a failed stream */
    copy_buf_reset(&reused);
    ASSERT_INT_EQ(reused.len, 0);
    ASSERT_INT_EQ(reused.failed, 0);
    ASSERT(reused.data == memory);
    copy_buf *both[2] = {&fresh, &reused};
    for (int k = 0; k < 2; k++) {
        ASSERT_INT_EQ(copy_begin(both[k]), 0);
        ASSERT_INT_EQ(copy_tuple_begin(both[k], 2), 0);
        ASSERT_INT_EQ(copy_field_vector(both[k], row, 1536), 0);
        ASSERT_INT_EQ(copy_field_float4_array(both[k], row, 1536), 0);
        ASSERT_INT_EQ(copy_end(both[k]), 0);
    }
    ASSERT_INT_EQ(reused.len, fresh.len);
    ASSERT(memcmp(reused.data, fresh.data, fresh.len) == 0);
    ASSERT(reused.data == memory);
    ASSERT_INT_EQ(copy_buf_reserve(&reused, COPY_BUF_KEEP_MAX + 1), 0);
    copy_buf_reset(&reused);
    ASSERT(reused.data == NULL);
    ASSERT_INT_EQ(reused.cap, 0);
    copy_buf_free(&fresh);
    copy_buf_free(&reused);
}

static void test_growth_and_sticky_failure(void)
{
    copy_buf b;
    static float big[1536];
    for (int i = 0; i < 1536; i++)
        big[i] = (float)i * 0.5f;
    copy_buf_init(&b);
    ASSERT_INT_EQ(copy_begin(&b), 0);
    for (int row = 0; row < 100; row++) {
        ASSERT_INT_EQ(copy_tuple_begin(&b, 1), 0);
        ASSERT_INT_EQ(copy_field_float4_array(&b, big, 1536), 0);
    }
    ASSERT_INT_EQ(copy_end(&b), 0);
    ASSERT_INT_EQ(b.len, 19 + 100 * (2 + 4 + 20 + 1536 * 8) + 2);
    ASSERT(b.cap >= b.len);
    /* Last element of the last row. */
    {
        float back;
        uint32_t bits = be32(b.data + b.len - 2 - 4);
        memcpy(&back, &bits, 4);
        ASSERT_NEAR(back, 767.5, 0.0);
    }
    /* Invalid sizes fail and the failure sticks. */
    ASSERT_INT_EQ(copy_field_float4_array(&b, big, -1), -1);
    ASSERT_INT_EQ(copy_field_int4(&b, 1), -1);
    ASSERT_INT_EQ(copy_end(&b), -1);
    copy_buf_free(&b);
    ASSERT_INT_EQ(b.failed, 0);
}

int main(void)
{
    test_reset_reuses_memory();
    test_header_and_trailer();
    test_scalar_fields();
    test_jsonb_and_timestamptz();
    test_float_array();
    test_vector_field();
    test_halfvec_field();
    test_float_to_half();
    test_growth_and_sticky_failure();
    printf("test_copy: ok\n");
    return 0;
}
