// Throughput of the plh shared-memory DataBlock through the library API: one writer
// process and one reader process stream --count slots of --size bytes.
//
// Writer: begin_publish(), memcpy --size bytes from a prepared buffer into the slot
//         (the first 8 bytes carry a running counter), end_publish(size) (ts_ns = now).
// Reader: acquire(), check the counter and seq, then by --reader:
//           copy  - memcpy the payload into a private buffer (default; what a consumer
//                   that keeps the data, or plh-shm read writing to a pipe, must do)
//           touch - read one byte per cache line
//           none  - only the 8-byte counter
//         release().
//
// cpu_share_a/b = CPU time / lifetime of writer/reader process (1.00 = never preempted).
// --single-process: no second process; measures the per-slot CPU cost of each side alone
// (writer: begin_publish + memcpy + end_publish into a `latest` segment nobody reads, with
// ts_ns = 0 (the library reads the clock) and with an explicit ts_ns; reader: acquire +
// memcpy + release draining a full `sequential` ring of --slots slots, repeatedly).
// nivcsw_a/b = involuntary context switches of writer/reader (preemption by other load).
// Rate = slots received / (reader's last slot - writer's first begin_publish), both
// CLOCK_MONOTONIC. GB/s = 10^9 payload bytes per second.
#include "shm_bench_common.hpp"

#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstring>
#include <exception>

#include "plh/shm/data_block.hpp"

