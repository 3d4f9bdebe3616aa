// plh-shm with --broker-register against a real plh-broker.
#include <fcntl.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <string>

#include "plh/shm/data_block.hpp"
#include "plh/shm/layout.hpp"
#include "process.hpp"
#include "test_broker_process.hpp"

using namespace std::chrono_literals;
using plh::test::BrokerProcess;
using plh::test::Child;

#if defined(PLH_BROKER_BIN) && defined(PLH_CTL_BIN)

namespace {

nlohmann::json list(const std::string& endpoint) {
  const auto r = plh::test::ctl({"list", "--json"}, endpoint);
  REQUIRE(r.code == 0);
  return nlohmann::json::parse(r.out);
}

const nlohmann::json* find_channel(const nlohmann::json& l, const std::string& name) {
  for (const auto& c : l.at("channels"))
    if (c.at("channel") == name) return &c;
  return nullptr;
}

}  // namespace

TEST_CASE("shm --broker-register: the segment is a channel with transport shm, checksum errors reach the writer",
          "[shm][e2e][broker]") {
  auto broker = BrokerProcess::start({"--heartbeat-interval", "100ms"});
  const std::string name = "shmb" + plh::test::unique_suffix();
  struct Cleanup {
    std::string n;
    ~Cleanup() { plh::shm::remove_segment(n); }
  } cleanup{name};

  Child writer = Child::spawn({PLH_SHM_BIN, "write", name, "--create", "--slots", "8", "--slot-size", "64",
                               "--checksum", "xxh3", "--no-batch", "--broker-register", "--broker", broker.endpoint});
  writer.write_stdin("one\ntwo\nthree\n");
  nlohmann::json channel;
  REQUIRE(plh::test::eventually([&] {
    const auto l = list(broker.endpoint);
    const auto* c = find_channel(l, name);
    if (c) channel = *c;
    return c != nullptr && c->at("metrics").at("messages") == 3;
  }));
  CHECK(channel["transport"] == "shm");
  CHECK(channel["shm_name"] == "/plh." + name);
  CHECK(channel["metadata"]["slots"] == 8);
  CHECK(channel["producer"]["pid"] == writer.pid());

  // Corrupt slot 2 behind the writer's back; a registered reader reports it.
  {
    const int fd = ::open(("/dev/shm/plh." + name).c_str(), O_RDWR);
    REQUIRE(fd >= 0);
    const char c = 'X';
    REQUIRE(::pwrite(fd, &c, 1, static_cast<off_t>(plh::shm::layout::kSlotsOffset + (128 + 64) + 128)) == 1);
    ::close(fd);
  }
  const auto r = plh::test::run({PLH_SHM_BIN, "read", name, "-n", "2", "--broker-register", "--broker",
                                 broker.endpoint});
  CHECK(r.out == "one\nthree\n");
  CHECK_THAT(r.err, Catch::Contains("checksum mismatch"));
  writer.close_stdin();
  const auto w = writer.wait(10s);
  CHECK(w.code == 0);
  CHECK_THAT(w.err, Catch::Contains("reported a checksum error in slot seq 2"));
  // Deregistered at exit.
  CHECK(find_channel(list(broker.endpoint), name) == nullptr);
}

TEST_CASE("shm --broker-register with no broker is exit 5 before any data is taken", "[shm][e2e][broker]") {
  const std::string name = "shmb" + plh::test::unique_suffix();
  const auto r = plh::test::run({PLH_SHM_BIN, "write", name, "--create", "--broker-register", "--broker",
                                 "tcp://127.0.0.1:1", "--broker-timeout", "300ms"},
                                "data\n");
  plh::shm::remove_segment(name);
  CHECK(r.code == 5);
  CHECK_THAT(r.err, Catch::StartsWith("plh-shm: error: "));
}

#if defined(PLH_SUB_BIN)
TEST_CASE("plh-sub on a shm channel names the working plh-shm command", "[shm][e2e][broker]") {
  // Issue 13 bug 1: the hint said 'plh-shm read /plh.NAME', itself a usage error.
  auto broker = BrokerProcess::start({"--heartbeat-interval", "100ms"});
  const std::string name = "shmh" + plh::test::unique_suffix();
  struct Cleanup {
    std::string n;
    ~Cleanup() { plh::shm::remove_segment(n); }
  } cleanup{name};
  Child writer = Child::spawn({PLH_SHM_BIN, "write", name, "--create", "--slots", "8", "--slot-size", "64",
                               "--policy", "latest", "--broker-register", "--broker", broker.endpoint});
  REQUIRE(plh::test::eventually([&] { return find_channel(list(broker.endpoint), name) != nullptr; }));
  const auto r = plh::test::run({PLH_SUB_BIN, name, "--broker", broker.endpoint});
  CHECK(r.code == 1);
  CHECK_THAT(r.err, Catch::Contains("uses transport 'shm'; read it with plh-shm read " + name + "\n"));
  // The hint itself works.
  const auto info = plh::test::run({PLH_SHM_BIN, "info", name});
  CHECK(info.code == 0);
  writer.close_stdin();
  CHECK(writer.wait(10s).code == 0);
}
#endif

#endif
