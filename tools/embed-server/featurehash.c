/*
 * featurehash.c: feature-hashing embedding (words + padded character
 * 3-grams, signed hashing with XXH3, L2 normalisation). See featurehash.h.
 */
#include "featurehash.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define FEATUREHASH_SEED_WORD 0x7261676f70735731ULL  /* "ragopsW1" */
#define FEATUREHASH_SEED_GRAM 0x7261676f70734731ULL  /* "ragopsG1" */
#define FEATUREHASH_WEIGHT_WORD 1.0f
#define FEATUREHASH_WEIGHT_GRAM 0.5f
#define FEATUREHASH_SEED_DENSE 0x7261676f70734431ULL /* "ragopsD1" */
#define FEATUREHASH_DENSE_SHARE 0.2                  /* norm of the dense term */
#define FEATUREHASH_STACK_TEXT 4096

/* True for bytes that belong to a word: ASCII alphanumerics and UTF-8 bytes. */
static int featurehash_is_word_byte(unsigned char byte)
{
    return byte >= 0x80 || (byte >= '0' && byte <= '9') ||
           (byte >= 'a' && byte <= 'z') || (byte >= 'A' && byte <= 'Z');
}

/* Adds weight * sign(h) at index h % dim. */
static void featurehash_add(float *out, size_t dim, uint64_t hash, float weight)
{
    size_t index = (size_t)(hash % (uint64_t)dim);
    out[index] += (hash >> 63) ? -weight : weight;
}

/* Adds the word feature and the padded 3-gram features of one word. */
static void featurehash_add_word(float *out, size_t dim, const unsigned char *word, size_t len)
{
    featurehash_add(out, dim, XXH3_64bits_withSeed(word, len, FEATUREHASH_SEED_WORD),
                    FEATUREHASH_WEIGHT_WORD);
    /* Padded word is "^" + word + "$": len + 2 bytes, len 3-grams. */
    for (size_t start = 0; start < len; start++) {
        unsigned char gram[3];
        for (size_t k = 0; k < 3; k++) {
            size_t padded_pos = start + k; /* position in the padded word */
            if (padded_pos == 0)
                gram[k] = '^';
            else if (padded_pos == len + 1)
                gram[k] = '$';
            else
                gram[k] = word[padded_pos - 1];
        }
        featurehash_add(out, dim, XXH3_64bits_withSeed(gram, 3, FEATUREHASH_SEED_GRAM),
                        FEATUREHASH_WEIGHT_GRAM);
    }
}

/* Scales out to unit L2 norm; the zero vector becomes e_0. */
static void featurehash_normalise(float *out, size_t dim)
{
    double sum_sq = 0.0;
    for (size_t i = 0; i < dim; i++)
        sum_sq += (double)out[i] * (double)out[i];
    if (sum_sq == 0.0) {
        out[0] = 1.0f;
        return;
    }
    double inv_norm = 1.0 / sqrt(sum_sq);
    for (size_t i = 0; i < dim; i++)
        out[i] = (float)((double)out[i] * inv_norm);
}

/* splitmix64: the next value of the dense term's deterministic sequence. */
static uint64_t featurehash_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

int featurehash_embed_dense(const char *text, size_t len, float *out, size_t dim)
{
    if (featurehash_embed(text, len, out, dim) != 0)
        return -1;
    uint64_t state = XXH3_64bits_withSeed(text, len, FEATUREHASH_SEED_DENSE);
    float scale = (float)(FEATUREHASH_DENSE_SHARE / sqrt((double)dim));
    /* Branch-free: the sign of a random bit, or of the sparse part where it
     * is non-zero (a branch per component was most of the embed-server's
     * CPU in the benchmark). */
    for (size_t i = 0; i < dim; i++) {
        uint64_t r = featurehash_next(&state);
        /* Magnitude in [0.5, 1) x scale: never zero, never cancelling the sparse part. */
        float magnitude = (0.5f + (float)(uint32_t)(r >> 40) * 0x1p-25f) * scale; /* 24 bits / 2^25 */
        uint32_t sparse_bits, magnitude_bits;
        memcpy(&sparse_bits, &out[i], sizeof sparse_bits);
        memcpy(&magnitude_bits, &magnitude, sizeof magnitude_bits);
        uint32_t random_sign = (uint32_t)(r & 1) << 31;
        uint32_t sign = (sparse_bits & 0x7fffffffu) ? (sparse_bits & 0x80000000u) : random_sign;
        magnitude_bits |= sign;
        memcpy(&magnitude, &magnitude_bits, sizeof magnitude);
        out[i] += magnitude;
    }
    featurehash_normalise(out, dim);
    return 0;
}

int featurehash_embed(const char *text, size_t len, float *out, size_t dim)
{
    unsigned char stack_lower[FEATUREHASH_STACK_TEXT];
    unsigned char *lower = stack_lower;
    int rc = -1;

    if (out == NULL || dim == 0)
        return -1;
    memset(out, 0, dim * sizeof(float));
    if (text == NULL && len > 0)
        goto fail;
    if (len > sizeof(stack_lower)) {
        lower = malloc(len);
        if (lower == NULL)
            goto fail;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char byte = (unsigned char)text[i];
        lower[i] = (byte >= 'A' && byte <= 'Z') ? (unsigned char)(byte + 32) : byte;
    }

    size_t pos = 0;
    while (pos < len) {
        while (pos < len && !featurehash_is_word_byte(lower[pos]))
            pos++;
        size_t word_start = pos;
        while (pos < len && featurehash_is_word_byte(lower[pos]))
            pos++;
        if (pos > word_start)
            featurehash_add_word(out, dim, lower + word_start, pos - word_start);
    }

    featurehash_normalise(out, dim);
    rc = 0;

fail:
    if (rc != 0) {
        memset(out, 0, dim * sizeof(float));
        out[0] = 1.0f;
    }
    if (lower != stack_lower)
        free(lower);
    return rc;
}

double featurehash_cosine(const float *a, const float *b, size_t dim)
{
    double dot = 0.0, norm_a = 0.0, norm_b = 0.0;
    for (size_t i = 0; i < dim; i++) {
        dot += (double)a[i] * (double)b[i];
        norm_a += (double)a[i] * (double)a[i];
        norm_b += (double)b[i] * (double)b[i];
    }
    if (norm_a == 0.0 || norm_b == 0.0)
        return 0.0;
    return dot / (sqrt(norm_a) * sqrt(norm_b));
}
