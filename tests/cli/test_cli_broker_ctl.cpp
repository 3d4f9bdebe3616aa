// plh-broker and plh-ctl argument tables: arguments -> exit code and the one stderr line.
#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <fstream>

#include "../e2e/test_broker_process.hpp"
#include "cli_cases.hpp"
#include "process.hpp"

#if defined(PLH_BROKER_BIN) && defined(PLH_CTL_BIN)

using plh::test::Case;
using plh::test::check_case;
using plh::test::run;
using plh::test::TempDir;

TEST_CASE("plh-ctl argument errors", "[cli][ctl]") {
  TempDir dir;
  const std::string bad_key_file = dir.file("bad.pub");
  std::ofstream(bad_key_file) << "not a key\n";
  const std::vector<Case> cases = {
      {{}, 2, "plh-ctl: error: A subcommand is required"},
      {{"frobnicate"}, 2, "plh-ctl: error: "},
      {{"list", "--bogus"}, 2, "plh-ctl: error: "},
      {{"info"}, 2, "plh-ctl: error: CHANNEL is required"},
      {{"info", "bad name"}, 2, "plh-ctl: error: invalid channel name 'bad name'"},
      {{"info", "_abc"}, 2, "plh-ctl: error: invalid channel name '_abc'"},  // '1abc' is valid since issue 13
      {{"wait", "a..b"}, 2, "plh-ctl: error: invalid channel name 'a..b'"},
      {{"wait", "lab.temp", "-W", "soon"}, 2, "plh-ctl: error: "},
      {{"close"}, 2, "plh-ctl: error: CHANNEL is required"},
      {{"close", "lab.temp", "--admin-token-file", "/nonexistent/token"}, 2, "plh-ctl: error: cannot read token file"},
      {{"stats", "bad/name"}, 2, "plh-ctl: error: invalid channel name 'bad/name'"},
      {{"ping", "--broker-key", "abc"}, 2, "plh-ctl: error: broker key must be a 40-character Z85 string"},
      {{"ping", "--broker-key", "@" + bad_key_file}, 2, "plh-ctl: error: broker key file"},
      {{"ping", "--broker-timeout", "fast"}, 2, "plh-ctl: error: "},
      {{"--log-level", "loud", "ping"}, 2, "plh-ctl: error: "},
      {{"ping", "--broker-timeout", "200ms"}, 5, "plh-ctl: error: cannot connect to the broker at tcp://127.0.0.1:1: connection refused"},
      {{"list", "--broker-timeout", "200ms"}, 5, "plh-ctl: error: cannot connect to the broker"},
      {{"wait", "lab.temp", "--broker-timeout", "200ms", "-W", "5"}, 5, "plh-ctl: error: cannot connect to the broker"},
      {{"--help"}, 0, ""},
      {{"--version"}, 0, ""},
      {{"list", "--help"}, 0, ""},
  };
  for (const auto& c : cases) check_case(PLH_CTL_BIN, "plh-ctl", c);
}

TEST_CASE("plh-ctl --version names libplh and libzmq", "[cli][ctl]") {
  auto r = run({PLH_CTL_BIN, "--version"});
  CHECK(r.code == 0);
  CHECK(r.out.find("libplh") != std::string::npos);
  CHECK(r.out.find("libzmq") != std::string::npos);
}

TEST_CASE("plh-ctl --version names the git revision it was built from, the build type and CURVE", "[cli][ctl]") {
  auto r = run({PLH_CTL_BIN, "--version"});
  REQUIRE(r.code == 0);
  const auto git = r.out.find(", git ");
  REQUIRE(git != std::string::npos);
  const std::string rev = r.out.substr(git + 6, r.out.find(',', git + 6) - git - 6);
  auto head = run({"/usr/bin/git", "-C", PLH_SOURCE_DIR, "rev-parse", "--short=12", "HEAD"});
  if (head.code == 0) CHECK(rev.rfind(head.out.substr(0, 12), 0) == 0);  // "1a2b3c4d5e6f" or "...-dirty"
  else CHECK(rev == "unknown");
  CHECK(r.out.find(CMAKE_BUILD_TYPE_TEXT) != std::string::npos);
  CHECK(r.out.find("CURVE)") != std::string::npos);
}

