/*
 * recap.h: the stable C API of recap-engine (compiles as C99 and C++).
 *
 * Load a LLaVA-1.5-LLaMA3 checkpoint once, then caption images given as encoded bytes
 * (JPEG/PNG/WebP) or decoded RGB8 pixels. Everything is reached through opaque handles;
 * parameter structs are initialised by *_default_params() so new fields can be added
 * without breaking callers that set only what they need.
 *
 * Return codes: every function returning recap_status returns RECAP_OK (0) on success and a
 * negative code otherwise; functions with an `char** error` out-parameter then store a
 * malloc'ed message there (free it with recap_free_string) when error is not NULL.
 *
 * Thread-safety:
 *   - recap_version, recap_status_string, recap_*_default_params: any thread, any time.
 *   - recap_set_log_callback: process-wide; call before loading models.
 *   - recap_model_load / recap_model_free: any thread; a model is freed exactly once, after
 *     every call using it has returned.
 *   - recap_caption_*: a recap_model may be used by ONE captioning call at a time (calls on
 *     the same model are serialised internally with a mutex, so concurrent calls are safe
 *     but do not run in parallel); different models run in parallel.
 *   - Callbacks run on the thread that called recap_caption_batch.
 */
#ifndef RECAP_RECAP_H
#define RECAP_RECAP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define RECAP_API_VERSION 1

typedef enum recap_status {
  RECAP_OK = 0,
  RECAP_ERR_INVALID_ARGUMENT = -1, /* NULL handle, bad enum, empty batch, ... */
  RECAP_ERR_IO = -2,               /* a file or directory could not be read */
  RECAP_ERR_FORMAT = -3,           /* malformed checkpoint / config / tokenizer */
  RECAP_ERR_UNSUPPORTED = -4,      /* valid input the engine does not support */
  RECAP_ERR_IMAGE = -5,            /* an image could not be decoded (per-sample status) */
  RECAP_ERR_OUT_OF_MEMORY = -6,
  RECAP_ERR_CANCELLED = -7,        /* a callback asked to stop */
  RECAP_ERR_INTERNAL = -8
} recap_status;

typedef enum recap_precision {
  RECAP_PRECISION_F32 = 0,
  RECAP_PRECISION_BF16 = 1,
  RECAP_PRECISION_INT8 = 2,
  RECAP_PRECISION_INT4 = 3
} recap_precision;

typedef enum recap_log_level {
  RECAP_LOG_DEBUG = 0,
  RECAP_LOG_INFO = 1,
  RECAP_LOG_WARN = 2,
  RECAP_LOG_ERROR = 3
} recap_log_level;

typedef struct recap_model recap_model; /* opaque */

typedef struct recap_model_params {
  const char* weights_dir;        /* required: checkpoint directory */
  const char* vision_weights_dir; /* optional: CLIP tower directory (NULL: embedded / from config) */
  const char* tokenizer_path;     /* optional: tokenizer.json (NULL: <weights_dir>/tokenizer.json) */
  recap_precision precision;      /* weights of the big matrices; default RECAP_PRECISION_INT8 */
  int threads;                    /* 0: from OMP_NUM_THREADS / affinity */
} recap_model_params;

typedef struct recap_caption_params {
  const char* template_name;   /* "llava-llama3" (default), "llama3-plain", "llava-next-llama3", or a file */
  const char* prompt;          /* NULL: the default detailed-caption prompt */
  int max_new_tokens;          /* default 128 */
  float temperature;           /* 0 = greedy (default) */
  int top_k;                   /* 0 = off */
  float top_p;                 /* 1 = off */
  uint64_t seed;               /* per-batch base seed; sample i uses seed + i */
  int max_batch;               /* sequences decoded together; default 16 */
} recap_caption_params;

/* An image: either encoded bytes (JPEG/PNG/WebP) or decoded RGB8 (HWC) pixels. */
typedef struct recap_image {
  const uint8_t* encoded;   /* encoded file bytes, or NULL */
  size_t encoded_size;
  const uint8_t* rgb;       /* or RGB8 pixels, row-major HWC, when encoded is NULL */
  int width, height;
  const char* key;          /* caller's identifier, echoed in the result (may be NULL) */
  const char* original_caption; /* fills {original_caption} in templates (may be NULL) */
} recap_image;

/* A finished sample. Strings are owned by the library and valid only during the callback
 * (or until recap_results_free for recap_caption_batch's array). */
typedef struct recap_result {
  size_t index;             /* position of the image in the batch */
  const char* key;          /* the image's key, or "" */
  recap_status status;      /* RECAP_OK or RECAP_ERR_IMAGE / ... for this sample */
  const char* caption;      /* "" on failure */
  const char* error_message;/* "" on success */
  int prompt_tokens;
  int new_tokens;
} recap_result;

/* Called once per finished sample, in completion order (not batch order). Return nonzero to
 * cancel the rest of the batch (RECAP_ERR_CANCELLED). */
typedef int (*recap_result_callback)(const recap_result* result, void* user_data);
/* Progress: samples done out of total. */
typedef void (*recap_progress_callback)(size_t done, size_t total, void* user_data);
typedef void (*recap_log_callback)(recap_log_level level, const char* message, void* user_data);

/* Library version string, e.g. "0.1.0"; never NULL. */
const char* recap_version(void);
/* A static description of a status code; never NULL. */
const char* recap_status_string(recap_status status);

recap_model_params recap_model_default_params(void);
recap_caption_params recap_caption_default_params(void);

/* Routes the library's log lines (NULL restores the default: stderr, level >= WARN). */
void recap_set_log_callback(recap_log_callback callback, void* user_data);

/* Loads a model. On failure *model is NULL and *error (if error != NULL) holds a message. */
recap_status recap_model_load(const recap_model_params* params, recap_model** model, char** error);
void recap_model_free(recap_model* model);

/* Captions n images. `results` (if not NULL) receives a malloc'ed array of n results in
 * batch order (free with recap_results_free). on_result / on_progress may be NULL. The
 * return value is RECAP_OK when the batch ran (individual samples may still have failed:
 * see each result's status). */
recap_status recap_caption_batch(recap_model* model, const recap_caption_params* params, const recap_image* images,
                                 size_t n, recap_result** results, recap_result_callback on_result,
                                 recap_progress_callback on_progress, void* user_data, char** error);
/* Convenience: one image; *caption is malloc'ed (free with recap_free_string). */
recap_status recap_caption_image(recap_model* model, const recap_caption_params* params, const recap_image* image,
                                 char** caption, char** error);

void recap_results_free(recap_result* results, size_t n);
void recap_free_string(char* s);

#ifdef __cplusplus
}
#endif
#endif /* RECAP_RECAP_H */
