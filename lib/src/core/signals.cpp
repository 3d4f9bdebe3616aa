#include "plh/core/signals.hpp"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>

namespace plh {
namespace {
std::atomic<int> g_signal{0};
std::atomic<int> g_fd{-1};

void on_signal(int sig) {
  const int previous = g_signal.exchange(sig);
  if (previous == SIGINT && sig == SIGINT) _exit(130);
  const int fd = g_fd.load();
  if (fd >= 0) {
    const std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(fd, &one, sizeof one);
  }
}
}  // namespace

void install_stop_handlers() {
  if (g_fd.load() < 0) g_fd.store(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: blocking reads return EINTR so loops notice
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  struct sigaction ign {};
  ign.sa_handler = SIG_IGN;
  sigaction(SIGPIPE, &ign, nullptr);
}

int stop_signal() noexcept { return g_signal.load(std::memory_order_relaxed); }
bool stop_requested() noexcept { return stop_signal() != 0; }
int stop_fd() noexcept { return g_fd.load(); }

int exit_code_for_stop() noexcept {
  switch (stop_signal()) {
    case SIGINT: return 130;
    case SIGTERM: return 143;
    default: return 0;
  }
}

void request_stop(int sig) noexcept { on_signal(sig); }

}  // namespace plh
