/*
 * utf8.h: the one UTF-8 validity rule of the engine (what PostgreSQL and
 * JSON encoders accept: RFC 3629, no overlong forms, no surrogates, nothing
 * past U+10FFFF), shared by core.utf8_check and the embedding request.
 */
#ifndef RAGOPS_UTF8_H
#define RAGOPS_UTF8_H

#include <stddef.h>

/* Length of the valid UTF-8 sequence at s (at most left >= 1 bytes): 1 for
 * an ASCII byte (NUL included), 2..4 for a valid multi-byte sequence, 0
 * when the bytes at s are not valid UTF-8. */
size_t rg_utf8_sequence(const unsigned char *s, size_t left);

#endif
