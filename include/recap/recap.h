/*
 * recap.h: the stable C API of recap-engine (compiles as C99 and C++).
 *
 * Load a LLaVA-1.5-LLaMA3 checkpoint once, then caption images given as encoded bytes
 * (JPEG/PNG/WebP) or decoded RGB8 pixels. A batch runs through the engine's caption driver
 * (engine/caption_driver), the code `recap-engine caption` runs between loading an image and
 * writing its record: images are decoded and encoded by the vision tower in groups, prompts
 * are prefilled, up to max_batch captions are decoded together (a finished one making room for
 * the next image at once), and the captions are post-processed (first_sentence, shear,
 * num_captions) with the same per-sample error policy. For the same image, key, original
 * caption, settings and checkpoint, a result carries the captions, status, token counts and
 * stop reasons `recap-engine caption` records (tests/api/test_api_cli_parity.cpp pins this).
 *
 * Everything is reached through opaque handles; parameter structs are initialised by
 * *_default_params(). recap_caption_params is versioned by its struct_size field (set by
 * recap_caption_default_params, checked by the library), so a caller built against another
 * layout gets RECAP_ERR_INVALID_ARGUMENT, never misread fields.
 *
 * Return codes: every function returning recap_status returns RECAP_OK (0) on success and a
 * negative code otherwise (see recap_status). Functions with a `char** error` out-parameter
 * then store a malloc'ed, NUL-terminated message there when error is not NULL (free it with
 * recap_free_string); on success *error is set to NULL.
 *
 * Thread-safety is stated per function below. Summary: loading, freeing and captioning with
 * different models may happen concurrently from any threads; captioning calls on one model
 * are serialised by a per-model mutex (safe, but they do not overlap). Callbacks run on the
 * thread that called the captioning function, before it returns.
 *
 * Linking: librecap.a is a C++20 static library; link with a C++ linker (CMake:
 * find_package(recap CONFIG) and target_link_libraries(... recap::recap) does this), or with
 * pkg-config: `pkg-config --static --libs recap`, or against shared system libraries
 * `pkg-config --libs recap $(pkg-config --print-requires-private recap)`.
 */
#ifndef RECAP_RECAP_H
#define RECAP_RECAP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Version of the library these declarations belong to (recap_version() returns the same as a
 * string). RECAP_API_VERSION changes when a declaration changes incompatibly. */
#define RECAP_VERSION_MAJOR 0
#define RECAP_VERSION_MINOR 1
#define RECAP_VERSION_PATCH 0
#define RECAP_API_VERSION                                              \
  2 /* 2: recap_caption_params.struct_size, num_captions, shear,       \
       first_sentence, max_image_pixels; recap_result's captions, stop \
       reasons and status_name */

typedef enum recap_status {
  RECAP_OK = 0,
  RECAP_ERR_INVALID_ARGUMENT = -1, /* NULL handle/pointer, bad enum or value, empty batch */
  RECAP_ERR_IO = -2,               /* a file or directory could not be found or read */
  RECAP_ERR_FORMAT = -3,           /* malformed checkpoint / config / tokenizer / template file */
  RECAP_ERR_UNSUPPORTED = -4,      /* valid input the engine does not support (e.g. a CLIP-only
                                      checkpoint, a prompt longer than the model's positions) */
  RECAP_ERR_IMAGE = -5,            /* an image could not be decoded (per-sample status) */
  RECAP_ERR_OUT_OF_MEMORY = -6,    /* an allocation failed */
  RECAP_ERR_CANCELLED = -7,        /* the result callback asked to stop */
  RECAP_ERR_INTERNAL = -8          /* an unexpected exception: a bug (please report the message),
                                      or a C++ exception thrown out of a caller's callback */
} recap_status;

/* Format of the big weight matrices after loading (the checkpoint's own dtype is converted). */
typedef enum recap_precision {
  RECAP_PRECISION_F32 = 0, /* default, as `recap-engine caption --precision f32` */
  RECAP_PRECISION_BF16 = 1,
  RECAP_PRECISION_INT8 = 2, /* per-row symmetric int8 */
  RECAP_PRECISION_INT4 = 3  /* group-wise int4 */
} recap_precision;

/* Element type of the KV cache. */
typedef enum recap_kv_dtype {
  RECAP_KV_F32 = 0, /* default */
  RECAP_KV_BF16 = 1,
  RECAP_KV_F16 = 2
} recap_kv_dtype;

typedef enum recap_log_level {
  RECAP_LOG_DEBUG = 0,
  RECAP_LOG_INFO = 1,
  RECAP_LOG_WARN = 2,
  RECAP_LOG_ERROR = 3
} recap_log_level;

typedef struct recap_model recap_model; /* opaque */

