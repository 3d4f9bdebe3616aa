#pragma once
// The shared-memory DataBlock: one writer, many readers, a ring of fixed-size slots in a
// POSIX shared-memory object /plh.NAME. The writer fills a slot in place and commits it;
// readers get read-only views of committed slots. No broker is involved in the data path.
//
// Quick use (zero copy):
//   plh::shm::Writer w("cam", {.create = true, .create_options = {.geometry = {64, 65536}}});
//   auto buf = w.begin_publish();               // writable span of slot_size bytes
//   std::size_t n = fill(buf.data(), buf.size());
//   w.end_publish(n, 0 /*ts: now*/, type_hash, {w, h, 0, 0});
//   ...
//   plh::shm::Reader r("cam", {});
//   for (;;) {
//     auto got = r.acquire();                   // blocks (futex) until a slot or the end
//     if (got.status != plh::shm::AcquireStatus::slot) break;
//     use(got.view.data, got.view.meta.size);
//     r.release();                              // under `latest`: false = overwritten meanwhile
//   }
//
// Policies (fixed at creation):
//   latest      the writer never waits; a reader that falls behind skips to the newest
//               slot and the skipped slots are counted (Reader::skipped()).
//   sequential  one reader at a time; the writer waits when the ring is full; nothing
//               is lost, order kept.
//   sync        any number of readers (up to layout::kReaderCapacity); each gets every
//               slot in order; the writer waits for the slowest.
// Under sequential/sync, slots nobody has read yet are kept for the next reader when no
// reader is attached (the writer waits when the ring is full), except after a reader
// died: then the writer carries on (overwriting) until a reader attaches again.
//
// Failure behaviour: every function throws plh::Error with the SPEC exit code:
// NotFoundError (4) for a missing segment, RefusedError (6) for a segment that is not a
// plh segment, has another layout version, is not accessible, or is already owned by
// another live writer / sequential reader; Error(failure) (1) for a truncated or
// corrupted segment and a writer that is gone. Nothing read from shared memory is used
// without a bounds check; each value is read once and only that copy is checked and used.
//
// Truncation: attaching a segment installs (once per process) a SIGBUS handler that
// absorbs faults inside mapped segments (zero pages are mapped over the rest of the
// mapping) and chains to the previous handler for any other fault. A segment truncated
// under a Writer or Reader therefore never kills the process: the next call throws
// Error(failure) "segment 'NAME' was truncated under this reader/writer"; spans and
// views handed out before read zeros meanwhile.
//
// Thread safety: a Writer or Reader object is used by one thread at a time. Any number
// of Writer/Reader objects in any processes may share a segment (one live writer).
#include <sys/types.h>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "plh/core/error.hpp"