namespace {

using plh::bench::now_ns;
namespace shm = plh::shm;

struct Shared {  // results of the reader process, read by the writer process at the end
  std::atomic<std::int64_t> writer_start{0};
  std::int64_t reader_end = 0;
  std::uint64_t received = 0;
  std::uint64_t seq_gaps = 0;
  std::uint64_t bad_payloads = 0;
  std::uint64_t skipped = 0;
  std::uint64_t sink = 0;
};

std::int64_t thread_cpu_ns() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// Per-slot cost of writer and reader alone, in one process (see the top comment), in CPU
// time of this thread (CLOCK_THREAD_CPUTIME_ID), so that other load on the machine does
// not inflate it.
int single_process(const std::string& name, std::uint32_t size, std::uint32_t slots, int cpu) {
  plh::bench::pin_to_cpu(cpu);
  std::vector<std::byte> src(size), dst(size);
  shm::WaitOptions wait;
  wait.busy_poll = true;
  wait.heartbeat_timeout = std::chrono::seconds(60);
  auto writer_pass = [&](shm::Writer& w, std::int64_t ts, std::uint32_t n) {
    const std::int64_t t0 = thread_cpu_ns();
    for (std::uint32_t i = 0; i < n; ++i) {
      auto buf = w.begin_publish();
      std::memcpy(buf.data(), src.data(), size);
      w.end_publish(size, ts);
    }
    return static_cast<double>(thread_cpu_ns() - t0) / n;
  };
  double w_clock = 0, w_ts = 0, r_ns = 0;
  {
    shm::remove_segment(name);
    shm::create_segment(name, {{slots, size, shm::Policy::latest, shm::Checksum::none}, 0600});
    shm::Writer::Options wo;
    wo.wait = wait;
    shm::Writer w(name, wo);
    const std::uint32_t n = std::max<std::uint32_t>(4 * slots, 1'000'000 / std::max<std::uint32_t>(1, size / 64));
    writer_pass(w, 0, slots);  // warm-up: touch every slot
    w_clock = writer_pass(w, 0, n);
    w_ts = writer_pass(w, 1, n);
  }
  shm::remove_segment(name);
  {
    shm::create_segment(name, {{slots, size, shm::Policy::sequential, shm::Checksum::none}, 0600});
    shm::Writer::Options wo;
    wo.wait = wait;
    shm::Writer w(name, wo);
    shm::Reader r(name, {shm::Reader::From::oldest, wait});
    // Rounds of: the writer fills the ring, the reader drains it (only the drain is timed).
    // Round 0 is a warm-up (first touch of every page of the reader's mapping).
    const std::uint32_t rounds = 1 + std::max<std::uint32_t>(4, 200'000 / slots / std::max<std::uint32_t>(1, size / 64));
    std::int64_t spent = 0;
    std::uint64_t drained = 0;
    for (std::uint32_t round = 0; round < rounds; ++round) {
      writer_pass(w, 1, slots);
      const std::int64_t t0 = thread_cpu_ns();
      for (std::uint32_t i = 0; i < slots; ++i) {
        auto a = r.acquire();
        if (a.status != shm::AcquireStatus::slot) throw std::runtime_error("reader: no slot");
        std::memcpy(dst.data(), a.view.data, a.view.meta.size);
        plh::bench::clobber_memory(dst.data());
        r.release();
      }
      if (round > 0) {
        spent += thread_cpu_ns() - t0;
        drained += slots;
      }
    }
    r_ns = static_cast<double>(spent) / static_cast<double>(drained);
  }
  shm::remove_segment(name);
  std::printf(
      "RESULT bench=shm_slot_cost size=%u slots=%u cpu=%d writer_ns=%.1f writer_explicit_ts_ns=%.1f "
      "reader_ns=%.1f\n",
      size, slots, cpu, w_clock, w_ts, r_ns);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string name = "plhbench-tp-" + std::to_string(getpid());
  std::uint32_t size = 64;
  std::uint32_t slots = 4096;
  std::uint64_t count = 10'000'000;
  std::string mode = "busy";
  std::int64_t spin_ns = -1;
  std::string policy = "sequential";
  std::string reader_work = "copy";
  int cpu_a = 0;
  int cpu_b = 1;
  bool single = false;
  const std::int64_t process_start = now_ns();
  CLI::App app{"plh shm throughput (one writer process, one reader process, library API)"};
  app.add_option("--name", name, "segment name (created and removed)");
  app.add_option("--size", size, "payload bytes per slot (>= 8)")->check(CLI::Range(8u, 1u << 30));
  app.add_option("--slots", slots, "ring length");
  app.add_option("--count", count, "slots to send");
  app.add_option("--mode", mode, "busy (busy-poll) or blocking")->check(CLI::IsMember({"busy", "blocking"}));
  app.add_option("--spin-ns", spin_ns, "blocking mode: spin this long before sleeping (default: library's)");
  app.add_option("--policy", policy, "latest, sequential or sync");
  app.add_option("--reader", reader_work, "copy, touch or none")->check(CLI::IsMember({"copy", "touch", "none"}));
  app.add_option("--cpu-a", cpu_a, "CPU for the writer, -1 = no pinning");
  app.add_option("--cpu-b", cpu_b, "CPU for the reader, -1 = no pinning");
  app.add_flag("--single-process", single, "per-slot cost of writer and reader alone (see source)");
  CLI11_PARSE(app, argc, argv);
  if (single) {
    try {
      return single_process(name, size, slots, cpu_a);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "shm_throughput: error: %s\n", e.what());
      shm::remove_segment(name);
      return 1;
    }
  }

  shm::WaitOptions wait;
  wait.busy_poll = mode == "busy";
  // A benchmark on a loaded machine must not mistake a starved heartbeat for a dead writer.
  wait.heartbeat_timeout = std::chrono::seconds(60);
  // Nothing may hang: a run that is not done by then fails (TimeoutError).
  const auto deadline = shm::Clock::now() + std::chrono::seconds(240);
  if (spin_ns >= 0) wait.spin = std::chrono::nanoseconds(spin_ns);
  try {
    shm::CreateOptions co;
    co.geometry = {slots, size, shm::parse_policy(policy), shm::Checksum::none};
    shm::remove_segment(name);
    shm::create_segment(name, co);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "shm_throughput: error: %s\n", e.what());
    return 1;
  }
  void* mem = mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) {
    std::perror("mmap");
    return 1;
  }
  auto* shared = new (mem) Shared;

  const pid_t child = fork();
  if (child < 0) {
    std::perror("fork");
    return 1;
  }
  if (child == 0) {  // reader
    try {
      plh::bench::pin_to_cpu(cpu_b);
      std::vector<std::byte> dst(size);
      shm::Reader r(name, {shm::Reader::From::oldest, wait});
      std::uint64_t expected_seq = 0, counter = 0, sink = 0;
      for (;;) {
        auto got = r.acquire(deadline);
        if (got.status == shm::AcquireStatus::ended) break;
        if (got.status != shm::AcquireStatus::slot) throw std::runtime_error("acquire stopped or timed out");
        const auto& v = got.view;
        if (expected_seq != 0 && v.meta.seq != expected_seq + 1) ++shared->seq_gaps;
        expected_seq = v.meta.seq;
        std::uint64_t c = 0;
        std::memcpy(&c, v.data, sizeof c);
        if (c != counter + 1 && counter != 0 && policy != "latest") ++shared->bad_payloads;
        counter = c;
        if (v.meta.size != size) ++shared->bad_payloads;
        if (reader_work == "copy") {
          std::memcpy(dst.data(), v.data, v.meta.size);
          plh::bench::clobber_memory(dst.data());
        } else if (reader_work == "touch") {
          for (std::size_t i = 0; i < v.meta.size; i += 64) sink += static_cast<std::uint8_t>(v.data[i]);
        }
        r.release();
        ++shared->received;
      }
      shared->reader_end = now_ns();
      shared->skipped = r.skipped();
      shared->sink = sink;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "shm_throughput (reader): error: %s\n", e.what());
      _exit(1);
    }
    _exit(0);
  }

  int rc = 0;
  std::int64_t writer_end = 0;
  try {
    plh::bench::pin_to_cpu(cpu_a);
    std::vector<std::byte> src(size);
    for (std::size_t i = 0; i < size; ++i) src[i] = static_cast<std::byte>(i * 131);
    shm::Writer::Options wo;
    wo.wait = wait;
    shm::Writer w(name, wo);
    if (!w.wait_for_readers(1, shm::Clock::now() + std::chrono::seconds(10))) throw std::runtime_error("no reader");
    shared->writer_start.store(now_ns());
    for (std::uint64_t i = 1; i <= count; ++i) {
      auto buf = w.begin_publish(deadline);
      if (buf.empty()) throw std::runtime_error("begin_publish stopped");
      std::memcpy(buf.data(), src.data(), size);
      std::memcpy(buf.data(), &i, sizeof i);
      w.end_publish(size);
    }
    writer_end = now_ns();
  } catch (const std::exception& e) {  // ~Writer ended the stream; the reader exits
    std::fprintf(stderr, "shm_throughput (writer): error: %s\n", e.what());
    rc = 1;
  }
  int status = 0;
  rusage ru_b{}, ru_a{};
  wait4(child, &status, 0, &ru_b);
  getrusage(RUSAGE_SELF, &ru_a);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) rc = 1;
  shm::remove_segment(name);
  if (rc != 0) return rc;

  const std::int64_t start = shared->writer_start.load();
  const double secs = static_cast<double>(shared->reader_end - start) / 1e9;
  // Share of a CPU each process actually got over its lifetime (setup included): well below 1
  // for a busy-polling process means other load took the CPU away.
  auto cpu_seconds = [](const rusage& ru) {
    return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
  };
  const double life = static_cast<double>(now_ns() - process_start) / 1e9;
  const double rate = static_cast<double>(shared->received) / secs;
  std::printf(
      "RESULT bench=shm_throughput mode=%s spin_ns=%lld policy=%s reader=%s size=%u slots=%u count=%llu "
      "received=%llu seq_gaps=%llu bad_payloads=%llu skipped=%llu cpu_a=%d cpu_b=%d nivcsw_a=%ld nivcsw_b=%ld cpu_share_a=%.2f cpu_share_b=%.2f seconds=%.4f "
      "writer_seconds=%.4f slots_per_s=%.0f gbs=%.2f\n",
      mode.c_str(), static_cast<long long>(spin_ns), policy.c_str(), reader_work.c_str(), size, slots,
      static_cast<unsigned long long>(count), static_cast<unsigned long long>(shared->received),
      static_cast<unsigned long long>(shared->seq_gaps), static_cast<unsigned long long>(shared->bad_payloads),
      static_cast<unsigned long long>(shared->skipped), cpu_a, cpu_b, ru_a.ru_nivcsw, ru_b.ru_nivcsw, cpu_seconds(ru_a) / life, cpu_seconds(ru_b) / life, secs,
      static_cast<double>(writer_end - start) / 1e9, rate, rate * size / 1e9);
  return shared->received == count || policy == "latest" ? 0 : 1;
}