typedef struct recap_model_params {
  const char* weights_dir;        /* required: LLaVA checkpoint directory (config.json, *.safetensors) */
  const char* vision_weights_dir; /* optional: CLIP tower directory when the checkpoint has none
                                     embedded (NULL: embedded / from config.json) */
  const char* tokenizer_path;     /* optional: tokenizer.json (NULL: <weights_dir>/tokenizer.json) */
  recap_precision precision;      /* default RECAP_PRECISION_F32 */
  recap_kv_dtype kv_dtype;        /* default RECAP_KV_F32 */
  int threads;                    /* compute threads; 0 (default): OMP_NUM_THREADS, else the CPUs
                                     this process may use (affinity, cgroup quota) */
} recap_model_params;

/* --shear of `recap-engine caption`: cut each caption to at most as many words / tokens as the
 * image's original_caption has (no cut when it has none). */
typedef enum recap_shear {
  RECAP_SHEAR_NONE = 0, /* default */
  RECAP_SHEAR_WORDS = 1,
  RECAP_SHEAR_TOKENS = 2
} recap_shear;

typedef struct recap_caption_params {
  size_t struct_size;        /* sizeof(recap_caption_params) as the caller was compiled: set by
                                recap_caption_default_params(); any other value is refused
                                (RECAP_ERR_INVALID_ARGUMENT) */
  const char* template_name; /* NULL: the model family's default ("llava-llama3" for LLaVA-LLaMA-3);
                                or "llama3-plain", "llava-next-llama3", or a template file
                                (see docs/CAPTION.md) */
  const char* prompt;        /* NULL: the template's prompt (the Recap-DataComp detailed-caption one) */
  int max_new_tokens;        /* default 128 (>= 1) */
  float temperature;         /* 0 = greedy (default); > 0 samples */
  int top_k;                 /* 0 = off (default) */
  float top_p;               /* 1 = off (default); in (0, 1] */
  uint64_t seed;             /* sampling seed; each sample's stream is derived from (seed, key) so a
                                caption does not depend on its batch neighbours. Default 0 */
  int max_batch;             /* captions decoded together; default 8 (>= 1) */
  int vision_batch;          /* images per vision-tower call; 0 (default): min(max_batch, 8) */
  int num_captions;          /* captions per image, each from the same prefill; default 1, at most
                                max_batch (greedy decoding makes them identical: set temperature) */
  recap_shear shear;         /* default RECAP_SHEAR_NONE */
  int first_sentence;        /* nonzero: keep each caption's first sentence (text before the first
                                '.', stripped), as --first-sentence. Default 0 */
  uint64_t max_image_pixels; /* decompression-bomb guard checked from the image header: more pixels
                                fail the sample (RECAP_ERR_IMAGE). Default 89478485 (Pillow's
                                MAX_IMAGE_PIXELS, as --max-image-pixels); 0: no limit */
} recap_caption_params;

/* An image: either encoded bytes (JPEG/PNG/WebP) or decoded RGB8 (HWC) pixels. Only read during
 * the call. */
typedef struct recap_image {
  const uint8_t* encoded; /* encoded file bytes, or NULL */
  size_t encoded_size;
  const uint8_t* rgb;           /* or RGB8 pixels, rows top to bottom, no padding, when encoded is NULL */
  int width, height;            /* of rgb */
  const char* key;              /* caller's identifier, echoed in the result and used to derive the
                                   sampling stream (NULL: the batch index in decimal) */
  const char* original_caption; /* fills {original_caption} in templates (may be NULL) */
} recap_image;

/* A finished sample. Strings are owned by the library: valid during the callback, or until
 * recap_results_free for recap_caption_batch's array. */
typedef struct recap_result {
  size_t index;                    /* position of the image in the batch */
  const char* key;                 /* the image's key (or its index in decimal) */
  recap_status status;             /* RECAP_OK, or why this sample has no caption: RECAP_ERR_IMAGE
                                      (undecodable, or more than max_image_pixels),
                                      RECAP_ERR_INVALID_ARGUMENT (no pixels given, bad rgb size),
                                      RECAP_ERR_UNSUPPORTED (prompt too long for the model or the KV
                                      cache), RECAP_ERR_INTERNAL (the vision tower failed for this
                                      image's group: the other groups go on), RECAP_ERR_CANCELLED */
  const char* status_name;         /* the status `recap-engine caption` records: "success",
                                      "failed_to_decode", "failed_to_parse", "failed_to_caption";
                                      "cancelled" for a sample a cancelled call did not finish */
  const char* caption;             /* the first caption; "" on failure */
  const char* error_message;       /* "<status_name>: <what is wrong>" on failure; "" on success */
  int prompt_tokens;               /* positions of the prompt, image features included (0 on failure) */
  int new_tokens;                  /* generated tokens over every caption (stop tokens excluded) */
  size_t n_captions;               /* num_captions on success, 0 on failure */
  const char* const* captions;     /* n_captions captions (captions[0] is `caption`); NULL when 0 */
  const char* stop_reason;         /* why the first caption ended: "stop_token" or "max_new_tokens";
                                      "" on failure */
  const char* const* stop_reasons; /* per caption, as stop_reason; NULL when n_captions is 0 */
} recap_result;

