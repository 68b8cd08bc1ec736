// recap-engine: recaption image datasets with LLaVA-1.5-LLaMA3 on CPUs.
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <map>
#include <stdexcept>
#include <string>

#include "engine/errors.h"
#include "engine/failpoints.h"
#include "tools/cli.h"

namespace recap::cli {
std::vector<Command>& registry() {
  static std::vector<Command> commands;
  return commands;
}

namespace {
bool g_stdout_failure_reported = false;
}  // namespace

void write_report(const std::string& text) {
  errno = 0;
  const size_t written = std::fwrite(text.data(), 1, text.size(), stdout);
  int err = errno;
  if (written == text.size()) {
    errno = 0;
    if (std::fflush(stdout) == 0) return;
    err = errno;
  }
  g_stdout_failure_reported = true;
  throw std::runtime_error(std::string("writing the standard output: ") +
                           (err ? std::strerror(err) : "write error"));
}

namespace {

// Runs one parsed subcommand: the one place where an error escaping any subcommand becomes
// `recap-engine SUB: error: ...` on stderr and an exit code (engine::exit_code_for).
int run_subcommand(const std::string& name, const std::function<int()>& run) {
  int status = exit_status(ExitCode::kRuntime);
  try {
    engine::check_failpoints();  // a malformed RECAP_FAILPOINTS (test-only) is a usage error: exit 2
    status = run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "recap-engine %s: error: %s\n", name.c_str(), e.what());
    status = exit_status(engine::exit_code_for(e));
  } catch (...) {
    std::fprintf(stderr, "recap-engine %s: error: unknown exception\n", name.c_str());
    status = exit_status(ExitCode::kRuntime);
  }
  // A report that did not reach stdout (a full disk, a closed pipe with SIGPIPE ignored) is a
  // runtime failure, not a success: stdio only says so at the flush.
  errno = 0;
  if (!g_stdout_failure_reported && (std::fflush(stdout) != 0 || std::ferror(stdout))) {
    const int err = errno;
    std::fprintf(stderr, "recap-engine %s: error: writing the standard output: %s\n", name.c_str(),
                 err ? std::strerror(err) : "write error");
    if (status == exit_status(ExitCode::kOk)) status = exit_status(ExitCode::kRuntime);
  }
  return status;
}

}  // namespace
}  // namespace recap::cli

int main(int argc, char** argv) {
  using namespace recap::cli;
  CLI::App app{"recap-engine: recaption image datasets with LLaVA-1.5-LLaMA3 on CPUs"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("recap-engine ") + RECAP_VERSION);
  std::map<CLI::App*, std::function<int()>> runners;
  auto& cmds = registry();
  std::sort(cmds.begin(), cmds.end(), [](const Command& a, const Command& b) { return a.name < b.name; });
  for (auto& c : cmds) {
    CLI::App* sub = app.add_subcommand(c.name, c.description);
    runners[sub] = c.setup(sub);
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version are "errors" of CLI11 that exit 0; every other parse error is usage.
    const int rc = app.exit(e);
    return exit_status(rc == 0 ? ExitCode::kOk : ExitCode::kUsage);
  }
  for (auto& [sub, run] : runners)
    if (sub->parsed()) return run_subcommand(sub->get_name(), run);
  return exit_status(ExitCode::kUsage);
}
