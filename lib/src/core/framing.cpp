#include "plh/core/framing.hpp"

#include <poll.h>
#include <simdjson.h>
#include <sodium.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>

#include "plh/core/error.hpp"
#include "plh/core/json.hpp"
#include "plh/core/signals.hpp"

namespace plh {

Format parse_format(std::string_view name) {
  if (name == "line") return Format::line;
  if (name == "zero") return Format::zero;
  if (name == "len") return Format::len;
  if (name == "raw") return Format::raw;
  if (name == "json") return Format::json;
  throw UsageError("unknown format '" + std::string(name) + "' (expected line, zero, len, raw or json)");
}

std::string_view format_name(Format fmt) {
  switch (fmt) {
    case Format::line: return "line";
    case Format::zero: return "zero";
    case Format::len: return "len";
    case Format::raw: return "raw";
    case Format::json: return "json";
  }
  return "line";
}

namespace {

constexpr std::size_t kInitialReadBuffer = 256 * 1024;
// A read(2) is only issued with at least this much free space, so reads stay large.
constexpr std::size_t kMinRead = 64 * 1024;
constexpr std::size_t kWriteBuffer = 256 * 1024;

std::uint32_t load_be32(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return (std::uint32_t{u[0]} << 24) | (std::uint32_t{u[1]} << 16) | (std::uint32_t{u[2]} << 8) | std::uint32_t{u[3]};
}

bool is_blank(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; });
}

// Waits until fd is ready for `events`, or a stop is requested (returns false then).
bool wait_ready(int fd, short events) {
  for (;;) {
    pollfd fds[2] = {{fd, events, 0}, {stop_fd(), POLLIN, 0}};
    const nfds_t n = fds[1].fd >= 0 ? 2 : 1;
    const int r = ::poll(fds, n, -1);
    if (r < 0) {
      if (errno == EINTR) {
        if (stop_requested()) return false;
        continue;
      }
      throw Error(ExitCode::failure, "poll: " + errno_text(errno));
    }
    if (fds[0].revents != 0) return true;
    if (n == 2 && fds[1].revents != 0 && stop_requested()) return false;
  }
}

// ---- json output helpers ----

// 0: copy as is; otherwise the character after the backslash ('u' → \u00XX).
constexpr std::array<char, 256> make_escape_table() {
  std::array<char, 256> t{};
  for (int c = 0; c < 0x20; ++c) t[static_cast<std::size_t>(c)] = 'u';
  t['\b'] = 'b';
  t['\f'] = 'f';
  t['\n'] = 'n';
  t['\r'] = 'r';
  t['\t'] = 't';
  t['"'] = '"';
  t['\\'] = '\\';
  return t;
}
constexpr std::array<char, 256> kEscape = make_escape_table();

// Writes the escaped form of s at p (room for 6 * s.size() bytes); returns the new end.
char* put_escaped(char* p, std::string_view s) {
  const auto* in = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  std::size_t i = 0;
  while (i < n) {
    const std::size_t start = i;
    while (i < n && kEscape[in[i]] == 0) ++i;
    std::memcpy(p, in + start, i - start);
    p += i - start;
    if (i == n) break;
    const unsigned char c = in[i++];
    const char e = kEscape[c];
    *p++ = '\\';
    *p++ = e;
    if (e == 'u') {
      static constexpr char hex[] = "0123456789abcdef";
      *p++ = '0';
      *p++ = '0';
      *p++ = hex[c >> 4];
      *p++ = hex[c & 0xF];
    }
  }
  return p;
}

char* put(char* p, std::string_view s) {
  std::memcpy(p, s.data(), s.size());
  return p + s.size();
}

template <typename Int>
char* put_int(char* p, Int v) {
  return std::to_chars(p, p + 24, v).ptr;
}

// ---- json input fast path ----
// The lines plh-sub -f json writes (and most hand-made ones) are flat objects. This
// scanner takes such a line in one pass without building a DOM: it decodes "data",
// or finds "data_b64" (returned as a view when it holds no escapes), and skips other
// values, checking their grammar. Anything it is not sure about (duplicate keys,
// escaped keys, deep nesting, invalid UTF-8, any syntax error) yields `unknown`, and
// the caller lets nlohmann parse the line, so results and error messages stay exact.
enum class JsonPayload { data, data_b64, unknown };

