// The reference for plh-req/plh-rep: bare libzmq request/reply, no header, no broker, no
// child process. Used by run_reqrep_bench.sh.
//
//   reqrep_raw rep ENDPOINT                  bind a REP, echo every request (until killed)
//   reqrep_raw req ENDPOINT N SIZE [all]     connect a REQ; N round trips of SIZE bytes
//                                            (after 200 unmeasured); prints
//                                            "p50_us P50 p99_us P99 mean_us MEAN", or with
//                                            "all" each round trip's microseconds, a line each
//   reqrep_raw router ENDPOINT               bind a ROUTER, echo every request
//   reqrep_raw dealer ENDPOINT N WINDOW      connect a DEALER; N requests with WINDOW in
//                                            flight; prints "req_per_s R seconds S"
//
// The servers print "reqrep_raw: ready" on stderr once bound.
#include <zmq.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

using clock_type = std::chrono::steady_clock;

int die(const char* what) {
  std::fprintf(stderr, "reqrep_raw: %s: %s\n", what, zmq_strerror(zmq_errno()));
  return 1;
}

int serve(void* ctx, int type, const char* endpoint) {
  void* s = zmq_socket(ctx, type);
  int hwm = 100000;
  zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm);
  zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm);
  if (zmq_bind(s, endpoint) != 0) return die("bind");
  std::fprintf(stderr, "reqrep_raw: ready\n");
  std::vector<zmq_msg_t> parts;
  for (;;) {
    parts.clear();
    int more = 1;
    while (more) {
      parts.emplace_back();
      zmq_msg_init(&parts.back());
      if (zmq_msg_recv(&parts.back(), s, 0) < 0) {
        if (zmq_errno() == EINTR) continue;
        return die("recv");
      }
      more = zmq_msg_more(&parts.back());
    }
    for (std::size_t i = 0; i < parts.size(); ++i)
      if (zmq_msg_send(&parts[i], s, i + 1 < parts.size() ? ZMQ_SNDMORE : 0) < 0) return die("send");
  }
}

int req(void* ctx, const char* endpoint, long n, std::size_t size, bool all) {
  void* s = zmq_socket(ctx, ZMQ_REQ);
  if (zmq_connect(s, endpoint) != 0) return die("connect");
  std::string body(size, 'x');
  std::vector<char> buf(size + 64);
  std::vector<double> us;
  us.reserve(static_cast<std::size_t>(n));
  for (long i = -200; i < n; ++i) {
    const auto t0 = clock_type::now();
    if (zmq_send(s, body.data(), body.size(), 0) < 0) return die("send");
    if (zmq_recv(s, buf.data(), buf.size(), 0) < 0) return die("recv");
    if (i >= 0) us.push_back(std::chrono::duration<double, std::micro>(clock_type::now() - t0).count());
  }
  if (all) {
    for (double v : us) std::printf("%.1f\n", v);
    zmq_close(s);
    return 0;
  }
  std::sort(us.begin(), us.end());
  double sum = 0;
  for (double v : us) sum += v;
  auto q = [&](double p) { return us[static_cast<std::size_t>(p * static_cast<double>(us.size() - 1))]; };
  std::printf("p50_us %.1f p99_us %.1f mean_us %.1f\n", q(0.5), q(0.99), sum / static_cast<double>(us.size()));
  zmq_close(s);
  return 0;
}

int dealer(void* ctx, const char* endpoint, long n, long window) {
  void* s = zmq_socket(ctx, ZMQ_DEALER);
  int hwm = 100000;
  zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm);
  zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm);
  if (zmq_connect(s, endpoint) != 0) return die("connect");
  char buf[256];
  long sent = 0, got = 0;
  const auto t0 = clock_type::now();
  while (got < n) {
    while (sent < n && sent - got < window) {
      const std::string body = std::to_string(sent + 1);
      zmq_send(s, "", 0, ZMQ_SNDMORE);
      if (zmq_send(s, body.data(), body.size(), 0) < 0) return die("send");
      ++sent;
    }
    if (zmq_recv(s, buf, sizeof buf, 0) < 0) return die("recv");  // delimiter
    if (zmq_recv(s, buf, sizeof buf, 0) < 0) return die("recv");
    ++got;
  }
  const double secs = std::chrono::duration<double>(clock_type::now() - t0).count();
  std::printf("req_per_s %.0f seconds %.3f\n", static_cast<double>(n) / secs, secs);
  zmq_close(s);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: reqrep_raw rep|router ENDPOINT | req ENDPOINT N SIZE | dealer ENDPOINT N WINDOW\n");
    return 2;
  }
  void* ctx = zmq_ctx_new();
  const std::string mode = argv[1];
  int rc = 2;
  if (mode == "rep") rc = serve(ctx, ZMQ_REP, argv[2]);
  else if (mode == "router") rc = serve(ctx, ZMQ_ROUTER, argv[2]);
  else if (mode == "req" && argc >= 5)
    rc = req(ctx, argv[2], std::atol(argv[3]), std::strtoul(argv[4], nullptr, 10), argc >= 6 && std::string(argv[5]) == "all");
  else if (mode == "dealer" && argc >= 5) rc = dealer(ctx, argv[2], std::atol(argv[3]), std::atol(argv[4]));
  else std::fprintf(stderr, "reqrep_raw: unknown mode or missing arguments\n");
  zmq_ctx_term(ctx);
  return rc;
}
