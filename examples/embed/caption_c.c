/*
 * caption_c: captions image files with the recap C API.
 *   caption_c <weights_dir> <tokenizer.json> <image>...
 * Prints one line per image, "<key>\t<caption>", in batch order, after streaming each finished
 * sample to stderr. Exit status 0 when every image got a non-empty caption, 1 otherwise, 2 on
 * a usage or load error.
 */
#include <recap/recap.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Reads a whole file into a malloc'ed buffer; NULL on failure. */
static uint8_t* read_file(const char* path, size_t* size) {
  FILE* f = fopen(path, "rb");
  uint8_t* data = NULL;
  long n;
  if (!f) return NULL;
  if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
    data = (uint8_t*)malloc((size_t)n + 1);
    if (data && fread(data, 1, (size_t)n, f) != (size_t)n) {
      free(data);
      data = NULL;
    }
    *size = (size_t)n;
  }
  fclose(f);
  return data;
}

static int on_result(const recap_result* r, void* user_data) {
  (void)user_data;
  if (r->status == RECAP_OK)
    fprintf(stderr, "finished %s: %d prompt + %d new tokens\n", r->key, r->prompt_tokens, r->new_tokens);
  else
    fprintf(stderr, "failed %s: %s: %s\n", r->key, recap_status_string(r->status), r->error_message);
  return 0; /* nonzero would cancel the rest of the batch */
}

static void on_progress(size_t done, size_t total, void* user_data) {
  (void)user_data;
  fprintf(stderr, "progress %lu/%lu\n", (unsigned long)done, (unsigned long)total);
}

static void on_log(recap_log_level level, const char* message, void* user_data) {
  (void)user_data;
  fprintf(stderr, "[recap %d] %s\n", (int)level, message);
}

int main(int argc, char** argv) {
  recap_model_params mp;
  recap_caption_params cp;
  recap_model* model = NULL;
  recap_image* images;
  recap_result* results = NULL;
  uint8_t** buffers;
  char* error = NULL;
  recap_status st;
  size_t i, n;
  int rc = 0;

  if (argc < 4) {
    fprintf(stderr, "usage: %s <weights_dir> <tokenizer.json> <image>...\n", argv[0]);
    return 2;
  }
  printf("# recap %s\n", recap_version());
  recap_set_log_callback(on_log, NULL);

  mp = recap_model_default_params();
  mp.weights_dir = argv[1];
  mp.tokenizer_path = argv[2];
  st = recap_model_load(&mp, &model, &error);
  if (st != RECAP_OK) {
    fprintf(stderr, "load failed (%s): %s\n", recap_status_string(st), error ? error : "");
    recap_free_string(error);
    return 2;
  }

  n = (size_t)(argc - 3);
  images = (recap_image*)calloc(n, sizeof *images);
  buffers = (uint8_t**)calloc(n, sizeof *buffers);
  if (!images || !buffers) return 2;
  for (i = 0; i < n; ++i) {
    size_t size = 0;
    buffers[i] = read_file(argv[3 + i], &size);
    if (!buffers[i]) {
      fprintf(stderr, "%s: cannot read\n", argv[3 + i]);
      return 2;
    }
    images[i].encoded = buffers[i];
    images[i].encoded_size = size;
    images[i].key = argv[3 + i];
  }

  cp = recap_caption_default_params();
  cp.max_new_tokens = 24;
  cp.max_batch = 4;
  st = recap_caption_batch(model, &cp, images, n, &results, on_result, on_progress, NULL, &error);
  if (st != RECAP_OK) {
    fprintf(stderr, "caption failed (%s): %s\n", recap_status_string(st), error ? error : "");
    recap_free_string(error);
    rc = 1;
  } else {
    for (i = 0; i < n; ++i) {
      if (results[i].status != RECAP_OK || results[i].caption[0] == '\0') rc = 1;
      printf("%s\t%s\n", results[i].key, results[i].caption);
    }
  }
  recap_results_free(results, n);
  for (i = 0; i < n; ++i) free(buffers[i]);
  free(buffers);
  free(images);
  recap_model_free(model);
  return rc;
}
