// Subcommand registry of the recap-engine CLI. Each cmd_*.cpp defines one subcommand and
// registers it with a static CommandRegistrar; main.cpp only parses and dispatches.
//
// Error contract of a subcommand: it reports a failure by throwing (engine::UsageError for a
// bad flag value, the lower layers' own configuration errors, InterruptedError, anything else
// for a runtime failure); main.cpp prints `recap-engine SUB: error: ...` and maps the exception
// to the exit code with engine::exit_code_for(), the one mapping (engine/errors.h). A runner
// returns a status only for its normal outcomes: exit_status(ExitCode::kOk), or a documented
// outcome that is not an error (merge-stats: some shard is not done, kRuntime).
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <vector>

#include "engine/errors.h"

namespace recap::cli {

using engine::ExitCode;

// The process status of an exit code. Runners return int: caption's returns the status
// engine::run_caption computed (its per-shard outcome), the others exit_status(...).
constexpr int exit_status(ExitCode code) {
  return static_cast<int>(code);
}
inline constexpr int kExitOk = exit_status(ExitCode::kOk);

struct Command {
  std::string name;
  // Adds options to `sub` and returns the function to run once parsing succeeded.
  std::function<std::function<int()>(CLI::App* sub)> setup;
  std::string description;
};

std::vector<Command>& registry();

// Writes a subcommand's report to stdout and flushes it. A failed write throws
// std::runtime_error("writing the standard output: <strerror>") with the errno of the write
// that failed (a report larger than stdio's buffer is partly flushed inside the call, so a
// check at exit would no longer know why), and main.cpp does not report it a second time.
void write_report(const std::string& text);

struct CommandRegistrar {
  CommandRegistrar(std::string name, std::string description,
                   std::function<std::function<int()>(CLI::App*)> setup) {
    registry().push_back(Command{std::move(name), std::move(setup), std::move(description)});
  }
};

}  // namespace recap::cli
