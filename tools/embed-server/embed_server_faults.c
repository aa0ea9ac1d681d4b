/*
 * embed_server_faults.c: fault injection of the embed-server, the same in
 * every dialect: the seeded PRNG (splitmix64), the --reject-pattern /
 * --hang-pattern / --endless-pattern regexes, the choice of the fault that
 * answers a valid request (hang, endless body, timeout, 429, 5xx, permanent
 * 400, malformed 200, bad usage), with errors in the dialect's shape, and
 * the chunks of an endless answer (--endless-pattern, --endless-gzip).
 */
#include "embed_server_internal.h"

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