class JsonLineScanner {
 public:
  explicit JsonLineScanner(std::string_view s) : p_(s.data()), end_(s.data() + s.size()) {}

  JsonPayload scan(std::string& data, std::string_view& b64) {
    bool have_data = false, have_b64 = false;
    ws();
    if (!eat('{')) return JsonPayload::unknown;
    ws();
    if (!eat('}')) {
      for (;;) {
        std::string_view key;
        if (!raw_string(key)) return JsonPayload::unknown;
        ws();
        if (!eat(':')) return JsonPayload::unknown;
        ws();
        if (key == "data" && peek() == '"') {
          if (have_data || !decode_string(data)) return JsonPayload::unknown;
          have_data = true;
        } else if (key == "data_b64" && peek() == '"') {
          if (have_b64 || !raw_string(b64)) return JsonPayload::unknown;
          have_b64 = true;
        } else if (key == "data" || key == "data_b64") {
          return JsonPayload::unknown;  // not a string: let the slow path decide
        } else if (!skip_value(0)) {
          return JsonPayload::unknown;
        }
        ws();
        if (eat(',')) {
          ws();
          continue;
        }
        if (eat('}')) break;
        return JsonPayload::unknown;
      }
    }
    ws();
    if (p_ != end_) return JsonPayload::unknown;
    if (have_data) return JsonPayload::data;
    if (have_b64) return JsonPayload::data_b64;
    return JsonPayload::unknown;
  }

