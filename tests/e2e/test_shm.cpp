// plh-shm end to end: real processes, real shared memory, real pipes.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cstring>
#include <thread>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "plh/shm/data_block.hpp"
#include "plh/shm/layout.hpp"
#include "process.hpp"
#include "skip.hpp"

using namespace std::chrono_literals;
using plh::test::Child;
using plh::test::TempDir;
namespace shm = plh::shm;

namespace {

const std::string kShm = PLH_SHM_BIN;
const std::string kPython = "/usr/bin/python3";

struct TestSegment {
  std::string name = "shme" + plh::test::unique_suffix();
  ~TestSegment() { shm::remove_segment(name); }
};

std::string write_file(const TempDir& dir, const std::string& file, const std::string& content) {
  const std::string path = dir.file(file);
  std::ofstream(path, std::ios::binary) << content;
  return path;
}

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

// A consumer that sleeps a random 0..max_ms per line: the reader behind it is slow.
std::string slow_consumer(int max_ms) {
  return kPython + " -c 'import sys,time,random\nfor l in sys.stdin:\n time.sleep(random.random()*" +
         std::to_string(max_ms) + "/1000.0)\n sys.stdout.write(l)\n sys.stdout.flush()'";
}

std::size_t readers_of(const std::string& name) { return shm::inspect_segment(name).readers.size(); }

// Line i of a test stream: index, then a filler that depends on i.
std::string numbered_line(int i, std::size_t len) {
  char head[16];
  std::snprintf(head, sizeof head, "%05d:", i);
  std::string s = head;
  s.append(len - s.size(), static_cast<char>('a' + i % 26));
  return s;
}

// The bytes of a segment, mapped behind the tools' backs to play a hostile writer.
struct RawMap {
  int fd = -1;
  std::byte* p = nullptr;
  std::size_t n = 0;
  explicit RawMap(const std::string& name) {
    fd = ::open(("/dev/shm/plh." + name).c_str(), O_RDWR);
    REQUIRE(fd >= 0);
    struct stat st {};
    REQUIRE(::fstat(fd, &st) == 0);
    n = static_cast<std::size_t>(st.st_size);
    p = static_cast<std::byte*>(::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
    REQUIRE(p != MAP_FAILED);
  }
  ~RawMap() {
    ::munmap(p, n);
    ::close(fd);
  }
  shm::layout::Header* header() const { return reinterpret_cast<shm::layout::Header*>(p); }
};

}  // namespace

TEST_CASE("shm latest: two racing slow readers see increasing seqs, intact payloads and the last slot", "[shm][e2e]") {
  TestSegment seg;
  TempDir dir;
  REQUIRE(plh::test::run({kShm, "create", seg.name, "--slots", "32", "--slot-size", "4096", "--policy", "latest",
                          "--checksum", "xxh3"})
              .code == 0);
  std::string input;
  for (int i = 1; i <= 500; ++i) input += numbered_line(i, 4000) + "\n";
  const std::string in = write_file(dir, "in", input);
  std::vector<Child> readers;
  for (int k = 0; k < 2; ++k)
    readers.push_back(Child::shell("set -o pipefail; " + kShm + " read " + seg.name + " -f json | " + slow_consumer(2) + " > " +
                                   dir.file("out" + std::to_string(k))));
  REQUIRE(plh::test::eventually([&] { return readers_of(seg.name) == 2; }));
  Child writer = Child::spawn({kShm, "write", seg.name, "--no-batch"}, {}, in);
  for (int k = 0; k < 2; ++k) {
    const auto res = readers[static_cast<std::size_t>(k)].wait(60s);
    INFO(res.err);
    REQUIRE(res.code == 0);
    std::uint64_t prev = 0;
    std::size_t n = 0;
    for (const auto& l : lines_of(slurp(dir.file("out" + std::to_string(k))))) {
      const auto j = nlohmann::json::parse(l);
      const auto seq = j.at("seq").get<std::uint64_t>();
      CHECK(seq > prev);
      CHECK(j.at("data").get<std::string>() == numbered_line(static_cast<int>(seq), 4000));
      prev = seq;
      ++n;
    }
    CHECK(prev == 500);
    CHECK(n < 500);  // it really was behind and skipped
  }
  CHECK(writer.wait(10s).code == 0);
  const auto info = shm::inspect_segment(seg.name);
  CHECK(info.write_seq == 500);
}

TEST_CASE("shm sequential: a slow reader gets all 100 slots in order, the writer waited", "[shm][e2e]") {
  TestSegment seg;
  TempDir dir;
  REQUIRE(plh::test::run({kShm, "create", seg.name, "--slots", "8", "--slot-size", "20000"}).code == 0);
  std::string input;
  for (int i = 1; i <= 100; ++i) input += numbered_line(i, 16000) + "\n";
  const std::string in = write_file(dir, "in", input);
  Child reader = Child::shell("set -o pipefail; " + kShm + " read " + seg.name + " | " + slow_consumer(20) + " > " + dir.file("out"));
  REQUIRE(plh::test::eventually([&] { return readers_of(seg.name) == 1; }));
  Child writer = Child::spawn({kShm, "write", seg.name, "--no-batch"}, {}, in);
  const auto res = reader.wait(60s);
  REQUIRE(res.code == 0);
  CHECK(writer.wait(10s).code == 0);
  CHECK(slurp(dir.file("out")) == input);
  const auto info = shm::inspect_segment(seg.name);
  CHECK(info.write_seq == 100);
  CHECK(info.writer_waits > 0);
}

TEST_CASE("shm sync: three readers each get every slot in order", "[shm][e2e]") {
  TestSegment seg;
  TempDir dir;
  REQUIRE(plh::test::run({kShm, "create", seg.name, "--slots", "8", "--slot-size", "512", "--policy", "sync",
                          "--checksum", "blake2b"})
              .code == 0);
  std::string input;
  for (int i = 1; i <= 2000; ++i) input += numbered_line(i, 40) + "\n";
  const std::string in = write_file(dir, "in", input);
  std::vector<Child> readers;
  for (int k = 0; k < 3; ++k)
    readers.push_back(Child::shell("exec " + kShm + " read " + seg.name + " > " + dir.file("out" + std::to_string(k))));
  REQUIRE(plh::test::eventually([&] { return readers_of(seg.name) == 3; }));
  Child writer = Child::spawn({kShm, "write", seg.name}, {}, in);
  for (int k = 0; k < 3; ++k) {
    const auto res = readers[static_cast<std::size_t>(k)].wait(30s);
    INFO(res.err);
    CHECK(res.code == 0);
    CHECK(slurp(dir.file("out" + std::to_string(k))) == input);
  }
  CHECK(writer.wait(10s).code == 0);
}

TEST_CASE("shm: a writer killed with SIGKILL ends its readers with exit 1, a new writer continues", "[shm][e2e]") {
  TestSegment seg;
  REQUIRE(plh::test::run({kShm, "create", seg.name, "--slots", "8", "--slot-size", "64", "--policy", "sync"}).code == 0);
  std::vector<Child> readers;
  for (int k = 0; k < 2; ++k)
    readers.push_back(Child::spawn({kShm, "read", seg.name, "--heartbeat-timeout", "1s", "--line-buffered"}));
  REQUIRE(plh::test::eventually([&] { return readers_of(seg.name) == 2; }));
  Child writer = Child::spawn({kShm, "write", seg.name, "--no-batch"});
  writer.write_stdin("a\nb\n");
  for (auto& r : readers) {
    CHECK(r.read_line(10s) == std::optional<std::string>("a"));
    CHECK(r.read_line(10s) == std::optional<std::string>("b"));
  }
  const auto pid = writer.pid();
  writer.kill(SIGKILL);
  writer.wait(5s);
  const auto t0 = std::chrono::steady_clock::now();
  for (auto& r : readers) {
    const auto res = r.wait(10s);
    CHECK(res.code == 1);
    CHECK_THAT(res.err, Catch::Contains("plh-shm: error: writer of '" + seg.name + "' (pid " + std::to_string(pid) +
                                        ") is gone"));
  }
  CHECK(std::chrono::steady_clock::now() - t0 < 6s);  // heartbeat timeout 1s, pid check every 100 ms; slack for loaded CI
  // A new writer re-attaches and continues the sequence; a new reader gets the rest.
  const auto w2 = plh::test::run({kShm, "write", seg.name, "--no-batch"}, "c\nd\n");
  REQUIRE(w2.code == 0);
  const auto info = shm::inspect_segment(seg.name);
  CHECK(info.write_seq == 4);
  const auto r2 = plh::test::run({kShm, "read", seg.name, "-f", "json"});
  REQUIRE(r2.code == 0);
  const auto got = lines_of(r2.out);
  REQUIRE(got.size() == 2);
  CHECK(nlohmann::json::parse(got[0])["seq"] == 3);
  CHECK(nlohmann::json::parse(got[0])["data"] == "c");
  CHECK(nlohmann::json::parse(got[1])["seq"] == 4);
}

TEST_CASE("shm: a reader killed with SIGKILL never blocks the writer", "[shm][e2e]") {
  for (const std::string policy : {"sequential", "sync"}) {
    INFO(policy);
    TestSegment seg;
    TempDir dir;
    REQUIRE(plh::test::run({kShm, "create", seg.name, "--slots", "4", "--slot-size", "40000", "--policy", policy})
                .code == 0);
    std::string input;
    for (int i = 1; i <= 60; ++i) input += numbered_line(i, 32000) + "\n";
    const std::string in = write_file(dir, "in", input);
    // This reader's stdout is never drained: it stalls once the pipe is full.
    Child stalled = Child::spawn({kShm, "read", seg.name});
    REQUIRE(plh::test::eventually([&] { return readers_of(seg.name) == 1; }));
    std::optional<Child> good;
    if (policy == "sync") {
      good.emplace(Child::shell("exec " + kShm + " read " + seg.name + " > " + dir.file("good")));
      REQUIRE(plh::test::eventually([&] { return readers_of(seg.name) == 2; }));
    }
    Child writer = Child::spawn({kShm, "write", seg.name, "--no-batch"}, {}, in);
    // The writer is held by the stalled reader...
    REQUIRE(plh::test::eventually([&] { return shm::inspect_segment(seg.name).writer_waits > 0; }));
    CHECK(writer.running());
    // ...until that reader dies.
    stalled.kill(SIGKILL);
    stalled.wait(5s);
    if (good) {  // it gets everything
      const auto g = good->wait(20s);
      CHECK(g.code == 0);
      CHECK(slurp(dir.file("good")) == input);
    }
    const auto res = writer.wait(20s);
    CHECK(res.code == 0);
    CHECK_THAT(res.err, Catch::Contains("is gone; released its cursor"));
  }
}

TEST_CASE("shm: a corrupted slot is reported as a checksum error and not output", "[shm][e2e]") {
  TestSegment seg;
  REQUIRE(plh::test::run({kShm, "write", seg.name, "--create", "--slots", "8", "--slot-size", "64", "--checksum",
                          "xxh3", "--no-batch"},
                         "one\ntwo\nthree\nfour\n")
              .code == 0);
  {
    const int fd = ::open(("/dev/shm/plh." + seg.name).c_str(), O_RDWR);
    REQUIRE(fd >= 0);
    const std::size_t stride = 128 + 64;
    const off_t at = static_cast<off_t>(shm::layout::kSlotsOffset + 2 * stride + 128);  // seq 3, first byte
    char c = 'T';
    REQUIRE(::pwrite(fd, &c, 1, at) == 1);
    ::close(fd);
  }
  const auto r = plh::test::run({kShm, "read", seg.name});
  CHECK(r.code == 1);
  CHECK(r.out == "one\ntwo\nfour\n");
  CHECK_THAT(r.err, Catch::Contains("checksum mismatch (xxh3) in slot seq 3"));
}

TEST_CASE("shm: write | read pipeline is byte-identical, in every framing", "[shm][e2e]") {
  TestSegment seg;
  TempDir dir;
  std::string input;
  for (int i = 0; i < 100000; ++i) input += numbered_line(i, 41) + "\n";
  const std::string in = write_file(dir, "in", input);
  REQUIRE(plh::test::run({kShm, "create", seg.name, "--slots", "16", "--slot-size", "64K"}).code == 0);
  const auto res = plh::test::run_shell("(" + kShm + " write " + seg.name + " < " + in + " & " + kShm + " read " +
                                        seg.name + " > " + dir.file("out") + "; wait)");
  REQUIRE(res.code == 0);
  std::ifstream outf(dir.file("out"), std::ios::binary);
  std::string out((std::istreambuf_iterator<char>(outf)), {});
  CHECK(out.size() == input.size());
  CHECK(out == input);

  for (const std::string fmt : {"zero", "len", "raw"}) {
    INFO(fmt);
    TestSegment s2;
    REQUIRE(plh::test::run({kShm, "create", s2.name, "--slots", "4", "--slot-size", "1000"}).code == 0);
    std::string data;
    if (fmt == "zero") data = std::string("a\0bb\0\0ccc\0", 10);
    if (fmt == "len") data = std::string("\0\0\0\x02hi\0\0\0\0\0\0\0\x03xyz", 17);
    if (fmt == "raw") for (int i = 0; i < 5000; ++i) data += static_cast<char>(i * 7);
    const std::string f = write_file(dir, "in-" + fmt, data);
    const auto r = plh::test::run_shell("(" + kShm + " write " + s2.name + " -f " + fmt + " < " + f + " & " + kShm +
                                        " read " + s2.name + " -f " + fmt + " > " + dir.file("out-" + fmt) + "; wait)");
    REQUIRE(r.code == 0);
    std::ifstream o(dir.file("out-" + fmt), std::ios::binary);
    CHECK(std::string((std::istreambuf_iterator<char>(o)), {}) == data);
  }
}

TEST_CASE("shm: read -f json shows slot metadata, --from latest, -n, -W", "[shm][e2e]") {
  TestSegment seg;
  REQUIRE(plh::test::run({kShm, "write", seg.name, "--create", "--policy", "latest", "--slots", "4", "--slot-size",
                          "128", "--type-hash", "0x10", "--dims", "640,480,3", "--no-batch"},
                         "x\ny\nz\n")
              .code == 0);
  auto r = plh::test::run({kShm, "read", seg.name, "-f", "json", "--from", "latest"});
  REQUIRE(r.code == 0);
  const auto j = nlohmann::json::parse(lines_of(r.out).at(0));
  CHECK(j["seq"] == 3);
  CHECK(j["data"] == "z");
  CHECK(j["type_hash"] == 16);
  CHECK(j["dims"] == nlohmann::json::array({640, 480, 3, 0}));
  CHECK(j["channel"] == seg.name);
  r = plh::test::run({kShm, "read", seg.name, "-n", "2"});
  CHECK(r.code == 0);
  CHECK(r.out == "x\ny\n");
  // A live writer that sends nothing: -W ends the reader with exit 3.
  Child writer = Child::spawn({kShm, "write", seg.name});
  REQUIRE(plh::test::eventually([&] { return shm::inspect_segment(seg.name).writer_pid == writer.pid(); }));
  r = plh::test::run({kShm, "read", seg.name, "--from", "latest", "-n", "5", "-W", "300ms"});
  CHECK(r.code == 3);
  writer.close_stdin();
  CHECK(writer.wait(10s).code == 0);
}

TEST_CASE("shm: info and ls describe segments, writer and readers, also as JSON", "[shm][e2e]") {
  TestSegment seg;
  REQUIRE(plh::test::run({kShm, "create", seg.name, "--slots", "16", "--slot-size", "1K", "--policy", "sync",
                          "--mode", "0660"})
              .code == 0);
  // Group-writable: attached only when --mode says so.
  CHECK(plh::test::run({kShm, "read", seg.name, "-W", "1s"}).code == 6);
  Child writer = Child::spawn({kShm, "write", seg.name, "--no-batch", "--mode", "0660"});
  Child reader = Child::spawn({kShm, "read", seg.name, "--line-buffered", "--mode", "0660"});
  writer.write_stdin("1\n2\n3\n");
  CHECK(reader.read_line() == std::optional<std::string>("1"));
  auto r = plh::test::run({kShm, "info", seg.name, "--json"});
  REQUIRE(r.code == 0);
  auto j = nlohmann::json::parse(r.out);
  CHECK(j["slots"] == 16);
  CHECK(j["slot_size"] == 1024);
  CHECK(j["policy"] == "sync");
  CHECK(j["mode"] == "0660");
  CHECK(j["writer"]["pid"] == writer.pid());
  CHECK(j["writer"]["alive"] == true);
  REQUIRE(j["readers"].size() == 1);
  CHECK(j["readers"][0]["pid"] == reader.pid());
  r = plh::test::run({kShm, "info", seg.name});
  CHECK(r.code == 0);
  CHECK_THAT(r.out, Catch::Contains("policy sync"));
  CHECK_THAT(r.out, Catch::Contains("pid " + std::to_string(writer.pid()) + " alive"));
  r = plh::test::run({kShm, "ls", "--json"});
  REQUIRE(r.code == 0);
  bool found = false;
  for (const auto& e : nlohmann::json::parse(r.out))
    if (e["name"] == seg.name) found = e["readers"].size() == 1;
  CHECK(found);
  r = plh::test::run({kShm, "ls"});
  CHECK_THAT(r.out, Catch::Contains(seg.name));
  writer.close_stdin();
  CHECK(writer.wait().code == 0);
  const auto rr = reader.wait();
  CHECK(rr.code == 0);
  CHECK(rr.out == "2\n3\n");
}

TEST_CASE("shm sync: sixteen reader processes at once each get everything", "[shm][e2e]") {
  TestSegment seg;
  TempDir dir;
  REQUIRE(plh::test::run({kShm, "create", seg.name, "--slots", "4", "--slot-size", "256", "--policy", "sync"}).code == 0);
  std::string input;
  for (int i = 1; i <= 300; ++i) input += numbered_line(i, 30) + "\n";
  const std::string in = write_file(dir, "in", input);
  std::vector<Child> readers;
  for (int k = 0; k < 16; ++k)
    readers.push_back(Child::shell("exec " + kShm + " read " + seg.name + " > " + dir.file("out" + std::to_string(k))));
  Child writer = Child::spawn({kShm, "write", seg.name, "--no-batch", "-w", "16"}, {}, in);
  for (int k = 0; k < 16; ++k) {
    const auto res = readers[static_cast<std::size_t>(k)].wait(30s);
    INFO(k << ": " << res.err);
    CHECK(res.code == 0);
    CHECK(slurp(dir.file("out" + std::to_string(k))) == input);
  }
  CHECK(writer.wait(10s).code == 0);
}

TEST_CASE("shm: SIGTERM ends the writer with 143 and its readers with 0 after the last slot", "[shm][e2e]") {
  TestSegment seg;
  REQUIRE(plh::test::run({kShm, "create", seg.name, "--slots", "4", "--slot-size", "64"}).code == 0);
  Child writer = Child::spawn({kShm, "write", seg.name});
  Child reader = Child::spawn({kShm, "read", seg.name, "--line-buffered"});
  writer.write_stdin("last words\n");
  CHECK(reader.read_line(10s) == std::optional<std::string>("last words"));
  writer.kill(SIGTERM);
  CHECK(writer.wait(10s).code == 143);
  const auto r = reader.wait(10s);
  CHECK(r.code == 0);
  CHECK(shm::inspect_segment(seg.name).ended);
}

// ------------------------------------------------------------------ hostile segments

TEST_CASE("shm: a segment planted by another user is refused by writer and reader, even as root", "[shm][e2e][security]") {
  if (::geteuid() != 0) plh::test::skip("needs root to create a second Unix user");
  const std::string user = "plhtest2";
  if (plh::test::run({"/usr/bin/id", "-u", user}).code != 0)
    plh::test::run({"/usr/sbin/useradd", "-M", "-r", "-s", "/usr/sbin/nologin", user});  // may race another test: look again
  const auto id = plh::test::run({"/usr/bin/id", "-u", user});
  if (id.code != 0) plh::test::skip("could not create the user " + user);
  const std::string uid = lines_of(id.out).at(0);
  TestSegment seg;
  const std::string path = "/dev/shm/plh." + seg.name;
  // The other user squats the name first: a real plh segment, mode 0666.
  const auto c = plh::test::run({"/usr/bin/setpriv", "--reuid=" + user, "--regid=" + user, "--clear-groups", kShm,
                                 "create", seg.name, "--slots", "4", "--slot-size", "64", "--mode", "0666"});
  REQUIRE(c.code == 0);
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  REQUIRE(std::to_string(st.st_uid) == uid);
  const std::string refused = "plh-shm: error: segment " + path + " is owned by uid " + uid + " (" + user +
                              ") with mode 0666; refusing it";
  // root's writer does not write into it (the old one did, and the other user read it).
  auto w = plh::test::run({kShm, "write", seg.name, "--create", "--slots", "4", "--slot-size", "64"}, "secret\n");
  CHECK(w.code == 6);
  CHECK_THAT(w.err, Catch::Contains(refused));
  w = plh::test::run({kShm, "write", seg.name}, "secret\n");
  CHECK(w.code == 6);
  CHECK(shm::inspect_segment(seg.name).write_seq == 0);
  // Nor does a reader take its data.
  auto r = plh::test::run({kShm, "read", seg.name, "-W", "2s"});
  CHECK(r.code == 6);
  CHECK_THAT(r.err, Catch::Contains(refused + ": it belongs to another user; --owner " + user + " trusts it"));
  // Trusting the owner is not enough while anybody may write it; accepting both is.
  r = plh::test::run({kShm, "read", seg.name, "--owner", user, "-W", "2s"});
  CHECK(r.code == 6);
  CHECK_THAT(r.err, Catch::Contains("others may write it; --mode 0666 accepts that"));
  r = plh::test::run({kShm, "read", seg.name, "--owner", uid, "--mode", "0666", "-W", "200ms"});
  CHECK(r.code == 3);  // attached, nothing to read
  // The same segment as a deliberate share: group-writable, owned by that user.
  REQUIRE(::chmod(path.c_str(), 0660) == 0);
  r = plh::test::run({kShm, "read", seg.name, "--owner", user, "--mode", "0660", "-W", "200ms"});
  CHECK(r.code == 3);
}

TEST_CASE("shm: a segment truncated under a reader and a writer ends both with exit 1, not SIGBUS", "[shm][e2e][security]") {
  TestSegment seg;
  REQUIRE(plh::test::run({kShm, "create", seg.name, "--slots", "4", "--slot-size", "4096"}).code == 0);
  Child writer = Child::spawn({kShm, "write", seg.name, "--no-batch"});
  Child reader = Child::spawn({kShm, "read", seg.name, "--line-buffered"});
  writer.write_stdin("one\n");
  REQUIRE(reader.read_line(10s) == std::optional<std::string>("one"));
  REQUIRE(::truncate(("/dev/shm/plh." + seg.name).c_str(), 0) == 0);
  const auto r = reader.wait(10s);  // noticed while it waits (the old one died of SIGBUS: 135)
  CHECK(r.code == 1);
  CHECK_THAT(r.err, Catch::Contains("plh-shm: error: segment '" + seg.name + "' was truncated under this reader"));
  writer.write_stdin("two\n");
  const auto w = writer.wait(10s);
  CHECK(w.code == 1);
  CHECK_THAT(w.err, Catch::Contains("plh-shm: error: segment '" + seg.name + "' was truncated under this writer"));
}

TEST_CASE("shm: a writer whose sequence wraps to 0 stops the reader with an error within -W", "[shm][e2e][security]") {
  TestSegment seg;
  REQUIRE(plh::test::run({kShm, "create", seg.name, "--slots", "4", "--slot-size", "64", "--policy", "latest"}).code == 0);
  {
    shm::Writer w(seg.name, {});
    w.publish({reinterpret_cast<const std::byte*>("a"), 1});
    w.detach();  // no end of stream: the reader waits for more
  }
  Child reader = Child::spawn({kShm, "read", seg.name, "-W", "5s", "--line-buffered"});
  REQUIRE(reader.read_line(10s) == std::optional<std::string>("a"));
  RawMap m(seg.name);
  m.header()->write_seq.store(UINT64_MAX);  // the next seq would be 0, which an empty slot holds
  const auto r = reader.wait(10s);  // the old reader printed millions of empty lines and ignored -W
  CHECK(r.code == 1);
  CHECK(r.out.empty());
  CHECK_THAT(r.err, Catch::Contains("plh-shm: error: writer of '" + seg.name +
                                    "' broke the protocol: write_seq 18446744073709551615 is beyond any real sequence"));
}

// Under sequential/sync the reader prints packed records straight from the slot, which a
// hostile writer may change meanwhile: a length checked and then read again could be
// huge the second time (the old reader copied megabytes out of a 12 KiB mapping).
TEST_CASE("shm: packed-record lengths flipped while the reader reads them never take it out of bounds", "[shm][e2e][security]") {
  TestSegment seg;
  TempDir dir;
  shm::Writer::Options wo;
  wo.create = true;
  wo.create_options.geometry = {1, 1024, shm::Policy::sequential, shm::Checksum::none};
  shm::Writer w(seg.name, wo);
  Child reader = Child::shell("exec " + kShm + " read " + seg.name + " > " + dir.file("out"));
  REQUIRE(plh::test::eventually([&] { return readers_of(seg.name) == 1; }));
  RawMap m(seg.name);
  auto* payload = m.p + shm::layout::kSlotsOffset + shm::layout::kSlotMetaSize;
  constexpr std::uint32_t kRecords = 64;
  std::atomic<bool> stop{false};
  std::thread flipper([&] {
    // Read byte by byte (or torn) the length mixes the bytes of 5 (05 00 00 00) and of
    // this value (05 ff ff 7f): every mix but 5 itself is far out of bounds, so "hello"
    // is the only record a correct reader can print.
    const std::uint32_t huge = 0x7fffff05;
    while (!stop.load(std::memory_order_relaxed))
      for (std::uint32_t i = 0; i < kRecords; ++i) {
        std::byte* at = payload + 4 + 9 * i;  // unaligned: plain byte copies
        std::uint32_t v;
        std::memcpy(&v, at, 4);
        v = v == 5 ? huge : 5;
        std::memcpy(at, &v, 4);
      }
  });
  bool held = false;  // the reader stopped releasing slots (the old one died of SIGSEGV)
  for (int s = 0; s < 2000 && !held; ++s) {
    try {
      auto buf = w.begin_publish(shm::Clock::now() + 30s);
      const std::uint32_t count = kRecords, five = 5;
      std::memcpy(buf.data(), &count, 4);
      for (std::uint32_t i = 0; i < kRecords; ++i) {
        std::memcpy(buf.data() + 4 + 9 * i, &five, 4);
        std::memcpy(buf.data() + 8 + 9 * i, "hello", 5);
      }
      w.end_publish(4 + 9 * kRecords, 0, 0, {}, shm::layout::kSlotPacked);
    } catch (const plh::TimeoutError&) {
      held = !reader.running();  // dead; a live one is only starved on a loaded machine: stop here
      break;
    }
  }
  stop = true;
  flipper.join();
  w.end_stream();
  CHECK_FALSE(held);
  const auto r = reader.wait(60s);
  INFO(r.err.substr(0, 2000));
  CHECK(r.code <= 1);  // 1: some slots were reported as out of bounds; never a signal
  for (const auto& l : lines_of(slurp(dir.file("out")))) {
    if (l != "hello") {
      FAIL_CHECK("unexpected output line of " << l.size() << " bytes");
      break;
    }
  }
  if (r.code == 1) CHECK_THAT(r.err, Catch::Contains("has a record out of bounds"));
}

TEST_CASE("shm sequential: a reader killed with SIGKILL and restarted is told what it missed", "[shm][e2e]") {
  TestSegment seg;
  REQUIRE(plh::test::run({kShm, "create", seg.name, "--slots", "4", "--slot-size", "64"}).code == 0);
  Child writer = Child::spawn({kShm, "write", seg.name, "--no-batch"});
  Child first = Child::spawn({kShm, "read", seg.name, "--line-buffered"});
  writer.write_stdin("1\n2\n");
  REQUIRE(first.read_line(10s) == std::optional<std::string>("1"));
  REQUIRE(first.read_line(10s) == std::optional<std::string>("2"));
  REQUIRE(plh::test::eventually([&] { return shm::inspect_segment(seg.name).readers.at(0).cursor == 2; }));
  first.kill(SIGKILL);
  first.wait(5s);
  std::string more;
  for (int i = 3; i <= 20; ++i) more += std::to_string(i) + "\n";
  writer.write_stdin(more);  // held at seq 7 until the dead reader is reaped, then carries on
  REQUIRE(plh::test::eventually([&] { return shm::inspect_segment(seg.name).write_seq == 20; }));
  const auto r = plh::test::run({kShm, "read", seg.name, "--stats", "-n", "4"});
  CHECK(r.out == "17\n18\n19\n20\n");
  CHECK(r.code == 1);  // the old reader said nothing and exited 0
  CHECK_THAT(r.err, Catch::Contains("missed 14 slots of '" + seg.name + "' (seq 3 to 16)"));
  CHECK_THAT(r.err, Catch::Contains("skipped=14 missed=14"));
  CHECK_THAT(r.err, Catch::Contains("plh-shm: error: 14 slot(s) of '" + seg.name +
                                    "' were overwritten before this reader got them (policy sequential)"));
  writer.close_stdin();
  CHECK(writer.wait(10s).code == 0);
}

TEST_CASE("shm: read --stats prints its counters also when it exits 1 because the writer is gone", "[shm][e2e][stats]") {
  // Issue 13 bug 6: the stats line used to be printed only on the exit-0/3 paths.
  TestSegment seg;
  REQUIRE(plh::test::run({kShm, "create", seg.name, "--slots", "8", "--slot-size", "64", "--policy", "sync"}).code == 0);
  Child reader = Child::spawn({kShm, "read", seg.name, "--heartbeat-timeout", "1s", "--line-buffered", "--stats"});
  REQUIRE(plh::test::eventually([&] { return readers_of(seg.name) == 1; }));
  Child writer = Child::spawn({kShm, "write", seg.name, "--no-batch"});
  writer.write_stdin("a\n");
  CHECK(reader.read_line(10s) == std::optional<std::string>("a"));
  writer.kill(SIGKILL);
  writer.wait(5s);
  const auto res = reader.wait(10s);
  CHECK(res.code == 1);
  CHECK_THAT(res.err, Catch::Contains("plh-shm: stats: messages=1 "));
  CHECK_THAT(res.err, Catch::Contains("is gone"));
}

TEST_CASE("shm: write --create on an existing segment compares only the geometry options given", "[shm][e2e]") {
  // Issue 13 bug 2: --create compared the segment with defaults the user never typed (exit 6).
  TestSegment seg;
  REQUIRE(plh::test::run({kShm, "create", seg.name, "--slots", "8", "--slot-size", "64", "--policy", "latest"}).code == 0);
  auto r = plh::test::run({kShm, "write", seg.name, "--create"}, "x\n");
  INFO(r.err);
  CHECK(r.code == 0);
  r = plh::test::run({kShm, "write", seg.name, "--create", "--slots", "8", "--policy", "latest"}, "y\n");
  CHECK(r.code == 0);
  r = plh::test::run({kShm, "write", seg.name, "--create", "--slots", "16"}, "z\n");
  CHECK(r.code == 6);
  CHECK_THAT(r.err, Catch::Contains("exists with 8 slots"));
}

TEST_CASE("shm: a writer held by backpressure says that it waits for readers", "[shm][e2e]") {
  // Issue 13 bug 5: a full sequential ring with no reader blocked silently.
  TestSegment seg;
  Child writer = Child::spawn({kShm, "write", seg.name, "--create", "--slots", "2", "--slot-size", "64", "--no-batch", "-v"});
  std::string in;
  for (int i = 0; i < 10; ++i) in += std::to_string(i) + "\n";
  writer.write_stdin(in);
  writer.close_stdin();
  REQUIRE(plh::test::eventually([&] {
    try {
      return shm::inspect_segment(seg.name).writer_waits > 0;
    } catch (const std::exception&) {
      return false;  // not created yet
    }
  }));
  // A reader lets it finish; by then it has said why it waited.
  const auto r = plh::test::run({kShm, "read", seg.name});
  const auto w = writer.wait(10s);
  CHECK(w.code == 0);
  CHECK_THAT(w.err, Catch::Contains("is full: the writer waits for its readers to take slots (policy sequential"));
  std::size_t notes = 0;  // once (and once more as a warning after a second), not per slot
  for (auto at = w.err.find("is full:"); at != std::string::npos; at = w.err.find("is full:", at + 1)) ++notes;
  CHECK(notes <= 2);
  (void)r;
}
