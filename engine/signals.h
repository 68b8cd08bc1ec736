// SIGTERM / SIGINT handling for long runs, in two phases:
//   - setup (install_stop_handlers() starts here): nothing has been written that a stop could
//     leave inconsistent (planning, hashing the weights, loading them), so the first signal
//     exits the process at once with exit code 75 (EX_TEMPFAIL: "requeue"), instead of a
//     scheduler's SIGKILL after its grace period. A section that must not be cut (writing the
//     run plan) is bracketed by begin_critical()/end_critical(): a signal inside it is
//     acted on at end_critical().
//   - running (enter_checkpoint_phase()): the first signal asks the run to stop admitting work
//     and checkpoint (the caller polls stop_requested()); a second one exits at once with 75.
// Everything already appended to a shard's partial log survives either way.
#pragma once

namespace recap::engine {

void install_stop_handlers();
// From here on a first signal checkpoints instead of exiting (call when the run starts work).
void enter_checkpoint_phase();
// A section of setup that a signal must not interrupt (nestable).
void begin_critical();
void end_critical();
bool stop_requested();
int stop_signal();  // the signal number received first, 0 if none

}  // namespace recap::engine
