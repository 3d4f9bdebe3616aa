// The ceiling for plh-pub/plh-sub: a bare libzmq PUSH/PULL pair, one ZeroMQ message per
// line, no header, no broker. Used by run_pubsub_bench.sh.
//
//   zmq_raw_pair pull ENDPOINT OUTFILE|-   bind ENDPOINT (then "zmq_raw_pair: ready" on
//                                          stderr), write each message as a line
//   zmq_raw_pair push ENDPOINT INFILE|-    connect, send each line of the input
//
// End of stream is one message holding "\0END" (the generated bench input never
// contains NUL bytes). The receiver writes with a FrameWriter and flushes whenever no
// message is waiting, so it also works as a low-latency stdout relay.
#include <fcntl.h>
#include <unistd.h>
#include <zmq.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>

#include "plh/core/framing.hpp"

namespace {

constexpr std::string_view kEnd("\0END", 4);

int die(const char* what) {
  std::fprintf(stderr, "zmq_raw_pair: %s: %s\n", what, zmq_strerror(zmq_errno()));
  return 1;
}

int pull(void* ctx, const char* endpoint, const char* out_path) {
  void* s = zmq_socket(ctx, ZMQ_PULL);
  int hwm = 100000;
  zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm);
  if (zmq_bind(s, endpoint) != 0) return die("bind");
  std::fprintf(stderr, "zmq_raw_pair: ready\n");
  const int fd = std::strcmp(out_path, "-") == 0 ? 1 : ::open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) {
    std::perror("zmq_raw_pair: open");
    return 1;
  }
  std::size_t n = 0;
  {
    plh::FrameWriter out(fd, plh::Format::line, false);
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    for (;;) {
      int r = zmq_msg_recv(&msg, s, ZMQ_DONTWAIT);
      if (r < 0 && zmq_errno() == EAGAIN) {
        out.flush();
        r = zmq_msg_recv(&msg, s, 0);
      }
      if (r < 0) {
        if (zmq_errno() == EINTR) continue;
        return die("recv");
      }
      const std::string_view data(static_cast<const char*>(zmq_msg_data(&msg)), zmq_msg_size(&msg));
      if (data == kEnd) break;
      out.write(data);
      ++n;
    }
    zmq_msg_close(&msg);
  }
  if (fd != 1) ::close(fd);
  zmq_close(s);
  std::fprintf(stderr, "zmq_raw_pair: received %zu messages\n", n);
  return 0;
}

int push(void* ctx, const char* endpoint, const char* in_path) {
  void* s = zmq_socket(ctx, ZMQ_PUSH);
  int hwm = 100000;
  zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm);
  if (zmq_connect(s, endpoint) != 0) return die("connect");
  const int fd = std::strcmp(in_path, "-") == 0 ? 0 : ::open(in_path, O_RDONLY);
  if (fd < 0) {
    std::perror("zmq_raw_pair: open");
    return 1;
  }
  plh::FrameReader in(fd, plh::Format::line);
  std::size_t n = 0;
  while (auto line = in.next()) {
    while (zmq_send(s, line->data(), line->size(), 0) < 0) {
      if (zmq_errno() != EINTR) return die("send");
    }
    ++n;
  }
  if (zmq_send(s, kEnd.data(), kEnd.size(), 0) < 0) return die("send");
  if (fd != 0) ::close(fd);
  zmq_close(s);  // linger is infinite: zmq_ctx_term waits until everything is delivered
  std::fprintf(stderr, "zmq_raw_pair: sent %zu messages\n", n);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4 || (std::strcmp(argv[1], "pull") != 0 && std::strcmp(argv[1], "push") != 0)) {
    std::fprintf(stderr, "usage: zmq_raw_pair pull|push ENDPOINT FILE|-\n");
    return 2;
  }
  void* ctx = zmq_ctx_new();
  const int rc = std::strcmp(argv[1], "pull") == 0 ? pull(ctx, argv[2], argv[3]) : push(ctx, argv[2], argv[3]);
  zmq_ctx_term(ctx);
  return rc;
}
