#pragma once
// Reading a tool's --help text (CLI11's format): its long options and subcommands. Used
// by the man-page and shell-completion checks, which must both cover every option.
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace plh::test {

inline std::set<std::string> long_options(const std::string& help) {
  std::set<std::string> out;
  static const std::regex re(R"((?:^|[\s,\[])(--[A-Za-z0-9][A-Za-z0-9-]*))");
  for (auto it = std::sregex_iterator(help.begin(), help.end(), re); it != std::sregex_iterator(); ++it)
    out.insert((*it)[1].str());
  return out;
}

inline std::vector<std::string> subcommands(const std::string& help) {
  std::vector<std::string> out;
  std::istringstream in(help);
  std::string line;
  bool in_section = false;
  while (std::getline(in, line)) {
    if (line.rfind("Subcommands:", 0) == 0) {
      in_section = true;
      continue;
    }
    if (!in_section) continue;
    if (line.empty() || line[0] != ' ') break;
    std::istringstream words(line);
    std::string name;
    words >> name;
    if (!name.empty()) out.push_back(name);
  }
  return out;
}

}  // namespace plh::test
