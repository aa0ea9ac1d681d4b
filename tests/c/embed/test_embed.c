/*
 * test_embed.c: unit tests of the embeddings wire format (embed.c) with no
 * network: request body, response parsing in both encodings, validation
 * failures, error bodies and failure classification.
 */
#include "embed/embed.h"
#include "test_assert.h"

#include <jansson.h>
#include <math.h>
#include <stdint.h>

/* Standard base64 of little-endian float32 values (test-side encoder). */
static char *encode_floats(const float *values, int n)
{
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t nbytes = (size_t)n * 4;
    unsigned char *bytes = malloc(nbytes);
    char *out = malloc(nbytes / 3 * 4 + 8);
    size_t o = 0;
    ASSERT(bytes && out);
    for (int i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &values[i], 4);
        for (int b = 0; b < 4; b++)
            bytes[i * 4 + b] = (unsigned char)(u >> (8 * b));
    }
    for (size_t i = 0; i < nbytes; i += 3) {
        uint32_t chunk = (uint32_t)bytes[i] << 16;
        size_t left = nbytes - i;
        if (left > 1)
            chunk |= (uint32_t)bytes[i + 1] << 8;
        if (left > 2)
            chunk |= bytes[i + 2];
        out[o++] = alphabet[(chunk >> 18) & 63];
        out[o++] = alphabet[(chunk >> 12) & 63];
        out[o++] = left > 1 ? alphabet[(chunk >> 6) & 63] : '=';
        out[o++] = left > 2 ? alphabet[chunk & 63] : '=';
    }
    out[o] = '\0';
    free(bytes);
    return out;
}

/* embed_stream on body, fed in pieces of `piece` bytes (0 = all at once). */
static int parse_streamed(const char *body, size_t len, int count, int dim, size_t piece, embed_vectors *v,
                          char *err, size_t err_size)
{
    embed_stream *s = embed_stream_new(count, dim);
    ASSERT(s != NULL);
    for (size_t at = 0; at < len;) {
        size_t n = piece == 0 || len - at < piece ? len - at : piece;
        embed_stream_feed(s, body + at, n);
        at += n;
    }
    int rc = embed_stream_finish(s, v, err, err_size);
    embed_stream_free(s);
    return rc;
}

/* The whole body at once through the decoder the client uses. */
static int parse(const char *body, int count, int dim, embed_vectors *v, char *err)
{
    return parse_streamed(body, strlen(body), count, dim, 0, v, err, 256);
}

static void test_build_request(void)
{
    const char *texts[] = {"olá mundo", "segundo\"texto"};
    size_t lens[] = {strlen(texts[0]), strlen(texts[1])};
    char err[256];
    size_t len = 0;
    char *body = embed_build_request("text-embedding-3-small", texts, lens, 2, EMBED_ENCODING_BASE64, 0,
                                     &len, err, sizeof err);
    json_t *root;
    ASSERT(body != NULL);
    ASSERT_INT_EQ(len, strlen(body));
    root = json_loads(body, 0, NULL);
    ASSERT(root != NULL);
    ASSERT_STR_EQ(json_string_value(json_object_get(root, "model")), "text-embedding-3-small");
    ASSERT_STR_EQ(json_string_value(json_object_get(root, "encoding_format")), "base64");
    ASSERT(json_object_get(root, "dimensions") == NULL);
    ASSERT_INT_EQ(json_array_size(json_object_get(root, "input")), 2);
    ASSERT_STR_EQ(json_string_value(json_array_get(json_object_get(root, "input"), 0)), "olá mundo");
    ASSERT_STR_EQ(json_string_value(json_array_get(json_object_get(root, "input"), 1)), "segundo\"texto");
    json_decref(root);
    free(body);

    body = embed_build_request("m", texts, NULL, 1, EMBED_ENCODING_FLOAT, 256, &len, err, sizeof err);
    ASSERT(body != NULL);
    root = json_loads(body, 0, NULL);
    ASSERT(root != NULL);
    ASSERT_STR_EQ(json_string_value(json_object_get(root, "encoding_format")), "float");
    ASSERT_INT_EQ(json_integer_value(json_object_get(root, "dimensions")), 256);
    ASSERT_INT_EQ(json_array_size(json_object_get(root, "input")), 1);
    json_decref(root);
    free(body);

    /* escapes: quote, backslash, named and numbered control bytes, multibyte UTF-8 */
    {
        const char *odd[] = {"a\"b\\c\n\t\r\b\f\x01\x1f/é€😀\x7f"};
        body = embed_build_request("m\"x", odd, NULL, 1, EMBED_ENCODING_BASE64, 3, &len, err, sizeof err);
        ASSERT(body != NULL);
        ASSERT_INT_EQ(len, strlen(body));
        root = json_loads(body, 0, NULL);
        ASSERT(root != NULL);
        ASSERT_STR_EQ(json_string_value(json_object_get(root, "model")), "m\"x");
        ASSERT_STR_EQ(json_string_value(json_array_get(json_object_get(root, "input"), 0)), odd[0]);
        ASSERT_INT_EQ(json_integer_value(json_object_get(root, "dimensions")), 3);
        ASSERT(strstr(body, "\\u0001") != NULL && strstr(body, "\\n") != NULL);
        json_decref(root);
        free(body);
        const char *cut[] = {"ok", "\xe2\x82"}; /* truncated sequence */
        ASSERT(embed_build_request("m", cut, NULL, 2, EMBED_ENCODING_BASE64, 0, &len, err, sizeof err) == NULL);
        ASSERT(strstr(err, "texto 2") != NULL);
        ASSERT(embed_build_request("\xc3", texts, NULL, 1, EMBED_ENCODING_BASE64, 0, &len, err, sizeof err) == NULL);
        ASSERT(strstr(err, "modelo") != NULL);
    }

    /* invalid UTF-8 is refused with a pt-BR reason naming the text */
    {
        const char *bad[] = {"ok", "\xff\xfe"};
        body = embed_build_request("m", bad, NULL, 2, EMBED_ENCODING_FLOAT, 0, &len, err, sizeof err);
        ASSERT(body == NULL);
        ASSERT(strstr(err, "texto 2") != NULL);
        ASSERT(strstr(err, "UTF-8") != NULL);
    }
}

