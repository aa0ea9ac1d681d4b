/*
 * embed_server_dialects.c: what each dialect of the embed-server accepts,
 * as a table of es_dialect rows (the ops-table style of redis' ae.c): its
 * embeddings route, its authentication, its own fields (model, dimension,
 * encoding, truncation, input type), its other routes (TEI's GET /info),
 * its default limits and the provider's own text of a size error. What it
 * answers is its es_answer_ops (embed_server_format.c); the path common to
 * every dialect is embed_server_routes.c. Facts from the providers' API
 * references: OpenAI, Azure OpenAI, Ollama, Hugging Face TEI, Voyage AI,
 * Cohere (v2).
 */
#define _GNU_SOURCE /* strndup */
#include "embed_server_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---------- routes ---------- */

static int es_is_post(const http_head *head, const char *path)
{
    return strcmp(head->method, "POST") == 0 && strcmp(head->path, path) == 0;
}

/* OpenAI and Voyage: POST /v1/embeddings. */
static int es_route_v1_embeddings(const http_head *head)
{
    return es_is_post(head, "/v1/embeddings");
}

#define ES_AZURE_DEPLOYMENTS "/openai/deployments/"
#define ES_AZURE_EMBEDDINGS "/embeddings"

/* The {deployment} of POST /openai/deployments/{deployment}/embeddings
 * (*len bytes), NULL when head->path is not that. */
static const char *es_azure_deployment(const http_head *head, size_t *len)
{
    size_t prefix = strlen(ES_AZURE_DEPLOYMENTS), suffix = strlen(ES_AZURE_EMBEDDINGS);
    size_t path_len = strlen(head->path);
    if (path_len <= prefix + suffix || strncmp(head->path, ES_AZURE_DEPLOYMENTS, prefix) != 0 ||
        strcmp(head->path + path_len - suffix, ES_AZURE_EMBEDDINGS) != 0)
        return NULL;
    *len = path_len - prefix - suffix;
    const char *name = head->path + prefix;
    return memchr(name, '/', *len) ? NULL : name;
}

/* Azure: the classic deployment route, or the v1 one. */
static int es_route_azure(const http_head *head)
{
    size_t len;
    if (es_is_post(head, "/openai/v1/embeddings"))
        return 1;
    return strcmp(head->method, "POST") == 0 && es_azure_deployment(head, &len) != NULL;
}

static int es_route_ollama(const http_head *head)
{
    return es_is_post(head, "/api/embed");
}

static int es_route_tei(const http_head *head)
{
    return es_is_post(head, "/embed");
}

static int es_route_cohere(const http_head *head)
{
    return es_is_post(head, "/v2/embed");
}

/* ---------- authentication ---------- */

/* 1 when value is "Bearer KEY" (scheme in any case). */
static int es_bearer_is(const char *value, const char *key)
{
    return value != NULL && strncasecmp(value, "Bearer ", 7) == 0 && strcmp(value + 7, key) == 0;
}

/* With --api-key: "Authorization: Bearer KEY" or 401. */
static int es_authorize_bearer(embed_server *server, const http_head *head, es_response **resp)
{
    if (server->api_key == NULL || es_bearer_is(head->authorization, server->api_key))
        return 0;
    *resp = es_bad_request(server, 401, ES_ERR_AUTH,
                           "chave de API ausente ou inválida (use o cabeçalho Authorization: Bearer)");
    return -1;
}

/* Azure always wants "api-key: KEY" or "Authorization: Bearer TOKEN"
 * (Entra ID); with --api-key, one of them must carry it. */
static int es_authorize_azure(embed_server *server, const http_head *head, es_response **resp)
{
    int has_any = head->api_key != NULL || head->authorization != NULL;
    int allowed = server->api_key == NULL
                      ? has_any
                      : (head->api_key && strcmp(head->api_key, server->api_key) == 0) ||
                            es_bearer_is(head->authorization, server->api_key);
    if (allowed)
        return 0;
    *resp = es_bad_request(server, 401, ES_ERR_AUTH,
                           "chave ausente ou inválida (use o cabeçalho api-key ou Authorization: Bearer)");
    return -1;
}

/* ---------- fields ---------- */

/* "model": a non-empty text. */
static int es_read_model(embed_server *server, es_embed_request *req, es_response **resp)
{
    json_t *model = json_object_get(req->root, "model");
    if (!json_is_string(model) || json_string_length(model) == 0) {
        *resp = es_invalid(server, "o campo 'model' é obrigatório e deve ser um texto não vazio");
        return -1;
    }
    req->model = json_string_value(model);
    return 0;
}

