/*
 * embed_server_faults.c: fault injection of the embed-server, the same in
 * every dialect: the seeded PRNG (splitmix64), the --reject-pattern /
 * --hang-pattern / --endless-pattern regexes, the choice of the fault that
 * answers a valid request (hang, endless body, timeout, 429, 5xx, permanent
 * 400, malformed 200, bad usage), with errors in the dialect's shape, the
 * chunks of an endless answer (--endless-pattern, --endless-gzip), and the
 * provider's rate limits, as OpenAI enforces them on an organisation: one
 * quota for the whole server, whatever the connection or client.
 *
 * Rate limits: --rpm and --tpm are token buckets (OpenAI's documented
 * model): capacity N, refilled continuously at N/60 per second, full at
 * start. A request is admitted when the request bucket holds 1 and the
 * token bucket its tokens (es_count_tokens, the count billed in usage,
 * after truncation); a request over the whole --tpm is refused with 429
 * type "tokens" and no Retry-After (as OpenAI's "Request too large":
 * waiting never helps). --max-concurrency caps the admitted requests in
 * flight, each held for --latency-ms. Refusals: 429, Retry-After (whole
 * seconds, rounded up) and retry-after-ms, answered at once. The
 * x-ratelimit-* headers give the buckets after the request; a reset is the
 * time until the bucket is full again, in Go's duration format as OpenAI
 * writes it ("1s", "6m0s", "120ms", "1.5s").
 */
#include "embed_server_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

int es_compile_pattern(regex_t *re, const char *pattern, const char *flag, char **err)
{
    int rc = regcomp(re, pattern, REG_EXTENDED | REG_NOSUB);
    char detail[256];
    if (rc == 0)
        return 0;
    regerror(rc, re, detail, sizeof detail);
    es_set_err(err, es_format_alloc("%s inválido: %s", flag, detail));
    return -1;
}

int es_faults_init(es_faults *faults, const embed_server_opts *opts, char **err)
{
    faults->fail_rate = opts->fail_rate;
    faults->rate_429 = opts->rate_429;
    faults->retry_after_s = opts->retry_after_s;
    faults->timeout_rate = opts->timeout_rate;
    faults->malformed_rate = opts->malformed_rate;
    faults->bad_usage_rate = opts->bad_usage_rate;
    faults->rng_state = opts->seed;
    if (opts->reject_pattern) {
        if (es_compile_pattern(&faults->reject_re, opts->reject_pattern, "--reject-pattern", err) != 0)
            return -1;
        faults->has_reject_re = 1;
    }
    if (opts->hang_pattern) {
        if (es_compile_pattern(&faults->hang_re, opts->hang_pattern, "--hang-pattern", err) != 0)
            return -1;
        faults->has_hang_re = 1;
    }
    if (opts->endless_pattern) {
        if (es_compile_pattern(&faults->endless_re, opts->endless_pattern, "--endless-pattern", err) != 0)
            return -1;
        faults->has_endless_re = 1;
    }
    faults->endless_gzip = opts->endless_gzip;
    return 0;
}

void es_faults_free(es_faults *faults)
{
    if (faults->has_reject_re)
        regfree(&faults->reject_re);
    if (faults->has_hang_re)
        regfree(&faults->hang_re);
    if (faults->has_endless_re)
        regfree(&faults->endless_re);
    faults->has_reject_re = 0;
    faults->has_hang_re = 0;
    faults->has_endless_re = 0;
}

