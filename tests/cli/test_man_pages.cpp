// Every long option a tool's --help shows (and, for tools with subcommands, each
// subcommand's --help) appears in that tool's man page, man/<tool>.1, which also has
// the standard sections.
#include <catch2/catch.hpp>

#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "help_text.hpp"
#include "process.hpp"

namespace {

std::string read_man_page(const std::string& tool) {
  std::ifstream in(std::string(PLH_SOURCE_DIR) + "/man/" + tool + ".1");
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  // roff to plain text, enough for option names: "\-" -> "-", drop font changes "\fB" "\fR" "\fI" "\fP".
  std::string plain;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\\' && i + 1 < text.size()) {
      if (text[i + 1] == '-') {
        plain += '-';
        ++i;
        continue;
      }
      if (text[i + 1] == 'f' && i + 2 < text.size()) {
        i += 2;
        continue;
      }
      if (text[i + 1] == '&') {
        ++i;
        continue;
      }
    }
    plain += text[i];
  }
  return plain;
}

using plh::test::long_options;
using plh::test::subcommands;

bool option_in_page(const std::string& page, const std::string& opt) {
  // Whole option name: not followed by another name character.
  for (std::size_t pos = page.find(opt); pos != std::string::npos; pos = page.find(opt, pos + 1)) {
    const std::size_t end = pos + opt.size();
    if (end >= page.size()) return true;
    const char c = page[end];
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-')) return true;
  }
  return false;
}

void check_tool(const std::string& bin, const std::string& tool) {
  const std::string page = read_man_page(tool);
  REQUIRE_FALSE(page.empty());
  for (const char* section : {".SH NAME", ".SH SYNOPSIS", ".SH DESCRIPTION", ".SH OPTIONS", ".SH EXIT STATUS",
                              ".SH EXAMPLES", ".SH SEE ALSO"}) {
    INFO(tool << ".1 needs section " << section);
    CHECK(page.find(section) != std::string::npos);
  }
  auto top = plh::test::run({bin, "--help"});
  REQUIRE(top.code == 0);
  std::vector<std::pair<std::string, std::string>> helps{{"", top.out}};
  for (const auto& sub : subcommands(top.out)) {
    auto r = plh::test::run({bin, sub, "--help"});
    INFO(tool << " " << sub << " --help");
    CHECK(r.code == 0);
    helps.emplace_back(sub, r.out);
  }
  for (const auto& [sub, help] : helps)
    for (const auto& opt : long_options(help)) {
      INFO("man/" << tool << ".1 does not mention " << opt << " (from `" << tool << (sub.empty() ? "" : " " + sub)
                  << " --help`)");
      CHECK(option_in_page(page, opt));
    }
}

}  // namespace

#ifdef PLH_BROKER_BIN
TEST_CASE("man page plh-broker.1 covers every long option", "[cli][man]") { check_tool(PLH_BROKER_BIN, "plh-broker"); }
#endif
#ifdef PLH_CTL_BIN
TEST_CASE("man page plh-ctl.1 covers every long option", "[cli][man]") { check_tool(PLH_CTL_BIN, "plh-ctl"); }
#endif
#ifdef PLH_PUB_BIN
TEST_CASE("man page plh-pub.1 covers every long option", "[cli][man]") { check_tool(PLH_PUB_BIN, "plh-pub"); }
#endif
#ifdef PLH_SUB_BIN
TEST_CASE("man page plh-sub.1 covers every long option", "[cli][man]") { check_tool(PLH_SUB_BIN, "plh-sub"); }
#endif
#ifdef PLH_SHM_BIN
TEST_CASE("man page plh-shm.1 covers every long option", "[cli][man]") { check_tool(PLH_SHM_BIN, "plh-shm"); }
#endif
#ifdef PLH_REQ_BIN
TEST_CASE("man page plh-req.1 covers every long option", "[cli][man]") { check_tool(PLH_REQ_BIN, "plh-req"); }
#endif
#ifdef PLH_REP_BIN
TEST_CASE("man page plh-rep.1 covers every long option", "[cli][man]") { check_tool(PLH_REP_BIN, "plh-rep"); }
#endif
