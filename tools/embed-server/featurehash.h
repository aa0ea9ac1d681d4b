/*
 * featurehash.h: the deterministic embedding function of the local embedding
 * server (feature hashing of words and character 3-grams, L2-normalised).
 * Pure C, no allocation visible to the caller, safe to call from any thread.
 */
#ifndef RAGOPS_FEATUREHASH_H
#define RAGOPS_FEATUREHASH_H

#include <stddef.h>

/*
 * Computes the embedding of text[0..len) into out[0..dim).
 *
 * - ASCII letters are lowercased; bytes >= 0x80 (UTF-8) are kept as they are;
 *   every other ASCII byte (space, punctuation, control) separates words.
 * - Features: each word (weight 1.0) and each byte 3-gram of the word padded
 *   with boundary markers '^' and '$' (weight 0.5).
 * - Each feature is hashed with XXH3_64bits_withSeed (fixed seeds, one for
 *   words and one for 3-grams); index = h % dim, sign = bit 63 of h.
 * - The result is L2-normalised. A text without features yields e_0.
 *
 * dim must be >= 1. Returns 0 on success, -1 on invalid arguments or when
 * out of memory (out is then left as e_0 if out and dim are valid).
 */
int featurehash_embed(const char *text, size_t len, float *out, size_t dim);

/*
 * Like featurehash_embed, with every component non-zero, as a real model's
 * vectors are: a deterministic dense term (from a hash of the text, about a
 * fifth of the norm, same sign as the sparse component where there is one)
 * is added before normalising, so lexical neighbours stay near each other.
 */
int featurehash_embed_dense(const char *text, size_t len, float *out, size_t dim);

/* Cosine similarity of two vectors of length dim (0 if either is zero). */
double featurehash_cosine(const float *a, const float *b, size_t dim);

#endif
