/*
 * test_embed_dialects.c: unit tests of the provider dialects' wire format
 * (issue 23) with no network: the request body with body_fields, inputs_key
 * and encoding_field; the "rows" answer (TEI root array, Ollama, Cohere v2)
 * with its usage path, counts, dimensions, finiteness, paths and truncated
 * bodies; Voyage's usage.total_tokens; the exact fast number conversion
 * shared by every float answer; error bodies and classification.
 */
#include "embed/embed.h"
#include "embed/embed_json.h" /* the number primitive, tested at double precision */
#include "test_assert.h"

#include <jansson.h>
#include <math.h>
#include <stdint.h>

/* ---- request bodies ---------------------------------------------------- */

static char *build(const embed_request_shape *shape, embed_encoding encoding, char *err)
{
    const char *texts[] = {"olá", "dois\"x"};
    size_t lens[] = {strlen(texts[0]), strlen(texts[1])};
    size_t len = 0;
    char *body = embed_build_body(shape, texts, lens, 2, encoding, &len, err, 256);
    if (body)
        ASSERT_INT_EQ(len, strlen(body));
    return body;
}

static void expect_body(const embed_request_shape *shape, embed_encoding encoding, const char *want)
{
    char err[256];
    char *body = build(shape, encoding, err);
    json_t *root;
    if (!body) {
        fprintf(stderr, "embed_build_body falhou: %s\n", err);
        abort();
    }
    ASSERT_STR_EQ(body, want);
    root = json_loads(body, 0, NULL); /* and it is JSON */
    ASSERT(root != NULL);
    json_decref(root);
    free(body);
}

static void test_body_shapes(void)
{
    static const char fields[] = "\"model\":\"m\",\"truncate\":false";
    embed_request_shape tei = {"", 0, NULL, 0, "inputs", EMBED_ENCODING_FIELD_NONE};
    embed_request_shape cohere = {fields, sizeof fields - 1, NULL, 0, "texts", EMBED_ENCODING_FIELD_NONE};
    embed_request_shape voyage = {"\"model\":\"v\"", 11, NULL, 0, NULL, EMBED_ENCODING_FIELD_BASE64_ONLY};
    embed_request_shape openai = {NULL, 0, "m", 8, NULL, EMBED_ENCODING_FIELD_ALWAYS};
    embed_request_shape azure = {"\"dimensions\":8", 14, NULL, 99, "input", EMBED_ENCODING_FIELD_ALWAYS};
    expect_body(&tei, EMBED_ENCODING_FLOAT, "{\"inputs\":[\"olá\",\"dois\\\"x\"]}");
    expect_body(&cohere, EMBED_ENCODING_FLOAT,
                "{\"model\":\"m\",\"truncate\":false,\"texts\":[\"olá\",\"dois\\\"x\"]}");
    /* base64_only: the member only when base64 is asked for */
    expect_body(&voyage, EMBED_ENCODING_BASE64,
                "{\"model\":\"v\",\"input\":[\"olá\",\"dois\\\"x\"],\"encoding_format\":\"base64\"}");
    expect_body(&voyage, EMBED_ENCODING_FLOAT, "{\"model\":\"v\",\"input\":[\"olá\",\"dois\\\"x\"]}");
    /* built members (no body_fields): exactly today's OpenAI body */
    expect_body(&openai, EMBED_ENCODING_FLOAT,
                "{\"model\":\"m\",\"input\":[\"olá\",\"dois\\\"x\"],\"encoding_format\":\"float\",\"dimensions\":8}");
    /* with body_fields, "dimensions" is the caller's, never added */
    expect_body(&azure, EMBED_ENCODING_BASE64,
                "{\"dimensions\":8,\"input\":[\"olá\",\"dois\\\"x\"],\"encoding_format\":\"base64\"}");
    /* white space only counts as no members */
    embed_request_shape blank = {"  ", 2, NULL, 0, "inputs", EMBED_ENCODING_FIELD_NONE};
    expect_body(&blank, EMBED_ENCODING_FLOAT, "{  \"inputs\":[\"olá\",\"dois\\\"x\"]}");
}

