/*
 * test_embed_server_dialects.c: the pieces of the embed-server's dialects
 * that are checked best one by one (tests/integration/
 * embed_server_dialects_spec.lua drives every dialect end to end): the
 * request head's query string and api-key header (engine/http's parser,
 * also from bytes that are not NUL-terminated),
 * the tokenizer's cuts for truncation, the dialect table and its defaults,
 * and the options and command line that choose a dialect and its limits.
 */
#include "embed-server/embed_server_internal.h"
#include "http/http_parse.h"
#include "test_assert.h"

#include <stdlib.h>
#include <string.h>

/* Under ASan, string functions must not read past a string's bytes even
 * when the bytes are not NUL-terminated (tests/run_all.sh sets the same). */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "strict_string_checks=1";
}

/* A head parsed straight from the bytes of a connection's buffer: no NUL
 * after them (the buffer is full), so nothing may be copied with strndup,
 * which reads up to a NUL under ASan's strict checks. */
static void test_head_without_nul(void)
{
    const char *text = "POST /embed?x=1 HTTP/1.1\r\napi-key: k\r\nAuthorization: Bearer t\r\n"
                       "X-Request-Id: rg-1\r\n\r\n";
    size_t len = strlen(text);
    char *bytes = malloc(len);
    ASSERT(bytes != NULL);
    memcpy(bytes, text, len);
    http_head head = {0};
    ASSERT_INT_EQ(http_head_parse(bytes, len, &head), 0);
    ASSERT_STR_EQ(head.path, "/embed");
    ASSERT_STR_EQ(head.query, "x=1");
    ASSERT_STR_EQ(head.api_key, "k");
    ASSERT_STR_EQ(head.authorization, "Bearer t");
    ASSERT_STR_EQ(head.request_id, "rg-1");
    http_head_reset(&head);
    free(bytes);
}

static void test_head_query_and_api_key(void)
{
    const char *text = "POST /openai/deployments/dep-1/embeddings?api-version=2024-10-21&x=1 HTTP/1.1\r\n"
                       "API-Key: chave-azure\r\nContent-Length: 0\r\n\r\n";
    http_head head = {0};
    ASSERT_INT_EQ(http_head_parse(text, strlen(text), &head), 0);
    ASSERT_STR_EQ(head.path, "/openai/deployments/dep-1/embeddings");
    ASSERT(head.query != NULL);
    ASSERT_STR_EQ(head.query, "api-version=2024-10-21&x=1");
    ASSERT(head.api_key != NULL);
    ASSERT_STR_EQ(head.api_key, "chave-azure");
    ASSERT(head.authorization == NULL);
    http_head_reset(&head);

    const char *plain = "POST /v1/embeddings HTTP/1.1\r\nAuthorization: Bearer k\r\n\r\n";
    ASSERT_INT_EQ(http_head_parse(plain, strlen(plain), &head), 0);
    ASSERT_STR_EQ(head.path, "/v1/embeddings");
    ASSERT(head.query == NULL);
    ASSERT(head.api_key == NULL);
    ASSERT_STR_EQ(head.authorization, "Bearer k");
    http_head_reset(&head);

    const char *empty_query = "GET /info? HTTP/1.1\r\n\r\n";
    ASSERT_INT_EQ(http_head_parse(empty_query, strlen(empty_query), &head), 0);
    ASSERT_STR_EQ(head.path, "/info");
    ASSERT_STR_EQ(head.query, "");
    http_head_reset(&head);
}

