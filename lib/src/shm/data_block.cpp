// Writer and Reader of the shared-memory DataBlock.
//
// Ordering protocol (see docs/shm-layout.md for the cross-language description):
// - The writer fills slot S (its seq word set to 0 first, so a `latest` reader holding
//   the old content notices), then stores slot.seq = S (release) and header.write_seq = S
//   (seq_cst), then loads data_futex (seq_cst): a FUTEX_WAKE only when bit 0 says that
//   someone sleeps (and it clears the bit, so the next publish costs no syscall).
// - A reader about to sleep sets bit 0 of data_futex (seq_cst CAS), re-checks write_seq,
//   and only then FUTEX_WAITs on the value it set. Either the writer sees the bit, or
//   the reader sees the new write_seq.
// - Under sequential/sync the writer may write seq S only when S <= floor + slot_count,
//   floor being the smallest cursor of the attached readers; waiting for space mirrors
//   the scheme above with space_futex and the readers' cursors, plus hysteresis
//   (space_wake_seq) so that it is not woken for every single freed slot.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <spdlog/spdlog.h>
#include <thread>

#include "plh/core/signals.hpp"
#include "plh/core/text.hpp"
#include "shm/internal.hpp"

namespace plh::shm {

using detail::Segment;
using layout::Header;
using layout::ReaderEntry;
using RawSlot = layout::SlotMeta;

namespace {

constexpr std::chrono::milliseconds kReapEvery{20};

std::uint32_t my_pid() { return static_cast<std::uint32_t>(::getpid()); }

// Bounded: another process that keeps changing the word cannot keep us here.
void atomic_max(std::atomic<std::uint64_t>& a, std::uint64_t v) {
  std::uint64_t cur = a.load(std::memory_order_relaxed);
  for (int i = 0; i < detail::kCasAttempts && cur < v; ++i)
    if (a.compare_exchange_weak(cur, v)) return;
}

bool any_reader_attached(const Segment& seg, const ReaderEntry* except) {
  for (std::uint32_t i = 0; i < layout::kReaderCapacity; ++i) {
    const ReaderEntry* o = seg.reader(i);
    if (o != except && o->pid.load(std::memory_order_seq_cst) != 0) return true;
  }
  return false;
}

// Frees the table entries of readers whose process is gone. Returns how many.
unsigned reap_dead_readers(const Segment& seg) {
  unsigned reaped = 0;
  Header* h = seg.header();
  for (std::uint32_t i = 0; i < layout::kReaderCapacity; ++i) {
    ReaderEntry* e = seg.reader(i);
    std::uint32_t pid = e->pid.load(std::memory_order_acquire);
    if (pid == 0 || detail::pid_alive(pid)) continue;
    const std::uint64_t cursor = e->cursor.load(std::memory_order_acquire);
    if (!e->pid.compare_exchange_strong(pid, 0)) continue;
    ++reaped;
    atomic_max(h->retained_seq, cursor);
    spdlog::warn("reader pid {} of '{}' is gone; released its cursor (seq {})", pid, seg.name(), cursor);
  }
  if (reaped) {
    // A dead reader must not hold the writer: carry on until a reader attaches again.
    if (!any_reader_attached(seg, nullptr)) h->retain.store(0);
    detail::bump_and_wake(h->space_futex);
  }
  return reaped;
}

std::chrono::nanoseconds liveness_slice(const WaitOptions& w) {
  auto s = w.heartbeat_timeout / 4;
  return std::clamp<std::chrono::nanoseconds>(s, std::chrono::milliseconds(1), std::chrono::milliseconds(100));
}

}  // namespace

// ---------------------------------------------------------------------------- Writer

struct Writer::Impl {
  Segment seg;
  Header* h = nullptr;
  Geometry geo;
  std::uint64_t n = 1;
  WaitOptions wait;
  std::uint32_t pid = my_pid();
  detail::AdaptiveSpin spin;  // from `wait`
  std::uint64_t seq = 0;        // newest committed
  std::uint64_t floor_cache = 0;
  bool floor_valid = false;
  RawSlot* pending = nullptr;
  bool ended = false, claimed = false;
  bool light_fence = false;  // header writer_fence == kFenceAsymmetric
  Clock::time_point last_reap{};

  std::thread heartbeat;
  std::mutex mu;
  std::condition_variable cv;
  bool stop_heartbeat = false;
  int backpressure_noted = 0;  // 1: said at info level, 2: also warned (after a second)

