/*
 * test_embed_server_batch.c: the multipart/form-data parsing of the
 * embed-server's POST /v1/files (tests/integration/embed_server_batch_spec.lua
 * drives the Batch API end to end): the boundary from the Content-Type
 * (quoted or not), the parts by name, the filename, a delimiter-like text
 * inside a part, bodies that are not NUL-terminated, refusals; and the
 * Content-Type header kept by engine/http's parser.
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

static const char body_text[] = "--XyZ\r\n"
                                "Content-Disposition: form-data; name=\"purpose\"\r\n"
                                "\r\n"
                                "batch\r\n"
                                "--XyZ\r\n"
                                "content-disposition: form-data; name=\"file\"; filename=\"lote.jsonl\"\r\n"
                                "Content-Type: application/octet-stream\r\n"
                                "\r\n"
                                "linha 1\n--XyZ no meio\nlinha 3\n\r\n"
                                "--XyZ--\r\n";

/* A copy of text without its NUL (as httpd's buffer holds a body). */
static char *bytes_of(const char *text, size_t len)
{
    char *bytes = malloc(len);
    ASSERT(bytes != NULL);
    memcpy(bytes, text, len);
    return bytes;
}

static void test_parts(void)
{
    size_t len = sizeof body_text - 1;
    char *body = bytes_of(body_text, len);
    es_part part;
    ASSERT_INT_EQ(es_multipart_find("multipart/form-data; boundary=XyZ", body, len, "purpose", &part), 0);
    ASSERT_INT_EQ(part.len, 5);
    ASSERT(memcmp(part.data, "batch", 5) == 0);
    ASSERT_STR_EQ(part.filename, "");
    ASSERT_INT_EQ(es_multipart_find("Multipart/Form-Data; charset=x; boundary=\"XyZ\"", body, len, "file", &part),
                  0);
    ASSERT_STR_EQ(part.filename, "lote.jsonl");
    const char *want = "linha 1\n--XyZ no meio\nlinha 3\n";
    ASSERT_INT_EQ(part.len, strlen(want));
    ASSERT(memcmp(part.data, want, part.len) == 0);
    ASSERT_INT_EQ(es_multipart_find("multipart/form-data; boundary=XyZ", body, len, "outro", &part), -1);
    free(body);
}

static void test_refusals(void)
{
    size_t len = sizeof body_text - 1;
    es_part part;
    ASSERT_INT_EQ(es_multipart_find("application/json", body_text, len, "file", &part), -1);
    ASSERT_INT_EQ(es_multipart_find(NULL, body_text, len, "file", &part), -1);
    ASSERT_INT_EQ(es_multipart_find("multipart/form-data", body_text, len, "file", &part), -1);
    ASSERT_INT_EQ(es_multipart_find("multipart/form-data; boundary=outra", body_text, len, "file", &part), -1);
    /* cut before the closing delimiter: the file part has no end */
    size_t cut = (size_t)(strstr(body_text, "linha 3") - body_text);
    char *body = bytes_of(body_text, cut);
    ASSERT_INT_EQ(es_multipart_find("multipart/form-data; boundary=XyZ", body, cut, "file", &part), -1);
    ASSERT_INT_EQ(es_multipart_find("multipart/form-data; boundary=XyZ", body, cut, "purpose", &part), 0);
    free(body);
    /* a preamble before the first delimiter is skipped */
    const char *pre = "preambulo\r\n--b\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nx\r\n--b--";
    ASSERT_INT_EQ(es_multipart_find("multipart/form-data; boundary=b", pre, strlen(pre), "file", &part), 0);
    ASSERT_INT_EQ(part.len, 1);
}

static void test_head_content_type(void)
{
    const char *text = "POST /v1/files HTTP/1.1\r\nContent-Type: multipart/form-data; boundary=q\r\n"
                       "Content-Length: 0\r\n\r\n";
    size_t len = strlen(text);
    char *bytes = bytes_of(text, len);
    http_head head = {0};
    ASSERT_INT_EQ(http_head_parse(bytes, len, &head), 0);
    ASSERT_STR_EQ(head.content_type, "multipart/form-data; boundary=q");
    http_head_reset(&head);
    ASSERT(head.content_type == NULL);
    free(bytes);
}

int main(void)
{
    test_parts();
    test_refusals();
    test_head_content_type();
    return 0;
}
