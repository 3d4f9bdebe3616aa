#include "plh/channel_registry.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <charconv>

#include "plh/protocol.hpp"
#include "plh/text.hpp"

namespace plh {

using nlohmann::json;
namespace p = protocol;
using std::chrono::duration_cast;
using std::chrono::milliseconds;

namespace {

std::int64_t age_ms(SteadyTime now, SteadyTime then) {
  return std::max<std::int64_t>(0, duration_cast<milliseconds>(now - then).count());
}

// The "corr" of a request, echoed in the reply; only strings and numbers are echoed.
const json* corr_of(const json& req) {
  if (!req.is_object()) return nullptr;
  auto it = req.find("corr");
  if (it == req.end()) return nullptr;
  if (it->is_string() || it->is_number()) return &*it;
  return nullptr;
}

}  // namespace

ChannelRegistry::ChannelRegistry(RegistryConfig config)
    : config_(std::move(config)), started_(std::chrono::steady_clock::now()) {}

std::size_t ChannelRegistry::consumer_count() const noexcept {
  std::size_t n = 0;
  for (const auto& [name, ch] : channels_) n += ch.consumers.size();
  return n;
}

void ChannelRegistry::reply(std::string_view id, std::string_view type, json body, const json& req,
                            std::vector<Outbound>& out) const {
  if (const json* corr = corr_of(req)) body["corr"] = *corr;
  out.push_back(Outbound{std::string(id), std::string(type), body.dump(-1, ' ', false, json::error_handler_t::replace)});
}

void ChannelRegistry::reject(std::string_view id, std::string_view code, std::string_view message,
                             std::vector<Outbound>& out) const {
  reply(id, p::kError, p::error_body(code, message), json(), out);
}

void ChannelRegistry::handle(std::string_view id, std::string_view type, std::string_view body, SteadyTime now,
                             std::vector<Outbound>& out) {
  json req = json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (req.is_discarded()) {
    reject(id, p::kInvalidRequest, "body is not valid JSON", out);
    return;
  }
  try {
    if (!req.is_object()) throw p::ProtocolError(p::kInvalidRequest, "body must be a JSON object");
    if (type == p::kDiscReq) on_disc(id, req, out);
    else if (type == p::kHeartbeatReq) on_heartbeat(id, req, now, out);
    else if (type == p::kRegReq) on_reg(id, req, now, out);
    else if (type == p::kDeregReq) on_dereg(id, req, out);
    else if (type == p::kConsumerRegReq) on_consumer_reg(id, req, now, out);
    else if (type == p::kConsumerDeregReq) on_consumer_dereg(id, req, out);
    else if (type == p::kListReq) on_list(id, req, now, out);
    else if (type == p::kPingReq) on_ping(id, req, now, out);
    else if (type == p::kCloseReq) on_close(id, req, out);
    else if (type == p::kChecksumErrorReport) on_checksum_report(id, req, out);
    else throw p::ProtocolError(p::kUnknownMsgType, "unknown message type '" + printable(type) + "'");
  } catch (const p::ProtocolError& e) {
    reply(id, p::kError, p::error_body(e.code(), e.what()), req, out);
  } catch (const std::exception& e) {
    // json type errors and the like: the request was malformed in a way not caught above.
    reply(id, p::kError, p::error_body(p::kInvalidRequest, e.what()), req, out);
  }
}

void ChannelRegistry::rebuild_prefixes(Channel& ch, milliseconds interval) {
  // What DISC_ACK and a LIST_ACK entry share (json objects keep their keys sorted, so the
  // order of insertion does not matter).
  const json common = {{"channel", ch.name},
                       {"transport", ch.transport},
                       {"pattern", ch.pattern},
                       {"endpoint", ch.endpoint},
                       {"shm_name", ch.shm_name},
                       {"schema_hash", ch.schema_hash},
                       {"schema_version", ch.schema_version},
                       {"pubkey", ch.pubkey ? json(*ch.pubkey) : json(nullptr)},
                       {"metadata", ch.metadata}};
  json b = common;
  b["status"] = "ok";
  b["producer_pid"] = ch.producer.pid;
  b["producer_hostname"] = ch.producer.hostname;
  b["heartbeat_interval_ms"] = interval.count();
  ch.disc_prefix = b.dump(-1, ' ', false, json::error_handler_t::replace);
  ch.disc_prefix.pop_back();  // '}'
  json l = common;
  l["producer"] = {{"pid", ch.producer.pid}, {"hostname", ch.producer.hostname}};
  ch.list_prefix = l.dump(-1, ' ', false, json::error_handler_t::replace);
  ch.list_prefix.back() = ',';  // '}' -> ','
}

void ChannelRegistry::on_reg(std::string_view id, const json& req, SteadyTime now, std::vector<Outbound>& out) {
  Channel ch;
  ch.name = p::require_channel(req);
  ch.transport = p::optional_string(req, "transport", 16).value_or("zmq");
  if (ch.transport != "zmq" && ch.transport != "shm")
    throw p::ProtocolError(p::kInvalidRequest, "field 'transport' must be \"zmq\" or \"shm\"");
  ch.pattern = p::optional_string(req, "pattern", 64).value_or("pubsub");
  if (ch.pattern.empty()) throw p::ProtocolError(p::kInvalidRequest, "field 'pattern' must not be empty");
  ch.endpoint = p::optional_string(req, "endpoint").value_or("");
  ch.shm_name = p::optional_string(req, "shm_name", 255).value_or("");
  if (ch.transport == "zmq" && ch.endpoint.empty())
    throw p::ProtocolError(p::kInvalidRequest, "field 'endpoint' is required for transport zmq");
  if (ch.transport == "shm" && ch.shm_name.empty())
    throw p::ProtocolError(p::kInvalidRequest, "field 'shm_name' is required for transport shm");
  ch.schema_hash = p::optional_u64(req, "schema_hash").value_or(0);
  ch.schema_version = p::optional_string(req, "schema_version", 255).value_or("");
  ch.producer.pid = p::require_pid(req, "producer_pid");
  ch.producer.hostname = p::optional_string(req, "producer_hostname", 255).value_or("");
  ch.pubkey = p::optional_string(req, "pubkey", 64);
  if (auto it = req.find("metadata"); it != req.end() && !it->is_null()) {
    if (!it->is_object()) throw p::ProtocolError(p::kInvalidRequest, "field 'metadata' must be an object");
    ch.metadata = *it;
  } else {
    ch.metadata = json::object();
  }
  ch.producer.identity = std::string(id);
  ch.producer.last_seen = now;
  ch.registered = now;
  ch.registered_ns = realtime_ns();

  bool reregistered = false;
  auto it = channels_.find(ch.name);
  if (it != channels_.end()) {
    Channel& old = it->second;
    const bool same_producer = old.producer.pid == ch.producer.pid && old.producer.hostname == ch.producer.hostname;
    if (same_producer) {
      // The same process again (reconnect or broker restart seen late): keep consumers and counters.
      ch.consumers = std::move(old.consumers);
      ch.registered = old.registered;
      ch.registered_ns = old.registered_ns;
      ch.producer.messages = old.producer.messages;
      ch.producer.bytes = old.producer.bytes;
      ch.producer.gaps = old.producer.gaps;
      ch.producer.prev = old.producer.prev;
      ch.producer.last = old.producer.last;
      ch.producer.samples = old.producer.samples;
      reregistered = true;
    } else if (peer_is_dead(old.producer)) {
      spdlog::info("channel {}: previous producer pid {} is gone; replaced by pid {}", ch.name, old.producer.pid,
                   ch.producer.pid);
      close_channel(it, p::kReasonHeartbeatTimeout, p::kReasonProcessExited, false, out);
      it = channels_.end();
    } else if (old.schema_hash != ch.schema_hash) {
      json note = {{"channel", ch.name},
                   {"event", "schema_mismatch"},
                   {"schema_hash", old.schema_hash},
                   {"attempted_schema_hash", ch.schema_hash},
                   {"attempted_schema_version", ch.schema_version},
                   {"attempted_pid", ch.producer.pid},
                   {"attempted_hostname", ch.producer.hostname}};
      out.push_back(Outbound{old.producer.identity, std::string(p::kChannelErrorNotify), note.dump()});
      // The error reply goes first in `out` order is irrelevant to ROUTER; keep it simple.
      throw p::ProtocolError(p::kSchemaMismatch, "channel '" + ch.name + "' is registered with schema hash " +
                                                     std::to_string(old.schema_hash) + ", not " +
                                                     std::to_string(ch.schema_hash));
    } else {
      throw p::ProtocolError(p::kChannelExists, "channel '" + ch.name + "' is already registered by pid " +
                                                    std::to_string(old.producer.pid) + " on " +
                                                    (old.producer.hostname.empty() ? "?" : old.producer.hostname));
    }
  }
  rebuild_prefixes(ch, config_.heartbeat_interval);
  json ack = {{"status", "ok"},
              {"channel", ch.name},
              {"heartbeat_interval_ms", config_.heartbeat_interval.count()},
              {"heartbeat_timeout_ms", config_.heartbeat_timeout.count()},
              {"consumer_count", ch.consumers.size()},
              {"reregistered", reregistered}};
  if (config_.allowed_keys) ack["allowed_keys"] = *config_.allowed_keys;
  const std::string name = ch.name;
  if (it != channels_.end())
    it->second = std::move(ch);
  else
    channels_.emplace(name, std::move(ch));
  spdlog::debug("channel {} registered ({})", name, reregistered ? "again" : "new");
  reply(id, p::kRegAck, std::move(ack), req, out);
}

void ChannelRegistry::on_disc(std::string_view id, const json& req, std::vector<Outbound>& out) {
  const std::string& name = p::require_channel(req);
  auto it = channels_.find(name);
  if (it == channels_.end()) throw p::ProtocolError(p::kChannelNotFound, "channel '" + name + "' not found");
  const Channel& ch = it->second;
  // Hot path: the static part of the answer is serialised once per registration.
  std::string body;
  body.reserve(ch.disc_prefix.size() + 64);
  body += ch.disc_prefix;
  body += ",\"consumer_count\":";
  body += std::to_string(ch.consumers.size());
  if (const json* corr = corr_of(req)) {
    body += ",\"corr\":";
    body += corr->dump(-1, ' ', false, json::error_handler_t::replace);
  }
  body += '}';
  out.push_back(Outbound{std::string(id), std::string(p::kDiscAck), std::move(body)});
}

void ChannelRegistry::on_dereg(std::string_view id, const json& req, std::vector<Outbound>& out) {
  const std::string& name = p::require_channel(req);
  const auto pid = p::require_pid(req, "producer_pid");
  auto it = channels_.find(name);
  if (it == channels_.end()) throw p::ProtocolError(p::kChannelNotFound, "channel '" + name + "' not found");
  if (it->second.producer.pid != pid)
    throw p::ProtocolError(p::kNotRegistered,
                           "pid " + std::to_string(pid) + " is not the producer of channel '" + name + "'");
  const auto final_seq = p::optional_u64(req, "final_seq");  // passed on to the consumers
  reply(id, p::kDeregAck, {{"status", "ok"}, {"channel", name}}, req, out);
  close_channel(it, p::kReasonProducerDeregistered, "", false, out, final_seq);
}

void ChannelRegistry::on_consumer_reg(std::string_view id, const json& req, SteadyTime now,
                                      std::vector<Outbound>& out) {
  const std::string& name = p::require_channel(req);
  Consumer c;
  c.pid = p::require_pid(req, "consumer_pid");
  c.hostname = p::optional_string(req, "consumer_hostname", 255).value_or("");
  c.expected_schema_hash = p::optional_u64(req, "expected_schema_hash");
  c.identity = std::string(id);
  c.last_seen = now;
  auto it = channels_.find(name);
  if (it == channels_.end()) throw p::ProtocolError(p::kChannelNotFound, "channel '" + name + "' not found");
  Channel& ch = it->second;
  if (c.expected_schema_hash && *c.expected_schema_hash != ch.schema_hash) {
    json note = {{"channel", name},
                 {"event", "consumer_schema_mismatch"},
                 {"schema_hash", ch.schema_hash},
                 {"attempted_schema_hash", *c.expected_schema_hash},
                 {"attempted_pid", c.pid},
                 {"attempted_hostname", c.hostname}};
    out.push_back(Outbound{ch.producer.identity, std::string(p::kChannelErrorNotify), note.dump()});
    throw p::ProtocolError(p::kSchemaMismatch, "channel '" + name + "' has schema hash " +
                                                   std::to_string(ch.schema_hash) + ", expected " +
                                                   std::to_string(*c.expected_schema_hash));
  }
  auto existing = std::find_if(ch.consumers.begin(), ch.consumers.end(),
                               [&](const Consumer& x) { return x.pid == c.pid && x.hostname == c.hostname; });
  const bool is_new = existing == ch.consumers.end();
  if (is_new) {
    ch.consumers.push_back(std::move(c));
  } else {
    existing->identity = c.identity;
    existing->last_seen = now;
    existing->expected_schema_hash = c.expected_schema_hash;
  }
  // The ACK carries what DISC_ACK carries, so a consumer can attach from it directly.
  json ack = json::parse(ch.disc_prefix + "}");
  ack["consumer_count"] = ch.consumers.size();
  ack["heartbeat_timeout_ms"] = config_.heartbeat_timeout.count();
  reply(id, p::kConsumerRegAck, std::move(ack), req, out);
  if (is_new) {
    const Consumer& added = ch.consumers.back();
    json note = {{"channel", name},
                 {"consumer_pid", added.pid},
                 {"consumer_hostname", added.hostname},
                 {"consumer_count", ch.consumers.size()}};
    out.push_back(Outbound{ch.producer.identity, std::string(p::kConsumerJoinedNotify), note.dump()});
  }
}

void ChannelRegistry::on_consumer_dereg(std::string_view id, const json& req, std::vector<Outbound>& out) {
  const std::string& name = p::require_channel(req);
  const auto pid = p::require_pid(req, "consumer_pid");
  const auto host = p::optional_string(req, "consumer_hostname", 255);
  auto it = channels_.find(name);
  if (it == channels_.end()) throw p::ProtocolError(p::kChannelNotFound, "channel '" + name + "' not found");
  Channel& ch = it->second;
  auto c = std::find_if(ch.consumers.begin(), ch.consumers.end(),
                        [&](const Consumer& x) { return x.pid == pid && (!host || x.hostname == *host); });
  if (c == ch.consumers.end())
    throw p::ProtocolError(p::kNotRegistered,
                           "pid " + std::to_string(pid) + " is not a consumer of channel '" + name + "'");
  json note = {{"channel", name}, {"consumer_pid", c->pid}, {"consumer_hostname", c->hostname}};
  ch.consumers.erase(c);
  note["consumer_count"] = ch.consumers.size();
  reply(id, p::kConsumerDeregAck, {{"status", "ok"}, {"channel", name}}, req, out);
  out.push_back(Outbound{ch.producer.identity, std::string(p::kConsumerLeftNotify), note.dump()});
}

void ChannelRegistry::update_metrics(Peer& peer, const json& req, SteadyTime now) {
  auto it = req.find("metrics");
  if (it == req.end() || it->is_null()) return;
  if (!it->is_object()) throw p::ProtocolError(p::kInvalidRequest, "field 'metrics' must be an object");
  const auto messages = p::optional_u64(*it, "messages");
  const auto bytes = p::optional_u64(*it, "bytes");
  const auto gaps = p::optional_u64(*it, "gaps");
  if (messages) peer.messages = *messages;
  if (bytes) peer.bytes = *bytes;
  if (gaps) peer.gaps = *gaps;
  peer.prev = peer.last;
  peer.last = Sample{now, peer.messages, peer.bytes};
  if (peer.samples < 2) ++peer.samples;
}

void ChannelRegistry::on_heartbeat(std::string_view id, const json& req, SteadyTime now, std::vector<Outbound>& /*out*/) {
  const std::string& name = p::require_channel(req);
  const std::string& role = p::require_string(req, "role", 16);
  const auto pid = p::require_pid(req, "pid");
  const auto host = p::optional_string(req, "hostname", 255);
  if (role != "producer" && role != "consumer")
    throw p::ProtocolError(p::kInvalidRequest, "field 'role' must be \"producer\" or \"consumer\"");
  auto it = channels_.find(name);
  Peer* peer = nullptr;
  if (it != channels_.end()) {
    Channel& ch = it->second;
    if (role == "producer") {
      if (ch.producer.pid == pid && (!host || ch.producer.hostname == *host)) peer = &ch.producer;
    } else {
      auto c = std::find_if(ch.consumers.begin(), ch.consumers.end(),
                            [&](const Consumer& x) { return x.pid == pid && (!host || x.hostname == *host); });
      if (c != ch.consumers.end()) peer = &*c;
    }
  }
  if (!peer)
    throw p::ProtocolError(p::kNotRegistered,
                           role + " pid " + std::to_string(pid) + " is not registered on channel '" + name + "'");
  peer->last_seen = now;
  if (peer->identity != id) peer->identity = std::string(id);
  update_metrics(*peer, req, now);
}

namespace {
template <class T>
void append_num(std::string& out, T v) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}
}  // namespace

