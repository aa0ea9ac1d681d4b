/*
 * http_ratelimit.c: the provider's rate-limit headers of an answer (see
 * http.h): the counts of x-ratelimit-limit-* / x-ratelimit-remaining-*,
 * the Go durations of x-ratelimit-reset-* and retry-after-ms, each parsed
 * by its own bounded parser (garbage is absent, never a guess), and their
 * reading from a finished curl handle without allocating.
 */
#include "http.h"

#include <stdint.h>
#include <string.h>

/* Integer part beyond which a number is "huge" (cut by the caller). */
#define DECIMAL_HUGE 100000000000000000ULL /* 10^17 */
/* Fraction digits kept (the rest are read and ignored). */
#define DECIMAL_MAX_SCALE 1000000000000000ULL /* 10^15 */

/* digits[.digits] as read: whole + frac / scale. */
typedef struct decimal {
    uint64_t whole; /* integer part (meaningless when huge) */
    uint64_t frac;  /* fraction digits kept, as an integer */
    uint64_t scale; /* 10^(fraction digits kept) */
    int huge;       /* 1 when the integer part passed DECIMAL_HUGE */
} decimal;

/* The value between its blanks: [*start, *end). HTTP_VALUE_ABSENT when
 * value is NULL or blank, HTTP_VALUE_INVALID when longer than
 * HTTP_RATELIMIT_MAX_VALUE, else HTTP_VALUE_VALID. */
static http_value_state trim(const char *value, const char **start, const char **end)
{
    const char *p = value, *q;
    size_t n = 0;
    if (p == NULL)
        return HTTP_VALUE_ABSENT;
    while (*p == ' ' || *p == '\t')
        p++;
    while (p[n] != '\0' && n <= HTTP_RATELIMIT_MAX_VALUE + 2)
        n++;
    q = p + n;
    while (q > p && (q[-1] == ' ' || q[-1] == '\t' || q[-1] == '\r' || q[-1] == '\n'))
        q--;
    if (q == p)
        return HTTP_VALUE_ABSENT;
    if (q - p > HTTP_RATELIMIT_MAX_VALUE || p[n] != '\0')
        return HTTP_VALUE_INVALID;
    *start = p;
    *end = q;
    return HTTP_VALUE_VALID;
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Reads digits[.digits] (at least one digit, no sign, no exponent) at *p,
 * before end, into *d; advances *p. 0, or -1 when there is no digit. */
static int read_decimal(const char **p, const char *end, decimal *d)
{
    const char *q = *p;
    int digits = 0;
    d->whole = 0;
    d->frac = 0;
    d->scale = 1;
    d->huge = 0;
    for (; q < end && is_digit(*q); q++, digits++) {
        if (d->whole >= DECIMAL_HUGE)
            d->huge = 1;
        else
            d->whole = d->whole * 10 + (uint64_t)(*q - '0');
    }
    if (q < end && *q == '.') {
        for (q++; q < end && is_digit(*q); q++, digits++) {
            if (d->scale < DECIMAL_MAX_SCALE) {
                d->frac = d->frac * 10 + (uint64_t)(*q - '0');
                d->scale *= 10;
            }
        }
    }
    if (digits == 0)
        return -1;
    *p = q;
    return 0;
}

http_value_state http_parse_count(const char *value, long *out)
{
    const char *p, *end;
    uint64_t n = 0;
    http_value_state state = trim(value, &p, &end);
    if (state != HTTP_VALUE_VALID)
        return state;
    for (; p < end; p++) {
        if (!is_digit(*p))
            return HTTP_VALUE_INVALID;
        n = n * 10 + (uint64_t)(*p - '0');
        if (n > (uint64_t)HTTP_RATELIMIT_MAX_COUNT)
            return HTTP_VALUE_INVALID;
    }
    *out = (long)n;
    return HTTP_VALUE_VALID;
}

/* Nanoseconds in the Go duration unit at *p (advanced past it), 0 when
 * there is none. "µs" comes as U+00B5 or U+03BC, in UTF-8. */
static uint64_t read_unit(const char **p, const char *end)
{
    static const struct {
        const char *name;
        uint64_t ns;
    } units[] = {
        {"ns", 1},          {"us", 1000},           {"\xc2\xb5s", 1000}, {"\xce\xbcs", 1000},
        {"ms", 1000000},    {"s", 1000000000ULL},   {"m", 60000000000ULL}, {"h", 3600000000000ULL},
    };
    size_t left = (size_t)(end - *p);
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        size_t n = strlen(units[i].name);
        if (n <= left && memcmp(*p, units[i].name, n) == 0) {
            *p += n;
            return units[i].ns;
        }
    }
    return 0;
}

