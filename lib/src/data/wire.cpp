#include "plh/data/wire.hpp"

#include <bit>
#include <cstring>
#include <limits>
#include <stdexcept>

namespace plh::wire {
namespace {

template <class T>
void put_le(char* out, T v) {
  if constexpr (std::endian::native == std::endian::little) {
    std::memcpy(out, &v, sizeof v);
  } else {
    using U = std::make_unsigned_t<T>;
    auto u = static_cast<U>(v);
    for (std::size_t i = 0; i < sizeof v; ++i) out[i] = static_cast<char>((u >> (8 * i)) & 0xFF);
  }
}

template <class T>
T get_le(const char* in) {
  if constexpr (std::endian::native == std::endian::little) {
    T v;
    std::memcpy(&v, in, sizeof v);
    return v;
  } else {
    using U = std::make_unsigned_t<T>;
    U u = 0;
    for (std::size_t i = 0; i < sizeof(T); ++i) u |= static_cast<U>(static_cast<unsigned char>(in[i])) << (8 * i);
    return static_cast<T>(u);
  }
}

}  // namespace

void write_header(char* out, const Header& h) {
  put_le(out + 0, h.magic);
  put_le(out + 4, h.flags);
  put_le(out + 8, h.seq);
  put_le(out + 16, h.ts_ns);
  put_le(out + 24, h.count);
  put_le(out + 28, h.stream);
}

Header read_header(const char* in) {
  Header h;
  h.magic = get_le<std::uint32_t>(in + 0);
  h.flags = get_le<std::uint32_t>(in + 4);
  h.seq = get_le<std::uint64_t>(in + 8);
  h.ts_ns = get_le<std::int64_t>(in + 16);
  h.count = get_le<std::uint32_t>(in + 24);
  h.stream = get_le<std::uint32_t>(in + 28);
  return h;
}

std::string encode_single(std::uint64_t seq, std::int64_t ts_ns, std::string_view payload, std::uint32_t stream,
                          std::uint32_t flags) {
  std::string out(kHeaderSize + payload.size(), '\0');
  Header h;
  h.flags = flags;
  h.stream = stream;
  h.seq = seq;
  h.ts_ns = ts_ns;
  h.count = 1;
  write_header(out.data(), h);
  if (!payload.empty()) std::memcpy(out.data() + kHeaderSize, payload.data(), payload.size());
  return out;
}

namespace {
std::string control_frame(std::uint32_t flags, std::uint64_t next_seq, std::int64_t ts_ns, std::uint32_t stream) {
  std::string out(kHeaderSize, '\0');
  Header h;
  h.flags = flags;
  h.seq = next_seq;
  h.ts_ns = ts_ns;
  h.count = 0;
  h.stream = stream;
  write_header(out.data(), h);
  return out;
}
}  // namespace

std::string encode_end_of_stream(std::uint64_t next_seq, std::int64_t ts_ns, std::uint32_t stream) {
  return control_frame(kFlagEndOfStream, next_seq, ts_ns, stream);
}

std::string encode_keepalive(std::uint64_t next_seq, std::int64_t ts_ns, std::uint32_t stream) {
  return control_frame(kFlagBatch | kFlagKeepalive, next_seq, ts_ns, stream);
}

void FrameEncoder::begin(std::uint64_t first_seq, std::int64_t ts_ns) {
  buf_.resize(kHeaderSize);
  first_seq_ = first_seq;
  ts_ns_ = ts_ns;
  count_ = 0;
  first_record_size_ = 0;
}

void FrameEncoder::add(std::string_view payload) {
  if (payload.size() > std::numeric_limits<std::uint32_t>::max())
    throw std::length_error("message of " + std::to_string(payload.size()) + " bytes is too large for one frame");
  if (count_ == std::numeric_limits<std::uint32_t>::max()) throw std::length_error("too many messages in one frame");
  // Records are always written with their length prefix; finish() removes the prefix
  // again when the frame holds only one message.
  const std::size_t at = buf_.size();
  buf_.resize(at + kRecordPrefix + payload.size());
  put_le(buf_.data() + at, static_cast<std::uint32_t>(payload.size()));
  if (!payload.empty()) std::memcpy(buf_.data() + at + kRecordPrefix, payload.data(), payload.size());
  if (count_ == 0) first_record_size_ = payload.size();
  last_record_at_ = at + kRecordPrefix;
  last_record_size_ = payload.size();
  ++count_;
}

std::string_view FrameEncoder::last_message() const {
  if (count_ == 0) return {};
  return std::string_view(buf_).substr(last_record_at_, last_record_size_);
}

std::size_t FrameEncoder::size() const {
  return count_ == 1 ? kHeaderSize + first_record_size_ : buf_.size();
}

std::string_view FrameEncoder::finish() {
  Header h;
  h.seq = first_seq_;
  h.ts_ns = ts_ns_;
  h.count = count_;
  h.stream = stream_;
  if (count_ == 1) {
    // Plain single frame: header directly before the payload. Shift the header by the
    // prefix instead of moving a possibly large payload.
    write_header(buf_.data() + kRecordPrefix, h);
    return std::string_view(buf_).substr(kRecordPrefix);
  }
  h.flags = kFlagBatch;
  write_header(buf_.data(), h);
  return buf_;
}

std::string_view describe(DecodeStatus s) {
  switch (s) {
    case DecodeStatus::ok: return "ok";
    case DecodeStatus::short_frame: return "frame shorter than the 32-byte header";
    case DecodeStatus::bad_magic: return "wrong magic (not a PLH1 frame)";
    case DecodeStatus::bad_count: return "message count does not match the flags";
    case DecodeStatus::record_overrun: return "batch record runs past the end of the frame";
    case DecodeStatus::trailing_bytes: return "bytes after the last batch record";
  }
  return "unknown";
}

DecodeStatus decode_frame(std::string_view frame, DecodedFrame& out) {
  out.messages.clear();
  if (frame.size() < kHeaderSize) return DecodeStatus::short_frame;
  out.header = read_header(frame.data());
  const Header& h = out.header;
  if (h.magic != kMagic) return DecodeStatus::bad_magic;
  if (h.end_of_stream()) return DecodeStatus::ok;
  const std::string_view payload = frame.substr(kHeaderSize);
  if (h.keepalive()) {
    if (h.count != 0) return DecodeStatus::bad_count;
    return payload.empty() ? DecodeStatus::ok : DecodeStatus::trailing_bytes;
  }
  if (!h.batch()) {
    if (h.count != 1) return DecodeStatus::bad_count;
    out.messages.push_back(payload);
    return DecodeStatus::ok;
  }
  if (h.count == 0) return DecodeStatus::bad_count;
  // Each record needs at least its 4-byte prefix: a count that cannot fit is rejected
  // before reserving memory for it.
  if (h.count > payload.size() / kRecordPrefix) return DecodeStatus::record_overrun;
  out.messages.reserve(h.count);
  std::size_t pos = 0;
  for (std::uint32_t i = 0; i < h.count; ++i) {
    if (payload.size() - pos < kRecordPrefix) {
      out.messages.clear();
      return DecodeStatus::record_overrun;
    }
    const std::uint32_t len = get_le<std::uint32_t>(payload.data() + pos);
    pos += kRecordPrefix;
    if (len > payload.size() - pos) {
      out.messages.clear();
      return DecodeStatus::record_overrun;
    }
    out.messages.push_back(payload.substr(pos, len));
    pos += len;
  }
  if (pos != payload.size()) {
    out.messages.clear();
    return DecodeStatus::trailing_bytes;
  }
  return DecodeStatus::ok;
}

}  // namespace plh::wire