static void test_parse_float_reordered(void)
{
    embed_vectors v;
    char err[256];
    const char *body =
        "{\"object\":\"list\",\"data\":["
        "{\"object\":\"embedding\",\"index\":2,\"embedding\":[3.0,3.5]},"
        "{\"object\":\"embedding\",\"index\":0,\"embedding\":[1,1.5]},"
        "{\"object\":\"embedding\",\"index\":1,\"embedding\":[-2.0,2.5e0]}],"
        "\"model\":\"m\",\"usage\":{\"prompt_tokens\":17,\"total_tokens\":17}}";
    ASSERT_INT_EQ(parse(body, 3, 2, &v, err), 0);
    ASSERT_INT_EQ(v.count, 3);
    ASSERT_INT_EQ(v.dim, 2);
    ASSERT_INT_EQ(v.prompt_tokens, 17);
    ASSERT_NEAR(v.data[0], 1.0, 1e-6);
    ASSERT_NEAR(v.data[1], 1.5, 1e-6);
    ASSERT_NEAR(v.data[2], -2.0, 1e-6);
    ASSERT_NEAR(v.data[3], 2.5, 1e-6);
    ASSERT_NEAR(v.data[4], 3.0, 1e-6);
    ASSERT_NEAR(v.data[5], 3.5, 1e-6);
    embed_vectors_free(&v);
    ASSERT(v.data == NULL);

    /* unknown expected dim: taken from the answer */
    ASSERT_INT_EQ(parse(body, 3, 0, &v, err), 0);
    ASSERT_INT_EQ(v.dim, 2);
    embed_vectors_free(&v);
}

static void test_parse_base64(void)
{
    const float a[3] = {0.25f, -1.0f, 3.14159f};
    const float b[3] = {1e-8f, 123456.0f, -0.5f};
    char *ea = encode_floats(a, 3), *eb = encode_floats(b, 3);
    char body[1024];
    embed_vectors v;
    char err[256];
    snprintf(body, sizeof body,
             "{\"data\":[{\"index\":1,\"embedding\":\"%s\"},{\"index\":0,\"embedding\":\"%s\"}],"
             "\"usage\":{\"prompt_tokens\":5}}",
             eb, ea);
    ASSERT_INT_EQ(parse(body, 2, 3, &v, err), 0);
    ASSERT_INT_EQ(v.dim, 3);
    ASSERT_INT_EQ(v.prompt_tokens, 5);
    for (int j = 0; j < 3; j++) {
        ASSERT(v.data[j] == a[j]);       /* exact: bits travel unchanged */
        ASSERT(v.data[3 + j] == b[j]);
    }
    embed_vectors_free(&v);

    /* mixed forms in one answer are accepted (detected by JSON type) */
    snprintf(body, sizeof body,
             "{\"data\":[{\"index\":0,\"embedding\":\"%s\"},{\"index\":1,\"embedding\":[1,2,3]}]}", ea);
    ASSERT_INT_EQ(parse(body, 2, 3, &v, err), 0);
    ASSERT_INT_EQ(v.prompt_tokens, 0);
    ASSERT_NEAR(v.data[5], 3.0, 1e-6);
    embed_vectors_free(&v);

    /* unpadded base64 of 3 floats (12 bytes: no padding needed) and 1 float */
    {
        const float one = 2.0f;
        char *e1 = encode_floats(&one, 1); /* "AAAAQA==" */
        char *eq = strchr(e1, '=');
        ASSERT(eq != NULL);
        *eq = '\0';
        snprintf(body, sizeof body, "{\"data\":[{\"index\":0,\"embedding\":\"%s\"}]}", e1);
        ASSERT_INT_EQ(parse(body, 1, 1, &v, err), 0);
        ASSERT(v.data[0] == 2.0f);
        embed_vectors_free(&v);
        free(e1);
    }
    free(ea);
    free(eb);
}

