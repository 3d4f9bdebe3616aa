// The C API (plh/plh.h) over the C++ library. Every entry point catches everything, so
// no exception crosses the C boundary: a failure becomes the SPEC exit code plus a
// thread-local message (plh_last_error).
#include "plh/plh.h"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <chrono>
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
#include "plh/core/cli.hpp"
#include "plh/core/error.hpp"
#include "plh/core/text.hpp"
#include "plh/data/data_plane.hpp"
#include "plh/data/pubsub.hpp"
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

int plh_publisher_open(plh_publisher** out, const char* channel, const char* broker, const char* schema) {
  PLH_REQUIRE(out);
  *out = nullptr;
  PLH_REQUIRE(channel);
  return guarded([&]() -> int {
    plh::validate_channel_name(channel);
    const plh::SchemaRef sref = plh::parse_schema(schema ? schema : "");
    auto cfg = broker_config(broker);
    if (cfg.server_key)
      return fail(PLH_USAGE, "plh_publisher_open: a CURVE broker (PLH_BROKER_KEY) is not supported by the C API yet");
    auto h = std::make_unique<plh_publisher>();
    h->channel = channel;
    plh::PublisherConfig pc;
    h->pub = std::make_unique<plh::Publisher>(pc);
    h->client = std::make_unique<plh::BrokerClient>(cfg);
    h->metrics = std::make_shared<plh::ChannelMetrics>();
    plh::ChannelRegistration reg;
    reg.channel = channel;
    reg.pattern = "pubsub";
    reg.endpoint = h->pub->endpoint();
    reg.schema_hash = sref.hash;
    reg.schema_version = sref.version;
    if (!sref.text.empty()) reg.metadata["schema"] = sref.text;
    reg.metadata["format"] = "raw";
    reg.metadata["plh_stream"] = h->pub->stream();
    h->client->register_channel(reg, h->metrics);
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
    const auto deadline = timeout_ms < 0 ? std::chrono::steady_clock::time_point::max()
                                         : std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    if (!p->pub->wait_for_consumers(n, deadline))
      return fail(PLH_TIMEOUT, "fewer than " + std::to_string(n) + " subscribers on '" + p->channel + "' within " +
                                   std::to_string(timeout_ms) + " ms");
    return PLH_OK;
  });
}

int plh_publisher_send(plh_publisher* p, const void* data, size_t size, uint64_t* seq) {
  PLH_REQUIRE(p);
  if (data == nullptr && size > 0) return null_arg(__func__, "data");
  if (size > 0xFFFFFFFFu) return fail(PLH_USAGE, "plh_publisher_send: message over 4 GiB - 1");
  return guarded([&]() -> int {
    const std::string frame = plh::wire::encode_single(
        p->next_seq, plh::realtime_ns(), std::string_view(static_cast<const char*>(data), size), p->pub->stream());
    p->pub->send(frame);
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
    const auto deadline = timeout_ms < 0 ? std::chrono::steady_clock::time_point::max()
                                         : std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
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
    if (info.value("pattern", std::string("pubsub")) != "pubsub")
      return fail(PLH_FAILURE, std::string("channel '") + channel + "' is not a pubsub channel");
    if (!info.contains("endpoint") || !info["endpoint"].is_string() || info["endpoint"].get<std::string>().empty())
      return fail(PLH_FAILURE, std::string("broker gave no endpoint for channel '") + channel + "'");
    plh::SubscriberConfig sc;
    sc.endpoint = info["endpoint"].get<std::string>();
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
    const auto deadline = timeout_ms < 0 ? std::chrono::steady_clock::time_point::max()
                                         : std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    for (;;) {
      if (s->ended) {
        msg->ended = 1;
        msg->gaps = s->gaps;
        return PLH_OK;
      }
      if (s->frame && s->next < s->frame->messages.size()) {
        const auto& m = s->frame->messages[s->next];
        msg->data = m.data();
        msg->size = m.size();
        msg->seq = s->frame->header.seq + s->next;
        msg->ts_ns = s->frame->header.ts_ns;
        msg->gaps = s->sub->stats().gaps;
        ++s->next;
        ++s->delivered;
        s->metrics->messages.fetch_add(1, std::memory_order_relaxed);
        s->metrics->bytes.fetch_add(m.size(), std::memory_order_relaxed);
        s->metrics->gaps.store(msg->gaps, std::memory_order_relaxed);
        return PLH_OK;
      }
      s->frame = s->sub->try_receive();
      s->next = 0;
      if (s->frame) {
        if (s->frame->header.end_of_stream()) {
          // Hanging up after the marker is how a consumer confirms the end to the
          // publisher (which waits for that before it exits, like for plh-sub).
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
        continue;
      }
      (void)s->sub->connection();
      const auto now = std::chrono::steady_clock::now();
      if (now >= deadline)
        return fail(PLH_TIMEOUT, "no message on '" + s->channel + "' within " + std::to_string(timeout_ms) + " ms");
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now);
      s->sub->wait(timeout_ms < 0 ? std::chrono::milliseconds(1000) : std::min(left + std::chrono::milliseconds(1), std::chrono::milliseconds(1000)));
    }
  });
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
