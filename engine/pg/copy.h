/*
 * copy.h: encoder for PostgreSQL's binary COPY format (PGCOPY), the hot path
 * that carries embedding vectors from C float arrays to the staging table
 * (or straight into the target) without turning them into text or Lua values.
 *
 * Usage: copy_buf_init, copy_begin, then per row copy_tuple_begin(n) and n
 * copy_field_* calls, then copy_end; send data/len with COPY ... FROM STDIN
 * (FORMAT binary); copy_buf_reset for the next stream, copy_buf_free at the end. Every function returns 0, or -1 when memory
 * is short or a length does not fit the format; a failure is sticky (later
 * calls return -1 too), so checking the result of copy_end is enough.
 */
#ifndef RAGOPS_COPY_H
#define RAGOPS_COPY_H

#include <stddef.h>
#include <stdint.h>

/* Element type OID of real[] (float4). */
#define COPY_FLOAT4_OID 700
/* Largest dimension pgvector's vector and halfvec accept (VECTOR_MAX_DIM,
 * HALFVEC_MAX_DIM). */
#define COPY_VECTOR_MAX_DIM 16000

/* A growable byte buffer holding one binary COPY stream. */
typedef struct copy_buf {
    char *data;  /* bytes written so far (owned) */
    size_t len;  /* bytes used */
    size_t cap;  /* bytes allocated */
    int failed;  /* 1 after any failure: every later call returns -1 */
} copy_buf;

void copy_buf_init(copy_buf *b);
void copy_buf_free(copy_buf *b);
/* Empties b for the next stream, keeping its memory (up to
 * COPY_BUF_KEEP_MAX bytes; a larger buffer is freed): a unit's stream is
 * ~400 KB, and growing it from nothing each time cost a chain of reallocs
 * and page faults. */
void copy_buf_reset(copy_buf *b);
/* Makes room for extra more bytes in one step (a size hint). 0 or -1. */
int copy_buf_reserve(copy_buf *b, size_t extra);

/* Capacity copy_buf_reset keeps between streams. */
#define COPY_BUF_KEEP_MAX ((size_t)4 << 20)

/* Header: signature "PGCOPY\n\377\r\n\0", int32 flags 0, int32 extension 0. */
int copy_begin(copy_buf *b);
/* Trailer: int16 -1. */
int copy_end(copy_buf *b);

/* Starts a tuple with nfields fields (int16). */
int copy_tuple_begin(copy_buf *b, int nfields);

/* SQL NULL (length -1). */
int copy_field_null(copy_buf *b);
/* Raw field bytes: int32 length + bytes. */
int copy_field_bytes(copy_buf *b, const void *bytes, size_t len);
/* text/varchar/jsonb-as-text field from a NUL-terminated string; NULL -> SQL NULL. */
int copy_field_text(copy_buf *b, const char *s);
/* text field of len bytes (may contain anything but NUL for text columns). */
int copy_field_text_len(copy_buf *b, const char *s, size_t len);
/* int4 field (big-endian). */
int copy_field_int4(copy_buf *b, int32_t v);
/* int8 field (big-endian). */
int copy_field_int8(copy_buf *b, int64_t v);
/* jsonb field (jsonb_recv): version byte 1, then the JSON text of len bytes;
 * NULL -> SQL NULL. */
int copy_field_jsonb(copy_buf *b, const char *json, size_t len);
/* timestamptz field (timestamptz_recv): int64 microseconds since
 * 2000-01-01 00:00:00 UTC, from microseconds since the Unix epoch. */
int copy_field_timestamptz(copy_buf *b, int64_t unix_us);
/* real[] field: one-dimensional, no NULLs, lower bound 1, n float4 elements
 * (n == 0 encodes the empty array '{}'). */
int copy_field_float4_array(copy_buf *b, const float *values, int n);
/* pgvector `vector` field (vector_recv): int16 dim, int16 0, dim float4
 * big-endian; 1 <= n <= 16000. */
int copy_field_vector(copy_buf *b, const float *values, int n);
/* pgvector `halfvec` field (halfvec_recv): int16 dim, int16 0, dim IEEE
 * half-precision big-endian, each float rounded to nearest even as pgvector's
 * own text input does; 1 <= n <= 16000. */
int copy_field_halfvec(copy_buf *b, const float *values, int n);

/* The IEEE 754 half-precision bits of f, rounded to nearest even (overflow
 * gives infinity, which the server rejects). */
uint16_t copy_float_to_half(float f);

#endif