/* field (optional): the dimension of the answer, 1..--dim. */
static int es_read_dimension(embed_server *server, es_embed_request *req, const char *field, es_response **resp)
{
    json_t *dimensions = json_object_get(req->root, field);
    if (dimensions == NULL || json_is_null(dimensions))
        return 0;
    json_int_t wanted = json_is_integer(dimensions) ? json_integer_value(dimensions) : 0;
    if (wanted < 1 || wanted > server->dim) {
        *resp = es_invalid(server, "'%s' deve ser um inteiro entre 1 e %d", field, server->dim);
        return -1;
    }
    req->dim = (size_t)wanted;
    return 0;
}

/* field (optional): true or false, *out = fallback when absent or null. */
static int es_read_bool(embed_server *server, es_embed_request *req, const char *field, int fallback, int *out,
                        es_response **resp)
{
    json_t *value = json_object_get(req->root, field);
    *out = fallback;
    if (value == NULL || json_is_null(value))
        return 0;
    if (!json_is_boolean(value)) {
        *resp = es_invalid(server, "'%s' deve ser true ou false", field);
        return -1;
    }
    *out = json_is_true(value);
    return 0;
}

/* field (optional): one of choices (NULL-terminated); *out its index, -1
 * when absent or null. A value outside them is a 400 naming them. */
static int es_read_choice(embed_server *server, es_embed_request *req, const char *field,
                          const char *const *choices, int *out, es_response **resp)
{
    json_t *value = json_object_get(req->root, field);
    const char *text = json_string_value(value);
    char names[256] = "";
    *out = -1;
    if (value == NULL || json_is_null(value))
        return 0;
    for (int k = 0; choices[k]; k++) {
        if (text && strcmp(text, choices[k]) == 0) {
            *out = k;
            return 0;
        }
        snprintf(names + strlen(names), sizeof names - strlen(names), "%s\"%s\"", k ? ", " : "", choices[k]);
    }
    *resp = es_invalid(server, "'%s' deve ser um destes: %s", field, names);
    return -1;
}

/* "encoding_format" of OpenAI and Azure: "float" (or absent) or "base64". */
static int es_read_openai_encoding(embed_server *server, es_embed_request *req, es_response **resp)
{
    static const char *const formats[] = {"float", "base64", NULL};
    int format;
    if (es_read_choice(server, req, "encoding_format", formats, &format, resp) != 0)
        return -1;
    req->base64 = format == 1;
    return 0;
}

/* The value of name in the query string, NULL when absent or empty. */
const char *es_query_value(const char *query, const char *name)
{
    size_t name_len = strlen(name);
    for (const char *p = query; p && *p; p = strchr(p, '&') ? strchr(p, '&') + 1 : NULL)
        if (strncmp(p, name, name_len) == 0 && p[name_len] == '=' && p[name_len + 1] && p[name_len + 1] != '&')
            return p + name_len + 1;
    return NULL;
}

/* Records input_type (a value the dialect accepts, or "") in /stats. */
static void es_note_input_type(embed_server *server, const char *value)
{
    snprintf(server->stats.last_input_type, sizeof server->stats.last_input_type, "%s", value);
}

/* ---------- fields of each dialect ---------- */

static int es_openai_fields(embed_server *server, const http_head *head, es_embed_request *req, es_response **resp)
{
    (void)head;
    if (es_read_model(server, req, resp) != 0 || es_read_openai_encoding(server, req, resp) != 0)
        return -1;
    return es_read_dimension(server, req, "dimensions", resp);
}

/* Classic route: the deployment is the model and ?api-version= is
 * required. v1 route: "model" names the deployment. */
static int es_azure_fields(embed_server *server, const http_head *head, es_embed_request *req, es_response **resp)
{
    size_t len;
    const char *deployment = es_azure_deployment(head, &len);
    if (deployment == NULL)
        return es_openai_fields(server, head, req, resp);
    if (es_query_value(head->query, "api-version") == NULL) {
        *resp = es_invalid(server, "o parâmetro 'api-version' é obrigatório na URL (ex.: ?api-version=2024-10-21)");
        return -1;
    }
    req->deployment = strndup(deployment, len);
    if (req->deployment == NULL)
        return -1; /* out of memory: *resp stays NULL */
    req->model = req->deployment;
    if (es_read_openai_encoding(server, req, resp) != 0)
        return -1;
    return es_read_dimension(server, req, "dimensions", resp);
}

