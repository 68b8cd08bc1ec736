#include "engine/loader.h"

#include <stdlib.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "io/digest.h"
#include "io/exif.h"
#include "io/fileutil.h"

namespace recap::engine {

namespace {
double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string percent_decode(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
      out.push_back(static_cast<char>(hexval(s[i + 1]) * 16 + hexval(s[i + 2])));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

bool starts_with(const std::string& s, const char* p) {
  return s.rfind(p, 0) == 0;
}

// Whether `path` (already realpath'ed) is `root` or inside it.
bool inside_root(const std::string& path, const std::string& root) {
  if (root == "/") return true;
  return path == root ||
         (path.size() > root.size() && path.compare(0, root.size(), root) == 0 && path[root.size()] == '/');
}

const char* ext_of(io::ImageFormat f) {
  switch (f) {
    case io::ImageFormat::Jpeg:
      return "jpg";
    case io::ImageFormat::Png:
      return "png";
    case io::ImageFormat::Webp:
      return "webp";
    default:
      return "";
  }
}
}  // namespace

Loader::Loader(LoaderOptions opts) : opts_(std::move(opts)) {
  opts_.http.max_bytes = opts_.max_file_bytes;
  if (!opts_.local_root.empty()) {
    char* real = ::realpath(opts_.local_root.c_str(), nullptr);
    if (real == nullptr) throw io::IoError("--local-root " + opts_.local_root + ": " + std::strerror(errno));
    opts_.local_root = real;
    ::free(real);
  }
  http_ = std::make_unique<io::HttpClient>(opts_.http);
  const int n = std::max(1, opts_.workers);
  for (int i = 0; i < n; ++i) threads_.emplace_back([this] { worker(); });
}

Loader::~Loader() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_in_.notify_all();
  http_->shutdown();  // a worker blocked on a download returns at once ("cancelled")
  for (auto& t : threads_) t.join();
}

void Loader::push(LoadJob job) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    in_.push_back(std::move(job));
    outstanding_++;
  }
  cv_in_.notify_one();
}

bool Loader::pop(LoadResult* out, int timeout_ms) {
  std::unique_lock<std::mutex> lk(mu_);
  if (!cv_out_.wait_for(lk, std::chrono::milliseconds(timeout_ms), [&] { return !out_.empty(); }))
    return false;
  *out = std::move(out_.front());
  out_.pop_front();
  outstanding_--;
  return true;
}

size_t Loader::outstanding() const {
  std::lock_guard<std::mutex> lk(mu_);
  return outstanding_;
}

void Loader::worker() {
  for (;;) {
    LoadJob job;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_in_.wait(lk, [&] { return stop_ || !in_.empty(); });
      if (stop_) return;
      job = std::move(in_.front());
      in_.pop_front();
    }
    LoadResult r = load(std::move(job));
    {
      std::lock_guard<std::mutex> lk(mu_);
      out_.push_back(std::move(r));
    }
    cv_out_.notify_one();
  }
}

std::string Loader::fetch(const SampleInput& in, std::string* status, std::string* error) {
  const std::string& url = in.url;
  if (starts_with(url, "http://") || starts_with(url, "https://")) {
    auto res = http_->fetch_sync(url);
    if (!res.ok) {
      *status = "failed_to_download";
      *error = res.error;
      return {};
    }
    return std::move(res.body);
  }
  std::string path;
  if (starts_with(url, "file://")) {
    path = percent_decode(url.substr(7));
    if (!starts_with(path, "/")) {  // file://host/path: only localhost is meaningful
      size_t slash = path.find('/');
      std::string host = slash == std::string::npos ? path : path.substr(0, slash);
      if (host != "localhost" || slash == std::string::npos) {
        *status = "failed_to_download";
        *error = "unsupported file URL (remote host): " + url;
        return {};
      }
      path = path.substr(slash);
    }
  } else if (url.find("://") != std::string::npos) {
    *status = "failed_to_download";
    *error = "unsupported URL scheme: " + url.substr(0, url.find("://"));
    return {};
  } else {
    path = io::join_path(in.base_dir, url);
  }
  if (!opts_.local_root.empty()) {
    // Confinement is decided on the real path (symlinks followed), and that path is what is
    // read, so a link inside the root cannot lead outside it.
    char* real = ::realpath(path.c_str(), nullptr);
    if (real == nullptr) {
      *status = "failed_to_download";
      *error = "cannot open " + path + ": " + std::strerror(errno);
      return {};
    }
    std::string resolved(real);
    ::free(real);
    if (!inside_root(resolved, opts_.local_root)) {
      *status = "failed_to_download";
      *error = path + ": outside --local-root " + opts_.local_root;
      return {};
    }
    path = resolved;
  }
  try {
    return io::read_file_bounded(path, opts_.max_file_bytes);
  } catch (const io::BoundedReadException& e) {
    *status = "failed_to_download";
    *error = e.what();
    // The reader's message names the limit; say which flag moves it.
    if (e.kind == io::BoundedReadError::TooLarge) *error += " (--max-image-bytes)";
    return {};
  }
}

LoadResult Loader::load(LoadJob job) {
  LoadResult r;
  r.tag = job.tag;
  r.in = std::move(job.in);
  if (!r.in.parse_error.empty()) {
    r.status = r.in.input_status.empty() ? "failed_to_parse" : r.in.input_status;
    r.error = r.in.parse_error;
    return r;
  }
  auto t0 = std::chrono::steady_clock::now();
  if (!r.in.has_inline_image) {
    r.in.image_bytes = fetch(r.in, &r.status, &r.error);
    if (!r.status.empty()) return r;
  }
  r.fetch_ms = ms_since(t0);
  auto t1 = std::chrono::steady_clock::now();
  const auto* data = reinterpret_cast<const uint8_t*>(r.in.image_bytes.data());
  try {
    io::Image img = io::decode_image(data, r.in.image_bytes.size(), opts_.decode);
    r.width = img.width;
    r.height = img.height;
    r.image_ext = ext_of(img.source.format);
    r.pixels = models::preprocess_llava(img, opts_.preprocess);
    r.sha256 = io::sha256_hex(r.in.image_bytes);
    if (img.source.format == io::ImageFormat::Jpeg)
      r.exif = io::exif_json_from_jpeg(data, r.in.image_bytes.size());
  } catch (const io::ImageError& e) {
    r.status = "failed_to_decode";
    r.error = (r.in.url.empty() ? r.in.key : r.in.url) + ": " + io::image_error_kind_name(e.kind()) + ": " +
              e.what();
    // The decoder's message names its option; say which flag moves the limit.
    if (e.kind() == io::ImageErrorKind::TooLarge) r.error += " (--max-image-pixels)";
  } catch (const std::exception& e) {
    r.status = "failed_to_decode";
    r.error = e.what();
  }
  r.decode_ms = ms_since(t1);
  return r;
}

}  // namespace recap::engine
