#include "plh/core/json.hpp"

#include <cstring>

#include "plh/core/text.hpp"

namespace plh::json_text {

using nlohmann::json;

namespace {

class Scanner {
 public:
  Scanner(std::string_view t, int max_depth) : p_(t.data()), end_(t.data() + t.size()), max_depth_(max_depth) {}

  bool run(JsonScan& out) {
    ws();
    if (p_ < end_ && *p_ == '{') {
      out.is_object = true;
      if (!object(0, &out.members)) return fail(out);
    } else if (!value(0)) {
      return fail(out);
    }
    ws();
    if (p_ != end_) {
      error_ = "trailing characters after the JSON value";
      return fail(out);
    }
    out.ok = true;
    return true;
  }

 private:
  bool fail(JsonScan& out) {
    out.ok = false;
    out.members.clear();
    out.error = error_.empty() ? "invalid JSON" : error_;
    return false;
  }
  bool bad(const char* why) {
    if (error_.empty()) error_ = why;
    return false;
  }
  void ws() {
    while (p_ < end_ && (*p_ == ' ' || *p_ == '\n' || *p_ == '\r' || *p_ == '\t')) ++p_;
  }
  bool value(int depth) {
    if (depth > max_depth_) return bad("JSON nested too deeply");
    if (p_ >= end_) return bad("unexpected end of JSON");
    switch (*p_) {
      case '{': return object(depth, nullptr);
      case '[': return array(depth);
      case '"': return string();
      case 't': return literal("true");
      case 'f': return literal("false");
      case 'n': return literal("null");
      default: return number();
    }
  }
  bool literal(std::string_view word) {
    if (static_cast<std::size_t>(end_ - p_) < word.size() || std::string_view(p_, word.size()) != word)
      return bad("invalid literal");
    p_ += word.size();
    return true;
  }
  static bool digit(char c) { return c >= '0' && c <= '9'; }
  bool number() {
    if (p_ < end_ && *p_ == '-') ++p_;
    if (p_ >= end_) return bad("invalid number");
    if (*p_ == '0') {
      ++p_;
    } else if (digit(*p_)) {
      while (p_ < end_ && digit(*p_)) ++p_;
    } else {
      return bad("invalid value");
    }
    if (p_ < end_ && *p_ == '.') {
      ++p_;
      if (p_ >= end_ || !digit(*p_)) return bad("invalid number");
      while (p_ < end_ && digit(*p_)) ++p_;
    }
    if (p_ < end_ && (*p_ == 'e' || *p_ == 'E')) {
      ++p_;
      if (p_ < end_ && (*p_ == '+' || *p_ == '-')) ++p_;
      if (p_ >= end_ || !digit(*p_)) return bad("invalid number");
      while (p_ < end_ && digit(*p_)) ++p_;
    }
    return true;
  }
  static int hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }
  // Four hex digits at `at` (the caller checked there are four bytes).
  static bool hex4(const char* at, unsigned& v) {
    v = 0;
    for (int i = 0; i < 4; ++i) {
      const int h = hex(at[i]);
      if (h < 0) return false;
      v = v * 16 + static_cast<unsigned>(h);
    }
    return true;
  }
  bool string() {
    ++p_;  // opening quote
    for (;;) {
      // Fast path over plain ASCII.
      while (p_ < end_) {
        const auto c = static_cast<unsigned char>(*p_);
        if (c == '"' || c == '\\' || c < 0x20 || c >= 0x80) break;
        ++p_;
      }
      if (p_ >= end_) return bad("unterminated string");
      const auto c = static_cast<unsigned char>(*p_);
      if (c == '"') {
        ++p_;
        return true;
      }
      if (c < 0x20) return bad("control character in string");
      if (c == '\\') {
        if (end_ - p_ < 2) return bad("unterminated string");
        const char e = p_[1];
        if (e == 'u') {
          unsigned cp = 0;
          if (!hex4(p_ + 2, cp)) return bad("invalid \\u escape");
          p_ += 6;
          if (cp >= 0xDC00 && cp <= 0xDFFF) return bad("lone low surrogate in \\u escape");
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            unsigned lo = 0;
            if (end_ - p_ < 6 || p_[0] != '\\' || p_[1] != 'u' || !hex4(p_ + 2, lo) || lo < 0xDC00 || lo > 0xDFFF)
              return bad("high surrogate in \\u escape not followed by a low one");
            p_ += 6;
          }
        } else if (e == '"' || e == '\\' || e == '/' || e == 'b' || e == 'f' || e == 'n' || e == 'r' || e == 't') {
          p_ += 2;
        } else {
          return bad("invalid escape in string");
        }
        continue;
      }
      // UTF-8 multi-byte sequence.
      int len = 0;
      std::uint32_t cp = 0;
      if ((c & 0xE0) == 0xC0) {
        len = 2;
        cp = c & 0x1F;
      } else if ((c & 0xF0) == 0xE0) {
        len = 3;
        cp = c & 0x0F;
      } else if ((c & 0xF8) == 0xF0) {
        len = 4;
        cp = c & 0x07;
      } else {
        return bad("invalid UTF-8 in string");
      }
      if (end_ - p_ < len) return bad("invalid UTF-8 in string");
      for (int i = 1; i < len; ++i) {
        const auto cc = static_cast<unsigned char>(p_[i]);
        if ((cc & 0xC0) != 0x80) return bad("invalid UTF-8 in string");
        cp = (cp << 6) | (cc & 0x3F);
      }
      if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
          (cp >= 0xD800 && cp <= 0xDFFF))
        return bad("invalid UTF-8 in string");
      p_ += len;
    }
  }
  bool array(int depth) {
    ++p_;
    ws();
    if (p_ < end_ && *p_ == ']') {
      ++p_;
      return true;
    }
    for (;;) {
      ws();
      if (!value(depth + 1)) return false;
      ws();
      if (p_ >= end_) return bad("unterminated array");
      if (*p_ == ',') {
        ++p_;
        continue;
      }
      if (*p_ == ']') {
        ++p_;
        return true;
      }
      return bad("expected ',' or ']'");
    }
  }
  bool object(int depth, std::vector<std::pair<std::string_view, std::string_view>>* members) {
    ++p_;
    ws();
    if (p_ < end_ && *p_ == '}') {
      ++p_;
      return true;
    }
    for (;;) {
      ws();
      if (p_ >= end_ || *p_ != '"') return bad("expected a member name");
      const char* key_start = p_ + 1;
      if (!string()) return false;
      const std::string_view key(key_start, static_cast<std::size_t>(p_ - 1 - key_start));
      ws();
      if (p_ >= end_ || *p_ != ':') return bad("expected ':'");
      ++p_;
      ws();
      const char* v_start = p_;
      if (!value(depth + 1)) return false;
      if (members) members->emplace_back(key, std::string_view(v_start, static_cast<std::size_t>(p_ - v_start)));
      ws();
      if (p_ >= end_) return bad("unterminated object");
      if (*p_ == ',') {
        ++p_;
        continue;
      }
      if (*p_ == '}') {
        ++p_;
        return true;
      }
      return bad("expected ',' or '}'");
    }
  }

  const char* p_;
  const char* end_;
  int max_depth_;
  std::string error_;
};

}  // namespace

