// Shared by the libFuzzer targets: a private scratch directory per process (inputs that the
// library reads by path are written there) and the input split helpers.
//
// Contract of every target: the library's documented, typed errors are fine and caught; any
// other exception escapes LLVMFuzzerTestOneInput, which libFuzzer reports as a crash
// (uncaught exception -> abort), as it does crashes, leaks, UB, timeouts and RSS overruns.
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>

namespace recap::fuzz {

// /tmp/recap_fuzz_<pid>/, created on first use and removed at exit.
inline const std::string& scratch_dir() {
  static const std::string dir = [] {
    std::string d =
        (std::filesystem::temp_directory_path() / ("recap_fuzz_" + std::to_string(::getpid()))).string();
    std::filesystem::create_directories(d);
    static const std::string to_remove = d;
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(to_remove, ec);
    });
    return d;
  }();
  return dir;
}

// Writes `bytes` to `path` (truncating); aborts on I/O failure (a harness problem, not a finding
// in the library).
inline void write_file(const std::string& path, std::string_view bytes) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr || std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size() || std::fclose(f) != 0) {
    std::perror(path.c_str());
    std::abort();
  }
}

inline std::string_view as_view(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// Takes the first byte as a selector (0 when empty) and returns the rest.
inline uint8_t take_selector(std::string_view* in) {
  if (in->empty()) return 0;
  const auto s = static_cast<uint8_t>((*in)[0]);
  in->remove_prefix(1);
  return s;
}

}  // namespace recap::fuzz
