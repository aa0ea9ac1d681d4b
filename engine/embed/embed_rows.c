/*
 * embed_rows.c: the "rows" answer of the dialects that answer one array of
 * vectors, row i = input i: TEI's root array [[...],[...]], Ollama's
 * {"embeddings":[...]}, Cohere v2's {"embeddings":{"float":[...]}}, found
 * at a path of keys, with an optional integer token count at another path
 * (Ollama "prompt_eval_count", Cohere "meta.billed_units.input_tokens").
 * The body is kept while it arrives (at most embed_expected_body_max, the
 * bound the HTTP client applies too) and parsed once at the end with the
 * primitives of embed_json.c, without a tree: each row is decoded straight
 * into the batch. Validation is the one of the "data" answer: well-formed
 * JSON, the count, the dimension (kind "dimension"), finite values, the
 * token count an integer in 0..2^53-1; a missing path is named.
 */
#include "embed_json.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* First allocation of the kept body (it then doubles). */
#define ROWS_FIRST_CAPACITY ((size_t)256 * 1024)

struct ej_rows {
    int expected_count;                    /* vectors asked for */
    int expected_dim;                      /* dimension asked for, 0 = any (all equal) */
    char *rows_path[EMBED_ROWS_MAX_PATH];  /* keys to the rows (copies) */
    int rows_depth;                        /* keys in rows_path */
    char *usage_path[EMBED_ROWS_MAX_PATH]; /* keys to the token count (copies) */
    int usage_depth;                       /* keys in usage_path, 0 = no usage */
    char *body;                            /* the answer so far */
    size_t len;                            /* bytes in body */
    size_t cap;                            /* bytes allocated */
    size_t max;                            /* most bytes kept */
    int failed;                            /* feeding failed: later bytes are ignored */
    int reported;                          /* err holds the reason */
    int wrong_dim;                         /* the failure is a vector of another dimension */
    int found_rows;                        /* the rows array was read */
    ej_cursor c;                           /* the parse position (finish) */
    embed_vectors v;                       /* the result being filled */
    char err[512];                         /* pt-BR reason of the failure */
};

static int rows_fail(ej_rows *r, const char *fmt, ...)
{
    char reason[400];
    va_list ap;
    if (r->reported)
        return -1;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    r->reported = 1;
    snprintf(r->err, sizeof r->err, "resposta malformada do provedor: %s", reason);
    return -1;
}

/* The keys of a path joined by '.' (for reasons people read). */
static const char *path_name(char *const *path, int depth, char *out, size_t size)
{
    size_t o = 0;
    out[0] = '\0';
    for (int i = 0; i < depth && o < size; i++)
        o += (size_t)snprintf(out + o, size - o, "%s%s", i ? "." : "", path[i]);
    return out;
}

static int rows_fail_missing(ej_rows *r)
{
    char name[300];
    if (r->rows_depth == 0)
        return rows_fail(r, "a resposta não é uma lista de vetores");
    return rows_fail(r, "campo \"%s\" ausente ou não é lista",
                     path_name(r->rows_path, r->rows_depth, name, sizeof name));
}

/* Checks the dimension of vector index: 0, or -1 with the reason reported. */
static int check_dim(ej_rows *r, int index, int dim)
{
    if (dim == 0)
        return rows_fail(r, "vetor %d vazio", index);
    if (r->expected_dim > 0 && dim != r->expected_dim) {
        r->wrong_dim = 1;
        return rows_fail(r, "vetor %d tem dimensão %d, esperada %d", index, dim, r->expected_dim);
    }
    if (r->v.data != NULL && dim != r->v.dim)
        return rows_fail(r, "vetores com dimensões diferentes (%d e %d)", r->v.dim, dim);
    return 0;
}

/* The row of vector index once its dimension is known (the first row
 * allocates the batch), or NULL with the reason reported. */
static float *row_for(ej_rows *r, int index, int dim)
{
    if (check_dim(r, index, dim) != 0)
        return NULL;
    if (r->v.data == NULL) {
        r->v.dim = dim;
        r->v.data = malloc((size_t)r->v.count * (size_t)dim * sizeof(float));
        if (!r->v.data) {
            rows_fail(r, "sem memória para %d vetores de dimensão %d", r->v.count, dim);
            return NULL;
        }
    }
    return r->v.data + (size_t)index * (size_t)dim;
}

/* Decodes base64 text s of vector index into its row. 0 or -1. */
static int base64_fill(ej_rows *r, int index, const ej_span *s)
{
    int dim = ej_base64_dim(s->s, s->len), rc;
    float *row;
    if (dim < 0)
        return rows_fail(r, "base64 do vetor %d tem tamanho inválido (%zu caracteres)", index, s->len);
    if (!(row = row_for(r, index, dim)))
        return -1;
    rc = ej_base64_row(s->s, s->len, dim, row);
    if (rc == -1)
        return rows_fail(r, "base64 inválido no vetor %d", index);
    if (rc <= -2)
        return rows_fail(r, "valor %d do vetor %d não é finito", -2 - rc, index);
    return 0;
}