/* embed_build_request is the default shape, byte for byte. */
static void test_body_legacy_same(void)
{
    const char *texts[] = {"a", "b"};
    size_t lens[] = {1, 1}, la = 0, lb = 0;
    char err[256];
    embed_request_shape shape = {NULL, 0, "text-embedding-3-small", 0, NULL, EMBED_ENCODING_FIELD_ALWAYS};
    char *a = embed_build_request("text-embedding-3-small", texts, lens, 2, EMBED_ENCODING_BASE64, 0, &la, err,
                                  sizeof err);
    char *b = embed_build_body(&shape, texts, lens, 2, EMBED_ENCODING_BASE64, &lb, err, sizeof err);
    ASSERT(a && b);
    ASSERT_STR_EQ(a, b);
    ASSERT_STR_EQ(a, "{\"model\":\"text-embedding-3-small\",\"input\":[\"a\",\"b\"],\"encoding_format\":\"base64\"}");
    free(a);
    free(b);
}

static void test_body_refusals(void)
{
    char err[256];
    embed_request_shape no_model = {NULL, 0, NULL, 0, NULL, EMBED_ENCODING_FIELD_ALWAYS};
    embed_request_shape huge = {"x", EMBED_MAX_BODY_FIELDS + 1, NULL, 0, NULL, EMBED_ENCODING_FIELD_ALWAYS};
    embed_request_shape fields = {"\"model\":\"m\"", 11, NULL, 0, "inputs", EMBED_ENCODING_FIELD_NONE};
    const char *bad_text[] = {"ok", "\xff"};
    size_t lens[] = {2, 1};
    ASSERT(build(&no_model, EMBED_ENCODING_BASE64, err) == NULL);
    ASSERT(strstr(err, "sem modelo") != NULL);
    ASSERT(build(&huge, EMBED_ENCODING_BASE64, err) == NULL);
    ASSERT(strstr(err, "grandes demais") != NULL);
    ASSERT(embed_build_body(&fields, bad_text, lens, 2, EMBED_ENCODING_FLOAT, NULL, err, sizeof err) == NULL);
    ASSERT_STR_EQ(err, "texto 2 do lote não é UTF-8 válido");
}

/* ---- rows answers ------------------------------------------------------ */

static const char *const NO_PATH[] = {NULL};
static const char *const OLLAMA_ROWS[] = {"embeddings"};
static const char *const OLLAMA_USAGE[] = {"prompt_eval_count"};
static const char *const COHERE_ROWS[] = {"embeddings", "float"};
static const char *const COHERE_USAGE[] = {"meta", "billed_units", "input_tokens"};

static const embed_rows_shape TEI = {NO_PATH, 0, NO_PATH, 0};
static const embed_rows_shape OLLAMA = {OLLAMA_ROWS, 1, OLLAMA_USAGE, 1};
static const embed_rows_shape COHERE = {COHERE_ROWS, 2, COHERE_USAGE, 3};

/* Decodes body as rows of shape, fed in pieces of `piece` bytes (0 = at once). */
static int rows_parse(const embed_rows_shape *shape, const char *body, int count, int dim, size_t piece,
                      embed_vectors *v, char *err, embed_kind *kind)
{
    size_t len = strlen(body);
    embed_stream *s = embed_stream_new_rows(count, dim, shape);
    int rc;
    ASSERT(s != NULL);
    for (size_t at = 0; at < len;) {
        size_t n = piece == 0 || len - at < piece ? len - at : piece;
        embed_stream_feed(s, body + at, n);
        at += n;
    }
    rc = embed_stream_finish(s, v, err, 512);
    if (kind)
        *kind = embed_stream_failure_kind(s);
    embed_stream_free(s);
    return rc;
}

