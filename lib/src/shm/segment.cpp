// Opening, creating, validating, inspecting and listing plh shared-memory segments.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <linux/futex.h>
#include <linux/membarrier.h>
#include <sodium.h>
#include <pwd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <xxhash.h>

#include <cerrno>
#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <thread>
#include <vector>

#include "plh/core/text.hpp"
#include "shm/internal.hpp"

namespace plh::shm {

Policy parse_policy(std::string_view s) {
  if (s == "latest") return Policy::latest;
  if (s == "sequential") return Policy::sequential;
  if (s == "sync") return Policy::sync;
  throw UsageError("invalid policy '" + std::string(s) + "' (latest, sequential, sync)");
}

Checksum parse_checksum(std::string_view s) {
  if (s == "none") return Checksum::none;
  if (s == "xxh3") return Checksum::xxh3;
  if (s == "blake2b") return Checksum::blake2b;
  throw UsageError("invalid checksum '" + std::string(s) + "' (none, xxh3, blake2b)");
}

std::string_view policy_name(Policy p) {
  switch (p) {
    case Policy::latest: return "latest";
    case Policy::sequential: return "sequential";
    case Policy::sync: return "sync";
  }
  return "unknown";
}

std::string_view checksum_name(Checksum c) {
  switch (c) {
    case Checksum::none: return "none";
    case Checksum::xxh3: return "xxh3";
    case Checksum::blake2b: return "blake2b";
  }
  return "unknown";
}

std::string segment_object_name(std::string_view name) {
  validate_channel_name(name);
  if (name.size() > 251)
    throw UsageError("segment name '" + std::string(name.substr(0, 40)) + "...' is longer than 251 characters");
  return "/plh." + std::string(name);
}

uid_t parse_owner(std::string_view user) {
  if (user.empty()) throw UsageError("--owner needs a user name or uid");
  if (std::all_of(user.begin(), user.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    if (user.size() > 9) throw UsageError("invalid --owner uid '" + std::string(user) + "'");
    return static_cast<uid_t>(std::stoul(std::string(user)));
  }
  std::vector<char> buf(16384);
  passwd pw{};
  passwd* out = nullptr;
  const std::string u(user);
  if (::getpwnam_r(u.c_str(), &pw, buf.data(), buf.size(), &out) != 0 || !out)
    throw UsageError("--owner: no such user '" + u + "'");
  return out->pw_uid;
}

namespace detail {

std::uint64_t monotonic_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<std::uint64_t>(ts.tv_nsec);
}

bool pid_alive(std::uint32_t pid) {
  if (pid == 0 || pid > static_cast<std::uint32_t>(INT_MAX)) return false;
  if (::kill(static_cast<pid_t>(pid), 0) != 0) return errno != ESRCH;  // EPERM: exists, someone else's
  // A process that exited but was not reaped yet (zombie) still answers kill(): look
  // at its state in /proc/PID/stat ("PID (COMM) S ..."; COMM may contain ')' itself).
  char path[32];
  std::snprintf(path, sizeof path, "/proc/%u/stat", pid);
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return true;  // no /proc: trust kill()
  char buf[512];
  const ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return true;
  buf[n] = '\0';
  const char* close_paren = std::strrchr(buf, ')');
  if (!close_paren || close_paren[1] != ' ') return true;
  const char state = close_paren[2];
  return state != 'Z' && state != 'X' && state != 'x';
}

void futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected, std::chrono::nanoseconds timeout) {
  if (timeout.count() <= 0) return;
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(timeout.count() / 1'000'000'000);
  ts.tv_nsec = static_cast<long>(timeout.count() % 1'000'000'000);
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAIT, expected, &ts, nullptr, 0);
}

namespace {
long membarrier(int cmd) { return ::syscall(SYS_membarrier, cmd, 0u, 0); }
}  // namespace

bool register_light_fence() {
  static const bool ok = [] {
    const long cmds = membarrier(MEMBARRIER_CMD_QUERY);
    if (cmds < 0 || !(cmds & MEMBARRIER_CMD_GLOBAL_EXPEDITED) || !(cmds & MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED))
      return false;
    return membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) == 0;
  }();
  return ok;
}

bool heavy_fence() { return membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED) == 0; }

