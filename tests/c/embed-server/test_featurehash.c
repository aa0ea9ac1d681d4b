/*
 * test_featurehash.c: unit tests of the feature-hashing embedding
 * (determinism, unit norm, lexical similarity, dimensions, empty text).
 */
#include "embed-server/featurehash.h"
#include "test_assert.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define DIM 1536

static double norm_of(const float *vec, size_t dim)
{
    double sum = 0.0;
    for (size_t i = 0; i < dim; i++)
        sum += (double)vec[i] * vec[i];
    return sqrt(sum);
}

static double cosine_of(const char *a, const char *b, size_t dim)
{
    float *va = malloc(dim * sizeof(float));
    float *vb = malloc(dim * sizeof(float));
    ASSERT(va && vb);
    ASSERT_INT_EQ(featurehash_embed(a, strlen(a), va, dim), 0);
    ASSERT_INT_EQ(featurehash_embed(b, strlen(b), vb, dim), 0);
    double cos = featurehash_cosine(va, vb, dim);
    free(va);
    free(vb);
    return cos;
}

static void test_determinism(void)
{
    static float a[DIM], b[DIM];
    const char *text = "No princípio criou Deus os céus e a terra.";
    ASSERT_INT_EQ(featurehash_embed(text, strlen(text), a, DIM), 0);
    ASSERT_INT_EQ(featurehash_embed(text, strlen(text), b, DIM), 0);
    ASSERT(memcmp(a, b, sizeof a) == 0);
    /* A fixed seed: a known text has a known non-trivial vector. */
    int nonzero = 0;
    for (int i = 0; i < DIM; i++)
        nonzero += a[i] != 0.0f;
    ASSERT(nonzero > 10);
    /* Signed hashing: both signs occur. */
    int positive = 0, negative = 0;
    for (int i = 0; i < DIM; i++) {
        positive += a[i] > 0.0f;
        negative += a[i] < 0.0f;
    }
    ASSERT(positive > 0 && negative > 0);
}

static void test_unit_norm(void)
{
    static float vec[DIM];
    const char *texts[] = {"a", "hello world", "In the beginning God created the heaven and the earth.",
                           "Quem tem boca vai a Roma; quem não tem, vai de carona.", "x y z 1 2 3 !!!"};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        ASSERT_INT_EQ(featurehash_embed(texts[i], strlen(texts[i]), vec, DIM), 0);
        ASSERT_NEAR(norm_of(vec, DIM), 1.0, 1e-5);
    }
}

static void test_case_and_punctuation(void)
{
    /* Lowercasing and separators: these three texts have the same features. */
    ASSERT_NEAR(cosine_of("Hello, World!", "hello world", DIM), 1.0, 1e-6);
    ASSERT_NEAR(cosine_of("HELLO...world", "hello world", DIM), 1.0, 1e-6);
    /* UTF-8 bytes are word bytes, not separators: "são" != "s o". */
    ASSERT(cosine_of("são", "s o", DIM) < 0.5);
}

static void test_similarity(void)
{
    const char *base = "And God said, Let there be light: and there was light.";
    const char *near = "And God said: let there be light, and there was light everywhere.";
    const char *far = "Quem com ferro fere, com ferro será ferido.";
    double similar = cosine_of(base, near, DIM);
    double unrelated = cosine_of(base, far, DIM);
    ASSERT(similar > 0.8);
    ASSERT(fabs(unrelated) < 0.2);
    ASSERT(similar > unrelated + 0.5);
    /* Morphological neighbours share 3-grams. */
    ASSERT(cosine_of("criação", "criações", DIM) > cosine_of("criação", "montanha", DIM) + 0.3);
}

static void test_dimensions(void)
{
    static float small[8], one[1], big[4096];
    const char *text = "feature hashing with a few words";
    ASSERT_INT_EQ(featurehash_embed(text, strlen(text), small, 8), 0);
    ASSERT_NEAR(norm_of(small, 8), 1.0, 1e-5);
    ASSERT_INT_EQ(featurehash_embed(text, strlen(text), big, 4096), 0);
    ASSERT_NEAR(norm_of(big, 4096), 1.0, 1e-5);
    ASSERT_INT_EQ(featurehash_embed(text, strlen(text), one, 1), 0);
    ASSERT_NEAR(fabs(one[0]), 1.0, 1e-6);
    ASSERT_INT_EQ(featurehash_embed(text, strlen(text), small, 0), -1);
    ASSERT_INT_EQ(featurehash_embed(text, strlen(text), NULL, 8), -1);
}

