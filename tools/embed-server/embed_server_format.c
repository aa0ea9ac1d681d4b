/*
 * embed_server_format.c: what each dialect answers (es_answer_ops): the
 * body of its errors, and of a 200: feature-hashed vectors written as JSON
 * floats (9 significant digits, so a float round-trips) or as base64 of
 * little-endian float32, in the dialect's envelope with its usage, and the
 * deliberately broken variants of --malformed-rate / --bad-usage-rate. Also
 * the server's tokenizer (the usage it reports, the limits it checks and
 * where it cuts a truncated input). And the plumbing of every answer:
 * growable byte buffers, formatted strings and es_response.
 */
#include "embed_server_internal.h"
#include "featurehash.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const double es_pow10_table[] = {
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
};

/*
 * Writes value with 9 significant digits (enough to round-trip a float) into
 * out (>= 32 bytes); returns the length. Much faster than snprintf("%.9g").
 */
static size_t es_format_float(char *out, float value)
{
    if (value == 0.0f || !isfinite(value)) {
        out[0] = '0';
        return 1;
    }
    double magnitude = fabs((double)value);
    int exp10 = (int)floor(log10(magnitude));
    int scale = 8 - exp10;
    if (scale < 0 || scale > 22 || exp10 < -14)
        return (size_t)snprintf(out, 32, "%.9g", (double)value);
    uint64_t mantissa = (uint64_t)llround(magnitude * es_pow10_table[scale]);
    if (mantissa >= 1000000000ULL) {
        exp10++;
        scale--;
        mantissa = (uint64_t)llround(magnitude * es_pow10_table[scale]);
    } else if (mantissa < 100000000ULL && scale < 22) {
        exp10--;
        scale++;
        mantissa = (uint64_t)llround(magnitude * es_pow10_table[scale]);
    }
    char digits[10];
    for (int i = 8; i >= 0; i--) {
        digits[i] = (char)('0' + mantissa % 10);
        mantissa /= 10;
    }
    int ndigits = 9;
    while (ndigits > 1 && digits[ndigits - 1] == '0')
        ndigits--;

    char *p = out;
    if (value < 0)
        *p++ = '-';
    if (exp10 < 0 && exp10 >= -5) {
        *p++ = '0';
        *p++ = '.';
        for (int i = 0; i < -exp10 - 1; i++)
            *p++ = '0';
        memcpy(p, digits, (size_t)ndigits);
        p += ndigits;
    } else if (exp10 >= 0 && exp10 < 9) {
        for (int i = 0; i <= exp10; i++)
            *p++ = i < ndigits ? digits[i] : '0';
        if (ndigits > exp10 + 1) {
            *p++ = '.';
            memcpy(p, digits + exp10 + 1, (size_t)(ndigits - exp10 - 1));
            p += ndigits - exp10 - 1;
        }
    } else {
        *p++ = digits[0];
        if (ndigits > 1) {
            *p++ = '.';
            memcpy(p, digits + 1, (size_t)(ndigits - 1));
            p += ndigits - 1;
        }
        p += sprintf(p, "e%c%02d", exp10 < 0 ? '-' : '+', abs(exp10));
    }
    return (size_t)(p - out);
}

/* Byte `at` of the little-endian float32 bytes of vec, whatever the host's order. */
static unsigned char es_float_byte(const float *vec, size_t at)
{
    uint32_t bits;
    memcpy(&bits, &vec[at / 4], sizeof bits);
    return (unsigned char)(bits >> (8 * (at % 4)));
}

/* Appends the base64 of the little-endian float32 bytes of vec: three
 * bytes to four characters per step (on a little-endian host the floats'
 * own bytes are read in place; this was a quarter of the server's CPU). */
