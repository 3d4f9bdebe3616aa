#pragma once
// Strict, bounded JSON for everything plh reads from outside: control-plane requests and
// replies, `-f json` input, LIST_ACK pass-through. Stateless and thread-safe.
#include <nlohmann/json.hpp>

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace plh::json_text {

// One pass over JSON text without building a tree (for multi-MiB replies such as a
// LIST_ACK of 10,000 channels that a tool passes through): checks that `text` is exactly
// one valid JSON value (RFC 8259, UTF-8, nesting at most max_depth) and, when it is an
// object, records the raw text of each top-level member's value.
struct JsonScan {
  bool ok = false;
  bool is_object = false;
  std::string error;  // when !ok
  std::vector<std::pair<std::string_view, std::string_view>> members;  // raw key (no quotes) -> raw value
  // Raw value text of a top-level member, or empty when absent.
  std::string_view member(std::string_view key) const noexcept;
};
JsonScan scan_json(std::string_view text, int max_depth = 256);

// The one strict JSON check for everything plh reads (requests, replies, -f json input):
// `text` must be exactly one JSON value (RFC 8259, UTF-8) with nothing before or after it:
// no NUL byte anywhere (nlohmann's lexer would take one for the end of the input), no
// byte order mark, valid escapes and surrogate pairs, at most `max_depth` nested objects
// and arrays and at most `max_values` values in all. Parsing is nlohmann's SAX parser
// (iterative), stopped as soon as a limit is passed.
struct JsonLimits {
  int max_depth = 256;
  std::size_t max_values = static_cast<std::size_t>(-1);
};
// Parses `text` under these rules; on failure returns a discarded value and, when `error`
// is given, stores what is wrong there ("NUL byte at offset 10", "nested deeper than 32
// levels", "parse error at line 1, column 3: ...").
nlohmann::json parse_json(std::string_view text, JsonLimits limits = {}, std::string* error = nullptr);

// Appends `s` as a JSON string literal (quotes, escapes; `s` must be valid UTF-8).
void append_json_string(std::string& out, std::string_view s);

}  // namespace plh::json_text