  std::uint64_t compute_floor(std::uint64_t s, bool& unlimited) {
    bool any = false;
    std::uint64_t f = UINT64_MAX;
    for (std::uint32_t i = 0; i < layout::kReaderCapacity; ++i) {
      const ReaderEntry* e = seg.reader(i);
      if (e->pid.load(std::memory_order_seq_cst) == 0) continue;
      any = true;
      f = std::min(f, e->cursor.load(std::memory_order_seq_cst));
    }
    unlimited = false;
    if (any) return f;
    if (h->retain.load(std::memory_order_seq_cst)) return h->retained_seq.load(std::memory_order_seq_cst);
    unlimited = true;
    return s;
  }

  bool has_space(std::uint64_t s) {
    bool unlimited = false;
    const std::uint64_t f = compute_floor(s, unlimited);
    if (f < s && s - f > n) return false;  // (a hostile cursor near 2^64 must not wrap f + n)
    floor_cache = f;
    floor_valid = !unlimited;
    return true;
  }

  void maybe_reap() {
    const auto now = Clock::now();
    if (now - last_reap < kReapEvery) return;
    last_reap = now;
    reap_dead_readers(seg);
    seg.size_check();
    seg.throw_if_damaged("writer");
  }

  // Waits until slot `s` may be written. false on stop.
  bool wait_space(std::uint64_t s, Clock::time_point deadline) {
    if (has_space(s)) return true;
    h->writer_waits.fetch_add(1, std::memory_order_relaxed);
    const auto started = Clock::now();
    const auto spin_until = started + spin.budget();
    unsigned spins = 0;
    auto note_backpressure = [&](Clock::time_point now) {
      // A writer held by backpressure says so once (at -v at once; at the default level
      // after a second), so a pipeline with no reader does not block silently.
      if (backpressure_noted >= 2) return;
      const bool long_wait = now - started >= std::chrono::seconds(1);
      if (backpressure_noted == 1 && !long_wait) return;
      unsigned readers = 0;
      for (std::uint32_t i = 0; i < layout::kReaderCapacity; ++i)
        if (seg.reader(i)->pid.load(std::memory_order_acquire) != 0) ++readers;
      const std::string text = "'" + seg.name() + "' is full: the writer waits for its readers to take slots (policy " +
                               std::string(policy_name(geo.policy)) + ", " + std::to_string(readers) +
                               " reader(s) attached; start 'plh-shm read " + seg.name() +
                               "', or create it with --policy latest to overwrite instead)";
      if (long_wait) {
        spdlog::warn("{}", text);
        backpressure_noted = 2;
      } else {
        spdlog::info("{}", text);
        backpressure_noted = 1;
      }
    };
    for (;;) {
      if (has_space(s)) {
        spin.record(Clock::now() - started);
        return true;
      }
      if (stop_requested()) return false;
      const auto now = Clock::now();
      if (now >= spin_until) note_backpressure(now);
      if (now >= deadline)
        throw TimeoutError("timed out waiting for readers of '" + seg.name() + "' to free a slot");
      if (wait.busy_poll || now < spin_until) {
        for (int i = 0; i < 64; ++i) detail::cpu_relax();
        if ((++spins & 1023) == 0) maybe_reap();
        continue;
      }
      // Hysteresis: sleep until a few slots are free, not just one, so that a writer
      // and a reader of similar speed do not wake each other for every slot.
      const std::uint64_t batch = std::clamp<std::uint64_t>(n / 4, 1, 64);
      h->space_wake_seq.store(s + batch - 1 > n ? s + batch - 1 - n : 0, std::memory_order_seq_cst);
      const std::uint32_t v = detail::announce_sleep(h->space_futex);
      if (!has_space(s)) {
        const auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline - now);
        detail::futex_wait(h->space_futex, v, std::min<std::chrono::nanoseconds>(left, std::chrono::milliseconds(50)));
      }
      maybe_reap();
    }
  }

  void heartbeat_loop(std::chrono::nanoseconds interval) {
    std::unique_lock lock(mu);
    while (!stop_heartbeat) {
      h->writer_heartbeat_ns.store(detail::monotonic_ns(), std::memory_order_relaxed);
      seg.size_check();  // a truncation is then reported by the next publish or end_stream
      cv.wait_for(lock, interval);
    }
  }

  void stop_thread() {
    {
      std::lock_guard lock(mu);
      stop_heartbeat = true;
    }
    cv.notify_all();
    if (heartbeat.joinable()) heartbeat.join();
  }

  void release_claim() {
    if (!claimed) return;
    claimed = false;
    std::uint32_t me = pid;
    h->writer_pid.compare_exchange_strong(me, 0);
  }
};