static int es_append_base64_floats(es_buf *buf, const float *vec, size_t dim)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t nbytes = dim * 4, i = 0;
    if (es_buf_reserve(buf, (nbytes + 2) / 3 * 4 + 1) != 0)
        return -1;
    char *p = buf->data + buf->len;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    const unsigned char *in = (const unsigned char *)vec;
    for (; i + 3 <= nbytes; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        p[0] = alphabet[v >> 18];
        p[1] = alphabet[(v >> 12) & 63];
        p[2] = alphabet[(v >> 6) & 63];
        p[3] = alphabet[v & 63];
        p += 4;
    }
#endif
    for (; i < nbytes; i += 3) {
        size_t left = nbytes - i;
        uint32_t v = (uint32_t)es_float_byte(vec, i) << 16;
        if (left > 1)
            v |= (uint32_t)es_float_byte(vec, i + 1) << 8;
        if (left > 2)
            v |= es_float_byte(vec, i + 2);
        *p++ = alphabet[v >> 18];
        *p++ = alphabet[(v >> 12) & 63];
        *p++ = left > 1 ? alphabet[(v >> 6) & 63] : '=';
        *p++ = left > 2 ? alphabet[v & 63] : '=';
    }
    buf->len = (size_t)(p - buf->data);
    buf->data[buf->len] = '\0';
    return 0;
}

/* Appends vec (dim floats) as a JSON array of numbers. */
static int es_append_float_array(es_buf *buf, const float *vec, size_t dim)
{
    if (es_buf_reserve(buf, dim * 17 + 8) != 0)
        return -1;
    char *p = buf->data + buf->len;
    *p++ = '[';
    for (size_t k = 0; k < dim; k++) {
        if (k)
            *p++ = ',';
        p += es_format_float(p, vec[k]);
    }
    *p++ = ']';
    buf->len = (size_t)(p - buf->data);
    buf->data[buf->len] = '\0';
    return 0;
}


/* Appends vector number index: bare or wrapped in {"object":"embedding",
 * "index":i,"embedding":...}, as JSON floats or a base64 string. */
static int es_append_vector(es_buf *out, size_t index, const float *vec, size_t dim, int base64, int wrapped)
{
    if (index && es_buf_append(out, ",", 1) != 0)
        return -1;
    if (wrapped && es_buf_appendf(out, "{\"object\":\"embedding\",\"index\":%zu,\"embedding\":", index) != 0)
        return -1;
    if (base64) {
        if (es_buf_append(out, "\"", 1) != 0 || es_append_base64_floats(out, vec, dim) != 0 ||
            es_buf_append(out, "\"", 1) != 0)
            return -1;
    } else if (es_append_float_array(out, vec, dim) != 0) {
        return -1;
    }
    return wrapped ? es_buf_append(out, "}", 1) : 0;
}

/* ---------- the tokenizer ---------- */

/* 1 when byte c belongs to a word: ASCII letter or digit, or any UTF-8 byte. */
static int es_word_byte(unsigned char c)
{
    return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') || c >= 0x80;
}

/* A rule that is not bytes/4 (so the engine's calibration has something to
 * learn): one token per word and one per visible ASCII punctuation mark. */
uint64_t es_count_tokens(const char *text, size_t len)
{
    uint64_t tokens = 0;
    int in_word = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (es_word_byte(c)) {
            tokens += !in_word;
            in_word = 1;
            continue;
        }
        in_word = 0;
        if (c > ' ' && c < 0x7f)
            tokens++;
    }
    return tokens;
}

size_t es_token_offset(const char *text, size_t len, uint64_t k)
{
    uint64_t tokens = 0;
    int in_word = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        int word = es_word_byte(c);
        int starts = word ? !in_word : (c > ' ' && c < 0x7f);
        in_word = word;
        if (!starts)
            continue;
        if (tokens == k)
            return i;
        tokens++;
    }
    return len;
}

/* ---------- error bodies ---------- */