/* splitmix64: returns a double uniform in [0, 1). */
static double es_random_unit(es_faults *faults)
{
    uint64_t z = (faults->rng_state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

/* Draws only when rate > 0, so the sequence depends only on enabled faults. */
static int es_random_hit(es_faults *faults, double rate)
{
    if (rate <= 0.0)
        return 0;
    return es_random_unit(faults) < rate;
}

/* Index of the first input matching re, or -1. */
static long es_first_match(const regex_t *re, json_t *inputs)
{
    for (size_t i = 0; i < json_array_size(inputs); i++)
        if (regexec(re, json_string_value(json_array_get(inputs, i)), 0, NULL, 0) == 0)
            return (long)i;
    return -1;
}

/* The start of the 200 of --endless-pattern in the dialect's shape: a
 * string that is never closed (es_endless_next adds to it until the client
 * leaves). */
static es_response *es_endless_answer(const embed_server *server)
{
    const char *start = server->dialect->answer->endless_start;
    char *body = strdup(start);
    es_response *resp = body ? es_response_new(200, "application/json", body, strlen(start)) : NULL;
    if (resp) {
        resp->endless = 1;
        resp->gzip = server->faults.endless_gzip;
    }
    return resp;
}

/* The faults that replace the answer: hang, endless body, timeout, 429,
 * 5xx, reject. Returns 1 when one applies (see es_faults_inject). */
static int es_fault_answer(embed_server *server, json_t *inputs, es_response **resp, int *never_answer)
{
    es_faults *faults = &server->faults;
    if (faults->has_hang_re && es_first_match(&faults->hang_re, inputs) >= 0) {
        server->stats.timeouts++;
        *never_answer = 1;
        return 1;
    }
    if (faults->has_endless_re && es_first_match(&faults->endless_re, inputs) >= 0) {
        server->stats.malformed++;
        *resp = es_endless_answer(server);
        return 1;
    }
    if (es_random_hit(faults, faults->timeout_rate)) {
        server->stats.timeouts++;
        *never_answer = 1;
        return 1;
    }
    if (es_random_hit(faults, faults->rate_429)) {
        server->stats.rate_limited++;
        server->stats.rate_limited_injected++;
        *resp = es_error(server, 429, ES_ERR_RATE,
                         "limite de requisições excedido (simulado); tente novamente em %d s", faults->retry_after_s);
        if (*resp)
            (*resp)->retry_after_s = faults->retry_after_s;
        return 1;
    }
    if (es_random_hit(faults, faults->fail_rate)) {
        static const int codes[] = {500, 502, 503};
        int status = codes[(int)(es_random_unit(faults) * 3) % 3];
        server->stats.errors_5xx++;
        *resp = es_error(server, status, ES_ERR_SERVER, "falha simulada do servidor de embeddings (HTTP %d)", status);
        return 1;
    }
    long rejected = faults->has_reject_re ? es_first_match(&faults->reject_re, inputs) : -1;
    if (rejected >= 0) {
        server->stats.rejected++;
        *resp = es_error(server, server->dialect->body_status, ES_ERR_REJECTED,
                         "entrada rejeitada: a entrada %ld corresponde ao padrão de rejeição", rejected);
        return 1;
    }
    return 0;
}

int es_faults_inject(embed_server *server, json_t *inputs, size_t dim, es_response **resp, int *never_answer,
                     es_malformed *malformed)
{
    es_faults *faults = &server->faults;
    *resp = NULL;
    *malformed = ES_VALID;
    if (es_fault_answer(server, inputs, resp, never_answer))
        return 1;
    if (es_random_hit(faults, faults->malformed_rate)) {
        server->stats.malformed++;
        *malformed = (es_malformed)(1 + (int)(es_random_unit(faults) * 3) % 3);
        if (*malformed == ES_SHORT_VECTORS && dim == 1)
            *malformed = ES_EXTRA_VECTOR;
    } else if (es_random_hit(faults, faults->bad_usage_rate)) {
        server->stats.malformed++;
        *malformed = ES_BAD_USAGE;
    }
    return 0;
}

/* ---------- the chunks of an endless answer ---------- */

struct es_endless {
    char *start;      /* the body's first bytes (sent once), then NULL */
    size_t start_len; /* bytes in start */
    char *filler;     /* ES_ENDLESS_CHUNK bytes of 'A': the string that never ends */
    int gzip;         /* 1: deflate (gzip wrapper) through z */
    z_stream z;       /* the one deflate stream of the answer */
    char *out;        /* the framed chunk handed out by es_endless_next */
    size_t out_cap;   /* bytes allocated in out */
};

es_endless *es_endless_new(const char *start, size_t start_len, int gzip)
{
    es_endless *e = calloc(1, sizeof *e);
    if (e == NULL)
        return NULL;
    e->gzip = gzip;
    e->start = malloc(start_len + 1);
    e->filler = malloc(ES_ENDLESS_CHUNK);
    /* a compressed chunk is smaller than its input; framing takes 16 bytes */
    e->out_cap = (start_len > ES_ENDLESS_CHUNK ? start_len : ES_ENDLESS_CHUNK) + 1024;
    e->out = malloc(e->out_cap);
    if (e->start == NULL || e->filler == NULL || e->out == NULL ||
        (gzip && deflateInit2(&e->z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)) {
        e->gzip = 0; /* nothing to end in z */
        es_endless_free(e);
        return NULL;
    }
    memcpy(e->start, start, start_len);
    e->start_len = start_len;
    memset(e->filler, 'A', ES_ENDLESS_CHUNK);
    return e;
}

/* Deflates n bytes of in into dst (room bytes), flushed so that the client
 * can inflate them at once. Returns the compressed length, 0 on failure. */
static size_t es_endless_deflate(es_endless *e, const char *in, size_t n, char *dst, size_t room)
{
    e->z.next_in = (Bytef *)in;
    e->z.avail_in = (uInt)n;
    e->z.next_out = (Bytef *)dst;
    e->z.avail_out = (uInt)room;
    if (deflate(&e->z, Z_SYNC_FLUSH) != Z_OK || e->z.avail_in != 0)
        return 0;
    return room - e->z.avail_out;
}

const char *es_endless_next(es_endless *e, size_t *len)
{
    const char *in = e->start ? e->start : e->filler;
    size_t n = e->start ? e->start_len : ES_ENDLESS_CHUNK;
    char *data = e->out + 16; /* room for the "<hex size>\r\n" prefix */
    size_t data_len = n;
    int prefix;
    if (e->gzip) {
        data_len = es_endless_deflate(e, in, n, data, e->out_cap - 16 - 2);
        if (data_len == 0)
            return NULL;
    } else {
        memcpy(data, in, n);
    }
    free(e->start);
    e->start = NULL;
    prefix = snprintf(e->out, 16, "%zx\r\n", data_len);
    memmove(e->out + prefix, data, data_len);
    memcpy(e->out + prefix + data_len, "\r\n", 2);
    *len = (size_t)prefix + data_len + 2;
    return e->out;
}

void es_endless_free(es_endless *e)
{
    if (e == NULL)
        return;
    if (e->gzip)
        deflateEnd(&e->z);
    free(e->start);
    free(e->filler);
    free(e->out);
    free(e);
}

/* ---------- the rate limits (--rpm, --tpm, --max-concurrency) ---------- */

int es_limits_init(es_limits *limits, const embed_server_opts *opts)
{
    memset(limits, 0, sizeof *limits);
    limits->requests.limit = opts->rpm;
    limits->requests.level = opts->rpm;
    limits->tokens.limit = opts->tpm;
    limits->tokens.level = opts->tpm;
    limits->max_concurrency = opts->max_concurrency;
    if (opts->max_concurrency > 0) {
        limits->busy_until = calloc((size_t)opts->max_concurrency, sizeof *limits->busy_until);
        if (limits->busy_until == NULL)
            return -1;
    }
    return 0;
}

void es_limits_free(es_limits *limits)
{
    free(limits->busy_until);
    limits->busy_until = NULL;
}

void es_limits_reset_window(es_limits *limits)
{
    memset(limits->window, 0, sizeof limits->window);
}

/* Refills b up to its limit for the time elapsed since its last refill. */
static void es_bucket_refill(es_bucket *b, uint64_t now_ms)
{
    if (b->limit <= 0)
        return;
    if (now_ms > b->last_ms)
        b->level += (double)(now_ms - b->last_ms) * (double)b->limit / 60000.0;
    if (b->level > (double)b->limit)
        b->level = (double)b->limit;
    b->last_ms = now_ms;
}

/* Milliseconds (rounded up) until b holds amount, 0 when it does. */
static uint64_t es_bucket_wait_ms(const es_bucket *b, double amount)
{
    if (b->limit <= 0 || b->level >= amount)
        return 0;
    return (uint64_t)ceil((amount - b->level) * 60000.0 / (double)b->limit);
}

/* Frees the concurrency slots of the requests whose --latency-ms is over. */
static void es_release_slots(es_limits *limits, uint64_t now_ms)
{
    while (limits->busy_count > 0 && limits->busy_until[limits->busy_head] <= now_ms) {
        limits->busy_head = (limits->busy_head + 1) % limits->max_concurrency;
        limits->busy_count--;
    }
}

/* ms as Go formats a time.Duration (OpenAI's reset headers): "0s", "120ms",
 * "1s", "1.5s", "6m0s", "1h2m3s". */
static void es_format_duration(uint64_t ms, char *out, size_t size)
{
    char seconds[16];
    /* (bounded so the text always fits: a reset is never days away) */
    unsigned h = (unsigned)(ms / 3600000 > 9999 ? 9999 : ms / 3600000);
    unsigned m = (unsigned)(ms / 60000 % 60), s = (unsigned)(ms / 1000 % 60), frac = (unsigned)(ms % 1000);
    if (ms < 1000) {
        snprintf(out, size, ms == 0 ? "0s" : "%ums", frac);
        return;
    }
    if (frac == 0)
        snprintf(seconds, sizeof seconds, "%us", s % 60);
    else if (frac % 100 == 0)
        snprintf(seconds, sizeof seconds, "%u.%us", s % 60, frac / 100 % 10);
    else if (frac % 10 == 0)
        snprintf(seconds, sizeof seconds, "%u.%02us", s % 60, frac / 10 % 100);
    else
        snprintf(seconds, sizeof seconds, "%u.%03us", s % 60, frac % 1000);
    if (h > 0)
        snprintf(out, size, "%uh%um%s", h % 10000, m % 60, seconds);
    else if (m > 0)
        snprintf(out, size, "%um%s", m % 60, seconds);
    else
        snprintf(out, size, "%s", seconds);
}

/* The 429 of a limit: Retry-After (seconds, rounded up; none when wait_ms
 * is 0) and retry-after-ms; answered at once; counted in rate_limited. */
static es_response *es_limit_refusal(embed_server *server, es_error_kind kind, uint64_t wait_ms, const char *message)
{
    es_response *resp = es_error(server, 429, kind, "%s", message);
    server->stats.rate_limited++;
    if (kind == ES_ERR_RATE_CONCURRENCY)
        server->stats.rate_limited_concurrency++;
    else if (kind == ES_ERR_RATE_TOKENS)
        server->stats.rate_limited_tokens++;
    else
        server->stats.rate_limited_requests++;
    if (resp == NULL)
        return NULL;
    resp->immediate = 1;
    if (wait_ms > 0) {
        resp->retry_after_s = (int)((wait_ms + 999) / 1000);
        resp->retry_after_ms = (int)wait_ms;
    }
    return resp;
}

/* Why the request cannot be admitted now, as a 429 in *resp; 0 when it can. */
static int es_limits_refuse(embed_server *server, uint64_t tokens, es_response **resp)
{
    es_limits *l = &server->limits;
    char message[512], wait_text[48];
    uint64_t wait_requests = es_bucket_wait_ms(&l->requests, 1.0);
    uint64_t wait_tokens = es_bucket_wait_ms(&l->tokens, (double)tokens);
    uint64_t wait = wait_requests > wait_tokens ? wait_requests : wait_tokens;
    es_format_duration(wait, wait_text, sizeof wait_text);
    if (l->tokens.limit > 0 && tokens > (uint64_t)l->tokens.limit) {
        snprintf(message, sizeof message,
                 "pedido grande demais para o limite de tokens por minuto (TPM): limite %ld, pedidos %llu; "
                 "esperar não adianta, reduza as entradas do pedido",
                 l->tokens.limit, (unsigned long long)tokens);
        *resp = es_limit_refusal(server, ES_ERR_RATE_TOKENS, 0, message);
    } else if (l->max_concurrency > 0 && l->busy_count >= l->max_concurrency) {
        snprintf(message, sizeof message,
                 "limite de pedidos simultâneos atingido: limite %d, em andamento %d; tente novamente em 1s",
                 l->max_concurrency, l->busy_count);
        *resp = es_limit_refusal(server, ES_ERR_RATE_CONCURRENCY, 1000, message);
    } else if (wait_requests > 0) {
        snprintf(message, sizeof message,
                 "limite de taxa atingido em requisições por minuto (RPM): limite %ld, usadas %ld, pedida 1; "
                 "tente novamente em %s",
                 l->requests.limit, l->requests.limit - (long)floor(l->requests.level), wait_text);
        *resp = es_limit_refusal(server, ES_ERR_RATE, wait, message);
    } else if (wait_tokens > 0) {
        snprintf(message, sizeof message,
                 "limite de taxa atingido em tokens por minuto (TPM): limite %ld, usados %ld, pedidos %llu; "
                 "tente novamente em %s",
                 l->tokens.limit, l->tokens.limit - (long)floor(l->tokens.level), (unsigned long long)tokens,
                 wait_text);
        *resp = es_limit_refusal(server, ES_ERR_RATE_TOKENS, wait, message);
    } else {
        return 0;
    }
    return -1;
}

/* Counts an admission in the counters and in the slot of its second. */
static void es_count_admission(embed_server *server, uint64_t tokens, uint64_t now_ms)
{
    es_window_slot *slot = &server->limits.window[(now_ms / 1000) % ES_WINDOW_SECONDS];
    if (slot->second != now_ms / 1000) {
        memset(slot, 0, sizeof *slot);
        slot->second = now_ms / 1000;
    }
    slot->requests++;
    slot->tokens += tokens;
    server->stats.admitted_requests++;
    server->stats.admitted_tokens += tokens;
}

int es_limits_admit(embed_server *server, uint64_t tokens, es_response **resp)
{
    es_limits *l = &server->limits;
    uint64_t now_ms = uv_now(server->loop);
    *resp = NULL;
    es_bucket_refill(&l->requests, now_ms);
    es_bucket_refill(&l->tokens, now_ms);
    if (l->max_concurrency > 0)
        es_release_slots(l, now_ms);
    if (es_limits_refuse(server, tokens, resp) != 0)
        return -1;
    if (l->requests.limit > 0)
        l->requests.level -= 1.0;
    if (l->tokens.limit > 0)
        l->tokens.level -= (double)tokens;
    if (l->max_concurrency > 0) {
        int tail = (l->busy_head + l->busy_count) % l->max_concurrency;
        l->busy_until[tail] = now_ms + (uint64_t)(server->latency_ms > 0 ? server->latency_ms : 0);
        l->busy_count++;
    }
    es_count_admission(server, tokens, now_ms);
    return 0;
}

/* Appends the x-ratelimit-*-<name> lines of b (limit, remaining, reset) to out. */
static void es_bucket_headers(const es_bucket *b, const char *name, char *out, size_t size)
{
    char reset[48];
    size_t used = strlen(out);
    double remaining = b->level > 0 ? floor(b->level) : 0;
    es_format_duration(es_bucket_wait_ms(b, (double)b->limit), reset, sizeof reset);
    snprintf(out + used, size - used,
             "x-ratelimit-limit-%s: %ld\r\nx-ratelimit-remaining-%s: %.0f\r\nx-ratelimit-reset-%s: %s\r\n", name,
             b->limit, name, remaining, name, reset);
}

void es_limits_tag(embed_server *server, es_response *resp)
{
    es_limits *l = &server->limits;
    uint64_t now_ms = uv_now(server->loop);
    if (resp == NULL || (resp->status != 200 && resp->status != 429))
        return;
    resp->limit_headers[0] = '\0';
    if (l->requests.limit > 0) {
        es_bucket_refill(&l->requests, now_ms);
        es_bucket_headers(&l->requests, "requests", resp->limit_headers, sizeof resp->limit_headers);
    }
    if (l->tokens.limit > 0) {
        es_bucket_refill(&l->tokens, now_ms);
        es_bucket_headers(&l->tokens, "tokens", resp->limit_headers, sizeof resp->limit_headers);
    }
}

json_t *es_limits_stats(embed_server *server)
{
    const embed_server_stats *s = &server->stats;
    es_limits *l = &server->limits;
    uint64_t now_s = uv_now(server->loop) / 1000, requests = 0, tokens = 0;
    if (l->max_concurrency > 0)
        es_release_slots(l, uv_now(server->loop));
    for (int k = 0; k < ES_WINDOW_SECONDS; k++)
        if (l->window[k].second + ES_WINDOW_SECONDS > now_s) {
            requests += l->window[k].requests;
            tokens += l->window[k].tokens;
        }
    return json_pack("{s:{s:I, s:I, s:i}, s:{s:I, s:I, s:I, s:I}, s:I, s:I, s:I, s:I, s:i}", "limits", "rpm",
                     (json_int_t)l->requests.limit, "tpm", (json_int_t)l->tokens.limit, "max_concurrency",
                     l->max_concurrency, "rate_limited_by", "injected", (json_int_t)s->rate_limited_injected,
                     "requests", (json_int_t)s->rate_limited_requests, "tokens", (json_int_t)s->rate_limited_tokens,
                     "concurrency", (json_int_t)s->rate_limited_concurrency, "admitted_requests",
                     (json_int_t)s->admitted_requests, "admitted_tokens", (json_int_t)s->admitted_tokens,
                     "window_requests", (json_int_t)requests, "window_tokens", (json_int_t)tokens, "in_flight",
                     l->busy_count);
}
