/*
 * automoe.h: the C ABI of automoe, a library for heterogeneous Mixture-of-Experts translation
 * models searched under a compute budget (AutoMoE).
 *
 * Conventions (rustls-ffi style):
 *  - Handles are opaque; every `_load`/`_new` has a `_free`. Passing NULL to a `_free` is a no-op.
 *  - Every fallible function returns an automoe_status; AUTOMOE_OK (0) is success. Results go
 *    through out-parameters, written only on success.
 *  - After a failure, automoe_last_error_message() describes it (per thread).
 *  - Strings are NUL-terminated UTF-8. Strings and buffers the library returns are owned by the
 *    object they came from, or come with their own free function, as documented per function.
 *  - A loaded model is immutable: any number of threads may translate with one model at once.
 *  - No function unwinds into C: a Rust panic inside is caught and reported as AUTOMOE_PANIC,
 *    with its location in the message; nothing is printed to stderr unless RUST_BACKTRACE is set.
 */
#ifndef AUTOMOE_H
#define AUTOMOE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define AUTOMOE_VERSION_MAJOR 0
#define AUTOMOE_VERSION_MINOR 1
#define AUTOMOE_VERSION_PATCH 0
#define AUTOMOE_VERSION_STRING "0.1.0"

/* Status codes. The numbers are stable. */
typedef enum automoe_status {
    AUTOMOE_OK = 0,
    AUTOMOE_NULL_ARGUMENT = 1,    /* a required pointer argument was NULL */
    AUTOMOE_INVALID_ARGUMENT = 2, /* an argument had a bad value (an option, an empty model dir, ...) */
    AUTOMOE_INVALID_UTF8 = 3,     /* a string argument was not valid UTF-8 */
    AUTOMOE_OUT_OF_RANGE = 4,     /* a token id or an index was out of range */
    AUTOMOE_IO = 5,               /* a file could not be read */
    AUTOMOE_FORMAT = 6,           /* a file was read but its contents are not a valid model */
    AUTOMOE_NO_DEVICE = 7,        /* the requested device does not exist on this machine */
    AUTOMOE_UNSUPPORTED = 8,      /* the operation is not supported (e.g. on this device) */
    AUTOMOE_PANIC = 9,            /* a bug inside the library; the message says where */
    AUTOMOE_INTERNAL = 10         /* any other failure inside the library */
} automoe_status;

/* A loaded translation model (weights, architecture, tokenizer). */
typedef struct automoe_model automoe_model;

/* The translations of one batch: text, token ids and score per sentence. */
typedef struct automoe_translations automoe_translations;

/* Decoding options. Initialise with automoe_decode_options_init, then change fields.
 * `struct_size` (set by the init function to this header's sizeof) lets a later library add
 * fields and still read options from a program built against this header; a size the library
 * does not know (an uninitialised struct, or a newer header than the library) is refused. */
typedef struct automoe_decode_options {
    size_t struct_size;     /* sizeof(automoe_decode_options); set by automoe_decode_options_init */
    uint32_t beam;          /* beam size; 1 = greedy (default 4) */
    float length_penalty;   /* fairseq length penalty: score / length^lp (default 0.6) */
    float max_len_a;        /* output length limit a * source_len + b (default a = 1.2) */
    uint32_t max_len_b;     /* (default b = 10) */
} automoe_decode_options;

/* What a model is. Written whole by automoe_model_get_info; should it ever need more fields, they
 * will come with a new function, so this struct keeps its size. */
typedef struct automoe_model_info {
    size_t vocab_size;      /* size of the joined vocabulary */
    double total_params;    /* parameters of the model, embedding included */
    double active_params;   /* expected parameters used per token (router + k experts per MoE layer) */
    double gflops;          /* GFLOPs of a 30-token source and target, as the AutoMoE paper counts */
} automoe_model_info;

/* The library version, e.g. "0.1.0" (static storage; equals AUTOMOE_VERSION_STRING of the
 * header the library was built with). */
const char *automoe_version(void);

/* The message of the last failure on this thread, or "" when there was none. Valid until the
 * next automoe call on this thread. */
const char *automoe_last_error_message(void);

/* A short constant name for a status ("AUTOMOE_OK", ...); "AUTOMOE_UNKNOWN" for other values. */
const char *automoe_status_name(automoe_status status);

/* Fills *options with the defaults. NULL is ignored. */
void automoe_decode_options_init(automoe_decode_options *options);

