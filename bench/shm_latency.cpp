// One-way latency of the plh shared-memory DataBlock through the library API
// (plh::shm::Writer / plh::shm::Reader), measured as a ping-pong over two segments:
//
//   process A: Writer on NAME.ab, Reader on NAME.ba
//   process B: Reader on NAME.ab, Writer on NAME.ba
//
// A takes a CLOCK_MONOTONIC stamp, begin_publish()es a slot, writes the stamp into the
// first 8 payload bytes and end_publish()es it with the same stamp as ts_ns. B acquire()s
// it, takes its own stamp (one-way A->B = B's stamp - ts_ns), release()s it and answers
// the same way on NAME.ba; A measures the round trip. Reported:
//   oneway_*  - per-message one-way latency A->B from the stamps, i.e. begin_publish +
//               end_publish + wake-up + acquire
//   nivcsw_a/b - involuntary context switches of A and B (preemption by other load)
//   rtthalf_* - round trip / 2 per iteration (what iceperf averages)
// The payload is not filled (zero copy, as in iceperf) unless --fill is given, in which
// case the sender memsets the whole payload before committing it.
//
// --mode busy:     Reader/Writer WaitOptions::busy_poll = true
// --mode blocking: busy_poll = false, WaitOptions::spin = --spin-ns (library default
//                  20 us; 0 = sleep on the futex at once)
// --gap-us N: A sleeps N microseconds after each round trip before the next send, so
//             that a blocking reader has given up spinning and sleeps on the futex
//             (the idle-reader case); without it a ping-pong answers within the spin.
#include "shm_bench_common.hpp"

#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <cstring>
#include <exception>

#include "plh/shm/data_block.hpp"

namespace {

using plh::bench::now_ns;
namespace shm = plh::shm;

struct Config {
  std::string name;
  std::uint32_t size = 64;
  std::uint32_t slots = 8;
  std::string mode = "busy";
  std::int64_t spin_ns = -1;  // -1: library default
  std::string policy = "sequential";
  std::uint32_t iterations = 100000;
  std::uint32_t warmup = 2000;
  bool fill = false;
  std::uint32_t gap_us = 0;
  int cpu_a = 0;
  int cpu_b = 1;
};

// Nothing may hang: a run that is not done by then fails (TimeoutError).
const shm::Clock::time_point deadline = shm::Clock::now() + std::chrono::seconds(240);

shm::WaitOptions wait_options(const Config& c) {
  shm::WaitOptions w;
  w.busy_poll = c.mode == "busy";
  // A benchmark on a loaded machine must not mistake a starved heartbeat for a dead writer.
  w.heartbeat_timeout = std::chrono::seconds(60);
  if (c.spin_ns >= 0) w.spin = std::chrono::nanoseconds(c.spin_ns);
  return w;
}

void send(shm::Writer& w, const Config& c) {
  const std::int64_t t0 = now_ns();
  auto buf = w.begin_publish(deadline);
  if (buf.empty()) throw std::runtime_error("begin_publish stopped");
  if (c.fill) std::memset(buf.data(), 0x5a, c.size);
  std::memcpy(buf.data(), &t0, sizeof t0);
  w.end_publish(c.size, t0);
}

// Returns one-way latency (receive stamp - sender's ts_ns) of the next slot.
std::int64_t receive(shm::Reader& r, std::uint32_t size) {
  auto got = r.acquire(deadline);
  const std::int64_t t1 = now_ns();
  if (got.status != shm::AcquireStatus::slot) throw std::runtime_error("acquire: stream ended early");
  std::int64_t stamp = 0;
  if (got.view.meta.size != size) throw std::runtime_error("unexpected slot size");
  std::memcpy(&stamp, got.view.data, sizeof stamp);
  if (stamp != got.view.meta.ts_ns) throw std::runtime_error("payload stamp differs from ts_ns");
  r.release();
  return t1 - got.view.meta.ts_ns;
}

}  // namespace