namespace plh::shm {

enum class Policy : std::uint32_t { latest = 1, sequential = 2, sync = 3 };
enum class Checksum : std::uint32_t { none = 0, xxh3 = 1, blake2b = 2 };

Policy parse_policy(std::string_view);      // UsageError on unknown words
Checksum parse_checksum(std::string_view);  // UsageError on unknown words
std::string_view policy_name(Policy);
std::string_view checksum_name(Checksum);

struct Geometry {
  std::uint32_t slots = 64;         // ring length, >= 1
  std::uint32_t slot_size = 65536;  // max payload bytes per slot, >= 1
  Policy policy = Policy::sequential;
  Checksum checksum = Checksum::none;
};

struct CreateOptions {
  Geometry geometry;
  unsigned mode = 0600;  // applied exactly (fchmod), independent of the umask
};

// Whom a Writer or Reader trusts when it attaches to an existing segment (a hostile
// segment is one that another local user created or may write). The object must be a
// regular file owned by the effective uid, by root, or by `owner`; and the write bits it
// grants its group and others (for a writer: all group/other bits, since others could
// read what it writes) must be within `mode` (so the default 0600 accepts none: a
// group- or world-writable segment is refused). Refusals are RefusedError (exit 6) naming the owner and mode:
// "segment /dev/shm/plh.x is owned by uid 1001 (bob) with mode 0666; refusing it ...".
// A segment shared with a group on purpose is created with mode 0660 and attached with
// `mode = 0660` (plus `owner` on the side that did not create it).
struct Trust {
  std::optional<uid_t> owner;  // also accept segments owned by this uid
  unsigned mode = 0600;        // group/other bits a segment may grant (octal, <= 0777)
};
// Resolves a user name or a decimal uid (UsageError when neither).
uid_t parse_owner(std::string_view user_or_uid);

// "/plh.NAME". Validates NAME like a channel name (at most 251 characters so that the
// file name fits NAME_MAX); UsageError when invalid.
std::string segment_object_name(std::string_view name);

// Creates the segment (O_EXCL). Error(failure) if it already exists, UsageError for
// impossible geometry, Error(failure) when /dev/shm has no room (memory is reserved up
// front so a full /dev/shm never turns into SIGBUS later).
void create_segment(std::string_view name, const CreateOptions& opts);
// Unlinks /plh.NAME. Returns false when it did not exist. Existing mappings stay valid.
bool remove_segment(std::string_view name);

// How blocked readers and writers wait.
struct WaitOptions {
  bool busy_poll = false;  // spin (pause instruction) instead of sleeping: lowest latency, one core busy
  std::chrono::nanoseconds spin{20'000};  // blocking mode: spin this long before sleeping on the futex
  // Blocking mode: while the waits are short the spin grows up to this (twice the average
  // wait), so a fast stream is caught spinning and the other side never wakes a sleeper.
  std::chrono::nanoseconds spin_max{250'000};
  // A writer whose heartbeat is older than this (or whose pid is gone) is dead.
  std::chrono::nanoseconds heartbeat_timeout{std::chrono::seconds(5)};
};

using Clock = std::chrono::steady_clock;
inline constexpr Clock::time_point kForever = Clock::time_point::max();

// The writer. Attaching claims the segment (one live writer at a time; the claim of a
// dead writer is taken over) and continues the sequence where the last writer stopped.
class Writer {
 public:
  struct Options {
    bool create = false;          // create the segment when missing (O_CREAT | O_EXCL); when it
                                  // exists it is attached with the Trust checks and its geometry
                                  // must equal create_options.geometry (else RefusedError)
    CreateOptions create_options;
    // Which parts of create_options.geometry an existing segment must match ("create if
    // missing": only what the user asked for; the rest is whatever the segment has).
    struct Compare {
      bool slots = true, slot_size = true, policy = true, checksum = true;
    } compare;
    WaitOptions wait;
    std::chrono::nanoseconds heartbeat_interval{std::chrono::milliseconds(100)};
    // Publish without a full memory fence per slot when the kernel offers
    // membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED): sleeping readers then pay for the
    // ordering instead (a few microseconds when they go to sleep). About 3x the slot
    // rate for small slots. false forces a fence per publish.
    bool asymmetric_fence = true;
  };
  // `trust`: the checks on an existing segment; with `create`, create_options.mode is
  // accepted too.
  Writer(std::string_view name, const Options& opts, const Trust& trust = {});
  // Marks the end of stream (unless detach() was called), stops the heartbeat thread
  // and gives up the writer claim. Never unlinks the segment.
  ~Writer();
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  // Next slot's payload area (slot_size bytes), writable until end_publish. Under
  // sequential/sync waits until the slot is free (dead readers are noticed and released
  // while waiting). Returns an empty span when plh::stop_requested() became true while
  // waiting; throws TimeoutError when `deadline` passes.
  std::span<std::byte> begin_publish(Clock::time_point deadline = kForever);
  // Commits the slot begun last: size <= slot_size (else UsageError, slot not committed).
  // ts_ns 0 means now (CLOCK_REALTIME). Computes the checksum when enabled, then makes the
  // slot visible and wakes sleeping readers (no syscall when none sleeps). Returns its seq.
  std::uint64_t end_publish(std::size_t size, std::int64_t ts_ns = 0, std::uint64_t type_hash = 0,
                            const std::array<std::uint64_t, 4>& dims = {}, std::uint32_t flags = 0);
  // Copying convenience: begin_publish + memcpy + end_publish. 0 when stopped.
  std::uint64_t publish(std::span<const std::byte> payload, std::int64_t ts_ns = 0, std::uint64_t type_hash = 0,
                        const std::array<std::uint64_t, 4>& dims = {});

  // Blocks until at least n readers are attached. false on stop, TimeoutError at deadline.
  bool wait_for_readers(unsigned n, Clock::time_point deadline = kForever);
  // Marks end of stream: readers drain what is left and then see AcquireStatus::ended.
  // Error(failure) when the segment was truncated under this writer (what was published
  // since may be lost).
  void end_stream();
  // Gives up the claim without marking end of stream (readers keep waiting for a writer).
  void detach();

  const std::string& name() const;
  const Geometry& geometry() const;
  std::uint64_t last_seq() const;       // seq of the newest committed slot (0: none yet)
  std::uint64_t active_readers() const;  // attached readers now

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

struct SlotMeta {
  std::uint64_t seq = 0;
  std::int64_t ts_ns = 0;
  std::uint32_t size = 0;
  std::uint32_t flags = 0;  // layout::kSlotPacked
  std::uint64_t type_hash = 0;
  std::array<std::uint64_t, 4> dims{};
};

// A read-only view of a committed slot, valid until Reader::release() (or the next
// acquire). Under `latest` the writer may overwrite it while you hold it: release()
// tells you whether it did; copy first if you need a guaranteed-intact payload.
struct SlotView {
  const std::byte* data = nullptr;
  SlotMeta meta;
  std::span<const std::byte> payload() const { return {data, meta.size}; }
};

enum class AcquireStatus { slot, ended, timeout, stopped };
struct AcquireResult {
  AcquireStatus status = AcquireStatus::timeout;
  SlotView view;  // valid when status == slot
};

// Thrown by acquire/try_acquire when a slot's checksum does not match its payload. The
// slot is already consumed (the reader moved past it), so the caller may just continue.
struct ChecksumError : Error {
  ChecksumError(const std::string& msg, std::uint64_t seq_) : Error(ExitCode::failure, msg), seq(seq_) {}
  std::uint64_t seq;
};

class Reader {
 public:
  enum class From { oldest, latest };
  struct Options {
    From from = From::oldest;  // oldest: the oldest slot still held; latest: the newest committed
    WaitOptions wait;
  };
  // Takes a reader-table entry (RefusedError when all are taken, or when a sequential
  // segment already has a live reader). Under sequential/sync with From::oldest, slots
  // the writer overwrote since the position the previous readers left (a reader killed
  // with SIGKILL, for example, no longer holds the writer back) are counted as missed()
  // and skipped(), and logged.
  Reader(std::string_view name, const Options& opts, const Trust& trust = {});
  ~Reader();  // releases a held slot and frees the table entry
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;

  // Next slot in order, waiting until one is committed, the stream ended and is drained
  // (ended), `deadline` passed (timeout) or plh::stop_requested() (stopped). Throws
  // Error(failure) "writer of 'NAME' (pid N) is gone" when the writer died without
  // ending the stream, ChecksumError on a corrupt slot, Error(failure) on a slot whose
  // metadata is out of bounds, on a writer that breaks the protocol (write_seq going
  // backwards or beyond 2^62, an ordered slot overwritten before it was released) and on
  // a segment truncated under this reader. An unreleased slot is released first.
  AcquireResult acquire(Clock::time_point deadline = kForever);
  // Same without waiting: nullopt when nothing new is committed.
  std::optional<SlotView> try_acquire();
  // Done with the slot: advances this reader's cursor (lets the writer reuse the slot
  // under sequential/sync). Returns false when, under `latest`, the slot was overwritten
  // while held (counted as skipped) — the data seen may be torn. Error(failure) when the
  // segment was truncated while the slot was held (its bytes may have read as zeros).
  bool release();
  // True when the writer marked end of stream (there may still be slots to drain).
  bool ended() const;

  const std::string& name() const;
  const Geometry& geometry() const;
  std::uint64_t skipped() const;
  std::uint64_t checksum_errors() const;
  std::uint64_t missed() const;  // part of skipped(): overwritten before this reader attached
  std::uint64_t cursor() const;  // seq of the last released slot
  pid_t writer_pid() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Snapshot of a segment for `info` / `ls` (opened read-only; never modifies it).
struct ReaderInfo {
  unsigned index = 0;
  pid_t pid = 0;
  bool alive = false;
  std::uint64_t cursor = 0;
  std::uint64_t lag = 0;  // write_seq - cursor (a busy ordered reader's cursor trails by up to slots/8)
  std::uint64_t skipped = 0, checksum_errors = 0, slots_read = 0;
  std::int64_t attached_ns = 0;
};
struct SegmentInfo {
  std::string name, object;  // "cam", "/plh.cam"
  Geometry geometry;
  std::uint64_t total_size = 0;
  unsigned mode = 0;
  uid_t uid = 0;
  std::uint64_t write_seq = 0;
  bool ended = false;
  pid_t writer_pid = 0;
  bool writer_alive = false;
  double writer_heartbeat_age_s = -1;  // -1: no writer
  std::uint64_t writer_waits = 0;
  std::uint32_t writer_generation = 0;
  std::int64_t created_ns = 0;
  std::vector<ReaderInfo> readers;  // attached entries only
};
SegmentInfo inspect_segment(std::string_view name);
nlohmann::json to_json(const SegmentInfo& info);

// Every /dev/shm/plh.* object: a SegmentInfo, or the reason it could not be read.
struct SegmentListing {
  std::string name;
  std::optional<SegmentInfo> info;
  std::string problem;  // set when info is empty
};
std::vector<SegmentListing> list_segments();

}  // namespace plh::shm