/* Loads the model directory `dir` (model.safetensors, model.json, tokenizer.json, as written by
 * `automoe train` / `automoe pipeline`) onto `device`: "cpu", "cuda:N" (a GPU), or "emu" (the CUDA
 * kernels on the CPU emulator: slow, for testing); NULL means "cpu".
 * On success *out_model receives a model to release with automoe_model_free. */
automoe_status automoe_model_load(const char *dir, const char *device, automoe_model **out_model);

/* Releases a model. NULL is a no-op. The model must not be in use by another thread. */
void automoe_model_free(automoe_model *model);

/* Architecture and cost figures of the model. */
automoe_status automoe_model_get_info(const automoe_model *model, automoe_model_info *out_info);

/* The model's architecture (its SubnetConfig) as JSON. Release *out_json with automoe_string_free. */
automoe_status automoe_model_config_json(const automoe_model *model, char **out_json);

/* Releases a string the library returned through an out-parameter (so far only *out_json of
 * automoe_model_config_json), unmodified, once. NULL is a no-op. Not for the strings of
 * automoe_version, automoe_status_name and automoe_last_error_message (the library's) or of
 * automoe_translations_text (the result's, released with it). */
void automoe_string_free(char *s);

/* Translates `count` UTF-8 sentences (count may be 0). `options` may be NULL for the defaults.
 * On success *out receives the results, to release with automoe_translations_free. An empty
 * sentence gives an empty translation. */
automoe_status automoe_translate(const automoe_model *model, const char *const *sentences, size_t count,
                                 const automoe_decode_options *options, automoe_translations **out);

/* Translates pre-tokenised input: sentence i is ids[i][0 .. lengths[i]) in the model's
 * vocabulary, without the end-of-sentence id (it is appended). Ids out of range give
 * AUTOMOE_OUT_OF_RANGE. */
automoe_status automoe_translate_ids(const automoe_model *model, const uint32_t *const *ids, const size_t *lengths,
                                     size_t count, const automoe_decode_options *options, automoe_translations **out);

/* As automoe_translate, keeping the `nbest` best translations of each sentence (1 <= nbest <=
 * options' beam, else AUTOMOE_INVALID_ARGUMENT), best first; a sentence can have fewer than
 * `nbest` (never none). Read them with the automoe_translations_nbest_* functions; the
 * functions without `nbest` read the best one. */
automoe_status automoe_translate_nbest(const automoe_model *model, const char *const *sentences, size_t count,
                                       const automoe_decode_options *options, size_t nbest,
                                       automoe_translations **out);

/* As automoe_translate_ids, keeping the `nbest` best translations of each sentence (as
 * automoe_translate_nbest). */
automoe_status automoe_translate_ids_nbest(const automoe_model *model, const uint32_t *const *ids, const size_t *lengths,
                                           size_t count, const automoe_decode_options *options, size_t nbest,
                                           automoe_translations **out);

/* Number of sentences in a result (0 for NULL). */
size_t automoe_translations_count(const automoe_translations *translations);

/* Number of translations kept for sentence `index`: 1 for automoe_translate and
 * automoe_translate_ids, 1..nbest for the _nbest ones (0 for NULL or out of range). */
size_t automoe_translations_nbest_count(const automoe_translations *translations, size_t index);

/* The text of translation `index`, owned by `translations`; NULL when out of range. */
const char *automoe_translations_text(const automoe_translations *translations, size_t index);

/* The token ids of translation `index` (without end-of-sentence), owned by `translations`; an
 * empty translation gives `*out_ids` = NULL and `*out_length` = 0. */
automoe_status automoe_translations_ids(const automoe_translations *translations, size_t index,
                                        const uint32_t **out_ids, size_t *out_length);

/* The length-normalised log-probability score of translation `index` (0 when out of range). */
double automoe_translations_score(const automoe_translations *translations, size_t index);

/* Translation `rank` (0 = the best) of sentence `index`: its text (NULL when out of range), its
 * token ids (AUTOMOE_OUT_OF_RANGE when out of range) and its score (0 when out of range), owned
 * by `translations`. Rank 0 is what the functions above return. */
const char *automoe_translations_nbest_text(const automoe_translations *translations, size_t index, size_t rank);
automoe_status automoe_translations_nbest_ids(const automoe_translations *translations, size_t index, size_t rank,
                                              const uint32_t **out_ids, size_t *out_length);
double automoe_translations_nbest_score(const automoe_translations *translations, size_t index, size_t rank);

/* Releases a result. NULL is a no-op. */
void automoe_translations_free(automoe_translations *translations);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* AUTOMOE_H */