static void expect_malformed(const char *body, int count, int dim, const char *fragment)
{
    embed_vectors v;
    char err[256];
    ASSERT_INT_EQ(parse(body, count, dim, &v, err), -1);
    ASSERT(v.data == NULL);
    if (strncmp(err, "resposta malformada do provedor: ", 33) != 0 || !strstr(err, fragment)) {
        fprintf(stderr, "mensagem inesperada: %s (esperado trecho \"%s\")\n", err, fragment);
        abort();
    }
}

static void test_parse_malformed(void)
{
    expect_malformed("", 1, 2, "corpo vazio");
    expect_malformed("{\"data\":[{\"index\":0,\"embedding\":[1,2]}", 1, 2, "JSON inválido");
    expect_malformed("{\"object\":\"list\"}", 1, 2, "\"data\"");
    expect_malformed("{\"data\":[{\"index\":0,\"embedding\":[1,2]}]}", 2, 2, "esperados 2 vetores, recebidos 1");
    expect_malformed("{\"data\":[{\"index\":0,\"embedding\":[1,2]},{\"index\":0,\"embedding\":[1,2]}]}", 2, 2,
                     "índice 0 repetido");
    expect_malformed("{\"data\":[{\"index\":0,\"embedding\":[1,2]},{\"index\":5,\"embedding\":[1,2]}]}", 2, 2,
                     "fora do intervalo");
    expect_malformed("{\"data\":[{\"embedding\":[1,2]}]}", 1, 2, "sem \"index\"");
    expect_malformed("{\"data\":[{\"index\":0,\"embedding\":[1,2,3]}]}", 1, 2, "dimensão 3, esperada 2");
    expect_malformed("{\"data\":[{\"index\":0,\"embedding\":[1,2]},{\"index\":1,\"embedding\":[1,2,3]}]}", 2, 0,
                     "dimensões diferentes");
    expect_malformed("{\"data\":[{\"index\":0,\"embedding\":[]}]}", 1, 0, "vazio");
    expect_malformed("{\"data\":[{\"index\":0,\"embedding\":[1,\"x\"]}]}", 1, 2, "não é número");
    expect_malformed("{\"data\":[{\"index\":0,\"embedding\":{\"a\":1}}]}", 1, 2, "nem texto base64");
    /* 1e39 does not fit a float */
    expect_malformed("{\"data\":[{\"index\":0,\"embedding\":[1,1e39]}]}", 1, 2, "não é finito");
    /* base64: bad character, bad length (5 chars), not a multiple of 4 bytes */
    expect_malformed("{\"data\":[{\"index\":0,\"embedding\":\"AA*AAA==\"}]}", 1, 1, "base64 inválido");
    expect_malformed("{\"data\":[{\"index\":0,\"embedding\":\"AAAAA\"}]}", 1, 0, "tamanho inválido");
    expect_malformed("{\"data\":[{\"index\":0,\"embedding\":\"AAAAAAAA\"}]}", 1, 0, "tamanho inválido");
    /* base64 NaN (0x7fc00000 little-endian) */
    expect_malformed("{\"data\":[{\"index\":0,\"embedding\":\"AADAfw==\"}]}", 1, 1, "não é finito");
    /* right dimension by base64 length but wrong expected dim */
    expect_malformed("{\"data\":[{\"index\":0,\"embedding\":\"AAAAQA==\"}]}", 1, 2, "dimensão 1, esperada 2");
}

/* The one-pass decoder (embed_decode.c): any key order, escaped slashes,
 * unknown nested values, strict JSON around them. */
static void test_decoder_shapes(void)
{
    const float a[2] = {0.5f, -2.0f};
    char *ea = encode_floats(a, 2);
    char escaped[64], body[1024];
    embed_vectors v;
    char err[256];
    size_t o = 0;
    /* "embedding" before "index", "\/" escapes inside base64, nested junk */
    for (const char *q = ea; *q; q++) {
        if (*q == '/')
            escaped[o++] = '\\';
        escaped[o++] = *q;
    }
    escaped[o] = '\0';
    snprintf(body, sizeof body,
             " {\"object\":\"list\",\"meta\":{\"x\":[1,{\"y\":null}],\"z\":\"a\\\"b\"},"
             "\"data\":[{\"embedding\":\"%s\",\"object\":\"embedding\",\"index\":0}],"
             "\"model\":\"m\",\"usage\":{\"total_tokens\":7,\"prompt_tokens\":7}} \n", escaped);
    ASSERT_INT_EQ(parse(body, 1, 2, &v, err), 0);
    ASSERT(v.data[0] == a[0] && v.data[1] == a[1]);
    ASSERT_INT_EQ(v.prompt_tokens, 7);
    ASSERT_INT_EQ(v.has_usage, 1);
    embed_vectors_free(&v);
    /* no usage: has_usage 0 */
    snprintf(body, sizeof body, "{\"data\":[{\"index\":0,\"embedding\":\"%s\"}],\"usage\":null}", ea);
    ASSERT_INT_EQ(parse(body, 1, 2, &v, err), 0);
    ASSERT_INT_EQ(v.has_usage, 0);
    embed_vectors_free(&v);
    free(ea);
    expect_malformed("{\"data\":[{\"index\":0,\"embedding\":[1,2]}]} x", 1, 2, "JSON inválido");
    expect_malformed("{\"data\":[{\"index\":0,\"embedding\":[1,2]}],}", 1, 2, "JSON inválido");
    expect_malformed("{\"data\":[{\"index\":0,\"embedding\":[1,2]}],\"data\":[]}", 1, 2, "repetido");
    expect_malformed("{\"data\":[{\"index\":0.0,\"embedding\":[1,2]}]}", 1, 2, "sem \"index\"");
    expect_malformed("{\"data\":[1]}", 1, 2, "sem \"index\"");
    expect_malformed("[1,2]", 1, 2, "\"data\"");
    expect_malformed("{\"data\":[{\"index\":0,\"embedding\":[1,2]},{\"index\":1,\"embedding\":[1,2]}]}", 1, 2,
                     "esperados 1 vetores, recebidos 2");
    expect_malformed("{\"data\":[{\"index\":0,\"embedding\":\"AAAA\\u0041AA=\"}]}", 1, 1, "base64 inválido");
}