static void test_tokenizer_cuts(void)
{
    const char *text = "Quem não arrisca, não petisca.";
    size_t len = strlen(text);
    ASSERT_INT_EQ(es_count_tokens(text, len), 7);
    ASSERT_INT_EQ(es_token_offset(text, len, 0), 0);
    /* the first 3 tokens: "Quem não arrisca" */
    size_t end = es_token_offset(text, len, 3);
    ASSERT_INT_EQ(end, strlen("Quem não arrisca"));
    ASSERT_INT_EQ(es_count_tokens(text, end), 3);
    /* the last 2 tokens: "petisca." */
    size_t start = es_token_offset(text, len, 7 - 2);
    ASSERT_STR_EQ(text + start, "petisca.");
    ASSERT_INT_EQ(es_count_tokens(text + start, len - start), 2);
    /* k at or past the count: the whole text */
    ASSERT_INT_EQ(es_token_offset(text, len, 7), len);
    ASSERT_INT_EQ(es_token_offset(text, len, 100), len);
    /* leading spaces are not a token; a cut never splits UTF-8 */
    const char *accents = "  ação  coração";
    ASSERT_INT_EQ(es_token_offset(accents, strlen(accents), 0), 2);
    ASSERT_INT_EQ(es_token_offset(accents, strlen(accents), 1), strlen("  ação  "));
}

static void test_dialect_table(void)
{
    static const struct {
        const char *name;                         /* --api */
        int inputs, input_tokens, request_tokens; /* default limits */
        int size_status;                          /* status over a limit */
    } want[] = {
        {"openai", 2048, 8192, 300000, 400}, {"azure", 2048, 8192, 300000, 400}, {"ollama", 0, 8192, 0, 400},
        {"tei", 32, 512, 0, 413},            {"voyage", 1000, 32000, 320000, 400}, {"cohere", 96, 512, 0, 400},
    };
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
        const es_dialect *d = es_dialect_find(want[k].name);
        ASSERT(d != NULL);
        ASSERT_STR_EQ(d->name, want[k].name);
        ASSERT_INT_EQ(d->max_inputs, want[k].inputs);
        ASSERT_INT_EQ(d->max_input_tokens, want[k].input_tokens);
        ASSERT_INT_EQ(d->max_request_tokens, want[k].request_tokens);
        ASSERT_INT_EQ(d->size_status, want[k].size_status);
        ASSERT(strstr(es_dialect_names, want[k].name) != NULL);
    }
    ASSERT_INT_EQ(es_dialect_find("openai")->request_tokens_by_bytes, 1);
    ASSERT_INT_EQ(es_dialect_find("voyage")->request_tokens_by_bytes, 0);
    ASSERT(es_dialect_find("gemini") == NULL);
    ASSERT(es_dialect_find(NULL) == NULL);
}

static void test_options(void)
{
    uv_loop_t loop;
    embed_server_opts opts;
    char *err = NULL;
    ASSERT_INT_EQ(uv_loop_init(&loop), 0);
    embed_server_opts_init(&opts);
    ASSERT_STR_EQ(opts.api, "openai");
    ASSERT_INT_EQ(opts.max_inputs, EMBED_SERVER_DIALECT_DEFAULT);
    opts.port = 0;
    opts.api = "bedrock";
    ASSERT(embed_server_start(&loop, &opts, &err) == NULL);
    ASSERT(err != NULL && strstr(err, "api desconhecida") != NULL);
    free(err);
    err = NULL;
    opts.api = "tei";
    opts.max_input_tokens = -2;
    ASSERT(embed_server_start(&loop, &opts, &err) == NULL);
    ASSERT(err != NULL);
    free(err);
    ASSERT_INT_EQ(uv_loop_close(&loop), 0);

    char *bad_api[] = {"embed-server", "--api", "gemini", NULL};
    char *empty_api[] = {"embed-server", "--api=", NULL};
    char *bad_tokens[] = {"embed-server", "--max-input-tokens", "-1", NULL};
    char *bad_request[] = {"embed-server", "--max-request-tokens", "x", NULL};
    ASSERT_INT_EQ(embed_server_main(3, bad_api), 2);
    ASSERT_INT_EQ(embed_server_main(2, empty_api), 2);
    ASSERT_INT_EQ(embed_server_main(3, bad_tokens), 2);
    ASSERT_INT_EQ(embed_server_main(3, bad_request), 2);
}

int main(void)
{
    test_head_query_and_api_key();
    test_head_without_nul();
    test_tokenizer_cuts();
    test_dialect_table();
    test_options();
    return 0;
}
