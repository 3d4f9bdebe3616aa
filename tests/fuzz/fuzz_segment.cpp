// Segment attach and validation (plh/shm/data_block.hpp): the input becomes the
// contents of a real shared-memory object /dev/shm/plh.fuzz-<pid>-seg, which is then
// inspected, read by a Reader and attached by a Writer the way plh-shm info/read/write do.
//
// Input: byte 0 bits 0-1 choose the object's size: 0 the image as given; 1 the image
// zero-padded to the size its header claims; 2 that size minus 1 + byte 1 (truncated);
// 3 that size plus 1 + byte 1. Bit 2: the reader starts at the latest slot. Bit 3: also
// attach a Writer and publish one slot. Bit 4: plh-shm info --json instead of text.
// The rest of the input is the image (a valid one is in corpus/segment/).
// Checks: nothing crashes or hangs, every failure is a plh::Error with a documented exit
// code and a one-line printable message, a slot handed out fits the slot size.
#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>

#include "fuzz_shm.hpp"
#include "plh/shm/commands.hpp"
#include "plh/shm/data_block.hpp"
#include "plh/shm/layout.hpp"

using namespace plh;
using namespace std::chrono_literals;

namespace {

constexpr std::size_t kMaxFile = 4u << 20;

std::size_t claimed_size(std::string_view image) {
  if (image.size() < 24) return 0;
  std::uint64_t total = 0;
  std::memcpy(&total, image.data() + 16, 8);
  return total <= kMaxFile ? static_cast<std::size_t>(total) : 0;
}

template <class F>
void expect_clear(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    fuzz::check_clear_error(e);
  }
}

volatile std::uint8_t g_sink;

void touch(std::span<const std::byte> payload) {
  std::uint8_t x = 0;
  for (std::byte b : payload) x ^= static_cast<std::uint8_t>(b);
  g_sink = x;
}

void read_some(const std::string& name, bool latest) {
  shm::Reader::Options ro;
  ro.from = latest ? shm::Reader::From::latest : shm::Reader::From::oldest;
  ro.wait.heartbeat_timeout = 50ms;
  ro.wait.spin = 0ns;
  shm::Reader r(name, ro);
  const std::uint32_t slot_size = r.geometry().slot_size;
  for (int i = 0; i < 64; ++i) {
    auto v = r.try_acquire();
    if (!v) break;
    PLH_FUZZ_CHECK(v->meta.size <= slot_size, "slot of %u bytes handed out, slot size %u", v->meta.size, slot_size);
    touch(v->payload());
    r.release();
  }
  const auto got = r.acquire(shm::Clock::now() + 1ms);
  if (got.status == shm::AcquireStatus::slot) touch(got.view.payload());
  (void)r.ended();
  (void)r.skipped();
}

void write_one(const std::string& name) {
  shm::Writer::Options wo;
  wo.wait.heartbeat_timeout = 50ms;
  wo.wait.spin = 0ns;
  shm::Writer w(name, wo);
  auto buf = w.begin_publish(shm::Clock::now() + 2ms);
  if (buf.empty()) return;
  const std::size_t n = std::min<std::size_t>(buf.size(), 3);
  std::memcpy(buf.data(), "abc", n);
  w.end_publish(n);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logging();
  fuzz::stdout_to_devnull();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::Bytes in(data, size);
  const std::uint8_t mode = in.u8();
  const std::uint8_t delta = in.u8();
  const std::string_view image = in.rest();
  const std::size_t claimed = claimed_size(image);
  std::size_t file_size = image.size();
  switch (mode & 3) {
    case 1: file_size = std::max(file_size, claimed); break;
    case 2: file_size = claimed > delta + 1u ? claimed - delta - 1u : file_size; break;
    case 3: file_size = claimed ? claimed + delta + 1u : file_size; break;
    default: break;
  }
  // An empty object or one whose magic is all zero is a segment being created: opening
  // waits up to a second for its creator, by design. Not interesting here.
  if (file_size == 0 || image.size() < 8 ||
      std::memcmp(image.data(), "\0\0\0\0\0\0\0\0", 8) == 0)
    return 0;
  static const std::string name = fuzz::segment_name("seg");
  fuzz::write_segment_file(name, image, file_size);

  expect_clear([&] {
    const shm::SegmentInfo info = shm::inspect_segment(name);
    PLH_FUZZ_CHECK(info.total_size <= file_size, "info total %llu > file %zu",
                   static_cast<unsigned long long>(info.total_size), file_size);
    (void)shm::to_json(info).dump();
  });
  expect_clear([&] { shm::commands::info(name, (mode & 16) != 0); });
  expect_clear([&] { read_some(name, (mode & 4) != 0); });
  if (mode & 8) {
    expect_clear([&] { write_one(name); });
    expect_clear([&] { read_some(name, false); });
  }
  fuzz::remove_segment_file(name);
  return 0;
}
