/*
 * decode_bench.c: the cost of decoding one embeddings answer per provider
 * dialect (bench/run.sh step 0, target ragops-decode-bench of the Release
 * build, not installed). For 64 inputs x 1536 dimensions it builds one
 * answer in each shape (OpenAI base64 and float, Voyage = the OpenAI shape
 * with usage.total_tokens, Ollama, TEI and Cohere rows) and decodes it again
 * and again through the functions the client uses: embed_stream_new or
 * embed_stream_new_rows, feed in 16 KiB pieces, finish. Prints µs per answer
 * and MB/s per shape (thread CPU time, the best of ROUNDS rounds: the
 * machine is shared) and, with --json FILE, the same figures as JSON. Every
 * decode is checked (the vectors and the token count): exit 1 if one is
 * wrong.
 */
#include "embed/embed.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define COUNT 64
#define DIM 1536
#define PIECE ((size_t)16 * 1024)
#define ROUNDS 5
#define TOKENS 4321L

/* A growable text. */
typedef struct text {
    char *s;
    size_t len, cap;
} text;

static void put(text *t, const char *s, size_t n)
{
    if (t->len + n + 1 > t->cap) {
        while (t->len + n + 1 > t->cap)
            t->cap = t->cap ? t->cap * 2 : 1 << 20;
        t->s = realloc(t->s, t->cap);
        if (!t->s) {
            fprintf(stderr, "decode_bench: sem memória\n");
            exit(1);
        }
    }
    memcpy(t->s + t->len, s, n);
    t->len += n;
    t->s[t->len] = '\0';
}

static void puts_(text *t, const char *s) { put(t, s, strlen(s)); }

/* The test value j of vector i (what every decode must give back). */
static float value_of(int i, int j) { return (float)sin((double)(i * DIM + j) * 0.001) * 0.05f; }

static void put_floats(text *t, int i)
{
    char num[32];
    puts_(t, "[");
    for (int j = 0; j < DIM; j++) {
        int n = snprintf(num, sizeof num, "%s%.9g", j ? "," : "", (double)value_of(i, j));
        put(t, num, (size_t)n);
    }
    puts_(t, "]");
}

static void put_base64(text *t, int i)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    unsigned char bytes[DIM * 4];
    char quad[4];
    for (int j = 0; j < DIM; j++) {
        float f = value_of(i, j);
        memcpy(bytes + 4 * j, &f, 4); /* little-endian hosts (x86_64, arm64) */
    }
    puts_(t, "\"");
    for (size_t k = 0; k < sizeof bytes; k += 3) {
        size_t left = sizeof bytes - k;
        uint32_t v = (uint32_t)bytes[k] << 16 | (left > 1 ? (uint32_t)bytes[k + 1] << 8 : 0) |
                     (left > 2 ? bytes[k + 2] : 0);
        quad[0] = abc[v >> 18 & 63];
        quad[1] = abc[v >> 12 & 63];
        quad[2] = left > 1 ? abc[v >> 6 & 63] : '=';
        quad[3] = left > 2 ? abc[v & 63] : '=';
        put(t, quad, 4);
    }
    puts_(t, "\"");
}

/* OpenAI: {"object":"list","data":[{"object":"embedding","index":i,"embedding":...}],"model","usage"};
 * Voyage: the same shape, "index" after "embedding" and only usage.total_tokens. */
static text openai_answer(int base64, int voyage)
{
    text t = {0};
    char buf[128];
    puts_(&t, "{\"object\":\"list\",\"data\":[");
    for (int i = 0; i < COUNT; i++) {
        if (voyage)
            snprintf(buf, sizeof buf, "%s{\"object\":\"embedding\",\"embedding\":", i ? "," : "");
        else
            snprintf(buf, sizeof buf, "%s{\"object\":\"embedding\",\"index\":%d,\"embedding\":", i ? "," : "", i);
        puts_(&t, buf);
        base64 ? put_base64(&t, i) : put_floats(&t, i);
        if (voyage) {
            snprintf(buf, sizeof buf, ",\"index\":%d", i);
            puts_(&t, buf);
        }
        puts_(&t, "}");
    }
    if (voyage)
        snprintf(buf, sizeof buf, "],\"model\":\"voyage-3\",\"usage\":{\"total_tokens\":%ld}}", TOKENS);
    else
        snprintf(buf, sizeof buf, "],\"model\":\"m\",\"usage\":{\"prompt_tokens\":%ld,\"total_tokens\":%ld}}",
                 TOKENS, TOKENS);
    puts_(&t, buf);
    return t;
}

