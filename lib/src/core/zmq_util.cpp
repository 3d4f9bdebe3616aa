#include "plh/core/zmq_util.hpp"

#include <sys/eventfd.h>
#include <unistd.h>
#include <zmq.h>

#include <cerrno>
#include <cstdint>

#include "plh/core/error.hpp"
#include "plh/core/text.hpp"

namespace plh {

EventFd::EventFd() : fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
  if (fd_ < 0) throw Error(ExitCode::failure, "eventfd: " + errno_text(errno));
}

EventFd::~EventFd() { ::close(fd_); }

void EventFd::signal() const noexcept {
  const std::uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(fd_, &one, sizeof one);
}

void EventFd::drain() const noexcept {
  std::uint64_t v = 0;
  [[maybe_unused]] auto n = ::read(fd_, &v, sizeof v);
}

void throw_zmq_error(const std::string& what) {
  throw Error(ExitCode::failure, what + ": " + zmq_strerror(zmq_errno()));
}

void* new_zmq_context(bool blocky) {
  void* ctx = zmq_ctx_new();
  if (!ctx) throw_zmq_error("cannot create a ZeroMQ context");
  if (!blocky) zmq_ctx_set(ctx, ZMQ_BLOCKY, 0);
  return ctx;
}

}  // namespace plh
