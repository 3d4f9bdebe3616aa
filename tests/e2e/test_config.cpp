// Defaults files and profiles (plh(7) "DEFAULTS FILES AND PROFILES"): the real tools
// reading real files, against a real broker. Each test points XDG_CONFIG_HOME and
// PLH_SYSTEM_CONFIG at its own temp dir (catch_main.cpp points them nowhere for all
// other tests).
#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>

#include "test_broker_process.hpp"

#if defined(PLH_BROKER_BIN) && defined(PLH_CTL_BIN) && defined(PLH_SHM_BIN)

using namespace std::chrono_literals;
using nlohmann::json;
using plh::test::BrokerProcess;
using plh::test::RunResult;
using plh::test::TempDir;

namespace {

// A user config home and a system file inside one temp dir.
struct Files {
  TempDir dir;
  std::string user() const { return dir.file("home/plh/config"); }
  std::string system() const { return dir.file("etc-plh-config"); }
  void write_user(const std::string& text) const {
    std::filesystem::create_directories(dir.file("home/plh"));
    std::ofstream(user()) << text;
  }
  void write_system(const std::string& text) const { std::ofstream(system()) << text; }
  std::map<std::string, std::string> env(std::map<std::string, std::string> extra = {}) const {
    extra.emplace("XDG_CONFIG_HOME", dir.file("home"));
    extra.emplace("PLH_SYSTEM_CONFIG", system());
    return extra;
  }
  RunResult run(const std::string& bin, const std::vector<std::string>& args,
                std::map<std::string, std::string> extra = {}) const {
    std::vector<std::string> argv{bin};
    argv.insert(argv.end(), args.begin(), args.end());
    return plh::test::run(argv, "", 20s, env(std::move(extra)));
  }
};

// A refused endpoint: ping through it is exit 5 at once, with the endpoint in the message.
const std::string kBad = "tcp://127.0.0.1:1";

}  // namespace

TEST_CASE("defaults files: command line > environment > profile > user file > system file > built-in",
          "[e2e][config]") {
  auto broker = BrokerProcess::start();
  const std::string good = broker.endpoint;
  Files f;
  auto ping = [&](std::vector<std::string> args, std::map<std::string, std::string> env = {}) {
    args.insert(args.begin(), "ping");
    return f.run(PLH_CTL_BIN, args, std::move(env));
  };

  // The system file alone.
  f.write_system("broker = \"" + good + "\"\n");
  CHECK(ping({}).code == 0);

  // The user's file wins over the system's.
  f.write_user("broker = \"" + kBad + "\"\n[profile.lab]\nbroker = \"" + good + "\"\n");
  auto r = ping({});
  CHECK(r.code == 5);
  CHECK(r.err.find("127.0.0.1:1") != std::string::npos);

  // A profile wins over the file, by option or by PLH_PROFILE.
  CHECK(ping({"--profile", "lab"}).code == 0);
  CHECK(ping({}, {{"PLH_PROFILE", "lab"}}).code == 0);

  // The environment wins over the file and over the profile.
  CHECK(ping({}, {{"PLH_BROKER", good}}).code == 0);
  r = ping({"--profile", "lab"}, {{"PLH_BROKER", kBad}});
  CHECK(r.code == 5);
  CHECK(r.err.find("127.0.0.1:1") != std::string::npos);

  // The command line wins over everything.
  CHECK(ping({"--broker", good}, {{"PLH_BROKER", kBad}}).code == 0);

  // A tool's section wins over the top of the same file.
  f.write_user("broker = \"" + good + "\"\n[plh-ctl]\nbroker = \"" + kBad + "\"\n");
  CHECK(ping({}).code == 5);

  // --config FILE replaces both files.
  const std::string other = f.dir.file("other.conf");
  std::ofstream(other) << "[plh-ctl]\nbroker = " << good << "\n";
  CHECK(ping({"--config", other}).code == 0);
}

TEST_CASE("defaults files: subcommand sections and flags go through the tool's own parser", "[e2e][config]") {
  Files f;
  const std::string name = "cfg" + plh::test::unique_suffix(), name2 = name + "b";
  f.write_user("[plh-shm.create]\nslots = 8\nslot-size = 128\n[plh-shm.info]\njson = true\n");
  REQUIRE(f.run(PLH_SHM_BIN, {"create", name}).code == 0);
  REQUIRE(f.run(PLH_SHM_BIN, {"create", name2, "--slots", "16"}).code == 0);
  auto info = f.run(PLH_SHM_BIN, {"info", name});  // json = true from the file
  auto info2 = f.run(PLH_SHM_BIN, {"info", name2});
  CHECK(f.run(PLH_SHM_BIN, {"rm", name}).code == 0);
  CHECK(f.run(PLH_SHM_BIN, {"rm", name2}).code == 0);
  REQUIRE(info.code == 0);
  const auto j = json::parse(info.out, nullptr, false);
  REQUIRE(j.is_object());
  CHECK(j["slots"] == 8);
  CHECK(j["slot_size"] == 128);
  const auto j2 = json::parse(info2.out, nullptr, false);
  REQUIRE(j2.is_object());
  CHECK(j2["slots"] == 16);  // the command line wins
  CHECK(j2["slot_size"] == 128);

  // A value from a file is checked like one typed: exit 2, the option named.
  f.write_user("[plh-shm.create]\nslots = -3\nslot-size = 128\n");
  auto r = f.run(PLH_SHM_BIN, {"create", name});
  CHECK(r.code == 2);
  CHECK(r.err.find("--slots") != std::string::npos);
}