/* truncate (default true) cuts an input over the context length. */
static int es_ollama_fields(embed_server *server, const http_head *head, es_embed_request *req, es_response **resp)
{
    int truncate;
    (void)head;
    if (es_read_model(server, req, resp) != 0 || es_read_bool(server, req, "truncate", 1, &truncate, resp) != 0)
        return -1;
    req->truncate = truncate ? ES_TRUNCATE_END : ES_TRUNCATE_NONE;
    return es_read_dimension(server, req, "dimensions", resp);
}

/* No model; truncate (default false), truncation_direction ("Right" keeps
 * the start), normalize (accepted: the vectors are always unit). */
static int es_tei_fields(embed_server *server, const http_head *head, es_embed_request *req, es_response **resp)
{
    static const char *const directions[] = {"Right", "Left", NULL};
    int truncate, normalize, direction;
    (void)head;
    if (es_read_bool(server, req, "truncate", 0, &truncate, resp) != 0 ||
        es_read_bool(server, req, "normalize", 1, &normalize, resp) != 0 ||
        es_read_choice(server, req, "truncation_direction", directions, &direction, resp) != 0)
        return -1;
    req->truncate = !truncate ? ES_TRUNCATE_NONE : direction == 1 ? ES_TRUNCATE_START : ES_TRUNCATE_END;
    return 0;
}

/* input_type (null, "query", "document"), truncation (default true),
 * output_dimension, encoding_format (null or "base64"). */
static int es_voyage_fields(embed_server *server, const http_head *head, es_embed_request *req, es_response **resp)
{
    static const char *const input_types[] = {"query", "document", NULL};
    static const char *const formats[] = {"base64", NULL};
    int input_type, truncation, format;
    (void)head;
    if (es_read_model(server, req, resp) != 0 ||
        es_read_choice(server, req, "input_type", input_types, &input_type, resp) != 0 ||
        es_read_bool(server, req, "truncation", 1, &truncation, resp) != 0 ||
        es_read_choice(server, req, "encoding_format", formats, &format, resp) != 0)
        return -1;
    es_note_input_type(server, input_type >= 0 ? input_types[input_type] : "");
    req->truncate = truncation ? ES_TRUNCATE_END : ES_TRUNCATE_NONE;
    req->base64 = format == 0;
    return es_read_dimension(server, req, "output_dimension", resp);
}

/* "embedding_types": a list that holds "float" (the only type answered). */
static int es_read_cohere_types(embed_server *server, es_embed_request *req, es_response **resp)
{
    json_t *types = json_object_get(req->root, "embedding_types");
    for (size_t i = 0; json_is_array(types) && i < json_array_size(types); i++) {
        const char *type = json_string_value(json_array_get(types, i));
        if (type && strcmp(type, "float") == 0)
            return 0;
    }
    *resp = es_invalid(server, "'embedding_types' é obrigatório e deve ser uma lista com \"float\"");
    return -1;
}

/* input_type (required), embedding_types, output_dimension, truncate
 * ("NONE", "START", "END"; default "END"). */
static int es_cohere_fields(embed_server *server, const http_head *head, es_embed_request *req, es_response **resp)
{
    static const char *const input_types[] = {"search_document", "search_query", "classification", "clustering",
                                              NULL};
    static const char *const truncates[] = {"NONE", "START", "END", NULL};
    int input_type, truncate;
    (void)head;
    if (es_read_model(server, req, resp) != 0 ||
        es_read_choice(server, req, "input_type", input_types, &input_type, resp) != 0)
        return -1;
    if (input_type < 0) {
        *resp = es_invalid(server, "o campo 'input_type' é obrigatório (search_document, search_query, "
                                   "classification ou clustering)");
        return -1;
    }
    es_note_input_type(server, input_types[input_type]);
    if (es_read_cohere_types(server, req, resp) != 0 ||
        es_read_choice(server, req, "truncate", truncates, &truncate, resp) != 0)
        return -1;
    req->truncate = truncate == 0 ? ES_TRUNCATE_NONE : truncate == 1 ? ES_TRUNCATE_START : ES_TRUNCATE_END;
    return es_read_dimension(server, req, "output_dimension", resp);
}

/* ---------- other routes and texts of a dialect ---------- */

#define ES_TEI_BATCH_TOKENS 16384 /* TEI's default --max-batch-tokens */

