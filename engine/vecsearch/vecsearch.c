/*
 * vecsearch.c: exact top-k cosine search for `ragops validate` when the
 * embeddings are stored as real[] (no pgvector, so no `<=>` operator). The
 * stored vectors stream through once (keyset pages of `embedding::text`); C
 * parses each text and updates every query's bounded heap, so 33k x 1536
 * numbers never become Lua values. Pure C; the Lua module is vecsearch_lua.c.
 */
#include "vecsearch.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VECSEARCH_MAX_TOKEN 64

int rg_vecsearch_init(rg_vecsearch *s, const float *queries, int nqueries, int dim, int k)
{
    memset(s, 0, sizeof *s);
    if (nqueries <= 0 || dim <= 0 || k <= 0 || k > RG_VECSEARCH_MAX_K || queries == NULL)
        return -1;
    s->nqueries = nqueries;
    s->dim = dim;
    s->k = k;
    s->queries = malloc((size_t)nqueries * (size_t)dim * sizeof(float));
    s->heaps = malloc((size_t)nqueries * (size_t)k * sizeof(rg_vecsearch_hit));
    s->sizes = calloc((size_t)nqueries, sizeof(int));
    s->scratch = malloc((size_t)dim * sizeof(float));
    if (!s->queries || !s->heaps || !s->sizes || !s->scratch)
        goto fail;
    for (int q = 0; q < nqueries; q++) {
        const float *src = queries + (size_t)q * dim;
        float *dst = s->queries + (size_t)q * dim;
        double norm = 0;
        for (int j = 0; j < dim; j++)
            norm += (double)src[j] * src[j];
        norm = sqrt(norm);
        for (int j = 0; j < dim; j++)
            dst[j] = norm > 0 ? (float)(src[j] / norm) : 0.0f;
    }
    return 0;
fail:
    rg_vecsearch_free(s);
    return -1;
}

void rg_vecsearch_free(rg_vecsearch *s)
{
    free(s->queries);
    free(s->heaps);
    free(s->sizes);
    free(s->scratch);
    s->queries = NULL;
    s->heaps = NULL;
    s->sizes = NULL;
    s->scratch = NULL;
    s->nqueries = 0;
}

/* True when a ranks below b: lower score, or same score and larger label. */
static int hit_worse(const rg_vecsearch_hit *a, const rg_vecsearch_hit *b)
{
    return a->score < b->score || (a->score == b->score && a->label > b->label);
}

static void hit_swap(rg_vecsearch_hit *a, rg_vecsearch_hit *b)
{
    rg_vecsearch_hit t = *a;
    *a = *b;
    *b = t;
}

/* Offers hit to a min-heap (root = worst kept hit) of capacity k. */
static void heap_offer(rg_vecsearch_hit *heap, int *size, int k, rg_vecsearch_hit hit)
{
    int i;
    if (*size < k) {
        i = (*size)++;
        heap[i] = hit;
        while (i > 0) {
            int parent = (i - 1) / 2;
            if (!hit_worse(&heap[i], &heap[parent]))
                break;
            hit_swap(&heap[i], &heap[parent]);
            i = parent;
        }
        return;
    }
    if (!hit_worse(&heap[0], &hit))
        return;
    heap[0] = hit;
    i = 0;
    for (;;) {
        int left = 2 * i + 1, right = left + 1, worst = i;
        if (left < k && hit_worse(&heap[left], &heap[worst]))
            worst = left;
        if (right < k && hit_worse(&heap[right], &heap[worst]))
            worst = right;
        if (worst == i)
            break;
        hit_swap(&heap[i], &heap[worst]);
        i = worst;
    }
}

void rg_vecsearch_add_vector(rg_vecsearch *s, long label, const float *v)
{
    double norm = 0;
    for (int j = 0; j < s->dim; j++)
        norm += (double)v[j] * v[j];
    norm = sqrt(norm);
    for (int q = 0; q < s->nqueries; q++) {
        const float *query = s->queries + (size_t)q * s->dim;
        double dot = 0;
        for (int j = 0; j < s->dim; j++)
            dot += (double)query[j] * v[j];
        rg_vecsearch_hit hit = {norm > 0 ? dot / norm : 0.0, label};
        heap_offer(s->heaps + (size_t)q * s->k, &s->sizes[q], s->k, hit);
    }
    s->rows++;
}

int rg_parse_real_array(const char *text, size_t len, float *out, int dim, char *err, size_t err_size)
{
    const char *p = text, *end = text + len;
    char token[VECSEARCH_MAX_TOKEN];
    int n = 0;

    while (p < end && (*p == ' ' || *p == '\n' || *p == '\t'))
        p++;
    if (p >= end || *p != '{') {
        snprintf(err, err_size, "embedding não é um array real[] (esperado '{' no início)");
        return -1;
    }
    p++;
    if (p < end && *p == '}') {
        p++;
    } else {
        for (;;) {
            const char *start = p;
            while (p < end && *p != ',' && *p != '}')
                p++;
            size_t token_len = (size_t)(p - start);
            while (token_len > 0 && start[0] == ' ') {
                start++;
                token_len--;
            }
            while (token_len > 0 && start[token_len - 1] == ' ')
                token_len--;
            if (p >= end) {
                snprintf(err, err_size, "embedding truncado: falta '}' no fim do array");
                return -1;
            }
            if (token_len == 0 || token_len >= sizeof token) {
                snprintf(err, err_size, "embedding com elemento %d vazio ou longo demais", n + 1);
                return -1;
            }
            memcpy(token, start, token_len);
            token[token_len] = '\0';
            if (strcmp(token, "NULL") == 0) {
                snprintf(err, err_size, "embedding com elemento %d NULL", n + 1);
                return -1;
            }
            char *parsed_end = NULL;
            float value = strtof(token, &parsed_end);
            if (parsed_end != token + token_len || !isfinite(value)) {
                snprintf(err, err_size, "embedding com elemento %d inválido: \"%s\"", n + 1, token);
                return -1;
            }
            if (n >= dim) {
                snprintf(err, err_size, "embedding com mais de %d valores (dimensão configurada)", dim);
                return -1;
            }
            out[n++] = value;
            if (*p++ == '}')
                break;
        }
    }
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\t'))
        p++;
    if (p != end) {
        snprintf(err, err_size, "embedding com texto depois do fim do array");
        return -1;
    }
    if (n != dim) {
        snprintf(err, err_size, "embedding com %d valores; esperado %d (dimensão das consultas)", n, dim);
        return -1;
    }
    return n;
}

int rg_vecsearch_add_text(rg_vecsearch *s, long label, const char *text, size_t len, char *err,
                          size_t err_size)
{
    if (rg_parse_real_array(text, len, s->scratch, s->dim, err, err_size) < 0)
        return -1;
    rg_vecsearch_add_vector(s, label, s->scratch);
    return 0;
}

/* qsort order: best first. */
static int hit_compare_best_first(const void *a, const void *b)
{
    const rg_vecsearch_hit *x = a, *y = b;
    if (hit_worse(y, x))
        return -1;
    if (hit_worse(x, y))
        return 1;
    return 0;
}

int rg_vecsearch_results(const rg_vecsearch *s, int q, rg_vecsearch_hit *out)
{
    if (q < 0 || q >= s->nqueries)
        return 0;
    int n = s->sizes[q];
    memcpy(out, s->heaps + (size_t)q * s->k, (size_t)n * sizeof *out);
    qsort(out, (size_t)n, sizeof *out, hit_compare_best_first);
    return n;
}