static void expect_rows(const embed_rows_shape *shape, const char *body, int count, int dim, const float *want,
                        long tokens, int has_usage)
{
    for (size_t piece = 0; piece <= 7; piece += 1 + piece * 3) { /* at once, 1, 5 bytes */
        embed_vectors v;
        char err[512];
        if (rows_parse(shape, body, count, dim, piece, &v, err, NULL) != 0) {
            fprintf(stderr, "falhou (pedaços de %zu): %s\ncorpo: %s\n", piece, err, body);
            abort();
        }
        ASSERT_INT_EQ(v.count, count);
        ASSERT_INT_EQ(v.dim, dim);
        for (int k = 0; k < count * dim; k++)
            ASSERT_NEAR(v.data[k], want[k], 0);
        ASSERT_INT_EQ(v.prompt_tokens, tokens);
        ASSERT_INT_EQ(v.has_usage, has_usage);
        embed_vectors_free(&v);
    }
}

static void expect_rows_fail(const embed_rows_shape *shape, const char *body, int count, int dim,
                             const char *fragment, embed_kind want_kind)
{
    embed_vectors v;
    char err[512];
    embed_kind kind;
    ASSERT_INT_EQ(rows_parse(shape, body, count, dim, 3, &v, err, &kind), -1);
    ASSERT(v.data == NULL);
    if (strncmp(err, "resposta malformada do provedor: ", 33) != 0 || !strstr(err, fragment)) {
        fprintf(stderr, "mensagem inesperada: %s (esperado trecho \"%s\")\ncorpo: %s\n", err, fragment, body);
        abort();
    }
    ASSERT_INT_EQ(kind, want_kind);
}

static void test_rows_shapes(void)
{
    static const float two[] = {0.5f, -2.0f, 1.0f, 0.25f};
    static const float almost_one[] = {0.99999994f};
    /* TEI: the root is the array; a base64 row is accepted too ("AAAAPwAAAMA=" = 0.5, -2) */
    expect_rows(&TEI, "[[0.5,-2],[1,0.25]]", 2, 2, two, 0, 0);
    expect_rows(&TEI, " [ \"AAAAPwAAAMA=\" , [1e0, 2.5e-1] ] \n", 2, 2, two, 0, 0);
    /* "\/" in a base64 row (bytes ff ff 7f 3f) */
    expect_rows(&TEI, "[\"\\/\\/9\\/Pw==\"]", 1, 1, almost_one, 0, 0);
    /* Ollama: rows and token count beside other members, any order */
    expect_rows(&OLLAMA,
                "{\"model\":\"nomic\",\"prompt_eval_count\":7,\"embeddings\":[[0.5,-2],[1,0.25]],"
                "\"total_duration\":123,\"extra\":{\"embeddings\":\"not these\"}}",
                2, 2, two, 7, 1);
    /* Cohere v2: nested rows and usage; other embedding types and "texts" skipped */
    expect_rows(&COHERE,
                "{\"id\":\"x\",\"embeddings\":{\"int8\":[[1,2]],\"float\":[[0.5,-2],[1,0.25]]},"
                "\"texts\":[\"a\",\"b\"],\"meta\":{\"api_version\":{\"version\":\"2\"},"
                "\"billed_units\":{\"input_tokens\":12}},\"response_type\":\"embeddings_by_type\"}",
                2, 2, two, 12, 1);
    /* no usage in the answer (or a path that does not fit): no tokens, not an error */
    expect_rows(&OLLAMA, "{\"embeddings\":[[0.5,-2],[1,0.25]]}", 2, 2, two, 0, 0);
    expect_rows(&COHERE, "{\"embeddings\":{\"float\":[[0.5,-2],[1,0.25]]},\"meta\":[1]}", 2, 2, two, 0, 0);
    /* expected_dim 0: any dimension, all equal */
    embed_vectors v;
    char err[512];
    ASSERT_INT_EQ(rows_parse(&TEI, "[[0.5,-2],[1,0.25]]", 2, 0, 0, &v, err, NULL), 0);
    ASSERT_INT_EQ(v.dim, 2);
    ASSERT_NEAR(v.data[3], 0.25, 0);
    embed_vectors_free(&v);
}

