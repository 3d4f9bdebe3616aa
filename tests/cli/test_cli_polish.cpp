// Issue 13 (the first hour with plh), argument-level bugs: non-positive counts, rates and
// sizes are usage errors (exit 2); -v/-q/--log-* are accepted after a subcommand; channel
// names may start with a digit and hold UTF-8 letters, and the error echoes the input
// without mangling it.
#include <catch2/catch.hpp>

#include <fstream>
#include <iterator>
#include <sstream>

#include "cli_cases.hpp"
#include "process.hpp"

#if defined(PLH_PUB_BIN) && defined(PLH_SUB_BIN) && defined(PLH_SHM_BIN) && defined(PLH_CTL_BIN)

using plh::test::Case;
using plh::test::check_case;

TEST_CASE("zero or negative counts, rates and sizes are usage errors", "[cli][numbers]") {
  const std::vector<Case> sub = {
      {{"lab.temp", "-n", "-3"}, 2, "plh-sub: error: --count: must be a positive number, not '-3'"},
      {{"lab.temp", "-n", "0"}, 2, "plh-sub: error: --count: must be a positive number, not '0'"},
      {{"lab.temp", "--hwm", "-2"}, 2, "plh-sub: error: --hwm: must be a positive number, not '-2'"},
      {{"--connect", "tcp://127.0.0.1:1", "--max-queue", "0K"}, 2, "plh-sub: error: --max-queue must be positive"},
  };
  for (const auto& c : sub) check_case(PLH_SUB_BIN, "plh-sub", c);
  const std::vector<Case> pub = {
      {{"lab.temp", "-n", "-1"}, 2, "plh-pub: error: --count: must be a positive number, not '-1'"},
      {{"lab.temp", "-n", "0"}, 2, "plh-pub: error: --count: must be a positive number, not '0'"},
      {{"lab.temp", "--rate", "0"}, 2, "plh-pub: error: --rate: must be a positive number, not '0'"},
      {{"lab.temp", "--rate", "-0.5"}, 2, "plh-pub: error: --rate: must be a positive number, not '-0.5'"},
      {{"--no-broker", "--batch-size", "0"}, 2, "plh-pub: error: --batch-size must be positive"},
  };
  for (const auto& c : pub) check_case(PLH_PUB_BIN, "plh-pub", c);
  const std::vector<Case> shm = {
      {{"read", "nope.seg", "-n", "-3"}, 2, "plh-shm: error: --count: must be a positive number, not '-3'"},
      {{"read", "nope.seg", "-n", "0"}, 2, "plh-shm: error: --count: must be a positive number, not '0'"},
      {{"create", "nope.seg", "--slots", "4", "--slot-size", "0"}, 2, "plh-shm: error: --slot-size must be positive"},
  };
  for (const auto& c : shm) check_case(PLH_SHM_BIN, "plh-shm", c);
  check_case(PLH_CTL_BIN, "plh-ctl", {{"stats", "--watch", "--interval", "0s"}, 2, "plh-ctl: error: --interval must be positive"});
}

TEST_CASE("log options are accepted after the subcommand", "[cli][log]") {
  // Before the fix these were exit 2 "The following arguments were not expected".
  const std::vector<Case> shm = {
      {{"rm", "nope.seg", "-v"}, 4, "plh-shm: error: "},
      {{"info", "nope.seg", "-q"}, 4, "plh-shm: error: "},
      {{"ls", "--log-level", "error"}, 0, ""},
      {{"read", "nope.seg", "-W", "10ms", "--log-format", "text", "-v"}, 4, "plh-shm: error: "},
  };
  for (const auto& c : shm) check_case(PLH_SHM_BIN, "plh-shm", c);
  const std::vector<Case> ctl = {
      {{"ping", "-v", "--broker-timeout", "200ms"}, 5, "plh-ctl: error: "},
      {{"list", "-q", "--broker-timeout", "200ms"}, 5, "plh-ctl: error: "},
      {{"info", "lab.temp", "--log-level", "error", "--broker-timeout", "200ms"}, 5, "plh-ctl: error: "},
  };
  for (const auto& c : ctl) check_case(PLH_CTL_BIN, "plh-ctl", c);
}

TEST_CASE("channel names may start with a digit and hold UTF-8 letters, the error echoes the input", "[cli][names]") {
  const std::vector<Case> sub = {
      // Valid names get as far as the (absent) broker.
      {{"sensor.0", "--broker-timeout", "200ms"}, 5, "plh-sub: error: cannot connect to the broker"},
      {{"cam.1.raw", "--broker-timeout", "200ms"}, 5, "plh-sub: error: cannot connect to the broker"},
      {{"lab.température", "--broker-timeout", "200ms"}, 5, "plh-sub: error: cannot connect to the broker"},
      {{"実験.温度", "--broker-timeout", "200ms"}, 5, "plh-sub: error: cannot connect to the broker"},
      // Invalid ones: UTF-8 kept as typed, control characters and bad bytes as \xNN.
      {{"lab.temp érature"}, 2,
       "plh-sub: error: invalid channel name 'lab.temp érature': components may contain only letters"},
      {{"lab.te\x01mp"}, 2, "plh-sub: error: invalid channel name 'lab.te\\x01mp': components may contain only"},
      {{"lab.temp\xff"}, 2, "plh-sub: error: invalid channel name 'lab.temp\\xff': not valid UTF-8"},
      {{"_lab"}, 2, "plh-sub: error: invalid channel name '_lab': each component must start with a letter or a digit"},
  };
  for (const auto& c : sub) check_case(PLH_SUB_BIN, "plh-sub", c);
  check_case(PLH_SHM_BIN, "plh-shm", {{"info", "0cam.ünï"}, 4, "plh-shm: error: "});
}