/* Called once per finished sample (success or failure), in completion order (not batch order).
 * Return nonzero to cancel the rest of the batch: the call then returns RECAP_ERR_CANCELLED and
 * the samples not finished yet get status RECAP_ERR_CANCELLED. */
typedef int (*recap_result_callback)(const recap_result* result, void* user_data);
/* Progress: samples finished out of total, after each finished sample. */
typedef void (*recap_progress_callback)(size_t done, size_t total, void* user_data);
/* One log line (no trailing newline). */
typedef void (*recap_log_callback)(recap_log_level level, const char* message, void* user_data);

/* "MAJOR.MINOR.PATCH" of the linked library; never NULL; static storage.
 * Thread-safety: any thread, any time. */
const char* recap_version(void);

/* A static description of a status code ("invalid argument", ...); never NULL (unknown codes
 * give "unknown status"). Thread-safety: any thread, any time. */
const char* recap_status_string(recap_status status);

/* Default parameters (see the field comments). Thread-safety: any thread, any time. */
recap_model_params recap_model_default_params(void);
recap_caption_params recap_caption_default_params(void);

/* Routes the library's log lines to `callback` (NULL restores the default: lines of level
 * >= RECAP_LOG_WARN to stderr). The callback may be called from any thread that calls into the
 * library; lines are delivered one at a time (under a process-wide lock, so the callback must
 * not call recap_set_log_callback itself). Thread-safety: any thread; once this returns, the
 * previous callback is not called any more. */
void recap_set_log_callback(recap_log_callback callback, void* user_data);

/* Loads a model (config, weights packed into params->precision, tokenizer).
 * Returns RECAP_OK and *model, or: RECAP_ERR_INVALID_ARGUMENT (params/model NULL, no weights_dir,
 * bad precision/kv_dtype enum, threads < 0), RECAP_ERR_IO (a directory or file is missing or
 * unreadable), RECAP_ERR_FORMAT (malformed or unsupported config.json, missing/mis-shaped
 * tensors, malformed safetensors or tokenizer.json), RECAP_ERR_UNSUPPORTED (a valid checkpoint
 * that is not a LLaVA one, e.g. a CLIP vision tower alone), RECAP_ERR_OUT_OF_MEMORY.
 * On failure *model is NULL.
 * Thread-safety: any thread; concurrent loads are independent. */
recap_status recap_model_load(const recap_model_params* params, recap_model** model, char** error);

/* Frees a model (NULL is a no-op). Thread-safety: call exactly once, after every call using the
 * model has returned. */
void recap_model_free(recap_model* model);

/* Captions n images (n >= 1). params NULL: defaults. `results` (if not NULL) receives a
 * malloc'ed array of n results in batch order (free with recap_results_free), also when the
 * call was cancelled. on_result / on_progress may be NULL; user_data is passed to both.
 * Returns RECAP_OK when the batch ran (individual samples may still have failed: see each
 * result's status), RECAP_ERR_CANCELLED when on_result asked to stop, or
 * RECAP_ERR_INVALID_ARGUMENT (model/images NULL, n == 0, max_new_tokens < 1, max_batch < 1,
 * temperature < 0, top_k < 0, top_p outside (0, 1], num_captions outside [1, max_batch], bad
 * shear, struct_size not this header's, unknown template name or a template field no sample has),
 * RECAP_ERR_IO / RECAP_ERR_FORMAT (a template file missing / malformed),
 * RECAP_ERR_OUT_OF_MEMORY, RECAP_ERR_INTERNAL. On those errors *results is NULL.
 * Thread-safety: calls on the same model are serialised (a second caller waits); calls on
 * different models run in parallel. Callbacks must not call recap_caption_* on the same model. */
recap_status recap_caption_batch(recap_model* model, const recap_caption_params* params,
                                 const recap_image* images, size_t n, recap_result** results,
                                 recap_result_callback on_result, recap_progress_callback on_progress,
                                 void* user_data, char** error);

/* Convenience: one image. *caption receives a malloc'ed caption (free with recap_free_string).
 * Returns what recap_caption_batch returns, except that the sample's own failure status
 * (e.g. RECAP_ERR_IMAGE) is returned as the call's status, with its message in *error.
 * Thread-safety: as recap_caption_batch. */
recap_status recap_caption_image(recap_model* model, const recap_caption_params* params,
                                 const recap_image* image, char** caption, char** error);

/* Frees an array from recap_caption_batch (NULL is a no-op). Thread-safety: any thread. */
void recap_results_free(recap_result* results, size_t n);
/* Frees a string returned by the library (NULL is a no-op). Thread-safety: any thread. */
void recap_free_string(char* s);

#ifdef __cplusplus
}
#endif
#endif /* RECAP_RECAP_H */