static void test_rows_failures(void)
{
    const embed_kind M = EMBED_KIND_MALFORMED;
    /* counts */
    expect_rows_fail(&TEI, "[[1,2]]", 2, 2, "esperados 2 vetores, recebidos 1", M);
    expect_rows_fail(&TEI, "[[1,2],[3,4],[5,6]]", 2, 2, "esperados 2 vetores, recebidos 3", M);
    expect_rows_fail(&TEI, "[]", 1, 2, "esperados 1 vetores, recebidos 0", M);
    /* dimensions: another than asked for has its own kind */
    expect_rows_fail(&TEI, "[[1,2,3]]", 1, 2, "vetor 0 tem dimensão 3, esperada 2", EMBED_KIND_DIMENSION);
    expect_rows_fail(&OLLAMA, "{\"embeddings\":[\"AAAAPw==\"]}", 1, 2, "dimensão 1, esperada 2",
                     EMBED_KIND_DIMENSION);
    expect_rows_fail(&TEI, "[[1,2],[1,2,3]]", 2, 0, "dimensões diferentes", M);
    expect_rows_fail(&TEI, "[[]]", 1, 0, "vetor 0 vazio", M);
    expect_rows_fail(&TEI, "[[]]", 1, 2, "vetor 0 vazio", M);
    /* the dimension is judged before the values (one pass when expected_dim is known) */
    expect_rows_fail(&TEI, "[[1,1e39,3]]", 1, 2, "vetor 0 tem dimensão 3, esperada 2", EMBED_KIND_DIMENSION);
    expect_rows_fail(&TEI, "[[1,\"x\",3]]", 1, 2, "vetor 0 tem dimensão 3, esperada 2", EMBED_KIND_DIMENSION);
    expect_rows_fail(&TEI, "[[1,2],[3]]", 2, 2, "vetor 1 tem dimensão 1, esperada 2", EMBED_KIND_DIMENSION);
    expect_rows_fail(&TEI, "[[1,2],[3,\"x\"]]", 2, 2, "valor 1 do vetor 1 não é número", M);
    expect_rows_fail(&TEI, "[[1,2],[3,{\"a\":[1]}]]", 2, 2, "valor 1 do vetor 1 não é número", M);
    expect_rows_fail(&TEI, "[[1,2],[3,{\"a\":[1]]]", 2, 2, "JSON inválido", M);
    /* values */
    expect_rows_fail(&TEI, "[[1,1e39]]", 1, 2, "valor 1 do vetor 0 não é finito", M);
    expect_rows_fail(&TEI, "[[1,-1e999]]", 1, 2, "valor 1 do vetor 0 não é finito", M);
    expect_rows_fail(&TEI, "[\"AADAfw==\"]", 1, 1, "valor 0 do vetor 0 não é finito", M); /* NaN */
    expect_rows_fail(&TEI, "[[1,\"x\"]]", 1, 2, "valor 1 do vetor 0 não é número", M);
    expect_rows_fail(&TEI, "[[1,2],{\"a\":1}]", 2, 2, "vetor 1 não é lista nem texto base64", M);
    expect_rows_fail(&TEI, "[\"AA*AAA==\"]", 1, 1, "base64 inválido no vetor 0", M);
    expect_rows_fail(&TEI, "[\"AAAAA\"]", 1, 0, "tamanho inválido", M);
    /* paths: a missing one is named */
    expect_rows_fail(&COHERE, "{\"embeddings\":{\"int8\":[[1,2]]}}", 1, 2, "campo \"embeddings.float\" ausente", M);
    expect_rows_fail(&COHERE, "{\"embeddings\":[[1,2]]}", 1, 2, "campo \"embeddings.float\" ausente", M);
    expect_rows_fail(&OLLAMA, "[[1,2]]", 1, 2, "campo \"embeddings\" ausente ou não é lista", M);
    expect_rows_fail(&OLLAMA, "{\"embeddings\":{\"a\":1}}", 1, 2, "campo \"embeddings\" ausente ou não é lista", M);
    expect_rows_fail(&TEI, "{\"embeddings\":[[1,2]]}", 1, 2, "a resposta não é uma lista de vetores", M);
    expect_rows_fail(&OLLAMA, "{\"embeddings\":[[1,2]],\"embeddings\":[[1,2]]}", 1, 2, "mais de uma vez", M);
    /* the token count, when present, is an integer in 0..2^53-1 */
    expect_rows_fail(&OLLAMA, "{\"embeddings\":[[1,2]],\"prompt_eval_count\":-1}", 1, 2,
                     "\"prompt_eval_count\" não é um inteiro", M);
    expect_rows_fail(&OLLAMA, "{\"embeddings\":[[1,2]],\"prompt_eval_count\":1.5}", 1, 2, "não é um inteiro", M);
    expect_rows_fail(&OLLAMA, "{\"embeddings\":[[1,2]],\"prompt_eval_count\":\"7\"}", 1, 2, "não é um inteiro", M);
    expect_rows_fail(&OLLAMA, "{\"embeddings\":[[1,2]],\"prompt_eval_count\":null}", 1, 2, "não é um inteiro", M);
    expect_rows_fail(&COHERE,
                     "{\"embeddings\":{\"float\":[[1,2]]},\"meta\":{\"billed_units\":{\"input_tokens\":9007199254740993}}}",
                     1, 2, "\"meta.billed_units.input_tokens\" não é um inteiro", M);
    /* not JSON, truncated, trailing bytes, empty */
    expect_rows_fail(&TEI, "", 1, 2, "corpo vazio", M);
    expect_rows_fail(&TEI, "[[1,2]", 1, 2, "JSON inválido", M);
    expect_rows_fail(&OLLAMA, "{\"embeddings\":[[1,2]],\"prompt_eval_count\":3", 1, 2, "JSON inválido", M);
    expect_rows_fail(&TEI, "[[1,2]]x", 1, 2, "JSON inválido", M);
    expect_rows_fail(&TEI, "[[1,2]] []", 1, 2, "JSON inválido", M);
    expect_rows_fail(&OLLAMA, "{\"embeddings\":[[1,2]],}", 1, 2, "JSON inválido", M);
    expect_rows_fail(&TEI, "[[1,2,]]", 1, 2, "JSON inválido", M);
    expect_rows_fail(&TEI, "[[NaN,2]]", 1, 2, "JSON inválido", M);
}

