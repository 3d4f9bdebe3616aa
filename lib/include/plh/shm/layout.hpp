#pragma once
// The byte layout of a plh shared-memory segment ("DataBlock"), version 1.
// docs/shm-layout.md describes the same layout for programs in other languages; the
// static_asserts below pin every offset so the two cannot drift silently.
//
// A segment is three regions, all little endian, all offsets from the segment start:
//   [0, 256)                       Header
//   [256, 256 + 64 * readers)      ReaderEntry table
//   [slots_offset, total_size)     slot_count slots of slot_stride bytes each
// Each slot is a SlotMeta (64 bytes, or 128 when a checksum is enabled) then the
// payload (at most slot_size bytes). Fields that change while the segment is in use are
// std::atomic so that every process sees them through the same lock-free 4/8-byte
// accesses (always lock-free on the platforms plh supports, asserted below).
#include <atomic>
#include <cstddef>
#include <cstdint>

namespace plh::shm::layout {

inline constexpr char kMagic[8] = {'P', 'L', 'H', 'S', 'H', 'M', '0', '1'};
inline constexpr std::uint32_t kVersion = 1;
inline constexpr std::uint32_t kHeaderSize = 256;
inline constexpr std::uint32_t kReaderTableOffset = 256;
inline constexpr std::uint32_t kReaderCapacity = 64;
inline constexpr std::uint32_t kReaderEntrySize = 64;
// First slot starts on a page boundary after the reader table.
inline constexpr std::uint32_t kSlotsOffset = 8192;
inline constexpr std::uint32_t kSlotAlign = 64;
inline constexpr std::uint32_t kSlotMetaSize = 64;           // checksum none
inline constexpr std::uint32_t kSlotMetaSizeChecksum = 128;  // xxh3 / blake2b
inline constexpr std::uint32_t kChecksumOffset = 64;         // inside SlotMeta
inline constexpr std::uint32_t kChecksumBytes = 32;

// Header::writer_fence: how the writer orders "store write_seq" before "load data_futex".
// kFenceFull: a full (sequentially consistent) fence on every publish; a reader needs
// nothing special. kFenceAsymmetric: the writer process registered for
// membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED) and publishes without a fence; a reader
// about to sleep must call that membarrier between setting bit 0 of data_futex and
// re-checking write_seq (see docs/shm-layout.md, "Event counts").
inline constexpr std::uint32_t kFenceFull = 0;
inline constexpr std::uint32_t kFenceAsymmetric = 1;

// Slot flags.
inline constexpr std::uint32_t kSlotPacked = 1u << 0;  // payload holds several records, see docs

static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);
static_assert(sizeof(std::atomic<std::uint64_t>) == 8 && sizeof(std::atomic<std::uint32_t>) == 4);