void futex_wake_all(std::atomic<std::uint32_t>& word) {
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

void compute_checksum(Checksum kind, const std::byte* payload, std::size_t size, std::byte* out) {
  std::memset(out, 0, layout::kChecksumBytes);
  switch (kind) {
    case Checksum::none: return;
    case Checksum::xxh3: {
      const std::uint64_t h = XXH3_64bits(payload, size);
      for (int i = 0; i < 8; ++i) out[i] = static_cast<std::byte>((h >> (8 * i)) & 0xff);
      return;
    }
    case Checksum::blake2b: {
      static const int init = sodium_init();
      (void)init;
      crypto_generichash(reinterpret_cast<unsigned char*>(out), layout::kChecksumBytes,
                         reinterpret_cast<const unsigned char*>(payload), size, nullptr, 0);
      return;
    }
  }
}

SlotGeometry slot_geometry(const Geometry& g) {
  if (g.slots < 1) throw UsageError("--slots must be at least 1");
  if (g.slot_size < 1) throw UsageError("--slot-size must be at least 1 byte");
  if (g.slot_size > (1u << 30)) throw UsageError("--slot-size must be at most 1 GiB");
  SlotGeometry sg{};
  sg.meta_size = g.checksum == Checksum::none ? layout::kSlotMetaSize : layout::kSlotMetaSizeChecksum;
  const std::uint64_t raw = std::uint64_t{sg.meta_size} + g.slot_size;
  const std::uint64_t stride = (raw + layout::kSlotAlign - 1) / layout::kSlotAlign * layout::kSlotAlign;
  sg.stride = static_cast<std::uint32_t>(stride);
  sg.total_size = layout::kSlotsOffset + stride * g.slots;
  if (sg.total_size > (std::uint64_t{1} << 40))
    throw UsageError("segment of " + std::to_string(g.slots) + " slots of " + std::to_string(g.slot_size) +
                     " bytes is too large");
  return sg;
}

namespace {

std::uint32_t load_u32(const std::byte* p) {
  std::uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
std::uint64_t load_u64(const std::byte* p) {
  std::uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

std::string quoted(std::string_view name) { return "'" + std::string(name) + "'"; }

}  // namespace

std::string validate_layout(const std::byte* base, std::size_t file_size, ExitCode& code) {
  code = ExitCode::refused;
  if (file_size < sizeof layout::kMagic || std::memcmp(base, "PLHSHM", 6) != 0) return "is not a plh segment";
  if (std::memcmp(base, layout::kMagic, sizeof layout::kMagic) != 0)
    return "has layout version '" + printable(std::string_view(reinterpret_cast<const char*>(base) + 6, 2)) +
           "' (this plh reads version 01)";
  if (file_size < layout::kHeaderSize) {
    code = ExitCode::failure;
    return "is truncated (" + std::to_string(file_size) + " bytes, header needs " +
           std::to_string(layout::kHeaderSize) + ")";
  }
  const std::uint32_t version = load_u32(base + 8);
  if (version != layout::kVersion)
    return "has layout version " + std::to_string(version) + " (this plh reads version " +
           std::to_string(layout::kVersion) + ")";
  code = ExitCode::failure;
  const std::uint32_t header_size = load_u32(base + 12);
  const std::uint64_t total = load_u64(base + 16);
  const std::uint32_t count = load_u32(base + 24), slot_size = load_u32(base + 28), stride = load_u32(base + 32),
                      meta = load_u32(base + 36), slots_off = load_u32(base + 40), table_off = load_u32(base + 44),
                      cap = load_u32(base + 48), policy = load_u32(base + 52), checksum = load_u32(base + 56);
  if (header_size != layout::kHeaderSize || slots_off != layout::kSlotsOffset ||
      table_off != layout::kReaderTableOffset || cap != layout::kReaderCapacity)
    return "has a corrupted header (table offsets)";
  if (policy < 1 || policy > 3) return "has a corrupted header (policy " + std::to_string(policy) + ")";
  if (checksum > 2) return "has a corrupted header (checksum kind " + std::to_string(checksum) + ")";
  Geometry g{count, slot_size, static_cast<Policy>(policy), static_cast<Checksum>(checksum)};
  if (count < 1 || slot_size < 1 || slot_size > (1u << 30)) return "has a corrupted header (slot geometry)";
  SlotGeometry sg{};
  try {
    sg = slot_geometry(g);
  } catch (const Error&) {
    return "has a corrupted header (slot geometry)";
  }
  if (meta != sg.meta_size || stride != sg.stride || total != sg.total_size)
    return "has a corrupted header (slot geometry)";
  if (file_size < total)
    return "is truncated (" + std::to_string(file_size) + " bytes, its header says " + std::to_string(total) + ")";
  return "";
}

// ------------------------------------------------------------ SIGBUS on truncation
// See the comment on Segment in shm_internal.hpp. The registry is a fixed array of
// lock-free atomics so that the handler may read it (async-signal-safe); mmap(2) is a
// plain system call on Linux and safe there too (Wayland compositors absorb SIGBUS on
// client pools the same way).
namespace {

constexpr int kGuardSlots = 1024;
struct Guard {
  std::atomic<int> state{0};  // 0 free, 1 being filled or emptied, 2 active
  std::atomic<std::uintptr_t> begin{0}, end{0};
  std::atomic<std::uint32_t> faulted{0};
};
Guard g_guards[kGuardSlots];
std::uintptr_t g_page_size = 4096;
struct sigaction g_previous_bus {};

void chain_sigbus(int sig, siginfo_t* si, void* ctx) {
  const struct sigaction& old = g_previous_bus;
  if ((old.sa_flags & SA_SIGINFO) && old.sa_sigaction) {
    old.sa_sigaction(sig, si, ctx);
    return;
  }
  if (old.sa_handler != SIG_DFL && old.sa_handler != SIG_IGN && old.sa_handler) {
    old.sa_handler(sig);
    return;
  }
  // Default action: a fault re-executes the access and dies of it as before; a SIGBUS
  // sent with kill() is raised again.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  ::sigaction(SIGBUS, &dfl, nullptr);
  if (si == nullptr || si->si_code <= 0) ::raise(sig);
}

void on_sigbus(int sig, siginfo_t* si, void* ctx) {
  if (si != nullptr && si->si_code > 0) {
    const auto addr = reinterpret_cast<std::uintptr_t>(si->si_addr);
    for (auto& g : g_guards) {
      if (g.state.load(std::memory_order_acquire) != 2) continue;
      const std::uintptr_t b = g.begin.load(std::memory_order_relaxed), e = g.end.load(std::memory_order_relaxed);
      if (addr < b || addr >= e) continue;
      const std::uintptr_t page = addr & ~(g_page_size - 1);
      void* p = ::mmap(reinterpret_cast<void*>(page), e - page, PROT_READ | PROT_WRITE,
                       MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) break;
      g.faulted.store(1, std::memory_order_relaxed);
      return;  // the access is retried on the zero page
    }
  }
  chain_sigbus(sig, si, ctx);
}

void install_sigbus_handler() {
  static const bool installed = [] {
    const long ps = ::sysconf(_SC_PAGESIZE);
    if (ps > 0) g_page_size = static_cast<std::uintptr_t>(ps);
    struct sigaction sa {};
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    return ::sigaction(SIGBUS, &sa, &g_previous_bus) == 0;
  }();
  if (!installed) throw Error(ExitCode::failure, "cannot install the SIGBUS handler: " + errno_text(errno));
}

int register_guard(const std::byte* base, std::size_t size) {
  install_sigbus_handler();
  for (int i = 0; i < kGuardSlots; ++i) {
    int expected = 0;
    if (!g_guards[i].state.compare_exchange_strong(expected, 1)) continue;
    g_guards[i].begin.store(reinterpret_cast<std::uintptr_t>(base), std::memory_order_relaxed);
    g_guards[i].end.store(reinterpret_cast<std::uintptr_t>(base) + size, std::memory_order_relaxed);
    g_guards[i].faulted.store(0, std::memory_order_relaxed);
    g_guards[i].state.store(2, std::memory_order_release);
    return i;
  }
  throw Error(ExitCode::failure, "too many segments mapped at once (" + std::to_string(kGuardSlots) + ")");
}

void unregister_guard(int i) {
  g_guards[i].state.store(1, std::memory_order_release);
  g_guards[i].begin.store(0, std::memory_order_relaxed);
  g_guards[i].end.store(0, std::memory_order_relaxed);
  g_guards[i].state.store(0, std::memory_order_release);
}

std::string user_name(uid_t uid) {
  std::vector<char> buf(16384);
  passwd pw{};
  passwd* out = nullptr;
  if (::getpwuid_r(uid, &pw, buf.data(), buf.size(), &out) == 0 && out && out->pw_name) return out->pw_name;
  return "no such user";
}

std::string octal(unsigned mode) {
  char b[8];
  std::snprintf(b, sizeof b, "%04o", mode & 07777);
  return b;
}

// Why a segment owned by `uid` with `mode` is not trusted, or "".
std::string distrust(uid_t uid, unsigned mode, const Trust& trust, unsigned accept_mode) {
  if (uid != ::geteuid() && uid != 0 && !(trust.owner && *trust.owner == uid))
    return "it belongs to another user; --owner " + user_name(uid) + " trusts it";
  const unsigned extra = mode & 077 & ~(accept_mode & 077);
  if (extra == 0) return "";
  std::string who;
  if (extra & 002) who = "others may write it";
  else if (extra & 020) who = "its group may write it";
  else if (extra & 004) who = "others may read it";
  else if (extra & 040) who = "its group may read it";
  else who = "it grants group/other permissions not asked for";
  return who + "; --mode " + octal((accept_mode & 0700) | (mode & 077)) + " accepts that";
}

}  // namespace

void Segment::release() noexcept {
  if (guard_ >= 0) unregister_guard(guard_);
  if (base_) ::munmap(base_, size_);
  if (fd_ >= 0) ::close(fd_);
  guard_ = -1;
  faulted_ = nullptr;
  base_ = nullptr;
  size_ = 0;
  fd_ = -1;
}

Segment::Segment(Segment&& o) noexcept { *this = std::move(o); }
Segment& Segment::operator=(Segment&& o) noexcept {
  if (this != &o) {
    release();
    name_ = std::move(o.name_);
    base_ = o.base_;
    size_ = o.size_;
    fd_ = o.fd_;
    guard_ = o.guard_;
    faulted_ = o.faulted_;
    geo_ = o.geo_;
    slots_ = o.slots_;
    stride_ = o.stride_;
    meta_size_ = o.meta_size_;
    slot_mask_ = o.slot_mask_;
    file_mode_ = o.file_mode_;
    uid_ = o.uid_;
    o.base_ = nullptr;
    o.size_ = 0;
    o.fd_ = -1;
    o.guard_ = -1;
    o.faulted_ = nullptr;
  }
  return *this;
}
Segment::~Segment() { release(); }

void Segment::set_geometry(const Geometry& g) {
  const SlotGeometry sg = slot_geometry(g);
  geo_ = g;
  slots_ = g.slots;
  slot_mask_ = (slots_ > 1 && (slots_ & (slots_ - 1)) == 0) ? slots_ - 1 : 0;
  stride_ = sg.stride;
  meta_size_ = sg.meta_size;
}

void Segment::size_check() const {
  if (fd_ < 0 || !faulted_) return;
  struct stat st {};
  if (::fstat(fd_, &st) == 0 && static_cast<std::uint64_t>(st.st_size) < size_)
    faulted_->store(1, std::memory_order_relaxed);
}

void Segment::throw_damaged(std::string_view who) const {
  std::string now;
  struct stat st {};
  if (fd_ >= 0 && ::fstat(fd_, &st) == 0) now = "now " + std::to_string(st.st_size) + " bytes, ";
  throw Error(ExitCode::failure, "segment '" + name_ + "' was truncated under this " + std::string(who) + " (" + now +
                                     "it needs " + std::to_string(size_) + "); giving up on it");
}

namespace {
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  int take() {
    const int f = fd;
    fd = -1;
    return f;
  }
};

}  // namespace

Segment Segment::open(std::string_view name, Access access, const Trust* trust, unsigned accept_mode) {
  const std::string object = segment_object_name(name);
  const std::string path = "/dev/shm" + object;
  const bool rw = access == Access::read_write;
  const auto give_up = Clock::now() + std::chrono::seconds(1);
  for (;;) {
    Fd fd;
    // O_NONBLOCK: a FIFO planted under the name must not hang the open; O_NOFOLLOW: nor
    // may a symbolic link lead elsewhere (glibc adds it too).
    fd.fd = ::shm_open(object.c_str(), (rw ? O_RDWR : O_RDONLY) | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0);
    if (fd.fd < 0) {
      const int e = errno;
      if (e == ENOENT) throw NotFoundError("segment " + quoted(name) + " not found (no /dev/shm" + object + ")");
      if (e == EACCES || e == EPERM)
        throw RefusedError("permission denied opening segment " + quoted(name) + " (" + object + ")");
      if (e == ELOOP) throw RefusedError("segment " + path + " is a symbolic link; refusing it");
      throw Error(ExitCode::failure, "cannot open segment " + quoted(name) + ": " + errno_text(e));
    }
    struct stat st {};
    if (::fstat(fd.fd, &st) != 0) throw Error(ExitCode::failure, "cannot stat segment " + quoted(name) + ": " + errno_text(errno));
    if (!S_ISREG(st.st_mode)) throw RefusedError("segment " + path + " is not a regular file; refusing it");
    if (trust) {
      const std::string why = distrust(st.st_uid, st.st_mode & 07777, *trust, accept_mode | trust->mode);
      if (!why.empty())
        throw RefusedError("segment " + path + " is owned by uid " + std::to_string(st.st_uid) + " (" +
                           user_name(st.st_uid) + ") with mode " + octal(st.st_mode) + "; refusing it: " + why);
    }
    const auto file_size = static_cast<std::uint64_t>(st.st_size);
    // Creation in progress: empty object, or magic not yet written.
    if (file_size == 0) {
      if (Clock::now() < give_up) {
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
        continue;
      }
      throw RefusedError("segment " + quoted(name) + " is not a plh segment (it is empty)");
    }
    // The header is read once with pread (no mapping, so no SIGBUS while validating),
    // validated, and only the copy is used: a hostile writer changing it afterwards
    // cannot change the geometry this process works with.
    alignas(8) std::byte head[layout::kHeaderSize] = {};
    const ssize_t got = ::pread(fd.fd, head, sizeof head, 0);
    if (got < 0) throw Error(ExitCode::failure, "cannot read segment " + quoted(name) + ": " + errno_text(errno));
    const std::size_t have = std::min<std::uint64_t>(file_size, static_cast<std::uint64_t>(got));
    bool zero_magic = have >= 8;
    for (std::size_t i = 0; i < 8 && i < have; ++i)
      if (head[i] != std::byte{0}) zero_magic = false;
    if (zero_magic && Clock::now() < give_up) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      continue;
    }
    ExitCode code = ExitCode::failure;
    const std::string problem = validate_layout(head, have < layout::kHeaderSize ? have : file_size, code);
    if (!problem.empty()) throw Error(code, "segment " + quoted(name) + " " + problem);
    Segment seg;
    seg.name_ = std::string(name);
    seg.file_mode_ = st.st_mode & 07777;
    seg.uid_ = st.st_uid;
    const Geometry g{load_u32(head + 24), load_u32(head + 28), static_cast<Policy>(load_u32(head + 52)),
                     static_cast<Checksum>(load_u32(head + 56))};
    seg.set_geometry(g);
    // Only map what the header describes; trailing bytes are ignored.
    const std::uint64_t total = load_u64(head + 16);
    void* p = ::mmap(nullptr, total, rw ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, fd.fd, 0);
    if (p == MAP_FAILED) throw Error(ExitCode::failure, "cannot map segment " + quoted(name) + ": " + errno_text(errno));
    seg.base_ = static_cast<std::byte*>(p);
    seg.size_ = total;
    seg.fd_ = fd.take();
    seg.guard_ = register_guard(seg.base_, seg.size_);
    seg.faulted_ = &g_guards[seg.guard_].faulted;
    std::atomic_thread_fence(std::memory_order_acquire);
    // Shrunk between the fstat and the mapping: refuse now rather than fault later.
    seg.size_check();
    if (seg.damaged()) throw Error(ExitCode::failure, "segment " + quoted(name) + " is truncated (it shrank while being opened)");
    return seg;
  }
}

std::optional<Segment> Segment::create_exclusive(std::string_view name, const CreateOptions& opts) {
  const std::string object = segment_object_name(name);
  const SlotGeometry sg = slot_geometry(opts.geometry);
  if (opts.mode > 0777) throw UsageError("--mode must be octal permission bits such as 0600 or 0660");
  Fd fd;
  fd.fd = ::shm_open(object.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd.fd < 0) {
    const int e = errno;
    if (e == EEXIST) return std::nullopt;
    if (e == EACCES || e == EPERM) throw RefusedError("permission denied creating segment " + quoted(name));
    throw Error(ExitCode::failure, "cannot create segment " + quoted(name) + ": " + errno_text(e));
  }
  auto fail = [&](const std::string& what, int e) {
    ::shm_unlink(object.c_str());
    throw Error(ExitCode::failure, "cannot create segment " + quoted(name) + ": " + what + ": " + errno_text(e));
  };
  if (::fchmod(fd.fd, static_cast<mode_t>(opts.mode)) != 0) fail("fchmod", errno);
  if (::ftruncate(fd.fd, static_cast<off_t>(sg.total_size)) != 0) fail("ftruncate", errno);
  // Reserve the memory now: a full /dev/shm must fail here, not as SIGBUS on first write.
  if (int e = ::posix_fallocate(fd.fd, 0, static_cast<off_t>(sg.total_size)); e != 0)
    fail("no room for " + std::to_string(sg.total_size) + " bytes in /dev/shm", e);
  void* p = ::mmap(nullptr, sg.total_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.fd, 0);
  if (p == MAP_FAILED) fail("mmap", errno);
  Segment seg;
  seg.name_ = std::string(name);
  seg.base_ = static_cast<std::byte*>(p);
  seg.size_ = sg.total_size;
  seg.fd_ = fd.take();
  seg.guard_ = register_guard(seg.base_, seg.size_);
  seg.faulted_ = &g_guards[seg.guard_].faulted;
  auto* h = seg.header();
  h->version = layout::kVersion;
  h->header_size = layout::kHeaderSize;
  h->total_size = sg.total_size;
  h->slot_count = opts.geometry.slots;
  h->slot_size = opts.geometry.slot_size;
  h->slot_stride = sg.stride;
  h->slot_meta_size = sg.meta_size;
  h->slots_offset = layout::kSlotsOffset;
  h->reader_table_offset = layout::kReaderTableOffset;
  h->reader_capacity = layout::kReaderCapacity;
  h->policy = static_cast<std::uint32_t>(opts.geometry.policy);
  h->checksum = static_cast<std::uint32_t>(opts.geometry.checksum);
  h->mode = opts.mode;
  h->created_ns.store(static_cast<std::uint64_t>(realtime_ns()), std::memory_order_relaxed);
  h->retain.store(1, std::memory_order_relaxed);
  // Magic last, so that an opener never sees a half-written header as valid.
  std::atomic_thread_fence(std::memory_order_release);
  std::memcpy(h->magic, layout::kMagic, sizeof layout::kMagic);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  seg.set_geometry(opts.geometry);
  seg.file_mode_ = opts.mode;
  seg.uid_ = ::geteuid();
  return seg;
}

Segment Segment::create(std::string_view name, const CreateOptions& opts) {
  auto seg = create_exclusive(name, opts);
  if (!seg) throw Error(ExitCode::failure, "segment " + quoted(name) + " already exists");
  return std::move(*seg);
}

}  // namespace detail