/* The decoder against jansson on mutated answers: both accept or both
 * refuse, and accepted vectors are identical (a differential check). */
static void test_decoder_matches_jansson(void)
{
    const float a[3] = {0.125f, -4.0f, 9.5f};
    char *ea = encode_floats(a, 3);
    char base[512];
    uint32_t seed = 12345;
    snprintf(base, sizeof base,
             "{\"data\":[{\"index\":0,\"embedding\":\"%s\"},{\"index\":1,\"embedding\":[1.5,2,-3e2]}],"
             "\"usage\":{\"prompt_tokens\":3,\"total_tokens\":3}}", ea);
    free(ea);
    for (int round = 0; round < 20000; round++) {
        char body[512];
        size_t len = strlen(base);
        embed_vectors v;
        char err[256];
        json_error_t jerr;
        json_t *root;
        memcpy(body, base, len + 1);
        for (int m = 0; m < 1 + round % 3; m++) {
            seed = seed * 1103515245u + 12345u;
            size_t at = (seed >> 8) % len;
            static const char alphabet[] = "{}[],:\"0123 -.eAz/\\";
            body[at] = alphabet[(seed >> 20) % (sizeof alphabet - 1)];
        }
        root = json_loadb(body, len, 0, &jerr);
        int rc = parse_streamed(body, len, 2, 3, 0, &v, err, sizeof err);
        if (!root && rc == 0) {
            fprintf(stderr, "decodificador aceitou JSON que o jansson recusa: %s\n", body);
            abort();
        }
        if (rc == 0)
            embed_vectors_free(&v);
        json_decref(root);
    }
}

static void test_base64_decoder(void)
{
    unsigned char out[16];
    ASSERT_INT_EQ(embed_base64_decode("TWFu", 4, out), 3);
    ASSERT(memcmp(out, "Man", 3) == 0);
    ASSERT_INT_EQ(embed_base64_decode("TWE=", 4, out), 2);
    ASSERT(memcmp(out, "Ma", 2) == 0);
    ASSERT_INT_EQ(embed_base64_decode("TQ==", 4, out), 1);
    ASSERT_INT_EQ(embed_base64_decode("TQ", 2, out), 1);
    ASSERT_INT_EQ(embed_base64_decode("T", 1, out), -1);
    ASSERT_INT_EQ(embed_base64_decode("T=QA", 4, out), -1);
    ASSERT_INT_EQ(embed_base64_decode("", 0, out), 0);
}

static void test_utf8_sanitize(void)
{
    size_t n = 99;
    char *fixed;
    ASSERT(embed_utf8_sanitize("ação", strlen("ação"), &n) == NULL); /* valid: no copy */
    ASSERT_INT_EQ(n, strlen("ação"));
    /* Latin-1 "ação", a lone continuation byte and an overlong '/' */
    fixed = embed_utf8_sanitize("a\xe7\xe3o \x80 \xc0\xaf", 9, &n);
    ASSERT(fixed != NULL);
    ASSERT_STR_EQ(fixed, "a\xEF\xBF\xBD\xEF\xBF\xBDo \xEF\xBF\xBD \xEF\xBF\xBD\xEF\xBF\xBD");
    ASSERT_INT_EQ(n, strlen(fixed));
    ASSERT(embed_utf8_sanitize(fixed, n, &n) == NULL);
    free(fixed);
    /* surrogate U+D800 encoded in UTF-8 is invalid too */
    fixed = embed_utf8_sanitize("\xed\xa0\x80", 3, &n);
    ASSERT(fixed != NULL);
    ASSERT_INT_EQ(n, 9);
    free(fixed);
}

/* usage is validated like the rest of the answer: counts are non-negative
 * integers that fit; a wrong type or a negative count is a malformed answer. */
