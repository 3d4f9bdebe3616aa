// Small helpers shared by the bench/shm_*.cpp programs: clock, CPU pinning,
// percentiles and the one-line result format that bench/run_shm_bench.sh parses.
//
// Result lines go to stdout and look like
//   RESULT bench=futex_pingpong mode=futex size=8 p50_ns=1234 p99_ns=2345 ...
// (space-separated key=value, no spaces inside values). Everything else goes to stderr.
#pragma once

#include <sched.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace plh::bench {

inline std::int64_t now_ns() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// Pins the calling thread (and children forked later) to one CPU; cpu < 0 leaves it alone.
// Failure (e.g. the CPU does not exist) is reported on stderr and ignored: an unpinned
// benchmark is still a benchmark.
inline void pin_to_cpu(int cpu) {
  if (cpu < 0) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (sched_setaffinity(0, sizeof set, &set) != 0)
    std::fprintf(stderr, "warning: cannot pin to CPU %d: %s\n", cpu, std::strerror(errno));
}

// Keeps the compiler from dropping stores to memory it cannot see being read.
inline void clobber_memory(const void* p) noexcept { asm volatile("" : : "r"(p) : "memory"); }

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

struct Percentiles {
  std::int64_t p50 = 0;
  std::int64_t p99 = 0;
  std::int64_t p999 = 0;
  std::int64_t min = 0;
  std::int64_t max = 0;
  double mean = 0;
};

// Nearest-rank percentiles; sorts `v` in place. Empty input gives all zeros.
inline Percentiles percentiles(std::vector<std::int64_t>& v) {
  Percentiles p;
  if (v.empty()) return p;
  std::sort(v.begin(), v.end());
  auto at = [&](double q) {
    auto idx = static_cast<std::size_t>(q * static_cast<double>(v.size() - 1) + 0.5);
    return v[std::min(idx, v.size() - 1)];
  };
  p.p50 = at(0.50);
  p.p99 = at(0.99);
  p.p999 = at(0.999);
  p.min = v.front();
  p.max = v.back();
  double sum = 0;
  for (auto x : v) sum += static_cast<double>(x);
  p.mean = sum / static_cast<double>(v.size());
  return p;
}

inline std::string percentile_fields(const std::string& prefix, const Percentiles& p) {
  char buf[256];
  std::snprintf(buf, sizeof buf, "%sp50_ns=%lld %sp99_ns=%lld %sp999_ns=%lld %smean_ns=%.0f %smax_ns=%lld",
                prefix.c_str(), static_cast<long long>(p.p50), prefix.c_str(),
                static_cast<long long>(p.p99), prefix.c_str(), static_cast<long long>(p.p999),
                prefix.c_str(), p.mean, prefix.c_str(), static_cast<long long>(p.max));
  return buf;
}

}  // namespace plh::bench