 private:
  char peek() const { return p_ < end_ ? *p_ : '\0'; }
  bool eat(char c) {
    if (p_ < end_ && *p_ == c) {
      ++p_;
      return true;
    }
    return false;
  }
  void ws() {
    while (p_ < end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\r' || *p_ == '\n')) ++p_;
  }
  // A string without escapes, as a view (a key or base64 text).
  bool raw_string(std::string_view& out) {
    if (!eat('"')) return false;
    const char* start = p_;
    while (p_ < end_ && *p_ != '"') {
      if (*p_ == '\\' || static_cast<unsigned char>(*p_) < 0x20) return false;
      ++p_;
    }
    if (p_ == end_) return false;
    out = std::string_view(start, static_cast<std::size_t>(p_ - start));
    ++p_;
    return is_valid_utf8(out);
  }
  static int hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }
  bool hex4(unsigned& v) {
    if (end_ - p_ < 4) return false;
    v = 0;
    for (int i = 0; i < 4; ++i) {
      const int h = hex(p_[i]);
      if (h < 0) return false;
      v = v * 16 + static_cast<unsigned>(h);
    }
    p_ += 4;
    return true;
  }
  static void put_utf8(std::string& out, unsigned cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }
  bool decode_string(std::string& out) {
    out.clear();
    if (!eat('"')) return false;
    for (;;) {
      const char* run = p_;
      while (p_ < end_ && *p_ != '"' && *p_ != '\\' && static_cast<unsigned char>(*p_) >= 0x20) ++p_;
      const std::string_view chunk(run, static_cast<std::size_t>(p_ - run));
      if (!is_valid_utf8(chunk)) return false;
      out.append(chunk);
      if (p_ == end_ || static_cast<unsigned char>(*p_) < 0x20) return false;
      if (*p_++ == '"') return true;
      if (p_ == end_) return false;
      switch (*p_++) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          unsigned cp = 0;
          if (!hex4(cp)) return false;
          if (cp >= 0xDC00 && cp <= 0xDFFF) return false;  // lone low surrogate
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            unsigned lo = 0;
            if (!eat('\\') || !eat('u') || !hex4(lo) || lo < 0xDC00 || lo > 0xDFFF) return false;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          put_utf8(out, cp);
          break;
        }
        default:
          return false;
      }
    }
  }
  bool skip_string() {
    if (!eat('"')) return false;
    const char* start = p_;
    while (p_ < end_ && *p_ != '"') {
      const auto c = static_cast<unsigned char>(*p_);
      if (c < 0x20) return false;
      if (c == '\\') {
        if (++p_ == end_) return false;
        if (*p_ == 'u') {
          ++p_;
          unsigned v = 0;
          if (!hex4(v) || (v >= 0xDC00 && v <= 0xDFFF)) return false;  // lone low surrogate
          if (v >= 0xD800 && v <= 0xDBFF) {
            unsigned lo = 0;
            if (!eat('\\') || !eat('u') || !hex4(lo) || lo < 0xDC00 || lo > 0xDFFF) return false;
          }
          continue;
        }
        if (std::strchr("\"\\/bfnrt", *p_) == nullptr) return false;
      }
      ++p_;
    }
    if (p_ == end_) return false;
    const bool ok = is_valid_utf8(std::string_view(start, static_cast<std::size_t>(p_ - start)));
    ++p_;
    return ok;
  }
  bool digits() {
    const char* start = p_;
    while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
    return p_ > start;
  }
  bool skip_number() {
    eat('-');
    if (eat('0')) {
      // no leading zeros
    } else if (!digits()) {
      return false;
    }
    if (eat('.') && !digits()) return false;
    if (eat('e') || eat('E')) {
      if (!eat('+')) eat('-');
      if (!digits()) return false;
    }
    return true;
  }
  bool literal(std::string_view word) {
    if (static_cast<std::size_t>(end_ - p_) < word.size() || std::string_view(p_, word.size()) != word) return false;
    p_ += word.size();
    return true;
  }
  bool skip_value(int depth) {
    if (depth > 16) return false;
    switch (peek()) {
      case '"': return skip_string();
      case 't': return literal("true");
      case 'f': return literal("false");
      case 'n': return literal("null");
      case '[': {
        ++p_;
        ws();
        if (eat(']')) return true;
        for (;;) {
          if (!skip_value(depth + 1)) return false;
          ws();
          if (eat(']')) return true;
          if (!eat(',')) return false;
          ws();
        }
      }
      case '{': {
        ++p_;
        ws();
        if (eat('}')) return true;
        for (;;) {
          if (!skip_string()) return false;
          ws();
          if (!eat(':')) return false;
          ws();
          if (!skip_value(depth + 1)) return false;
          ws();
          if (eat('}')) return true;
          if (!eat(',')) return false;
          ws();
        }
      }
      default: return skip_number();
    }
  }

  const char* p_;
  const char* end_;
};

JsonPayload scan_json_payload(std::string_view line, std::string& data, std::string_view& b64) {
  return JsonLineScanner(line).scan(data, b64);
}

}  // namespace

namespace {
// Below 64 bytes (a line, a short message: what is validated once per message) the scalar
// loop beats simdjson's call; above, simdjson's SIMD validator is 2-20x faster
// (bench/bench_simdjson.cpp, docs/performance.md "JSON and UTF-8").
constexpr std::size_t kSimdUtf8From = 64;
}  // namespace

namespace detail {
bool is_valid_utf8_scalar(std::string_view str) noexcept {
  const auto* s = reinterpret_cast<const unsigned char*>(str.data());
  const std::size_t n = str.size();
  std::size_t i = 0;
  while (i < n) {
    // ASCII fast path, 8 bytes at a time.
    while (i + 8 <= n) {
      std::uint64_t w;
      std::memcpy(&w, s + i, 8);
      if (w & 0x8080808080808080ULL) break;
      i += 8;
    }
    if (i >= n) break;
    const unsigned char c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t len;
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;  // overlong
      if (c == 0xED) hi = 0x9F;  // surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;  // overlong
      if (c == 0xF4) hi = 0x8F;  // > U+10FFFF
    } else {
      return false;
    }
    if (i + len > n) return false;
    if (s[i + 1] < lo || s[i + 1] > hi) return false;
    for (std::size_t k = 2; k < len; ++k)
      if ((s[i + k] & 0xC0) != 0x80) return false;
    i += len;
  }
  return true;
}
}  // namespace detail