static void test_empty_text(void)
{
    static float vec[DIM];
    const char *only_separators = "  ,;.!?  ";
    ASSERT_INT_EQ(featurehash_embed("", 0, vec, DIM), 0);
    ASSERT(vec[0] == 1.0f);
    ASSERT_NEAR(norm_of(vec, DIM), 1.0, 1e-7);
    ASSERT_INT_EQ(featurehash_embed(only_separators, strlen(only_separators), vec, DIM), 0);
    ASSERT(vec[0] == 1.0f);
    ASSERT_NEAR(norm_of(vec, DIM), 1.0, 1e-7);
    ASSERT_INT_EQ(featurehash_embed(NULL, 0, vec, DIM), 0);
    ASSERT(vec[0] == 1.0f);
}

static void test_long_text(void)
{
    /* Longer than the internal stack buffer: takes the heap path. */
    size_t len = 20000;
    char *text = malloc(len);
    ASSERT(text != NULL);
    for (size_t i = 0; i < len; i++)
        text[i] = (i % 7 == 6) ? ' ' : (char)('a' + (i * 13) % 26);
    static float vec[DIM];
    ASSERT_INT_EQ(featurehash_embed(text, len, vec, DIM), 0);
    ASSERT_NEAR(norm_of(vec, DIM), 1.0, 1e-5);
    free(text);
}

/* Zero components of the vector of text (dense or not). */
static int zeros_of(const char *text, int dense, float *vec)
{
    int zeros = 0;
    if (dense)
        ASSERT_INT_EQ(featurehash_embed_dense(text, strlen(text), vec, DIM), 0);
    else
        ASSERT_INT_EQ(featurehash_embed(text, strlen(text), vec, DIM), 0);
    for (size_t i = 0; i < DIM; i++)
        zeros += vec[i] == 0.0f;
    return zeros;
}

/* --dense: every component non-zero, unit norm, deterministic, and lexical
 * neighbours still nearer than unrelated texts. */
static void test_dense(void)
{
    static float a[DIM], b[DIM], c[DIM], sparse[DIM];
    const char *base = "And God said, Let there be light: and there was light.";
    const char *near = "And God said: let there be light, and there was light everywhere.";
    const char *far = "Quem com ferro fere, com ferro será ferido.";
    ASSERT(zeros_of(base, 0, sparse) > DIM / 2);
    ASSERT_INT_EQ(zeros_of(base, 1, a), 0);
    ASSERT_INT_EQ(zeros_of("", 1, c), 0);
    ASSERT_NEAR(norm_of(a, DIM), 1.0, 1e-5);
    ASSERT_INT_EQ(zeros_of(base, 1, b), 0);
    ASSERT(memcmp(a, b, sizeof a) == 0);
    ASSERT(featurehash_cosine(a, sparse, DIM) > 0.95);
    /* the dense term never flips a sparse component, and both signs occur elsewhere */
    int positive = 0, negative = 0;
    for (size_t i = 0; i < DIM; i++) {
        if (sparse[i] != 0.0f)
            ASSERT((a[i] < 0.0f) == (sparse[i] < 0.0f));
        else
            a[i] < 0.0f ? negative++ : positive++;
    }
    ASSERT(positive > DIM / 8 && negative > DIM / 8);
    ASSERT_INT_EQ(zeros_of(near, 1, b), 0);
    ASSERT_INT_EQ(zeros_of(far, 1, c), 0);
    ASSERT(featurehash_cosine(a, b, DIM) > featurehash_cosine(a, c, DIM) + 0.5);
}

int main(void)
{
    test_determinism();
    test_unit_norm();
    test_case_and_punctuation();
    test_similarity();
    test_dimensions();
    test_empty_text();
    test_long_text();
    test_dense();
    return 0;
}
