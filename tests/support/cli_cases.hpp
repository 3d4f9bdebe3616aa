#pragma once
// Argument tables for the CLI tests: a tool run with some arguments must end with the
// given exit code, and its stderr must be exactly one line starting with the given text
// (or empty when none is given).
#include <catch2/catch.hpp>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "process.hpp"

namespace plh::test {

struct Case {
  std::vector<std::string> args;
  int code;
  std::string stderr_start;  // the single stderr line starts with this ("" = stderr empty)
};

// A broker address that nobody serves, so nothing depends on a running broker, and no
// broker key or admin token inherited from the shell that started the tests (the tools
// treat an empty variable as unset).
inline std::map<std::string, std::string> dead_broker_env() {
  return {{"PLH_BROKER", "tcp://127.0.0.1:1"}, {"PLH_BROKER_KEY", ""}, {"PLH_ADMIN_TOKEN", ""}};
}

// Runs `bin` (shown as `tool` in the failure message) with c.args and `env` added to the
// environment, and checks the exit code and stderr.
inline void check_case(const std::string& bin, const std::string& tool, const Case& c,
                       const std::map<std::string, std::string>& env = dead_broker_env()) {
  std::vector<std::string> argv{bin};
  argv.insert(argv.end(), c.args.begin(), c.args.end());
  std::string shown = tool;
  for (const auto& a : c.args) shown += " '" + a + "'";
  INFO(shown);
  auto r = run(argv, "", std::chrono::seconds(20), env);
  INFO("stderr: " << r.err);
  CHECK(r.code == c.code);
  if (c.stderr_start.empty()) {
    CHECK(r.err.empty());
  } else {
    CHECK(r.err.rfind(c.stderr_start, 0) == 0);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  }
}

}  // namespace plh::test