static void test_parse_usage(void)
{
    static const char ok_prefix[] = "{\"data\":[{\"index\":0,\"embedding\":[1,2]}]";
    char body[512];
    embed_vectors v;
    char err[256];
    static const char *const bad[] = {
        "\"usage\":{\"prompt_tokens\":-1,\"total_tokens\":3}",
        "\"usage\":{\"prompt_tokens\":3,\"total_tokens\":-3}",
        "\"usage\":{\"prompt_tokens\":1.5}",
        "\"usage\":{\"prompt_tokens\":\"7\"}",
        "\"usage\":{\"prompt_tokens\":9007199254740993}",
        "\"usage\":[1,2]",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(body, sizeof body, "%s,%s}", ok_prefix, bad[i]);
        expect_malformed(body, 1, 2, "usage");
    }
    /* absent, null or a valid usage are fine */
    snprintf(body, sizeof body, "%s,\"usage\":null}", ok_prefix);
    ASSERT_INT_EQ(parse(body, 1, 2, &v, err), 0);
    ASSERT_INT_EQ(v.prompt_tokens, 0);
    embed_vectors_free(&v);
    snprintf(body, sizeof body, "%s,\"usage\":{\"total_tokens\":4}}", ok_prefix);
    ASSERT_INT_EQ(parse(body, 1, 2, &v, err), 0);
    embed_vectors_free(&v);
    snprintf(body, sizeof body, "%s,\"usage\":{\"prompt_tokens\":0,\"total_tokens\":0}}", ok_prefix);
    ASSERT_INT_EQ(parse(body, 1, 2, &v, err), 0);
    ASSERT_INT_EQ(v.prompt_tokens, 0);
    embed_vectors_free(&v);
}

static void test_error_bodies(void)
{
    const char *openai = "{\"error\":{\"message\":\"The model `x` does not exist\",\"type\":\"invalid_request_error\","
                         "\"param\":null,\"code\":\"model_not_found\"}}";
    char *code = NULL;
    char *msg = embed_parse_error_message(openai, strlen(openai), &code);
    ASSERT_STR_EQ(msg, "The model `x` does not exist");
    ASSERT_STR_EQ(code, "model_not_found");
    free(msg);
    free(code);
    msg = embed_parse_error_message("{\"error\":\"Input validation error\"}", 34, &code);
    ASSERT_STR_EQ(msg, "Input validation error");
    ASSERT(code == NULL);
    free(msg);
    msg = embed_parse_error_message("{\"message\":\"limite\"}", 20, NULL);
    ASSERT_STR_EQ(msg, "limite");
    free(msg);
    ASSERT(embed_parse_error_message("<html>502 Bad Gateway</html>", 28, &code) == NULL);
    ASSERT(code == NULL);
    ASSERT(embed_parse_error_message("{\"error\":{\"code\":1}}", 20, &code) == NULL);
    ASSERT(code == NULL);
    ASSERT(embed_parse_error_message("", 0, NULL) == NULL);
}

