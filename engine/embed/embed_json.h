/*
 * embed_json.h: internal to engine/embed (not the module's API, see
 * embed.h): the JSON primitives shared by the answer decoders, embed_decode.c
 * (OpenAI "data" items, streamed) and embed_rows.c (an array of rows at a
 * path). No tree is built: a cursor walks the bytes, strings are spans of the
 * body, numbers are read where they stand and vectors are written straight
 * into their row of the batch (base64 float32 or number arrays). Every
 * function returns 0 on success and a negative value on a syntax error.
 */
#ifndef RAGOPS_EMBED_JSON_H
#define RAGOPS_EMBED_JSON_H

#include "embed.h"

#include <stddef.h>

/* Deepest nesting skipped. */
#define EJ_MAX_DEPTH 64
/* Largest token count accepted: exact in a double (Lua numbers). */
#define EJ_MAX_TOKENS 9007199254740991LL

/* A read position in the body. */
typedef struct ej_cursor {
    const char *start; /* first byte of the body (for error positions) */
    const char *p;     /* next byte to read */
    const char *end;   /* one past the last byte */
} ej_cursor;

/* A JSON string seen in the body, without its quotes. */
typedef struct ej_span {
    const char *s; /* first byte after the opening quote */
    size_t len;    /* bytes up to the closing quote */
    int escaped;   /* contains backslash escapes */
} ej_span;

static inline void ej_skip_ws(ej_cursor *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\n' || *c->p == '\r' || *c->p == '\t'))
        c->p++;
}

/* Consumes byte ch after white space; 0 or -1. */
static inline int ej_expect(ej_cursor *c, char ch)
{
    ej_skip_ws(c);
    if (c->p >= c->end || *c->p != ch)
        return -1;
    c->p++;
    return 0;
}

/* Steps into the array or object at the cursor; 1 when it is empty (and
 * already closed), 0 otherwise. */
static inline int ej_enter(ej_cursor *c, char close)
{
    c->p++;
    ej_skip_ws(c);
    if (c->p < c->end && *c->p == close) {
        c->p++;
        return 1;
    }
    return 0;
}

/* The cursor is on the first byte of a number. */
static inline int ej_at_number(const ej_cursor *c)
{
    return c->p < c->end && (*c->p == '-' || (*c->p >= '0' && *c->p <= '9'));
}

/* key is exactly name (a key with escapes never matches). */
int ej_key_is(const ej_span *key, const char *name);

/* Reads a string at the cursor (which is on the quote). 0 or -1. */
int ej_read_string(ej_cursor *c, ej_span *out);

/* Reads a JSON number; *integral = no fraction or exponent. 0 or -1. */
int ej_read_number(ej_cursor *c, double *value, long long *integer, int *integral);

/* Skips any value at the cursor (nesting bounded by EJ_MAX_DEPTH). */
int ej_skip_value(ej_cursor *c, int depth);

/* Counts the elements of the array at the cursor (on '[') and skips it. */
int ej_count_array(ej_cursor *c, int *count);

/* Reads a token count at the cursor: 0 and *n, -1 on a syntax error, -2
 * when the value is not an integer in 0..EJ_MAX_TOKENS (it is skipped). */
int ej_read_count(ej_cursor *c, long long *n);

/* Decodes dim numbers of the array whose '[' is at open (the array was
 * checked by ej_count_array) into row. 0, or -1 when value *bad is not a
 * number, -2 when value *bad is not finite as a float. */
int ej_number_row(const char *open, const char *end, int dim, float *row, int *bad);

/* Reads the array at the cursor (on '[') in one pass, its first dim
 * values into row (room for dim floats); *count receives its number of
 * elements (those past dim are checked as JSON and counted only). 0, -1 on
 * a syntax error, -2 when value *bad is not a number, -3 when it is not
 * finite as a float (the array is consumed and counted all the same). */
int ej_read_number_row(ej_cursor *c, float *row, int dim, int *count, int *bad);

/* Number of floats a base64 text of len characters holds, or -1. */
int ej_base64_dim(const char *s, size_t len);

/* Decodes dim little-endian float32 from base64 s straight into row.
 * Returns 0, -1 (bad base64), or -2 - j when value j is not finite. */
int ej_base64_row(const char *s, size_t len, int dim, float *row);

/* The base64 text of an escaped JSON string (only "\/", "\\" and "\""
 * are expected there): malloc'd, its length in *len; NULL otherwise. */
char *ej_unescape_base64(const ej_span *s, size_t *len);

/* ---- the "rows" answer (embed_rows.c), driven by embed_stream -------- */

typedef struct ej_rows ej_rows;
/* NULL when memory is short; the shape's strings are copied. */
ej_rows *ej_rows_new(int expected_count, int expected_dim, const embed_rows_shape *shape);
int ej_rows_feed(ej_rows *r, const char *bytes, size_t n);
int ej_rows_finish(ej_rows *r, embed_vectors *out, char *err, size_t err_size);
embed_kind ej_rows_failure_kind(const ej_rows *r);
void ej_rows_free(ej_rows *r);

#endif