namespace {
bool same_geometry(const Geometry& a, const Geometry& b, const Writer::Options::Compare& c) {
  return (!c.slots || a.slots == b.slots) && (!c.slot_size || a.slot_size == b.slot_size) &&
         (!c.policy || a.policy == b.policy) && (!c.checksum || a.checksum == b.checksum);
}
// What was asked for: only the compared parts.
std::string describe_asked(const Geometry& g, const Writer::Options::Compare& c) {
  std::string out;
  auto add = [&](const std::string& part) { out += (out.empty() ? "" : ", ") + part; };
  if (c.slots) add(std::to_string(g.slots) + " slots");
  if (c.slot_size) add("slot size " + std::to_string(g.slot_size));
  if (c.policy) add("policy " + std::string(policy_name(g.policy)));
  if (c.checksum) add("checksum " + std::string(checksum_name(g.checksum)));
  return out;
}
std::string describe(const Geometry& g) {
  return std::to_string(g.slots) + " slots of " + std::to_string(g.slot_size) + " bytes, policy " +
         std::string(policy_name(g.policy)) + ", checksum " + std::string(checksum_name(g.checksum));
}
}  // namespace

Writer::Writer(std::string_view name, const Options& opts, const Trust& trust) : impl_(std::make_unique<Impl>()) {
  Impl& w = *impl_;
  w.wait = opts.wait;
  w.spin = detail::AdaptiveSpin(opts.wait);
  // Squatting: another user may have created /plh.NAME first, hoping that we write into
  // (and they read) it. Create exclusively; only an object that exists already is
  // attached, and only after the owner and mode checks (Trust).
  const unsigned accept_mode = trust.mode | (opts.create ? opts.create_options.mode : 0u);
  if (opts.create) {
    if (auto created = Segment::create_exclusive(name, opts.create_options))
      w.seg = std::move(*created);
    else
      w.seg = Segment::open(name, Segment::Access::read_write, &trust, accept_mode);
    if (!same_geometry(w.seg.geometry(), opts.create_options.geometry, opts.compare))
      throw RefusedError("segment '" + std::string(name) + "' exists with " + describe(w.seg.geometry()) +
                         ", not " + describe_asked(opts.create_options.geometry, opts.compare) + " (plh-shm rm it first)");
  } else {
    w.seg = Segment::open(name, Segment::Access::read_write, &trust, accept_mode);
  }
  w.h = w.seg.header();
  w.geo = w.seg.geometry();
  w.n = w.geo.slots;
  Header* h = w.h;
  h->writer_heartbeat_interval_ns.store(static_cast<std::uint64_t>(opts.heartbeat_interval.count()));
  h->writer_heartbeat_ns.store(detail::monotonic_ns());
  for (int attempt = 0;; ++attempt) {
    std::uint32_t cur = h->writer_pid.load();
    if (cur != 0 && detail::pid_alive(cur))
      throw RefusedError("segment '" + std::string(name) + "' already has a writer (pid " + std::to_string(cur) + ")");
    if (attempt == detail::kCasAttempts)
      throw RefusedError("segment '" + std::string(name) + "': its writer_pid keeps changing; cannot claim it");
    h->writer_heartbeat_ns.store(detail::monotonic_ns());
    if (h->writer_pid.compare_exchange_strong(cur, w.pid)) {
      if (cur != 0) spdlog::info("taking over segment '{}' from dead writer pid {}", std::string(name), cur);
      break;
    }
  }
  w.claimed = true;
  w.seq = h->write_seq.load();
  if (w.seq >= detail::kMaxSeq || w.seg.damaged()) {
    w.release_claim();
    w.seg.throw_if_damaged("writer");
    throw Error(ExitCode::failure, "segment '" + std::string(name) + "' is corrupt (write_seq " + std::to_string(w.seq) +
                                       " is beyond any real sequence); plh-shm rm it");
  }
  w.light_fence = opts.asymmetric_fence && detail::register_light_fence();
  h->writer_fence.store(w.light_fence ? layout::kFenceAsymmetric : layout::kFenceFull);
  h->ended.store(0);
  h->writer_generation.fetch_add(1);
  h->writer_attached_ns.store(static_cast<std::uint64_t>(realtime_ns()));
  reap_dead_readers(w.seg);
  // Readers asleep since an earlier writer re-read writer_fence before they sleep again.
  detail::bump_and_wake(h->data_futex);
  w.heartbeat = std::thread([this, iv = opts.heartbeat_interval] { impl_->heartbeat_loop(iv); });
}

Writer::~Writer() {
  if (!impl_) return;
  try {
    if (impl_->claimed && !impl_->ended) end_stream();
  } catch (...) {
  }
  impl_->stop_thread();
  impl_->release_claim();
}