/* A row given as a base64 float32 string (the cursor is on its quote). */
static int base64_row(ej_rows *r, int index)
{
    ej_span s;
    char *plain = NULL;
    int rc;
    if (ej_read_string(&r->c, &s) != 0)
        return -1;
    if (s.escaped) {
        if (!(plain = ej_unescape_base64(&s, &s.len)))
            return rows_fail(r, "base64 inválido no vetor %d", index);
        s.s = plain;
    }
    rc = base64_fill(r, index, &s);
    free(plain);
    return rc;
}

/* A number row of a known dimension (expected_dim), read in one pass
 * straight into the batch; its dimension is checked before its values. */
static int number_row_known(ej_rows *r, int index)
{
    int dim = r->expected_dim, count, bad = 0, rc;
    float *row;
    if (r->v.data == NULL) {
        r->v.dim = dim;
        r->v.data = malloc((size_t)r->v.count * (size_t)dim * sizeof(float));
        if (!r->v.data)
            return rows_fail(r, "sem memória para %d vetores de dimensão %d", r->v.count, dim);
    }
    row = r->v.data + (size_t)index * (size_t)dim;
    if ((rc = ej_read_number_row(&r->c, row, dim, &count, &bad)) == -1)
        return -1;
    if (check_dim(r, index, count) != 0)
        return -1;
    if (rc == -2)
        return rows_fail(r, "valor %d do vetor %d não é número", bad, index);
    if (rc == -3)
        return rows_fail(r, "valor %d do vetor %d não é finito", bad, index);
    return 0;
}

/* Row index at the cursor: a number array or a base64 string. */
static int read_row(ej_rows *r, int index)
{
    ej_cursor *c = &r->c;
    ej_skip_ws(c);
    if (c->p < c->end && *c->p == '[' && r->expected_dim > 0)
        return number_row_known(r, index);
    if (c->p < c->end && *c->p == '[') {
        const char *open = c->p;
        float *row;
        int dim, bad = 0, rc;
        if (ej_count_array(c, &dim) != 0)
            return -1;
        if (!(row = row_for(r, index, dim)))
            return -1;
        rc = ej_number_row(open, c->end, dim, row, &bad);
        if (rc == -1)
            return rows_fail(r, "valor %d do vetor %d não é número", bad, index);
        if (rc == -2)
            return rows_fail(r, "valor %d do vetor %d não é finito", bad, index);
        return 0;
    }
    if (c->p < c->end && *c->p == '"')
        return base64_row(r, index);
    if (ej_skip_value(c, r->rows_depth + 1) != 0)
        return -1;
    return rows_fail(r, "vetor %d não é lista nem texto base64", index);
}

/* The rows array at the cursor: rows past expected_count are only counted. */
static int read_rows(ej_rows *r)
{
    ej_cursor *c = &r->c;
    long k = 0;
    if (r->found_rows)
        return rows_fail(r, "a lista de vetores aparece mais de uma vez");
    r->found_rows = 1;
    if (c->p >= c->end || *c->p != '[')
        return ej_skip_value(c, r->rows_depth) != 0 ? -1 : rows_fail_missing(r);
    if (!ej_enter(c, ']')) {
        for (;;) {
            if ((k < r->expected_count ? read_row(r, (int)k) : ej_skip_value(c, r->rows_depth + 1)) != 0)
                return -1;
            k++;
            ej_skip_ws(c);
            if (c->p < c->end && *c->p == ',') {
                c->p++;
                continue;
            }
            if (ej_expect(c, ']') != 0)
                return -1;
            break;
        }
    }
    if (k != r->expected_count)
        return rows_fail(r, "esperados %d vetores, recebidos %ld", r->expected_count, k);
    return 0;
}

/* The token count at the cursor. */
static int read_usage(ej_rows *r)
{
    char name[300];
    long long n;
    int rc = ej_read_count(&r->c, &n);
    if (rc == -2)
        return rows_fail(r, "\"%s\" não é um inteiro entre 0 e %lld",
                         path_name(r->usage_path, r->usage_depth, name, sizeof name), EJ_MAX_TOKENS);
    if (rc == 0) {
        r->v.has_usage = 1;
        r->v.prompt_tokens = (long)n;
    }
    return rc;
}

/* The value at the cursor, reached by the first `level` keys of the rows
 * path (on_rows) and/or of the usage path (on_usage): the rows or the count
 * when a path ends here, its next key looked up when the value is an
 * object, skipped otherwise (a path that does not fit is absent). */
