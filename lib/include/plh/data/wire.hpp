#pragma once
// The data-plane wire format (SPEC "Data-plane wire format"): every ZeroMQ message is a
// single frame holding a 32-byte little-endian header and the payload.
//
//   offset type field
//   0      u32  magic 0x31484C50 ("PLH1")
//   4      u32  flags: bit 0 end of stream, bit 1 batch, bit 2 keepalive, bit 3 retained
//   8      u64  seq of the (first) message; on an EOS marker or keepalive the seq the
//               next message would have had (so a receiver knows what was sent)
//   16     i64  ts_ns (CLOCK_REALTIME when published)
//   24     u32  count (1 unless batch; 0 on an end-of-stream marker or keepalive)
//   28     u32  stream id: a random non-zero id of this publisher's registration (the
//               broker hands it to consumers in the channel's metadata `plh_stream`), or
//               0 (a publisher that does not say; formerly "reserved")
//
// A batch payload is `count` records, each a u32 little-endian length and that many bytes.
// A keepalive is flags batch|keepalive, count 0, empty payload: the publisher sends one
// when it has been idle for a while, so subscribers can tell a live quiet publisher from
// a dead one by the data connection alone. A reader that knows nothing of keepalives
// sees an empty batch (no messages, seq unchanged).
// A retained frame (plh-pub --retain) is a single frame with flag retained: the
// publisher's last message (its own seq and ts_ns), which a subscriber gets first when it
// connects (ZeroMQ's XPUB welcome message), before the live stream.
// FrameEncoder builds frames without allocating in steady state; decode_frame() checks
// every field and every record against the frame end before handing out any message,
// so a hostile frame is reported as malformed and never read out of bounds.
// Neither type is thread-safe; use one per thread.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace plh::wire {

inline constexpr std::uint32_t kMagic = 0x31484C50;  // "PLH1" little endian
inline constexpr std::size_t kHeaderSize = 32;
inline constexpr std::uint32_t kFlagEndOfStream = 1u << 0;
inline constexpr std::uint32_t kFlagBatch = 1u << 1;
inline constexpr std::uint32_t kFlagKeepalive = 1u << 2;
inline constexpr std::uint32_t kFlagRetained = 1u << 3;
inline constexpr std::size_t kRecordPrefix = 4;

struct Header {
  std::uint32_t magic = kMagic;
  std::uint32_t flags = 0;
  std::uint64_t seq = 0;
  std::int64_t ts_ns = 0;
  std::uint32_t count = 0;
  std::uint32_t stream = 0;  // offset 28: stream id, 0 = none

  bool end_of_stream() const { return (flags & kFlagEndOfStream) != 0; }
  bool batch() const { return (flags & kFlagBatch) != 0; }
  bool keepalive() const { return (flags & kFlagKeepalive) != 0; }
  bool retained() const { return (flags & kFlagRetained) != 0; }
};

// Writes the 32 header bytes (little endian) to out.
void write_header(char* out, const Header& h);
// Reads 32 header bytes (no validation).
Header read_header(const char* in);

// One single-message frame: header (count 1, no batch flag) + payload.
std::string encode_single(std::uint64_t seq, std::int64_t ts_ns, std::string_view payload,
                          std::uint32_t stream = 0, std::uint32_t flags = 0);
// End-of-stream marker: flag EOS, count 0, seq = the seq the next message would have had
// (so a receiver knows how many were sent: the final seq is next_seq - 1), empty payload.
std::string encode_end_of_stream(std::uint64_t next_seq, std::int64_t ts_ns, std::uint32_t stream = 0);
// Keepalive: flags batch|keepalive, count 0, seq = next_seq, empty payload.
std::string encode_keepalive(std::uint64_t next_seq, std::int64_t ts_ns, std::uint32_t stream = 0);

// Accumulates messages into one frame. With one message the frame is a plain single
// frame (no batch flag), so single messages stay trivial for other ZeroMQ programs;
// with more it is a batch frame.
class FrameEncoder {
 public:
  // Starts a new frame whose first message gets `first_seq`.
  void begin(std::uint64_t first_seq, std::int64_t ts_ns);
  // Stream id written into every frame (0 = none).
  void set_stream(std::uint32_t stream) { stream_ = stream; }
  // Appends one message. Throws std::length_error for a message over 4 GiB - 1.
  void add(std::string_view payload);
  std::uint32_t count() const { return count_; }
  // Bytes the finished frame will have (header + payload).
  std::size_t size() const;
  // Finishes the frame; the view stays valid until the next begin().
  std::string_view finish();
  // The last message added (valid until the next begin()); empty when none.
  std::string_view last_message() const;
  // seq of the last message added.
  std::uint64_t last_seq() const { return first_seq_ + count_ - (count_ > 0 ? 1 : 0); }
  std::int64_t ts_ns() const { return ts_ns_; }

 private:
  std::string buf_;                  // header + records
  std::uint64_t first_seq_ = 0;
  std::int64_t ts_ns_ = 0;
  std::uint32_t count_ = 0;
  std::uint32_t stream_ = 0;
  std::size_t first_record_size_ = 0;
  std::size_t last_record_at_ = 0;  // offset of the last record's payload in buf_
  std::size_t last_record_size_ = 0;
};

enum class DecodeStatus {
  ok,
  short_frame,     // fewer than 32 bytes
  bad_magic,       // first 4 bytes are not "PLH1"
  bad_count,       // count does not fit the flags (single frame with count != 1, batch with
                   // 0 other than a keepalive, keepalive with messages)
  record_overrun,  // a batch record's length runs past the frame end
  trailing_bytes,  // bytes after the last batch record
};
std::string_view describe(DecodeStatus s);

// A decoded frame. `messages` views point into the frame's memory.
struct DecodedFrame {
  Header header;
  std::vector<std::string_view> messages;  // empty for an end-of-stream marker
};

// Validates and splits one frame. On anything but ok `out.messages` is left empty and
// nothing should be delivered. `out` can be reused between calls (keeps its capacity).
// An end-of-stream marker carries no messages; any payload it has is ignored. A keepalive
// decodes as ok with no messages (any payload must be empty: else trailing_bytes).
DecodeStatus decode_frame(std::string_view frame, DecodedFrame& out);

}  // namespace plh::wire