bool is_valid_utf8(std::string_view str) noexcept {
  if (str.size() < kSimdUtf8From) return detail::is_valid_utf8_scalar(str);
  return simdjson::validate_utf8(str.data(), str.size());
}

void append_json_escaped(std::string& out, std::string_view s) {
  const std::size_t old = out.size();
  out.resize(old + 6 * s.size());
  char* end = put_escaped(out.data() + old, s);
  out.resize(static_cast<std::size_t>(end - out.data()));
}

// ---------------------------------------------------------------- FrameReader

FrameReader::FrameReader(int fd, Format fmt, std::size_t chunk_size, std::size_t max_message)
    : fd_(fd), fmt_(fmt), chunk_size_(chunk_size), max_message_(max_message) {
  if (chunk_size_ == 0) throw UsageError("chunk size must be at least 1 byte");
  if (max_message_ == 0) throw UsageError("maximum message size must be at least 1 byte");
  cap_ = kInitialReadBuffer;
  buf_ = std::make_unique<char[]>(cap_);
}

FrameReader::~FrameReader() = default;

void FrameReader::fail(std::string message) {
  error_ = std::move(message);
  throw Error(ExitCode::failure, *error_);
}

FrameReader::Found FrameReader::extract(std::string_view& out) {
  char* const base = buf_.get();
  switch (fmt_) {
    case Format::line:
    case Format::zero: {
      const char delim = fmt_ == Format::zero ? '\0' : '\n';
      const std::size_t from = std::max(scanned_, begin_);
      const void* hit = std::memchr(base + from, delim, end_ - from);
      if (hit == nullptr) {
        scanned_ = end_;
        if (end_ - begin_ > max_message_)
          fail("message longer than the maximum of " + std::to_string(max_message_) + " bytes");
        return Found::need_more;
      }
      const std::size_t pos = static_cast<std::size_t>(static_cast<const char*>(hit) - base);
      if (pos - begin_ > max_message_)
        fail("message longer than the maximum of " + std::to_string(max_message_) + " bytes");
      out = std::string_view(base + begin_, pos - begin_);
      begin_ = pos + 1;
      scanned_ = begin_;
      return Found::message;
    }
    case Format::len: {
      const std::size_t live = end_ - begin_;
      if (live < 4) return Found::need_more;
      const std::size_t n = load_be32(base + begin_);
      if (n > max_message_)
        fail("len frame of " + std::to_string(n) + " bytes is over the maximum of " + std::to_string(max_message_) +
             " bytes (is the input really -f len?)");
      if (live < 4 + n) return Found::need_more;
      out = std::string_view(base + begin_ + 4, n);
      begin_ += 4 + n;
      return Found::message;
    }
    case Format::raw: {
      if (begin_ == end_) return Found::need_more;
      const std::size_t n = std::min(chunk_size_, end_ - begin_);
      out = std::string_view(base + begin_, n);
      begin_ += n;
      return Found::message;
    }
    case Format::json: {
      for (;;) {
        const std::size_t from = std::max(scanned_, begin_);
        const void* hit = std::memchr(base + from, '\n', end_ - from);
        if (hit == nullptr) {
          scanned_ = end_;
          if (end_ - begin_ > max_message_)
            fail("json input line " + std::to_string(json_line_ + 1) + " is longer than the maximum of " +
                 std::to_string(max_message_) + " bytes");
          return Found::need_more;
        }
        const std::size_t pos = static_cast<std::size_t>(static_cast<const char*>(hit) - base);
        if (pos - begin_ > max_message_)
          fail("json input line " + std::to_string(json_line_ + 1) + " is longer than the maximum of " +
               std::to_string(max_message_) + " bytes");
        const std::string_view line(base + begin_, pos - begin_);
        begin_ = pos + 1;
        scanned_ = begin_;
        ++json_line_;
        if (is_blank(line)) continue;
        out = decode_json_line(line);
        return Found::message;
      }
    }
  }
  return Found::need_more;
}

