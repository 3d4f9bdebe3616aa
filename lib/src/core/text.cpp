#include "plh/core/text.hpp"

#include <unistd.h>

#include <cctype>
#include <charconv>
#include <cmath>
#include <cstring>
#include <ctime>

#include <unicode/uchar.h>
#include <unicode/utf8.h>

#include "plh/core/error.hpp"

namespace plh {

std::string errno_text(int err) { return std::strerror(err); }

namespace {

// Splits "12.5ms" into 12.5 and "ms"; false when there is no leading number.
bool split_number(std::string_view text, double& value, std::string_view& unit) {
  std::size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) ++i;
  if (i == 0) return false;
  const std::string num(text.substr(0, i));
  char* end = nullptr;
  value = std::strtod(num.c_str(), &end);
  if (end != num.c_str() + num.size() || !std::isfinite(value) || value < 0) return false;
  unit = text.substr(i);
  return true;
}

}  // namespace

std::chrono::nanoseconds parse_duration(std::string_view text) {
  double v = 0;
  std::string_view unit;
  if (!split_number(text, v, unit)) throw UsageError("invalid duration '" + std::string(text) + "'");
  double scale = 0;
  if (unit.empty() || unit == "s") scale = 1e9;
  else if (unit == "ms") scale = 1e6;
  else if (unit == "us") scale = 1e3;
  else if (unit == "ns") scale = 1;
  else if (unit == "m" || unit == "min") scale = 60e9;
  else if (unit == "h") scale = 3600e9;
  else throw UsageError("invalid duration '" + std::string(text) + "' (units: ns, us, ms, s, m, h)");
  const double ns = v * scale;
  if (ns > 9.0e18) throw UsageError("duration '" + std::string(text) + "' is too large");
  return std::chrono::nanoseconds(static_cast<std::int64_t>(ns));
}

std::uint64_t parse_size(std::string_view text) {
  double v = 0;
  std::string_view unit;
  if (!split_number(text, v, unit)) throw UsageError("invalid size '" + std::string(text) + "'");
  double scale = 0;
  if (unit.empty() || unit == "B") scale = 1;
  else if (unit == "K" || unit == "k" || unit == "KiB" || unit == "KB") scale = 1024.0;
  else if (unit == "M" || unit == "MiB" || unit == "MB") scale = 1024.0 * 1024;
  else if (unit == "G" || unit == "GiB" || unit == "GB") scale = 1024.0 * 1024 * 1024;
  else throw UsageError("invalid size '" + std::string(text) + "' (units: K, M, G)");
  const double bytes = v * scale;
  if (bytes > 1.8e19 || bytes != std::floor(bytes)) throw UsageError("invalid size '" + std::string(text) + "'");
  return static_cast<std::uint64_t>(bytes);
}

namespace {
// One code point of a channel name: ASCII letters and digits, or (UTF-8) a Unicode letter
// (General Category L*), decimal digit (Nd) or, after the first character, mark (M*).
// -1 when the bytes at i are not valid UTF-8.
UChar32 next_code_point(std::string_view s, std::size_t& i) {
  const auto* p = reinterpret_cast<const std::uint8_t*>(s.data());
  const auto n = static_cast<std::int32_t>(s.size());
  auto at = static_cast<std::int32_t>(i);
  UChar32 c = 0;
  U8_NEXT(p, at, n, c);
  i = static_cast<std::size_t>(at);
  return c;
}
}  // namespace

std::string channel_name_problem(std::string_view name) {
  if (name.empty()) return "empty name";
  if (name.size() > 255) return "longer than 255 bytes";
  bool first = true;
  for (std::size_t i = 0; i < name.size();) {
    const UChar32 c = next_code_point(name, i);
    if (c < 0) return "not valid UTF-8";
    if (c == '.') {
      if (first) return "empty component";
      first = true;
      continue;
    }
    const bool word = u_isalpha(c) || u_isdigit(c);
    if (first && !word) return "each component must start with a letter or a digit";
    if (!first && !(word || c == '_' || c == '-' || (c >= 0x80 && (U_GET_GC_MASK(c) & U_GC_M_MASK))))
      return "components may contain only letters, digits, '_' and '-'";
    first = false;
  }
  if (first) return "empty component";
  return {};
}

