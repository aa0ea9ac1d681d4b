/*
 * vecsearch.h: exact (brute-force) top-k cosine search of a few query vectors
 * over a stream of stored embeddings, for `ragops validate` on real[] storage
 * (no pgvector index to ask). Pure C; the Lua module ragops.vecsearch in
 * vecsearch_lua.c wraps it.
 */
#ifndef RAGOPS_VECSEARCH_H
#define RAGOPS_VECSEARCH_H

#include <stddef.h>

#define RG_VECSEARCH_MAX_K 1000

/* One candidate in a query's top-k. */
typedef struct rg_vecsearch_hit {
    double score; /* cosine similarity with the query, in [-1, 1] */
    long label;   /* caller's identifier of the stored row */
} rg_vecsearch_hit;

/* The search state: queries and one bounded min-heap per query. */
typedef struct rg_vecsearch {
    int nqueries;          /* number of query vectors */
    int dim;               /* floats per vector */
    int k;                 /* hits kept per query */
    long rows;             /* stored vectors scored so far */
    float *queries;        /* nqueries * dim floats, each row unit-normalised (or zero) */
    rg_vecsearch_hit *heaps; /* nqueries * k slots; heap q starts at q * k */
    int *sizes;            /* filled slots of each heap */
    float *scratch;        /* dim floats: the row being parsed */
} rg_vecsearch;

/* Copies and normalises nqueries vectors of dim floats. Returns 0, or -1 when
 * the sizes are invalid or memory is short (s is then left freeable). */
int rg_vecsearch_init(rg_vecsearch *s, const float *queries, int nqueries, int dim, int k);

/* Releases the memory of s (safe on a zeroed or already freed s). */
void rg_vecsearch_free(rg_vecsearch *s);

/* Scores vector v (dim floats) against every query and keeps it where it
 * ranks in the top k. Ties keep the smaller label. */
void rg_vecsearch_add_vector(rg_vecsearch *s, long label, const float *v);

/* Parses a PostgreSQL real[] text ("{0.1,-2e-05,...}") of exactly s->dim
 * values and adds it. Returns 0, or -1 with a pt-BR message in err. */
int rg_vecsearch_add_text(rg_vecsearch *s, long label, const char *text, size_t len, char *err,
                          size_t err_size);

/* Writes query q's hits into out (room for s->k), best first; returns their
 * number. */
int rg_vecsearch_results(const rg_vecsearch *s, int q, rg_vecsearch_hit *out);

/* Parses a real[] text into out (room for dim floats). Returns the number of
 * values (== dim), or -1 with a pt-BR message in err. Expects the C numeric
 * locale (the engine never calls setlocale). */
int rg_parse_real_array(const char *text, size_t len, float *out, int dim, char *err, size_t err_size);

#endif