TEST_CASE("plh-ctl keygen writes a 0600 secret and a public key", "[cli][ctl]") {
  TempDir dir;
  const std::string prefix = dir.file("k");
  auto r = run({PLH_CTL_BIN, "keygen", "--out", prefix});
  REQUIRE(r.code == 0);
  std::string pub, secret, line2;
  std::getline(std::ifstream(prefix + ".pub") >> std::ws, pub);
  CHECK(pub.size() == 40);
  CHECK(r.out == pub + "\n");
  std::ifstream key(prefix + ".key");
  std::string line;
  std::vector<std::string> lines;
  while (std::getline(key, line))
    if (!line.empty() && line[0] != '#') lines.push_back(line);
  REQUIRE(lines.size() == 2);
  CHECK(lines[0].size() == 40);
  CHECK(lines[1] == pub);
  struct stat st {};
  REQUIRE(::stat((prefix + ".key").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  // Existing files are kept unless --force.
  r = run({PLH_CTL_BIN, "keygen", "--out", prefix});
  CHECK(r.code == 1);
  CHECK(r.err.rfind("plh-ctl: error: '" + prefix + ".key' exists", 0) == 0);
  CHECK(run({PLH_CTL_BIN, "keygen", "--out", prefix, "--force"}).code == 0);
  r = run({PLH_CTL_BIN, "keygen", "--json"});
  CHECK(r.code == 0);
  CHECK(r.out.find("\"secret_key\"") != std::string::npos);
}

TEST_CASE("plh-broker argument errors", "[cli][broker]") {
  TempDir dir;
  const std::string allow = dir.file("allow");
  std::ofstream(allow) << "# nobody\n";
  const std::string bad_allow = dir.file("bad_allow");
  std::ofstream(bad_allow) << "short\n";
  const std::string keyprefix = dir.file("srv");
  REQUIRE(run({PLH_CTL_BIN, "keygen", "--out", keyprefix}).code == 0);
  const std::vector<Case> cases = {
      {{"--bogus"}, 2, "plh-broker: error: "},
      {{"--heartbeat-interval", "5parsecs"}, 2, "plh-broker: error: "},
      {{"--endpoint", "tcp://127.0.0.1:0", "--heartbeat-interval", "1s", "--heartbeat-timeout", "500ms"},
       2,
       "plh-broker: error: --heartbeat-timeout must be longer than --heartbeat-interval"},
      {{"--endpoint", "bogus://x"}, 2, "plh-broker: error: invalid broker endpoint 'bogus://x'"},
      {{"--endpoint", "tcp://127.0.0.1:0", "--busy-poll", "2s"}, 2, "plh-broker: error: --busy-poll must be at most 1s"},
      {{"--endpoint", "tcp://127.0.0.1:0", "--busy-poll", "-1ms"}, 2, "plh-broker: error: invalid duration '-1ms'"},
      {{"--endpoint", "tcp://127.0.0.1:0", "--allow-keys", allow}, 2, "plh-broker: error: --allow-keys needs --curve-secret-file"},
      {{"--endpoint", "tcp://127.0.0.1:0", "--curve-secret-file", "/nonexistent/k.key"}, 2, "plh-broker: error: cannot read key file"},
      {{"--endpoint", "tcp://127.0.0.1:0", "--curve-secret-file", keyprefix + ".pub"}, 2, "plh-broker: error: "},
      {{"--endpoint", "tcp://127.0.0.1:0", "--curve-secret-file", keyprefix + ".key", "--allow-keys", bad_allow},
       2,
       "plh-broker: error: allow-list '" + bad_allow + "' line 1 is not a 40-character Z85 key"},
      {{"--endpoint", "tcp://127.0.0.1:0", "--admin-token-file", "/nonexistent/t"}, 2, "plh-broker: error: cannot read token file"},
      {{"--help"}, 0, ""},
      {{"--version"}, 0, ""},
  };
  for (const auto& c : cases) check_case(PLH_BROKER_BIN, "plh-broker", c);
}

TEST_CASE("plh-broker on a port in use fails with exit 1", "[cli][broker]") {
  auto first = plh::test::BrokerProcess::start();
  const std::string ep = first.endpoint;
  REQUIRE(ep != "tcp://127.0.0.1:0");
  auto r = run({PLH_BROKER_BIN, "--endpoint", ep});
  CHECK(r.code == 1);
  CHECK(r.err.rfind("plh-broker: error: cannot bind " + ep, 0) == 0);
  CHECK(first.stop() == 0);
}

#endif
