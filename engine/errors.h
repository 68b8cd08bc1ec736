// Typed errors and the one mapping from an error to a process exit code.
//
// Every subcommand reports failure by throwing; tools/main.cpp catches what escapes and asks
// exit_code_for() which code it means. Nothing else turns an error into an exit code, so a
// new subcommand or a new error type cannot drift from the documented codes:
//   0  done
//   1  a runtime failure (the work was attempted and could not be finished: a write error, an
//      out-of-memory, a shard that could not be completed)
//   2  usage or configuration (bad flags, a missing or malformed checkpoint, config, tokenizer,
//      template or list, a fingerprint conflict): nothing was attempted, fix the command
//   75 interrupted (EX_TEMPFAIL): stopped by a signal or a limit before the work was done; a
//      rerun continues where it stopped
// Configuration errors are recognised by type: UsageError here, and the lower layers' own
// "this file is malformed / this setting is invalid" types (models::ConfigError,
// models::TokenizerError, io::FormatError, io::ListError, engine::AssignmentError,
// engine::InputError, engine::EvalQuantError). An
// io::IoError is a runtime failure unless the code that knows it is about configuration (a
// missing checkpoint folder) says so by throwing UsageError.
#pragma once
#include <exception>
#include <stdexcept>
#include <string>

namespace recap::engine {

enum class ExitCode : int { kOk = 0, kRuntime = 1, kUsage = 2, kInterrupted = 75 };

// Usage or configuration: exit 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Stopped before the work was done (signal, --max-samples); what was finished is kept: exit 75.
struct InterruptedError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The exit code an exception escaping a subcommand maps to (see the table above). Anything not
// recognised as configuration or interruption is a runtime failure (1).
ExitCode exit_code_for(const std::exception& e);

// True when `e` is a usage/configuration error (exit_code_for(e) == kUsage).
bool is_usage_error(const std::exception& e);

// Runs `f`; any std::exception it throws that is not already typed (usage or interrupted)
// becomes a UsageError carrying `context: what()`. For setup steps whose every failure is a
// configuration problem (reading the checkpoint the user named), so the caller needs no
// catch-and-rethrow of its own. std::bad_alloc passes through (a runtime failure).
template <class F>
decltype(auto) as_usage_error(const std::string& context, F&& f) {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const UsageError&) {
    throw;
  } catch (const InterruptedError&) {
    throw;
  } catch (const std::exception& e) {
    throw UsageError(context.empty() ? std::string(e.what()) : context + ": " + e.what());
  }
}

}  // namespace recap::engine
