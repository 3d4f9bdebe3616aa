// Each input framing (plh/framing.hpp FrameReader: line, zero, len, raw, json).
//
// Input: byte 0 picks the format, byte 1 the chunk size (raw) and max_message, bytes
// 2..3 seed how the stream is cut into read(2)s; the rest is the stream. The stream is
// read twice: from a memfd (one big read) and through a SOCK_SEQPACKET socket fed by a
// second thread in small packets (each read(2) returns exactly one packet, so the cuts
// are reproducible). Checks:
//   - both readings give the same messages and the same error (raw: the same bytes);
//   - line/zero/raw/len messages are exactly the input cut at the documented places;
//   - messages written back by FrameWriter in the same format read back unchanged.
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "fuzz_support.hpp"
#include "plh/core/error.hpp"
#include "plh/core/framing.hpp"

#include <nlohmann/json.hpp>

using namespace plh;

namespace {

struct Outcome {
  std::vector<std::string> messages;
  std::optional<std::string> error;
};

Outcome read_all(int fd, Format fmt, std::size_t chunk, std::size_t max_message) {
  Outcome o;
  FrameReader r(fd, fmt, chunk, max_message);
  try {
    for (;;) {
      (void)r.has_buffered();
      auto m = r.next();
      if (!m) break;
      // raw cuts by chunk size alone.
      if (fmt == Format::raw) PLH_FUZZ_CHECK(!m->empty() && m->size() <= chunk, "raw chunk of %zu bytes", m->size());
      else PLH_FUZZ_CHECK(m->size() <= max_message, "message of %zu bytes over max_message %zu", m->size(), max_message);
      o.messages.emplace_back(*m);
      PLH_FUZZ_CHECK(r.count() == o.messages.size(), "count() %llu after %zu messages",
                     static_cast<unsigned long long>(r.count()), o.messages.size());
    }
  } catch (const Error& e) {
    o.error = e.what();
    // Once failed, it fails again with the same error.
    bool again = false;
    try {
      (void)r.next();
    } catch (const Error& e2) {
      again = o.error == e2.what();
    }
    PLH_FUZZ_CHECK(again, "next() after an error did not repeat it");
  }
  return o;
}

int memfd_with(std::string_view bytes) {
  const int fd = ::memfd_create("plh-fuzz", MFD_CLOEXEC);
  PLH_FUZZ_CHECK(fd >= 0, "memfd_create");
  std::size_t off = 0;
  while (off < bytes.size()) {
    const ssize_t w = ::write(fd, bytes.data() + off, bytes.size() - off);
    PLH_FUZZ_CHECK(w > 0, "write to memfd");
    off += static_cast<std::size_t>(w);
  }
  ::lseek(fd, 0, SEEK_SET);
  return fd;
}

std::string joined(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& m : v) s += m;
  return s;
}

// What line/zero/len must produce for `in` (the SPEC's rules, written independently).
Outcome expected_split(std::string_view in, Format fmt, std::size_t max_message) {
  Outcome o;
  if (fmt == Format::line || fmt == Format::zero) {
    const char delim = fmt == Format::zero ? '\0' : '\n';
    std::size_t pos = 0;
    while (pos < in.size()) {
      const std::size_t hit = in.find(delim, pos);
      const std::size_t end = hit == std::string_view::npos ? in.size() : hit;
      if (end - pos > max_message) {
        o.error = "too long";
        return o;
      }
      o.messages.emplace_back(in.substr(pos, end - pos));
      pos = end + 1;
    }
  } else if (fmt == Format::len) {
    std::size_t pos = 0;
    while (pos < in.size()) {
      if (in.size() - pos < 4) {
        o.error = "truncated";
        return o;
      }
      const auto* u = reinterpret_cast<const unsigned char*>(in.data() + pos);
      const std::size_t n = (std::size_t{u[0]} << 24) | (std::size_t{u[1]} << 16) | (std::size_t{u[2]} << 8) | u[3];
      if (n > max_message || in.size() - pos - 4 < n) {
        o.error = n > max_message ? "too long" : "truncated";
        return o;
      }
      o.messages.emplace_back(in.substr(pos + 4, n));
      pos += 4 + n;
    }
  }
  return o;
}

