/*
 * test_fpset.c: unit tests of the fingerprint set (fpset.c): membership
 * across growth, duplicates, the seen marks, fingerprint 0, and the bigint
 * text form.
 */
#include "pg/fpset.h"
#include "test_assert.h"

#include <stdint.h>

/* A spread of 64-bit values (splitmix64), like real XXH3 fingerprints. */
static uint64_t spread(uint64_t i)
{
    uint64_t z = i * UINT64_C(0x9E3779B97F4A7C15);
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

static void test_members_across_growth(void)
{
    rg_fpset s = {0};
    const uint64_t n = 100000;
    for (uint64_t i = 1; i <= n; i++)
        ASSERT_INT_EQ(rg_fpset_add(&s, spread(i)), 0);
    ASSERT_INT_EQ(s.members, n);
    ASSERT_INT_EQ(s.unseen, n);
    ASSERT(s.capacity >= 2 * n);
    /* Adding again changes nothing. */
    ASSERT_INT_EQ(rg_fpset_add(&s, spread(7)), 0);
    ASSERT_INT_EQ(s.members, n);
    for (uint64_t i = 1; i <= n; i++)
        ASSERT_INT_EQ(rg_fpset_match(&s, spread(i)), 1);
    ASSERT_INT_EQ(s.unseen, 0);
    /* Values never added are not members. */
    for (uint64_t i = n + 1; i <= 2 * n; i++)
        ASSERT_INT_EQ(rg_fpset_match(&s, spread(i)), 0);
    rg_fpset_free(&s);
    ASSERT_INT_EQ(s.members, 0);
}

static void test_seen_marks_count_once(void)
{
    rg_fpset s = {0};
    ASSERT_INT_EQ(rg_fpset_match(&s, 42), 0); /* empty set */
    ASSERT_INT_EQ(rg_fpset_add(&s, 42), 0);
    ASSERT_INT_EQ(rg_fpset_add(&s, 43), 0);
    ASSERT_INT_EQ(rg_fpset_match(&s, 42), 1);
    ASSERT_INT_EQ(rg_fpset_match(&s, 42), 1);
    ASSERT_INT_EQ(s.unseen, 1);
    ASSERT_INT_EQ(rg_fpset_match(&s, 43), 1);
    ASSERT_INT_EQ(s.unseen, 0);
    rg_fpset_free(&s);
}

static void test_zero_is_a_fingerprint(void)
{
    rg_fpset s = {0};
    /* 0 marks an empty slot: it is stored as 1, and matched as 1. */
    ASSERT_INT_EQ(rg_fpset_add(&s, 0), 0);
    ASSERT_INT_EQ(s.members, 1);
    ASSERT_INT_EQ(rg_fpset_match(&s, 0), 1);
    ASSERT_INT_EQ(rg_fpset_normal(0), 1);
    rg_fpset_free(&s);
}

static void test_bigint_text(void)
{
    uint64_t fp = 0;
    char text[24];
    ASSERT_INT_EQ(rg_fpset_parse("-9223372036854775808", &fp), 0);
    ASSERT(fp == UINT64_C(0x8000000000000000));
    rg_fpset_format(fp, text);
    ASSERT_STR_EQ(text, "-9223372036854775808");
    ASSERT_INT_EQ(rg_fpset_parse("9223372036854775807", &fp), 0);
    rg_fpset_format(fp, text);
    ASSERT_STR_EQ(text, "9223372036854775807");
    ASSERT_INT_EQ(rg_fpset_parse("9223372036854775808", &fp), -1); /* past a bigint */
    ASSERT_INT_EQ(rg_fpset_parse("12x", &fp), -1);
    ASSERT_INT_EQ(rg_fpset_parse("", &fp), -1);
}

int main(void)
{
    test_members_across_growth();
    test_seen_marks_count_once();
    test_zero_is_a_fingerprint();
    test_bigint_text();
    return 0;
}