std::string_view JsonScan::member(std::string_view key) const noexcept {
  for (const auto& [k, v] : members)
    if (k == key) return v;
  return {};
}

JsonScan scan_json(std::string_view text, int max_depth) {
  JsonScan out;
  Scanner(text, max_depth).run(out);
  return out;
}

namespace {

// Counts depth and values for nlohmann's SAX parser and stops it at the first limit
// passed; forwards every event to `inner` (a DOM builder) unless it is null.

template <class Inner>
class LimitedSax {
 public:
  using number_integer_t = json::number_integer_t;
  using number_unsigned_t = json::number_unsigned_t;
  using number_float_t = json::number_float_t;
  using string_t = json::string_t;
  using binary_t = json::binary_t;

  LimitedSax(Inner* inner, JsonLimits limits) : inner_(inner), limits_(limits) {}

  bool null() { return value() && (!inner_ || inner_->null()); }
  bool boolean(bool v) { return value() && (!inner_ || inner_->boolean(v)); }
  bool number_integer(number_integer_t v) { return value() && (!inner_ || inner_->number_integer(v)); }
  bool number_unsigned(number_unsigned_t v) { return value() && (!inner_ || inner_->number_unsigned(v)); }
  bool number_float(number_float_t v, const string_t& s) { return value() && (!inner_ || inner_->number_float(v, s)); }
  bool string(string_t& v) { return value() && (!inner_ || inner_->string(v)); }
  bool binary(binary_t& v) { return value() && (!inner_ || inner_->binary(v)); }
  bool start_object(std::size_t n) { return open() && (!inner_ || inner_->start_object(n)); }
  bool key(string_t& k) { return !inner_ || inner_->key(k); }
  bool end_object() {
    --depth_;
    return !inner_ || inner_->end_object();
  }
  bool start_array(std::size_t n) { return open() && (!inner_ || inner_->start_array(n)); }
  bool end_array() {
    --depth_;
    return !inner_ || inner_->end_array();
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& ex) {
    // "[json.exception.parse_error.101] parse error at line 1, column 3: syntax error
    // while parsing value - invalid literal; last read: 'tru'" -> without the prefix and
    // without the echo of the input.
    std::string why = ex.what();
    if (const auto cut = why.find("] "); cut != std::string::npos) why.erase(0, cut + 2);
    if (const auto cut = why.find("; last read"); cut != std::string::npos) why.erase(cut);
    error_ = why;
    return false;
  }
  const std::string& error() const { return error_; }

