#include "engine/signals.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>

namespace recap::engine {

namespace {
std::atomic<int> g_signal{0};
std::atomic<int> g_count{0};
// Setup phase: a first signal exits at once unless inside a critical section.
std::atomic<bool> g_exit_at_once{false};
std::atomic<int> g_critical{0};

void say(const char* msg, size_t n) {
  ssize_t w = ::write(2, msg, n);
  (void)w;
}

void exit_during_setup() {
  static const char msg[] =
      "\nrecap-engine: stop requested during setup; nothing was started, exiting (exit 75)\n";
  say(msg, sizeof msg - 1);
  ::_exit(75);
}

void on_signal(int sig) {
  int n = g_count.fetch_add(1) + 1;
  if (n == 1) {
    g_signal.store(sig);
    if (g_exit_at_once.load() && g_critical.load() == 0) exit_during_setup();
    if (g_exit_at_once.load()) return;  // acted on at end_critical()
    static const char msg[] =
        "\nrecap-engine: stop requested; finishing in-flight samples (signal again to exit now)\n";
    say(msg, sizeof msg - 1);
    return;
  }
  static const char msg2[] = "\nrecap-engine: second signal, exiting now (exit 75)\n";
  say(msg2, sizeof msg2 - 1);
  ::_exit(75);
}
}  // namespace

void install_stop_handlers() {
  g_exit_at_once.store(true);
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  // A closed pipe (e.g. `| head`) must not kill a run that is writing shards.
  signal(SIGPIPE, SIG_IGN);
}

void enter_checkpoint_phase() {
  g_exit_at_once.store(false);
}

void begin_critical() {
  g_critical.fetch_add(1);
}

void end_critical() {
  if (g_critical.fetch_sub(1) == 1 && g_exit_at_once.load() && g_count.load() > 0) exit_during_setup();
}

bool stop_requested() {
  return g_count.load() > 0;
}
int stop_signal() {
  return g_signal.load();
}

}  // namespace recap::engine
