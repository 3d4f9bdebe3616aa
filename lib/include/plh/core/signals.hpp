#pragma once
// Orderly shutdown on SIGINT/SIGTERM. The handler records the signal and makes
// stop_fd() readable so poll loops (zmq_poll on raw fds, poll(2)) wake at once; a
// second SIGINT exits immediately with 130. SIGPIPE is ignored so a closed stdout
// shows up as EPIPE (and ends readers quietly).
#include <csignal>

namespace plh {

void install_stop_handlers();
// 0 while running, else the signal number that asked us to stop.
int stop_signal() noexcept;
bool stop_requested() noexcept;
// A file descriptor that becomes readable when a stop was requested (-1 if handlers
// are not installed).
int stop_fd() noexcept;
// 130 for SIGINT, 143 for SIGTERM, 0 otherwise.
int exit_code_for_stop() noexcept;
// For tests and in-process use: request a stop as if a signal arrived.
void request_stop(int sig) noexcept;

}  // namespace plh