/* TEI: GET /info, with the limits this server enforces. */
static int es_tei_extra_route(embed_server *server, const http_head *head, es_response **resp)
{
    if (strcmp(head->method, "GET") != 0 || strcmp(head->path, "/info") != 0)
        return 0;
    int batch_tokens = server->max_request_tokens > 0 ? server->max_request_tokens : ES_TEI_BATCH_TOKENS;
    *resp = es_response_json(
        200, json_pack("{s:s, s:{s:{s:s}}, s:i, s:i, s:i, s:b, s:s, s:s}", "model_id",
                       server->model ? server->model : "ragops-hash", "model_type", "embedding", "pooling", "mean",
                       "max_input_length", server->max_input_tokens, "max_batch_tokens", batch_tokens,
                       "max_client_batch_size", server->max_inputs, "auto_truncate", 0, "model_dtype", "float32",
                       "version", "1.5.0-ragops"));
    return 1;
}

/* TEI's own texts of its validation errors. */
static int es_tei_size_message(es_error_kind kind, size_t index, uint64_t given, long max, char *out, size_t size)
{
    (void)index;
    if (kind == ES_ERR_TOO_MANY_INPUTS)
        snprintf(out, size, "batch size %llu > maximum allowed batch size %ld", (unsigned long long)given, max);
    else if (kind == ES_ERR_INPUT_TOKENS)
        snprintf(out, size, "Input validation error: `inputs` must have less than %ld tokens. Given: %llu", max,
                 (unsigned long long)given);
    else
        return 0;
    return 1;
}

/* Ollama's own text of an input over the context length. */
static int es_ollama_size_message(es_error_kind kind, size_t index, uint64_t given, long max, char *out,
                                  size_t size)
{
    (void)index, (void)given, (void)max;
    if (kind != ES_ERR_INPUT_TOKENS)
        return 0;
    snprintf(out, size, "the input length exceeds the context length");
    return 1;
}

/* ---------- the table ---------- */

static const es_dialect es_dialects[] = {
    {.name = "openai", .max_inputs = 2048, .max_input_tokens = 8192, .max_request_tokens = 300000,
     .request_tokens_by_bytes = 1, .body_status = 400, .size_status = 400, .inputs_field = "input",
     .route = es_route_v1_embeddings, .authorize = es_authorize_bearer, .read_fields = es_openai_fields,
     .answer = &es_answer_openai},
    {.name = "azure", .max_inputs = 2048, .max_input_tokens = 8192, .max_request_tokens = 300000,
     .request_tokens_by_bytes = 1, .body_status = 400, .size_status = 400, .inputs_field = "input",
     .route = es_route_azure, .authorize = es_authorize_azure, .read_fields = es_azure_fields,
     .answer = &es_answer_openai},
    {.name = "ollama", .max_inputs = 0, .max_input_tokens = 8192, .max_request_tokens = 0, .body_status = 400,
     .size_status = 400, .inputs_field = "input", .route = es_route_ollama, .authorize = es_authorize_bearer,
     .read_fields = es_ollama_fields, .size_message = es_ollama_size_message, .answer = &es_answer_ollama},
    {.name = "tei", .max_inputs = 32, .max_input_tokens = 512, .max_request_tokens = 0, .body_status = 422,
     .size_status = 413, .inputs_field = "inputs", .route = es_route_tei, .authorize = es_authorize_bearer,
     .read_fields = es_tei_fields, .extra_route = es_tei_extra_route, .size_message = es_tei_size_message,
     .answer = &es_answer_tei},
    {.name = "voyage", .max_inputs = 1000, .max_input_tokens = 32000, .max_request_tokens = 320000,
     .body_status = 400, .size_status = 400, .inputs_field = "input", .route = es_route_v1_embeddings,
     .authorize = es_authorize_bearer, .read_fields = es_voyage_fields, .answer = &es_answer_voyage},
    {.name = "cohere", .max_inputs = 96, .max_input_tokens = 512, .max_request_tokens = 0, .body_status = 400,
     .size_status = 400, .inputs_field = "texts", .inputs_array_only = 1, .route = es_route_cohere,
     .authorize = es_authorize_bearer, .read_fields = es_cohere_fields, .answer = &es_answer_cohere},
};

const char es_dialect_names[] = "openai, azure, ollama, tei, voyage, cohere";

const es_dialect *es_dialect_find(const char *name)
{
    for (size_t k = 0; name && k < sizeof es_dialects / sizeof es_dialects[0]; k++)
        if (strcmp(name, es_dialects[k].name) == 0)
            return &es_dialects[k];
    return NULL;
}
