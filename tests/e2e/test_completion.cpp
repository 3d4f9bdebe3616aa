// Shell completion (`plh-X --completion bash|zsh`) is generated from the same CLI11
// definitions as --help: every long option of every (sub)command completes, option
// values with a fixed set complete to it, and channel names come from a live broker.
#include <catch2/catch.hpp>

#include <algorithm>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "help_text.hpp"
#include "process.hpp"
#include "skip.hpp"
#include "test_broker_process.hpp"

using namespace std::chrono_literals;
using plh::test::BrokerProcess;
using plh::test::run;

namespace {

// COMPREPLY for the words typed so far (the last one is being completed), from the
// script the tool generates, in a real bash.
std::vector<std::string> complete(const std::string& bin, const std::vector<std::string>& words,
                                  const std::map<std::string, std::string>& env = {}) {
  std::string arr;
  for (const auto& w : words) arr += " '" + w + "'";
  const std::string tool = bin.substr(bin.rfind('/') + 1);
  std::string fn = "_" + tool;
  for (char& c : fn)
    if (c == '-') c = '_';
  const std::string script = "source <('" + bin + "' --completion bash) || exit 9\n"
                             "COMP_WORDS=(" + tool + arr + "); COMP_CWORD=" + std::to_string(words.size()) + "\n" +
                             fn + "\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n";
  auto r = run({"/bin/bash", "-c", script}, "", 20s, env);
  INFO("bash completion for " << tool << ": " << r.err);
  REQUIRE(r.code == 0);
  std::vector<std::string> out;
  std::istringstream in(r.out);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(line);
  return out;
}

bool has(const std::vector<std::string>& v, const std::string& s) { return std::find(v.begin(), v.end(), s) != v.end(); }

void check_every_option(const std::string& bin) {
  auto top = run({bin, "--help"});
  REQUIRE(top.code == 0);
  std::vector<std::string> subs = plh::test::subcommands(top.out);
  {
    const auto got = complete(bin, {"--"});
    for (const auto& opt : plh::test::long_options(top.out)) {
      INFO(bin << " --help shows " << opt << " but completion does not offer it");
      CHECK(has(got, opt));
    }
  }
  if (!subs.empty()) {
    const auto got = complete(bin, {""});
    for (const auto& s : subs) {
      INFO(bin << ": subcommand " << s << " does not complete");
      CHECK(has(got, s));
    }
  }
  for (const auto& s : subs) {
    auto h = run({bin, s, "--help"});
    REQUIRE(h.code == 0);
    const auto got = complete(bin, {s, "--"});
    for (const auto& opt : plh::test::long_options(h.out)) {
      INFO(bin << " " << s << " --help shows " << opt << " but completion does not offer it");
      CHECK(has(got, opt));
    }
  }
}

}  // namespace

TEST_CASE("bash completion offers every option and subcommand --help shows, for every tool", "[e2e][completion]") {
  for (const std::string bin : {PLH_BROKER_BIN, PLH_PUB_BIN, PLH_SUB_BIN, PLH_SHM_BIN, PLH_CTL_BIN}) check_every_option(bin);
}

TEST_CASE("bash completion: option values from their fixed set, channel names from the broker", "[e2e][completion]") {
  const auto levels = complete(PLH_SUB_BIN, {"--log-level", "w"});
  CHECK(levels == std::vector<std::string>{"warn"});
  CHECK(complete(PLH_SUB_BIN, {"--log-format", ""}) == std::vector<std::string>{"text", "json"});
  // A channel published through a real broker completes for plh-sub and plh-ctl info.
  auto b = BrokerProcess::start();
  plh::test::Child pub = plh::test::Child::spawn({std::string(PLH_PUB_BIN), "compl.temp", "--broker", b.endpoint});
  const std::string bindir = std::string(PLH_CTL_BIN).substr(0, std::string(PLH_CTL_BIN).rfind('/'));
  const std::map<std::string, std::string> env{{"PATH", bindir + ":/usr/bin:/bin"}, {"PLH_BROKER", b.endpoint}};
  REQUIRE(run({std::string(PLH_CTL_BIN), "wait", "compl.temp", "-W", "10s", "--broker", b.endpoint}).code == 0);
  CHECK(complete(PLH_SUB_BIN, {"compl."}, env) == std::vector<std::string>{"compl.temp"});
  CHECK(complete(PLH_CTL_BIN, {"info", "co"}, env) == std::vector<std::string>{"compl.temp"});
  pub.close_stdin();
  CHECK(pub.wait(10s).code == 0);
  CHECK(b.stop() == 0);
}

TEST_CASE("zsh completion scripts are valid zsh for every tool", "[e2e][completion]") {
  if (run({"/bin/sh", "-c", "command -v zsh"}).code != 0) PLH_SKIP("zsh is not installed");
  for (const std::string bin : {PLH_BROKER_BIN, PLH_PUB_BIN, PLH_SUB_BIN, PLH_SHM_BIN, PLH_CTL_BIN}) {
    auto r = run({"/bin/sh", "-c", "'" + bin + "' --completion zsh | zsh -n"});
    INFO(bin << ": " << r.err);
    CHECK(r.code == 0);
  }
}

TEST_CASE("plh-sub --completion with an unknown shell is a usage error", "[e2e][completion]") {
  auto r = run({PLH_SUB_BIN, "--completion", "fish"});
  CHECK(r.code == 2);
  CHECK(r.out.empty());
  CHECK(r.err.find("plh-sub: error: ") == 0);
}