// json input: a line that is not exactly one JSON object (nlohmann decides; a raw NUL is
// never valid JSON) ends the input with an error, never with a message; a "data" string
// is delivered as nlohmann reads it.
void check_json_lines(std::string_view stream, const Outcome& got) {
  std::size_t pos = 0, index = 0;
  while (pos < stream.size() && index < got.messages.size()) {
    std::size_t end = stream.find('\n', pos);
    if (end == std::string_view::npos) end = stream.size();
    const std::string_view line = stream.substr(pos, end - pos);
    pos = end + 1;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    const bool valid = nlohmann::json::accept(line) && line.find('\0') == std::string_view::npos;
    PLH_FUZZ_CHECK(valid, "json line %zu is not valid JSON but was delivered as message %zu: %s", index + 1,
                   index + 1, fuzz::shown(line).c_str());
    if (fuzz::json_nesting(line) <= 64 && line.find("\"data\"") == line.rfind("\"data\"")) {
      const auto j = nlohmann::json::parse(line);
      if (j.is_object())
        if (auto it = j.find("data"); it != j.end() && it->is_string())
          PLH_FUZZ_CHECK(it->get_ref<const std::string&>() == got.messages[index],
                         "json line %zu: \"data\" delivered differently", index + 1);
    }
    ++index;
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logging();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::Bytes in(data, size);
  static constexpr Format kFormats[] = {Format::line, Format::zero, Format::len, Format::raw, Format::json};
  const Format fmt = kFormats[in.u8() % 5];
  const std::uint8_t sizes = in.u8();
  const std::size_t chunk = std::size_t{1} + (sizes & 0x0f) * 97;  // 1 .. 1456
  // Mostly the tools' default; sometimes a small limit so the "too long" paths run.
  const std::size_t max_message = (sizes & 0xf0) == 0 ? std::size_t{1} + ((sizes >> 4) & 0x0f) * 13
                                  : (sizes & 0x80)    ? std::size_t{1} << 30
                                                      : std::size_t{1} + (sizes >> 4) * 31;
  std::uint32_t cut = static_cast<std::uint32_t>(in.u16()) | 1u;
  const std::string stream(in.rest());

  // 1. One read of everything.
  const int mfd = memfd_with(stream);
  const Outcome whole = read_all(mfd, fmt, chunk, max_message);
  ::close(mfd);

  // 2. Small packets of pseudo-random sizes (1..64 bytes, LCG seeded from the input).
  int sv[2];
  PLH_FUZZ_CHECK(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0, "socketpair");
  // Queue as many packets as the socket takes without a thread (usually all of them);
  // a feeder thread sends the rest while the reader reads.
  std::size_t off = 0;
  std::uint32_t x = cut;
  auto next_size = [&] {
    x = x * 1103515245u + 12345u;
    return std::min<std::size_t>(stream.size() - off, 1 + ((x >> 16) & 63));
  };
  std::size_t n = 0;
  while (off < stream.size()) {
    n = next_size();
    if (::send(sv[1], stream.data() + off, n, MSG_NOSIGNAL | MSG_DONTWAIT) != static_cast<ssize_t>(n)) break;
    off += n;
    n = 0;
  }
  std::thread feeder;
  if (off < stream.size()) {
    feeder = std::thread([&, n]() mutable {
      while (off < stream.size()) {
        if (n == 0) n = next_size();
        if (::send(sv[1], stream.data() + off, n, MSG_NOSIGNAL) != static_cast<ssize_t>(n)) break;  // reader gave up
        off += n;
        n = 0;
      }
      ::shutdown(sv[1], SHUT_WR);
    });
  } else {
    ::shutdown(sv[1], SHUT_WR);
  }
  const Outcome pieces = read_all(sv[0], fmt, chunk, max_message);
  ::shutdown(sv[0], SHUT_RDWR);  // a reader that stopped early must not leave the feeder blocked
  if (feeder.joinable()) feeder.join();
  ::close(sv[0]);
  ::close(sv[1]);

  PLH_FUZZ_CHECK(whole.error.has_value() == pieces.error.has_value(), "error in one reading only: %s",
                 (whole.error ? whole.error : pieces.error)->c_str());
  if (fmt == Format::raw) {
    PLH_FUZZ_CHECK(joined(whole.messages) == stream && joined(pieces.messages) == stream,
                   "raw chunks do not add up to the input");
    return 0;
  }
  PLH_FUZZ_CHECK(whole.messages == pieces.messages, "the readings differ (%zu vs %zu messages)", whole.messages.size(),
                 pieces.messages.size());
  if (whole.error && pieces.error) {
    PLH_FUZZ_CHECK(*whole.error == *pieces.error, "different errors: '%s' vs '%s'", whole.error->c_str(),
                   pieces.error->c_str());
  }
  if (fmt == Format::json) check_json_lines(stream, whole);
  if (fmt != Format::json) {
    const Outcome want = expected_split(stream, fmt, max_message);
    PLH_FUZZ_CHECK(want.messages == whole.messages && want.error.has_value() == whole.error.has_value(),
                   "%s: %zu messages%s, expected %zu%s", std::string(format_name(fmt)).c_str(), whole.messages.size(),
                   whole.error ? " then an error" : "", want.messages.size(), want.error ? " then an error" : "");
  }

  // 3. Round trip: what FrameWriter writes, FrameReader reads back.
  const int ofd = ::memfd_create("plh-fuzz-out", MFD_CLOEXEC);
  PLH_FUZZ_CHECK(ofd >= 0, "memfd_create");
  {
    FrameWriter w(ofd, fmt, false);
    MessageMeta meta;
    meta.channel = "fuzz";
    for (const auto& m : whole.messages) {
      ++meta.seq;
      w.write(m, meta);
    }
    w.flush();
  }
  ::lseek(ofd, 0, SEEK_SET);
  const Outcome back = read_all(ofd, fmt, chunk, std::size_t{1} << 30);
  ::close(ofd);
  PLH_FUZZ_CHECK(!back.error, "re-reading what FrameWriter wrote failed: %s", back.error ? back.error->c_str() : "");
  PLH_FUZZ_CHECK(back.messages == whole.messages, "round trip changed the messages (%zu -> %zu)",
                 whole.messages.size(), back.messages.size());
  return 0;
}
