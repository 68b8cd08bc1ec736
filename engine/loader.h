// Fetch + decode + preprocess workers. Jobs go in as SampleInput, come out (in completion
// order, matched by the caller through `tag`) with either pixel values or a failure status:
//   failed_to_parse     malformed list line / tar sample without an image, bad or duplicate
//                       key (or SampleInput::input_status when the source set one: a tar
//                       member over --max-image-bytes is failed_to_download, "too_large")
//   failed_to_download  missing file, not a regular file (device, FIFO, socket, directory),
//                       outside --local-root, HTTP error, X-Robots-Tag opt-out, unsupported
//                       URL scheme, more than --max-image-bytes ("...: too_large: ...")
//   failed_to_decode    bytes that are not a decodable JPEG/PNG/WebP image, or an image with
//                       more pixels than decode.max_pixels (error "...: too_large: ...")
// Local paths are resolved against the list's directory; file:// URLs are local files;
// http(s):// goes through io::HttpClient (several transfers in flight, retries, limits).
// Local files are read with io::read_file_bounded (regular files only, size checked before a
// byte is read) after their real path (symlinks followed) is checked against local_root.
// Messages name paths, URLs and what is wrong; never a byte of the data.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "engine/sources.h"
#include "io/http.h"
#include "io/image.h"
#include "models/preprocess.h"

namespace recap::engine {

struct LoadJob {
  uint64_t tag = 0;  // caller's handle
  SampleInput in;
};

struct LoadResult {
  uint64_t tag = 0;
  SampleInput in;      // image_bytes holds the original bytes on success
  std::string status;  // "" on success, else failed_to_*
  std::string error;
  int width = 0, height = 0;  // decoded size
  std::string image_ext;      // from the bytes: "jpg", "png", "webp"
  // img2dataset's compute_hash / extract_exif fields, set on success only: the hex SHA-256 of
  // the image bytes, and for a JPEG the exifread-style JSON text (io/exif.h; "{}" when the
  // JPEG has no EXIF). Not set for other formats.
  std::string sha256;
  std::optional<std::string> exif;
  std::vector<float> pixels;  // [3, S, S]
  double fetch_ms = 0, decode_ms = 0;
};

struct LoaderOptions {
  int workers = 4;
  uint64_t max_file_bytes = 64ull << 20;
  // Local paths and file:// URLs must resolve (realpath) inside this directory; "" = anywhere
  // (regular files only either way). The Loader resolves it (realpath) once; a root that does
  // not resolve throws io::IoError from the constructor.
  std::string local_root;
  io::HttpOptions http;
  io::DecodeOptions decode;  // max_pixels: the caller's --max-image-pixels
  models::PreprocessConfig preprocess;
};

class Loader {
 public:
  explicit Loader(LoaderOptions opts);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  void push(LoadJob job);
  // Waits up to timeout_ms for a result; false when none arrived.
  bool pop(LoadResult* out, int timeout_ms);
  // Jobs pushed and not yet popped.
  size_t outstanding() const;

  // One job, synchronously, on the calling thread (also what the workers run).
  LoadResult load(LoadJob job);

 private:
  void worker();
  std::string fetch(const SampleInput& in, std::string* status, std::string* error);

  LoaderOptions opts_;
  std::unique_ptr<io::HttpClient> http_;
  mutable std::mutex mu_;
  std::condition_variable cv_in_, cv_out_;
  std::deque<LoadJob> in_;
  std::deque<LoadResult> out_;
  size_t outstanding_ = 0;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace recap::engine
