/*
 * embed_server.h: `ragops embed-server`, a local, deterministic embedding
 * server on a libuv loop that speaks one provider's dialect (OpenAI by
 * default; Azure OpenAI, Ollama, TEI, Voyage AI or Cohere), with that
 * provider's limits and errors, and fault injection (latency, 429, 5xx,
 * timeouts, hangs on matching inputs, malformed bodies, bad usage,
 * permanent 400s, endless or gzip-bomb bodies) for tests and the demo, and
 * a provider's quota (--rpm, --tpm, --max-concurrency) shared by all its
 * clients. The vectors are the same whatever the dialect.
 */
#ifndef RAGOPS_EMBED_SERVER_H
#define RAGOPS_EMBED_SERVER_H

#include <stdint.h>
#include <uv.h>

/* A limit left to the dialect's default (max_inputs, max_input_tokens,
 * max_request_tokens). */
#define EMBED_SERVER_DIALECT_DEFAULT (-1)

/* Server configuration; fill with embed_server_opts_init, then override. */
typedef struct embed_server_opts {
    const char *host;           /* numeric IPv4/IPv6 address or "localhost" (default 127.0.0.1) */
    int port;                   /* TCP port, 0 = ephemeral (default 8080) */
    int dim;                    /* vector dimension (default 1536) */
    const char *model;          /* only model accepted, NULL = any (default NULL) */
    int latency_ms;             /* delay added to every /v1/embeddings answer (default 0) */
    double fail_rate;           /* probability of a 500/502/503 answer (default 0) */
    double rate_429;            /* probability of a 429 answer with Retry-After (default 0) */
    int retry_after_s;          /* Retry-After seconds sent with 429 (default 1) */
    double timeout_rate;        /* probability of never answering a request (default 0) */
    double malformed_rate;      /* probability of a 200 with a broken body (default 0) */
    const char *reject_pattern; /* POSIX ERE: any matching input => 400 (default NULL) */
    const char *hang_pattern;   /* POSIX ERE: any matching input => never answered (default NULL) */
    double bad_usage_rate;      /* probability of a 200 with usage.prompt_tokens = -1 (default 0) */
    uint64_t seed;              /* seed of the fault-injection PRNG (default 42) */
    const char *api_key;        /* when set, require "Authorization: Bearer KEY" (default NULL) */
    const char *api;            /* dialect: openai, azure, ollama, tei, voyage or cohere (default openai) */
    int max_inputs;             /* inputs per request, 0 = no cap (default: the dialect's) */
    int max_input_tokens;       /* tokens per input, 0 = no cap (default: the dialect's) */
    int max_request_tokens;     /* tokens per request, 0 = no cap (default: the dialect's) */
    int dense;                  /* 1: every component non-zero (featurehash_embed_dense) (default 0) */
    const char *endless_pattern; /* POSIX ERE: any matching input => a 200 whose body never ends (chunked,
                                    an "embedding" string that grows until the client leaves) (default NULL) */
    int endless_gzip;           /* 1: that endless body goes gzip-encoded, ~1 KiB on the wire per MiB
                                    inflated: a compression bomb (default 0) */
    int echo_auth;              /* 1: the request's Authorization header comes back as the answer's
                                    x-request-id, as a provider that echoes the key would (default 0) */
    double batch_latency_s;     /* a batch is validating for 1/4 of it, in_progress then finalizing, completed
                                   at its end (default 2) */
    double batch_error_rate;    /* probability (0..1) of a batch request ending in the error file (400) (default 0) */
    double batch_expire_rate;   /* probability (0..1) of a batch request expiring (batch_expired; the batch
                                   ends "expired") (default 0) */
    int batch_fail;             /* 1: every new batch ends "failed" (default 0) */
    int batch_max_file_bytes;   /* largest input file (default 200 MB; the body bound of 64 MiB applies too) */
    int batch_max_requests;     /* lines of an input file (default 50000) */
    int batch_max_inputs;       /* embedding inputs across an input file (default 50000) */
    int batch_max_enqueued_tokens; /* tokens (bytes/4) of unfinished batches per model, 0 = no cap (default 0) */
    int batch_max_store_bytes;  /* bytes of files kept in memory (default 1 GiB) */
    int rpm;                    /* requests per minute of the whole server (a token bucket), 0 = no limit (default 0) */
    int tpm;                    /* tokens per minute of the whole server (a token bucket), 0 = no limit (default 0) */
    int max_concurrency;        /* embeddings requests in flight at once (--latency-ms included), 0 = no
                                   limit (default 0) */
} embed_server_opts;