// Hand-written for speed: LIST_ACK for 10,000 channels is several MiB.
void ChannelRegistry::append_description(std::string& out, const Channel& ch, SteadyTime now) const {
  auto rate = [](const Peer& peer, bool bytes) -> double {
    if (peer.samples < 2) return 0.0;
    const double dt = std::chrono::duration<double>(peer.last.t - peer.prev.t).count();
    const std::uint64_t a = bytes ? peer.prev.bytes : peer.prev.messages;
    const std::uint64_t b = bytes ? peer.last.bytes : peer.last.messages;
    if (!(dt > 0) || b < a) return 0.0;
    return static_cast<double>(b - a) / dt;
  };
  const auto hb_age = age_ms(now, ch.producer.last_seen);
  const bool stale = hb_age > 2 * config_.heartbeat_interval.count() + 100;
  out += ch.list_prefix;
  out += "\"consumer_count\":";
  append_num(out, ch.consumers.size());
  out += ",\"consumers\":[";
  for (std::size_t i = 0; i < ch.consumers.size(); ++i) {
    const Consumer& c = ch.consumers[i];
    if (i) out += ',';
    out += "{\"pid\":";
    append_num(out, c.pid);
    out += ",\"hostname\":";
    protocol::append_json_string(out, c.hostname);
    out += ",\"last_heartbeat_age_ms\":";
    append_num(out, age_ms(now, c.last_seen));
    out += ",\"messages\":";
    append_num(out, c.messages);
    out += ",\"bytes\":";
    append_num(out, c.bytes);
    out += ",\"gaps\":";
    append_num(out, c.gaps);
    out += '}';
  }
  out += "],\"state\":";
  out += stale ? "\"stale\"" : "\"open\"";
  out += ",\"last_heartbeat_age_ms\":";
  append_num(out, hb_age);
  out += ",\"registered_ns\":";
  append_num(out, ch.registered_ns);
  out += ",\"age_ms\":";
  append_num(out, age_ms(now, ch.registered));
  out += ",\"metrics\":{\"messages\":";
  append_num(out, ch.producer.messages);
  out += ",\"bytes\":";
  append_num(out, ch.producer.bytes);
  out += ",\"gaps\":";
  append_num(out, ch.producer.gaps);
  out += "},\"rates\":{\"messages_per_s\":";
  append_num(out, rate(ch.producer, false));
  out += ",\"bytes_per_s\":";
  append_num(out, rate(ch.producer, true));
  out += "}}";
}

