// Helpers for the caption CLI tests: run the recap-engine binary (blocking or in the
// background), read the shards it writes (tars through io::TarReader, sidecars as JSON lines).
#pragma once
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "io/fileutil.h"
#include "io/tar.h"

extern char** environ;

namespace recap::testing {

struct RunResult {
  int rc = -1;
  std::string out;  // stdout + stderr
};

inline std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) {
    if (c == '\'')
      q += "'\\''";
    else
      q += c;
  }
  return q + "'";
}

inline std::string join_args(const std::vector<std::string>& args) {
  std::string cmd;
  for (auto& a : args) cmd += shell_quote(a) + " ";
  return cmd;
}

inline RunResult run_cmd(const std::vector<std::string>& args) {
  RunResult r;
  std::string cmd = join_args(args) + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  int st = pclose(p);
  r.rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  return r;
}

// Starts the command in the background, its output going to log_path.
inline pid_t spawn_cmd(const std::vector<std::string>& args, const std::string& log_path) {
  std::vector<std::string> sh{"/bin/sh", "-c",
                              "exec " + join_args(args) + " > " + shell_quote(log_path) + " 2>&1"};
  std::vector<char*> argv;
  for (auto& a : sh) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = -1;
  if (posix_spawn(&pid, "/bin/sh", nullptr, nullptr, argv.data(), environ) != 0) return -1;
  return pid;
}

inline int wait_exit(pid_t pid) {
  int st = 0;
  waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

// Polls `pred` every 20 ms for up to `limit_s` seconds (a guard against hangs, not a timing
// assertion). Returns whether it became true.
template <class Pred>
bool wait_until(Pred pred, double limit_s = 120) {
  auto t0 = std::chrono::steady_clock::now();
  while (!pred()) {
    if (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() > limit_s) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

inline std::string make_temp_dir(const char* tag) {
  std::string t = std::string("/tmp/recap_") + tag + "_XXXXXX";
  return std::string(::mkdtemp(t.data()));
}

inline std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::ifstream f(path);
  std::string line;
  while (std::getline(f, line))
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  return out;
}

inline int count_lines(const std::string& path) {
  std::ifstream f(path);
  std::string line;
  int n = 0;
  while (std::getline(f, line)) ++n;
  return n;
}

// name -> data of every member.
inline std::map<std::string, std::string> read_tar(const std::string& path,
                                                   std::vector<std::string>* order = nullptr) {
  std::map<std::string, std::string> m;
  io::TarReader r(path);
  io::TarMember mem;
  while (r.next(&mem)) {
    if (order) order->push_back(mem.name);
    m[mem.name] = mem.data;
  }
  return m;
}

}  // namespace recap::testing