static void put_rows(text *t)
{
    puts_(t, "[");
    for (int i = 0; i < COUNT; i++) {
        if (i)
            puts_(t, ",");
        put_floats(t, i);
    }
    puts_(t, "]");
}

static text ollama_answer(void)
{
    text t = {0};
    char buf[160];
    puts_(&t, "{\"model\":\"nomic-embed-text\",\"embeddings\":");
    put_rows(&t);
    snprintf(buf, sizeof buf, ",\"total_duration\":14143917,\"load_duration\":1019500,\"prompt_eval_count\":%ld}",
             TOKENS);
    puts_(&t, buf);
    return t;
}

static text tei_answer(void)
{
    text t = {0};
    put_rows(&t);
    return t;
}

static text cohere_answer(void)
{
    text t = {0};
    char buf[200];
    puts_(&t, "{\"id\":\"da6e531f-54c6-4a73-bf92-f60566d8d753\",\"embeddings\":{\"float\":");
    put_rows(&t);
    puts_(&t, "},\"texts\":[");
    for (int i = 0; i < COUNT; i++) {
        snprintf(buf, sizeof buf, "%s\"texto de entrada número %d do lote\"", i ? "," : "", i);
        puts_(&t, buf);
    }
    snprintf(buf, sizeof buf, "],\"meta\":{\"api_version\":{\"version\":\"2\"},\"billed_units\":{\"input_tokens\":%ld}},"
             "\"response_type\":\"embeddings_by_type\"}", TOKENS);
    puts_(&t, buf);
    return t;
}

/* One shape of answer and how the client decodes it. */
typedef struct shape {
    const char *name;        /* dialect and encoding */
    text body;               /* the answer */
    int rows;                /* decoded as rows (else "data" items) */
    const char *rows_path[2]; /* keys to the rows */
    int rows_depth;
    const char *usage_path[3]; /* keys to the token count */
    int usage_depth;
    long tokens;             /* token count the decode must find */
} shape;

static embed_stream *stream_for(const shape *sh)
{
    embed_rows_shape rs;
    if (!sh->rows)
        return embed_stream_new(COUNT, DIM);
    rs.rows_path = sh->rows_path;
    rs.rows_depth = sh->rows_depth;
    rs.usage_path = sh->usage_path;
    rs.usage_depth = sh->usage_depth;
    return embed_stream_new_rows(COUNT, DIM, &rs);
}

/* Decodes sh's answer once, as the client does; checks it when check. */
static void decode_once(const shape *sh, int check)
{
    embed_stream *s = stream_for(sh);
    embed_vectors v;
    char err[512];
    for (size_t at = 0; s && at < sh->body.len; at += PIECE)
        embed_stream_feed(s, sh->body.s + at, sh->body.len - at < PIECE ? sh->body.len - at : PIECE);
    if (!s || embed_stream_finish(s, &v, err, sizeof err) != 0) {
        fprintf(stderr, "decode_bench: %s: %s\n", sh->name, s ? err : "sem memória");
        exit(1);
    }
    if (check) {
        for (int i = 0; i < COUNT; i++)
            for (int j = 0; j < DIM; j++)
                if (v.data[(size_t)i * DIM + j] != value_of(i, j)) {
                    fprintf(stderr, "decode_bench: %s: vetor %d valor %d: %.9g != %.9g\n", sh->name, i, j,
                            (double)v.data[(size_t)i * DIM + j], (double)value_of(i, j));
                    exit(1);
                }
        if (v.prompt_tokens != sh->tokens) {
            fprintf(stderr, "decode_bench: %s: tokens %ld != %ld\n", sh->name, v.prompt_tokens, sh->tokens);
            exit(1);
        }
    }
    embed_vectors_free(&v);
    embed_stream_free(s);
}

