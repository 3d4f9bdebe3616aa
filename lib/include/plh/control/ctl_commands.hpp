#pragma once
// The subcommands of plh-ctl, as library functions: each writes its result to `out`
// (stdout in the tool) and returns the exit code, or throws plh::Error with the SPEC
// exit code (UnreachableError 5, NotFoundError 4, RefusedError 6, TimeoutError 3...).
// Human output is an aligned table; json = one JSON document (stats --watch --json:
// one document per line per refresh).
#include <chrono>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "plh/control/broker_client.hpp"

namespace plh::ctl {

int list(const BrokerClientConfig& cfg, bool json, std::FILE* out);
int info(const BrokerClientConfig& cfg, const std::string& channel, bool json, std::FILE* out);
int ping(const BrokerClientConfig& cfg, bool json, std::FILE* out);
// Polls DISC_REQ until the channel exists (0). No timeout = wait until a stop signal.
int wait(const BrokerClientConfig& cfg, const std::string& channel,
         std::optional<std::chrono::nanoseconds> timeout, bool json, std::FILE* out);
int close(const BrokerClientConfig& cfg, const std::string& channel, const std::optional<std::string>& admin_token,
          bool json, std::FILE* out);
int keygen(const std::optional<std::string>& prefix, bool force, bool json, std::FILE* out);
// With `watch`, refreshes every `interval` until a stop signal (returns 130/143).
int stats(const BrokerClientConfig& cfg, const std::optional<std::string>& channel, bool watch,
          std::chrono::nanoseconds interval, bool json, std::FILE* out);

// Aligned text table: columns separated by two spaces, the first row is the header.
// Numeric-looking cells are right-aligned.
std::string format_table(const std::vector<std::vector<std::string>>& rows);

}  // namespace plh::ctl
