/* The C API called from C99 (compiled with -std=c99 -pedantic -Werror): loads the tiny model,
 * captions one encoded image with callbacks, frees everything. Returns 0 or a failing step. */
#include <stdlib.h>
#include <string.h>

#include "recap/recap.h"

struct c_counts {
  int results;
  size_t last_done;
};

static int c_on_result(const recap_result* r, void* user) {
  struct c_counts* c = (struct c_counts*)user;
  if (r->status == RECAP_OK) c->results++;
  return 0;
}

static void c_on_progress(size_t done, size_t total, void* user) {
  struct c_counts* c = (struct c_counts*)user;
  (void)total;
  c->last_done = done;
}

int recap_test_c_smoke(const char* weights, const char* tokenizer, const unsigned char* bytes, size_t size,
                       char* caption_out, size_t caption_cap) {
  recap_model_params mp = recap_model_default_params();
  recap_caption_params cp = recap_caption_default_params();
  recap_model* model = NULL;
  recap_result* results = NULL;
  recap_image image;
  struct c_counts counts = {0, 0};
  char* error = NULL;
  int rc = 0;

  mp.weights_dir = weights;
  mp.tokenizer_path = tokenizer;
  if (recap_model_load(&mp, &model, &error) != RECAP_OK) {
    recap_free_string(error);
    return 1;
  }
  if (error != NULL) rc = 2;
  memset(&image, 0, sizeof image);
  image.encoded = bytes;
  image.encoded_size = size;
  image.key = "c-image";
  cp.max_new_tokens = 24;
  if (rc == 0 && recap_caption_batch(model, &cp, &image, 1, &results, c_on_result, c_on_progress, &counts,
                                     &error) != RECAP_OK) {
    recap_free_string(error);
    rc = 3;
  }
  if (rc == 0 && (counts.results != 1 || counts.last_done != 1)) rc = 4;
  if (rc == 0 && (results[0].status != RECAP_OK || strcmp(results[0].key, "c-image") != 0)) rc = 5;
  if (rc == 0 && strlen(results[0].caption) + 1 > caption_cap) rc = 6;
  if (rc == 0) strcpy(caption_out, results[0].caption);
  recap_results_free(results, 1);
  recap_model_free(model);
  return rc;
}
