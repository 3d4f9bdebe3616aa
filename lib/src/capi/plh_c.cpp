// The C API (plh/plh.h) over the C++ library. Every entry point catches everything, so
// no exception crosses the C boundary: a failure becomes the SPEC exit code plus a
// thread-local message (plh_last_error).
#include "plh/plh.h"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <sys/timerfd.h>
#include <unistd.h>
#include <zmq.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <map>
#include <random>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <thread>

#include "plh/control/broker_client.hpp"
#include "plh/control/ctl_commands.hpp"
#include "plh/control/zap.hpp"
#include "plh/core/cli.hpp"
#include "plh/core/curve.hpp"
#include "plh/core/error.hpp"
#include "plh/core/text.hpp"
#include "plh/core/zmq_util.hpp"
#include "plh/data/data_plane.hpp"
#include "plh/data/pubsub.hpp"
#include "plh/data/reqrep.hpp"
#include "plh/data/wire.hpp"
#include "plh/shm/data_block.hpp"
#include "plh/version.hpp"

namespace {

thread_local std::string t_error;

// A host program has no plh tool main to set up logging: diagnostics go to stderr
// (never stdout, which may be the host's data), warnings and worse only, unless the
// host set PLH_LOG_LEVEL.
void init_logging() {
  static std::once_flag once;
  std::call_once(once, [] {
    auto logger = std::make_shared<spdlog::logger>("plh", std::make_shared<spdlog::sinks::stderr_sink_mt>());
    logger->set_pattern("%n: %l: %v");
    const char* level = std::getenv("PLH_LOG_LEVEL");
    logger->set_level(level && *level ? spdlog::level::from_str(level) : spdlog::level::warn);
    spdlog::set_default_logger(logger);
  });
}

int fail(int code, const std::string& msg) {
  t_error = msg;
  return code;
}

// Runs f; maps every exception to a status and message.
template <typename F>
int guarded(F&& f) noexcept {
  try {
    init_logging();
    t_error.clear();
    return f();
  } catch (const plh::Error& e) {
    const int code = static_cast<int>(e.code());
    return fail(code == 0 ? PLH_FAILURE : code, e.what());
  } catch (const std::bad_alloc&) {
    return fail(PLH_FAILURE, "out of memory");
  } catch (const std::exception& e) {
    return fail(PLH_FAILURE, e.what());
  } catch (...) {
    return fail(PLH_FAILURE, "unknown error");
  }
}

int null_arg(const char* fn, const char* what) { return fail(PLH_USAGE, std::string(fn) + ": " + what + " is NULL"); }

#define PLH_REQUIRE(p)                            \
  do {                                            \
    if ((p) == nullptr) return null_arg(__func__, #p); \
  } while (0)

plh::shm::Clock::time_point deadline_of(int64_t timeout_ms) {
  if (timeout_ms < 0) return plh::shm::kForever;
  return plh::shm::Clock::now() + std::chrono::milliseconds(timeout_ms);
}

std::array<std::uint64_t, 4> dims_of(const uint64_t* dims) {
  std::array<std::uint64_t, 4> d{};
  if (dims)
    for (int i = 0; i < 4; ++i) d[i] = dims[i];
  return d;
}

void fill_slot(plh_slot* out, const plh::shm::SlotView& v, const void* data) {
  out->data = data;
  out->size = v.meta.size;
  out->seq = v.meta.seq;
  out->ts_ns = v.meta.ts_ns;
  out->type_hash = v.meta.type_hash;
  for (int i = 0; i < 4; ++i) out->dims[i] = v.meta.dims[i];
  out->flags = v.meta.flags;
  out->ended = 0;
}

plh::BrokerClientConfig broker_config(const char* broker) {
  plh::cli::BrokerOptions opts;
  if (broker) opts.endpoint = broker;
  plh::BrokerClientConfig cfg;
  cfg.endpoint = plh::cli::resolve_broker_endpoint(opts);
  cfg.server_key = plh::cli::resolve_broker_key(opts);
  return cfg;
}

// A file descriptor closed at scope end.
struct Fd {
  int fd;
  explicit Fd(int f) : fd(f) {}
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
};

char* dup_string(const std::string& s) {
  char* p = static_cast<char*>(std::malloc(s.size() + 1));
  if (!p) throw std::bad_alloc();
  std::memcpy(p, s.c_str(), s.size() + 1);
  return p;
}

// Runs one plh-ctl subcommand with --json, its output captured as text.
template <typename F>
int ctl_json(const char* fn, char** json, F&& run) {
  if (json == nullptr) return null_arg(fn, "json");
  *json = nullptr;
  return guarded([&]() -> int {
    char* buf = nullptr;
    std::size_t len = 0;
    std::FILE* mem = ::open_memstream(&buf, &len);
    if (!mem) throw plh::Error(plh::ExitCode::failure, "open_memstream failed");
    int rc = 0;
    try {
      rc = run(mem);
    } catch (...) {
      std::fclose(mem);
      std::free(buf);
      throw;
    }
    std::fclose(mem);
    std::string text(buf ? buf : "", len);
    std::free(buf);
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
    if (rc != 0) return fail(rc, text.empty() ? "broker query failed" : text);
    *json = dup_string(text);
    return PLH_OK;
  });
}

}  // namespace

struct plh_shm_writer {
  std::unique_ptr<plh::shm::Writer> w;
  bool begun = false;
  bool ended = false;
};

struct plh_shm_reader {
  std::unique_ptr<plh::shm::Reader> r;
  bool held = false;
};

struct plh_publisher {
  std::unique_ptr<plh::Publisher> pub;
  std::unique_ptr<plh::BrokerClient> client;
  std::shared_ptr<plh::ChannelMetrics> metrics;
  std::string channel;
  std::uint64_t next_seq = 1;
};

struct plh_subscriber {
  std::unique_ptr<plh::BrokerClient> client;
  std::unique_ptr<plh::Subscriber> sub;
  std::shared_ptr<plh::ChannelMetrics> metrics;
  std::string channel;
  const plh::wire::DecodedFrame* frame = nullptr;
  std::size_t next = 0;  // index of the next message in frame
  std::uint64_t delivered = 0;
  std::uint64_t gaps = 0;  // at the end of stream
  bool ended = false;
};

namespace {

// ---- request/reply pieces (the wire of plh/data/reqrep.hpp) -----------------------------

namespace rr = plh::reqrep;
using steady = std::chrono::steady_clock;

steady::time_point steady_deadline(int64_t timeout_ms) {
  return timeout_ms < 0 ? steady::time_point::max() : steady::now() + std::chrono::milliseconds(timeout_ms);
}

// Milliseconds for zmq_poll until t (-1: forever), at most `cap`.
long poll_ms(steady::time_point t, long cap) {
  if (t == steady::time_point::max()) return cap;
  const auto d = std::chrono::duration_cast<std::chrono::milliseconds>(t - steady::now()).count();
  return d <= 0 ? 0 : std::min<long>(static_cast<long>(d) + 1, cap);
}

void zmq_set(void* sock, int option, const void* v, std::size_t n) {
  if (zmq_setsockopt(sock, option, v, n) != 0) plh::throw_zmq_error("cannot set a socket option");
}
void zmq_set_int(void* sock, int option, int v) { zmq_set(sock, option, &v, sizeof v); }
void zmq_set_str(void* sock, int option, const std::string& v) { zmq_set(sock, option, v.data(), v.size()); }

// One whole message without blocking (false: none waits); at most `max` frames are kept.
bool recv_message(void* sock, std::vector<std::string>& parts, std::size_t max) {
  parts.clear();
  zmq_msg_t m;
  zmq_msg_init(&m);
  int flags = ZMQ_DONTWAIT;
  bool got = false;
  for (;;) {
    if (zmq_msg_recv(&m, sock, flags) < 0) {
      const int e = zmq_errno();
      zmq_msg_close(&m);
      if (!got && (e == EAGAIN || e == EINTR)) return false;
      if (!got) plh::throw_zmq_error("receive failed");
      return true;
    }
    got = true;
    if (parts.size() <= max) parts.emplace_back(static_cast<const char*>(zmq_msg_data(&m)), zmq_msg_size(&m));
    flags = 0;
    if (!zmq_msg_more(&m)) break;
  }
  zmq_msg_close(&m);
  return true;
}

// False when the message cannot go now (no peer, HWM): nothing of it was sent then.
bool send_message(void* sock, std::initializer_list<std::string_view> parts) {
  std::size_t i = 0;
  for (std::string_view part : parts) {
    const int more = ++i < parts.size() ? ZMQ_SNDMORE : 0;
    if (zmq_send(sock, part.data(), part.size(), ZMQ_DONTWAIT | more) < 0) {
      if (i == 1 && (zmq_errno() == EAGAIN || zmq_errno() == EHOSTUNREACH)) return false;
      plh::throw_zmq_error("send failed");
    }
  }
  return true;
}

std::string random_hex(int digits) {
  std::random_device rd;
  static const char* hex = "0123456789abcdef";
  std::string s;
  for (int i = 0; i < digits; ++i) s.push_back(hex[rd() % 16]);
  return s;
}

bool is_endpoint(const std::string& s) {
  return s.rfind("tcp://", 0) == 0 || s.rfind("ipc://", 0) == 0 || s.rfind("inproc://", 0) == 0;
}

// A context and its sockets, closed in reverse order.
struct ZmqSockets {
  void* ctx = plh::new_zmq_context();
  std::vector<void*> socks;
  void* open(int type) {
    void* s = zmq_socket(ctx, type);
    if (!s) plh::throw_zmq_error("cannot create a socket");
    socks.push_back(s);
    zmq_set_int(s, ZMQ_LINGER, 0);
    return s;
  }
  void adopt(void* s) { socks.push_back(s); }
  void close(void* s) {
    if (!s) return;
    socks.erase(std::remove(socks.begin(), socks.end(), s), socks.end());
    zmq_close(s);
  }
  ~ZmqSockets() {
    for (auto it = socks.rbegin(); it != socks.rend(); ++it) zmq_close(*it);
    zmq_ctx_term(ctx);
  }
};

constexpr std::size_t kMaxMessage = 64u << 20;  // as plh-req / plh-rep's --max-message-size

// The next message of s without blocking, fetching frames as needed (the frame stays
// valid until sub_take moves past its last message); nullptr when none is waiting or at
// the end of stream (s->ended).
const std::string_view* sub_peek(plh_subscriber* s) {
  for (;;) {
    if (s->ended) return nullptr;
    if (s->frame && s->next < s->frame->messages.size()) return &s->frame->messages[s->next];
    s->frame = s->sub->try_receive();
    s->next = 0;
    if (!s->frame) return nullptr;
    if (s->frame->header.end_of_stream()) {
      // Hanging up after the marker is how a consumer confirms the end to the publisher
      // (which waits for that before it exits, like for plh-sub).
      s->ended = true;
      s->gaps = s->sub->stats().gaps;
      s->frame = nullptr;
      s->sub.reset();
      try {
        s->client->deregister_consumer(s->channel);
      } catch (const plh::Error&) {
        // the broker may be gone already; the registration then times out there
      }
    }
  }
}

// Hands out the message sub_peek returned.
void sub_take(plh_subscriber* s, plh_message* msg) {
  const auto& m = s->frame->messages[s->next];
  msg->data = m.data();
  msg->size = m.size();
  msg->seq = s->frame->header.seq + s->next;
  msg->ts_ns = s->frame->header.ts_ns;
  msg->gaps = s->sub->stats().gaps;
  msg->ended = 0;
  ++s->next;
  ++s->delivered;
  s->metrics->messages.fetch_add(1, std::memory_order_relaxed);
  s->metrics->bytes.fetch_add(m.size(), std::memory_order_relaxed);
  s->metrics->gaps.store(msg->gaps, std::memory_order_relaxed);
}

// Waits until sub_peek has a message or the stream ended: PLH_OK, or PLH_TIMEOUT.
int sub_wait_message(plh_subscriber* s, int64_t timeout_ms) {
  const auto deadline = steady_deadline(timeout_ms);
  for (;;) {
    if (sub_peek(s) || s->ended) return PLH_OK;
    s->sub->confirm_written(s->delivered);  // pipeline: what was handed out is done
    (void)s->sub->connection();
    const auto now = steady::now();
    if (now >= deadline)
      return fail(PLH_TIMEOUT, "no message on '" + s->channel + "' within " + std::to_string(timeout_ms) + " ms");
    s->sub->wait(std::chrono::milliseconds(poll_ms(deadline, 1000)));
  }
}

}  // namespace

extern "C" {

const char* plh_last_error(void) { return t_error.c_str(); }
const char* plh_version(void) { return PLH_VERSION_STRING; }
void plh_free(void* p) { std::free(p); }

// ---- shm writer --------------------------------------------------------------------------

int plh_shm_writer_open(plh_shm_writer** out, const char* name, int create, uint32_t slots, uint32_t slot_size,
                        const char* policy, const char* checksum) {
  PLH_REQUIRE(out);
  *out = nullptr;
  PLH_REQUIRE(name);
  return guarded([&]() -> int {
    plh::shm::Writer::Options o;
    o.create = create != 0;
    if (o.create) {
      if (slots == 0) return fail(PLH_USAGE, "plh_shm_writer_open: slots must be >= 1");
      if (slot_size == 0) return fail(PLH_USAGE, "plh_shm_writer_open: slot_size must be >= 1");
      o.create_options.geometry.slots = slots;
      o.create_options.geometry.slot_size = slot_size;
      o.create_options.geometry.policy = plh::shm::parse_policy(policy ? policy : "sequential");
      o.create_options.geometry.checksum = plh::shm::parse_checksum(checksum ? checksum : "none");
    }
    auto h = std::make_unique<plh_shm_writer>();
    h->w = std::make_unique<plh::shm::Writer>(name, o);
    *out = h.release();
    return PLH_OK;
  });
}

int plh_shm_writer_begin(plh_shm_writer* w, int64_t timeout_ms, void** data, size_t* capacity) {
  PLH_REQUIRE(w);
  PLH_REQUIRE(data);
  *data = nullptr;
  return guarded([&]() -> int {
    if (w->ended) return fail(PLH_USAGE, "plh_shm_writer_begin: the stream was ended");
    auto span = w->w->begin_publish(deadline_of(timeout_ms));
    if (span.empty()) return fail(PLH_STOPPED, "stopped by a signal");
    w->begun = true;
    *data = span.data();
    if (capacity) *capacity = span.size();
    return PLH_OK;
  });
}

int plh_shm_writer_end(plh_shm_writer* w, size_t size, int64_t ts_ns, uint64_t type_hash, const uint64_t* dims,
                       uint64_t* seq) {
  PLH_REQUIRE(w);
  return guarded([&]() -> int {
    if (!w->begun) return fail(PLH_USAGE, "plh_shm_writer_end: no slot begun (call plh_shm_writer_begin first)");
    if (size > w->w->geometry().slot_size)
      return fail(PLH_USAGE, "plh_shm_writer_end: size " + std::to_string(size) + " exceeds slot_size " +
                                 std::to_string(w->w->geometry().slot_size));
    const auto s = w->w->end_publish(size, ts_ns, type_hash, dims_of(dims));
    w->begun = false;
    if (seq) *seq = s;
    return PLH_OK;
  });
}

int plh_shm_writer_publish(plh_shm_writer* w, const void* data, size_t size, int64_t ts_ns, uint64_t type_hash,
                           const uint64_t* dims, int64_t timeout_ms, uint64_t* seq) {
  PLH_REQUIRE(w);
  if (data == nullptr && size > 0) return null_arg(__func__, "data");
  if (size > w->w->geometry().slot_size)
    return fail(PLH_USAGE, "plh_shm_writer_publish: size " + std::to_string(size) + " exceeds slot_size " +
                               std::to_string(w->w->geometry().slot_size));
  void* dst = nullptr;
  if (int rc = plh_shm_writer_begin(w, timeout_ms, &dst, nullptr); rc != PLH_OK) return rc;
  if (size > 0) std::memcpy(dst, data, size);
  return plh_shm_writer_end(w, size, ts_ns, type_hash, dims, seq);
}

int plh_shm_writer_geometry(const plh_shm_writer* w, uint32_t* slots, uint32_t* slot_size) {
  PLH_REQUIRE(w);
  return guarded([&]() -> int {
    if (slots) *slots = w->w->geometry().slots;
    if (slot_size) *slot_size = w->w->geometry().slot_size;
    return PLH_OK;
  });
}

int plh_shm_writer_end_stream(plh_shm_writer* w) {
  PLH_REQUIRE(w);
  return guarded([&]() -> int {
    if (!w->ended) w->w->end_stream();
    w->ended = true;
    return PLH_OK;
  });
}

int plh_shm_writer_close(plh_shm_writer* w) {
  if (!w) return PLH_OK;
  const int rc = plh_shm_writer_end_stream(w);
  const int rc2 = guarded([&]() -> int {
    delete w;
    return PLH_OK;
  });
  return rc != PLH_OK ? rc : rc2;
}

int plh_shm_remove(const char* name) {
  PLH_REQUIRE(name);
  return guarded([&]() -> int {
    if (!plh::shm::remove_segment(name)) return fail(PLH_NOT_FOUND, std::string("segment '") + name + "' not found");
    return PLH_OK;
  });
}

// ---- shm reader --------------------------------------------------------------------------

int plh_shm_reader_open(plh_shm_reader** out, const char* name, const char* start) {
  PLH_REQUIRE(out);
  *out = nullptr;
  PLH_REQUIRE(name);
  return guarded([&]() -> int {
    plh::shm::Reader::Options o;
    const std::string s = start ? start : "oldest";
    if (s == "oldest") o.from = plh::shm::Reader::From::oldest;
    else if (s == "latest") o.from = plh::shm::Reader::From::latest;
    else return fail(PLH_USAGE, "plh_shm_reader_open: start must be \"oldest\" or \"latest\", not '" + s + "'");
    auto h = std::make_unique<plh_shm_reader>();
    h->r = std::make_unique<plh::shm::Reader>(name, o);
    *out = h.release();
    return PLH_OK;
  });
}

int plh_shm_reader_acquire(plh_shm_reader* r, int64_t timeout_ms, plh_slot* slot) {
  PLH_REQUIRE(r);
  PLH_REQUIRE(slot);
  *slot = plh_slot{};
  return guarded([&]() -> int {
    r->held = false;
    auto got = r->r->acquire(deadline_of(timeout_ms));
    switch (got.status) {
      case plh::shm::AcquireStatus::slot:
        r->held = true;
        fill_slot(slot, got.view, got.view.data);
        return PLH_OK;
      case plh::shm::AcquireStatus::ended:
        slot->ended = 1;
        return PLH_OK;
      case plh::shm::AcquireStatus::timeout:
        return fail(PLH_TIMEOUT, "no slot in segment '" + r->r->name() + "' within " + std::to_string(timeout_ms) + " ms");
      case plh::shm::AcquireStatus::stopped:
        break;
    }
    return fail(PLH_STOPPED, "stopped by a signal");
  });
}

int plh_shm_reader_release(plh_shm_reader* r, int* intact) {
  PLH_REQUIRE(r);
  return guarded([&]() -> int {
    bool ok = true;
    if (r->held) ok = r->r->release();
    r->held = false;
    if (intact) *intact = ok ? 1 : 0;
    return PLH_OK;
  });
}

int plh_shm_reader_read_many(plh_shm_reader* r, int64_t timeout_ms, void* buf, size_t buf_size, plh_slot* slots,
                             size_t max, size_t* got, int* ended) {
  PLH_REQUIRE(r);
  PLH_REQUIRE(got);
  *got = 0;
  if (ended) *ended = 0;
  if (max == 0) return fail(PLH_USAGE, "plh_shm_reader_read_many: max must be >= 1");
  PLH_REQUIRE(slots);
  if (buf == nullptr && buf_size > 0) return null_arg(__func__, "buf");
  return guarded([&]() -> int {
    auto* dst = static_cast<unsigned char*>(buf);
    std::size_t used = 0, n = 0;
    // A payload that does not fit is kept for the next call: try_acquire would consume
    // it, so every slot after the first is taken only when the largest payload fits.
    const std::size_t slot_size = r->r->geometry().slot_size;
    if (buf_size < slot_size)
      return fail(PLH_USAGE, "plh_shm_reader_read_many: buf_size " + std::to_string(buf_size) +
                                 " is smaller than slot_size " + std::to_string(slot_size));
    r->held = false;
    auto first = r->r->acquire(deadline_of(timeout_ms));
    if (first.status == plh::shm::AcquireStatus::ended) {
      if (ended) *ended = 1;
      return PLH_OK;
    }
    if (first.status == plh::shm::AcquireStatus::timeout)
      return fail(PLH_TIMEOUT, "no slot in segment '" + r->r->name() + "' within " + std::to_string(timeout_ms) + " ms");
    if (first.status == plh::shm::AcquireStatus::stopped) return fail(PLH_STOPPED, "stopped by a signal");
    std::optional<plh::shm::SlotView> v = first.view;
    while (v) {
      std::memcpy(dst + used, v->data, v->meta.size);
      fill_slot(&slots[n], *v, dst + used);
      used += v->meta.size;
      ++n;
      r->r->release();
      *got = n;
      if (n == max || buf_size - used < slot_size) break;
      v = r->r->try_acquire();
    }
    return PLH_OK;
  });
}

int plh_shm_reader_geometry(const plh_shm_reader* r, uint32_t* slots, uint32_t* slot_size) {
  PLH_REQUIRE(r);
  return guarded([&]() -> int {
    if (slots) *slots = r->r->geometry().slots;
    if (slot_size) *slot_size = r->r->geometry().slot_size;
    return PLH_OK;
  });
}

int plh_shm_reader_skipped(const plh_shm_reader* r, uint64_t* skipped) {
  PLH_REQUIRE(r);
  PLH_REQUIRE(skipped);
  return guarded([&]() -> int {
    *skipped = r->r->skipped();
    return PLH_OK;
  });
}

int plh_shm_reader_close(plh_shm_reader* r) {
  if (!r) return PLH_OK;
  return guarded([&]() -> int {
    delete r;
    return PLH_OK;
  });
}

// ---- publisher ---------------------------------------------------------------------------

int plh_publisher_open(plh_publisher** out, const char* channel, const char* pattern, const char* broker,
                       const char* schema) {
  PLH_REQUIRE(out);
  *out = nullptr;
  PLH_REQUIRE(channel);
  return guarded([&]() -> int {
    plh::validate_channel_name(channel);
    const plh::Pattern pat = plh::parse_pattern(pattern ? pattern : "pubsub");
    const plh::SchemaRef sref = plh::parse_schema(schema ? schema : "");
    auto cfg = broker_config(broker);
    auto h = std::make_unique<plh_publisher>();
    h->channel = channel;
    plh::PublisherConfig pc;
    pc.pattern = pat;
    if (cfg.server_key) {
      pc.curve = plh::generate_curve_keypair();  // the data plane is encrypted too, as plh-pub's
      pc.admission = true;                       // ... and admits the keys the broker admits
    }
    h->pub = std::make_unique<plh::Publisher>(pc);
    h->client = std::make_unique<plh::BrokerClient>(cfg);
    h->metrics = std::make_shared<plh::ChannelMetrics>();
    plh::ChannelRegistration reg;
    reg.channel = channel;
    reg.pattern = std::string(plh::pattern_name(pat));
    reg.endpoint = h->pub->endpoint();
    reg.schema_hash = sref.hash;
    reg.schema_version = sref.version;
    if (!sref.text.empty()) reg.metadata["schema"] = sref.text;
    reg.metadata["format"] = "raw";
    reg.metadata["plh_stream"] = h->pub->stream();
    if (pc.curve) reg.pubkey = pc.curve->public_key;
    h->pub->set_allowed_keys(plh::allowed_keys_from_ack(h->client->register_channel(reg, h->metrics)));
    *out = h.release();
    return PLH_OK;
  });
}

int plh_publisher_endpoint(const plh_publisher* p, const char** endpoint) {
  PLH_REQUIRE(p);
  PLH_REQUIRE(endpoint);
  *endpoint = p->pub->endpoint().c_str();
  return PLH_OK;
}

int plh_publisher_wait_subscribers(plh_publisher* p, int n, int64_t timeout_ms) {
  PLH_REQUIRE(p);
  if (n < 0) return fail(PLH_USAGE, "plh_publisher_wait_subscribers: n must be >= 0");
  return guarded([&]() -> int {
    const auto deadline = steady_deadline(timeout_ms);
    if (!p->pub->wait_for_consumers(n, deadline))
      return fail(PLH_TIMEOUT, "fewer than " + std::to_string(n) + " subscribers on '" + p->channel + "' within " +
                                   std::to_string(timeout_ms) + " ms");
    return PLH_OK;
  });
}

int plh_publisher_send(plh_publisher* p, const void* data, size_t size, int64_t timeout_ms, uint64_t* seq) {
  PLH_REQUIRE(p);
  if (data == nullptr && size > 0) return null_arg(__func__, "data");
  if (size > 0xFFFFFFFFu) return fail(PLH_USAGE, "plh_publisher_send: message over 4 GiB - 1");
  return guarded([&]() -> int {
    const std::string frame = plh::wire::encode_single(
        p->next_seq, plh::realtime_ns(), std::string_view(static_cast<const char*>(data), size), p->pub->stream());
    if (p->pub->pattern() == plh::Pattern::pipeline && timeout_ms >= 0) {
      // The pipeline waits for a worker with room; a timer fd bounds that wait.
      Fd timer(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
      if (timer.fd < 0) throw plh::Error(plh::ExitCode::failure, "timerfd_create: " + plh::errno_text(errno));
      itimerspec its{};
      its.it_value.tv_sec = timeout_ms / 1000;
      its.it_value.tv_nsec = (timeout_ms % 1000) * 1000000L + (timeout_ms == 0 ? 1 : 0);
      ::timerfd_settime(timer.fd, 0, &its, nullptr);
      if (!p->pub->send(frame, {timer.fd, -1}))
        return fail(PLH_TIMEOUT, "no worker of '" + p->channel + "' had room within " + std::to_string(timeout_ms) +
                                     " ms (the message was not sent)");
    } else {
      p->pub->send(frame);
    }
    if (seq) *seq = p->next_seq;
    ++p->next_seq;
    p->metrics->messages.fetch_add(1, std::memory_order_relaxed);
    p->metrics->bytes.fetch_add(size, std::memory_order_relaxed);
    return PLH_OK;
  });
}

int plh_publisher_close(plh_publisher* p) {
  if (!p) return PLH_OK;
  const int rc = guarded([&]() -> int {
    p->pub->end_of_stream(p->next_seq);
    p->client->deregister_channel(p->channel, p->next_seq - 1);
    return PLH_OK;
  });
  const std::string err = t_error;
  guarded([&]() -> int {
    delete p;
    return PLH_OK;
  });
  if (rc != PLH_OK) t_error = err;
  return rc;
}

// ---- subscriber --------------------------------------------------------------------------

int plh_subscriber_open(plh_subscriber** out, const char* channel, const char* broker, int wait, const char* schema,
                        int64_t timeout_ms) {
  PLH_REQUIRE(out);
  *out = nullptr;
  PLH_REQUIRE(channel);
  return guarded([&]() -> int {
    plh::validate_channel_name(channel);
    const plh::SchemaRef sref = plh::parse_schema(schema ? schema : "");
    auto h = std::make_unique<plh_subscriber>();
    h->channel = channel;
    h->client = std::make_unique<plh::BrokerClient>(broker_config(broker));
    h->metrics = std::make_shared<plh::ChannelMetrics>();
    const auto deadline = steady_deadline(timeout_ms);
    nlohmann::json info;
    for (auto pause = std::chrono::milliseconds(5);; pause = std::min(pause * 2, std::chrono::milliseconds(100))) {
      try {
        info = h->client->register_consumer(channel, sref.text.empty() ? std::nullopt : std::optional(sref.hash),
                                            h->metrics);
        break;
      } catch (const plh::NotFoundError&) {
        if (!wait) throw plh::NotFoundError(std::string("channel '") + channel + "' not found");
        if (std::chrono::steady_clock::now() + pause > deadline)
          return fail(PLH_TIMEOUT, std::string("channel '") + channel + "' did not appear within " +
                                       std::to_string(timeout_ms) + " ms");
        std::this_thread::sleep_for(pause);  // polling the broker (no notification exists for "appeared")
      }
    }
    if (info.value("transport", std::string("zmq")) != "zmq")
      return fail(PLH_FAILURE, std::string("channel '") + channel + "' is not a ZeroMQ channel (read it with ShmReader)");
    const std::string pattern = info.value("pattern", std::string("pubsub"));
    if (pattern != "pubsub" && pattern != "pipeline")
      return fail(PLH_FAILURE, std::string("channel '") + channel + "' uses pattern '" + plh::printable(pattern) +
                                   "' (a subscriber reads pubsub and pipeline channels)");
    if (!info.contains("endpoint") || !info["endpoint"].is_string() || info["endpoint"].get<std::string>().empty())
      return fail(PLH_FAILURE, std::string("broker gave no endpoint for channel '") + channel + "'");
    plh::SubscriberConfig sc;
    sc.endpoint = info["endpoint"].get<std::string>();
    sc.pattern = plh::parse_pattern(pattern);
    if (info.contains("pubkey") && info["pubkey"].is_string() && !info["pubkey"].get<std::string>().empty())
      sc.server_key = info["pubkey"].get<std::string>();
    if (info.contains("metadata") && info["metadata"].is_object()) {
      const auto& md = info["metadata"];
      if (auto it = md.find("plh_stream");
          it != md.end() && it->is_number_unsigned() && it->get<std::uint64_t>() <= 0xFFFFFFFFu)
        sc.expected_stream = static_cast<std::uint32_t>(it->get<std::uint64_t>());
    }
    h->sub = std::make_unique<plh::Subscriber>(sc);
    h->sub->set_label(channel);
    *out = h.release();
    return PLH_OK;
  });
}

int plh_subscriber_recv(plh_subscriber* s, int64_t timeout_ms, plh_message* msg) {
  PLH_REQUIRE(s);
  PLH_REQUIRE(msg);
  *msg = plh_message{};
  return guarded([&]() -> int {
    if (int rc = sub_wait_message(s, timeout_ms); rc != PLH_OK) return rc;
    if (!sub_peek(s)) {
      msg->ended = 1;
      msg->gaps = s->gaps;
      return PLH_OK;
    }
    sub_take(s, msg);
    return PLH_OK;
  });
}

int plh_subscriber_recv_many(plh_subscriber* s, int64_t timeout_ms, void* buf, size_t buf_size, uint64_t* sizes,
                             uint64_t* seqs, int64_t* ts_ns, size_t max, size_t* got, int* ended) {
  PLH_REQUIRE(s);
  PLH_REQUIRE(got);
  *got = 0;
  if (ended) *ended = 0;
  PLH_REQUIRE(sizes);
  if (max == 0) return fail(PLH_USAGE, "plh_subscriber_recv_many: max must be >= 1");
  if (buf == nullptr && buf_size > 0) return null_arg(__func__, "buf");
  return guarded([&]() -> int {
    if (int rc = sub_wait_message(s, timeout_ms); rc != PLH_OK) return rc;
    auto* dst = static_cast<unsigned char*>(buf);
    std::size_t used = 0, n = 0;
    plh_message m;
    while (n < max) {
      const std::string_view* next = sub_peek(s);
      if (!next) break;
      if (next->size() > buf_size - used) {
        if (n == 0) {
          sizes[0] = next->size();  // what buf must hold; the message stays for the next call
          return fail(PLH_USAGE, "plh_subscriber_recv_many: a message of " + std::to_string(next->size()) +
                                     " bytes does not fit buf_size " + std::to_string(buf_size));
        }
        break;
      }
      sub_take(s, &m);
      if (m.size) std::memcpy(dst + used, m.data, m.size);
      used += m.size;
      if (seqs) seqs[n] = m.seq;
      if (ts_ns) ts_ns[n] = m.ts_ns;
      sizes[n++] = m.size;
    }
    *got = n;
    if (ended && n == 0 && s->ended) *ended = 1;
    return PLH_OK;
  });
}

int plh_subscriber_gaps(const plh_subscriber* s, uint64_t* gaps) {
  PLH_REQUIRE(s);
  PLH_REQUIRE(gaps);
  *gaps = s->sub ? s->sub->stats().gaps : s->gaps;
  return PLH_OK;
}

int plh_subscriber_close(plh_subscriber* s) {
  if (!s) return PLH_OK;
  return guarded([&]() -> int {
    if (!s->ended) {
      try {
        s->client->deregister_consumer(s->channel);
      } catch (const plh::Error&) {
        // The broker may be gone; the registration times out there.
      }
    }
    delete s;
    return PLH_OK;
  });
}

}  // extern "C"


struct plh_requester {
  struct Server {
    std::string name, endpoint;
    void* sock = nullptr;
    void* mon = nullptr;
    bool up = false, listed = true;
    std::uint64_t last_used = 0;
  };
  ZmqSockets z;  // first member: destroyed last
  std::unique_ptr<plh::BrokerClient> client;
  std::optional<plh::CurveKeypair> mine;
  std::string service;
  std::vector<std::unique_ptr<Server>> servers;
  steady::time_point next_refresh{};
  std::uint64_t id_base = 0, next_id = 1, tick = 0;
  // The request in flight.
  bool inflight = false;
  std::uint64_t id = 0;
  std::string body;
  int server = -1;      // where it was sent; -1: waiting for a server
  std::vector<int> tried;  // servers that answered busy/unavailable
  std::string reply;

  void add(const std::string& name, const std::string& endpoint, const std::optional<std::string>& key) {
    auto s = std::make_unique<Server>();
    s->name = name;
    s->endpoint = endpoint;
    s->sock = z.open(ZMQ_DEALER);
    zmq_set_int(s->sock, ZMQ_SNDHWM, 1000);
    const std::int64_t maxmsg = static_cast<std::int64_t>(kMaxMessage) + 4096;
    zmq_set(s->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    if (key) {
      if (!plh::is_z85_key(*key)) throw plh::Error(plh::ExitCode::failure, "server " + plh::printable(name) + " registered a malformed key");
      if (!mine) mine = plh::client_keypair_from_env();
      zmq_set_str(s->sock, ZMQ_CURVE_SERVERKEY, *key);
      zmq_set_str(s->sock, ZMQ_CURVE_PUBLICKEY, mine->public_key);
      zmq_set_str(s->sock, ZMQ_CURVE_SECRETKEY, mine->secret_key);
    }
    s->mon = plh::start_monitor(z.ctx, s->sock, s.get(), "capi-req",
                                ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_DISCONNECTED);
    z.adopt(s->mon);
    if (zmq_connect(s->sock, endpoint.c_str()) != 0)
      throw plh::Error(plh::ExitCode::failure,
                       "cannot connect to " + plh::printable(endpoint, 80) + ": " + zmq_strerror(zmq_errno()));
    servers.push_back(std::move(s));
  }

  // The broker's entries for the service (LIST_REQ), as plh-req reads them.
  void refresh() {
    next_refresh = steady::now() + std::chrono::seconds(1);
    const nlohmann::json ack = client->request("LIST_REQ", nlohmann::json::object());
    const auto it = ack.find("channels");
    if (it == ack.end() || !it->is_array()) throw plh::Error(plh::ExitCode::failure, "malformed LIST_ACK from the broker");
    for (auto& s : servers) s->listed = false;
    for (const auto& ch : *it) {
      if (!ch.is_object() || ch.value("pattern", std::string()) != "reqrep") continue;
      const auto md = ch.find("metadata");
      if (md == ch.end() || !md->is_object()) continue;
      const auto svc = md->find("service");
      if (svc == md->end() || !svc->is_string() || svc->get<std::string>() != service) continue;
      const auto name = ch.find("channel");
      const auto ep = ch.find("endpoint");
      if (name == ch.end() || !name->is_string() || ep == ch.end() || !ep->is_string()) continue;
      std::optional<std::string> key;
      if (auto k = ch.find("pubkey"); k != ch.end() && k->is_string() && !k->get<std::string>().empty())
        key = k->get<std::string>();
      const std::string n = name->get<std::string>();
      auto known = std::find_if(servers.begin(), servers.end(), [&](const auto& s) { return s->name == n; });
      if (known == servers.end()) add(n, ep->get<std::string>(), key);
      else (*known)->listed = true;
    }
    // Waiting for a server to appear: ask again soon.
    if (servers.empty()) next_refresh = steady::now() + std::chrono::milliseconds(200);
    // Servers gone from the list are dropped unless the request in flight is there.
    for (int i = static_cast<int>(servers.size()) - 1; i >= 0; --i) {
      auto& s = *servers[static_cast<std::size_t>(i)];
      if (s.listed || (inflight && server == i)) continue;
      z.close(s.mon);
      z.close(s.sock);
      servers.erase(servers.begin() + i);
      if (inflight && server > i) --server;
      tried.clear();
    }
  }

  int pick() const {
    int best = -1;
    for (int i = 0; i < static_cast<int>(servers.size()); ++i) {
      const Server& s = *servers[static_cast<std::size_t>(i)];
      if (!s.up || !s.listed || std::find(tried.begin(), tried.end(), i) != tried.end()) continue;
      if (best < 0 || s.last_used < servers[static_cast<std::size_t>(best)]->last_used) best = i;
    }
    return best;
  }
};

struct plh_replier {
  struct Held {
    std::string peer, body;
    std::uint64_t id = 0;
  };
  ZmqSockets z;
  void* router = nullptr;
  std::unique_ptr<plh::BrokerClient> client;
  std::shared_ptr<plh::ChannelMetrics> metrics = std::make_shared<plh::ChannelMetrics>();
  std::string service, name, endpoint;
  std::uint32_t concurrency = 1;
  std::map<std::uint64_t, Held> held;  // by token
  std::uint64_t next_token = 1;

  void answer(const std::string& peer, std::uint64_t id, std::uint32_t status, std::string_view body) {
    rr::ReplyHeader h;
    h.status = status;
    h.id = id;
    h.capacity = concurrency;
    // A requester that went away is not an error (the ROUTER drops it).
    send_message(router, {peer, std::string_view(), rr::encode_reply_header(h), body});
    if (status == rr::kStatusOk) {
      metrics->messages.fetch_add(1, std::memory_order_relaxed);
      metrics->bytes.fetch_add(body.size(), std::memory_order_relaxed);
    } else {
      metrics->gaps.fetch_add(1, std::memory_order_relaxed);
    }
  }
};

namespace {

// The error reply of srv as the requester reports it.
int error_reply(const plh_requester::Server& srv, std::uint32_t status, const std::string& body) {
  return fail(PLH_FAILURE, "server " + srv.name + ": " + rr::status_text(status) + ": " + plh::printable(body, 512));
}

// The requester's wait for the reply to the request in flight.
int requester_wait(plh_requester* r, int64_t timeout_ms, const void** reply, size_t* reply_size, uint32_t* status) {
  const auto deadline = steady_deadline(timeout_ms);
  std::vector<std::string> parts;
  std::vector<zmq_pollitem_t> items;
  for (;;) {
    if (r->client && steady::now() >= r->next_refresh) {
      try {
        r->refresh();
      } catch (const plh::Error& e) {
        spdlog::warn("cannot list the servers of '{}': {}", r->service, e.what());  // the known ones still serve
      }
    }
    // Replies first: the answer may be there already.
    if (r->server >= 0) {
      auto& srv = *r->servers[static_cast<std::size_t>(r->server)];
      while (recv_message(srv.sock, parts, 3)) {
        rr::ReplyHeader h;
        if (parts.size() != 3 || !parts[0].empty() || !rr::decode_reply_header(parts[1], h) || h.id != r->id)
          continue;  // malformed, or the late reply to an abandoned request
        if (status) *status = h.status;
        if (h.status == rr::kStatusUnavailable || h.status == rr::kStatusBusy) {
          // It did not run: another server may take it.
          r->tried.push_back(r->server);
          r->server = -1;
          if (r->pick() >= 0) break;
          r->inflight = false;
          return error_reply(srv, h.status, parts[2]);
        }
        r->inflight = false;
        if (h.status != rr::kStatusOk) return error_reply(srv, h.status, parts[2]);
        r->reply = std::move(parts[2]);
        *reply = r->reply.empty() ? nullptr : r->reply.data();
        *reply_size = r->reply.size();
        return PLH_OK;
      }
    }
    // Connection events: a server is up, or gone with the request.
    for (std::size_t i = 0; i < r->servers.size(); ++i) {
      auto& srv = *r->servers[i];
      std::uint16_t ev = 0;
      std::uint32_t val = 0;
      while (plh::next_monitor_event(srv.mon, ev, val)) {
        if (ev == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
          srv.up = true;
        } else if (ev == ZMQ_EVENT_DISCONNECTED) {
          srv.up = false;
          if (r->server == static_cast<int>(i)) {
            r->inflight = false;
            return fail(PLH_FAILURE, "server " + srv.name + " went away with the request in flight");
          }
        }
      }
    }
    if (r->server < 0) {
      if (const int s = r->pick(); s >= 0) {
        auto& srv = *r->servers[static_cast<std::size_t>(s)];
        rr::RequestHeader h;
        h.id = r->id;
        h.flags = r->tried.empty() ? 0 : rr::kFlagRetry;
        if (send_message(srv.sock, {std::string_view(), rr::encode_request_header(h), r->body})) {
          r->server = s;
          srv.last_used = ++r->tick;
        } else {
          srv.up = false;  // until its monitor says otherwise
        }
      }
    }
    if (steady::now() >= deadline) {
      if (r->server >= 0)
        return fail(PLH_TIMEOUT, "no reply from " + r->servers[static_cast<std::size_t>(r->server)]->name + " within " +
                                     std::to_string(timeout_ms) + " ms");
      return fail(PLH_TIMEOUT, "no server of '" + r->service + "' " +
                                   (r->servers.empty() ? "appeared" : "was reachable") + " within " +
                                   std::to_string(timeout_ms) + " ms");
    }
    items.clear();
    for (auto& srv : r->servers) items.push_back({srv->mon, 0, ZMQ_POLLIN, 0});
    if (r->server >= 0) items.push_back({r->servers[static_cast<std::size_t>(r->server)]->sock, 0, ZMQ_POLLIN, 0});
    long ms = poll_ms(deadline, 1000);
    if (r->client) ms = std::min(ms, poll_ms(r->next_refresh, 1000));
    if (zmq_poll(items.data(), static_cast<int>(items.size()), ms) < 0 && zmq_errno() != EINTR)
      plh::throw_zmq_error("poll failed");
  }
}

int replier_answer(const char* fn, plh_replier* r, uint64_t token, uint32_t status, std::string_view body) {
  return guarded([&]() -> int {
    auto it = r->held.find(token);
    if (it == r->held.end())
      return fail(PLH_USAGE, std::string(fn) + ": no request with token " + std::to_string(token) + " is waiting for a reply");
    r->answer(it->second.peer, it->second.id, status, body);
    r->held.erase(it);
    return PLH_OK;
  });
}
}  // namespace

extern "C" {

// ---- requester ---------------------------------------------------------------------------

int plh_requester_open(plh_requester** out, const char* service, const char* broker, int wait) {
  PLH_REQUIRE(out);
  *out = nullptr;
  PLH_REQUIRE(service);
  return guarded([&]() -> int {
    auto h = std::make_unique<plh_requester>();
    h->service = service;
    std::random_device rd;
    h->id_base = ((std::uint64_t(rd()) << 32) ^ rd()) & 0x7FFFFFFF00000000ull;
    if (is_endpoint(h->service)) {
      h->add(h->service, h->service, std::nullopt);
    } else {
      plh::validate_channel_name(service);
      h->client = std::make_unique<plh::BrokerClient>(broker_config(broker));
      h->refresh();
      if (h->servers.empty() && !wait) throw plh::NotFoundError("no such service '" + h->service + "'");
    }
    *out = h.release();
    return PLH_OK;
  });
}

int plh_requester_send(plh_requester* r, const void* data, size_t size) {
  PLH_REQUIRE(r);
  if (data == nullptr && size > 0) return null_arg(__func__, "data");
  if (size > kMaxMessage)
    return fail(PLH_USAGE, "plh_requester_send: a request of " + std::to_string(size) + " bytes is over the " +
                               std::to_string(kMaxMessage) + " bytes a server takes");
  return guarded([&]() -> int {
    r->body.assign(static_cast<const char*>(data), size);
    r->id = r->id_base + r->next_id++;
    r->inflight = true;
    r->server = -1;
    r->tried.clear();
    return PLH_OK;
  });
}

int plh_requester_recv(plh_requester* r, int64_t timeout_ms, const void** reply, size_t* reply_size, uint32_t* status) {
  PLH_REQUIRE(r);
  PLH_REQUIRE(reply);
  PLH_REQUIRE(reply_size);
  *reply = nullptr;
  *reply_size = 0;
  if (status) *status = 0;
  return guarded([&]() -> int {
    if (!r->inflight) return fail(PLH_USAGE, "plh_requester_recv: no request in flight (call plh_requester_send first)");
    return requester_wait(r, timeout_ms, reply, reply_size, status);
  });
}

int plh_requester_request(plh_requester* r, const void* data, size_t size, int64_t timeout_ms, const void** reply,
                          size_t* reply_size, uint32_t* status) {
  PLH_REQUIRE(r);
  PLH_REQUIRE(reply);
  PLH_REQUIRE(reply_size);
  if (int rc = plh_requester_send(r, data, size); rc != PLH_OK) return rc;
  return plh_requester_recv(r, timeout_ms, reply, reply_size, status);
}

int plh_requester_close(plh_requester* r) {
  if (!r) return PLH_OK;
  return guarded([&]() -> int {
    delete r;
    return PLH_OK;
  });
}

// ---- replier -----------------------------------------------------------------------------

int plh_replier_open(plh_replier** out, const char* service, const char* broker, const char* bind, int concurrency) {
  PLH_REQUIRE(out);
  *out = nullptr;
  if (concurrency < 1 || concurrency > 100000) return fail(PLH_USAGE, "plh_replier_open: concurrency must be 1..100000");
  return guarded([&]() -> int {
    auto h = std::make_unique<plh_replier>();
    h->concurrency = static_cast<std::uint32_t>(concurrency);
    std::optional<plh::BrokerClientConfig> cfg;
    if (service) {
      plh::validate_channel_name(service);
      h->service = service;
      cfg = broker_config(broker);
    }
    const bool local = !cfg || plh::endpoint_is_local(cfg->endpoint);
    h->router = h->z.open(ZMQ_ROUTER);
    zmq_set_int(h->router, ZMQ_SNDHWM, 100000);
    zmq_set_int(h->router, ZMQ_RCVHWM, 100000);
    const std::int64_t maxmsg = static_cast<std::int64_t>(kMaxMessage) + 4096;
    zmq_set(h->router, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    std::optional<plh::CurveKeypair> curve;
    if (cfg && cfg->server_key) {
      curve = plh::generate_curve_keypair();
      zmq_set_int(h->router, ZMQ_CURVE_SERVER, 1);
      zmq_set_str(h->router, ZMQ_CURVE_SECRETKEY, curve->secret_key);
    }
    const std::string where = bind ? bind : local ? "tcp://127.0.0.1:0" : "tcp://*:0";
    if (zmq_bind(h->router, where.c_str()) != 0)
      throw plh::Error(plh::ExitCode::failure, "cannot bind " + plh::printable(where, 80) + ": " + zmq_strerror(zmq_errno()));
    char bound[256] = {};
    std::size_t bl = sizeof bound;
    zmq_getsockopt(h->router, ZMQ_LAST_ENDPOINT, bound, &bl);
    const char* advertise = std::getenv("PLH_ADVERTISE");
    h->endpoint = plh::advertised_endpoint(bound, advertise ? advertise : "", cfg ? cfg->endpoint : "");
    if (cfg) {
      h->client = std::make_unique<plh::BrokerClient>(*cfg);
      h->name = h->service + ".s" + std::to_string(::getpid()) + "-" + random_hex(6);
      plh::ChannelRegistration reg;
      reg.channel = h->name;
      reg.pattern = "reqrep";
      reg.endpoint = h->endpoint;
      reg.metadata["service"] = h->service;
      reg.metadata["concurrency"] = concurrency;
      reg.metadata["mode"] = "library";
      if (curve) reg.pubkey = curve->public_key;
      h->client->register_channel(reg, h->metrics);
    }
    *out = h.release();
    return PLH_OK;
  });
}

int plh_replier_endpoint(const plh_replier* r, const char** endpoint) {
  PLH_REQUIRE(r);
  PLH_REQUIRE(endpoint);
  *endpoint = r->endpoint.c_str();
  return PLH_OK;
}

int plh_replier_recv(plh_replier* r, int64_t timeout_ms, plh_request* req) {
  PLH_REQUIRE(r);
  PLH_REQUIRE(req);
  *req = plh_request{};
  return guarded([&]() -> int {
    const auto deadline = steady_deadline(timeout_ms);
    std::vector<std::string> parts;
    for (;;) {
      while (recv_message(r->router, parts, 4)) {
        // [peer] [""] [header] [body], or [peer] [""] [body] from a plain REQ client
        if (parts.size() < 3 || parts.size() > 4 || !parts[1].empty()) continue;  // malformed: dropped
        plh_replier::Held held;
        held.peer = std::move(parts[0]);
        std::uint32_t flags = 0;
        if (parts.size() == 4) {
          rr::RequestHeader hdr;
          if (!rr::decode_request_header(parts[2], hdr)) {
            r->answer(held.peer, 0, rr::kStatusBadRequest, "bad request header");
            continue;
          }
          held.id = hdr.id;
          flags = hdr.flags;
        }
        held.body = std::move(parts.back());
        if (held.body.size() > kMaxMessage) {
          r->answer(held.peer, held.id, rr::kStatusBadRequest, "request too large");
          continue;
        }
        const std::uint64_t token = r->next_token++;
        auto& h = r->held.emplace(token, std::move(held)).first->second;
        req->data = h.body.empty() ? nullptr : h.body.data();
        req->size = h.body.size();
        req->token = token;
        req->id = h.id;
        req->flags = flags;
        return PLH_OK;
      }
      if (steady::now() >= deadline)
        return fail(PLH_TIMEOUT, "no request within " + std::to_string(timeout_ms) + " ms");
      zmq_pollitem_t item{r->router, 0, ZMQ_POLLIN, 0};
      if (zmq_poll(&item, 1, poll_ms(deadline, 1000)) < 0 && zmq_errno() != EINTR) plh::throw_zmq_error("poll failed");
    }
  });
}


int plh_replier_send(plh_replier* r, uint64_t token, const void* data, size_t size) {
  PLH_REQUIRE(r);
  if (data == nullptr && size > 0) return null_arg(__func__, "data");
  if (size > kMaxMessage)
    return fail(PLH_USAGE, "plh_replier_send: a reply of " + std::to_string(size) + " bytes is over " + std::to_string(kMaxMessage));
  return replier_answer(__func__, r, token, rr::kStatusOk, std::string_view(static_cast<const char*>(data), size));
}

int plh_replier_send_error(plh_replier* r, uint64_t token, uint32_t status, const char* message) {
  PLH_REQUIRE(r);
  if (status == 0) return fail(PLH_USAGE, "plh_replier_send_error: status must not be 0 (use plh_replier_send)");
  std::string_view msg = message ? message : "";
  msg = msg.substr(0, std::min(msg.find('\n'), rr::kMaxErrorText));
  return replier_answer(__func__, r, token, status, msg);
}

int plh_replier_close(plh_replier* r) {
  if (!r) return PLH_OK;
  const int rc = guarded([&]() -> int {
    for (auto& [token, h] : r->held) r->answer(h.peer, h.id, rr::kStatusUnavailable, "service stopping");
    r->held.clear();
    if (r->client) r->client->deregister_channel(r->name);
    return PLH_OK;
  });
  const std::string err = t_error;
  guarded([&]() -> int {
    delete r;
    return PLH_OK;
  });
  if (rc != PLH_OK) t_error = err;
  return rc;
}

// ---- broker queries ----------------------------------------------------------------------

int plh_broker_ping(const char* broker, char** json) {
  return ctl_json(__func__, json, [&](std::FILE* out) { return plh::ctl::ping(broker_config(broker), true, out); });
}

int plh_broker_list(const char* broker, char** json) {
  return ctl_json(__func__, json, [&](std::FILE* out) { return plh::ctl::list(broker_config(broker), true, out); });
}

int plh_broker_info(const char* broker, const char* channel, char** json) {
  if (channel == nullptr) {
    if (json) *json = nullptr;
    return null_arg(__func__, "channel");
  }
  return ctl_json(__func__, json,
                  [&](std::FILE* out) { return plh::ctl::info(broker_config(broker), channel, true, out); });
}

}  // extern "C"