std::span<std::byte> Writer::begin_publish(Clock::time_point deadline) {
  Impl& w = *impl_;
  if (!w.claimed) throw Error(ExitCode::failure, "writer of '" + w.seg.name() + "' is detached");
  w.seg.throw_if_damaged("writer");
  const std::uint64_t s = w.seq + 1;
  if (w.geo.policy != Policy::latest && !(w.floor_valid && s <= w.floor_cache + w.n)) {
    if (!w.wait_space(s, deadline)) return {};
  }
  RawSlot* slot = w.seg.slot_for(s);
  slot->seq.store(0, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  w.pending = slot;
  return {w.seg.payload_of(slot), w.geo.slot_size};
}

std::uint64_t Writer::end_publish(std::size_t size, std::int64_t ts_ns, std::uint64_t type_hash,
                                  const std::array<std::uint64_t, 4>& dims, std::uint32_t flags) {
  Impl& w = *impl_;
  if (!w.pending) throw Error(ExitCode::failure, "end_publish without begin_publish");
  if (size > w.geo.slot_size)
    throw UsageError("message of " + std::to_string(size) + " bytes does not fit the slot size " +
                     std::to_string(w.geo.slot_size) + " of '" + w.seg.name() + "'");
  RawSlot* slot = w.pending;
  const std::uint64_t s = w.seq + 1;
  slot->ts_ns = ts_ns != 0 ? ts_ns : realtime_ns();
  slot->size = static_cast<std::uint32_t>(size);
  slot->flags = flags;
  slot->type_hash = type_hash;
  for (int i = 0; i < 4; ++i) slot->dims[i] = dims[static_cast<std::size_t>(i)];
  if (w.geo.checksum != Checksum::none)
    detail::compute_checksum(w.geo.checksum, w.seg.payload_of(slot), size, w.seg.checksum_of(slot));
  if (w.seg.damaged()) {  // what was just written may have gone to a zero page: do not commit it
    w.pending = nullptr;
    w.seg.throw_damaged("writer");
  }
  slot->seq.store(s, std::memory_order_release);
  if (w.light_fence) {
    // No hardware fence between the store and the load: a reader about to sleep runs
    // membarrier() instead (Reader::acquire), which orders them for us. The compiler
    // must still keep them in program order.
    w.h->write_seq.store(s, std::memory_order_release);
    std::atomic_signal_fence(std::memory_order_seq_cst);
    if (w.h->data_futex.load(std::memory_order_relaxed) & 1u) detail::wake_if_sleeping(w.h->data_futex);
  } else {
    w.h->write_seq.store(s, std::memory_order_seq_cst);
    detail::wake_if_sleeping(w.h->data_futex);
  }
  w.seq = s;
  w.pending = nullptr;
  // The heartbeat thread refreshes the heartbeat every 100 ms; a busy writer also does it
  // here now and then, so that a starved thread on a loaded machine is not taken for a
  // dead writer while slots keep coming.
  if ((s & 4095) == 0) w.h->writer_heartbeat_ns.store(detail::monotonic_ns(), std::memory_order_relaxed);
  return s;
}

std::uint64_t Writer::publish(std::span<const std::byte> payload, std::int64_t ts_ns, std::uint64_t type_hash,
                              const std::array<std::uint64_t, 4>& dims) {
  if (payload.size() > impl_->geo.slot_size)
    throw UsageError("message of " + std::to_string(payload.size()) + " bytes does not fit the slot size " +
                     std::to_string(impl_->geo.slot_size) + " of '" + impl_->seg.name() + "'");
  auto buf = begin_publish();
  if (buf.empty()) return 0;
  if (!payload.empty()) std::memcpy(buf.data(), payload.data(), payload.size());
  return end_publish(payload.size(), ts_ns, type_hash, dims);
}

bool Writer::wait_for_readers(unsigned n, Clock::time_point deadline) {
  Impl& w = *impl_;
  for (;;) {
    reap_dead_readers(w.seg);
    w.h->space_wake_seq.store(0, std::memory_order_seq_cst);
    const std::uint32_t v = detail::announce_sleep(w.h->space_futex);
    const auto have = active_readers();
    if (have >= n) return true;
    const auto now = Clock::now();
    if (stop_requested() || now >= deadline) {
      if (stop_requested()) return false;
      throw TimeoutError("timed out waiting for " + std::to_string(n) + " readers of '" + w.seg.name() +
                         "' (" + std::to_string(have) + " attached)");
    }
    const auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline - now);
    detail::futex_wait(w.h->space_futex, v, std::min<std::chrono::nanoseconds>(left, std::chrono::milliseconds(50)));
  }
}