void ChannelRegistry::on_list(std::string_view id, const json& req, SteadyTime now, std::vector<Outbound>& out) {
  std::vector<const Channel*> selected;
  if (req.contains("channel")) {
    const std::string& name = p::require_channel(req);
    auto it = channels_.find(name);
    if (it == channels_.end()) throw p::ProtocolError(p::kChannelNotFound, "channel '" + name + "' not found");
    selected.push_back(&it->second);
  } else {
    selected.reserve(channels_.size());
    for (const auto& [name, ch] : channels_) selected.push_back(&ch);
    std::sort(selected.begin(), selected.end(), [](const Channel* a, const Channel* b) { return a->name < b->name; });
  }
  // "channels" comes last so a client can find and pass the array through cheaply.
  std::string body;
  body.reserve(128 + selected.size() * 512);
  body += "{\"status\":\"ok\",\"count\":";
  append_num(body, selected.size());
  body += ",\"heartbeat_interval_ms\":";
  append_num(body, config_.heartbeat_interval.count());
  body += ",\"heartbeat_timeout_ms\":";
  append_num(body, config_.heartbeat_timeout.count());
  if (const json* corr = corr_of(req)) {
    body += ",\"corr\":";
    body += corr->dump(-1, ' ', false, json::error_handler_t::replace);
  }
  body += ",\"channels\":[";
  for (std::size_t i = 0; i < selected.size(); ++i) {
    if (i) body += ',';
    append_description(body, *selected[i], now);
  }
  body += "]}";
  out.push_back(Outbound{std::string(id), std::string(p::kListAck), std::move(body)});
}

