// The data-plane decoder (plh/wire.hpp): the input is one frame as a subscriber
// receives it. Checks that decode_frame never reads outside the frame, that what it
// accepts is consistent with the header (count, record sizes, no trailing bytes), and
// that the messages it hands out survive FrameEncoder -> decode_frame unchanged.
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz_support.hpp"
#include "plh/data/wire.hpp"

using namespace plh;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // A copy of exactly `size` bytes, so ASan sees any read past the frame end.
  std::vector<char> frame(data, data + size);
  const std::string_view in(frame.data(), frame.size());
  static wire::DecodedFrame out;  // reused across inputs, as a subscriber does
  const wire::DecodeStatus st = wire::decode_frame(in, out);
  PLH_FUZZ_CHECK(!wire::describe(st).empty(), "status %d", static_cast<int>(st));
  if (st != wire::DecodeStatus::ok) {
    PLH_FUZZ_CHECK(out.messages.empty(), "rejected frame (%d) left %zu messages", static_cast<int>(st),
                   out.messages.size());
    return 0;
  }
  PLH_FUZZ_CHECK(size >= wire::kHeaderSize, "accepted a %zu-byte frame", size);
  const wire::Header& h = out.header;
  PLH_FUZZ_CHECK(h.magic == wire::kMagic, "accepted magic %08x", h.magic);
  if (h.end_of_stream()) {
    PLH_FUZZ_CHECK(out.messages.empty(), "end-of-stream marker with %zu messages", out.messages.size());
    return 0;
  }
  if (h.keepalive()) {  // count 0, no payload: liveness and the next seq only
    PLH_FUZZ_CHECK(out.messages.empty() && h.count == 0 && size == wire::kHeaderSize,
                   "keepalive with count %u, %zu messages, %zu bytes", h.count, out.messages.size(), size);
    return 0;
  }
  std::size_t payload_bytes = 0;
  for (const auto& m : out.messages) {
    PLH_FUZZ_CHECK(m.data() >= in.data() + wire::kHeaderSize && m.data() + m.size() <= in.data() + in.size(),
                   "message view outside the frame");
    payload_bytes += m.size();
  }
  if (!h.batch()) {
    PLH_FUZZ_CHECK(h.count == 1 && out.messages.size() == 1, "single frame count %u messages %zu", h.count,
                   out.messages.size());
    PLH_FUZZ_CHECK(payload_bytes == size - wire::kHeaderSize, "single frame payload %zu of %zu", payload_bytes, size);
  } else {
    PLH_FUZZ_CHECK(h.count >= 1 && out.messages.size() == h.count, "batch count %u messages %zu", h.count,
                   out.messages.size());
    PLH_FUZZ_CHECK(payload_bytes + wire::kRecordPrefix * h.count == size - wire::kHeaderSize,
                   "batch records %zu + prefixes do not fill the %zu-byte frame", payload_bytes, size);
  }

  // Round trip through the encoder.
  static wire::FrameEncoder enc;
  enc.begin(h.seq, h.ts_ns);
  for (const auto& m : out.messages) enc.add(m);
  PLH_FUZZ_CHECK(enc.count() == out.messages.size(), "encoder count %u", enc.count());
  const std::string again(enc.finish());
  PLH_FUZZ_CHECK(again.size() == enc.size(), "encoder size %zu vs frame %zu", enc.size(), again.size());
  if (!h.batch() && h.flags == 0 && h.stream == 0)  // the encoder writes stream id 0
    PLH_FUZZ_CHECK(again == in, "a plain single frame does not re-encode to itself");
  if (out.messages.size() == 1)
    PLH_FUZZ_CHECK(again == wire::encode_single(h.seq, h.ts_ns, out.messages[0]), "encoder and encode_single differ");
  wire::DecodedFrame back;
  PLH_FUZZ_CHECK(wire::decode_frame(again, back) == wire::DecodeStatus::ok, "re-encoded frame rejected");
  PLH_FUZZ_CHECK(back.header.seq == h.seq && back.header.ts_ns == h.ts_ns, "seq/ts changed in the round trip");
  PLH_FUZZ_CHECK(back.messages.size() == out.messages.size(), "round trip %zu -> %zu messages", out.messages.size(),
                 back.messages.size());
  for (std::size_t i = 0; i < back.messages.size(); ++i)
    PLH_FUZZ_CHECK(back.messages[i] == out.messages[i], "message %zu changed in the round trip", i);

  const std::string eos = wire::encode_end_of_stream(h.seq, h.ts_ns);
  PLH_FUZZ_CHECK(wire::decode_frame(eos, back) == wire::DecodeStatus::ok && back.header.end_of_stream() &&
                     back.messages.empty() && back.header.seq == h.seq,
                 "end-of-stream marker does not decode");
  return 0;
}
