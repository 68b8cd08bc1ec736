// SIGTERM / SIGINT handling for long runs: the first signal asks the run to stop admitting
// work and checkpoint (the caller polls stop_requested()); a second one exits the process at
// once with exit code 75 (EX_TEMPFAIL), which schedulers treat as "retry/requeue".
// Everything already appended to a shard's partial log survives either way.
#pragma once

namespace recap::engine {

void install_stop_handlers();
bool stop_requested();
int stop_signal();    // the signal number received first, 0 if none
void request_stop();  // same as receiving a signal (tests, embedding)
void reset_stop_state();

}  // namespace recap::engine