void ChannelRegistry::on_ping(std::string_view id, const json& req, SteadyTime now, std::vector<Outbound>& out) {
  json ack = {{"status", "ok"},
              {"uptime_s", std::chrono::duration<double>(now - started_).count()},
              {"channels", channels_.size()},
              {"consumers", consumer_count()},
              {"hostname", config_.hostname},
              {"heartbeat_interval_ms", config_.heartbeat_interval.count()},
              {"heartbeat_timeout_ms", config_.heartbeat_timeout.count()},
              {"time_ns", realtime_ns()}};
  if (config_.broker_info.is_object())
    for (const auto& [k, v] : config_.broker_info.items()) ack[k] = v;
  reply(id, p::kPingAck, std::move(ack), req, out);
}

void ChannelRegistry::on_close(std::string_view id, const json& req, std::vector<Outbound>& out) {
  if (config_.admin_token) {
    const auto token = p::optional_string(req, "admin_token", 4096);
    const std::string& want = *config_.admin_token;
    bool ok = token && token->size() == want.size();
    if (ok) {
      unsigned char diff = 0;
      for (std::size_t i = 0; i < want.size(); ++i) diff |= static_cast<unsigned char>((*token)[i] ^ want[i]);
      ok = diff == 0;
    }
    if (!ok)
      throw p::ProtocolError(p::kUnauthorized, token ? "admin token does not match" : "this broker requires an admin token");
  }
  const std::string& name = p::require_channel(req);
  auto it = channels_.find(name);
  if (it == channels_.end()) throw p::ProtocolError(p::kChannelNotFound, "channel '" + name + "' not found");
  const auto notified = it->second.consumers.size() + 1;
  reply(id, p::kCloseAck, {{"status", "ok"}, {"channel", name}, {"notified", notified}}, req, out);
  spdlog::info("channel {} closed by admin request", name);
  close_channel(it, p::kReasonAdminRequested, "", true, out);
}

