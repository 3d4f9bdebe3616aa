#include <catch2/catch.hpp>

#include <cstring>
#include <string>

#include "plh/data/wire.hpp"

using namespace plh::wire;

namespace {
std::string le32(std::uint32_t v) {
  std::string s(4, '\0');
  for (int i = 0; i < 4; ++i) s[i] = static_cast<char>((v >> (8 * i)) & 0xFF);
  return s;
}
std::string le64(std::uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((v >> (8 * i)) & 0xFF);
  return s;
}
std::string header(std::uint32_t flags, std::uint64_t seq, std::int64_t ts, std::uint32_t count) {
  return le32(kMagic) + le32(flags) + le64(seq) + le64(static_cast<std::uint64_t>(ts)) + le32(count) + le32(0);
}
}  // namespace

TEST_CASE("single frame layout is exactly the SPEC header then the payload", "[wire]") {
  const std::string f = encode_single(7, 1234567890123, "hello");
  REQUIRE(f.size() == 32 + 5);
  CHECK(f.substr(0, 4) == "PLH1");
  CHECK(f == header(0, 7, 1234567890123, 1) + "hello");
  DecodedFrame d;
  REQUIRE(decode_frame(f, d) == DecodeStatus::ok);
  CHECK(!d.header.batch());
  CHECK(!d.header.end_of_stream());
  CHECK(d.header.seq == 7);
  CHECK(d.header.ts_ns == 1234567890123);
  REQUIRE(d.messages.size() == 1);
  CHECK(d.messages[0] == "hello");
}

TEST_CASE("end-of-stream marker carries the next seq and count 0", "[wire]") {
  const std::string f = encode_end_of_stream(101, -5);
  CHECK(f == header(kFlagEndOfStream, 101, -5, 0));
  DecodedFrame d;
  REQUIRE(decode_frame(f, d) == DecodeStatus::ok);
  CHECK(d.header.end_of_stream());
  CHECK(d.header.seq == 101);
  CHECK(d.messages.empty());
}

TEST_CASE("encoder writes a plain frame for one message and a batch for more", "[wire]") {
  FrameEncoder enc;
  enc.begin(1, 42);
  enc.add("only");
  CHECK(enc.size() == 36);
  CHECK(std::string(enc.finish()) == encode_single(1, 42, "only"));

  enc.begin(10, 43);
  enc.add("a");
  enc.add("");
  enc.add(std::string("b\0c", 3));
  const std::string f(enc.finish());
  CHECK(enc.size() == f.size());
  CHECK(f == header(kFlagBatch, 10, 43, 3) + le32(1) + "a" + le32(0) + le32(3) + std::string("b\0c", 3));
  DecodedFrame d;
  REQUIRE(decode_frame(f, d) == DecodeStatus::ok);
  CHECK(d.header.batch());
  CHECK(d.header.seq == 10);
  REQUIRE(d.messages.size() == 3);
  CHECK(d.messages[0] == "a");
  CHECK(d.messages[1].empty());
  CHECK(d.messages[2] == std::string_view("b\0c", 3));
}

TEST_CASE("empty and binary single messages round-trip", "[wire]") {
  std::string bin;
  for (int i = 0; i < 256; ++i) bin.push_back(static_cast<char>(i));
  for (const std::string& payload : {std::string(), bin}) {
    FrameEncoder enc;
    enc.begin(3, 0);
    enc.add(payload);
    DecodedFrame d;
    REQUIRE(decode_frame(enc.finish(), d) == DecodeStatus::ok);
    REQUIRE(d.messages.size() == 1);
    CHECK(d.messages[0] == payload);
  }
}