TEST_CASE("defaults files: a bad file or profile is exit 2 naming the file and the key", "[e2e][config]") {
  Files f;
  struct Case {
    std::string file;
    std::vector<std::string> args;
    std::string message;
  };
  const std::vector<Case> cases{
      {"[plh-sbu]\nformat = json\n", {"ping"}, "unknown section [plh-sbu]"},
      {"[plh-ctl]\njsno = true\n", {"ping"}, "[plh-ctl]: plh-ctl has no option --jsno"},
      {"[plh-ctl.pnig]\njson = true\n", {"ping"}, "plh-ctl has no subcommand 'pnig'"},
      {"profile = lab\n", {"ping"}, "'profile' cannot be set in a defaults file"},
      {"[profile]\nbroker = x\n", {"ping"}, "a profile is a section [profile.NAME]"},
      {"broker = \"" + kBad + "\"\n", {"ping", "--profile", "nope"}, "no profile 'nope' in "},
  };
  for (const auto& c : cases) {
    INFO(c.file);
    f.write_user(c.file);
    auto r = f.run(PLH_CTL_BIN, c.args);
    CHECK(r.code == 2);
    CHECK(r.err.find(c.message) != std::string::npos);
    CHECK(r.err.find(f.user()) != std::string::npos);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  }
  // An empty profile is a profile (nothing to apply), not an unknown one.
  f.write_user("[profile.empty]\n");
  CHECK(f.run(PLH_CTL_BIN, {"config", "--profile", "empty"}).code == 0);

  // A top key that this tool does not have is for the others (plh-pub's --advertise).
  f.write_user("advertise = 10.0.0.1\nbroker = \"" + kBad + "\"\n");
  CHECK(f.run(PLH_CTL_BIN, {"ping"}).code == 5);

  // No file at all: a profile asked for is still an error, not ignored.
  std::filesystem::remove(f.user());
  auto r = f.run(PLH_CTL_BIN, {"ping"}, {{"PLH_PROFILE", "rig2"}});
  CHECK(r.code == 2);
  CHECK(r.err.find("no profile 'rig2'") != std::string::npos);
  r = f.run(PLH_CTL_BIN, {"ping", "--config", f.dir.file("missing.conf")});
  CHECK(r.code == 2);
  CHECK(r.err.find("--config") != std::string::npos);
  CHECK(r.err.find("missing.conf") != std::string::npos);
}

TEST_CASE("plh-ctl config: every entry, where it came from, and what is in effect", "[e2e][config]") {
  Files f;
  f.write_system("[plh-sub]\nformat = line\n");
  f.write_user("broker = \"tcp://a:5555\"\n[plh-sub]\nformat = json\n[profile.rig2]\nbroker = \"tcp://rig2:5555\"\n");

  auto r = f.run(PLH_CTL_BIN, {"config", "plh-sub", "--json", "--profile", "rig2"});
  REQUIRE(r.code == 0);
  const auto j = json::parse(r.out, nullptr, false);
  REQUIRE(j.is_object());
  CHECK(j["profile"] == "rig2");
  CHECK(j["profile_from"] == "--profile");
  CHECK(j["files"] == json::array({f.user(), f.system()}));
  REQUIRE(j["entries"].size() == 4);
  // Precedence order: the profile, the user's tool section, the user's top, the system.
  CHECK(j["entries"][0]["value"] == "tcp://rig2:5555");
  CHECK(j["entries"][0]["status"] == "in effect");
  CHECK(j["entries"][1]["value"] == "json");
  CHECK(j["entries"][1]["section"] == "[plh-sub]");
  CHECK(j["entries"][1]["status"] == "in effect");
  CHECK(j["entries"][2]["value"] == "tcp://a:5555");
  CHECK(j["entries"][2]["status"] == "overridden by an entry above");
  CHECK(j["entries"][3]["value"] == "line");
  CHECK(j["entries"][3]["file"] == f.system());
  CHECK(j["entries"][3]["status"] == "overridden by an entry above");

  // The environment: named as what overrides the file.
  r = f.run(PLH_CTL_BIN, {"config", "plh-sub"}, {{"PLH_BROKER", "tcp://env:1"}});
  REQUIRE(r.code == 0);
  CHECK(r.out.find("profile: none") != std::string::npos);
  CHECK(r.out.find("overridden by the environment (PLH_BROKER)") != std::string::npos);
  CHECK(r.out.find("[plh-sub]") != std::string::npos);

  r = f.run(PLH_CTL_BIN, {"config", "plh-nope"});
  CHECK(r.code == 2);
  CHECK(r.err.find("unknown tool 'plh-nope'") != std::string::npos);
}

#endif