/* The kept body is bounded like the HTTP client bounds it. */
static void test_rows_bound(void)
{
    size_t max = embed_expected_body_max(1, 2), sent = 0;
    embed_stream *s = embed_stream_new_rows(1, 2, &TEI);
    char chunk[4096], err[512];
    embed_vectors v;
    memset(chunk, ' ', sizeof chunk);
    ASSERT(s != NULL);
    ASSERT_INT_EQ(embed_stream_feed(s, "[[1,2]]", 7), 0);
    while (sent <= max && embed_stream_feed(s, chunk, sizeof chunk) == 0)
        sent += sizeof chunk;
    ASSERT(sent <= max);
    ASSERT_INT_EQ(embed_stream_finish(s, &v, err, sizeof err), -1);
    ASSERT(strstr(err, "resposta maior que") != NULL);
    embed_stream_free(s);
    /* an invalid shape is refused */
    const char *const empty_key[] = {""};
    embed_rows_shape bad = {empty_key, 1, NO_PATH, 0};
    ASSERT(embed_stream_new_rows(1, 2, &bad) == NULL);
    bad.rows_depth = EMBED_ROWS_MAX_PATH + 1;
    ASSERT(embed_stream_new_rows(1, 2, &bad) == NULL);
}

/* ---- "data" answers: Voyage's usage ------------------------------------ */

