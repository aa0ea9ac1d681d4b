/*
 * test_copy.c: byte-exact checks of the binary COPY encoder (copy.c). The
 * round trip through a real server is in test_pg.c.
 */
#include "copy.h"
#include "test_assert.h"

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
    test_header_and_trailer();
    test_scalar_fields();
    test_float_array();
    test_growth_and_sticky_failure();
    printf("test_copy: ok\n");
    return 0;
}
