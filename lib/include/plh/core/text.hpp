#pragma once
// Parsing of user-supplied values shared by every tool: durations, sizes, channel
// names. All parsers throw UsageError with a message naming the bad value.
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace plh {

// "500ms", "5s", "2.5s", "1m", "100us", a bare number means seconds.
std::chrono::nanoseconds parse_duration(std::string_view text);

// "65536", "64K", "64KiB", "1M", "1MiB", "1G".
std::uint64_t parse_size(std::string_view text);

// Channel names (docs/protocol.md, plh(7)): UTF-8, at most 255 bytes, dot-separated
// non-empty components; a component starts with a letter or a digit (ASCII or Unicode
// categories L*/Nd) and goes on with letters, digits, combining marks (M*), '_' and '-'.
// Compared byte for byte (no normalisation). Returns an empty string when valid, else the
// reason.
std::string channel_name_problem(std::string_view name);
// Throws UsageError("invalid channel name 'x': <reason>") when invalid.
void validate_channel_name(std::string_view name);

// Channel patterns (plh-sub, WATCH_REQ; plh(7) CHANNEL NAMES), NATS style: a name whose
// components may also be "*" (exactly one component) or, as the last component only, ">"
// (one or more components). A pattern without wildcards is an exact channel name.
// Returns an empty string when valid, else the reason.
std::string channel_pattern_problem(std::string_view pattern);
// Throws UsageError("invalid channel pattern 'x': <reason>") when invalid.
void validate_channel_pattern(std::string_view pattern);
// True when `pattern` has a wildcard component ("*" or ">").
bool is_channel_pattern(std::string_view pattern) noexcept;
// True when the (valid) channel name matches the (valid) pattern.
bool channel_matches(std::string_view pattern, std::string_view name) noexcept;

// User input echoed in an error message: valid UTF-8 kept as typed, control characters
// and invalid bytes escaped as \xNN, at most `max` bytes of input, "..." when cut.
std::string echo_input(std::string_view s, std::size_t max = 64);

// Host name of this machine (cached).
const std::string& hostname();

// CLOCK_REALTIME in nanoseconds.
std::int64_t realtime_ns();

// Untrusted text (from the network, a segment) made safe for a one-line message: at most
// `max` characters, anything but printable ASCII as '?', "..." when cut.
std::string printable(std::string_view s, std::size_t max = 40);

}  // namespace plh