void Writer::end_stream() {
  Impl& w = *impl_;
  w.ended = true;
  w.pending = nullptr;
  w.h->ended.store(1, std::memory_order_seq_cst);
  detail::bump_and_wake(w.h->data_futex);
  w.seg.size_check();
  w.seg.throw_if_damaged("writer");
}

void Writer::detach() {
  impl_->stop_thread();
  impl_->release_claim();
}

const std::string& Writer::name() const { return impl_->seg.name(); }
const Geometry& Writer::geometry() const { return impl_->geo; }
std::uint64_t Writer::last_seq() const { return impl_->seq; }
std::uint64_t Writer::active_readers() const {
  std::uint64_t count = 0;
  for (std::uint32_t i = 0; i < layout::kReaderCapacity; ++i)
    if (impl_->seg.reader(i)->pid.load(std::memory_order_acquire) != 0) ++count;
  return count;
}

// ---------------------------------------------------------------------------- Reader

struct Reader::Impl {
  Segment seg;
  Header* h = nullptr;
  Geometry geo;
  std::uint64_t n = 1;
  WaitOptions wait;
  ReaderEntry* entry = nullptr;
  std::uint64_t next = 1;  // seq expected next
  std::uint64_t published = 0;  // cursor value last stored in the reader entry
  std::uint64_t publish_every = 1;
  std::uint64_t known_w = 0;  // write_seq as last loaded: slots up to it need no new load
  RawSlot* held = nullptr;
  std::uint64_t held_seq = 0;
  std::uint64_t skipped = 0, checksum_errors = 0, slots_read = 0, missed = 0;
  bool joined = false;  // ordered policies: a slot was read, so no overwrite is legitimate any more
  std::chrono::nanoseconds slice{};
  Clock::time_point next_liveness_check{};
  detail::AdaptiveSpin spin;  // from `wait`
  std::byte sum[layout::kChecksumBytes];

  bool ordered() const { return geo.policy != Policy::latest; }

  // Every error about what the writer did is first checked against a truncation: a
  // zero page read after a SIGBUS looks like a protocol violation but is not one.
  [[noreturn]] void protocol_error(const std::string& what) const {
    seg.throw_if_damaged("reader");
    throw Error(ExitCode::failure, "writer of '" + seg.name() + "' broke the protocol: " + what + "; giving up");
  }

  // Loads write_seq once, checks it (never backwards, never near 2^64 where seq + 1
  // would wrap to the empty slot seq 0) and remembers it.
  std::uint64_t refresh_write_seq() {
    const std::uint64_t w = h->write_seq.load(std::memory_order_acquire);
    if (w >= detail::kMaxSeq)
      protocol_error("write_seq " + std::to_string(w) + " is beyond any real sequence (wrapped or corrupt)");
    if (w < known_w) protocol_error("write_seq went backwards from " + std::to_string(known_w) + " to " + std::to_string(w));
    known_w = w;
    return w;
  }

  void skip_to(std::uint64_t e, std::uint64_t new_next) {
    if (new_next <= e) new_next = e + 1;
    const std::uint64_t lost = new_next - e;
    skipped += lost;
    entry->skipped.store(skipped, std::memory_order_relaxed);
    next = new_next;
    if (!ordered()) entry->cursor.store(new_next - 1, std::memory_order_relaxed);
  }

  // Moves past `s` (consumed). Under sequential/sync the shared cursor (which the writer
  // polls when the ring is full) is published every `publish_every` slots and whenever
  // this reader runs out of slots (publish_cursor() before it waits): the cache line
  // then travels between the cores once per batch instead of once per slot.
  void advance(std::uint64_t s) {
    next = s + 1;
    if (!ordered()) {
      entry->cursor.store(s, std::memory_order_relaxed);
    } else if (s - published >= publish_every) {
      publish_cursor();
    }
  }

  // Stores the cursor and wakes a writer that waits for space.
  void publish_cursor() {
    const std::uint64_t s = next - 1;
    if (!ordered() || s == published) return;
    published = s;
    entry->cursor.store(s, std::memory_order_seq_cst);
    if ((h->space_futex.load(std::memory_order_seq_cst) & 1u) && s >= h->space_wake_seq.load(std::memory_order_relaxed))
      detail::wake_if_sleeping(h->space_futex);
  }

