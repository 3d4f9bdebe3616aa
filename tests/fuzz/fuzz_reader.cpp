// A reader against a hostile writer: a valid segment is created and filled by a real
// Writer, then a second thread keeps rewriting words of its header, reader table and
// slots (from the fuzz input) while the main thread reads it, through the Reader API or
// through plh-shm read itself (shm::commands::read, stdout to /dev/null, -W 10ms).
//
// Input: 6 setup bytes, then 11-byte mutations.
//   0  policy (1 + b % 3), checksum (bits 2-3 % 3), bit 4: commands::read instead of the
//      Reader API, bit 5: --from latest, bit 6: the writer detaches (no end of stream)
//   1  slots - 1 (% 8)         2  slot size: 16 + b * 4
//   3  slots published (% 9; packed slots when bit 7)
//   4  output format for commands::read (line zero len raw json)
//   5  rounds of mutation (1 + b * 256, each applies every mutation once)
//   mutation: op, u16 offset, u64 value. op bits 0-1: width 1/2/4/8 bytes; bits 2-3:
//   region header / reader table / slot area / anywhere; bit 4: alternate between the
//   value and the original (a flipping word). op 0xff: truncate the object to
//   offset * 64 bytes instead (once; skipped when PLH_FUZZ_NO_TRUNCATE is set, to look
//   past a known SIGBUS while it is being fixed).
// Checks: no crash, no hang (libFuzzer -timeout), reads end in bounded time, errors are
// plh::Error with a documented code and a one-line message.
#include <sys/mman.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "fuzz_shm.hpp"
#include "plh/shm/commands.hpp"
#include "plh/shm/data_block.hpp"
#include "plh/shm/layout.hpp"

using namespace plh;
using namespace std::chrono_literals;

