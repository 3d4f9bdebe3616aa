#pragma once
// Shared helpers of the libFuzzer targets: a byte consumer over the input, a check that
// aborts with a message (libFuzzer records the input that triggered it), quiet logging,
// and a per-process shared-memory segment name.
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

namespace plh::fuzz {

// A violated invariant: print it and abort, so libFuzzer saves the input as a crash.
#define PLH_FUZZ_CHECK(cond, ...)                                                   \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      std::fprintf(stderr, "fuzz invariant failed at %s:%d: %s: ", __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, __VA_ARGS__);                                            \
      std::fputc('\n', stderr);                                                     \
      std::abort();                                                                 \
    }                                                                               \
  } while (0)

// Takes bytes off the front of the input; past the end every read yields zeros.
class Bytes {
 public:
  Bytes(const std::uint8_t* data, std::size_t size) : p_(data), n_(size) {}
  bool empty() const { return n_ == 0; }
  std::size_t size() const { return n_; }
  std::uint8_t u8() {
    if (n_ == 0) return 0;
    --n_;
    return *p_++;
  }
  std::uint16_t u16() { return static_cast<std::uint16_t>(u8() | (u8() << 8)); }
  std::uint32_t u32() { return static_cast<std::uint32_t>(u16()) | (static_cast<std::uint32_t>(u16()) << 16); }
  std::uint64_t u64() { return static_cast<std::uint64_t>(u32()) | (static_cast<std::uint64_t>(u32()) << 32); }
  // Up to n bytes.
  std::string_view take(std::size_t n) {
    if (n > n_) n = n_;
    std::string_view s(reinterpret_cast<const char*>(p_), n);
    p_ += n;
    n_ -= n;
    return s;
  }
  std::string_view rest() { return take(n_); }
  // Bytes up to (not including) `delim`, which is consumed; the rest when absent.
  std::string_view until(char delim) {
    const void* hit = std::memchr(p_, delim, n_);
    if (!hit) return rest();
    const std::size_t len = static_cast<std::size_t>(static_cast<const std::uint8_t*>(hit) - p_);
    std::string_view s = take(len);
    u8();
    return s;
  }

 private:
  const std::uint8_t* p_;
  std::size_t n_;
};

// `s` with non-printable bytes as \xNN, cut to 200 characters: for invariant messages.
inline std::string shown(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, 200)) {
    const auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7f) {
      out += c;
    } else {
      static constexpr char hex[] = "0123456789abcdef";
      out += "\\x";
      out += hex[u >> 4];
      out += hex[u & 15];
    }
  }
  return out;
}

// Deepest nesting of arrays/objects in JSON-ish text (strings skipped). The targets
// build a nlohmann DOM (recursive copy and destruction) only for shallow texts.
inline int json_nesting(std::string_view s) {
  int depth = 0, max = 0;
  bool in_string = false, escaped = false;
  for (char c : s) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    else if (c == '[' || c == '{') max = std::max(max, ++depth);
    else if (c == ']' || c == '}') --depth;
  }
  return max;
}

// The library logs refusals through spdlog: keep the fuzzer's output readable.
inline void quiet_logging() { spdlog::set_level(spdlog::level::off); }

// A segment name unique to this process ("fuzz-<pid>-<tag>"), valid by the channel grammar.
inline std::string segment_name(std::string_view tag) {
  return "fuzz-" + std::to_string(::getpid()) + "-" + std::string(tag);
}

}  // namespace plh::fuzz
