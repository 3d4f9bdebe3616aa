// plh-shm argument tables: arguments -> exit code and the one stderr line; man page vs --help.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "cli_cases.hpp"
#include "plh/shm/data_block.hpp"
#include "process.hpp"

#if defined(PLH_SHM_BIN)

using namespace std::chrono_literals;
using plh::test::Case;
using plh::test::run;

namespace {

// The shared table check, for plh-shm, with the environment this table has always used:
// only PLH_BROKER, pointing at an address nobody serves.
void check_case(const Case& c) {
  plh::test::check_case(PLH_SHM_BIN, "plh-shm", c, {{"PLH_BROKER", "tcp://127.0.0.1:1"}});
}

// A /dev/shm/plh.NAME object with arbitrary bytes, removed at the end.
struct RawSegment {
  std::string name = "shmc" + plh::test::unique_suffix();
  explicit RawSegment(const std::string& bytes) {
    const int fd = ::shm_open(("/plh." + name).c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
    REQUIRE(fd >= 0);
    REQUIRE(::write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()));
    ::close(fd);
  }
  ~RawSegment() { ::shm_unlink(("/plh." + name).c_str()); }
};

}  // namespace

TEST_CASE("plh-shm argument errors", "[cli][shm]") {
  const std::string missing = "shmc" + plh::test::unique_suffix();
  const std::vector<Case> cases = {
      {{}, 2, "plh-shm: error: A subcommand is required"},
      {{"frobnicate"}, 2, "plh-shm: error: "},
      {{"create", "x"}, 2, "plh-shm: error: --slots is required"},
      {{"create", "bad/name", "--slots", "4", "--slot-size", "64"}, 2, "plh-shm: error: invalid channel name 'bad/name'"},
      {{"create", missing, "--slots", "0", "--slot-size", "64"}, 2, "plh-shm: error: --slots must be"},
      {{"create", missing, "--slots", "4", "--slot-size", "lots"}, 2, "plh-shm: error: invalid size 'lots'"},
      {{"create", missing, "--slots", "4", "--slot-size", "64", "--mode", "0999"}, 2, "plh-shm: error: invalid --mode"},
      {{"create", missing, "--slots", "4", "--slot-size", "64", "--policy", "fastest"}, 2, "plh-shm: error: "},
      {{"create", missing, "--slots", "4", "--slot-size", "64", "--checksum", "md5"}, 2, "plh-shm: error: "},
      {{"read", missing}, 4, "plh-shm: error: segment '" + missing + "' not found"},
      {{"read", missing, "-f", "yaml"}, 2, "plh-shm: error: "},
      {{"read", missing, "--from", "middle"}, 2, "plh-shm: error: "},
      {{"read", missing, "--wait", "-W", "200ms"}, 3, "plh-shm: error: segment '" + missing + "' did not appear"},
      {{"write", missing}, 4, "plh-shm: error: segment '" + missing + "' not found"},
      {{"write", missing, "--create", "--dims", "1,2,3,4,5"}, 2, "plh-shm: error: --dims takes at most 4"},
      {{"write", missing, "--create", "--type-hash", "0xZZ"}, 2, "plh-shm: error: invalid --type-hash"},
      {{"info", missing}, 4, "plh-shm: error: segment '" + missing + "' not found"},
      {{"rm", missing}, 4, "plh-shm: error: segment '" + missing + "' not found"},
      {{"info", "a..b"}, 2, "plh-shm: error: invalid channel name 'a..b'"},
      {{"--help"}, 0, ""},
      {{"--version"}, 0, ""},
  };
  for (const auto& c : cases) check_case(c);
  CHECK_FALSE(plh::shm::remove_segment(missing));  // nothing was left behind
}