/* OpenAI's error.type and error.code of each kind (code NULL: null). */
static const struct {
    const char *type; /* error.type */
    const char *code; /* error.code */
} es_openai_kinds[] = {
    [ES_ERR_INVALID] = {"invalid_request_error", NULL},
    [ES_ERR_AUTH] = {"invalid_request_error", "invalid_api_key"},
    [ES_ERR_MODEL] = {"invalid_request_error", "model_not_found"},
    [ES_ERR_ROUTE] = {"invalid_request_error", "not_found"},
    [ES_ERR_RATE] = {"requests", "rate_limit_exceeded"},
    [ES_ERR_SERVER] = {"server_error", NULL},
    [ES_ERR_REJECTED] = {"invalid_request_error", NULL},
    [ES_ERR_TOO_MANY_INPUTS] = {"invalid_request_error", "too_many_inputs"},
    [ES_ERR_INPUT_TOKENS] = {"invalid_request_error", "context_length_exceeded"},
    [ES_ERR_REQUEST_TOKENS] = {"max_tokens_per_request", "max_tokens_per_request"},
    [ES_ERR_RATE_TOKENS] = {"tokens", "rate_limit_exceeded"},
    [ES_ERR_RATE_CONCURRENCY] = {"concurrency", "rate_limit_exceeded"},
};

/* {"error":{"message","type","param":null,"code"}} */
static json_t *es_openai_error(es_error_kind kind, const char *message)
{
    return json_pack("{s:{s:s, s:s, s:n, s:s?}}", "error", "message", message, "type", es_openai_kinds[kind].type,
                     "param", "code", es_openai_kinds[kind].code);
}

/* {"error": message} */
static json_t *es_ollama_error(es_error_kind kind, const char *message)
{
    (void)kind;
    return json_pack("{s:s}", "error", message);
}

/* {"error": message, "error_type": ...} */
static json_t *es_tei_error(es_error_kind kind, const char *message)
{
    static const char *const types[] = {
        [ES_ERR_INVALID] = "Validation", [ES_ERR_AUTH] = "Unauthorized", [ES_ERR_MODEL] = "NotFound",
        [ES_ERR_ROUTE] = "NotFound", [ES_ERR_RATE] = "Overloaded", [ES_ERR_SERVER] = "Backend",
        [ES_ERR_REJECTED] = "Validation", [ES_ERR_TOO_MANY_INPUTS] = "Validation",
        [ES_ERR_INPUT_TOKENS] = "Validation", [ES_ERR_REQUEST_TOKENS] = "Validation",
        [ES_ERR_RATE_TOKENS] = "Overloaded", [ES_ERR_RATE_CONCURRENCY] = "Overloaded",
    };
    return json_pack("{s:s, s:s}", "error", message, "error_type", types[kind]);
}

/* {"detail": message} */
static json_t *es_voyage_error(es_error_kind kind, const char *message)
{
    (void)kind;
    return json_pack("{s:s}", "detail", message);
}

/* {"message": message} */
static json_t *es_cohere_error(es_error_kind kind, const char *message)
{
    (void)kind;
    return json_pack("{s:s}", "message", message);
}

/* ---------- 200 envelopes ---------- */

static int es_list_head(es_buf *out, const es_answer_ctx *ctx)
{
    (void)ctx;
    return es_buf_appendf(out, "{\"object\":\"list\",\"data\":[");
}

static int es_openai_tail(es_buf *out, const es_answer_ctx *ctx)
{
    return es_buf_appendf(out, "],\"model\":%s,\"usage\":{\"prompt_tokens\":%lld,\"total_tokens\":%llu}}",
                          ctx->model_json, ctx->tokens, (unsigned long long)ctx->req->tokens);
}

static int es_ollama_head(es_buf *out, const es_answer_ctx *ctx)
{
    return es_buf_appendf(out, "{\"model\":%s,\"embeddings\":[", ctx->model_json);
}