static void test_classification(void)
{
    embed_kind kind = EMBED_KIND_NONE;
    ASSERT_INT_EQ(embed_classify(CURLE_OK, 200, NULL, NULL, &kind), EMBED_CLASS_OK);
    ASSERT_INT_EQ(kind, EMBED_KIND_NONE);
    ASSERT_INT_EQ(embed_classify(CURLE_OK, 429, NULL, NULL, &kind), EMBED_CLASS_TRANSIENT);
    ASSERT_INT_EQ(kind, EMBED_KIND_HTTP);
    ASSERT_INT_EQ(embed_classify(CURLE_OK, 408, NULL, NULL, NULL), EMBED_CLASS_TRANSIENT);
    ASSERT_INT_EQ(embed_classify(CURLE_OK, 409, NULL, NULL, NULL), EMBED_CLASS_TRANSIENT);
    ASSERT_INT_EQ(embed_classify(CURLE_OK, 500, NULL, NULL, NULL), EMBED_CLASS_TRANSIENT);
    ASSERT_INT_EQ(embed_classify(CURLE_OK, 503, NULL, NULL, NULL), EMBED_CLASS_TRANSIENT);
    ASSERT_INT_EQ(embed_classify(CURLE_OK, 429, "Rate limit for model m not found in cache", NULL, NULL),
                  EMBED_CLASS_TRANSIENT);
    ASSERT_INT_EQ(embed_classify(CURLE_OK, 400, "bad input", NULL, NULL), EMBED_CLASS_PERMANENT);
    ASSERT_INT_EQ(embed_classify(CURLE_OK, 413, NULL, NULL, NULL), EMBED_CLASS_PERMANENT);
    ASSERT_INT_EQ(embed_classify(CURLE_OK, 422, NULL, NULL, NULL), EMBED_CLASS_PERMANENT);
    /* a 404 is the endpoint or the model, never one input: nothing will work */
    ASSERT_INT_EQ(embed_classify(CURLE_OK, 404, "Not found", NULL, NULL), EMBED_CLASS_FATAL);
    ASSERT_INT_EQ(embed_classify(CURLE_OK, 404, NULL, NULL, NULL), EMBED_CLASS_FATAL);
    ASSERT_INT_EQ(embed_classify(CURLE_OK, 405, NULL, NULL, NULL), EMBED_CLASS_FATAL);
    ASSERT_INT_EQ(embed_classify(CURLE_OK, 301, NULL, NULL, NULL), EMBED_CLASS_FATAL);
    /* an unknown model answered with 400 is fatal; other 400s stay per input */
    ASSERT_INT_EQ(embed_classify(CURLE_OK, 400, "x", "model_not_found", NULL), EMBED_CLASS_FATAL);
    ASSERT_INT_EQ(embed_classify(CURLE_OK, 400, "The model `foo` does not exist", NULL, NULL), EMBED_CLASS_FATAL);
    ASSERT_INT_EQ(embed_classify(CURLE_OK, 400, "Unknown model: foo", NULL, NULL), EMBED_CLASS_FATAL);
    ASSERT_INT_EQ(embed_classify(CURLE_OK, 400,
                                 "This model's maximum context length is 8192 tokens, however you requested 9000",
                                 NULL, NULL),
                  EMBED_CLASS_PERMANENT);
    ASSERT_INT_EQ(embed_classify(CURLE_OK, 400, "entrada rejeitada", "invalid_input", NULL), EMBED_CLASS_PERMANENT);
    ASSERT_INT_EQ(embed_classify(CURLE_OK, 404, "The Model `x` does not exist", NULL, NULL), EMBED_CLASS_FATAL);
    ASSERT_INT_EQ(embed_classify(CURLE_OK, 401, NULL, NULL, NULL), EMBED_CLASS_FATAL);
    ASSERT_INT_EQ(embed_classify(CURLE_OK, 403, NULL, NULL, NULL), EMBED_CLASS_FATAL);
    ASSERT_INT_EQ(embed_classify(CURLE_OPERATION_TIMEDOUT, 0, NULL, NULL, &kind), EMBED_CLASS_TRANSIENT);
    ASSERT_INT_EQ(kind, EMBED_KIND_TIMEOUT);
    ASSERT_INT_EQ(embed_classify(CURLE_COULDNT_CONNECT, 0, NULL, NULL, &kind), EMBED_CLASS_TRANSIENT);
    ASSERT_INT_EQ(kind, EMBED_KIND_CONNECTION);
    ASSERT_INT_EQ(embed_classify(CURLE_PARTIAL_FILE, 200, NULL, NULL, &kind), EMBED_CLASS_TRANSIENT);
    ASSERT_INT_EQ(kind, EMBED_KIND_CONNECTION);
    ASSERT_INT_EQ(embed_classify(CURLE_GOT_NOTHING, 0, NULL, NULL, &kind), EMBED_CLASS_TRANSIENT);
    ASSERT_INT_EQ(embed_classify(CURLE_URL_MALFORMAT, 0, NULL, NULL, &kind), EMBED_CLASS_FATAL);

    ASSERT_STR_EQ(embed_class_name(EMBED_CLASS_TRANSIENT), "transient");
    ASSERT_STR_EQ(embed_class_name(EMBED_CLASS_PERMANENT), "permanent");
    ASSERT_STR_EQ(embed_class_name(EMBED_CLASS_FATAL), "fatal");
    ASSERT_STR_EQ(embed_kind_name(EMBED_KIND_MALFORMED), "malformed");
    ASSERT_STR_EQ(embed_kind_name(EMBED_KIND_TIMEOUT), "timeout");

    ASSERT(embed_wants_float_fallback(400, "Unsupported encoding_format: base64"));
    ASSERT(embed_wants_float_fallback(400, "BASE64 not supported"));
    ASSERT(!embed_wants_float_fallback(400, "input too long"));
    ASSERT(!embed_wants_float_fallback(500, "encoding_format"));
    ASSERT(!embed_wants_float_fallback(400, NULL));
}

/* What a fatal answer asks the operator to check. */
static void test_fatal_hints(void)
{
    ASSERT(strstr(embed_fatal_hint(401, NULL, NULL), "OPENAI_API_KEY") != NULL);
    ASSERT(strstr(embed_fatal_hint(403, NULL, NULL), "OPENAI_API_KEY") != NULL);
    ASSERT(strstr(embed_fatal_hint(404, "modelo 'x' não encontrado", "model_not_found"), "provider.model") != NULL);
    ASSERT(strstr(embed_fatal_hint(400, "The model `x` does not exist", NULL), "provider.model") != NULL);
    ASSERT(strstr(embed_fatal_hint(404, "rota não encontrada", "not_found"), "RAGOPS_EMBED_URL") != NULL);
    ASSERT(strstr(embed_fatal_hint(302, NULL, NULL), "RAGOPS_EMBED_URL") != NULL);
    ASSERT(strstr(embed_fatal_hint(0, NULL, NULL), "RAGOPS_EMBED_URL") != NULL);
}