TEST_CASE("malformed frames are reported, never read out of bounds", "[wire]") {
  DecodedFrame d;
  CHECK(decode_frame("", d) == DecodeStatus::short_frame);
  CHECK(decode_frame(header(0, 1, 0, 1).substr(0, 31), d) == DecodeStatus::short_frame);
  std::string wrong = header(0, 1, 0, 1) + "x";
  wrong[0] = 'Q';
  CHECK(decode_frame(wrong, d) == DecodeStatus::bad_magic);
  CHECK(decode_frame(header(0, 1, 0, 2) + "x", d) == DecodeStatus::bad_count);
  CHECK(decode_frame(header(kFlagBatch, 1, 0, 0), d) == DecodeStatus::bad_count);
  // Record longer than the frame.
  CHECK(decode_frame(header(kFlagBatch, 1, 0, 1) + le32(100) + "abc", d) == DecodeStatus::record_overrun);
  // Length prefix cut off.
  CHECK(decode_frame(header(kFlagBatch, 1, 0, 2) + le32(1) + "a" + "\x01\x00", d) == DecodeStatus::record_overrun);
  // Huge count with a tiny payload is rejected without allocating for it.
  CHECK(decode_frame(header(kFlagBatch, 1, 0, 0xFFFFFFFF) + le32(0), d) == DecodeStatus::record_overrun);
  // Length near UINT32_MAX must not wrap around.
  CHECK(decode_frame(header(kFlagBatch, 1, 0, 1) + le32(0xFFFFFFFF) + "a", d) == DecodeStatus::record_overrun);
  CHECK(decode_frame(header(kFlagBatch, 1, 0, 1) + le32(1) + "ab", d) == DecodeStatus::trailing_bytes);
  CHECK(d.messages.empty());
  for (auto s : {DecodeStatus::short_frame, DecodeStatus::bad_magic, DecodeStatus::bad_count,
                 DecodeStatus::record_overrun, DecodeStatus::trailing_bytes})
    CHECK(!describe(s).empty());
}

TEST_CASE("decoder survives every truncation of a valid batch", "[wire]") {
  FrameEncoder enc;
  enc.begin(1, 0);
  for (int i = 0; i < 20; ++i) enc.add(std::string(static_cast<std::size_t>(i), 'x'));
  const std::string f(enc.finish());
  DecodedFrame d;
  REQUIRE(decode_frame(f, d) == DecodeStatus::ok);
  for (std::size_t n = 0; n < f.size(); ++n) {
    const std::string cut = f.substr(0, n);  // own buffer, so ASan catches overreads
    CHECK(decode_frame(cut, d) != DecodeStatus::ok);
    CHECK(d.messages.empty());
  }
}

TEST_CASE("keepalive: an empty batch with the keepalive flag and the next seq, stream id at offset 28", "[wire]") {
  const std::string ka = encode_keepalive(42, 7, 0xA1B2C3D4u);
  REQUIRE(ka.size() == kHeaderSize);
  DecodedFrame d;
  REQUIRE(decode_frame(ka, d) == DecodeStatus::ok);
  CHECK(d.header.keepalive());
  CHECK(d.header.batch());  // a reader that knows no keepalive sees an empty batch
  CHECK(!d.header.end_of_stream());
  CHECK(d.header.count == 0);
  CHECK(d.header.seq == 42);
  CHECK(d.header.stream == 0xA1B2C3D4u);
  CHECK(d.messages.empty());
  CHECK(static_cast<unsigned char>(ka[28]) == 0xD4);  // little endian
  // A keepalive carries nothing: messages or payload bytes are malformed.
  CHECK(decode_frame(header(kFlagBatch | kFlagKeepalive, 1, 0, 1) + le32(1) + "a", d) == DecodeStatus::bad_count);
  CHECK(decode_frame(ka + "x", d) == DecodeStatus::trailing_bytes);
  // An empty batch without the flag stays malformed.
  CHECK(decode_frame(header(kFlagBatch, 1, 0, 0), d) == DecodeStatus::bad_count);
}

TEST_CASE("the stream id is written into every frame the encoder makes and into EOS markers", "[wire]") {
  FrameEncoder enc;
  enc.set_stream(0x01020304u);
  DecodedFrame d;
  enc.begin(5, 0);
  enc.add("one");
  REQUIRE(decode_frame(std::string(enc.finish()), d) == DecodeStatus::ok);
  CHECK(d.header.stream == 0x01020304u);
  enc.begin(6, 0);
  enc.add("a");
  enc.add("b");
  REQUIRE(decode_frame(std::string(enc.finish()), d) == DecodeStatus::ok);
  CHECK(d.header.stream == 0x01020304u);
  REQUIRE(decode_frame(encode_end_of_stream(8, 0, 9), d) == DecodeStatus::ok);
  CHECK(d.header.stream == 9);
  CHECK(d.header.seq == 8);
  REQUIRE(decode_frame(encode_single(1, 0, "x", 77), d) == DecodeStatus::ok);
  CHECK(d.header.stream == 77);
}