/* Durations in ns, made up but deterministic. */
static int es_ollama_tail(es_buf *out, const es_answer_ctx *ctx)
{
    unsigned long long load_ns = 1000000ULL, total_ns = load_ns + 1000ULL * ctx->req->tokens;
    return es_buf_appendf(out, "],\"total_duration\":%llu,\"load_duration\":%llu,\"prompt_eval_count\":%lld}", total_ns,
                          load_ns, ctx->tokens);
}

static int es_tei_head(es_buf *out, const es_answer_ctx *ctx)
{
    (void)ctx;
    return es_buf_append(out, "[", 1);
}

static int es_tei_tail(es_buf *out, const es_answer_ctx *ctx)
{
    (void)ctx;
    return es_buf_append(out, "]", 1);
}

static int es_voyage_tail(es_buf *out, const es_answer_ctx *ctx)
{
    return es_buf_appendf(out, "],\"model\":%s,\"usage\":{\"total_tokens\":%lld}}", ctx->model_json, ctx->tokens);
}

static int es_cohere_head(es_buf *out, const es_answer_ctx *ctx)
{
    return es_buf_appendf(out, "{\"id\":\"es-%llu\",\"embeddings\":{\"float\":[", ctx->id);
}

/* The texts come back as sent. */
static int es_cohere_tail(es_buf *out, const es_answer_ctx *ctx)
{
    char *texts = json_dumps(ctx->req->inputs, JSON_COMPACT);
    int rc = texts ? es_buf_appendf(out,
                                    "]},\"texts\":%s,\"meta\":{\"api_version\":{\"version\":\"2\"},"
                                    "\"billed_units\":{\"input_tokens\":%lld}},\"response_type\":\"embeddings_by_type\"}",
                                    texts, ctx->tokens)
                   : -1;
    free(texts);
    return rc;
}

#define ES_OPENAI_ENDLESS "{\"object\":\"list\",\"data\":[{\"object\":\"embedding\",\"index\":0,\"embedding\":\""

const es_answer_ops es_answer_openai = {es_openai_error, es_list_head, es_openai_tail, 1, 1, ES_OPENAI_ENDLESS};
const es_answer_ops es_answer_ollama = {es_ollama_error, es_ollama_head, es_ollama_tail, 0, 1,
                                        "{\"model\":\"m\",\"embeddings\":[[\""};
const es_answer_ops es_answer_tei = {es_tei_error, es_tei_head, es_tei_tail, 0, 0, "[[\""};
const es_answer_ops es_answer_voyage = {es_voyage_error, es_list_head, es_voyage_tail, 1, 1, ES_OPENAI_ENDLESS};
const es_answer_ops es_answer_cohere = {es_cohere_error, es_cohere_head, es_cohere_tail, 0, 1,
                                        "{\"id\":\"es\",\"embeddings\":{\"float\":[[\""};

/* ---------- the 200 ---------- */

/* Appends the vectors of req's texts (one more, or one component short,
 * when malformed says so) into out, computed in vec (req->dim floats). */
static int es_append_vectors(es_buf *out, const embed_server *server, const es_embed_request *req,
                             es_malformed malformed, float *vec)
{
    size_t count = json_array_size(req->texts);
    size_t entries = malformed == ES_EXTRA_VECTOR ? count + 1 : count;
    size_t emitted_dim = malformed == ES_SHORT_VECTORS ? req->dim - 1 : req->dim;
    int wrapped = server->dialect->answer->wrapped;
    for (size_t i = 0; i < entries; i++) {
        json_t *item = json_array_get(req->texts, i < count ? i : count - 1);
        size_t len = json_string_length(item);
        (server->dense ? featurehash_embed_dense : featurehash_embed)(json_string_value(item), len, vec, req->dim);
        if (es_append_vector(out, i, vec, emitted_dim, req->base64, wrapped) != 0)
            return -1;
    }
    return 0;
}

