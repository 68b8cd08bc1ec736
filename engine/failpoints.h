// Test-only fault injection ("failpoints"): make a named step fail on demand, so tests can pin
// what the engine does when that step throws (e.g. the caption driver's tower-failure policy),
// which no real input can trigger reliably.
//
// Armed by the environment variable RECAP_FAILPOINTS, read once per process:
//   RECAP_FAILPOINTS=vision_tower_batch:N   the Nth vision-tower batch of the process (1-based,
//                                           counted across the vision worker thread and the
//                                           inline path) throws std::runtime_error
//                                           "failpoint vision_tower_batch:N" just before
//                                           encode_images would run.
// Unset or empty: every failpoint is off, and a hit costs one relaxed atomic load.
// Several entries are separated by commas; a name may appear once. An unknown name or a
// malformed value is a UsageError naming the variable: callers check it where a bad setting is
// reported (the CLI before any subcommand runs, the C API in recap_model_load).
#pragma once
#include <cstdint>
#include <string>

namespace recap::engine {

inline constexpr const char* kFailpointsEnv = "RECAP_FAILPOINTS";

// What a RECAP_FAILPOINTS value arms; 0 means off.
struct FailpointSettings {
  int64_t vision_tower_batch = 0;  // 1-based number of the vision-tower batch that throws
};

// Parses a RECAP_FAILPOINTS value ("" arms nothing). Throws UsageError naming the variable, the
// value and what is wrong. Pure: does not read or change the process's settings.
FailpointSettings parse_failpoints(const std::string& value);

// Reads RECAP_FAILPOINTS (the first call in the process; later calls reuse that reading) and
// throws its UsageError when it is malformed, on every call.
void check_failpoints();

// The failpoint before each vision-tower batch (both the worker-thread and the inline path call
// it once per batch). Throws std::runtime_error("failpoint vision_tower_batch:N") on the armed
// batch; thread-safe. Reads the variable on first use when check_failpoints() has not; a
// malformed value then throws its UsageError here (failing that batch).
void failpoint_vision_tower_batch();

}  // namespace recap::engine