http_value_state http_parse_duration_ms(const char *value, long *out_ms)
{
    const uint64_t cap_ns = (uint64_t)HTTP_RATELIMIT_MAX_RESET_MS * 1000000ULL;
    const char *p, *end;
    uint64_t total_ns = 0;
    http_value_state state = trim(value, &p, &end);
    if (state != HTTP_VALUE_VALID)
        return state;
    if (end - p == 1 && *p == '0') { /* Go's only duration without a unit */
        *out_ms = 0;
        return HTTP_VALUE_VALID;
    }
    while (p < end) {
        decimal d;
        uint64_t unit;
        if (read_decimal(&p, end, &d) != 0 || (unit = read_unit(&p, end)) == 0)
            return HTTP_VALUE_INVALID;
        if (d.huge || d.whole > cap_ns / unit) {
            total_ns = cap_ns; /* far beyond the cap: the rest only adds */
            continue;
        }
        total_ns += d.whole * unit + (uint64_t)((double)d.frac * ((double)unit / (double)d.scale));
        if (total_ns > cap_ns)
            total_ns = cap_ns;
    }
    *out_ms = (long)((total_ns + 999999) / 1000000);
    return HTTP_VALUE_VALID;
}

http_value_state http_parse_retry_after_ms(const char *value, long *out_ms)
{
    const char *p, *end;
    decimal d;
    http_value_state state = trim(value, &p, &end);
    if (state != HTTP_VALUE_VALID)
        return state;
    if (read_decimal(&p, end, &d) != 0 || p != end)
        return HTTP_VALUE_INVALID;
    if (d.huge || d.whole >= (uint64_t)HTTP_MAX_RETRY_AFTER_MS)
        *out_ms = HTTP_MAX_RETRY_AFTER_MS;
    else
        *out_ms = (long)d.whole + (d.frac > 0 ? 1 : 0); /* rounded up: never early */
    return HTTP_VALUE_VALID;
}

/* The first value of header name in the last answer on easy, or NULL. */
static const char *header_value(CURL *easy, const char *name)
{
    struct curl_header *h = NULL;
    if (curl_easy_header(easy, name, 0, CURLH_HEADER, -1, &h) != CURLHE_OK || h == NULL)
        return NULL;
    return h->value;
}

/* *field = the count in header name, or -1; 1 when present. */
static int read_count(CURL *easy, const char *name, long *field)
{
    *field = -1;
    return http_parse_count(header_value(easy, name), field) == HTTP_VALUE_VALID;
}

/* *field = the duration in header name in ms, or -1; 1 when present. */
static int read_duration(CURL *easy, const char *name, long *field)
{
    *field = -1;
    return http_parse_duration_ms(header_value(easy, name), field) == HTTP_VALUE_VALID;
}

void http_ratelimit_read(CURL *easy, http_ratelimit *rl)
{
    int any = 0;
    any |= read_count(easy, "x-ratelimit-limit-requests", &rl->limit_requests);
    any |= read_count(easy, "x-ratelimit-limit-tokens", &rl->limit_tokens);
    any |= read_count(easy, "x-ratelimit-remaining-requests", &rl->remaining_requests);
    any |= read_count(easy, "x-ratelimit-remaining-tokens", &rl->remaining_tokens);
    any |= read_duration(easy, "x-ratelimit-reset-requests", &rl->reset_requests_ms);
    any |= read_duration(easy, "x-ratelimit-reset-tokens", &rl->reset_tokens_ms);
    rl->present = any;
}

long http_read_retry_after(CURL *easy)
{
    long ms = -1;
    if (http_parse_retry_after_ms(header_value(easy, "retry-after-ms"), &ms) == HTTP_VALUE_VALID)
        return ms;
    return http_parse_retry_after(header_value(easy, "Retry-After"));
}