static long data_tokens(const char *usage)
{
    char body[256], err[512];
    embed_vectors v;
    embed_stream *s = embed_stream_new(1, 2);
    long tokens;
    snprintf(body, sizeof body, "{\"data\":[{\"embedding\":[1,2],\"index\":0}],\"usage\":%s}", usage);
    ASSERT(s != NULL);
    embed_stream_feed(s, body, strlen(body));
    if (embed_stream_finish(s, &v, err, sizeof err) != 0) {
        fprintf(stderr, "falhou: %s\n", err);
        abort();
    }
    tokens = v.prompt_tokens;
    embed_vectors_free(&v);
    embed_stream_free(s);
    return tokens;
}

static void test_data_total_tokens(void)
{
    ASSERT_INT_EQ(data_tokens("{\"total_tokens\":42}"), 42);             /* Voyage */
    ASSERT_INT_EQ(data_tokens("{\"prompt_tokens\":7,\"total_tokens\":42}"), 7); /* OpenAI */
    ASSERT_INT_EQ(data_tokens("{\"total_tokens\":42,\"prompt_tokens\":7}"), 7);
    ASSERT_INT_EQ(data_tokens("{}"), 0);
    ASSERT_INT_EQ(data_tokens("null"), 0);
}

/* ---- numbers: the fast conversion gives strtod's float ----------------- */

/* Each text, read by the primitive every decoder uses (embed_json.c), is
 * the double strtod gives, bit for bit; and decoded as a row, its float. */
static void expect_same_as_strtod(const char *const *texts, int n)
{
    size_t size = 16, o = 0;
    char *body, err[512];
    embed_vectors v;
    for (int i = 0; i < n; i++) {
        ej_cursor c = {texts[i], texts[i], texts[i] + strlen(texts[i])};
        double got = 0, want = strtod(texts[i], NULL);
        long long integer;
        int integral;
        ASSERT_INT_EQ(ej_read_number(&c, &got, &integer, &integral), 0);
        ASSERT(c.p == c.end);
        if (memcmp(&got, &want, sizeof got) != 0) {
            fprintf(stderr, "%s: lido %.17g, strtod %.17g\n", texts[i], got, want);
            abort();
        }
        if (integral)
            ASSERT_INT_EQ(integer, strtoll(texts[i], NULL, 10));
        size += strlen(texts[i]) + 1;
    }
    body = malloc(size);
    ASSERT(body != NULL);
    o += (size_t)sprintf(body, "[[");
    for (int i = 0; i < n; i++)
        o += (size_t)sprintf(body + o, "%s%s", i ? "," : "", texts[i]);
    sprintf(body + o, "]]");
    if (rows_parse(&TEI, body, 1, n, 0, &v, err, NULL) != 0) {
        fprintf(stderr, "falhou: %s\n", err);
        abort();
    }
    for (int i = 0; i < n; i++)
        ASSERT_NEAR(v.data[i], (float)strtod(texts[i], NULL), 0);
    embed_vectors_free(&v);
    free(body);
}

static void test_numbers_exact(void)
{
    static const char *const fixed[] = {
        "0", "-0", "-0.0", "1", "-1", "0.1", "0.5", "1e0", "1E+2", "1e-2", "-2.5e-1", "123456789",
        "9007199254740992", "9007199254740993", "1234567890123456789", "12345678901234567890",
        "0.000000000000000000000000000001", "1e22", "1e23", "1e-22", "1e-23", "4.9e-324", "-1e-40", "-9007199254740992", "-0e5", "0.0000000000000000000001e22",
        "0.30000000000000004", "-0.012345678901234567", "3.4028234663852886e38", "1.1754943508222875e-38",
        "100000000000000000000000", "0.00001", "123.456e-5", "0.10000000000000000000000000001",
    };
    enum { RANDOM = 20000 };
    static char texts[RANDOM][40];
    const char *ptrs[RANDOM];
    uint64_t x = 0x9e3779b97f4a7c15ULL;
    expect_same_as_strtod(fixed, (int)(sizeof fixed / sizeof fixed[0]));
    for (int i = 0; i < RANDOM; i++) { /* random values as providers print them */
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        double d = ((double)(x >> 11) / 9007199254740992.0 - 0.5) * pow(10, (int)(x % 9) - 6);
        snprintf(texts[i], sizeof texts[i], i % 3 == 0 ? "%.9g" : i % 3 == 1 ? "%.17g" : "%.6e", d);
        ptrs[i] = texts[i];
    }
    expect_same_as_strtod(ptrs, RANDOM);
}