void ChannelRegistry::on_checksum_report(std::string_view id, const json& req, std::vector<Outbound>& out) {
  const std::string& name = p::require_channel(req);
  auto it = channels_.find(name);
  if (it == channels_.end()) throw p::ProtocolError(p::kChannelNotFound, "channel '" + name + "' not found");
  json fwd = req;
  fwd.erase("corr");
  out.push_back(Outbound{it->second.producer.identity, std::string(p::kChecksumErrorReport),
                         fwd.dump(-1, ' ', false, json::error_handler_t::replace)});
  (void)id;
}

void ChannelRegistry::close_channel(std::unordered_map<std::string, Channel>::iterator it, std::string_view reason,
                                    std::string_view detail, bool tell_producer, std::vector<Outbound>& out,
                                    std::optional<std::uint64_t> final_seq) {
  Channel& ch = it->second;
  json note = {{"channel", ch.name}, {"reason", reason}};
  if (!detail.empty()) note["detail"] = detail;
  if (final_seq) note["final_seq"] = *final_seq;
  const std::string body = note.dump();
  for (const auto& c : ch.consumers) out.push_back(Outbound{c.identity, std::string(p::kChannelClosingNotify), body});
  if (tell_producer) out.push_back(Outbound{ch.producer.identity, std::string(p::kChannelClosingNotify), body});
  channels_.erase(it);
}

