// The DataBlock library in-process, on real shared memory.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "plh/core/error.hpp"
#include "plh/shm/data_block.hpp"
#include "plh/shm/layout.hpp"
#include "../../lib/src/shm/internal.hpp"  // detail::AdaptiveSpin
#include "process.hpp"
#include "skip.hpp"

using namespace std::chrono_literals;
namespace shm = plh::shm;

namespace {

// A unique segment name, removed at the end of the test.
struct TestSegment {
  std::string name = "shmu" + plh::test::unique_suffix();
  TestSegment() = default;
  ~TestSegment() { shm::remove_segment(name); }
};

shm::Writer::Options writer_opts(std::uint32_t slots, std::uint32_t slot_size, shm::Policy p,
                                 shm::Checksum c = shm::Checksum::none) {
  shm::Writer::Options o;
  o.create = true;
  o.create_options.geometry = {slots, slot_size, p, c};
  return o;
}

std::span<const std::byte> bytes(const std::string& s) { return {reinterpret_cast<const std::byte*>(s.data()), s.size()}; }
std::string text(const shm::SlotView& v) { return {reinterpret_cast<const char*>(v.data), v.meta.size}; }

shm::Clock::time_point soon(std::chrono::milliseconds d = 5s) { return shm::Clock::now() + d; }

std::string object_path(const std::string& name) { return "/dev/shm/plh." + name; }

// Raw bytes of a segment file, for corrupting it behind the library's back.
struct RawMap {
  int fd;
  std::byte* p;
  std::size_t n;
  explicit RawMap(const std::string& name) {
    fd = ::open(object_path(name).c_str(), O_RDWR);
    REQUIRE(fd >= 0);
    struct stat st {};
    ::fstat(fd, &st);
    n = static_cast<std::size_t>(st.st_size);
    p = static_cast<std::byte*>(::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
    REQUIRE(p != MAP_FAILED);
  }
  ~RawMap() {
    ::munmap(p, n);
    ::close(fd);
  }
};

int code_of(const std::function<void()>& f, std::string* msg = nullptr) {
  try {
    f();
  } catch (const plh::Error& e) {
    if (msg) *msg = e.what();
    return static_cast<int>(e.code());
  }
  return 0;
}

}  // namespace

TEST_CASE("a segment is created with exact permissions and described by inspect", "[shm]") {
  TestSegment seg;
  const mode_t old = ::umask(0077);
  shm::create_segment(seg.name, {{8, 100, shm::Policy::sync, shm::Checksum::xxh3}, 0640});
  ::umask(old);
  struct stat st {};
  REQUIRE(::stat(object_path(seg.name).c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0640);
  const auto info = shm::inspect_segment(seg.name);
  CHECK(info.geometry.slots == 8);
  CHECK(info.geometry.slot_size == 100);
  CHECK(info.geometry.policy == shm::Policy::sync);
  CHECK(info.geometry.checksum == shm::Checksum::xxh3);
  CHECK(info.write_seq == 0);
  CHECK(info.writer_pid == 0);
  CHECK(info.readers.empty());
  // A second create is refused; remove reports whether it existed.
  CHECK(code_of([&] { shm::create_segment(seg.name, {}); }) == 1);
  CHECK(shm::remove_segment(seg.name));
  CHECK_FALSE(shm::remove_segment(seg.name));
  CHECK(code_of([&] { shm::inspect_segment(seg.name); }) == 4);
}

TEST_CASE("bad names and impossible geometry are usage errors", "[shm]") {
  CHECK(code_of([] { shm::create_segment("bad/name", {}); }) == 2);
  CHECK(code_of([] { shm::create_segment(".abc", {}); }) == 2);  // an empty component ("1abc" is a valid name)
  CHECK(code_of([] { shm::create_segment(std::string(252, 'a'), {}); }) == 2);
  CHECK(code_of([] { shm::create_segment("shmu.zero", {{0, 10, shm::Policy::latest, shm::Checksum::none}, 0600}); }) == 2);
  CHECK(code_of([] { shm::Reader r("shmu.never" + plh::test::unique_suffix(), {}); }) == 4);
}

TEST_CASE("slots carry payload and metadata, checksums verify", "[shm]") {
  for (auto c : {shm::Checksum::none, shm::Checksum::xxh3, shm::Checksum::blake2b}) {
    INFO(shm::checksum_name(c));
    TestSegment seg;
    shm::Writer w(seg.name, writer_opts(4, 64, shm::Policy::sequential, c));
    shm::Reader r(seg.name, {});
    auto buf = w.begin_publish();
    REQUIRE(buf.size() == 64);
    std::memcpy(buf.data(), "hello", 5);
    CHECK(w.end_publish(5, 1234, 0xabcdef, {1, 2, 3, 4}) == 1);
    CHECK(w.publish(bytes("")) == 2);
    auto got = r.acquire(soon());
    REQUIRE(got.status == shm::AcquireStatus::slot);
    CHECK(text(got.view) == "hello");
    CHECK(got.view.meta.seq == 1);
    CHECK(got.view.meta.ts_ns == 1234);
    CHECK(got.view.meta.type_hash == 0xabcdef);
    CHECK(got.view.meta.dims == std::array<std::uint64_t, 4>{1, 2, 3, 4});
    CHECK(r.release());
    got = r.acquire(soon());
    REQUIRE(got.status == shm::AcquireStatus::slot);
    CHECK(got.view.meta.size == 0);
    CHECK(got.view.meta.ts_ns > 0);  // 0 means now
    r.release();
    CHECK(r.acquire(shm::Clock::now() + 20ms).status == shm::AcquireStatus::timeout);
    w.end_stream();
    CHECK(r.acquire(soon()).status == shm::AcquireStatus::ended);
    CHECK_THROWS_AS(w.publish(bytes(std::string(65, 'x'))), plh::UsageError);
  }
}

TEST_CASE("sequential: the writer waits for the reader instead of overwriting", "[shm]") {
  TestSegment seg;
  shm::Writer w(seg.name, writer_opts(4, 16, shm::Policy::sequential));
  shm::Reader r(seg.name, {});
  for (int i = 1; i <= 4; ++i) w.publish(bytes(std::to_string(i)));
  CHECK_THROWS_AS(w.begin_publish(shm::Clock::now() + 30ms), plh::TimeoutError);
  // A second reader is refused under sequential.
  CHECK(code_of([&] { shm::Reader r2(seg.name, {}); }) == 6);
  std::thread t([&] {
    for (int i = 5; i <= 20; ++i) w.publish(bytes(std::to_string(i)));
    w.end_stream();
  });
  std::vector<std::string> seen;
  for (;;) {
    auto got = r.acquire(soon());
    if (got.status != shm::AcquireStatus::slot) {
      CHECK(got.status == shm::AcquireStatus::ended);
      break;
    }
    seen.push_back(text(got.view));
    r.release();
  }
  t.join();
  REQUIRE(seen.size() == 20);
  for (int i = 1; i <= 20; ++i) CHECK(seen[static_cast<std::size_t>(i - 1)] == std::to_string(i));
  CHECK(shm::inspect_segment(seg.name).writer_waits > 0);
}

TEST_CASE("sequential: unread slots are kept for the next reader", "[shm]") {
  TestSegment seg;
  shm::Writer w(seg.name, writer_opts(4, 16, shm::Policy::sequential));
  for (int i = 1; i <= 4; ++i) w.publish(bytes(std::to_string(i)));
  CHECK_THROWS_AS(w.begin_publish(shm::Clock::now() + 20ms), plh::TimeoutError);  // nobody read them yet
  {
    shm::Reader r(seg.name, {});
    auto got = r.acquire(soon());
    REQUIRE(got.status == shm::AcquireStatus::slot);
    CHECK(text(got.view) == "1");
    r.release();
  }
  shm::Reader r(seg.name, {});
  auto got = r.acquire(soon());
  REQUIRE(got.status == shm::AcquireStatus::slot);
  CHECK(text(got.view) == "2");
}

TEST_CASE("latest: a slow reader skips to the newest slot and counts what it skipped", "[shm]") {
  TestSegment seg;
  shm::Writer w(seg.name, writer_opts(4, 16, shm::Policy::latest));
  shm::Reader r(seg.name, {});
  for (int i = 1; i <= 10; ++i) w.publish(bytes(std::to_string(i)));  // never waits
  auto got = r.acquire(soon());
  REQUIRE(got.status == shm::AcquireStatus::slot);
  CHECK(got.view.meta.seq == 10);
  CHECK(text(got.view) == "10");
  CHECK(r.release());
  CHECK(r.skipped() == 9);
  // A held view that the writer overwrites is reported at release.
  w.publish(bytes("11"));
  got = r.acquire(soon());
  REQUIRE(got.view.meta.seq == 11);
  for (int i = 12; i <= 15; ++i) w.publish(bytes(std::to_string(i)));
  CHECK_FALSE(r.release());
  // --from oldest / latest on a fresh reader.
  shm::Reader oldest(seg.name, {});
  CHECK(oldest.acquire(soon()).view.meta.seq == 12);
  shm::Reader latest(seg.name, {shm::Reader::From::latest, {}});
  CHECK(latest.acquire(soon()).view.meta.seq == 15);
}

TEST_CASE("latest: racing reader threads with random delays see increasing seqs and intact payloads", "[shm]") {
  TestSegment seg;
  shm::Writer w(seg.name, writer_opts(8, 256, shm::Policy::latest, shm::Checksum::xxh3));
  auto payload = [](std::uint64_t s) { return std::string(200, static_cast<char>('a' + s % 26)) + std::to_string(s); };
  std::atomic<int> ready{0};
  std::vector<std::thread> readers;
  std::vector<std::string> problems(2);
  std::vector<std::uint64_t> last(2);
  for (int k = 0; k < 2; ++k)
    readers.emplace_back([&, k] {
      shm::Reader r(seg.name, {});
      ++ready;
      std::mt19937 rng(static_cast<unsigned>(k));
      std::uint64_t prev = 0;
      for (;;) {
        auto got = r.acquire(soon());
        if (got.status != shm::AcquireStatus::slot) break;
        const std::string copy = text(got.view);
        const auto s = got.view.meta.seq;
        if (!r.release()) continue;  // overwritten while held: not trusted
        if (s <= prev) problems[static_cast<std::size_t>(k)] = "seq not increasing";
        if (copy != payload(s)) problems[static_cast<std::size_t>(k)] = "payload damaged at " + std::to_string(s);
        prev = s;
        std::this_thread::sleep_for(std::chrono::microseconds(rng() % 300));  // a slow consumer
      }
      last[static_cast<std::size_t>(k)] = prev;
    });
  REQUIRE(plh::test::eventually([&] { return ready.load() == 2; }));
  for (std::uint64_t s = 1; s <= 2000; ++s) w.publish(bytes(payload(s)));
  w.end_stream();
  for (auto& t : readers) t.join();
  CHECK(problems[0].empty());
  CHECK(problems[1].empty());
  CHECK(last[0] == 2000);
  CHECK(last[1] == 2000);
}

TEST_CASE("sync: 20 readers each get every slot in order", "[shm]") {
  TestSegment seg;
  shm::Writer w(seg.name, writer_opts(4, 32, shm::Policy::sync));
  constexpr int kReaders = 20, kSlots = 300;
  std::vector<std::unique_ptr<shm::Reader>> rs;
  for (int k = 0; k < kReaders; ++k) rs.push_back(std::make_unique<shm::Reader>(seg.name, shm::Reader::Options{}));
  CHECK(w.active_readers() == kReaders);
  std::vector<int> good(kReaders, 0);
  std::vector<std::thread> ts;
  for (int k = 0; k < kReaders; ++k)
    ts.emplace_back([&, k] {
      auto& r = *rs[static_cast<std::size_t>(k)];
      int expect = 1;
      for (;;) {
        auto got = r.acquire(soon());
        if (got.status != shm::AcquireStatus::slot) break;
        if (text(got.view) == std::to_string(expect)) ++good[static_cast<std::size_t>(k)];
        ++expect;
        r.release();
      }
    });
  for (int i = 1; i <= kSlots; ++i) w.publish(bytes(std::to_string(i)));
  w.end_stream();
  for (auto& t : ts) t.join();
  for (int k = 0; k < kReaders; ++k) CHECK(good[static_cast<std::size_t>(k)] == kSlots);
}

TEST_CASE("a restarted writer continues the sequence, a second live writer is refused", "[shm]") {
  TestSegment seg;
  {
    shm::Writer w(seg.name, writer_opts(8, 16, shm::Policy::latest));
    w.publish(bytes("a"));
    w.publish(bytes("b"));
    CHECK(code_of([&] { shm::Writer w2(seg.name, {}); }) == 6);
  }
  CHECK(shm::inspect_segment(seg.name).ended);
  shm::Writer w(seg.name, {});
  CHECK(w.last_seq() == 2);
  CHECK(w.publish(bytes("c")) == 3);
  CHECK_FALSE(shm::inspect_segment(seg.name).ended);
  // --create with another geometry is refused, with the same one it re-attaches.
  std::string msg;
  CHECK(code_of([&] { shm::Writer w3(seg.name, writer_opts(16, 16, shm::Policy::latest)); }, &msg) == 6);
  CHECK_THAT(msg, Catch::Contains("exists with 8 slots"));
}

TEST_CASE("segments that are not plh, another version, corrupt or truncated are refused", "[shm]") {
  TestSegment seg;
  auto write_file = [&](const std::string& content) {
    ::shm_unlink(("/plh." + seg.name).c_str());
    const int fd = ::shm_open(("/plh." + seg.name).c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
    REQUIRE(fd >= 0);
    REQUIRE(::write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size()));
    ::close(fd);
  };
  auto open_code = [&](std::string* msg) { return code_of([&] { shm::Reader r(seg.name, {}); }, msg); };
  std::string msg;

  write_file(std::string(4096, 'x'));
  CHECK(open_code(&msg) == 6);
  CHECK_THAT(msg, Catch::Contains("not a plh segment"));

  write_file("PLHSHM02" + std::string(8192, '\0'));
  CHECK(open_code(&msg) == 6);
  CHECK_THAT(msg, Catch::Contains("version"));

  // A real segment, then damaged in several ways.
  auto fresh = [&] {
    shm::remove_segment(seg.name);
    shm::create_segment(seg.name, {{4, 64, shm::Policy::sequential, shm::Checksum::none}, 0600});
  };
  fresh();
  {
    RawMap m(seg.name);
    std::uint32_t v = 7;
    std::memcpy(m.p + 8, &v, 4);  // version field
  }
  CHECK(open_code(&msg) == 6);
  fresh();
  {
    RawMap m(seg.name);
    std::uint32_t huge = 0xffffffffu;
    std::memcpy(m.p + 24, &huge, 4);  // slot_count
  }
  CHECK(open_code(&msg) == 1);
  CHECK_THAT(msg, Catch::Contains("corrupted header"));
  fresh();
  {
    RawMap m(seg.name);
    std::uint32_t policy = 9;
    std::memcpy(m.p + 52, &policy, 4);
  }
  CHECK(open_code(&msg) == 1);
  fresh();
  REQUIRE(::truncate(object_path(seg.name).c_str(), 8192 + 100) == 0);
  CHECK(open_code(&msg) == 1);
  CHECK_THAT(msg, Catch::Contains("truncated"));
  REQUIRE(::truncate(object_path(seg.name).c_str(), 100) == 0);
  CHECK(open_code(&msg) == 1);
  CHECK(code_of([&] { shm::inspect_segment(seg.name); }) == 1);
}

TEST_CASE("a slot corrupted behind the writer's back is a checksum error, not data", "[shm]") {
  for (auto c : {shm::Checksum::xxh3, shm::Checksum::blake2b}) {
    TestSegment seg;
    shm::Writer w(seg.name, writer_opts(8, 64, shm::Policy::sequential, c));
    for (int i = 1; i <= 3; ++i) w.publish(bytes("payload-" + std::to_string(i)));
    {
      RawMap m(seg.name);
      // Slot of seq 2 is index 1; its payload starts after the 128-byte metadata.
      const std::size_t stride = 128 + 64;
      m.p[shm::layout::kSlotsOffset + stride + 128 + 3] ^= std::byte{0x20};
    }
    shm::Reader r(seg.name, {});
    CHECK(text(r.acquire(soon()).view) == "payload-1");
    r.release();
    try {
      r.acquire(soon());
      FAIL("no checksum error");
    } catch (const shm::ChecksumError& e) {
      CHECK(e.seq == 2);
    }
    CHECK(text(r.acquire(soon()).view) == "payload-3");
    r.release();
    CHECK(r.checksum_errors() == 1);
  }
}

TEST_CASE("slot metadata out of bounds is refused, never read past the slot", "[shm]") {
  TestSegment seg;
  shm::Writer w(seg.name, writer_opts(4, 64, shm::Policy::sequential));
  w.publish(bytes("x"));
  {
    RawMap m(seg.name);
    std::uint32_t size = 1u << 30;
    std::memcpy(m.p + shm::layout::kSlotsOffset + 16, &size, 4);
  }
  shm::Reader r(seg.name, {});
  std::string msg;
  CHECK(code_of([&] { r.acquire(soon()); }, &msg) == 1);
  CHECK_THAT(msg, Catch::Contains("corrupt"));
}

TEST_CASE("an idle reader sleeps and wakes within milliseconds of a publish", "[shm]") {
  TestSegment seg;
  shm::Writer w(seg.name, writer_opts(4, 16, shm::Policy::sync));
  shm::Reader r(seg.name, {});
  std::atomic<bool> got{false};
  std::thread t([&] {
    auto res = r.acquire(soon());
    got = res.status == shm::AcquireStatus::slot;
  });
  // The reader is asleep on the futex once it set bit 0 of data_futex.
  RawMap m(seg.name);
  auto* h = reinterpret_cast<shm::layout::Header*>(m.p);
  REQUIRE(plh::test::eventually([&] { return (h->data_futex.load() & 1u) != 0; }));
  w.publish(bytes("wake"));
  t.join();
  CHECK(got.load());
}

// The writer publishes without a fence per slot (asymmetric, membarrier) or with one; in
// both a reader that goes to sleep just as a slot is committed must be woken by that
// publish, not by its 100 ms liveness timeout. Publishes land at random moments around
// the reader's sleep; a lost wake-up shows as a slot that took >= 50 ms to arrive. A
// protocol that loses wake-ups does so again and again (a writer that never wakes made
// all 400 slow); a couple of slow slots may be a loaded machine and are tolerated.
TEST_CASE("no wake-up is lost with or without the per-publish fence", "[shm]") {
  for (const bool asymmetric : {true, false}) {
    CAPTURE(asymmetric);
    TestSegment seg;
    auto wo = writer_opts(8, 64, shm::Policy::sync);
    wo.asymmetric_fence = asymmetric;
    shm::Writer w(seg.name, wo);
    RawMap m(seg.name);
    auto* h = reinterpret_cast<shm::layout::Header*>(m.p);
    if (!asymmetric) CHECK(h->writer_fence.load() == shm::layout::kFenceFull);
    shm::Reader::Options ro;
    ro.wait.spin = 0ns;  // straight to the futex
    ro.wait.heartbeat_timeout = 60s;
    shm::Reader r(seg.name, ro);
    constexpr int kCycles = 400;
    std::atomic<int> received{0};
    std::atomic<int> slow{0};
    std::atomic<std::int64_t> sent_at{0};
    std::thread reader([&] {
      for (int i = 0; i < kCycles; ++i) {
        auto got = r.acquire(soon(10s));
        if (got.status != shm::AcquireStatus::slot) break;
        const auto now = shm::Clock::now().time_since_epoch().count();
        if (now - sent_at.load() >= std::chrono::nanoseconds(50ms).count()) ++slow;
        r.release();
        ++received;
      }
    });
    std::mt19937 rng(42);
    for (int i = 0; i < kCycles; ++i) {
      // Wait until the previous slot was taken, then publish 0-40 us later: sometimes
      // before the reader sleeps, sometimes while it is going to sleep, sometimes after.
      REQUIRE(plh::test::eventually([&] { return received.load() == i; }));
      const auto until = shm::Clock::now() + std::chrono::microseconds(rng() % 40);
      while (shm::Clock::now() < until) {
      }
      sent_at = shm::Clock::now().time_since_epoch().count();
      w.publish(bytes("x" + std::to_string(i)));
    }
    reader.join();
    CHECK(received.load() == kCycles);
    CHECK(slow.load() <= 2);
  }
}

// A reader process that exited without detaching and was not reaped yet (a zombie still
// answers kill(pid, 0)) must not hold a sequential writer back.
TEST_CASE("sequential: a zombie reader's cursor is released", "[shm]") {
  TestSegment seg;
  shm::create_segment(seg.name, {{4, 64, shm::Policy::sequential, shm::Checksum::none}, 0600});
  int ready[2];
  REQUIRE(::pipe(ready) == 0);
  const pid_t child = ::fork();  // before any thread of this test exists
  REQUIRE(child >= 0);
  if (child == 0) {
    ::close(ready[0]);
    try {
      new shm::Reader(seg.name, {});  // never destroyed: the entry stays claimed
      [[maybe_unused]] auto n = ::write(ready[1], "r", 1);
    } catch (...) {
    }
    ::_exit(0);
  }
  ::close(ready[1]);
  char c = 0;
  REQUIRE(::read(ready[0], &c, 1) == 1);
  ::close(ready[0]);
  // Not reaped: the child is a zombie now.
  REQUIRE(plh::test::eventually([&] {
    std::ifstream st("/proc/" + std::to_string(child) + "/stat");
    std::string line;
    std::getline(st, line);
    const auto p = line.rfind(')');
    return p != std::string::npos && p + 2 < line.size() && line[p + 2] == 'Z';
  }));
  CHECK(shm::inspect_segment(seg.name).readers.size() == 1);
  {
    shm::Writer w(seg.name, {});
    for (int i = 0; i < 10; ++i) {
      auto buf = w.begin_publish(soon());  // TimeoutError if the zombie held the ring
      REQUIRE(buf.size() == 64);
      CHECK(w.end_publish(8) == static_cast<std::uint64_t>(i + 1));
    }
  }
  CHECK(shm::inspect_segment(seg.name).readers.empty());
  int status = 0;
  ::waitpid(child, &status, 0);
}

// ---------------------------------------------------------------- hostile segments

TEST_CASE("a segment granting group/others more than asked for is refused unless accepted", "[shm][security]") {
  TestSegment seg;
  shm::create_segment(seg.name, {{4, 64, shm::Policy::sync, shm::Checksum::none}, 0666});
  std::string msg;
  CHECK(code_of([&] { shm::Reader r(seg.name, {}); }, &msg) == 6);
  CHECK_THAT(msg, Catch::Contains("segment /dev/shm/plh." + seg.name + " is owned by uid " +
                                  std::to_string(::geteuid()) + " ("));
  CHECK_THAT(msg, Catch::Contains("with mode 0666; refusing it: others may write it; --mode 0666 accepts that"));
  CHECK(code_of([&] { shm::Writer w(seg.name, {}); }, &msg) == 6);
  // --create asking for 0600 does not accept it either; asking for 0666 does.
  CHECK(code_of([&] { shm::Writer w(seg.name, writer_opts(4, 64, shm::Policy::sync)); }, &msg) == 6);
  auto wo = writer_opts(4, 64, shm::Policy::sync);
  wo.create_options.mode = 0666;
  CHECK(code_of([&] { shm::Writer w(seg.name, wo); }) == 0);
  shm::Trust open_to_all;
  open_to_all.mode = 0666;
  CHECK(code_of([&] { shm::Reader r(seg.name, {}, open_to_all); }) == 0);
  // Group-writable only: the message names the group.
  shm::Trust group;
  group.mode = 0660;
  CHECK(code_of([&] { shm::Reader r(seg.name, {}, group); }, &msg) == 6);
  REQUIRE(::chmod(object_path(seg.name).c_str(), 0660) == 0);
  CHECK(code_of([&] { shm::Reader r(seg.name, {}); }, &msg) == 6);
  CHECK_THAT(msg, Catch::Contains("its group may write it"));
  CHECK(code_of([&] { shm::Reader r(seg.name, {}, group); }) == 0);
  // Read-only inspection shows it whatever its mode.
  CHECK(shm::inspect_segment(seg.name).mode == 0660);
}

TEST_CASE("a FIFO, directory or symbolic link planted under a segment's name never hangs or is followed", "[shm][security]") {
  const std::string name = "shmu" + plh::test::unique_suffix();
  const std::string path = object_path(name);
  REQUIRE(::mkfifo(path.c_str(), 0600) == 0);
  std::string msg;
  CHECK(code_of([&] { shm::inspect_segment(name); }, &msg) == 6);  // the old open(O_RDONLY) blocked forever
  CHECK_THAT(msg, Catch::Contains("is not a regular file"));
  CHECK(code_of([&] { shm::Reader r(name, {}); }, &msg) == 6);
  CHECK(code_of([&] { shm::Writer w(name, writer_opts(4, 64, shm::Policy::sync)); }, &msg) == 6);
  ::unlink(path.c_str());
  REQUIRE(::symlink("/etc/passwd", path.c_str()) == 0);
  CHECK(code_of([&] { shm::Reader r(name, {}); }, &msg) == 6);
  CHECK_THAT(msg, Catch::Contains("symbolic link"));
  CHECK(code_of([&] { shm::Writer w(name, writer_opts(4, 64, shm::Policy::sync)); }, &msg) == 6);
  ::unlink(path.c_str());
}

// ftruncate under a mapping makes the next access past the new end SIGBUS; the library
// absorbs it and reports an error instead (exit 1), for readers and writers alike.
TEST_CASE("a segment truncated under an attached reader or writer is an error, never SIGBUS", "[shm][security]") {
#if defined(__SANITIZE_THREAD__)
  // TSan takes SIGBUS as a deadly signal of its own and sees the guard's remapping as a
  // racing write; the normal and ASan stages run this test.
  PLH_SKIP("the SIGBUS guard cannot be tested under ThreadSanitizer");
#endif
  for (const off_t to : {off_t{0}, off_t{100}, off_t{8192 + 100}}) {
    CAPTURE(to);
    for (const auto policy : {shm::Policy::sequential, shm::Policy::latest}) {
      CAPTURE(shm::policy_name(policy));
      TestSegment seg;
      shm::Writer w(seg.name, writer_opts(4, 4096, policy));
      shm::Reader r(seg.name, {});
      w.publish(bytes("one"));
      w.publish(bytes(std::string(4000, 'x')));
      auto got = r.acquire(soon());
      REQUIRE(got.status == shm::AcquireStatus::slot);
      CHECK(text(got.view) == "one");
      r.release();
      REQUIRE(::truncate(object_path(seg.name).c_str(), to) == 0);
      std::string msg;
      CHECK(code_of([&] { (void)r.acquire(soon()); }, &msg) == 1);
      CHECK_THAT(msg, Catch::Contains("segment '" + seg.name + "' was truncated under this reader"));
      CHECK(code_of([&] { w.publish(bytes("three")); }, &msg) == 1);
      CHECK_THAT(msg, Catch::Contains("segment '" + seg.name + "' was truncated under this writer"));
      CHECK(code_of([&] { shm::inspect_segment(seg.name); }) == (to == 0 ? 6 : 1));  // empty: not a plh segment
    }
  }
}

TEST_CASE("a SIGBUS outside any segment still kills the process", "[shm][security]") {
#if defined(__SANITIZE_THREAD__)
  // TSan takes SIGBUS as a deadly signal of its own and sees the guard's remapping as a
  // racing write; the normal and ASan stages run this test.
  PLH_SKIP("the SIGBUS guard cannot be tested under ThreadSanitizer");
#endif
  TestSegment seg;
  shm::create_segment(seg.name, {{4, 64, shm::Policy::sync, shm::Checksum::none}, 0600});
  { shm::Reader r(seg.name, {}); }  // the handler is installed now
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    char path[] = "/dev/shm/plh-sigbus-XXXXXX";
    const int fd = ::mkstemp(path);
    if (fd < 0 || ::ftruncate(fd, 8192) != 0) ::_exit(2);
    auto* p = static_cast<volatile char*>(::mmap(nullptr, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
    ::unlink(path);
    if (p == MAP_FAILED || ::ftruncate(fd, 0) != 0) ::_exit(2);
    p[4096] = 1;  // not a segment: must die of SIGBUS as before
    ::_exit(3);
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  REQUIRE_FALSE((WIFEXITED(status) && WEXITSTATUS(status) == 2));
  // Swallowed would be exit 3. (Under ASan its own handler, chained to, reports and aborts.)
  CHECK_FALSE((WIFEXITED(status) && WEXITSTATUS(status) == 3));
#if !defined(__SANITIZE_ADDRESS__)
  CHECK(WIFSIGNALED(status));
  if (WIFSIGNALED(status)) CHECK(WTERMSIG(status) == SIGBUS);
#endif
}

TEST_CASE("a writer that breaks the protocol makes the reader stop with an error", "[shm][security]") {
  using shm::layout::Header;
  std::string msg;
  SECTION("write_seq at 2^64-1 never wraps to the empty seq 0") {
    TestSegment seg;
    shm::Writer w(seg.name, writer_opts(4, 64, shm::Policy::latest));
    w.publish(bytes("a"));
    w.publish(bytes("b"));
    shm::Reader r(seg.name, {});
    RawMap m(seg.name);
    reinterpret_cast<Header*>(m.p)->write_seq.store(UINT64_MAX);
    int code = 0;
    std::uint64_t zero_seqs = 0;
    for (int i = 0; i < 10 && code == 0; ++i) {
      code = code_of(
          [&] {
            auto got = r.acquire(soon(200ms));
            if (got.status == shm::AcquireStatus::slot && got.view.meta.seq == 0) ++zero_seqs;
          },
          &msg);
    }
    CHECK(zero_seqs == 0);
    CHECK(code == 1);
    CHECK_THAT(msg, Catch::Contains("broke the protocol: write_seq 18446744073709551615 is beyond any real sequence"));
    // A writer refuses to continue such a sequence.
    w.detach();
    CHECK(code_of([&] { shm::Writer w2(seg.name, {}); }, &msg) == 1);
    CHECK_THAT(msg, Catch::Contains("is corrupt (write_seq"));
  }
  SECTION("write_seq going backwards") {
    TestSegment seg;
    shm::Writer w(seg.name, writer_opts(8, 64, shm::Policy::sequential));
    shm::Reader r(seg.name, {});
    for (int i = 0; i < 3; ++i) w.publish(bytes("x"));
    for (int i = 0; i < 3; ++i) {
      REQUIRE(r.acquire(soon()).status == shm::AcquireStatus::slot);
      r.release();
    }
    RawMap m(seg.name);
    reinterpret_cast<Header*>(m.p)->write_seq.store(1);
    CHECK(code_of([&] { (void)r.acquire(soon(200ms)); }, &msg) == 1);  // the old reader just waited (timeout)
    CHECK_THAT(msg, Catch::Contains("write_seq went backwards from 3 to 1"));
  }
  SECTION("an ordered slot overwritten before the reader released it") {
    TestSegment seg;
    shm::Writer w(seg.name, writer_opts(4, 64, shm::Policy::sequential));
    shm::Reader r(seg.name, {});
    w.publish(bytes("1"));
    w.publish(bytes("2"));
    REQUIRE(r.acquire(soon()).status == shm::AcquireStatus::slot);
    r.release();
    RawMap m(seg.name);
    auto* slot2 = reinterpret_cast<shm::layout::SlotMeta*>(m.p + shm::layout::kSlotsOffset + 128);
    slot2->seq.store(6);
    CHECK(code_of([&] { (void)r.acquire(soon(200ms)); }, &msg) == 1);  // the old reader skipped it silently
    CHECK_THAT(msg, Catch::Contains("slot seq 2 was overwritten (it holds seq 6) before this reader released it"));
  }
  SECTION("another reader's cursor at 2^64-1 does not wrap a new reader's start") {
    TestSegment seg;
    shm::Writer w(seg.name, writer_opts(4, 64, shm::Policy::sync));
    for (int i = 0; i < 3; ++i) w.publish(bytes("x"));
    RawMap m(seg.name);
    auto* fake = reinterpret_cast<shm::layout::ReaderEntry*>(m.p + shm::layout::kReaderTableOffset + 64 * 10);
    fake->cursor.store(UINT64_MAX);
    fake->pid.store(static_cast<std::uint32_t>(::getpid()));
    {
      shm::Reader r(seg.name, {});
      auto got = r.acquire(soon(100ms));
      if (got.status == shm::AcquireStatus::slot) CHECK(got.view.meta.seq >= 1);  // the old reader got seq 0
    }
    fake->pid.store(0);
  }
}

// Two sync readers that leave at the same moment used to see each other still attached,
// so neither kept its cursor for the next reader (who then re-read the whole ring).
TEST_CASE("sync: two readers leaving at once keep their position for the next reader", "[shm]") {
  TestSegment seg;
  shm::Writer w(seg.name, writer_opts(64, 16, shm::Policy::sync));
  RawMap m(seg.name);
  auto* h = reinterpret_cast<shm::layout::Header*>(m.p);
  int lost = 0;
  for (int i = 0; i < 300 && lost == 0; ++i) {
    auto a = std::make_unique<shm::Reader>(seg.name, shm::Reader::Options{});
    auto b = std::make_unique<shm::Reader>(seg.name, shm::Reader::Options{});
    auto buf = w.begin_publish(soon());  // a stale retained_seq would hold the writer: bounded
    REQUIRE(buf.size() == 16);
    const std::uint64_t s = w.end_publish(1);
    for (auto* r : {a.get(), b.get()}) {
      auto got = r->acquire(soon());
      REQUIRE(got.status == shm::AcquireStatus::slot);
      REQUIRE(got.view.meta.seq == s);
      r->release();
    }
    std::atomic<int> go{0};
    auto leave = [&](std::unique_ptr<shm::Reader>& r) {
      go.fetch_add(1);
      while (go.load() < 2) {
      }
      r.reset();
    };
    std::thread ta([&] { leave(a); });
    std::thread tb([&] { leave(b); });
    ta.join();
    tb.join();
    if (h->retained_seq.load() != s) ++lost;
  }
  CHECK(lost == 0);
}

// A sequential reader killed without detaching no longer holds the writer back (it is
// reaped), so the writer overwrites what that reader had not read; its successor is told.
TEST_CASE("sequential: a reader attaching after its predecessor died is told how many slots it missed", "[shm]") {
  TestSegment seg;
  shm::create_segment(seg.name, {{4, 64, shm::Policy::sequential, shm::Checksum::none}, 0600});
  int ready[2], go[2];
  REQUIRE(::pipe(ready) == 0);
  REQUIRE(::pipe(go) == 0);
  const pid_t child = ::fork();  // before any thread of this test exists
  REQUIRE(child >= 0);
  if (child == 0) {
    ::close(ready[0]);
    ::close(go[1]);
    try {
      auto* r = new shm::Reader(seg.name, {});  // never destroyed: it "dies" attached
      [[maybe_unused]] auto n = ::write(ready[1], "r", 1);
      char c;
      if (::read(go[0], &c, 1) == 1)
        for (int i = 0; i < 2; ++i) {
          if (r->acquire(soon()).status != shm::AcquireStatus::slot) break;
          r->release();
        }
      r->acquire(shm::Clock::now());  // stores its cursor, as a reader about to wait does
    } catch (...) {
    }
    ::_exit(0);
  }
  ::close(ready[1]);
  ::close(go[0]);
  char c = 0;
  REQUIRE(::read(ready[0], &c, 1) == 1);
  {
    shm::Writer w(seg.name, {});
    w.publish(bytes("1"));
    w.publish(bytes("2"));
    REQUIRE(::write(go[1], "g", 1) == 1);
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    for (int i = 3; i <= 12; ++i) {  // seq 7 waits until the dead reader is reaped
      auto buf = w.begin_publish(soon());
      REQUIRE(buf.size() == 64);
      std::memcpy(buf.data(), std::to_string(i).data(), std::to_string(i).size());
      w.end_publish(std::to_string(i).size());
    }
  }
  ::close(ready[0]);
  ::close(go[1]);
  shm::Reader r(seg.name, {});
  CHECK(r.missed() == 6);  // seq 3..8 were overwritten; 9..12 are still there
  CHECK(r.skipped() == 6);
  CHECK(shm::inspect_segment(seg.name).readers.at(0).skipped == 6);
  auto got = r.acquire(soon());
  REQUIRE(got.status == shm::AcquireStatus::slot);
  CHECK(got.view.meta.seq == 9);
  CHECK(text(got.view) == "9");
}

TEST_CASE("adaptive spin: short waits grow the spin up to the cap, long waits bring it back to the base", "[shm]") {
  using std::chrono::microseconds;
  plh::shm::detail::AdaptiveSpin spin(microseconds(20), microseconds(250));
  CHECK(spin.budget() == microseconds(20));  // nothing seen yet: the base
  for (int i = 0; i < 64; ++i) spin.record(microseconds(60));  // 1 MiB frames every 60 us
  CHECK(spin.budget() >= microseconds(110));
  CHECK(spin.budget() <= microseconds(130));  // twice the average wait
  for (int i = 0; i < 64; ++i) spin.record(microseconds(200));
  CHECK(spin.budget() == microseconds(250));  // capped
  for (int i = 0; i < 64; ++i) spin.record(microseconds(1000));  // a 1 kHz sensor
  CHECK(spin.budget() == microseconds(20));  // spinning would not catch it: sleep at once
  spin.record(std::chrono::hours(1));  // one long stall is bounded and moves the average by 1/8
  for (int i = 0; i < 64; ++i) spin.record(microseconds(10));
  CHECK(spin.budget() >= microseconds(20));  // 2 x 10 us (and never below the base)
  CHECK(spin.budget() <= microseconds(21));
  plh::shm::detail::AdaptiveSpin off(microseconds(0), microseconds(0));
  off.record(microseconds(1));
  CHECK(off.budget() == microseconds(0));
}

TEST_CASE("adaptive spin: the bounds are clamped, so a huge cap cannot overflow the average", "[shm]") {
  using std::chrono::nanoseconds;
  plh::shm::detail::AdaptiveSpin spin(nanoseconds(-5), nanoseconds::max());
  CHECK(spin.budget() == nanoseconds(0));  // negative base: no spin; nothing seen yet
  for (int i = 0; i < 64; ++i) spin.record(nanoseconds::max());
  CHECK(spin.budget() == nanoseconds(0));  // average above the 1 s cap: back to the base
  for (int i = 0; i < 256; ++i) spin.record(std::chrono::milliseconds(100));
  CHECK(spin.budget() > std::chrono::milliseconds(150));
  CHECK(spin.budget() <= std::chrono::seconds(1));
  plh::shm::detail::AdaptiveSpin defaults;  // from WaitOptions{}
  CHECK(defaults.budget() == plh::shm::WaitOptions{}.spin);
}
