#include "engine/failpoints.h"

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <mutex>
#include <stdexcept>

#include "engine/errors.h"

namespace recap::engine {

namespace {

constexpr const char* kVisionTowerBatch = "vision_tower_batch";

// kUnread until the first reading; then kOff (nothing armed: the hit's only cost is the load
// that sees it) or kArmed. A malformed value counts as kArmed so every hit takes the slow path
// and reports it.
enum State : int { kUnread = 0, kOff = 1, kArmed = 2 };
std::atomic<int> g_state{kUnread};
std::once_flag g_read_once;
// Written once under g_read_once; read only after std::call_once (which orders the reads).
FailpointSettings g_settings;
std::string g_error;  // the UsageError message of a malformed value, else empty
std::atomic<int64_t> g_vision_tower_batches{0};

void read_environment() {
  const char* v = std::getenv(kFailpointsEnv);
  try {
    g_settings = parse_failpoints(v ? v : "");
    g_state.store(g_settings.vision_tower_batch > 0 ? kArmed : kOff, std::memory_order_relaxed);
  } catch (const UsageError& e) {
    g_error = e.what();
    g_state.store(kArmed, std::memory_order_relaxed);
  }
}

void ensure_read() {
  std::call_once(g_read_once, read_environment);
  if (!g_error.empty()) throw UsageError(g_error);
}

}  // namespace

FailpointSettings parse_failpoints(const std::string& value) {
  FailpointSettings s;
  const auto bad = [&](const std::string& what) {
    return UsageError(std::string(kFailpointsEnv) + "=\"" + value + "\": " + what);
  };
  size_t start = 0;
  while (start <= value.size() && !value.empty()) {
    const size_t comma = value.find(',', start);
    const std::string entry =
        value.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    const size_t colon = entry.find(':');
    const std::string name = entry.substr(0, colon);
    if (name != kVisionTowerBatch)
      throw bad("unknown failpoint \"" + name + "\" (known: " + kVisionTowerBatch + ":N)");
    if (s.vision_tower_batch != 0) throw bad(std::string(kVisionTowerBatch) + " is given twice");
    const std::string number = colon == std::string::npos ? "" : entry.substr(colon + 1);
    // Digits only (strtoll alone would take a sign, spaces or a trailing rest).
    const bool digits = !number.empty() && number.find_first_not_of("0123456789") == std::string::npos;
    errno = 0;
    const long long n = digits ? std::strtoll(number.c_str(), nullptr, 10) : 0;
    if (!digits || errno == ERANGE || n < 1)
      throw bad(std::string(kVisionTowerBatch) + " needs a batch number >= 1 (" + kVisionTowerBatch +
                ":N), not \"" + number + "\"");
    s.vision_tower_batch = n;
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return s;
}

void check_failpoints() {
  ensure_read();
}

void failpoint_vision_tower_batch() {
  if (g_state.load(std::memory_order_relaxed) == kOff) return;
  ensure_read();
  if (g_settings.vision_tower_batch == 0) return;
  const int64_t batch = g_vision_tower_batches.fetch_add(1, std::memory_order_relaxed) + 1;
  if (batch == g_settings.vision_tower_batch)
    throw std::runtime_error(std::string("failpoint ") + kVisionTowerBatch + ":" + std::to_string(batch));
}

}  // namespace recap::engine
