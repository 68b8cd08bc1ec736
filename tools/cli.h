// Subcommand registry of the recap-engine CLI. Each cmd_*.cpp defines one subcommand and
// registers it with a static CommandRegistrar; main.cpp only parses and dispatches.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <vector>

namespace recap::cli {

// Exit codes (documented in README): 0 done, 1 runtime failure, 2 usage/config error,
// 75 interrupted (EX_TEMPFAIL; a rerun resumes).
enum ExitCode { kExitOk = 0, kExitFailure = 1, kExitUsage = 2, kExitInterrupted = 75 };

struct Command {
  std::string name;
  // Adds options to `sub` and returns the function to run once parsing succeeded.
  std::function<std::function<int()>(CLI::App* sub)> setup;
  std::string description;
};

std::vector<Command>& registry();

struct CommandRegistrar {
  CommandRegistrar(std::string name, std::string description,
                   std::function<std::function<int()>(CLI::App*)> setup) {
    registry().push_back(Command{std::move(name), std::move(setup), std::move(description)});
  }
};

}  // namespace recap::cli
