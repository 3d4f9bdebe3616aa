#include "plh/data/bench.hpp"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdlib>
#include <exception>
#include <optional>
#include <thread>
#include <vector>

#include "plh/control/broker_client.hpp"
#include "plh/control/zap.hpp"
#include "plh/core/error.hpp"
#include "plh/core/signals.hpp"
#include "plh/core/text.hpp"
#include "plh/data/data_plane.hpp"
#include "plh/data/pubsub.hpp"
#include "plh/data/wire.hpp"

namespace plh {

namespace {

using clock = std::chrono::steady_clock;
using nlohmann::json;

constexpr std::size_t kBatchBytes = 64 * 1024;  // as plh-pub --batch-size

// What both sides must agree on; sent in the channel's metadata for the sub role.
struct Params {
  std::size_t size = 64;
  std::uint64_t count = 0, latency_count = 0;
  double rate = 1000;
  json to_json() const { return {{"size", size}, {"count", count}, {"latency_count", latency_count}, {"rate", rate}}; }
  static std::optional<Params> from(const json& md) {
    auto it = md.is_object() ? md.find("plh_bench") : md.end();
    if (!md.is_object() || it == md.end() || !it->is_object()) return std::nullopt;
    Params p;
    try {
      p.size = it->at("size").get<std::size_t>();
      p.count = it->at("count").get<std::uint64_t>();
      p.latency_count = it->at("latency_count").get<std::uint64_t>();
      p.rate = it->at("rate").get<double>();
    } catch (const json::exception&) {
      return std::nullopt;
    }
    if (p.size > (64u << 20) || !(p.rate > 0)) return std::nullopt;
    return p;
  }
};

struct PubResult {
  double seconds = 0;  // throughput phase
  std::uint64_t sent = 0;
  int unconfirmed = 0;
};

struct SubResult {
  std::uint64_t received = 0, latency_received = 0, lost = 0;
  double seconds = 0;  // first to last throughput message
  std::vector<std::int64_t> latency_ns;
  bool ended = false;
};

double secs(clock::duration d) { return std::chrono::duration<double>(d).count(); }

// SIGINT/SIGTERM: exit 130/143 with one line.
[[noreturn]] void throw_stopped() {
  throw Error(exit_code_for_stop() == 143 ? ExitCode::sigterm : ExitCode::sigint, "bench interrupted");
}

// Latency phase first (on a quiet connection), then the throughput phase, then the end
// of stream. seq 1..latency_count are latency probes, the rest throughput messages.
PubResult publish(Publisher& pub, const Params& p) {
  const WakeFds wake{stop_fd(), -1};
  std::string payload(p.size, '\0');
  for (std::size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<char>('a' + i % 26);
  std::uint64_t seq = 1;
  const auto interval = std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(1.0 / p.rate));
  const auto lat_start = clock::now();
  for (std::uint64_t i = 0; i < p.latency_count && !stop_requested(); ++i) {
    std::this_thread::sleep_until(lat_start + interval * static_cast<std::int64_t>(i));
    pub.send(wire::encode_single(seq++, realtime_ns(), payload, pub.stream()), wake);
  }
  PubResult r;
  wire::FrameEncoder enc;
  enc.set_stream(pub.stream());
  const std::uint64_t last = p.latency_count + p.count;
  const auto t0 = clock::now();
  while (seq <= last && !stop_requested()) {
    enc.begin(seq, realtime_ns());
    do enc.add(payload);
    while (seq + enc.count() <= last && enc.size() + payload.size() + wire::kRecordPrefix <= kBatchBytes);
    if (!pub.send(enc.finish(), wake)) break;
    seq += enc.count();
    r.sent += enc.count();
  }
  r.seconds = secs(clock::now() - t0);
  r.unconfirmed = pub.end_of_stream(seq, wake).unconfirmed;
  return r;
}

SubResult receive(Subscriber& sub, const Params& p, clock::time_point deadline) {
  SubResult r;
  clock::time_point first{}, last{};
  while (!sub.ended()) {
    if (stop_requested()) throw_stopped();
    const wire::DecodedFrame* f = sub.try_receive();
    if (!f) {
      if (clock::now() >= deadline)
        throw TimeoutError("bench: the publisher's data did not end in time (" + std::to_string(r.received) +
                           " throughput messages received)");
      sub.wait(std::chrono::milliseconds(100), {stop_fd(), -1});
      continue;
    }
    if (f->header.end_of_stream()) break;
    const auto now = clock::now();
    const std::int64_t now_rt = realtime_ns();
    std::uint64_t seq = f->header.seq;
    for (std::size_t i = 0; i < f->messages.size(); ++i, ++seq) {
      if (seq <= p.latency_count) {
        r.latency_ns.push_back(now_rt - f->header.ts_ns);
        ++r.latency_received;
      } else {
        if (r.received == 0) first = now;
        last = now;
        ++r.received;
      }
    }
  }
  r.ended = sub.ended();
  r.seconds = r.received > 1 ? secs(last - first) : 0;
  const std::uint64_t expected = p.latency_count + p.count;
  const std::uint64_t got = r.received + r.latency_received;
  r.lost = got < expected ? expected - got : 0;
  return r;
}

double percentile(std::vector<std::int64_t>& v, double q) {
  if (v.empty()) return 0;
  const std::size_t k = std::min(v.size() - 1, static_cast<std::size_t>(std::ceil(q * static_cast<double>(v.size())) - 1));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return static_cast<double>(v[k]) / 1000.0;
}

std::string rate_text(double per_s) {
  char buf[32];
  if (per_s >= 1e6) std::snprintf(buf, sizeof buf, "%.2f M", per_s / 1e6);
  else if (per_s >= 1e3) std::snprintf(buf, sizeof buf, "%.1f k", per_s / 1e3);
  else std::snprintf(buf, sizeof buf, "%.0f ", per_s);
  return buf;
}

void report(const BenchOptions& o, const Params& p, const std::string& endpoint, const std::optional<PubResult>& pub,
            std::optional<SubResult> sub, std::FILE* out) {
  json j = {{"role", o.role}, {"endpoint", endpoint}, {"size", p.size}, {"count", p.count},
            {"latency_count", p.latency_count}, {"rate", p.rate}};
  if (o.role != "both") j["channel"] = o.channel;
  std::string text = "plh-ctl bench: " + std::to_string(p.count) + " messages of " + std::to_string(p.size) +
                     " bytes over " + endpoint + (o.role == "both" ? " (loopback, no broker)" : " ('" + o.channel + "')") +
                     "\n";
  char line[256];
  auto mbps = [&](std::uint64_t n, double s) { return s > 0 ? static_cast<double>(n * p.size) / s / 1e6 : 0.0; };
  auto per_s = [](std::uint64_t n, double s) { return s > 0 ? static_cast<double>(n) / s : 0.0; };
  if (pub) {
    j["publisher"] = {{"sent", pub->sent}, {"seconds", pub->seconds}, {"messages_per_s", per_s(pub->sent, pub->seconds)},
                      {"mb_per_s", mbps(pub->sent, pub->seconds)}, {"unconfirmed", pub->unconfirmed}};
    std::snprintf(line, sizeof line, "publisher   %smsg/s  %8.1f MB/s  (%" PRIu64 " in %.3f s)\n",
                  rate_text(per_s(pub->sent, pub->seconds)).c_str(), mbps(pub->sent, pub->seconds), pub->sent,
                  pub->seconds);
    text += line;
  }
  if (sub) {
    j["subscriber"] = {{"received", sub->received}, {"lost", sub->lost}, {"seconds", sub->seconds},
                       {"messages_per_s", per_s(sub->received, sub->seconds)},
                       {"mb_per_s", mbps(sub->received, sub->seconds)}};
    std::snprintf(line, sizeof line, "subscriber  %smsg/s  %8.1f MB/s  (%" PRIu64 " in %.3f s), %" PRIu64 " lost\n",
                  rate_text(per_s(sub->received, sub->seconds)).c_str(), mbps(sub->received, sub->seconds),
                  sub->received, sub->seconds, sub->lost);
    text += line;
    auto& v = sub->latency_ns;
    const double p50 = percentile(v, 0.50), p90 = percentile(v, 0.90), p99 = percentile(v, 0.99),
                 mx = v.empty() ? 0.0 : static_cast<double>(*std::max_element(v.begin(), v.end())) / 1000.0;
    j["latency_us"] = {{"count", v.size()}, {"p50", p50}, {"p90", p90}, {"p99", p99}, {"max", mx}};
    std::snprintf(line, sizeof line,
                  "latency     %zu messages at %.0f/s, one way: p50 %.0f us, p90 %.0f us, p99 %.0f us, max %.0f us%s\n",
                  v.size(), p.rate, p50, p90, p99, mx,
                  o.role == "sub" ? " (across hosts this includes the clock offset between them)" : "");
    text += line;
  }
  const std::string s = o.json ? j.dump() + "\n" : text;
  std::fwrite(s.data(), 1, s.size(), out);
  std::fflush(out);
}

Params params_of(const BenchOptions& o) {
  if (o.role != "both" && o.role != "pub" && o.role != "sub")
    throw UsageError("--role must be both, pub or sub, not '" + printable(o.role, 32) + "'");
  if (o.size == 0 || o.size > (16u << 20)) throw UsageError("--size must be 1 byte to 16 MiB");
  if (o.count == 0) throw UsageError("--count must be positive");
  if (!(o.rate > 0) || !std::isfinite(o.rate) || o.rate > 1e6) throw UsageError("--rate must be a positive number up to 1000000");
  if (o.subscribers < 1) throw UsageError("--subscribers must be at least 1");
  if (o.role != "both") validate_channel_name(o.channel);
  Params p;
  p.size = o.size;
  p.count = o.count;
  p.latency_count = o.latency_count;
  p.rate = o.rate;
  return p;
}

}  // namespace

int run_bench(const BenchOptions& o, std::FILE* out) {
  install_stop_handlers();
  const auto deadline = clock::now() + std::chrono::duration_cast<clock::duration>(o.timeout);
  const Params want = params_of(o);

  if (o.role == "both") {
    PublisherConfig pc;
    pc.hwm = 1000;
    Publisher pub(pc);
    SubscriberConfig sc;
    sc.endpoint = pub.endpoint();
    sc.expected_stream = pub.stream();
    std::optional<SubResult> sub_result;
    std::exception_ptr sub_error;
    std::thread sub_thread([&] {
      try {
        Subscriber sub(sc);
        sub_result = receive(sub, want, deadline);
      } catch (...) {
        sub_error = std::current_exception();
      }
    });
    std::optional<PubResult> pub_result;
    try {
      if (!pub.wait_for_consumers(1, deadline, {stop_fd(), -1}))
        throw TimeoutError("bench: the subscriber did not connect in time");
      pub_result = publish(pub, want);
    } catch (...) {
      sub_thread.join();
      throw;
    }
    sub_thread.join();
    if (sub_error) std::rethrow_exception(sub_error);
    report(o, want, pub.endpoint(), pub_result, sub_result, out);
    return sub_result && sub_result->lost == 0 ? 0 : 1;
  }

  auto client = make_broker_client(o.broker);
  if (o.role == "pub") {
    const std::string broker_endpoint = cli::resolve_broker_endpoint(o.broker);
    PublisherConfig pc;
    pc.bind = endpoint_is_local(broker_endpoint) ? "tcp://127.0.0.1:0" : "tcp://*:0";
    pc.route_to = broker_endpoint;
    if (const char* env = std::getenv("PLH_ADVERTISE"); env && *env) pc.advertise = env;
    if (cli::resolve_broker_key(o.broker)) {
      pc.curve = generate_curve_keypair();
      pc.admission = true;
    }
    Publisher pub(pc);
    ChannelRegistration reg;
    reg.channel = o.channel;
    reg.pattern = "pubsub";
    reg.endpoint = pub.endpoint();
    reg.metadata["plh_stream"] = pub.stream();
    reg.metadata["plh_bench"] = want.to_json();
    if (pc.curve) reg.pubkey = pc.curve->public_key;
    pub.set_allowed_keys(allowed_keys_from_ack(client->register_channel(reg)));
    spdlog::info("bench channel '{}' at {}: waiting for {} subscriber(s)", o.channel, pub.endpoint(), o.subscribers);
    std::optional<PubResult> r;
    try {
      if (!pub.wait_for_consumers(o.subscribers, deadline, {stop_fd(), -1})) {
        if (stop_requested()) throw_stopped();
        throw TimeoutError("bench: " + std::to_string(pub.consumers()) + " of " + std::to_string(o.subscribers) +
                           " subscriber(s) joined '" + o.channel + "' in time");
      }
      r = publish(pub, want);
    } catch (...) {
      try {
        client->deregister_channel(o.channel);
      } catch (const Error&) {
      }
      throw;
    }
    client->deregister_channel(o.channel, want.latency_count + want.count);
    report(o, want, pub.endpoint(), r, std::nullopt, out);
    return r->unconfirmed == 0 ? 0 : 1;
  }

  // sub
  json info;
  for (;;) {
    try {
      info = client->discover(o.channel);
      break;
    } catch (const NotFoundError&) {
      if (!o.wait) throw;
      if (clock::now() >= deadline) throw TimeoutError("bench: channel '" + o.channel + "' did not appear in time");
      if (stop_requested()) throw_stopped();
      std::this_thread::sleep_for(std::chrono::milliseconds(50));  // polling the broker, as plh-ctl wait does
    }
  }
  const auto p = Params::from(info.value("metadata", json::object()));
  if (!p) throw NotFoundError("channel '" + o.channel + "' is not a plh-ctl bench channel (run plh-ctl bench --role pub)");
  SubscriberConfig sc;
  sc.endpoint = info.value("endpoint", std::string());
  if (auto k = info.find("pubkey"); k != info.end() && k->is_string() && !k->get<std::string>().empty())
    sc.server_key = k->get<std::string>();
  if (auto md = info.find("metadata"); md != info.end() && md->is_object())
    if (auto s = md->find("plh_stream"); s != md->end() && s->is_number_unsigned() && s->get<std::uint64_t>() <= 0xFFFFFFFFu)
      sc.expected_stream = static_cast<std::uint32_t>(s->get<std::uint64_t>());
  Subscriber sub(sc);
  const SubResult r = receive(sub, *p, deadline);
  report(o, *p, sc.endpoint, std::nullopt, r, out);
  return r.lost == 0 ? 0 : 1;
}

}  // namespace plh