  void check_writer() {
    seg.size_check();
    seg.throw_if_damaged("reader");
    const std::uint32_t pid = h->writer_pid.load(std::memory_order_acquire);
    if (pid == 0 || h->ended.load(std::memory_order_acquire)) return;
    const std::uint64_t hb = h->writer_heartbeat_ns.load(std::memory_order_relaxed);
    const std::uint64_t now = detail::monotonic_ns();
    const bool stale = now > hb && now - hb > static_cast<std::uint64_t>(wait.heartbeat_timeout.count());
    if (!stale && detail::pid_alive(pid)) return;
    if (h->ended.load(std::memory_order_acquire) || h->writer_pid.load() != pid) return;  // ended meanwhile
    throw Error(ExitCode::failure, "writer of '" + seg.name() + "' (pid " + std::to_string(pid) + ") is gone" +
                                       (stale ? " (no heartbeat)" : ""));
  }
};

Reader::Reader(std::string_view name, const Options& opts, const Trust& trust) : impl_(std::make_unique<Impl>()) {
  Impl& r = *impl_;
  // A reader is not harmed by others reading the segment: only write bits count for it.
  r.seg = Segment::open(name, Segment::Access::read_write, &trust, trust.mode | 0044u);
  r.h = r.seg.header();
  r.geo = r.seg.geometry();
  r.n = r.geo.slots;
  r.wait = opts.wait;
  r.slice = liveness_slice(opts.wait);
  r.spin = detail::AdaptiveSpin(opts.wait);
  Header* h = r.h;
  reap_dead_readers(r.seg);
  const std::uint32_t me = my_pid();
  if (r.geo.policy == Policy::sequential) {
    // One reader at a time: it always uses entry 0.
    ReaderEntry* e = r.seg.reader(0);
    for (int attempt = 0;; ++attempt) {
      std::uint32_t cur = e->pid.load();
      if (cur != 0 && detail::pid_alive(cur))
        throw RefusedError("segment '" + std::string(name) + "' has policy sequential and already has a reader (pid " +
                           std::to_string(cur) + ")");
      if (attempt == detail::kCasAttempts)
        throw RefusedError("segment '" + std::string(name) + "': its reader entry keeps changing; cannot claim it");
      if (e->pid.compare_exchange_strong(cur, me)) break;
    }
    r.entry = e;
  } else {
    for (std::uint32_t i = 0; i < layout::kReaderCapacity && !r.entry; ++i) {
      std::uint32_t zero = 0;
      if (r.seg.reader(i)->pid.compare_exchange_strong(zero, me)) r.entry = r.seg.reader(i);
    }
    if (!r.entry)
      throw RefusedError("segment '" + std::string(name) + "' already has " + std::to_string(layout::kReaderCapacity) +
                         " readers");
  }
  ReaderEntry* e = r.entry;
  try {
    e->cursor.store(0, std::memory_order_seq_cst);  // holds the writer until the real cursor is set below
    e->skipped.store(0);
    e->checksum_errors.store(0);
    e->slots_read.store(0);
    e->attached_ns.store(static_cast<std::uint64_t>(realtime_ns()));
    e->heartbeat_ns.store(detail::monotonic_ns());

    const std::uint64_t w = r.refresh_write_seq();
    const std::uint64_t ring_floor = w > r.n ? w - r.n : 0;  // slots <= this are surely overwritten
    std::uint64_t start = 1;
    if (r.geo.policy == Policy::latest) {
      start = opts.from == From::latest ? std::max<std::uint64_t>(w, 1) : ring_floor + 1;
    } else {
      // Where the readers before this one are (or left off): the slowest attached one,
      // else the cursor kept for the next reader. Values from shared memory: never
      // beyond write_seq.
      std::uint64_t left_at = UINT64_MAX;
      for (std::uint32_t i = 0; i < layout::kReaderCapacity; ++i) {
        const ReaderEntry* o = r.seg.reader(i);
        if (o == e || o->pid.load() == 0) continue;
        left_at = std::min(left_at, o->cursor.load());
      }
      if (left_at == UINT64_MAX) left_at = h->retained_seq.load();
      left_at = std::min(left_at, w);
      start = std::max(left_at, ring_floor) + 1;
      if (opts.from == From::latest) {
        start = std::max(start, std::max<std::uint64_t>(w, 1));
      } else if (ring_floor > left_at) {
        // The writer carried on while nobody held it back (the last reader died): what it
        // overwrote since that position is lost for this reader. Say so.
        r.missed = ring_floor - left_at;
        r.skipped = r.missed;
        e->skipped.store(r.skipped);
        spdlog::warn("missed {} slots of '{}' (seq {} to {}): the writer overwrote them after the last reader's "
                     "position (seq {})",
                     r.missed, std::string(name), left_at + 1, ring_floor, left_at);
      }
    }
    r.next = start;
    r.published = start - 1;
    // A batch is at most 1/8 of the ring, so a writer waiting for space is held back by at
    // most that much by a reader that is still working.
    r.publish_every = std::clamp<std::uint64_t>(r.n / 8, 1, 256);
    e->cursor.store(start - 1, std::memory_order_seq_cst);
  } catch (...) {
    e->cursor.store(0, std::memory_order_seq_cst);
    e->pid.store(0, std::memory_order_seq_cst);
    throw;
  }
  detail::bump_and_wake(h->space_futex);  // a writer may be waiting for readers
}

