/*
 * embed.h: the OpenAI-compatible embeddings protocol, as pure C with no I/O:
 * building the POST /embeddings body, parsing the answer into one float
 * array, parsing provider error bodies and classifying failures for the
 * retry policy (which lives in Lua). Messages people read are pt-BR.
 */
#ifndef RAGOPS_EMBED_H
#define RAGOPS_EMBED_H

#include <stddef.h>
#include <curl/curl.h>

/* How vectors travel in the response. */
typedef enum embed_encoding {
    EMBED_ENCODING_BASE64 = 0, /* little-endian float32, base64 encoded */
    EMBED_ENCODING_FLOAT = 1   /* JSON number arrays */
} embed_encoding;

/* What the caller should do with a failure. */
typedef enum embed_class {
    EMBED_CLASS_OK = 0,     /* success */
    EMBED_CLASS_TRANSIENT,  /* retry later (429, 5xx, timeouts, bad body) */
    EMBED_CLASS_PERMANENT,  /* this input will never work (400, 413, 422) */
    EMBED_CLASS_FATAL       /* nothing will work (401, 403, unknown model) */
} embed_class;

/* Where a failure came from. */
typedef enum embed_kind {
    EMBED_KIND_NONE = 0,    /* success */
    EMBED_KIND_HTTP,        /* non-2xx HTTP status */
    EMBED_KIND_TIMEOUT,     /* transfer timed out */
    EMBED_KIND_CONNECTION,  /* could not connect / connection broke */
    EMBED_KIND_MALFORMED,   /* 2xx with a body that does not fit the contract */
    EMBED_KIND_BODY_TOO_LARGE, /* 2xx body past embed_expected_body_max: transfer stopped (fatal) */
    EMBED_KIND_DIMENSION    /* 2xx whose vectors are not of the dimension asked for (malformed too) */
} embed_kind;

/* Bound of a 2xx embeddings answer: every number as JSON text (a provider
 * may answer numbers even when base64 was asked, and pretty-printed), an
 * envelope per item and a fixed slack for "model", "usage" and the rest. */
#define EMBED_BODY_BYTES_PER_FLOAT 32
#define EMBED_BODY_BYTES_PER_ITEM 1024
#define EMBED_BODY_SLACK_BYTES ((size_t)64 * 1024)
/* The dimension assumed when none is known (the largest provider.dim). */
#define EMBED_BODY_UNKNOWN_DIM 16000

/* Vectors parsed from a response, row i = input i. */
typedef struct embed_vectors {
    int count;          /* number of vectors (= number of inputs) */
    int dim;            /* floats per vector */
    long prompt_tokens; /* usage.prompt_tokens (validated >= 0), 0 when absent */
    int has_usage;      /* the answer had a "usage" object */
    float *data;        /* count * dim floats, row-major; malloc'd */
} embed_vectors;

/* Builds {"model","input":[...],"encoding_format","dimensions"?} (dimensions
 * only when > 0). texts[i] has lens[i] bytes (must be UTF-8). Returns a
 * malloc'd NUL-terminated body and its length in *out_len, or NULL with a
 * pt-BR reason in err. */
char *embed_build_request(const char *model, const char *const *texts, const size_t *lens,
                          int count, embed_encoding encoding, int dimensions,
                          size_t *out_len, char *err, size_t err_size);

/* Frees out->data and zeroes out. */
void embed_vectors_free(embed_vectors *out);

/* Parses a 2xx body while it arrives, without keeping it: each item of
 * "data" is decoded into its row as soon as it is complete, so an answer
 * of ~0.5 MB needs ~10 KB besides the vectors (at in_flight 64 the bodies
 * were ~34 MB of the peak RSS). Vectors are placed by their "index"; the
 * count must be expected_count and each dimension expected_dim (when > 0,
 * otherwise all equal). Base64 strings and number arrays are both accepted
 * whatever was requested. "usage", when present and not null, must be an
 * object whose prompt_tokens/total_tokens (when present) are integers in
 * 0..2^53-1. new: NULL when memory is short. feed: 0, or -1 once the answer
 * is known to be malformed (later bytes are ignored). finish: 0 and fills
 * out, or -1 with err = "resposta malformada do provedor: ..." and out
 * zeroed. */
typedef struct embed_stream embed_stream;
embed_stream *embed_stream_new(int expected_count, int expected_dim);
int embed_stream_feed(embed_stream *s, const char *bytes, size_t n);
int embed_stream_finish(embed_stream *s, embed_vectors *out, char *err, size_t err_size);
/* After a failed finish: EMBED_KIND_DIMENSION when a vector had another
 * dimension than expected_dim, else EMBED_KIND_MALFORMED. */
embed_kind embed_stream_failure_kind(const embed_stream *s);
void embed_stream_free(embed_stream *s);

/* Most bytes a correct 2xx answer to count inputs of dim floats can take
 * (see EMBED_BODY_BYTES_PER_FLOAT); dim <= 0: EMBED_BODY_UNKNOWN_DIM.
 * The HTTP client stops a longer answer (an endless or inflating body). */
size_t embed_expected_body_max(int count, int dim);

/* Extracts the message of an error body ({"error":{"message":...}},
 * {"error":"..."} or {"message":...}). Returns a malloc'd string or NULL;
 * *code (when code is not NULL) receives a malloc'd copy of a string
 * "error.code" (OpenAI: "model_not_found", "invalid_api_key") or NULL. */
char *embed_parse_error_message(const char *body, size_t len, char **code);

/* Classifies an outcome: the curl code first, then the HTTP status. Answers
 * that say the configuration is wrong are fatal: 401/403 (key), 404/405/3xx
 * (endpoint) and an unknown model (provider_code "model_not_found", or a 400
 * whose provider_message says the model does not exist); both may be NULL.
 * *kind (may be NULL) receives where the failure came from. */
embed_class embed_classify(CURLcode curl_code, long status, const char *provider_message,
                           const char *provider_code, embed_kind *kind);

/* pt-BR advice for a fatal failure (status 0 = a curl error): which setting
 * to check. A static string. */
const char *embed_fatal_hint(long status, const char *provider_message, const char *provider_code);

/* The embeddings endpoint of a base URL: "/embeddings" appended to the
 * path (trailing slashes dropped), before any query string or fragment
 * (Azure-style "?api-version=..."). malloc'd, NULL when memory is short. */
char *embed_endpoint_url(const char *base);

/* Copies url into out (size bytes, truncated) without userinfo, query
 * string or fragment, so it can name the endpoint in operator messages. */
void embed_display_url(const char *url, char *out, size_t size);

/* True when a 400 answer says the server rejects base64 encoding_format. */
int embed_wants_float_fallback(long status, const char *provider_message);

/* "ok", "transient", "permanent", "fatal". */
const char *embed_class_name(embed_class cls);

/* "", "http", "timeout", "connection", "malformed", "body_too_large",
 * "dimension". */
const char *embed_kind_name(embed_kind kind);

/* Checks s (len bytes) is UTF-8 as JSON encoders accept it (RFC 3629: no
 * overlongs, no surrogates, <= U+10FFFF). Returns NULL when it is valid;
 * otherwise a malloc'd copy with each invalid byte replaced by U+FFFD, its
 * length in *out_len (also NULL when memory is short: check *out_len). */
char *embed_utf8_sanitize(const char *s, size_t len, size_t *out_len);

/* Decodes standard base64 (padding optional). Returns the decoded length,
 * or -1 on an invalid character or length. out needs (len / 4 + 1) * 3 bytes. */
long embed_base64_decode(const char *in, size_t len, unsigned char *out);

#endif
