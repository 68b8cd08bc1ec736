// recap-engine: recaption image datasets with LLaVA-1.5-LLaMA3 on CPUs.
#include <cstdio>
#include <exception>
#include <algorithm>
#include <map>

#include "tools/cli.h"

namespace recap::cli {
std::vector<Command>& registry() {
  static std::vector<Command> commands;
  return commands;
}
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
    int rc = app.exit(e);
    return rc == 0 ? kExitOk : kExitUsage;
  }
  for (auto& [sub, run] : runners) {
    if (sub->parsed()) {
      try {
        return run();
      } catch (const std::exception& e) {
        std::fprintf(stderr, "recap-engine %s: error: %s\n", sub->get_name().c_str(), e.what());
        return kExitFailure;
      }
    }
  }
  return kExitUsage;
}