bool ChannelRegistry::peer_is_dead(const Peer& peer) const {
  if (!config_.local_pid_alive || peer.hostname.empty() || peer.hostname != config_.hostname) return false;
  return !config_.local_pid_alive(peer.pid);
}

void ChannelRegistry::sweep(SteadyTime now, std::vector<Outbound>& out) {
  const auto timeout = config_.heartbeat_timeout;
  for (auto it = channels_.begin(); it != channels_.end();) {
    Channel& ch = it->second;
    const bool timed_out = now - ch.producer.last_seen > timeout;
    if (timed_out || peer_is_dead(ch.producer)) {
      spdlog::info("channel {}: producer pid {} {}; channel removed", ch.name, ch.producer.pid,
                   timed_out ? "stopped heartbeating" : "is gone");
      auto next = std::next(it);
      close_channel(it, p::kReasonHeartbeatTimeout, timed_out ? "" : p::kReasonProcessExited, true, out);
      it = next;
      continue;
    }
    for (auto c = ch.consumers.begin(); c != ch.consumers.end();) {
      const bool c_timed_out = now - c->last_seen > timeout;
      if (c_timed_out || peer_is_dead(*c)) {
        json note = {{"channel", ch.name},
                     {"consumer_pid", c->pid},
                     {"consumer_hostname", c->hostname},
                     {"reason", c_timed_out ? p::kReasonHeartbeatTimeout : p::kReasonProcessExited}};
        spdlog::info("channel {}: consumer pid {} removed ({})", ch.name, c->pid,
                     c_timed_out ? "heartbeat timeout" : "process exited");
        c = ch.consumers.erase(c);
        note["consumer_count"] = ch.consumers.size();
        out.push_back(Outbound{ch.producer.identity, std::string(p::kConsumerDiedNotify), note.dump()});
      } else {
        ++c;
      }
    }
    ++it;
  }
}

}  // namespace plh