std::string_view FrameReader::decode_json_line(std::string_view line) {
  auto where = [&] { return "json input line " + std::to_string(json_line_); };
  auto decode_b64 = [&](std::string_view text) {
    decoded_.resize(text.size() / 4 * 3 + 3);
    std::size_t bin_len = 0;
    auto decode = [&](int variant) {
      return sodium_base642bin(reinterpret_cast<unsigned char*>(decoded_.data()), decoded_.size(), text.data(),
                               text.size(), nullptr, &bin_len, nullptr, variant) == 0;
    };
    if (!decode(sodium_base64_VARIANT_ORIGINAL) && !decode(sodium_base64_VARIANT_ORIGINAL_NO_PADDING))
      fail(where() + ": \"data_b64\" is not valid base64");
    decoded_.resize(bin_len);
  };

  std::string_view b64;
  switch (scan_json_payload(line, decoded_, b64)) {
    case JsonPayload::data:
      break;
    case JsonPayload::data_b64:
      decode_b64(b64);
      break;
    case JsonPayload::unknown: {
      // Not the plain shape the scanner takes: the strict parser decides (a NUL, trailing
      // bytes, a bad escape or surrogate are errors) and names the problem.
      std::string why;
      nlohmann::json j = json_text::parse_json(line, json_text::JsonLimits{}, &why);
      if (j.is_discarded()) fail(where() + ": not valid JSON: " + why);
      if (!j.is_object()) fail(where() + ": expected a JSON object with a \"data\" or \"data_b64\" string field");
      if (auto it = j.find("data"); it != j.end() && it->is_string()) {
        decoded_ = std::move(it->get_ref<std::string&>());
      } else if (auto b = j.find("data_b64"); b != j.end() && b->is_string()) {
        decode_b64(b->get_ref<const std::string&>());
      } else {
        fail(where() + ": expected a JSON object with a \"data\" or \"data_b64\" string field");
      }
      break;
    }
  }
  if (decoded_.size() > max_message_)
    fail(where() + ": message longer than the maximum of " + std::to_string(max_message_) + " bytes");
  return decoded_;
}

std::optional<std::string_view> FrameReader::finish_at_eof() {
  const std::size_t live = end_ - begin_;
  if (live == 0) return std::nullopt;
  const std::string_view rest(buf_.get() + begin_, live);
  switch (fmt_) {
    case Format::line:
    case Format::zero:
    case Format::raw:  // not reached: raw extracts whatever is buffered
      begin_ = end_;
      ++count_;
      return rest;
    case Format::len:
      if (live < 4)
        fail("truncated len frame at end of input: " + std::to_string(live) + " of the 4 length bytes");
      fail("truncated len frame at end of input: the length says " + std::to_string(load_be32(rest.data())) +
           " bytes but only " + std::to_string(live - 4) + " follow");
    case Format::json: {
      begin_ = end_;
      ++json_line_;
      if (is_blank(rest)) return std::nullopt;
      auto out = decode_json_line(rest);
      ++count_;
      return out;
    }
  }
  return std::nullopt;
}

void FrameReader::make_room(std::size_t want) {
  if (begin_ == end_) begin_ = end_ = scanned_ = 0;
  if (cap_ - end_ >= want) return;
  const std::size_t live = end_ - begin_;
  if (begin_ > 0 && live <= cap_ / 2 && live + want <= cap_) {
    std::memmove(buf_.get(), buf_.get() + begin_, live);
  } else {
    const std::size_t new_cap = std::max(cap_ * 2, live + want);
    auto bigger = std::make_unique<char[]>(new_cap);
    std::memcpy(bigger.get(), buf_.get() + begin_, live);
    buf_ = std::move(bigger);
    cap_ = new_cap;
  }
  scanned_ = scanned_ > begin_ ? scanned_ - begin_ : 0;
  begin_ = 0;
  end_ = live;
}