void validate_channel_name(std::string_view name) {
  const std::string problem = channel_name_problem(name);
  if (!problem.empty()) throw UsageError("invalid channel name '" + echo_input(name) + "': " + problem);
}

std::string channel_pattern_problem(std::string_view pattern) {
  if (pattern.empty()) return "empty pattern";
  if (pattern.size() > 255) return "longer than 255 bytes";
  // Each wildcard component is replaced by a letter; the rest follows the name grammar.
  std::string name;
  name.reserve(pattern.size());
  std::size_t start = 0;
  for (;;) {
    const std::size_t dot = pattern.find('.', start);
    const std::string_view comp = pattern.substr(start, dot == std::string_view::npos ? dot : dot - start);
    if (comp == "*" || comp == ">") {
      if (comp == ">" && dot != std::string_view::npos) return "'>' may only be the last component";
      name += 'x';
    } else if (comp.find_first_of("*>") != std::string_view::npos) {
      return "a wildcard ('*', '>') must be a whole component";
    } else {
      name.append(comp);
    }
    if (dot == std::string_view::npos) break;
    name += '.';
    start = dot + 1;
  }
  return channel_name_problem(name);
}

void validate_channel_pattern(std::string_view pattern) {
  const std::string problem = channel_pattern_problem(pattern);
  if (!problem.empty()) throw UsageError("invalid channel pattern '" + echo_input(pattern) + "': " + problem);
}

bool is_channel_pattern(std::string_view pattern) noexcept {
  std::size_t start = 0;
  for (;;) {
    const std::size_t dot = pattern.find('.', start);
    const std::string_view comp = pattern.substr(start, dot == std::string_view::npos ? dot : dot - start);
    if (comp == "*" || comp == ">") return true;
    if (dot == std::string_view::npos) return false;
    start = dot + 1;
  }
}

bool channel_matches(std::string_view pattern, std::string_view name) noexcept {
  std::size_t p = 0, n = 0;
  for (;;) {
    const std::size_t pdot = pattern.find('.', p);
    const std::string_view pc = pattern.substr(p, pdot == std::string_view::npos ? pdot : pdot - p);
    if (n > name.size()) return false;  // the name has no component left
    if (pc == ">") return n < name.size();  // one or more components
    const std::size_t ndot = name.find('.', n);
    const std::string_view nc = name.substr(n, ndot == std::string_view::npos ? ndot : ndot - n);
    if (pc != "*" && pc != nc) return false;
    const bool plast = pdot == std::string_view::npos, nlast = ndot == std::string_view::npos;
    if (plast || nlast) return plast && nlast;
    p = pdot + 1;
    n = ndot + 1;
  }
}

std::string echo_input(std::string_view s, std::size_t max) {
  std::string out;
  static constexpr char kHex[] = "0123456789abcdef";
  auto escape = [&](std::uint8_t b) {
    out += "\\x";
    out += kHex[b >> 4];
    out += kHex[b & 15];
  };
  std::size_t i = 0;
  while (i < s.size() && i < max) {
    const std::size_t start = i;
    const UChar32 c = next_code_point(s, i);
    if (c < 0) {
      for (std::size_t j = start; j < i; ++j) escape(static_cast<std::uint8_t>(s[j]));
    } else if (c < 0x20 || c == 0x7f ||
               (c >= 0x80 && (U_GET_GC_MASK(c) & (U_GC_CC_MASK | U_GC_CF_MASK | U_GC_CS_MASK | U_GC_CN_MASK |
                                                  U_GC_CO_MASK | U_GC_ZL_MASK | U_GC_ZP_MASK)))) {
      // Controls, format characters (bidi overrides), unassigned: shown as their bytes.
      for (std::size_t j = start; j < i; ++j) escape(static_cast<std::uint8_t>(s[j]));
    } else {
      out.append(s.substr(start, i - start));
    }
  }
  if (i < s.size()) out += "...";
  return out;
}

std::string printable(std::string_view s, std::size_t max) {
  std::string out;
  for (char c : s.substr(0, max)) out += (c >= 0x20 && c < 0x7f) ? c : '?';
  if (s.size() > max) out += "...";
  return out;
}

const std::string& hostname() {
  static const std::string name = [] {
    char buf[256] = {};
    if (::gethostname(buf, sizeof buf - 1) != 0) return std::string("localhost");
    return std::string(buf);
  }();
  return name;
}

std::int64_t realtime_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

}  // namespace plh