TEST_CASE("plh-shm refuses segments that are not plh, another version, corrupt or truncated", "[cli][shm]") {
  {
    RawSegment s(std::string(300, 'z'));
    for (const char* cmd : {"read", "info", "write"})
      check_case({{cmd, s.name}, 6, "plh-shm: error: segment '" + s.name + "' is not a plh segment"});
  }
  {
    RawSegment s("PLHSHM07" + std::string(9000, '\0'));
    check_case({{"read", s.name}, 6, "plh-shm: error: segment '" + s.name + "' has layout version"});
  }
  {
    RawSegment s("PLHSHM01" + std::string(100, '\0'));
    check_case({{"read", s.name}, 1, "plh-shm: error: segment '" + s.name + "' is truncated"});
  }
  {
    std::string header(9000, '\0');
    std::memcpy(header.data(), "PLHSHM01", 8);
    header[8] = 1;  // version 1, everything else zero: geometry makes no sense
    RawSegment s(header);
    check_case({{"info", s.name}, 1, "plh-shm: error: segment '" + s.name + "' has a corrupted header"});
    // ls lists it as unreadable instead of failing.
    const auto r = run({PLH_SHM_BIN, "ls"});
    CHECK(r.code == 0);
    CHECK_THAT(r.out, Catch::Contains(s.name));
    CHECK_THAT(r.out, Catch::Contains("unreadable"));
  }
}

TEST_CASE("plh-shm create, rm and the permission bits", "[cli][shm]") {
  const std::string name = "shmc" + plh::test::unique_suffix();
  check_case({{"create", name, "--slots", "4", "--slot-size", "1K"}, 0, ""});
  check_case({{"create", name, "--slots", "4", "--slot-size", "1K"}, 1, "plh-shm: error: segment '" + name + "' already exists"});
  auto r = run({PLH_SHM_BIN, "info", name, "--json"});
  CHECK(nlohmann::json::parse(r.out)["mode"] == "0600");
  check_case({{"write", name, "--create", "--slots", "8", "--slot-size", "1K"}, 6,
              "plh-shm: error: segment '" + name + "' exists with 4 slots"});
  check_case({{"rm", name}, 0, ""});
  r = run({"/bin/sh", "-c", "umask 077; exec " PLH_SHM_BIN " create " + name + " --slots 2 --slot-size 16 --mode 0660"});
  CHECK(r.code == 0);
  r = run({PLH_SHM_BIN, "info", name, "--json"});
  CHECK(nlohmann::json::parse(r.out)["mode"] == "0660");
  check_case({{"rm", name}, 0, ""});
}

TEST_CASE("man plh-shm(1) documents every long option of every subcommand", "[cli][shm][man]") {
  std::ifstream f(std::string(PLH_SOURCE_DIR) + "/man/plh-shm.1");
  REQUIRE(f);
  std::stringstream ss;
  ss << f.rdbuf();
  std::string man = ss.str();
  // roff writes "\-\-slots"; compare against plain text.
  for (std::size_t p; (p = man.find("\\-")) != std::string::npos;) man.replace(p, 2, "-");
  for (const char* section : {"NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "EXIT STATUS", "EXAMPLES", "SEE ALSO"})
    CHECK_THAT(man, Catch::Contains(std::string(".SH ") + section) || Catch::Contains(std::string(".SH \"") + section));
  std::set<std::string> options;
  const std::regex long_opt("--[a-z][a-z0-9-]+");
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"--help"}, {"create", "--help"}, {"write", "--help"}, {"read", "--help"},
        {"info", "--help"}, {"ls", "--help"}, {"rm", "--help"}}) {
    std::vector<std::string> argv{PLH_SHM_BIN};
    argv.insert(argv.end(), args.begin(), args.end());
    const auto r = run(argv);
    REQUIRE(r.code == 0);
    for (std::sregex_iterator it(r.out.begin(), r.out.end(), long_opt), end; it != end; ++it) options.insert(it->str());
  }
  CHECK(options.size() > 20);
  for (const auto& o : options) {
    INFO(o);
    CHECK_THAT(man, Catch::Contains(o));
  }
}

#endif