/* ---- errors ------------------------------------------------------------ */

static void test_error_bodies(void)
{
    static const char voyage[] = "{\"detail\":\"Invalid model\"}";
    static const char tei[] = "{\"error\":\"Model not loaded\",\"error_type\":\"backend\"}";
    static const char cohere[] = "{\"id\":\"x\",\"message\":\"invalid request: texts\"}";
    static const char ollama[] = "{\"error\":\"model \\\"x\\\" not found\"}";
    char *code = NULL;
    char *msg = embed_parse_error_message(voyage, strlen(voyage), &code);
    ASSERT_STR_EQ(msg, "Invalid model");
    ASSERT(code == NULL);
    free(msg);
    msg = embed_parse_error_message(tei, strlen(tei), NULL);
    ASSERT_STR_EQ(msg, "Model not loaded");
    free(msg);
    msg = embed_parse_error_message(cohere, strlen(cohere), NULL);
    ASSERT_STR_EQ(msg, "invalid request: texts");
    free(msg);
    msg = embed_parse_error_message(ollama, strlen(ollama), NULL);
    ASSERT_STR_EQ(msg, "model \"x\" not found");
    free(msg);
}

static void test_classification(void)
{
    embed_kind kind = EMBED_KIND_NONE;
    /* TEI answers 424 when its backend fails: try again later */
    ASSERT_INT_EQ(embed_classify(CURLE_OK, 424, "backend error", NULL, &kind), EMBED_CLASS_TRANSIENT);
    ASSERT_INT_EQ(kind, EMBED_KIND_HTTP);
    ASSERT_INT_EQ(embed_classify(CURLE_OK, 413, NULL, NULL, NULL), EMBED_CLASS_PERMANENT);
    ASSERT_INT_EQ(embed_classify(CURLE_OK, 422, "Input validation error", NULL, NULL), EMBED_CLASS_PERMANENT);
    ASSERT_INT_EQ(embed_classify(CURLE_OK, 405, NULL, NULL, NULL), EMBED_CLASS_FATAL);
    /* an unreadable ca_file: no request can work */
    ASSERT_INT_EQ(embed_classify(CURLE_SSL_CACERT_BADFILE, 0, NULL, NULL, &kind), EMBED_CLASS_FATAL);
    ASSERT_INT_EQ(kind, EMBED_KIND_CONNECTION);
    /* an endpoint used as is does not speak of "/embeddings" */
    ASSERT(strstr(embed_fatal_hint_for(404, NULL, NULL, 1), "/embeddings") == NULL);
    ASSERT(strstr(embed_fatal_hint_for(404, NULL, NULL, 1), "dialeto") != NULL);
    ASSERT(strstr(embed_fatal_hint_for(404, NULL, NULL, 0), "/embeddings") != NULL);
    ASSERT(strstr(embed_fatal_hint_for(401, NULL, NULL, 1), "OPENAI_API_KEY") == NULL);
    ASSERT(strstr(embed_fatal_hint_for(401, NULL, NULL, 1), "provider.api_key") != NULL);
    ASSERT(strstr(embed_fatal_hint_for(401, NULL, NULL, 0), "OPENAI_API_KEY") != NULL);
}

int main(void)
{
    test_body_shapes();
    test_body_legacy_same();
    test_body_refusals();
    test_rows_shapes();
    test_rows_failures();
    test_rows_bound();
    test_data_total_tokens();
    test_numbers_exact();
    test_error_bodies();
    test_classification();
    printf("test_embed_dialects: ok\n");
    return 0;
}