bool FrameReader::fill() {
  for (;;) {
    if (stop_requested()) return false;
    const ssize_t n = ::read(fd_, buf_.get() + end_, cap_ - end_);
    if (n > 0) {
      end_ += static_cast<std::size_t>(n);
      return true;
    }
    if (n == 0) {
      eof_ = true;
      return true;
    }
    if (errno == EINTR) continue;  // the loop head checks stop_requested()
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (!wait_ready(fd_, POLLIN)) return false;
      continue;
    }
    fail("reading input: " + errno_text(errno));
  }
}

std::optional<std::string_view> FrameReader::next() {
  if (error_) throw Error(ExitCode::failure, *error_);
  for (;;) {
    std::string_view out;
    if (extract(out) == Found::message) {
      ++count_;
      return out;
    }
    if (eof_) return finish_at_eof();
    make_room(kMinRead);
    if (!fill()) return std::nullopt;
  }
}

bool FrameReader::has_buffered() const {
  if (error_) return true;
  const char* const base = buf_.get();
  const std::size_t live = end_ - begin_;
  switch (fmt_) {
    case Format::line:
    case Format::zero: {
      const char delim = fmt_ == Format::zero ? '\0' : '\n';
      const std::size_t from = std::max(scanned_, begin_);
      if (std::memchr(base + from, delim, end_ - from) != nullptr) return true;
      scanned_ = end_;
      return (eof_ && live > 0) || live > max_message_;
    }
    case Format::len: {
      if (live < 4) return eof_ && live > 0;
      const std::size_t n = load_be32(base + begin_);
      return live >= 4 + n || n > max_message_ || eof_;
    }
    case Format::raw:
      return live > 0;
    case Format::json: {
      std::size_t pos = begin_;
      while (pos < end_) {
        const void* hit = std::memchr(base + pos, '\n', end_ - pos);
        const std::size_t stop = hit ? static_cast<std::size_t>(static_cast<const char*>(hit) - base) : end_;
        if (!hit && !eof_) return live > max_message_;
        if (!is_blank(std::string_view(base + pos, stop - pos))) return true;
        pos = stop + 1;
      }
      return false;
    }
  }
  return false;
}

// ---------------------------------------------------------------- FrameWriter

FrameWriter::FrameWriter(int fd, Format fmt, bool flush_each)
    : fd_(fd), fmt_(fmt), flush_each_(flush_each), buf_(std::make_unique<char[]>(kWriteBuffer)), cap_(kWriteBuffer) {}

FrameWriter::~FrameWriter() {
  try {
    flush();
  } catch (...) {
  }
}

void FrameWriter::write_all(const char* data, std::size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(fd_, data, n);
    if (w > 0) {
      data += w;
      n -= static_cast<std::size_t>(w);
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (!wait_ready(fd_, POLLOUT)) {
        // Stop requested while the reader is not reading: keep trying, the stop
        // handler's second signal ends us if the reader never drains.
        pollfd p{fd_, POLLOUT, 0};
        ::poll(&p, 1, -1);
      }
      continue;
    }
    const int err = w < 0 ? errno : EIO;
    size_ = 0;  // nothing more can be delivered
    if (err == EPIPE) throw BrokenPipe();
    throw Error(ExitCode::failure, "writing output: " + errno_text(err));
  }
}

void FrameWriter::flush() {
  if (size_ == 0) return;
  const std::size_t n = size_;
  size_ = 0;
  write_all(buf_.get(), n);
}

char* FrameWriter::reserve(std::size_t n) {
  if (cap_ - size_ < n) flush();
  return buf_.get() + size_;
}

void FrameWriter::write_direct(std::string_view a, std::string_view b) {
  flush();
  write_all(a.data(), a.size());
  write_all(b.data(), b.size());
}

