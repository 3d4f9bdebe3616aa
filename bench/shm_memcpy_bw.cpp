// memcpy bandwidth on this machine for 1 MiB buffers: the yardstick for the 1 MiB
// shared-memory throughput target (>= half of this).
//
//   hot:  one 1 MiB source copied again and again into one 1 MiB destination (both stay
//         in cache: the best case).
//   ring: one 1 MiB source copied into a ring of --ring-slots destinations in a shared
//         mapping, like a writer filling the slots of a segment (16 x 1 MiB by default).
// GB/s means 10^9 bytes copied per second (bytes written; each is also read once).
#include "shm_bench_common.hpp"

#include <sys/mman.h>

#include <CLI/CLI.hpp>
#include <cstring>

namespace {

double measure(char* const* dsts, std::size_t ndst, const char* src, std::size_t size, double seconds) {
  // Untimed warm-up pass over every destination (page faults, cache).
  for (std::size_t i = 0; i < ndst; ++i) std::memcpy(dsts[i], src, size);
  const std::int64_t budget = static_cast<std::int64_t>(seconds * 1e9);
  std::uint64_t copies = 0;
  const std::int64_t start = plh::bench::now_ns();
  std::int64_t now = start;
  while (now - start < budget) {
    for (int k = 0; k < 64; ++k) {
      char* d = dsts[copies % ndst];
      std::memcpy(d, src, size);
      plh::bench::clobber_memory(d);
      ++copies;
    }
    now = plh::bench::now_ns();
  }
  return static_cast<double>(copies) * static_cast<double>(size) / static_cast<double>(now - start);
}

}  // namespace

int main(int argc, char** argv) {
  std::size_t size = 1 << 20;
  std::size_t ring_slots = 16;
  double seconds = 1.0;
  int cpu = 0;
  CLI::App app{"memcpy bandwidth for 1 MiB buffers"};
  app.add_option("--size", size, "bytes per copy");
  app.add_option("--ring-slots", ring_slots, "destinations in the ring test")->check(CLI::PositiveNumber);
  app.add_option("--seconds", seconds, "duration of each test");
  app.add_option("--cpu", cpu, "CPU to run on, -1 = no pinning");
  CLI11_PARSE(app, argc, argv);
  plh::bench::pin_to_cpu(cpu);

  std::vector<char> src(size);
  for (std::size_t i = 0; i < size; ++i) src[i] = static_cast<char>(i * 131);

  std::vector<char> hot_dst(size);
  char* hot = hot_dst.data();
  const double hot_gbs = measure(&hot, 1, src.data(), size, seconds);

  const std::size_t ring_bytes = size * ring_slots;
  void* mem = mmap(nullptr, ring_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) {
    std::perror("mmap");
    return 1;
  }
  std::vector<char*> ring(ring_slots);
  for (std::size_t i = 0; i < ring_slots; ++i) ring[i] = static_cast<char*>(mem) + i * size;
  const double ring_gbs = measure(ring.data(), ring.size(), src.data(), size, seconds);
  munmap(mem, ring_bytes);

  std::printf("RESULT bench=memcpy size=%zu cpu=%d hot_gbs=%.2f ring_slots=%zu ring_gbs=%.2f\n", size, cpu,
              hot_gbs, ring_slots, ring_gbs);
  return 0;
}