/* "/embeddings" goes at the end of the path, before any query string. */
static void test_endpoint_url(void)
{
    char *url = embed_endpoint_url("http://h:1/v1");
    ASSERT_STR_EQ(url, "http://h:1/v1/embeddings");
    free(url);
    url = embed_endpoint_url("http://h/v1//");
    ASSERT_STR_EQ(url, "http://h/v1/embeddings");
    free(url);
    url = embed_endpoint_url("https://x.openai.azure.com/openai/deployments/d?api-version=2024-02-01");
    ASSERT_STR_EQ(url, "https://x.openai.azure.com/openai/deployments/d/embeddings?api-version=2024-02-01");
    free(url);
    url = embed_endpoint_url("http://h/v1/?k=1#f");
    ASSERT_STR_EQ(url, "http://h/v1/embeddings?k=1#f");
    free(url);
}

/* URLs shown to operators lose their userinfo, query and fragment. */
static void test_display_url(void)
{
    char out[128];
    embed_display_url("http://user:s3cr3t@host:8080/v1/embeddings?api-key=k3y&x=1#frag", out, sizeof out);
    ASSERT_STR_EQ(out, "http://host:8080/v1/embeddings");
    embed_display_url("https://api.openai.com/v1/embeddings", out, sizeof out);
    ASSERT_STR_EQ(out, "https://api.openai.com/v1/embeddings");
    embed_display_url("http://h/a@b/embeddings", out, sizeof out); /* "@" in the path is not userinfo */
    ASSERT_STR_EQ(out, "http://h/a@b/embeddings");
    embed_display_url("sem esquema", out, sizeof out);
    ASSERT_STR_EQ(out, "sem esquema");
    embed_display_url("http://u:p@host", out, 8); /* truncated, still no secret */
    ASSERT_STR_EQ(out, "http://");
}

/* A 1536-dim base64 vector (the fast quad loop, then the tail): every
 * value exact, and a bad character, a control byte or a non-finite value is
 * found wherever it sits (first quad, middle, last quad, last value). */
static void test_long_base64_paths(void)
{
    enum { DIM = 1536 };
    static float values[DIM];
    char err[256];
    embed_vectors v;
    for (int i = 0; i < DIM; i++)
        values[i] = (float)(i - 700) / 37.0f;
    char *enc = encode_floats(values, DIM);
    size_t n = strlen(enc), cap = n + 128;
    char *body = malloc(cap);
    ASSERT(body != NULL);
    snprintf(body, cap, "{\"data\":[{\"index\":0,\"embedding\":\"%s\"}]}", enc);
    ASSERT_INT_EQ(parse(body, 1, DIM, &v, err), 0);
    for (int i = 0; i < DIM; i++)
        ASSERT(v.data[i] == values[i]);
    embed_vectors_free(&v);
    const size_t at[] = {0, 3, n / 2, n - 5, n - 3};
    for (size_t k = 0; k < sizeof at / sizeof at[0]; k++) {
        char *q = strstr(body, enc) + at[k];
        char saved = *q;
        *q = '*';
        expect_malformed(body, 1, DIM, "base64 inválido");
        *q = '\x01'; /* a raw control byte is not valid JSON at all */
        expect_malformed(body, 1, DIM, "JSON inválido");
        *q = saved;
    }
    const int bad[] = {0, 700, DIM - 1};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        char want[64];
        float saved = values[bad[k]];
        values[bad[k]] = (k % 2) ? INFINITY : NAN;
        char *e2 = encode_floats(values, DIM);
        snprintf(body, cap, "{\"data\":[{\"index\":0,\"embedding\":\"%s\"}]}", e2);
        snprintf(want, sizeof want, "valor %d do vetor 0 não é finito", bad[k]);
        expect_malformed(body, 1, DIM, want);
        free(e2);
        values[bad[k]] = saved;
    }
    free(body);
    free(enc);
}

/* The decoder gives the same answer (the same vectors, usage and failures;
 * on valid JSON the same reasons) whatever the pieces the body arrives in. */
static void expect_stream_matches(const char *body, int count, int dim)
{
    static const size_t pieces[] = {0, 1, 2, 3, 7, 64, 1000};
    size_t len = strlen(body);
    embed_vectors a, b;
    char ea[256], eb[256];
    int ra = parse_streamed(body, len, count, dim, 0, &a, ea, sizeof ea);
    json_t *root = json_loadb(body, len, 0, NULL);
    int valid_json = root != NULL; /* a broken body may be refused for another of its faults */
    json_decref(root);
    for (size_t k = 0; k < sizeof pieces / sizeof pieces[0]; k++) {
        int rb = parse_streamed(body, len, count, dim, pieces[k], &b, eb, sizeof eb);
        if (ra != rb) {
            fprintf(stderr, "streaming (pedaços de %zu) %s o que a leitura inteira %s: %s\n[%s]\n", pieces[k],
                    rb == 0 ? "aceitou" : "recusou", ra == 0 ? "aceita" : "recusa", rb == 0 ? ea : eb, body);
            abort();
        }
        if (ra == 0) {
            ASSERT_INT_EQ(b.count, a.count);
            ASSERT_INT_EQ(b.dim, a.dim);
            ASSERT_INT_EQ(b.prompt_tokens, a.prompt_tokens);
            ASSERT_INT_EQ(b.has_usage, a.has_usage);
            ASSERT(memcmp(a.data, b.data, (size_t)a.count * (size_t)a.dim * sizeof(float)) == 0);
            embed_vectors_free(&b);
        } else if (valid_json && strcmp(ea, eb) != 0) {
            fprintf(stderr, "razões diferentes: \"%s\" e \"%s\"\n[%s]\n", ea, eb, body);
            abort();
        } else if (!strstr(eb, "resposta malformada do provedor: ")) {
            fprintf(stderr, "razão do streaming sem o prefixo: \"%s\"\n", eb);
            abort();
        }
    }
    if (ra == 0)
        embed_vectors_free(&a);
}