void FrameWriter::write(std::string_view payload, const MessageMeta& meta) {
  switch (fmt_) {
    case Format::line:
    case Format::zero: {
      const char delim = fmt_ == Format::zero ? '\0' : '\n';
      if (print_channel_ && !meta.channel.empty()) {
        char* c = reserve(meta.channel.size() + 1);
        std::memcpy(c, meta.channel.data(), meta.channel.size());
        c[meta.channel.size()] = ' ';
        size_ += meta.channel.size() + 1;
      }
      const std::size_t n = payload.size() + 1;
      if (n > cap_ / 2) {
        write_direct(payload, std::string_view(&delim, 1));
      } else {
        char* p = reserve(n);
        std::memcpy(p, payload.data(), payload.size());
        p[payload.size()] = delim;
        size_ += n;
      }
      break;
    }
    case Format::len: {
      if (payload.size() > std::numeric_limits<std::uint32_t>::max())
        throw Error(ExitCode::failure, "message of " + std::to_string(payload.size()) +
                                           " bytes does not fit a len frame (at most 4 GiB - 1)");
      const auto n32 = static_cast<std::uint32_t>(payload.size());
      const char hdr[4] = {static_cast<char>(n32 >> 24), static_cast<char>(n32 >> 16), static_cast<char>(n32 >> 8),
                           static_cast<char>(n32)};
      if (payload.size() + 4 > cap_ / 2) {
        write_direct(std::string_view(hdr, 4), payload);
      } else {
        char* p = reserve(payload.size() + 4);
        std::memcpy(p, hdr, 4);
        if (!payload.empty()) std::memcpy(p + 4, payload.data(), payload.size());  // data() may be null when empty
        size_ += payload.size() + 4;
      }
      break;
    }
    case Format::raw:
      if (payload.size() > cap_ / 2) {
        write_direct(payload, {});
      } else {
        char* p = reserve(payload.size());
        std::memcpy(p, payload.data(), payload.size());
        size_ += payload.size();
      }
      break;
    case Format::json:
      append_json(payload, meta);
      break;
  }
  if (flush_each_) flush();
}

void FrameWriter::append_json(std::string_view payload, const MessageMeta& meta) {
  const bool text = is_valid_utf8(payload);
  const std::size_t body = text ? 6 * payload.size() : sodium_base64_ENCODED_LEN(payload.size(), sodium_base64_VARIANT_ORIGINAL);
  const std::size_t worst = 256 + 6 * meta.channel.size() + body;

  auto emit = [&](char* p) -> char* {
    p = put(p, "{\"channel\":\"");
    p = put_escaped(p, meta.channel);
    p = put(p, "\",\"seq\":");
    p = put_int(p, meta.seq);
    p = put(p, ",\"ts_ns\":");
    p = put_int(p, meta.ts_ns);
    p = put(p, ",\"size\":");
    p = put_int(p, payload.size());
    if (meta.retained) p = put(p, ",\"retained\":true");
    if (text) {
      p = put(p, ",\"data\":\"");
      p = put_escaped(p, payload);
    } else {
      p = put(p, ",\"data_b64\":\"");
      sodium_bin2base64(p, body, reinterpret_cast<const unsigned char*>(payload.data()), payload.size(),
                        sodium_base64_VARIANT_ORIGINAL);
      p += body - 1;  // ENCODED_LEN counts the terminating NUL
    }
    *p++ = '"';
    if (meta.has_slot_meta) {
      p = put(p, ",\"type_hash\":");
      p = put_int(p, meta.type_hash);
      // Also as a hex string: a u64 above 2^53 loses precision in jq and JavaScript.
      p = put(p, ",\"type_hash_hex\":\"0x");
      static constexpr char kHex[] = "0123456789abcdef";
      for (int shift = 60; shift >= 0; shift -= 4) *p++ = kHex[(meta.type_hash >> shift) & 15];
      *p++ = '"';
      p = put(p, ",\"dims\":[");
      for (std::size_t i = 0; i < meta.dims.size(); ++i) {
        if (i) *p++ = ',';
        p = put_int(p, meta.dims[i]);
      }
      *p++ = ']';
    }
    p = put(p, "}\n");
    return p;
  };

  if (worst <= cap_) {
    char* start = reserve(worst);
    size_ += static_cast<std::size_t>(emit(start) - start);
  } else {
    scratch_.resize(worst);
    const std::size_t n = static_cast<std::size_t>(emit(scratch_.data()) - scratch_.data());
    flush();
    write_all(scratch_.data(), n);
    scratch_.clear();
    scratch_.shrink_to_fit();
  }
}

}  // namespace plh
