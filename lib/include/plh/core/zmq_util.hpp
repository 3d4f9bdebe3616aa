#pragma once
// Small pieces shared by the parts of the library that run ZeroMQ poll loops
// (broker, broker client, data plane, pub/sub).
#include <string>

namespace plh {

// A non-blocking eventfd that wakes a poll loop from another thread or a signal handler:
// put fd() in the zmq_pollitem_t set, signal() from elsewhere, drain() once woken.
class EventFd {
 public:
  EventFd();  // Error(failure) when the kernel refuses one
  ~EventFd();
  EventFd(const EventFd&) = delete;
  EventFd& operator=(const EventFd&) = delete;
  int fd() const noexcept { return fd_; }
  void signal() const noexcept;  // async-signal-safe
  void drain() const noexcept;   // makes it not readable again

 private:
  int fd_ = -1;
};

// Throws Error(failure) "WHAT: <zmq_strerror(zmq_errno())>".
[[noreturn]] void throw_zmq_error(const std::string& what);

// zmq_ctx_new(), or Error(failure) "cannot create a ZeroMQ context: ...". blocky = false
// (ZMQ_BLOCKY off): new sockets default to ZMQ_LINGER 0, so terminating the context
// never waits for unsent messages — for control sockets whose callers set no linger.
void* new_zmq_context(bool blocky = true);

}  // namespace plh