static int walk(ej_rows *r, int level, int on_rows, int on_usage)
{
    ej_cursor *c = &r->c;
    ej_skip_ws(c);
    if (on_rows && level == r->rows_depth)
        return read_rows(r);
    if (on_usage && level == r->usage_depth)
        return read_usage(r);
    if (c->p >= c->end || *c->p != '{' || !(on_rows || on_usage))
        return ej_skip_value(c, level);
    if (ej_enter(c, '}'))
        return 0;
    for (;;) {
        ej_span key;
        int rows_next, usage_next;
        ej_skip_ws(c);
        if (c->p >= c->end || *c->p != '"' || ej_read_string(c, &key) != 0 || ej_expect(c, ':') != 0)
            return -1;
        rows_next = on_rows && ej_key_is(&key, r->rows_path[level]);
        usage_next = on_usage && ej_key_is(&key, r->usage_path[level]);
        if (walk(r, level + 1, rows_next, usage_next) != 0)
            return -1;
        ej_skip_ws(c);
        if (c->p < c->end && *c->p == ',') {
            c->p++;
            continue;
        }
        return ej_expect(c, '}');
    }
}

static int rows_decode(ej_rows *r)
{
    ej_cursor *c = &r->c;
    ej_skip_ws(c);
    if (c->p >= c->end)
        return rows_fail(r, "corpo vazio");
    if (r->expected_count <= 0)
        return rows_fail(r, "esperados %d vetores, recebidos 0", r->expected_count);
    if (walk(r, 0, 1, r->usage_depth > 0) != 0)
        return rows_fail(r, "JSON inválido"); /* no-op when a reason was given */
    ej_skip_ws(c);
    if (c->p != c->end)
        return rows_fail(r, "JSON inválido");
    return r->found_rows ? 0 : rows_fail_missing(r);
}

/* Copies n keys of path into out (each non-empty). 0 or -1. */
static int copy_path(char **out, const char *const *path, int n)
{
    if (n < 0 || n > EMBED_ROWS_MAX_PATH || (n > 0 && !path))
        return -1;
    for (int i = 0; i < n; i++)
        if (!path[i] || !path[i][0] || !(out[i] = strdup(path[i])))
            return -1;
    return 0;
}

ej_rows *ej_rows_new(int expected_count, int expected_dim, const embed_rows_shape *shape)
{
    ej_rows *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->expected_count = expected_count;
    r->expected_dim = expected_dim;
    r->v.count = expected_count;
    r->max = embed_expected_body_max(expected_count, expected_dim);
    r->rows_depth = shape->rows_depth;
    r->usage_depth = shape->usage_depth;
    if (copy_path(r->rows_path, shape->rows_path, shape->rows_depth) != 0 ||
        copy_path(r->usage_path, shape->usage_path, shape->usage_depth) != 0) {
        ej_rows_free(r);
        return NULL;
    }
    return r;
}

void ej_rows_free(ej_rows *r)
{
    if (!r)
        return;
    for (int i = 0; i < EMBED_ROWS_MAX_PATH; i++) {
        free(r->rows_path[i]);
        free(r->usage_path[i]);
    }
    free(r->body);
    free(r->v.data);
    free(r);
}

int ej_rows_feed(ej_rows *r, const char *bytes, size_t n)
{
    if (r->failed)
        return -1;
    if (n > r->max - r->len) {
        r->failed = 1;
        return rows_fail(r, "resposta maior que %zu bytes", r->max);
    }
    if (r->len + n + 1 > r->cap) {
        size_t cap = r->cap ? r->cap : ROWS_FIRST_CAPACITY;
        char *grown;
        while (cap < r->len + n + 1)
            cap *= 2;
        if (!(grown = realloc(r->body, cap))) {
            r->failed = 1;
            return rows_fail(r, "sem memória para a resposta (%zu bytes)", r->len + n);
        }
        r->body = grown;
        r->cap = cap;
    }
    memcpy(r->body + r->len, bytes, n);
    r->len += n;
    return 0;
}

int ej_rows_finish(ej_rows *r, embed_vectors *out, char *err, size_t err_size)
{
    int rc = -1;
    memset(out, 0, sizeof *out);
    if (!r->failed) {
        const char *body = r->body ? r->body : "";
        r->c = (ej_cursor){body, body, body + r->len};
        rc = rows_decode(r);
    }
    free(r->body); /* the answer is decoded: its bytes are not needed any more */
    r->body = NULL;
    r->len = r->cap = 0;
    r->failed = 1;
    if (rc == 0) {
        *out = r->v;
        r->v.data = NULL;
    } else if (err && err_size) {
        snprintf(err, err_size, "%s", r->err);
    }
    return rc;
}

embed_kind ej_rows_failure_kind(const ej_rows *r)
{
    return r->wrong_dim ? EMBED_KIND_DIMENSION : EMBED_KIND_MALFORMED;
}
