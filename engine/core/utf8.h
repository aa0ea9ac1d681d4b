/*
 * utf8.h: the one UTF-8 validity rule of the engine (what PostgreSQL and
 * JSON encoders accept: RFC 3629, no overlong forms, no surrogates, nothing
 * past U+10FFFF), shared by core.utf8_check and the embedding request.
 */
#ifndef RAGOPS_UTF8_H
#define RAGOPS_UTF8_H

#include <stddef.h>

/* Length of the valid multi-byte UTF-8 sequence at s (s[0] >= 0x80, at most
 * left >= 1 bytes): 2..4, or 0 when the bytes at s are not valid UTF-8. */
size_t rg_utf8_multibyte(const unsigned char *s, size_t left);

/* Length of the valid UTF-8 sequence at s (at most left >= 1 bytes): 1 for
 * an ASCII byte (NUL included), 2..4 for a valid multi-byte sequence, 0
 * when the bytes at s are not valid UTF-8. Inline: callers in other files
 * walk texts byte by byte, and a call per ASCII byte cost ~1.5% of a cold
 * backfill's instructions (docs/desempenho.md). */
static inline size_t rg_utf8_sequence(const unsigned char *s, size_t left)
{
    return s[0] < 0x80 ? 1 : rg_utf8_multibyte(s, left);
}

/* Bytes at the start of s (len bytes) that are ASCII and not NUL, read 8 at
 * a time: what a validity check may skip without looking byte by byte. */
size_t rg_utf8_plain_prefix(const unsigned char *s, size_t len);

#endif