es_response *es_build_embeddings(const embed_server *server, const es_embed_request *req, es_malformed malformed)
{
    const es_answer_ops *ops = server->dialect->answer;
    es_buf out = {0};
    if (malformed == ES_BAD_USAGE && !ops->has_usage)
        malformed = ES_EXTRA_VECTOR; /* nothing to break in a usage it does not have */
    es_answer_ctx ctx = {req, NULL, malformed == ES_BAD_USAGE ? -1LL : (long long)req->tokens,
                         (unsigned long long)server->last_request_id + 1};
    float *vec = malloc(req->dim * sizeof(float));
    char *model_json = es_json_quote(req->model ? req->model : "");
    ctx.model_json = model_json;

    if (vec == NULL || model_json == NULL || ops->head(&out, &ctx) != 0 ||
        es_append_vectors(&out, server, req, malformed, vec) != 0 || ops->tail(&out, &ctx) != 0) {
        free(out.data);
        out.data = NULL;
    } else if (malformed == ES_TRUNCATED) {
        out.len = out.len / 2; /* truncated JSON */
    }
    free(vec);
    free(model_json);
    return out.data ? es_response_new(200, "application/json", out.data, out.len) : NULL;
}

/* ---------- buffers, formatted strings, answers ---------- */

int es_buf_reserve(es_buf *buf, size_t extra)
{
    if (buf->cap - buf->len >= extra)
        return 0;
    size_t cap = buf->cap ? buf->cap : 256;
    while (cap - buf->len < extra)
        cap *= 2;
    char *data = realloc(buf->data, cap);
    if (data == NULL)
        return -1;
    buf->data = data;
    buf->cap = cap;
    return 0;
}

int es_buf_append(es_buf *buf, const char *data, size_t len)
{
    if (es_buf_reserve(buf, len + 1) != 0)
        return -1;
    memcpy(buf->data + buf->len, data, len);
    buf->len += len;
    buf->data[buf->len] = '\0';
    return 0;
}

static int es_buf_vappendf(es_buf *buf, const char *fmt, va_list ap)
{
    va_list again;
    va_copy(again, ap);
    int needed = vsnprintf(NULL, 0, fmt, ap);
    if (needed < 0 || es_buf_reserve(buf, (size_t)needed + 1) != 0) {
        va_end(again);
        return -1;
    }
    vsnprintf(buf->data + buf->len, (size_t)needed + 1, fmt, again);
    va_end(again);
    buf->len += (size_t)needed;
    return 0;
}

int es_buf_appendf(es_buf *buf, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = es_buf_vappendf(buf, fmt, ap);
    va_end(ap);
    return rc;
}

char *es_format_alloc(const char *fmt, ...)
{
    es_buf out = {0};
    va_list ap;
    va_start(ap, fmt);
    int rc = es_buf_vappendf(&out, fmt, ap);
    va_end(ap);
    if (rc != 0) {
        free(out.data);
        return NULL;
    }
    return out.data;
}

void es_set_err(char **err, char *message)
{
    if (err)
        *err = message;
    else
        free(message);
}

/* ---------- answers ---------- */

void es_response_free(es_response *resp)
{
    if (resp == NULL)
        return;
    free(resp->body);
    free(resp);
}

es_response *es_response_new(int status, const char *content_type, char *body, size_t body_len)
{
    es_response *resp = calloc(1, sizeof *resp);
    if (resp == NULL) {
        free(body);
        return NULL;
    }
    resp->status = status;
    resp->content_type = content_type;
    resp->body = body;
    resp->body_len = body_len;
    return resp;
}

es_response *es_response_json(int status, json_t *root)
{
    char *body = root ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    if (body == NULL)
        return NULL;
    return es_response_new(status, "application/json", body, strlen(body));
}

/* The JSON string of text (malloc'd), NULL when out of memory. */
char *es_json_quote(const char *text)
{
    json_t *str = json_string(text);
    char *quoted = str ? json_dumps(str, JSON_ENCODE_ANY) : NULL;
    json_decref(str);
    return quoted;
}
