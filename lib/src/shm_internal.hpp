#pragma once
// Internals shared by the shm sources: a validated mapping of a segment and the futex
// and clock primitives. Not part of the public API.
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "plh/shm/data_block.hpp"
#include "plh/shm/layout.hpp"

namespace plh::shm::detail {

// An open, mapped and validated segment. Geometry fields are copied out of the header
// at validation time: the copies are what the code uses, never the shared values again.
class Segment {
 public:
  enum class Access { read_only, read_write };
  // Opens /plh.NAME and validates it (see validate()). Errors as documented in
  // data_block.hpp. A segment whose magic is still zero (creation in progress) is
  // retried for up to a second.
  static Segment open(std::string_view name, Access access);
  // Creates it exclusively, sized and initialised; returns it mapped read-write.
  static Segment create(std::string_view name, const CreateOptions& opts);

  Segment() = default;
  Segment(Segment&&) noexcept;
  Segment& operator=(Segment&&) noexcept;
  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;
  ~Segment();

  layout::Header* header() const { return reinterpret_cast<layout::Header*>(base_); }
  layout::ReaderEntry* reader(std::uint32_t i) const {
    return reinterpret_cast<layout::ReaderEntry*>(base_ + layout::kReaderTableOffset + std::size_t{i} * layout::kReaderEntrySize);
  }
  // Slot holding `seq` (seq >= 1).
  layout::SlotMeta* slot_for(std::uint64_t seq) const {
    const std::uint64_t index = slot_mask_ ? ((seq - 1) & slot_mask_) : ((seq - 1) % slots_);
    return reinterpret_cast<layout::SlotMeta*>(base_ + layout::kSlotsOffset + index * stride_);
  }
  std::byte* payload_of(layout::SlotMeta* s) const { return reinterpret_cast<std::byte*>(s) + meta_size_; }
  std::byte* checksum_of(layout::SlotMeta* s) const {
    return reinterpret_cast<std::byte*>(s) + layout::kChecksumOffset;
  }

  const std::string& name() const { return name_; }
  const Geometry& geometry() const { return geo_; }
  std::uint64_t total_size() const { return size_; }
  std::uint64_t slots() const { return slots_; }
  unsigned file_mode() const { return file_mode_; }
  uid_t file_uid() const { return uid_; }

 private:
  std::string name_;
  std::byte* base_ = nullptr;
  std::size_t size_ = 0;
  Geometry geo_;
  std::uint64_t slots_ = 1, stride_ = 0, meta_size_ = layout::kSlotMetaSize;
  std::uint64_t slot_mask_ = 0;  // slots_ - 1 when slots_ is a power of two > 1 (no division)
  unsigned file_mode_ = 0;
  uid_t uid_ = 0;
};

// Problem with a mapped header of `file_size` bytes, or "" when it is a valid v1 layout.
// `code` receives refused (not plh / other version) or failure (corrupt / truncated).
std::string validate_layout(const std::byte* base, std::size_t file_size, ExitCode& code);

// Slot geometry derived from the user's geometry.
struct SlotGeometry {
  std::uint32_t meta_size, stride;
  std::uint64_t total_size;
};
SlotGeometry slot_geometry(const Geometry& g);  // UsageError when impossible

std::uint64_t monotonic_ns();
bool pid_alive(std::uint32_t pid);  // false only when the pid surely does not exist

// FUTEX_WAIT / FUTEX_WAKE on a word in shared memory (not the _PRIVATE variants).
void futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected, std::chrono::nanoseconds timeout);
void futex_wake_all(std::atomic<std::uint32_t>& word);

// Asymmetric fence (membarrier(2)): the fast side (the writer) registers once per
// process and then needs only a compiler barrier between its store and its load; the
// slow side (a reader about to sleep) calls heavy_fence(), which makes every running
// thread of every registered process execute a full memory barrier. false when the
// kernel (or a seccomp filter) does not offer MEMBARRIER_CMD_GLOBAL_EXPEDITED.
bool register_light_fence();  // cached after the first call
bool heavy_fence();

// Event counts on a futex word: bit 0 = "someone sleeps on it", bits 1.. count events.
// A sleeper calls announce_sleep() (sets bit 0, returns the value to wait on), re-checks
// its condition, then futex_wait()s on that value. A waker, after making its change
// visible (seq_cst), calls wake_if_sleeping(): one load when nobody sleeps, else it
// clears the bit (so later events do not wake again until someone sleeps again) and
// wakes everyone. bump_and_wake() always wakes (attach, detach, end of stream).
inline std::uint32_t announce_sleep(std::atomic<std::uint32_t>& word) {
  std::uint32_t v = word.load(std::memory_order_seq_cst);
  while (!(v & 1u))
    if (word.compare_exchange_weak(v, v | 1u, std::memory_order_seq_cst)) return v | 1u;
  return v;
}
inline void wake_if_sleeping(std::atomic<std::uint32_t>& word) {
  std::uint32_t v = word.load(std::memory_order_seq_cst);
  if ((v & 1u) && word.compare_exchange_strong(v, v + 1u, std::memory_order_seq_cst)) futex_wake_all(word);
}
inline void bump_and_wake(std::atomic<std::uint32_t>& word) {
  word.fetch_add(2u, std::memory_order_seq_cst);
  futex_wake_all(word);
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#else
  std::atomic_signal_fence(std::memory_order_seq_cst);
#endif
}

// Writes the checksum of payload into out (kChecksumBytes, zero padded).
void compute_checksum(Checksum kind, const std::byte* payload, std::size_t size, std::byte* out);

}  // namespace plh::shm::detail
