/*
 * test_assert.h: assertions for the C tests. They print both values and the
 * location, and abort even in release builds (no dependency on NDEBUG).
 */
#ifndef RAGOPS_TEST_ASSERT_H
#define RAGOPS_TEST_ASSERT_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ASSERT(expr)                                                         \
    do {                                                                     \
        if (!(expr)) {                                                       \
            fprintf(stderr, "%s:%d: falhou: %s\n", __FILE__, __LINE__, #expr); \
            abort();                                                         \
        }                                                                    \
    } while (0)

#define ASSERT_INT_EQ(a, b)                                                  \
    do {                                                                     \
        long long _va = (long long)(a), _vb = (long long)(b);                \
        if (_va != _vb) {                                                    \
            fprintf(stderr, "%s:%d: %s == %s falhou: %lld != %lld\n",        \
                    __FILE__, __LINE__, #a, #b, _va, _vb);                   \
            abort();                                                         \
        }                                                                    \
    } while (0)

#define ASSERT_STR_EQ(a, b)                                                  \
    do {                                                                     \
        const char *_sa = (a), *_sb = (b);                                   \
        if (_sa == NULL || _sb == NULL || strcmp(_sa, _sb) != 0) {           \
            fprintf(stderr, "%s:%d: %s == %s falhou: \"%s\" != \"%s\"\n",    \
                    __FILE__, __LINE__, #a, #b, _sa ? _sa : "(null)",        \
                    _sb ? _sb : "(null)");                                   \
            abort();                                                         \
        }                                                                    \
    } while (0)

#define ASSERT_NEAR(a, b, eps)                                               \
    do {                                                                     \
        double _da = (double)(a), _db = (double)(b);                         \
        if (_da - _db > (eps) || _db - _da > (eps)) {                        \
            fprintf(stderr, "%s:%d: %s ~= %s falhou: %g != %g\n",            \
                    __FILE__, __LINE__, #a, #b, _da, _db);                   \
            abort();                                                         \
        }                                                                    \
    } while (0)

#endif
