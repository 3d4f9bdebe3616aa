#pragma once
// Framing of stdin/stdout: how a byte stream is cut into messages and how messages are
// written back as bytes. Written once, used by plh-pub, plh-sub and plh-shm (`-f/--format`).
//
// Formats (SPEC "Framing of stdin/stdout"):
//   line  one message per line. Input: the '\n' is stripped; a '\r' before it is kept as
//         data; an empty line is a message with an empty payload; a last line without a
//         newline is still a message (but "a\n" is one message, not two). Output: payload
//         then '\n'.
//   zero  like line with NUL as terminator (`find -print0`, `xargs -0`).
//   len   4-byte big-endian length, then that many bytes. Binary-safe. A frame cut short
//         by EOF is an error (after every complete frame before it was returned).
//   raw   input: chunks of at most chunk_size bytes, as read(2) delivers them (a chunk is
//         never held back to fill it up). Output: the payloads concatenated.
//   json  output: one object per line
//           {"channel":"c","seq":1,"ts_ns":..,"size":..,"data":"<text>"}
//         with "data_b64" (standard base64, padded) instead of "data" when the payload is
//         not valid UTF-8; with MessageMeta::has_slot_meta also "type_hash" and "dims".
//         input: each line is a JSON object with a string "data" (the payload, as text) or
//         "data_b64" (base64 of the payload); other fields are ignored, so the output of
//         `-f json` can be fed back in. Lines holding only whitespace are skipped;
//         anything else is an error naming the line number.
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace plh {

enum class Format { line, zero, len, raw, json };

// "line", "zero", "len", "raw", "json". Throws UsageError on any other word.
Format parse_format(std::string_view name);
std::string_view format_name(Format fmt);

// stdin → messages. Reads with large read(2) calls (a buffer of at least 256 KiB that
// grows when one message needs more) and hands out views into that buffer without
// copying; never one syscall per message.
//
// Errors: malformed input (truncated len frame, bad json line, a message longer than
// max_message) throws plh::Error(failure) naming the problem, but only when next() is
// called after every complete message before the problem was returned. Once it has
// thrown, next() throws the same error again. read(2) errors other than EINTR/EAGAIN
// throw plh::Error(failure).
//
// Non-blocking fds are supported (EAGAIN → poll(2), also waking on plh::stop_fd()).
// Not thread-safe: one reader per thread; the fd is not owned (not closed).
class FrameReader {
 public:
  FrameReader(int fd, Format fmt, std::size_t chunk_size = 64 * 1024, std::size_t max_message = 1u << 30);
  ~FrameReader();
  FrameReader(const FrameReader&) = delete;
  FrameReader& operator=(const FrameReader&) = delete;

  // Next message; the view stays valid until the next call of next(). nullopt at EOF,
  // or when read(2) was interrupted (EINTR) and plh::stop_requested() is true.
  // Blocks in read(2) only when no complete message is buffered.
  std::optional<std::string_view> next();

  // True when next() will return a message (or throw) without calling read(2).
  // Publishers batch exactly what is waiting: `do { add(*next()) } while (has_buffered())`.
  bool has_buffered() const;

  int fd() const { return fd_; }
  Format format() const { return fmt_; }
  // Messages returned so far.
  std::uint64_t count() const { return count_; }

 private:
  enum class Found { message, need_more, error };
  // Looks for a complete message at the front of the buffer; on success sets out and
  // consumes it. Does not read.
  Found extract(std::string_view& out);
  std::optional<std::string_view> finish_at_eof();
  std::string_view decode_json_line(std::string_view line);
  // Makes room for at least `want` more bytes after end_. Invalidates views.
  void make_room(std::size_t want);
  // One read(2) into the free space. Returns false when a stop was requested.
  bool fill();
  [[noreturn]] void fail(std::string message);

  int fd_;
  Format fmt_;
  std::size_t chunk_size_;
  std::size_t max_message_;
  std::unique_ptr<char[]> buf_;
  std::size_t cap_ = 0;
  std::size_t begin_ = 0;        // first unconsumed byte
  std::size_t end_ = 0;          // one past the last byte read
  mutable std::size_t scanned_ = 0;  // line/zero/json: no delimiter in [begin_, scanned_)
  bool eof_ = false;
  std::optional<std::string> error_;
  std::uint64_t count_ = 0;
  std::uint64_t json_line_ = 0;  // json: number of the last line consumed
  std::string decoded_;          // json: the decoded payload of the last message
};

// What the json output format shows besides the payload. Other formats ignore it.
struct MessageMeta {
  std::string_view channel;
  std::uint64_t seq = 0;
  std::int64_t ts_ns = 0;
  bool retained = false;       // pubsub: the publisher's retained last message (json: "retained":true)
  bool has_slot_meta = false;  // shm: json output also shows type_hash and dims
  std::uint64_t type_hash = 0;
  std::array<std::uint64_t, 4> dims{};
};

// messages → stdout. Appends to a 256 KiB buffer and write(2)s it when full, on flush(),
// or after every message when flush_each is true (stdout is a tty, --line-buffered).
// Partial writes, EINTR and EAGAIN (poll) are handled. EPIPE throws plh::BrokenPipe
// (the buffer is dropped); other write errors throw plh::Error(failure).
// Not thread-safe; the fd is not owned.
class FrameWriter {
 public:
  FrameWriter(int fd, Format fmt, bool flush_each);
  ~FrameWriter();  // best-effort flush, never throws
  FrameWriter(const FrameWriter&) = delete;
  FrameWriter& operator=(const FrameWriter&) = delete;

  // Throws plh::Error for a len payload over 4 GiB - 1, BrokenPipe/Error from writing.
  void write(std::string_view payload, const MessageMeta& meta = {});
  void flush();

  // line and zero: "CHANNEL " (meta.channel) before each message (plh-sub --print-channel).
  void set_print_channel(bool on) { print_channel_ = on; }

  int fd() const { return fd_; }
  Format format() const { return fmt_; }
  // Bytes waiting in the buffer.
  std::size_t buffered() const { return size_; }

 private:
  void append_json(std::string_view payload, const MessageMeta& meta);
  void write_all(const char* data, std::size_t n);
  void write_direct(std::string_view a, std::string_view b);
  char* reserve(std::size_t n);  // room for n bytes in the buffer (flushes first if needed)

  int fd_;
  Format fmt_;
  bool flush_each_;
  bool print_channel_ = false;
  std::unique_ptr<char[]> buf_;
  std::size_t cap_;
  std::size_t size_ = 0;
  std::string scratch_;  // json messages larger than the buffer
};

// Helpers of the json format, exposed for tests and other tools.
// True when `s` is well-formed UTF-8 (no overlong forms, no surrogates, ≤ U+10FFFF).
// simdjson's validator from 64 bytes on, the scalar loop below that.
bool is_valid_utf8(std::string_view s) noexcept;
namespace detail {
// The scalar loop alone, for the differential test and bench/bench_simdjson.cpp.
bool is_valid_utf8_scalar(std::string_view s) noexcept;
}  // namespace detail
// Appends `s` as the inside of a JSON string ('"', '\\' and control characters escaped).
void append_json_escaped(std::string& out, std::string_view s);

}  // namespace plh
