#pragma once
// Internals shared by the shm sources: a validated mapping of a segment and the futex
// and clock primitives. Not part of the public API.
#include <sys/types.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "plh/shm/data_block.hpp"
#include "plh/shm/layout.hpp"

namespace plh::shm::detail {

// An open, mapped and validated segment. Geometry fields are copied out of the header
// at validation time: the copies are what the code uses, never the shared values again.
//
// Truncation. Another process that may write the object (its owner, root, or a group
// allowed by --mode) can ftruncate it while it is mapped; touching a page past the new
// end then raises SIGBUS. Every mapping is registered with a process-wide SIGBUS handler
// (installed once, chaining to any previous handler for faults elsewhere) that maps
// anonymous zero pages over the part of the mapping from the faulting page on and marks
// the segment damaged; the faulting access is then retried and reads zeros. Readers and
// writers check damaged() (one relaxed load) at every step where a torn value could be
// used, and size_check() (fstat) while they wait, and turn it into Error(failure).
// Why this and not sigsetjmp/siglongjmp around each access: the API hands out zero-copy
// spans (begin_publish, SlotView) that user code touches outside any library frame; a
// longjmp cannot protect those, the remap does, and it needs no per-access setup on the
// hot path. File seals (F_SEAL_SHRINK) would prevent the truncation altogether but only
// exist for memfd objects, not for shm_open ones.
class Segment {
 public:
  enum class Access { read_only, read_write };
  // Opens /plh.NAME and validates it (see validate_layout()). Errors as documented in
  // data_block.hpp. A segment whose magic is still zero (creation in progress) is
  // retried for up to a second. With `trust`, the object must be owned by the effective
  // uid, root or trust->owner, and grant group/others no bit outside `accept_mode`
  // (RefusedError naming owner and mode); without it (info, ls) anything is inspected.
  static Segment open(std::string_view name, Access access, const Trust* trust = nullptr, unsigned accept_mode = 0);
  // Creates it exclusively (O_CREAT | O_EXCL), sized and initialised; returns it mapped
  // read-write. nullopt when the object already exists.
  static std::optional<Segment> create_exclusive(std::string_view name, const CreateOptions& opts);
  // Same, Error(failure) "already exists" instead of nullopt.
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

  // True once a SIGBUS in this mapping was absorbed or size_check() found it shorter.
  bool damaged() const { return faulted_ && faulted_->load(std::memory_order_relaxed) != 0; }
  // fstat()s the object: marks the segment damaged when it is now shorter than mapped.
  // Safe to call from any thread.
  void size_check() const;
  // Error(failure) "segment 'NAME' was truncated under this <who> ..." when damaged.
  void throw_if_damaged(std::string_view who) const {
    if (damaged()) throw_damaged(who);
  }
  [[noreturn]] void throw_damaged(std::string_view who) const;

 private:
  void release() noexcept;
  void set_geometry(const Geometry& g);
  std::string name_;
  std::byte* base_ = nullptr;
  std::size_t size_ = 0;
  int fd_ = -1;
  int guard_ = -1;                                 // index in the SIGBUS registry
  std::atomic<std::uint32_t>* faulted_ = nullptr;  // that entry's flag
  Geometry geo_;
  std::uint64_t slots_ = 1, stride_ = 0, meta_size_ = layout::kSlotMetaSize;
  std::uint64_t slot_mask_ = 0;  // slots_ - 1 when slots_ is a power of two > 1 (no division)
  unsigned file_mode_ = 0;
  uid_t uid_ = 0;
};

// Sequence numbers above this are impossible (2^62 slots at 10^9 slots/s take 146
// years): a larger write_seq or slot seq is a writer breaking the protocol, and the
// bound keeps every `seq + 1` and `seq + slot_count` far from wrapping.
inline constexpr std::uint64_t kMaxSeq = std::uint64_t{1} << 62;

// Bounded compare-and-swap loops over shared words: a hostile process that keeps
// changing the word cannot keep us spinning; false when the bound was hit.
inline constexpr int kCasAttempts = 1000;

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
  for (int i = 0; i < kCasAttempts && !(v & 1u); ++i)
    if (word.compare_exchange_weak(v, v | 1u, std::memory_order_seq_cst)) return v | 1u;
  return v;  // bit set by someone else (or a hostile word): the wait below is bounded anyway
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

// How long a blocked reader or writer spins before it sleeps on the futex. A futex
// sleep costs the other side a wake-up (a syscall, and on a VM waking an idle vCPU: tens
// of microseconds per slot), so a side that is woken for every slot of a fast stream loses
// a third of its bandwidth. The budget follows the waits seen: when they are short (an
// average up to `cap`) it spins up to twice the average, so the slot is caught spinning and
// the other side never makes a syscall; when they are longer it spins only `base`, so a
// slow stream (a 1 kHz sensor) costs no CPU. The average moves by 1/8 of each wait.
// Both bounds are clamped to [0, 1 s], so the arithmetic below cannot overflow.
class AdaptiveSpin {
 public:
  explicit AdaptiveSpin(const WaitOptions& w = {}) : AdaptiveSpin(w.spin, w.spin_max) {}
  AdaptiveSpin(std::chrono::nanoseconds base, std::chrono::nanoseconds cap)
      : base_(std::clamp<std::int64_t>(base.count(), 0, kLimit)),
        cap_(std::clamp<std::int64_t>(cap.count(), base_, kLimit)),
        avg_(cap_ + 1) {}
  std::chrono::nanoseconds budget() const {
    if (avg_ > cap_) return std::chrono::nanoseconds(base_);
    return std::chrono::nanoseconds(std::clamp<std::int64_t>(2 * avg_, base_, cap_));
  }
  void record(std::chrono::nanoseconds waited) {
    const std::int64_t w = std::clamp<std::int64_t>(waited.count(), 0, 8 * (cap_ + 1));  // one stall moves it little
    avg_ += (w - avg_) / 8;
  }

 private:
  static constexpr std::int64_t kLimit = 1'000'000'000;
  std::int64_t base_, cap_, avg_;
};

// Writes the checksum of payload into out (kChecksumBytes, zero padded).
void compute_checksum(Checksum kind, const std::byte* payload, std::size_t size, std::byte* out);

}  // namespace plh::shm::detail