Reader::~Reader() {
  if (!impl_ || !impl_->entry) return;
  Impl& r = *impl_;
  try {
    if (r.held) release();
  } catch (const Error&) {  // truncated meanwhile: nothing to report from a destructor
  }
  r.publish_cursor();
  ReaderEntry* e = r.entry;
  const std::uint64_t cursor = r.published;
  if (r.ordered()) {
    // Keep what nobody has read yet for the next reader: the last reader to leave stores
    // its cursor as retained_seq. Two readers leaving at once may each still see the
    // other here, so each looks again once its own entry is free: then at least the
    // later of the two sees nobody (both may; retained_seq only grows).
    const bool others = any_reader_attached(r.seg, e);
    r.h->retain.store(1);  // harmless while others are attached: their cursors rule
    if (!others) atomic_max(r.h->retained_seq, cursor);
    e->cursor.store(0, std::memory_order_seq_cst);
    e->pid.store(0, std::memory_order_seq_cst);
    if (others && !any_reader_attached(r.seg, nullptr)) atomic_max(r.h->retained_seq, cursor);
  } else {
    e->cursor.store(0, std::memory_order_seq_cst);
    e->pid.store(0, std::memory_order_seq_cst);
  }
  detail::bump_and_wake(r.h->space_futex);
}

std::optional<SlotView> Reader::try_acquire() {
  Impl& r = *impl_;
  if (r.held) release();
  for (int attempt = 0; attempt < 1000; ++attempt) {
    const std::uint64_t e = r.next;
    if (e > r.known_w) {
      if (r.refresh_write_seq() < e) {
        r.publish_cursor();  // about to wait: the writer must see everything consumed
        return std::nullopt;
      }
    }
    RawSlot* slot = r.seg.slot_for(e);
    const std::uint64_t s1 = slot->seq.load(std::memory_order_acquire);
    if (s1 != e) {
      // Under latest: overwritten, jump to the newest slot. Under sequential/sync the
      // writer may not overwrite a slot before every reader released it; that only
      // happens to a reader joining while the writer carries on (counted as skipped).
      if (r.ordered() && r.joined)
        r.protocol_error("slot seq " + std::to_string(e) + " was overwritten (it holds seq " + std::to_string(s1) +
                         ") before this reader released it");
      r.seg.throw_if_damaged("reader");
      const std::uint64_t now_w = r.refresh_write_seq();
      r.skip_to(e, r.ordered() ? std::max(e + 1, now_w > r.n ? now_w - r.n + 1 : 1) : now_w);
      continue;
    }
    // Every field is read once into the view; only the copies are checked and used.
    SlotView v;
    v.meta.seq = e;
    v.meta.ts_ns = slot->ts_ns;
    v.meta.size = slot->size;
    v.meta.flags = slot->flags;
    v.meta.type_hash = slot->type_hash;
    for (std::size_t i = 0; i < 4; ++i) v.meta.dims[i] = slot->dims[i];
    v.data = r.seg.payload_of(slot);
    if (v.meta.size > r.geo.slot_size) {
      std::atomic_thread_fence(std::memory_order_acquire);
      if (!r.ordered() && slot->seq.load(std::memory_order_relaxed) != e) {
        r.skip_to(e, r.refresh_write_seq());
        continue;
      }
      r.seg.throw_if_damaged("reader");
      r.advance(e);
      throw Error(ExitCode::failure, "slot seq " + std::to_string(e) + " of '" + r.seg.name() + "' is corrupt (size " +
                                         std::to_string(v.meta.size) + " > slot size " +
                                         std::to_string(r.geo.slot_size) + ")");
    }
    if (r.geo.checksum != Checksum::none) {
      detail::compute_checksum(r.geo.checksum, v.data, v.meta.size, r.sum);
      if (std::memcmp(r.sum, r.seg.checksum_of(slot), layout::kChecksumBytes) != 0) {
        std::atomic_thread_fence(std::memory_order_acquire);
        r.seg.throw_if_damaged("reader");
        if (!r.ordered() && slot->seq.load(std::memory_order_relaxed) != e) {  // torn by the writer, not corrupt
          r.skip_to(e, r.refresh_write_seq());
          continue;
        }
        r.advance(e);
        ++r.checksum_errors;
        r.entry->checksum_errors.store(r.checksum_errors, std::memory_order_relaxed);
        throw ChecksumError("checksum mismatch (" + std::string(checksum_name(r.geo.checksum)) + ") in slot seq " +
                                std::to_string(e) + " of '" + r.seg.name() + "'",
                            e);
      }
    } else if (v.meta.size > 0) {
      // Touch the payload's last byte: a truncation below it faults here (absorbed, see
      // Segment) and is reported now, instead of zeros reaching the caller.
      (void)*static_cast<const volatile std::byte*>(v.data + v.meta.size - 1);
    }
    r.seg.throw_if_damaged("reader");
    r.joined = true;
    r.held = slot;
    r.held_seq = e;
    return v;
  }
  return std::nullopt;  // lapped by the writer over and over; the caller will retry
}

