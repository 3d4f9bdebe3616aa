// --log-format json: every stderr line is one JSON object, the final error line included
// (it used to be plain text), and a message quoting user input stays valid JSON.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <sstream>

#include "cli_cases.hpp"
#include "process.hpp"

#if defined(PLH_CTL_BIN) && defined(PLH_SUB_BIN)

using plh::test::run;

namespace {
// Each stderr line parsed; fails the test on a line that is not a JSON object.
std::vector<nlohmann::json> json_lines(const std::string& err) {
  std::vector<nlohmann::json> out;
  std::istringstream in(err);
  for (std::string line; std::getline(in, line);) {
    INFO("stderr line: " << line);
    auto j = nlohmann::json::parse(line, nullptr, false);
    REQUIRE(j.is_object());
    out.push_back(j);
  }
  return out;
}
}  // namespace

TEST_CASE("log format json: the fatal error line is JSON too", "[cli][log]") {
  struct Probe {
    std::vector<std::string> argv;
    int code;
    std::string msg_part;
  };
  const std::vector<Probe> probes = {
      // runtime error (no broker)
      {{PLH_CTL_BIN, "ping", "--broker-timeout", "200ms", "--log-format", "json"}, 5, "cannot connect to the broker"},
      // usage error found while parsing, option given as --opt=value
      {{PLH_CTL_BIN, "--log-format=json", "--log-level", "loud", "ping"}, 2, "loud"},
      // user input with a quote and a backslash echoed in the message
      {{PLH_CTL_BIN, "info", "a\"b\\c", "--log-format", "json"}, 2, "invalid channel name 'a\"b\\c'"},
      // the case from the issue
      {{PLH_SUB_BIN, "nope", "--broker-timeout", "200ms", "--log-format", "json"}, 5, "cannot connect to the broker"},
  };
  for (const auto& p : probes) {
    INFO(p.argv[0] << " " << p.argv[1]);
    auto r = run(p.argv, "", std::chrono::seconds(20), plh::test::dead_broker_env());
    CHECK(r.code == p.code);
    auto lines = json_lines(r.err);
    REQUIRE(lines.size() == 1);
    CHECK(lines[0].at("level") == "error");
    CHECK(lines[0].at("pid").is_number_integer());
    CHECK(lines[0].at("ts").is_string());
    CHECK(lines[0].at("tool") == std::string(p.argv[0]).substr(std::string(p.argv[0]).rfind('/') + 1));
    CHECK(lines[0].at("msg").get<std::string>().find(p.msg_part) != std::string::npos);
  }
}

TEST_CASE("log format text keeps the plain 'tool: error:' line", "[cli][log]") {
  auto r = run({PLH_CTL_BIN, "ping", "--broker-timeout", "200ms"}, "", std::chrono::seconds(20),
               plh::test::dead_broker_env());
  CHECK(r.code == 5);
  CHECK(r.err.rfind("plh-ctl: error: cannot connect to the broker", 0) == 0);
}

#endif
