// One-way latency of a stdin → stdout relay such as `plh-pub ch` … `plh-sub ch`, both on
// this machine. Writes lines carrying a CLOCK_MONOTONIC timestamp into the publisher's
// stdin at a fixed rate and reads the subscriber's stdout, so the latency includes
// both tools' stdio handling, as a user's pipeline sees it.
//
//   pubsub_latency --sub 'CMD' --pub 'CMD' [--rate 1000] [--seconds 5] [--size 64]
//
// The commands run under /bin/sh -c. The subscriber starts first; warm-up lines are sent
// every 10 ms until one comes out (so discovery and connection setup are not measured),
// then rate × seconds measured lines follow. At the end the publisher's stdin is closed
// and the subscriber is expected to end on its own (killed after 10 s otherwise).
// Output: one summary line on stdout (sent, received, p50/p90/p99/p99.9/max in µs).
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "plh/core/framing.hpp"

namespace {

std::int64_t mono_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

// Starts /bin/sh -c cmd. If in_fd/out_fd are given, they become the child's stdin/stdout.
pid_t spawn(const std::string& cmd, int in_fd, int out_fd, const std::vector<int>& close_in_child) {
  const pid_t pid = fork();
  if (pid == 0) {
    if (in_fd >= 0) dup2(in_fd, 0);
    if (out_fd >= 0) dup2(out_fd, 1);
    for (int fd : close_in_child) close(fd);
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  return pid;
}

bool wait_exit(pid_t pid, std::chrono::seconds timeout, int& status) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (waitpid(pid, &status, WNOHANG) == pid) return true;
    usleep(10000);
  }
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
  return false;
}

bool write_all(int fd, const std::string& s) {
  std::size_t off = 0;
  while (off < s.size()) {
    const ssize_t w = write(fd, s.data() + off, s.size() - off);
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    off += static_cast<std::size_t>(w);
  }
  return true;
}

std::string make_line(char kind, std::uint64_t seq, std::size_t size) {
  char head[64];
  const int n = std::snprintf(head, sizeof head, "%c %09llu %019lld ", kind, static_cast<unsigned long long>(seq),
                              static_cast<long long>(mono_ns()));
  std::string line(head, static_cast<std::size_t>(n));
  if (line.size() < size) line.resize(size, 'x');
  line += '\n';
  return line;
}

}  // namespace

int main(int argc, char** argv) {
  std::string sub_cmd, pub_cmd;
  double rate = 1000, seconds = 5;
  std::size_t size = 64;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    if (k == "--sub") sub_cmd = argv[i + 1];
    else if (k == "--pub") pub_cmd = argv[i + 1];
    else if (k == "--rate") rate = std::atof(argv[i + 1]);
    else if (k == "--seconds") seconds = std::atof(argv[i + 1]);
    else if (k == "--size") size = std::strtoull(argv[i + 1], nullptr, 10);
    else {
      std::fprintf(stderr, "pubsub_latency: unknown option %s\n", k.c_str());
      return 2;
    }
  }
  if (sub_cmd.empty() || pub_cmd.empty() || rate <= 0 || seconds <= 0) {
    std::fprintf(stderr, "usage: pubsub_latency --sub CMD --pub CMD [--rate HZ] [--seconds S] [--size BYTES]\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);

  int sub_out[2], pub_in[2];
  if (pipe2(sub_out, O_CLOEXEC) != 0 || pipe2(pub_in, O_CLOEXEC) != 0) return 1;
  const pid_t sub = spawn(sub_cmd, -1, sub_out[1], {});
  close(sub_out[1]);
  const pid_t pub = spawn(pub_cmd, pub_in[0], -1, {});
  close(pub_in[0]);

  const auto total = static_cast<std::uint64_t>(rate * seconds);
  std::vector<std::int64_t> lat;
  lat.reserve(total);
  std::atomic<bool> warm{false};
  std::atomic<std::uint64_t> received{0};
  std::thread reader([&] {
    plh::FrameReader in(sub_out[0], plh::Format::line);
    while (auto line = in.next()) {
      const std::int64_t now = mono_ns();
      if (line->size() < 31) continue;
      const std::int64_t sent = std::strtoll(std::string(line->substr(12, 19)).c_str(), nullptr, 10);
      if ((*line)[0] == 'W') {
        warm = true;
      } else if ((*line)[0] == 'M') {
        lat.push_back(now - sent);
        received.fetch_add(1, std::memory_order_relaxed);
      }
    }
  });

  int rc = 0;
  const auto warm_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  std::uint64_t w = 0;
  while (!warm && std::chrono::steady_clock::now() < warm_deadline) {
    if (!write_all(pub_in[1], make_line('W', ++w, size))) break;
    usleep(10000);
  }
  if (!warm) {
    std::fprintf(stderr, "pubsub_latency: no warm-up line came through within 15 s\n");
    rc = 1;
  } else {
    const auto period = static_cast<std::int64_t>(1e9 / rate);
    std::int64_t next = mono_ns();
    for (std::uint64_t i = 1; i <= total; ++i) {
      next += period;
      timespec ts{static_cast<time_t>(next / 1'000'000'000), static_cast<long>(next % 1'000'000'000)};
      while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
      }
      if (!write_all(pub_in[1], make_line('M', i, size))) {
        std::fprintf(stderr, "pubsub_latency: the publisher's stdin closed early\n");
        rc = 1;
        break;
      }
    }
  }
  close(pub_in[1]);
  int st = 0;
  if (!wait_exit(pub, std::chrono::seconds(10), st)) std::fprintf(stderr, "pubsub_latency: publisher killed\n");
  if (!wait_exit(sub, std::chrono::seconds(10), st)) std::fprintf(stderr, "pubsub_latency: subscriber killed\n");
  reader.join();
  close(sub_out[0]);

  if (lat.empty()) {
    std::fprintf(stderr, "pubsub_latency: no measured line came through\n");
    return 1;
  }
  std::sort(lat.begin(), lat.end());
  auto pct = [&](double p) {
    const auto idx = std::min(lat.size() - 1, static_cast<std::size_t>(p / 100.0 * static_cast<double>(lat.size())));
    return static_cast<double>(lat[idx]) / 1000.0;
  };
  std::printf("sent %llu received %zu size %zu rate %.0f/s  latency us: p50 %.1f p90 %.1f p99 %.1f p99.9 %.1f max %.1f\n",
              static_cast<unsigned long long>(total), lat.size(), size, rate, pct(50), pct(90), pct(99), pct(99.9),
              static_cast<double>(lat.back()) / 1000.0);
  if (lat.size() != total) rc = 1;
  return rc;
}