int main(int argc, char** argv) {
  Config c;
  c.name = "plhbench-lat-" + std::to_string(getpid());
  CLI::App app{"plh shm one-way latency (ping-pong over two segments, library API)"};
  app.add_option("--name", c.name, "segment name prefix (NAME.ab and NAME.ba are created and removed)");
  app.add_option("--size", c.size, "payload bytes per message (>= 8)")->check(CLI::Range(8u, 1u << 30));
  app.add_option("--slots", c.slots, "ring length of each segment");
  app.add_option("--mode", c.mode, "busy (busy-poll) or blocking")->check(CLI::IsMember({"busy", "blocking"}));
  app.add_option("--spin-ns", c.spin_ns, "blocking mode: spin this long before sleeping (default: library's)");
  app.add_option("--policy", c.policy, "latest, sequential or sync");
  app.add_option("-n,--iterations", c.iterations, "measured round trips");
  app.add_option("--warmup", c.warmup, "round trips before measuring");
  app.add_flag("--fill", c.fill, "memset the whole payload before each commit");
  app.add_option("--gap-us", c.gap_us, "pause between round trips (lets a blocking reader fall asleep)")
      ->check(CLI::Range(0u, 999999u));
  app.add_option("--cpu-a", c.cpu_a, "CPU for process A, -1 = no pinning");
  app.add_option("--cpu-b", c.cpu_b, "CPU for process B, -1 = no pinning");
  CLI11_PARSE(app, argc, argv);

  const std::uint32_t total = c.warmup + c.iterations;
  const std::string ab = c.name + ".ab";
  const std::string ba = c.name + ".ba";
  try {
    shm::CreateOptions co;
    co.geometry = {c.slots, c.size, shm::parse_policy(c.policy), shm::Checksum::none};
    for (const auto& n : {ab, ba}) {
      shm::remove_segment(n);
      shm::create_segment(n, co);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "shm_latency: error: %s\n", e.what());
    return 1;
  }

  // B's one-way samples travel back to A through a shared anonymous mapping.
  const std::size_t bytes = sizeof(std::int64_t) * total;
  void* mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) {
    std::perror("mmap");
    return 1;
  }
  auto* b_oneway = static_cast<std::int64_t*>(mem);

  // Fork before any Writer exists (it starts a heartbeat thread).
  const pid_t child = fork();
  if (child < 0) {
    std::perror("fork");
    return 1;
  }
  if (child == 0) {  // B: echo
    try {
      plh::bench::pin_to_cpu(c.cpu_b);
      shm::Reader r(ab, {shm::Reader::From::oldest, wait_options(c)});
      shm::Writer::Options wo;
      wo.wait = wait_options(c);
      shm::Writer w(ba, wo);
      for (std::uint32_t i = 0; i < total; ++i) {
        b_oneway[i] = receive(r, c.size);
        send(w, c);
      }
    } catch (const std::exception& e) {
      std::fprintf(stderr, "shm_latency (B): error: %s\n", e.what());
      _exit(1);
    }
    _exit(0);
  }

  std::vector<std::int64_t> oneway, rtt_half;  // oneway: A->B, filled from B's samples
  std::int64_t elapsed = 0;
  int rc = 0;
  try {
    plh::bench::pin_to_cpu(c.cpu_a);
    shm::Writer::Options wo;
    wo.wait = wait_options(c);
    shm::Writer w(ab, wo);
    shm::Reader r(ba, {shm::Reader::From::oldest, wait_options(c)});
    if (!w.wait_for_readers(1, shm::Clock::now() + std::chrono::seconds(10)))
      throw std::runtime_error("no reader");
    rtt_half.reserve(c.iterations);
    const std::int64_t start = now_ns();
    for (std::uint32_t i = 0; i < total; ++i) {
      const std::int64_t t0 = now_ns();
      send(w, c);
      receive(r, c.size);
      const std::int64_t t1 = now_ns();
      if (i >= c.warmup) rtt_half.push_back((t1 - t0) / 2);
      if (c.gap_us > 0) {
        const timespec gap{0, static_cast<long>(c.gap_us) * 1000};
        clock_nanosleep(CLOCK_MONOTONIC, 0, &gap, nullptr);
      }
    }
    elapsed = now_ns() - start;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "shm_latency (A): error: %s\n", e.what());
    rc = 1;
  }
  int status = 0;
  if (rc != 0) kill(child, SIGTERM);
  rusage ru_b{}, ru_a{};
  wait4(child, &status, 0, &ru_b);
  getrusage(RUSAGE_SELF, &ru_a);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) rc = 1;
  shm::remove_segment(ab);
  shm::remove_segment(ba);
  if (rc != 0) return rc;

  oneway.assign(b_oneway + c.warmup, b_oneway + total);
  munmap(mem, bytes);
  auto ow = plh::bench::percentiles(oneway);
  auto rh = plh::bench::percentiles(rtt_half);
  std::printf(
      "RESULT bench=shm_latency method=pingpong mode=%s spin_ns=%lld policy=%s size=%u slots=%u fill=%d "
      "gap_us=%u iterations=%u cpu_a=%d cpu_b=%d nivcsw_a=%ld nivcsw_b=%ld %s %s roundtrips_per_s=%.0f\n",
      c.mode.c_str(), static_cast<long long>(c.spin_ns), c.policy.c_str(), c.size, c.slots, c.fill ? 1 : 0,
      c.gap_us, c.iterations, c.cpu_a, c.cpu_b, ru_a.ru_nivcsw, ru_b.ru_nivcsw, plh::bench::percentile_fields("oneway_", ow).c_str(),
      plh::bench::percentile_fields("rtthalf_", rh).c_str(),
      static_cast<double>(total) * 1e9 / static_cast<double>(elapsed));
  return 0;
}