namespace {

struct Mutation {
  std::uint8_t op;
  std::uint16_t offset;
  std::uint64_t value;
};

volatile std::uint8_t g_sink;

void store(std::byte* p, unsigned width, std::uint64_t v) {
  // Aligned words through the atomic builtins, the way the real peers access them.
  switch (width) {
    case 1: __atomic_store_n(reinterpret_cast<std::uint8_t*>(p), static_cast<std::uint8_t>(v), __ATOMIC_RELAXED); break;
    case 2: __atomic_store_n(reinterpret_cast<std::uint16_t*>(p), static_cast<std::uint16_t>(v), __ATOMIC_RELAXED); break;
    case 4: __atomic_store_n(reinterpret_cast<std::uint32_t*>(p), static_cast<std::uint32_t>(v), __ATOMIC_RELAXED); break;
    default: __atomic_store_n(reinterpret_cast<std::uint64_t*>(p), v, __ATOMIC_RELAXED); break;
  }
}

std::uint64_t load(const std::byte* p, unsigned width) {
  switch (width) {
    case 1: return __atomic_load_n(reinterpret_cast<const std::uint8_t*>(p), __ATOMIC_RELAXED);
    case 2: return __atomic_load_n(reinterpret_cast<const std::uint16_t*>(p), __ATOMIC_RELAXED);
    case 4: return __atomic_load_n(reinterpret_cast<const std::uint32_t*>(p), __ATOMIC_RELAXED);
    default: return __atomic_load_n(reinterpret_cast<const std::uint64_t*>(p), __ATOMIC_RELAXED);
  }
}

void read_with_api(const std::string& name, bool latest) {
  shm::Reader::Options ro;
  ro.from = latest ? shm::Reader::From::latest : shm::Reader::From::oldest;
  ro.wait.heartbeat_timeout = 50ms;
  ro.wait.spin = 0ns;
  shm::Reader r(name, ro);
  const std::uint32_t slot_size = r.geometry().slot_size;
  const auto deadline = shm::Clock::now() + 10ms;
  std::vector<std::byte> copy;
  for (int i = 0; i < 256; ++i) {
    try {
      const auto got = r.acquire(deadline);
      if (got.status != shm::AcquireStatus::slot) break;
      PLH_FUZZ_CHECK(got.view.meta.size <= slot_size, "slot of %u bytes, slot size %u", got.view.meta.size, slot_size);
      copy.assign(got.view.data, got.view.data + got.view.meta.size);
      g_sink = copy.empty() ? 0 : static_cast<std::uint8_t>(copy.back());
      r.release();
    } catch (const shm::ChecksumError& e) {
      fuzz::check_clear_error(e);  // consumed; carry on like plh-shm read
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logging();
  fuzz::stdout_to_devnull();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::Bytes in(data, size);
  const std::uint8_t b0 = in.u8();
  shm::Geometry g;
  g.policy = static_cast<shm::Policy>(1 + b0 % 3);
  g.checksum = static_cast<shm::Checksum>(((b0 >> 2) & 3) % 3);
  g.slots = 1 + in.u8() % 8;
  g.slot_size = 16 + in.u8() * 4u;
  const std::uint8_t b3 = in.u8();
  const unsigned publish = b3 % 9;
  const bool packed = (b3 & 0x80) != 0;
  static constexpr const char* kFormats[] = {"line", "zero", "len", "raw", "json"};
  const char* format = kFormats[in.u8() % 5];
  const unsigned rounds = 1 + in.u8() * 256u;  // the hostile thread stops when the read ends
  std::vector<Mutation> muts;
  while (in.size() >= 11 && muts.size() < 64) {
    Mutation m{};
    m.op = in.u8();
    m.offset = in.u16();
    m.value = in.u64();
    muts.push_back(m);
  }

  static const std::string name = fuzz::segment_name("rdr");
  shm::remove_segment(name);
  shm::Writer::Options wo;
  wo.create = true;
  wo.create_options.geometry = g;
  wo.wait.spin = 0ns;
  {
    shm::Writer w(name, wo);
    for (unsigned i = 0; i < publish && i < g.slots; ++i) {
      auto buf = w.begin_publish(shm::Clock::now() + 5ms);
      if (buf.empty()) break;
      std::size_t n = 0;
      if (packed && buf.size() >= 4 + 2 * 7) {
        // Packed records (the plh-shm write batch format): u32 count, then u32 length + bytes.
        const std::uint32_t count = 2, len = 3;
        std::memcpy(buf.data(), &count, 4);
        for (std::uint32_t k = 0; k < count; ++k) {
          std::memcpy(buf.data() + 4 + k * 7, &len, 4);
          std::memcpy(buf.data() + 8 + k * 7, "rec", 3);
        }
        n = 4 + 2 * 7;
      } else {
        n = std::min<std::size_t>(buf.size(), 5 + i);
        std::memset(buf.data(), 'a' + static_cast<int>(i), n);
      }
      w.end_publish(n, 0, 0, {}, packed && buf.size() >= 4 + 2 * 7 ? shm::layout::kSlotPacked : 0);
    }
    if (b0 & 0x40) w.detach();
  }

  // The hostile side maps the object itself.
  const int fd = ::shm_open(("/plh." + name).c_str(), O_RDWR | O_CLOEXEC, 0);
  PLH_FUZZ_CHECK(fd >= 0, "shm_open");
  struct stat st {};
  ::fstat(fd, &st);
  const std::size_t total = static_cast<std::size_t>(st.st_size);
  void* p = ::mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  PLH_FUZZ_CHECK(p != MAP_FAILED, "mmap");
  auto* base = static_cast<std::byte*>(p);

  std::vector<std::uint64_t> original(muts.size());
  std::vector<std::size_t> where(muts.size());
  for (std::size_t i = 0; i < muts.size(); ++i) {
    const unsigned width = 1u << (muts[i].op & 3);
    std::size_t off = muts[i].offset;
    switch ((muts[i].op >> 2) & 3) {
      case 0: off %= shm::layout::kHeaderSize; break;
      case 1: off = shm::layout::kReaderTableOffset + off % (shm::layout::kReaderCapacity * shm::layout::kReaderEntrySize); break;
      case 2: off = shm::layout::kSlotsOffset + off % (total - shm::layout::kSlotsOffset); break;
      default: off %= total; break;
    }
    off = std::min(off & ~std::size_t{width - 1}, total - width);
    where[i] = off;
    original[i] = load(base + off, width);
  }

  static const bool allow_truncate = std::getenv("PLH_FUZZ_NO_TRUNCATE") == nullptr;
  std::atomic<bool> stop{false};
  std::thread hostile([&] {
    bool truncated = false;
    for (unsigned r = 0; r < rounds && !stop.load(std::memory_order_relaxed); ++r) {
      for (std::size_t i = 0; i < muts.size(); ++i) {
        const Mutation& m = muts[i];
        if (m.op == 0xff) {
          if (!truncated && allow_truncate) {
            truncated = true;
            if (::ftruncate(fd, static_cast<off_t>(std::size_t{m.offset} * 64 % total)) != 0) {
            }
          }
          continue;
        }
        const unsigned width = 1u << (m.op & 3);
        const bool flip = (m.op & 0x10) != 0;
        if (where[i] + width > total || truncated) continue;  // our own mapping would fault too
        store(base + where[i], width, flip && (r & 1) ? original[i] : m.value);
      }
      std::this_thread::yield();
    }
  });

  try {
    if (b0 & 0x10) {
      shm::commands::ReadArgs a;
      a.name = name;
      a.format = format;
      a.timeout = "10ms";
      a.from = (b0 & 0x20) ? "latest" : "oldest";
      a.heartbeat_timeout = "20ms";
      shm::commands::read(a);
    } else {
      read_with_api(name, (b0 & 0x20) != 0);
    }
  } catch (const Error& e) {
    fuzz::check_clear_error(e);
  }
  stop.store(true);
  hostile.join();
  ::munmap(p, total);
  ::close(fd);
  shm::remove_segment(name);
  return 0;
}