 private:
  bool value() {
    if (++values_ <= limits_.max_values) return true;
    error_ = "more than " + std::to_string(limits_.max_values) + " JSON values";
    return false;
  }
  bool open() {
    if (++depth_ > limits_.max_depth) {
      error_ = "JSON nested deeper than " + std::to_string(limits_.max_depth) + " levels";
      return false;
    }
    return value();
  }

  Inner* inner_;
  JsonLimits limits_;
  int depth_ = 0;
  std::size_t values_ = 0;
  std::string error_;
};

// What nlohmann's lexer does not refuse by itself: a NUL (it ends its input) and a BOM
// (it skips one).
std::string framing_problem(std::string_view text) {
  if (const void* nul = std::memchr(text.data(), '\0', text.size()))
    return "NUL byte at offset " + std::to_string(static_cast<const char*>(nul) - text.data()) + " of the JSON text";
  if (text.size() >= 3 && text.compare(0, 3, "\xEF\xBB\xBF") == 0) return "byte order mark before the JSON text";
  return {};
}

template <class Inner>
std::string run_sax(std::string_view text, JsonLimits limits, Inner* inner) {
  if (std::string p = framing_problem(text); !p.empty()) return p;
  LimitedSax<Inner> sax(inner, limits);
  if (json::sax_parse(text.begin(), text.end(), &sax, json::input_format_t::json, /*strict=*/true)) return {};
  return sax.error().empty() ? std::string("invalid JSON") : sax.error();
}

}  // namespace


json parse_json(std::string_view text, JsonLimits limits, std::string* error) {
  json out;
  nlohmann::detail::json_sax_dom_parser<json> dom(out, /*allow_exceptions=*/false);
  std::string problem = run_sax(text, limits, &dom);
  if (problem.empty()) return out;
  if (error) *error = std::move(problem);
  return json(json::value_t::discarded);
}

void append_json_string(std::string& out, std::string_view s) {
  static constexpr char hexd[] = "0123456789abcdef";
  out += '"';
  std::size_t run = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    out.append(s.data() + run, i - run);
    run = i + 1;
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        out += "\\u00";
        out += hexd[c >> 4];
        out += hexd[c & 15];
    }
  }
  out.append(s.data() + run, s.size() - run);
  out += '"';
}

}  // namespace plh::json_text