/* CPU time of this thread: the decode's cost, not the time other
 * processes of a shared machine took the core. */
static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* µs per answer: the best of ROUNDS rounds of ~seconds / ROUNDS each. */
static double measure(const shape *sh, double seconds)
{
    double best = INFINITY, t0 = now_s();
    long per_round = 1;
    decode_once(sh, 1);
    while (now_s() - t0 < 0.05 || per_round < 2) { /* calibration */
        decode_once(sh, 0);
        per_round++;
    }
    per_round = (long)((double)per_round * seconds / ROUNDS / (now_s() - t0)) + 1;
    for (int r = 0; r < ROUNDS; r++) {
        double start = now_s();
        for (long k = 0; k < per_round; k++)
            decode_once(sh, 0);
        double us = (now_s() - start) * 1e6 / (double)per_round;
        if (us < best)
            best = us;
    }
    return best;
}

static void write_json(const char *path, const shape *shapes, const double *us, int n)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "decode_bench: não foi possível gravar %s\n", path);
        exit(1);
    }
    fprintf(f, "{\"inputs\":%d,\"dim\":%d,\"piece_bytes\":%zu,\"rounds\":%d,\"shapes\":[", COUNT, DIM, PIECE, ROUNDS);
    for (int i = 0; i < n; i++)
        fprintf(f, "%s{\"shape\":\"%s\",\"answer_bytes\":%zu,\"us_per_answer\":%.1f,\"mb_per_s\":%.1f}",
                i ? "," : "", shapes[i].name, shapes[i].body.len, us[i], (double)shapes[i].body.len / us[i]);
    fprintf(f, "]}\n");
    fclose(f);
}

int main(int argc, char **argv)
{
    const char *json = NULL;
    double seconds = 1.0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0 && i + 1 < argc)
            json = argv[++i];
        else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc && atof(argv[i + 1]) > 0)
            seconds = atof(argv[++i]);
        else {
            fprintf(stderr, "uso: ragops-decode-bench [--seconds S] [--json ARQUIVO]\n");
            return 2;
        }
    }
    shape shapes[] = {
        {"openai base64", openai_answer(1, 0), 0, {0}, 0, {0}, 0, TOKENS},
        {"openai float", openai_answer(0, 0), 0, {0}, 0, {0}, 0, TOKENS},
        {"voyage base64", openai_answer(1, 1), 0, {0}, 0, {0}, 0, TOKENS},
        {"ollama rows", ollama_answer(), 1, {"embeddings"}, 1, {"prompt_eval_count"}, 1, TOKENS},
        {"tei rows", tei_answer(), 1, {0}, 0, {0}, 0, 0},
        {"cohere rows", cohere_answer(), 1, {"embeddings", "float"}, 2, {"meta", "billed_units", "input_tokens"}, 3,
         TOKENS},
    };
    int n = (int)(sizeof shapes / sizeof shapes[0]);
    double us[sizeof shapes / sizeof shapes[0]];
    printf("decodificação de uma resposta de %d entradas x %d dimensões, em pedaços de %zu KiB "
           "(tempo de CPU, menor de %d rodadas)\n", COUNT, DIM, PIECE / 1024, ROUNDS);
    printf("%-16s %12s %12s %10s\n", "formato", "bytes", "µs/resposta", "MB/s");
    for (int i = 0; i < n; i++) {
        us[i] = measure(&shapes[i], seconds);
        printf("%-16s %12zu %12.1f %10.1f\n", shapes[i].name, shapes[i].body.len, us[i],
               (double)shapes[i].body.len / us[i]);
        fflush(stdout);
    }
    if (json)
        write_json(json, shapes, us, n);
    for (int i = 0; i < n; i++)
        free(shapes[i].body.s);
    return 0;
}
