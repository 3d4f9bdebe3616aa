// Baseline for the shared-memory ring: the cheapest possible hand-off between two
// processes over one shared mapping, with nothing else in the way.
//
// Two processes (fork) share a MAP_SHARED mapping. Process A stamps CLOCK_MONOTONIC,
// bumps the `ping` word and wakes B; B, woken, stamps its arrival time, bumps `pong`
// and wakes A. Reported per message:
//   oneway  - B's arrival stamp minus A's send stamp (A->B, CLOCK_MONOTONIC is one
//             clock for all CPUs on Linux/x86 with an invariant TSC)
//   rtt/2   - A's round trip divided by two (what iceperf reports, as an average)
//   nivcsw_a/b - involuntary context switches of A and B (preemption by other load)
// --mode futex: the waiter sleeps in FUTEX_WAIT, the sender always calls FUTEX_WAKE
//               (the floor for plh-shm's blocking mode).
// --mode spin:  the waiter spins on the word with `pause` (the floor for busy-poll).
#include "shm_bench_common.hpp"

#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cstdlib>
#include <new>

namespace {

using plh::bench::now_ns;

struct alignas(64) SharedPage {
  alignas(64) std::atomic<std::uint32_t> ping{0};
  alignas(64) std::atomic<std::uint32_t> pong{0};
  alignas(64) std::atomic<std::int64_t> ping_stamp{0};
};
static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t));
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);

long futex(std::atomic<std::uint32_t>* word, int op, std::uint32_t val) {
  // Not FUTEX_PRIVATE_FLAG: the word is shared between two processes.
  return syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), op, val, nullptr, nullptr, 0);
}

void post(std::atomic<std::uint32_t>& word, std::uint32_t value, bool use_futex) {
  word.store(value, std::memory_order_release);
  if (use_futex) futex(&word, FUTEX_WAKE, 1);
}

void await(std::atomic<std::uint32_t>& word, std::uint32_t value, bool use_futex) {
  for (;;) {
    std::uint32_t seen = word.load(std::memory_order_acquire);
    if (seen == value) return;
    if (use_futex)
      futex(&word, FUTEX_WAIT, seen);  // returns at once if the word already changed
    else
      plh::bench::cpu_relax();
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode = "futex";
  std::uint32_t iterations = 100000;
  std::uint32_t warmup = 2000;
  int cpu_a = 0;
  int cpu_b = 1;
  CLI::App app{"Two-process futex/spin ping-pong over a shared page (latency baseline)"};
  app.add_option("--mode", mode, "futex (blocking) or spin (busy-poll)")
      ->check(CLI::IsMember({"futex", "spin"}));
  app.add_option("-n,--iterations", iterations, "measured round trips");
  app.add_option("--warmup", warmup, "round trips before measuring");
  app.add_option("--cpu-a", cpu_a, "CPU for process A (sender), -1 = no pinning");
  app.add_option("--cpu-b", cpu_b, "CPU for process B (echo), -1 = no pinning");
  CLI11_PARSE(app, argc, argv);
  const bool use_futex = mode == "futex";
  const std::uint32_t total = warmup + iterations;

  // One mapping: the page with the words, then B's one-way samples (read by A at the end).
  const std::size_t bytes = sizeof(SharedPage) + sizeof(std::int64_t) * total;
  void* mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) {
    std::perror("mmap");
    return 1;
  }
  auto* page = new (mem) SharedPage;
  auto* b_oneway = reinterpret_cast<std::int64_t*>(static_cast<char*>(mem) + sizeof(SharedPage));

  pid_t child = fork();
  if (child < 0) {
    std::perror("fork");
    return 1;
  }
  if (child == 0) {  // B: echo
    plh::bench::pin_to_cpu(cpu_b);
    for (std::uint32_t i = 1; i <= total; ++i) {
      await(page->ping, i, use_futex);
      b_oneway[i - 1] = now_ns() - page->ping_stamp.load(std::memory_order_relaxed);
      post(page->pong, i, use_futex);
    }
    _exit(0);
  }

  plh::bench::pin_to_cpu(cpu_a);
  std::vector<std::int64_t> rtt_half;
  rtt_half.reserve(iterations);
  const std::int64_t start = now_ns();
  for (std::uint32_t i = 1; i <= total; ++i) {
    const std::int64_t t0 = now_ns();
    page->ping_stamp.store(t0, std::memory_order_relaxed);
    post(page->ping, i, use_futex);
    await(page->pong, i, use_futex);
    const std::int64_t t1 = now_ns();
    if (i > warmup) rtt_half.push_back((t1 - t0) / 2);
  }
  const std::int64_t elapsed = now_ns() - start;
  int status = 0;
  rusage ru_b{}, ru_a{};
  wait4(child, &status, 0, &ru_b);
  getrusage(RUSAGE_SELF, &ru_a);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::fprintf(stderr, "echo process failed\n");
    return 1;
  }
  std::vector<std::int64_t> oneway(b_oneway + warmup, b_oneway + total);  // A->B

  auto ow = plh::bench::percentiles(oneway);
  auto rh = plh::bench::percentiles(rtt_half);
  std::printf("RESULT bench=futex_pingpong mode=%s iterations=%u cpu_a=%d cpu_b=%d nivcsw_a=%ld nivcsw_b=%ld %s %s "
              "roundtrips_per_s=%.0f\n",
              mode.c_str(), iterations, cpu_a, cpu_b, ru_a.ru_nivcsw, ru_b.ru_nivcsw, plh::bench::percentile_fields("oneway_", ow).c_str(),
              plh::bench::percentile_fields("rtthalf_", rh).c_str(),
              static_cast<double>(total) * 1e9 / static_cast<double>(elapsed));
  munmap(mem, bytes);
  return 0;
}