bool Reader::release() {
  Impl& r = *impl_;
  if (!r.held) return true;
  bool ok = true;
  if (!r.ordered()) {
    std::atomic_thread_fence(std::memory_order_acquire);
    if (r.held->seq.load(std::memory_order_relaxed) != r.held_seq) {
      ok = false;
      ++r.skipped;
      r.entry->skipped.store(r.skipped, std::memory_order_relaxed);
    }
  }
  r.held = nullptr;
  ++r.slots_read;
  r.entry->slots_read.store(r.slots_read, std::memory_order_relaxed);
  r.advance(r.held_seq);
  r.seg.throw_if_damaged("reader");  // the bytes seen while it was held may be zeros
  return ok;
}

AcquireResult Reader::acquire(Clock::time_point deadline) {
  Impl& r = *impl_;
  Header* h = r.h;
  if (auto v = try_acquire()) return {AcquireStatus::slot, *v};  // fast path: no clock read
  const auto started = Clock::now();
  const auto spin_until = started + r.spin.budget();
  bool spun = false;
  for (;;) {
    if (auto v = try_acquire()) {
      r.spin.record(Clock::now() - started);
      return {AcquireStatus::slot, *v};
    }
    if (h->ended.load(std::memory_order_seq_cst) && h->write_seq.load(std::memory_order_seq_cst) < r.next)
      return {AcquireStatus::ended, {}};
    if (stop_requested()) return {AcquireStatus::stopped, {}};
    auto now = Clock::now();
    if (now >= deadline) return {AcquireStatus::timeout, {}};
    if (now >= r.next_liveness_check) {
      r.next_liveness_check = now + r.slice;
      r.entry->heartbeat_ns.store(detail::monotonic_ns(), std::memory_order_relaxed);
      r.check_writer();
    }
    if (r.wait.busy_poll || (!spun && now < spin_until)) {
      // Spin on write_seq (one cache line, read-shared) until it moves or a check is due.
      for (unsigned i = 0; i < 4096; ++i) {
        if (h->write_seq.load(std::memory_order_acquire) >= r.next || h->ended.load(std::memory_order_relaxed)) break;
        detail::cpu_relax();
        if ((i & 255) == 255 && Clock::now() >= std::min(r.next_liveness_check, deadline)) break;
      }
      continue;
    }
    spun = true;
    const std::uint32_t v = detail::announce_sleep(h->data_futex);
    auto until = std::min(deadline, r.next_liveness_check);
    if (h->writer_fence.load(std::memory_order_seq_cst) == layout::kFenceAsymmetric && !detail::heavy_fence()) {
      // This process may not call membarrier (seccomp?) although the writer's could:
      // a wake-up may be missed, so never sleep long.
      until = std::min(until, now + std::chrono::milliseconds(1));
    }
    if (h->write_seq.load(std::memory_order_seq_cst) < r.next && !h->ended.load(std::memory_order_seq_cst)) {
      const auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(until - now);
      detail::futex_wait(h->data_futex, v, std::max<std::chrono::nanoseconds>(left, std::chrono::microseconds(100)));
    }
  }
}

bool Reader::ended() const { return impl_->h->ended.load(std::memory_order_acquire) != 0; }
const std::string& Reader::name() const { return impl_->seg.name(); }
const Geometry& Reader::geometry() const { return impl_->geo; }
std::uint64_t Reader::skipped() const { return impl_->skipped; }
std::uint64_t Reader::checksum_errors() const { return impl_->checksum_errors; }
std::uint64_t Reader::missed() const { return impl_->missed; }
std::uint64_t Reader::cursor() const { return impl_->next - 1; }
pid_t Reader::writer_pid() const { return static_cast<pid_t>(impl_->h->writer_pid.load()); }

}  // namespace plh::shm
