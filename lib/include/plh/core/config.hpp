#pragma once
// Defaults files and profiles: options of every tool read from
//   $XDG_CONFIG_HOME/plh/config (default ~/.config/plh/config), then
//   /etc/plh/config ($PLH_SYSTEM_CONFIG instead, for containers and tests),
// or from the one file of --config FILE. The files are TOML/INI as CLI11 reads them and
// go through the tool's own CLI11 parser, so a file and the command line cannot drift:
//
//   broker = "tcp://hosta:5555"        # top: every tool that has --broker
//   [plh-sub]                          # one tool
//   format = "json"
//   [plh-shm.create]                   # one subcommand of a tool
//   slots = 256
//   [profile.rig2]                     # a named profile (--profile rig2, PLH_PROFILE)
//   broker = "tcp://rig2:5555"
//   [profile.rig2.plh-pub]
//   advertise = "10.0.2.7"
//
// Precedence (plh(7) "DEFAULTS FILES AND PROFILES"): command line > environment
// (PLH_BROKER, ...) > profile > defaults file > built-in default. Within one layer the
// user's file wins over the system file, and a tool's (subcommand's) section over the top.
#include <CLI/CLI.hpp>

#include <string>
#include <string_view>
#include <vector>

namespace plh::cli {

// One key of a defaults file.
struct ConfigEntry {
  std::string file;                      // the file it was read from
  std::string profile;                   // "" outside [profile.NAME...]
  std::string tool;                      // "" = every tool (the top of the file or of a profile)
  std::vector<std::string> subcommands;  // {"create"} for [plh-shm.create]
  std::string key;                       // option name without dashes ("broker", "W")
  std::vector<std::string> values;
  // "[profile.rig2.plh-sub]", or "top" for keys outside any section.
  std::string section() const;
};

// The files read, in precedence order: `explicit_file` alone when given; else the user's
// and the system's defaults file, those that exist.
std::vector<std::string> config_files(const std::string& explicit_file);
// Both default paths, existing or not (for messages and `plh-ctl config`).
std::vector<std::string> default_config_paths();

// The profile asked for: `option` (--profile) when non-empty, else $PLH_PROFILE, else "".
std::string resolve_profile(const std::string& option);

// Every entry of `files` that applies to `tool` ("" = to any tool), in precedence order:
// the profile's entries first (file by file; subcommand sections, then the tool's, then
// the profile's top), then the plain entries likewise. Other profiles' entries are left
// out. Throws UsageError naming the file for an unreadable file or an unknown section
// (a tool name that is not a plh tool), and when `profile` is non-empty but no file
// defines it.
std::vector<ConfigEntry> read_config(const std::vector<std::string>& files, const std::string& profile,
                                     std::string_view tool);

// The environment variable that wins over `key` from a file (PLH_BROKER for broker), or
// nullptr when there is none.
const char* environment_for_key(std::string_view key);

// --config FILE and --profile NAME on `app`, and the hook that feeds the files into the
// app's parse (CLI11's config stage: after the command line, before callbacks). Called by
// run() for every tool. `after_parse` must be called after a successful parse: a profile
// asked for but defined nowhere is an error even when no file exists.
class DefaultsFiles {
 public:
  DefaultsFiles(CLI::App& app, std::string_view tool);
  void after_parse() const;

 private:
  CLI::App& app_;
  std::string tool_;
  std::string profile_;  // --profile, read back through the option's results
};

// `plh-ctl config [TOOL]`: the files, the profile and each entry with where it came from;
// with a tool, whether it is in effect or what overrides it (the environment, an entry
// above it). `app` is the parsed app of the calling tool (its --config and --profile).
// `json`: one JSON document instead of the table.
std::string describe_config(const CLI::App& app, const std::string& tool, bool json);

}  // namespace plh::cli
