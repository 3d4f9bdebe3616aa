#include "plh/core/text.hpp"

#include <unistd.h>

#include <cctype>
#include <charconv>
#include <cmath>
#include <cstring>
#include <ctime>

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

std::string channel_name_problem(std::string_view name) {
  if (name.empty()) return "empty name";
  if (name.size() > 255) return "longer than 255 characters";
  std::size_t start = 0;
  while (true) {
    const std::size_t dot = name.find('.', start);
    const std::string_view comp = name.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (comp.empty()) return "empty component";
    if (!std::isalpha(static_cast<unsigned char>(comp[0])))
      return "each component must start with a letter";
    for (char c : comp) {
      const auto u = static_cast<unsigned char>(c);
      if (!(std::isalnum(u) || c == '_' || c == '-'))
        return "components may contain only letters, digits, '_' and '-'";
    }
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return {};
}

void validate_channel_name(std::string_view name) {
  const std::string problem = channel_name_problem(name);
  if (!problem.empty()) {
    std::string shown(name.substr(0, 64));
    for (char& c : shown)
      if (!std::isprint(static_cast<unsigned char>(c))) c = '?';
    throw UsageError("invalid channel name '" + shown + "': " + problem);
  }
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