void create_segment(std::string_view name, const CreateOptions& opts) {
  detail::Segment::create(name, opts);
}

bool remove_segment(std::string_view name) {
  const std::string object = segment_object_name(name);
  if (::shm_unlink(object.c_str()) == 0) return true;
  const int e = errno;
  if (e == ENOENT) return false;
  if (e == EACCES || e == EPERM) throw RefusedError("permission denied removing segment '" + std::string(name) + "'");
  throw Error(ExitCode::failure, "cannot remove segment '" + std::string(name) + "': " + errno_text(e));
}

SegmentInfo inspect_segment(std::string_view name) {
  using detail::Segment;
  Segment seg = Segment::open(name, Segment::Access::read_only);
  const auto* h = seg.header();
  SegmentInfo info;
  info.name = std::string(name);
  info.object = "/plh." + info.name;
  info.geometry = seg.geometry();
  info.total_size = seg.total_size();
  info.mode = seg.file_mode();
  info.uid = seg.file_uid();
  info.write_seq = h->write_seq.load(std::memory_order_acquire);
  info.ended = h->ended.load(std::memory_order_acquire) != 0;
  info.writer_pid = static_cast<pid_t>(h->writer_pid.load(std::memory_order_acquire));
  info.writer_waits = h->writer_waits.load(std::memory_order_relaxed);
  info.writer_generation = h->writer_generation.load(std::memory_order_relaxed);
  info.created_ns = static_cast<std::int64_t>(h->created_ns.load(std::memory_order_relaxed));
  if (info.writer_pid != 0) {
    info.writer_alive = detail::pid_alive(static_cast<std::uint32_t>(info.writer_pid));
    const std::uint64_t hb = h->writer_heartbeat_ns.load(std::memory_order_relaxed), now = detail::monotonic_ns();
    info.writer_heartbeat_age_s = hb <= now ? static_cast<double>(now - hb) / 1e9 : 0.0;
  }
  for (std::uint32_t i = 0; i < layout::kReaderCapacity; ++i) {
    const auto* e = seg.reader(i);
    const std::uint32_t pid = e->pid.load(std::memory_order_acquire);
    if (pid == 0) continue;
    ReaderInfo r;
    r.index = i;
    r.pid = static_cast<pid_t>(pid);
    r.alive = detail::pid_alive(pid);
    r.cursor = e->cursor.load(std::memory_order_relaxed);
    r.lag = info.write_seq > r.cursor ? info.write_seq - r.cursor : 0;
    r.skipped = e->skipped.load(std::memory_order_relaxed);
    r.checksum_errors = e->checksum_errors.load(std::memory_order_relaxed);
    r.slots_read = e->slots_read.load(std::memory_order_relaxed);
    r.attached_ns = static_cast<std::int64_t>(e->attached_ns.load(std::memory_order_relaxed));
    info.readers.push_back(r);
  }
  seg.throw_if_damaged("inspection");
  return info;
}