static void test_stream_decoder(void)
{
    const float a[3] = {0.125f, -4.0f, 9.5f};
    char *ea = encode_floats(a, 3);
    char base[600], body[600];
    uint32_t seed = 777;
    snprintf(base, sizeof base,
             " {\"object\":\"list\",\"data\":[{\"index\":1,\"embedding\":\"%s\"},"
             "{\"object\":\"embedding\",\"index\":0,\"embedding\":[1.5,2,-3e2],\"x\":{\"y\":[\"]}\\\"\"]}}],"
             "\"model\":\"m\\\"data\",\"usage\":{\"prompt_tokens\":3,\"total_tokens\":3}}\n", ea);
    expect_stream_matches(base, 2, 3);
    /* shapes: usage before data, escaped key, "\/" in base64, extra items, no data, empty, '#' */
    snprintf(body, sizeof body, "{\"usage\":null,\"data\":[{\"embedding\":\"%s\",\"index\":0}]}", ea);
    expect_stream_matches(body, 1, 3);
    static const struct {
        const char *body; /* the answer */
        int count, dim;   /* vectors asked for */
    } shapes[] = {
        {"{\"d\\u0061ta\":[{\"index\":0,\"embedding\":[1,2,3]}]}", 1, 3},
        {"{\"data\":[{\"index\":0,\"embedding\":\"AAAAQA\\/=\"}]}", 1, 0},
        {"{\"data\":[{\"index\":0,\"embedding\":[1]},{\"index\":1,\"embedding\":[1]}]}", 1, 1},
        {"{\"data\":[1,{\"index\":0,\"embedding\":[1]}]}", 2, 1},
        {"{\"data\":[#]}", 1, 1},
        {"{\"data\":[{\"index\":0,\"embedding\":[1]}],#\"a\":1}", 1, 1},
        {"{\"data\":[{\"index\":0,\"embedding\":[1]}],\"data\":[]}", 1, 1},
        {"{\"data\":[]}", 1, 1},
        {"", 1, 1},
        {"[1,2]", 1, 1},
        {"{\"data\":[{\"index\":0,\"embedding\":[1]}]", 1, 1},
        {"{\"data\":[{\"index\":0,\"embedding\":\"AAAA", 1, 1},
    };
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++)
        expect_stream_matches(shapes[k].body, shapes[k].count, shapes[k].dim);
    /* random mutations of the base answer */
    for (int round = 0; round < 4000; round++) {
        size_t len = strlen(base);
        memcpy(body, base, len + 1);
        for (int m = 0; m < 1 + round % 3; m++) {
            seed = seed * 1103515245u + 12345u;
            size_t at = (seed >> 8) % len;
            static const char alphabet[] = "{}[],:\"0123 -.eAz/\\#";
            body[at] = alphabet[(seed >> 20) % (sizeof alphabet - 1)];
        }
        expect_stream_matches(body, 2, 3);
    }
    free(ea);
}

/* A vector of another dimension than asked for fails with its own kind
 * (stages/embed.lua aborts the run on it), any other fault as malformed. */
static void test_failure_kind(void)
{
    static const char wrong_dim[] = "{\"data\":[{\"index\":0,\"embedding\":[1,2]}]}";
    static const char bad_index[] = "{\"data\":[{\"index\":7,\"embedding\":[1,2,3]}]}";
    const char *bodies[] = {wrong_dim, bad_index};
    const embed_kind kinds[] = {EMBED_KIND_DIMENSION, EMBED_KIND_MALFORMED};
    for (int k = 0; k < 2; k++) {
        embed_vectors v;
        char err[256];
        embed_stream *s = embed_stream_new(1, 3);
        ASSERT(s != NULL);
        embed_stream_feed(s, bodies[k], strlen(bodies[k]));
        ASSERT_INT_EQ(embed_stream_finish(s, &v, err, sizeof err), -1);
        ASSERT_INT_EQ(embed_stream_failure_kind(s), kinds[k]);
        embed_stream_free(s);
    }
    ASSERT_STR_EQ(embed_kind_name(EMBED_KIND_DIMENSION), "dimension");
}

int main(void)
{
    test_build_request();
    test_parse_float_reordered();
    test_parse_base64();
    test_parse_malformed();
    test_parse_usage();
    test_decoder_shapes();
    test_decoder_matches_jansson();
    test_failure_kind();
    test_base64_decoder();
    test_long_base64_paths();
    test_stream_decoder();
    test_utf8_sanitize();
    test_error_bodies();
    test_classification();
    test_fatal_hints();
    test_display_url();
    test_endpoint_url();
    printf("test_embed: ok\n");
    return 0;
}