struct Header {
  // Line 0: geometry, written once at creation (magic last).
  char magic[8];                        // 0   "PLHSHM01"
  std::uint32_t version;                // 8   kVersion
  std::uint32_t header_size;            // 12  kHeaderSize
  std::uint64_t total_size;             // 16  bytes of the whole segment
  std::uint32_t slot_count;             // 24
  std::uint32_t slot_size;              // 28  max payload bytes per slot
  std::uint32_t slot_stride;            // 32  bytes from one slot to the next (multiple of 64)
  std::uint32_t slot_meta_size;         // 36  64 or 128; payload starts here inside a slot
  std::uint32_t slots_offset;           // 40  kSlotsOffset
  std::uint32_t reader_table_offset;    // 44  kReaderTableOffset
  std::uint32_t reader_capacity;        // 48  kReaderCapacity
  std::uint32_t policy;                 // 52  1 latest, 2 sequential, 3 sync
  std::uint32_t checksum;               // 56  0 none, 1 xxh3, 2 blake2b
  std::uint32_t mode;                   // 60  permission bits given at creation (informative)
  // Line 1: writer state.
  std::atomic<std::uint32_t> writer_pid;                   // 64  0 = no writer attached
  std::atomic<std::uint32_t> ended;                        // 68  1 = writer marked end of stream
  std::atomic<std::uint64_t> writer_heartbeat_ns;          // 72  CLOCK_MONOTONIC
  std::atomic<std::uint64_t> writer_heartbeat_interval_ns; // 80
  std::atomic<std::uint64_t> created_ns;                   // 88  CLOCK_REALTIME at creation
  std::atomic<std::uint64_t> writer_waits;                 // 96  times the writer waited for space
  std::atomic<std::uint64_t> retained_seq;                 // 104 floor kept for the next reader
  std::atomic<std::uint32_t> retain;                       // 112 1 = hold unread slots with no reader
  std::atomic<std::uint32_t> writer_generation;            // 116 +1 per writer attach
  std::atomic<std::uint64_t> writer_attached_ns;           // 120 CLOCK_REALTIME of the attach
  // Line 2: written by the writer on every publish; read by readers.
  std::atomic<std::uint64_t> write_seq;                    // 128 seq of the newest committed slot
  std::atomic<std::uint32_t> space_futex;                  // 136 bit 0: writer sleeps; bits 1..: events
  std::atomic<std::uint32_t> reserved_140;                 // 140 0
  std::atomic<std::uint64_t> space_wake_seq;               // 144 wake the writer once a cursor reaches this
  std::uint8_t pad2[40];                                   // 152
  // Line 3: set by readers about to sleep; read by the writer on every publish.
  std::atomic<std::uint32_t> data_futex;                   // 192 bit 0: readers sleep; bits 1..: events
  std::atomic<std::uint32_t> writer_fence;                 // 196 kFence*: how the writer publishes
  std::uint8_t pad3[56];                                   // 200
};
static_assert(sizeof(Header) == kHeaderSize);
static_assert(offsetof(Header, writer_pid) == 64);
static_assert(offsetof(Header, retain) == 112);
static_assert(offsetof(Header, writer_attached_ns) == 120);
static_assert(offsetof(Header, write_seq) == 128);

static_assert(offsetof(Header, space_wake_seq) == 144);
static_assert(offsetof(Header, data_futex) == 192);
static_assert(offsetof(Header, writer_fence) == 196);


struct ReaderEntry {
  std::atomic<std::uint32_t> pid;               // 0   0 = free
  std::atomic<std::uint32_t> flags;             // 4   reserved
  std::atomic<std::uint64_t> cursor;            // 8   seq of the last slot this reader released
  std::atomic<std::uint64_t> attached_ns;       // 16  CLOCK_REALTIME
  std::atomic<std::uint64_t> heartbeat_ns;      // 24  CLOCK_MONOTONIC, refreshed while waiting
  std::atomic<std::uint64_t> skipped;           // 32  slots skipped (latest policy)
  std::atomic<std::uint64_t> checksum_errors;   // 40
  std::atomic<std::uint64_t> slots_read;        // 48
  std::uint64_t reserved;                       // 56
};
static_assert(sizeof(ReaderEntry) == kReaderEntrySize);
static_assert(kReaderTableOffset + kReaderCapacity * kReaderEntrySize <= kSlotsOffset);

struct SlotMeta {
  std::atomic<std::uint64_t> seq;  // 0   seq of the slot's content; 0 while being written
  std::int64_t ts_ns;              // 8   CLOCK_REALTIME given at end_publish
  std::uint32_t size;              // 16  payload bytes
  std::uint32_t flags;             // 20  kSlotPacked
  std::uint64_t type_hash;         // 24
  std::uint64_t dims[4];           // 32
  // 64: checksum bytes (kChecksumBytes) when slot_meta_size is 128: xxh3 = XXH3_64bits
  // of the payload as u64 LE in bytes 0..7; blake2b = 32-byte BLAKE2b (libsodium
  // crypto_generichash, no key) of the payload.
};
static_assert(sizeof(SlotMeta) == kSlotMetaSize);
static_assert(offsetof(SlotMeta, dims) == 32);

}  // namespace plh::shm::layout
