#pragma once
// Shell completion generated from a tool's CLI11 definitions, so it cannot drift from
// --help: `plh-X --completion bash|zsh` prints the script (cli::run handles the flag).
// Options and subcommands come from the App; values of options with a fixed set
// (CLI::IsMember, shown as TEXT:{a,b}) complete to that set; *-file and key options to
// paths; a CHANNEL/SERVICE positional to the channels `plh-ctl list` shows; plh-shm's
// NAME to the segments in /dev/shm.
#include <CLI/CLI.hpp>
#include <string>
#include <string_view>

namespace plh::cli {

// The completion script for `tool` in `shell` ("bash" or "zsh"); throws
// UsageError for another shell.
std::string completion_script(const CLI::App& app, std::string_view tool, std::string_view shell);

}  // namespace plh::cli