/* Counters served by GET /stats and zeroed by POST /stats/reset. */
typedef struct embed_server_stats {
    uint64_t requests;     /* POSTs to the dialect's embeddings route received */
    uint64_t inputs;       /* inputs embedded in 200 (valid) answers */
    uint64_t ok;           /* valid 200 answers */
    uint64_t errors_5xx;   /* injected 500/502/503 answers */
    uint64_t rate_limited; /* 429 answers: injected (--rate-429) and of the rate limits */
    uint64_t timeouts;     /* requests accepted and never answered (--timeout-rate, --hang-pattern) */
    uint64_t malformed;    /* injected malformed 200 answers (--malformed-rate, --bad-usage-rate,
                              --endless-pattern) */
    uint64_t rejected;     /* 400 answers caused by --reject-pattern */
    uint64_t bad_requests; /* other 4xx answers (invalid JSON, auth, model, limits) */
    uint64_t size_errors;  /* of those, the ones over a limit (inputs, tokens per input, per request) */
    uint64_t max_inputs_seen;   /* most inputs in one embeddings request */
    char last_input_type[32];   /* input_type of the last Voyage/Cohere request, "" for none */
    uint64_t files_uploaded;      /* files accepted by POST /v1/files */
    uint64_t file_bytes_uploaded; /* bytes of those files */
    uint64_t batches_created;     /* batches created by POST /v1/batches */
    uint64_t batch_polls;         /* GET /v1/batches/{id} */
    uint64_t file_downloads;      /* GET /v1/files/{id}/content answered */
    uint64_t duplicate_uploads;   /* of files_uploaded, those whose filename an earlier upload had */
    uint64_t file_lists;          /* GET /v1/files answered */
    uint64_t batch_lists;         /* GET /v1/batches answered */
    uint64_t rate_limited_injected;    /* of rate_limited, those of --rate-429 */
    uint64_t rate_limited_requests;    /* of rate_limited, those of --rpm */
    uint64_t rate_limited_tokens;      /* of rate_limited, those of --tpm (a request over the whole tpm too) */
    uint64_t rate_limited_concurrency; /* of rate_limited, those of --max-concurrency */
    uint64_t admitted_requests;        /* embeddings requests let through by the rate limits (all, without them) */
    uint64_t admitted_tokens;          /* their tokens (the usage count) */
} embed_server_stats;

typedef struct embed_server embed_server;

/* Fills opts with the defaults listed above. */
void embed_server_opts_init(embed_server_opts *opts);

/* Binds and listens on loop. Strings in opts are copied. On failure returns
 * NULL and, if err is not NULL, sets *err to a malloc'd pt-BR message. */
embed_server *embed_server_start(uv_loop_t *loop, const embed_server_opts *opts, char **err);

/* The port actually bound (useful when opts.port was 0). */
int embed_server_port(const embed_server *server);

/* Copies the current counters into out. */
void embed_server_get_stats(const embed_server *server, embed_server_stats *out);

/* Closes the listener and every connection (pending answers are dropped).
 * The server is freed once all its handles are closed: keep running the
 * loop; do not use the pointer afterwards. */
void embed_server_stop(embed_server *server);

/* CLI entry point: argv[0] is "embed-server". Runs on uv_default_loop()
 * until SIGINT/SIGTERM. Returns the process exit code (0 ok, 2 usage,
 * 4 cannot listen). */
int embed_server_main(int argc, char **argv);

#endif
