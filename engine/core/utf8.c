/*
 * utf8.c: the engine's UTF-8 validity rule (see utf8.h).
 */
#include "utf8.h"

#include <stdint.h>
#include <string.h>

size_t rg_utf8_multibyte(const unsigned char *s, size_t left)
{
    unsigned char c = s[0];
    size_t n;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (left < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n;
}

/* A word holds a NUL or a byte >= 0x80 exactly when some byte of
 * (w - 0x01..01) | w has its high bit set: a NUL borrows into 0xFF, a high
 * byte keeps its bit, and 0x01..0x7F minus 1 stays below 0x80 (a borrow
 * only comes from a lower byte that was NUL, already seen). */
#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

size_t rg_utf8_plain_prefix(const unsigned char *s, size_t len)
{
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, sizeof w);
        if (((w - ONES) | w) & HIGHS)
            break;
    }
    while (i < len && s[i] != 0 && s[i] < 0x80)
        i++;
    return i;
}
