#include "engine/signals.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>

namespace recap::engine {

namespace {
std::atomic<int> g_signal{0};
std::atomic<int> g_count{0};

void on_signal(int sig) {
  int n = g_count.fetch_add(1) + 1;
  if (n == 1) {
    g_signal.store(sig);
    static const char msg[] =
        "\nrecap-engine: stop requested; finishing in-flight samples (signal again to exit now)\n";
    ssize_t w = ::write(2, msg, sizeof msg - 1);
    (void)w;
    return;
  }
  static const char msg2[] = "\nrecap-engine: second signal, exiting now (exit 75)\n";
  ssize_t w = ::write(2, msg2, sizeof msg2 - 1);
  (void)w;
  ::_exit(75);
}
}  // namespace

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  // A closed pipe (e.g. `| head`) must not kill a run that is writing shards.
  signal(SIGPIPE, SIG_IGN);
}

bool stop_requested() {
  return g_count.load() > 0;
}
int stop_signal() {
  return g_signal.load();
}
void request_stop() {
  if (g_count.fetch_add(1) == 0) g_signal.store(SIGTERM);
}
void reset_stop_state() {
  g_count.store(0);
  g_signal.store(0);
}

}  // namespace recap::engine