nlohmann::json to_json(const SegmentInfo& info) {
  nlohmann::json readers = nlohmann::json::array();
  for (const auto& r : info.readers)
    readers.push_back({{"index", r.index}, {"pid", r.pid}, {"alive", r.alive}, {"cursor", r.cursor},
                       {"lag", r.lag}, {"skipped", r.skipped}, {"checksum_errors", r.checksum_errors},
                       {"slots_read", r.slots_read}, {"attached_ns", r.attached_ns}});
  char mode[8];
  std::snprintf(mode, sizeof mode, "%04o", info.mode);
  nlohmann::json writer = nullptr;
  if (info.writer_pid != 0)
    writer = {{"pid", info.writer_pid}, {"alive", info.writer_alive}, {"heartbeat_age_s", info.writer_heartbeat_age_s}};
  return {{"name", info.name},
          {"object", info.object},
          {"slots", info.geometry.slots},
          {"slot_size", info.geometry.slot_size},
          {"policy", policy_name(info.geometry.policy)},
          {"checksum", checksum_name(info.geometry.checksum)},
          {"total_size", info.total_size},
          {"mode", mode},
          {"uid", info.uid},
          {"write_seq", info.write_seq},
          {"ended", info.ended},
          {"writer", writer},
          {"writer_waits", info.writer_waits},
          {"writer_generation", info.writer_generation},
          {"created_ns", info.created_ns},
          {"readers", readers}};
}

std::vector<SegmentListing> list_segments() {
  std::vector<SegmentListing> out;
  DIR* dir = ::opendir("/dev/shm");
  if (!dir) return out;
  std::vector<std::string> names;
  while (dirent* d = ::readdir(dir)) {
    const std::string file = d->d_name;
    if (file.size() > 4 && file.compare(0, 4, "plh.") == 0) names.push_back(file.substr(4));
  }
  ::closedir(dir);
  std::sort(names.begin(), names.end());
  for (const auto& n : names) {
    SegmentListing l;
    l.name = n;
    try {
      l.info = inspect_segment(n);
    } catch (const std::exception& e) {
      l.problem = e.what();
    }
    out.push_back(std::move(l));
  }
  return out;
}

}  // namespace plh::shm
