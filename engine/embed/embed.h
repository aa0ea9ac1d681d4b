/*
 * embed.h: the embeddings protocols, as pure C with no I/O: building the
 * request body, parsing the answer into one float array, parsing provider
 * error bodies and classifying failures for the retry policy (which lives in
 * Lua). Messages people read are pt-BR. The OpenAI protocol is the default;
 * the other dialects (Azure, Ollama, TEI, Voyage, Cohere) differ in the
 * body's fixed members (given verbatim by the caller), the key of the inputs,
 * whether "encoding_format" is sent (embed_request_shape), and in the answer:
 * OpenAI's "data" items or an array of rows at a path (embed_rows_shape).
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
 * pt-BR reason in err. Same as embed_build_body with the default shape. */
char *embed_build_request(const char *model, const char *const *texts, const size_t *lens,
                          int count, embed_encoding encoding, int dimensions,
                          size_t *out_len, char *err, size_t err_size);

/* When the request says how vectors should travel. */
typedef enum embed_encoding_field {
    EMBED_ENCODING_FIELD_ALWAYS = 0,  /* "encoding_format":"base64"|"float" (OpenAI, Azure) */
    EMBED_ENCODING_FIELD_BASE64_ONLY, /* "encoding_format":"base64" only for base64 (Voyage) */
    EMBED_ENCODING_FIELD_NONE         /* never (Ollama, TEI, Cohere): the answer is floats */
} embed_encoding_field;

/* Most bytes of embed_request_shape.body_fields. */
#define EMBED_MAX_BODY_FIELDS ((size_t)64 * 1024)

/* The shape of a request body: '{', the fixed members, the inputs, the
 * encoding member, '}'. */
typedef struct embed_request_shape {
    const char *body_fields;  /* JSON object members written verbatim first (e.g.
                                 "model":"m","truncate":false), "" for none; NULL: the
                                 members are "model" and, at the end, "dimensions" */
    size_t body_fields_len;   /* bytes of body_fields */
    const char *model;        /* with body_fields NULL: "model" (required) */
    int dimensions;           /* with body_fields NULL: "dimensions" when > 0 */
    const char *inputs_key;   /* key of the array of texts: "input" (NULL), "inputs", "texts" */
    embed_encoding_field encoding_field; /* when "encoding_format" is written */
} embed_request_shape;

/* Builds the body of shape for texts (texts[i] has lens[i] bytes, UTF-8).
 * Returns a malloc'd NUL-terminated body and its length in *out_len, or
 * NULL with a pt-BR reason in err. */
char *embed_build_body(const embed_request_shape *shape, const char *const *texts, const size_t *lens,
                       int count, embed_encoding encoding, size_t *out_len, char *err, size_t err_size);

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

/* Most keys in a rows_path or usage_path. */
#define EMBED_ROWS_MAX_PATH 8

/* A "rows" answer: a JSON array whose i-th element is input i's vector (a
 * number array, or a base64 float32 string), found by following rows_path
 * from the root object (rows_depth 0: the root is the array, as TEI's
 * [[...],[...]]; {"embeddings"}: Ollama; {"embeddings","float"}: Cohere v2);
 * and the token count, an integer at usage_path (usage_depth 0 or the path
 * absent in the answer: no usage, prompt_tokens 0 and has_usage 0). */
typedef struct embed_rows_shape {
    const char *const *rows_path;  /* rows_depth keys */
    int rows_depth;                /* 0..EMBED_ROWS_MAX_PATH */
    const char *const *usage_path; /* usage_depth keys */
    int usage_depth;               /* 0..EMBED_ROWS_MAX_PATH */
} embed_rows_shape;

/* A stream (fed and finished as above) for a "rows" answer: its bytes are
 * kept (at most embed_expected_body_max(expected_count, expected_dim)) and
 * parsed at the end without a tree, as strictly as a "data" answer: count,
 * dimension (EMBED_KIND_DIMENSION), finite values, well-formed JSON, a
 * missing rows_path is malformed and named in the reason, the token count
 * an integer in 0..2^53-1. The shape's strings are copied. NULL when
 * memory is short or the shape is invalid. */
embed_stream *embed_stream_new_rows(int expected_count, int expected_dim, const embed_rows_shape *shape);

/* Most bytes a correct 2xx answer to count inputs of dim floats can take
 * (see EMBED_BODY_BYTES_PER_FLOAT); dim <= 0: EMBED_BODY_UNKNOWN_DIM.
 * The HTTP client stops a longer answer (an endless or inflating body). */
size_t embed_expected_body_max(int count, int dim);

/* Extracts the message of an error body ({"error":{"message":...}} OpenAI,
 * {"error":"..."} TEI/Ollama, {"message":...} Cohere or {"detail":"..."}
 * Voyage). Returns a malloc'd string or NULL;
 * *code (when code is not NULL) receives a malloc'd copy of a string
 * "error.code" (OpenAI: "model_not_found", "invalid_api_key") or NULL. */
char *embed_parse_error_message(const char *body, size_t len, char **code);

/* Classifies an outcome: the curl code first, then the HTTP status. Answers
 * that say the configuration is wrong are fatal: 401/403 (key), 404/405/3xx
 * (endpoint), an unreadable CA file (curl 77) and an unknown model
 * (provider_code "model_not_found", or a 400 whose provider_message says the
 * model does not exist); both may be NULL. 408/409/424 (TEI's backend
 * error)/425/429/5xx are transient, other 4xx permanent. *kind (may be
 * NULL) receives where the failure came from. */
embed_class embed_classify(CURLcode curl_code, long status, const char *provider_message,
                           const char *provider_code, embed_kind *kind);

/* pt-BR advice for a fatal failure (status 0 = a curl error): which setting
 * to check. A static string. */
const char *embed_fatal_hint(long status, const char *provider_message, const char *provider_code);

/* embed_fatal_hint for a client whose endpoint is a full URL used as is
 * (endpoint_as_is = 1): a wrong endpoint does not speak of "/embeddings". */
const char *embed_fatal_hint_for(long status, const char *provider_message, const char *provider_code,
                                 int endpoint_as_is);

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
