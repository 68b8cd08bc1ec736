// io/image: JPEG / PNG / WebP decoding of arbitrary bytes (the format is sniffed). Documented
// errors: io::ImageError. The pixel limit is lowered so that a valid huge header is refused
// before allocating more than the fuzzer's RSS limit.
#include <cstddef>
#include <cstdint>

#include "fuzz_util.h"
#include "io/image.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace recap;
  (void)io::sniff_image_format(data, size);
  (void)io::describe_magic(data, size);
  io::DecodeOptions opts;
  opts.max_pixels = 16u << 20;
  try {
    io::Image img = io::decode_image(data, size, opts);
    (void)img;
  } catch (const io::ImageError&) {
  }
  return 0;
}