#endif

#if defined(PLH_PUB_BIN) && defined(PLH_SUB_BIN) && defined(PLH_CTL_BIN)
TEST_CASE("no broker: a refused connect and an unknown host fail at once with exit 5", "[cli][broker-client]") {
  // --broker-timeout 60s: the old code waited the whole timeout (check_case kills the tool
  // after 20 s, which fails the case); a refused TCP connect now ends the wait.
  const std::string refused = "cannot connect to the broker at tcp://127.0.0.1:1: connection refused";
  check_case(PLH_SUB_BIN, "plh-sub", {{"lab.temp", "--broker-timeout", "60s"}, 5, "plh-sub: error: " + refused});
  check_case(PLH_PUB_BIN, "plh-pub", {{"lab.temp", "--broker-timeout", "60s"}, 5, "plh-pub: error: " + refused});
  check_case(PLH_CTL_BIN, "plh-ctl", {{"list", "--broker-timeout", "60s"}, 5, "plh-ctl: error: " + refused});
  check_case(PLH_CTL_BIN, "plh-ctl",
             {{"ping", "--broker", "tcp://no-such-host.invalid:5555"}, 5,
              "plh-ctl: error: cannot resolve host 'no-such-host.invalid'"});
  check_case(PLH_SUB_BIN, "plh-sub",
             {{"lab.temp", "--broker", "tcp://no-such-host.invalid:5555"}, 5,
              "plh-sub: error: cannot resolve host 'no-such-host.invalid'"});
}
#endif

#if defined(PLH_SUB_BIN)
TEST_CASE("plh-sub --stats prints its counters also when it fails", "[cli][stats]") {
  auto r = plh::test::run({PLH_SUB_BIN, "--connect", "tcp://127.0.0.1:1", "--connect-timeout", "200ms", "--stats"}, "",
                          std::chrono::seconds(20), plh::test::dead_broker_env());
  INFO("stderr: " << r.err);
  CHECK(r.code == 1);
  CHECK(r.err.find("plh-sub: stats: ") != std::string::npos);
  CHECK(r.err.find("plh-sub: error: cannot connect to the publisher") != std::string::npos);
}
#endif

#if defined(PLH_SHM_BIN)
TEST_CASE("plh-shm create --help shows no default next to REQUIRED", "[cli][shm][help]") {
  auto r = plh::test::run({PLH_SHM_BIN, "create", "--help"});
  REQUIRE(r.code == 0);
  std::istringstream in(r.out);
  int seen = 0;
  for (std::string line; std::getline(in, line);) {
    if (line.find("--slots") == std::string::npos && line.find("--slot-size") == std::string::npos) continue;
    INFO(line);
    ++seen;
    CHECK(line.find("REQUIRED") != std::string::npos);
    CHECK(line.find('=') == std::string::npos);  // was "--slots TEXT=64 REQUIRED"
  }
  CHECK(seen == 2);
}

TEST_CASE("man plh-shm(1) has no stray form feeds from a mangled font escape", "[cli][man]") {
  std::ifstream in(std::string(PLH_SOURCE_DIR) + "/man/plh-shm.1");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  REQUIRE(!text.empty());
  CHECK(text.find('\f') == std::string::npos);  // rendered "Share I/dev/shmR"
  CHECK(text.find("Share \\fI/dev/shm\\fR") != std::string::npos);
}
#endif

#if defined(PLH_PUB_BIN) && defined(PLH_SUB_BIN) && defined(PLH_SHM_BIN) && defined(PLH_CTL_BIN)
TEST_CASE("PLH_CLIENT_KEY and PLH_ADMIN_TOKEN are in the man pages and --help", "[cli][man][help]") {
  auto page = [](const std::string& name) {
    std::ifstream in(std::string(PLH_SOURCE_DIR) + "/man/" + name);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  for (const char* p : {"plh.7", "plh-pub.1", "plh-sub.1", "plh-shm.1", "plh-ctl.1", "plh-broker.1"}) {
    INFO(p);
    CHECK(page(p).find("PLH_CLIENT_KEY") != std::string::npos);
  }
  CHECK(page("plh.7").find("PLH_ADMIN_TOKEN") != std::string::npos);
  for (const std::vector<std::string>& argv : std::vector<std::vector<std::string>>{
           {PLH_PUB_BIN, "--help"}, {PLH_SUB_BIN, "--help"}, {PLH_SHM_BIN, "write", "--help"}, {PLH_CTL_BIN, "--help"}}) {
    auto r = plh::test::run(argv);
    INFO(argv[0]);
    CHECK(r.code == 0);
    CHECK(r.out.find("PLH_CLIENT_KEY") != std::string::npos);
  }
  auto r = plh::test::run({PLH_CTL_BIN, "close", "--help"});
  CHECK(r.out.find("PLH_ADMIN_TOKEN") != std::string::npos);
}
#endif
