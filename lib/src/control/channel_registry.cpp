#include "plh/control/channel_registry.hpp"

#include <sodium.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cinttypes>
#include <cstdio>

#include "plh/control/protocol.hpp"
#include "plh/core/text.hpp"

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

// 128 random bits as 32 hex digits: a registration token.
std::string new_token() {
  unsigned char raw[16];
  randombytes_buf(raw, sizeof raw);
  char hex[2 * sizeof raw + 1];
  sodium_bin2hex(hex, sizeof hex, raw, sizeof raw);
  return hex;
}

// Constant-time comparison of a secret the peer sent with the one we hold.
bool same_secret(std::string_view given, std::string_view want) {
  if (want.empty() || given.size() != want.size()) return false;
  return sodium_memcmp(given.data(), want.data(), want.size()) == 0;
}

std::optional<std::string> token_of(const json& req) { return p::optional_string(req, "token", 64); }

bool is_refusal(std::string_view code) {
  return code == p::kNotOwner || code == p::kUnauthorized || code == p::kLimitExceeded;
}

}  // namespace

bool is_loopback_address(std::string_view a) noexcept {
  if (a.size() > 7 && (a.substr(0, 7) == "::ffff:" || a.substr(0, 7) == "::FFFF:")) a.remove_prefix(7);
  if (a == "::1") return true;
  if (a.size() < 7 || a.substr(0, 4) != "127.") return false;
  int dots = 0;
  for (char c : a) {
    if (c == '.') ++dots;
    else if (c < '0' || c > '9') return false;
  }
  return dots == 3;
}

ChannelRegistry::ChannelRegistry(RegistryConfig config)
    : config_(std::move(config)), started_(std::chrono::steady_clock::now()) {
  if (sodium_init() < 0) throw std::runtime_error("libsodium failed to initialise");
}

bool ChannelRegistry::owns(const Peer& p, const std::optional<std::string>& token) {
  return token && (same_secret(*token, p.token) || same_secret(*token, p.alias));
}

void ChannelRegistry::count(ClientCounts& counts, const std::string& client, int delta) {
  if (delta > 0) {
    counts[client] += static_cast<std::size_t>(delta);
    return;
  }
  auto it = counts.find(client);
  if (it == counts.end()) return;
  if (it->second <= 1)
    counts.erase(it);
  else
    --it->second;
}

void ChannelRegistry::rebind(Peer& p, ClientCounts& counts, const PeerInfo& peer) {
  if (p.identity != peer.routing_id) p.identity = peer.routing_id;
  if (p.client != peer.client()) {
    count(counts, p.client, -1);
    p.client = peer.client();
    count(counts, p.client, +1);
  }
}

void ChannelRegistry::warn_limited(SteadyTime now, const std::string& line) {
  roll_warnings(now);
  if (++warnings_in_window_ > 5) {
    ++warnings_suppressed_;
    return;
  }
  spdlog::warn("{}", line);
}

void ChannelRegistry::roll_warnings(SteadyTime now) {
  if (now - warning_window_ < std::chrono::seconds(1)) return;
  if (warnings_suppressed_ > 0)
    spdlog::warn("{} more refused requests or ignored metrics in the last second (not logged)", warnings_suppressed_);
  warning_window_ = now;
  warnings_in_window_ = 0;
  warnings_suppressed_ = 0;
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

void ChannelRegistry::handle(std::string_view identity, std::string_view type, std::string_view body, SteadyTime now,
                             std::vector<Outbound>& out) {
  PeerInfo peer;
  peer.routing_id = std::string(identity);
  handle(peer, type, body, now, out);
}

void ChannelRegistry::handle(const PeerInfo& peer, std::string_view type, std::string_view body, SteadyTime now,
                             std::vector<Outbound>& out) {
  const std::string_view id = peer.routing_id;
  // Strict JSON with bounded depth and size before anything is built from it (nlohmann's
  // plain parse takes a NUL for the end of the body, and copying or serialising a deeply
  // nested value recurses): protocol::parse_json, iterative, stops at the first excess.
  std::string problem;
  json req = p::parse_json(body, p::kRequestLimits, &problem);
  if (req.is_discarded()) {
    reject(id, p::kInvalidRequest, "body is not valid JSON: " + problem, out);
    return;
  }
  try {
    if (!req.is_object()) throw p::ProtocolError(p::kInvalidRequest, "body must be a JSON object");
    if (!watchers_.empty())
      if (auto w = watchers_.find(peer.routing_id); w != watchers_.end()) w->second.last_seen = now;
    if (type == p::kDiscReq) on_disc(id, req, out);
    else if (type == p::kHeartbeatReq) on_heartbeat(peer, req, now, out);
    else if (type == p::kRegReq) on_reg(peer, req, now, out);
    else if (type == p::kDeregReq) on_dereg(peer, req, out);
    else if (type == p::kConsumerRegReq) on_consumer_reg(peer, req, now, out);
    else if (type == p::kConsumerDeregReq) on_consumer_dereg(peer, req, out);
    else if (type == p::kListReq) on_list(id, req, now, out);
    else if (type == p::kPingReq) on_ping(id, req, now, out);
    else if (type == p::kCloseReq) on_close(peer, req, out);
    else if (type == p::kChecksumErrorReport) on_checksum_report(id, req, out);
    else if (type == p::kWatchReq) on_watch(peer, req, now, out);
    else if (type == p::kUnwatchReq) on_unwatch(peer, req, out);
    else throw p::ProtocolError(p::kUnknownMsgType, "unknown message type '" + printable(type) + "'");
  } catch (const p::ProtocolError& e) {
    if (is_refusal(e.code()))
      warn_limited(now, "refused " + printable(type) + " from " +
                            (peer.address.empty() ? std::string("?") : printable(peer.address, 64)) + ": " +
                            std::string(e.code()) + ": " + e.what());
    reply(id, p::kError, p::error_body(e.code(), e.what()), req, out);
  } catch (const std::exception& e) {
    // json type errors and the like: the request was malformed in a way not caught above.
    reply(id, p::kError, p::error_body(p::kInvalidRequest, e.what()), req, out);
  }
}

namespace {
// "0x" and 16 hex digits: a u64 above 2^53 loses precision as a JSON number in jq and
// JavaScript, so it is sent as a string too.
std::string hex_u64(std::uint64_t v) {
  char buf[19];
  std::snprintf(buf, sizeof buf, "0x%016" PRIx64, v);
  return buf;
}
}  // namespace

namespace {
// A schema as users name it: the producer's --schema text (metadata "schema") when it
// gave one, else "none" or the hash in hex.
std::string schema_label(const json& metadata, std::uint64_t hash) {
  if (metadata.is_object())
    if (auto it = metadata.find("schema"); it != metadata.end() && it->is_string() && !it->get_ref<const std::string&>().empty())
      return it->get<std::string>();
  return hash == 0 ? std::string("(none)") : "hash " + hex_u64(hash);
}
}  // namespace

void ChannelRegistry::rebuild_prefixes(Channel& ch, milliseconds interval) {
  // What DISC_ACK and a LIST_ACK entry share (json objects keep their keys sorted, so the
  // order of insertion does not matter).
  const json common = {{"channel", ch.name},
                       {"transport", ch.transport},
                       {"pattern", ch.pattern},
                       {"endpoint", ch.endpoint},
                       {"shm_name", ch.shm_name},
                       {"schema_hash", ch.schema_hash},
                       {"schema_hash_hex", hex_u64(ch.schema_hash)},
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

void ChannelRegistry::on_reg(const PeerInfo& peer, const json& req, SteadyTime now, std::vector<Outbound>& out) {
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
  ch.producer.host_id = p::optional_string(req, "host_id", 64).value_or("");
  ch.pubkey = p::optional_string(req, "pubkey", 64);
  const auto token = token_of(req);
  if (auto it = req.find("metadata"); it != req.end() && !it->is_null()) {
    if (!it->is_object()) throw p::ProtocolError(p::kInvalidRequest, "field 'metadata' must be an object");
    ch.metadata = *it;
  } else {
    ch.metadata = json::object();
  }
  ch.producer.identity = peer.routing_id;
  ch.producer.client = peer.client();
  ch.producer.last_seen = now;
  ch.registered = now;
  ch.registered_ns = realtime_ns();

  std::vector<Outbound> closing;  // notifications for a replaced entry
  // What to do with an existing entry: only its owner (the token) updates it; anyone
  // else gets it only once the owner is dead.
  enum class Action { fresh, again, replace } action = Action::fresh;
  bool old_exited = false;
  auto it = channels_.find(ch.name);
  if (it != channels_.end()) {
    Channel& old = it->second;
    old_exited = peer_is_dead(old.producer);
    if (owns(old.producer, token)) {
      action = Action::again;
    } else if (old_exited || now - old.producer.last_seen > config_.heartbeat_timeout) {
      action = Action::replace;
    } else if (old.schema_hash != ch.schema_hash) {
      json note = {{"channel", ch.name},
                   {"event", "schema_mismatch"},
                   {"schema_hash", old.schema_hash},
                   {"attempted_schema_hash", ch.schema_hash},
                   {"attempted_schema_version", ch.schema_version},
                   {"attempted_schema", schema_label(ch.metadata, ch.schema_hash)},
                   {"attempted_pid", ch.producer.pid},
                   {"attempted_hostname", ch.producer.hostname}};
      out.push_back(Outbound{old.producer.identity, std::string(p::kChannelErrorNotify), note.dump()});
      throw p::ProtocolError(p::kSchemaMismatch,
                             "channel '" + ch.name + "' is already published by pid " +
                                 std::to_string(old.producer.pid) + " on " + old.producer.hostname + " with schema " +
                                 schema_label(old.metadata, old.schema_hash) + ", not " +
                                 schema_label(ch.metadata, ch.schema_hash));
    } else {
      const std::string owner = "pid " + std::to_string(old.producer.pid) + " on " +
                                (old.producer.hostname.empty() ? "?" : old.producer.hostname);
      if (token)
        throw p::ProtocolError(p::kNotOwner, "channel '" + ch.name + "' is owned by another producer (" + owner +
                                                 "): the registration token does not match");
      throw p::ProtocolError(p::kChannelExists, "channel '" + ch.name + "' is already published by " + owner);
    }
  }
  if (action != Action::again && config_.max_channels_per_client > 0) {
    auto n = channels_per_client_.find(ch.producer.client);
    if (n != channels_per_client_.end() && n->second >= config_.max_channels_per_client)
      throw p::ProtocolError(p::kLimitExceeded, "this client already has " + std::to_string(n->second) +
                                                    " channels registered (the broker's limit per client)");
  }
  if (action == Action::replace) {
    spdlog::info("channel {}: previous producer pid {} {}; taken over by pid {}", ch.name, it->second.producer.pid,
                 old_exited ? "is gone" : "stopped heartbeating", ch.producer.pid);
    // A producer that only went silent is told, should it come back. (After the reply.)
    close_channel(it, p::kReasonHeartbeatTimeout, old_exited ? p::kReasonProcessExited : "", !old_exited, closing);
    it = channels_.end();
  }
  if (action == Action::again) {
    // The owner again (reconnect, or a broker restart seen late): keep consumers and counters.
    Peer& was = it->second.producer;
    ch.consumers = std::move(it->second.consumers);
    ch.registered = it->second.registered;
    ch.registered_ns = it->second.registered_ns;
    ch.producer.token = was.token;
    ch.producer.alias = was.alias;
    ch.producer.messages = was.messages;
    ch.producer.bytes = was.bytes;
    ch.producer.gaps = was.gaps;
    ch.producer.prev = was.prev;
    ch.producer.last = was.last;
    ch.producer.samples = was.samples;
    if (was.client != ch.producer.client) {
      count(channels_per_client_, was.client, -1);
      count(channels_per_client_, ch.producer.client, +1);
    }
  } else {
    ch.producer.token = new_token();
    ch.producer.alias = token.value_or("");
    count(channels_per_client_, ch.producer.client, +1);
  }
  const bool reregistered = action == Action::again;
  rebuild_prefixes(ch, config_.heartbeat_interval);
  json ack = {{"status", "ok"},
              {"channel", ch.name},
              {"heartbeat_interval_ms", config_.heartbeat_interval.count()},
              {"heartbeat_timeout_ms", config_.heartbeat_timeout.count()},
              {"consumer_count", ch.consumers.size()},
              {"reregistered", reregistered},
              {"token", ch.producer.token}};
  if (config_.allowed_keys) ack["allowed_keys"] = *config_.allowed_keys;
  const std::string name = ch.name;
  if (it != channels_.end())
    it->second = std::move(ch);
  else
    channels_.emplace(name, std::move(ch));
  spdlog::debug("channel {} registered ({})", name, reregistered ? "again" : "new");
  reply(peer.routing_id, p::kRegAck, std::move(ack), req, out);
  for (auto& m : closing) out.push_back(std::move(m));
  notify_watchers(name, out);
}

std::size_t ChannelRegistry::watch_count() const noexcept {
  std::size_t n = 0;
  for (const auto& [id, w] : watchers_) n += w.watches.size();
  return n;
}

void ChannelRegistry::notify_watchers(const std::string& channel, std::vector<Outbound>& out) const {
  for (const auto& [id, w] : watchers_)
    for (const auto& watch : w.watches)
      if (channel_matches(watch.pattern, channel)) {
        json note = {{"channel", channel}, {"pattern", watch.pattern}};
        out.push_back(Outbound{id, std::string(p::kChannelRegisteredNotify), note.dump()});
        break;  // one notification per connection, whichever of its patterns matched
      }
}

void ChannelRegistry::on_watch(const PeerInfo& peer, const json& req, SteadyTime now, std::vector<Outbound>& out) {
  const std::string& pattern = p::require_pattern(req);
  const bool renew = req.contains("renew") && req["renew"].is_boolean() && req["renew"].get<bool>();
  auto w = watchers_.find(peer.routing_id);
  const bool known = w != watchers_.end() && std::any_of(w->second.watches.begin(), w->second.watches.end(),
                                                         [&](const Watch& x) { return x.pattern == pattern; });
  if (!known) {
    const std::size_t has = w == watchers_.end() ? 0 : w->second.watches.size();
    if (config_.max_watches_per_connection > 0 && has >= config_.max_watches_per_connection)
      throw p::ProtocolError(p::kLimitExceeded, "this connection already watches " + std::to_string(has) +
                                                    " patterns (the broker's limit per connection)");
    if (w == watchers_.end()) w = watchers_.emplace(peer.routing_id, Watcher{}).first;
    w->second.watches.push_back(Watch{pattern});
  }
  w->second.last_seen = now;
  json ack = {{"status", "ok"}, {"pattern", pattern}};
  json names = json::array();
  if (!renew)  // a renewal only keeps the watch: no list
    for (const auto& [name, ch] : channels_)
      if (channel_matches(pattern, name)) names.push_back(name);
  ack["channels"] = std::move(names);
  ack["heartbeat_interval_ms"] = config_.heartbeat_interval.count();
  reply(peer.routing_id, p::kWatchAck, std::move(ack), req, out);
}

void ChannelRegistry::on_unwatch(const PeerInfo& peer, const json& req, std::vector<Outbound>& out) {
  const std::string& pattern = p::require_pattern(req);
  bool removed = false;
  if (auto w = watchers_.find(peer.routing_id); w != watchers_.end()) {
    auto& v = w->second.watches;
    const auto before = v.size();
    v.erase(std::remove_if(v.begin(), v.end(), [&](const Watch& x) { return x.pattern == pattern; }), v.end());
    removed = v.size() != before;
    if (v.empty()) watchers_.erase(w);
  }
  reply(peer.routing_id, p::kUnwatchAck, json{{"status", "ok"}, {"pattern", pattern}, {"removed", removed}}, req,
        out);
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

void ChannelRegistry::on_dereg(const PeerInfo& peer, const json& req, std::vector<Outbound>& out) {
  const std::string& name = p::require_channel(req);
  const auto token = token_of(req);
  const auto final_seq = p::optional_u64(req, "final_seq");
  auto it = channels_.find(name);
  if (it == channels_.end()) throw p::ProtocolError(p::kChannelNotFound, "channel '" + name + "' not found");
  if (!owns(it->second.producer, token))
    throw p::ProtocolError(p::kNotOwner, "not the producer of channel '" + name + "' (" +
                                             (token ? "the registration token does not match" : "no registration token") +
                                             ")");
  reply(peer.routing_id, p::kDeregAck, {{"status", "ok"}, {"channel", name}}, req, out);
  json extra = json::object();
  if (final_seq) extra["final_seq"] = *final_seq;
  close_channel(it, p::kReasonProducerDeregistered, "", false, out, extra);
}

void ChannelRegistry::on_consumer_reg(const PeerInfo& peer, const json& req, SteadyTime now,
                                      std::vector<Outbound>& out) {
  const std::string& name = p::require_channel(req);
  Consumer c;
  c.pid = p::require_pid(req, "consumer_pid");
  c.hostname = p::optional_string(req, "consumer_hostname", 255).value_or("");
  c.host_id = p::optional_string(req, "host_id", 64).value_or("");
  c.expected_schema_hash = p::optional_u64(req, "expected_schema_hash");
  const auto token = token_of(req);
  c.identity = peer.routing_id;
  c.client = peer.client();
  c.last_seen = now;
  auto it = channels_.find(name);
  if (it == channels_.end()) throw p::ProtocolError(p::kChannelNotFound, "channel '" + name + "' not found");
  Channel& ch = it->second;
  if (c.expected_schema_hash && *c.expected_schema_hash != ch.schema_hash) {
    json note = {{"channel", name},
                 {"event", "consumer_schema_mismatch"},
                 {"schema_hash", ch.schema_hash},
                 {"attempted_schema_hash", *c.expected_schema_hash},
                 {"attempted_schema", schema_label(json(), *c.expected_schema_hash)},
                 {"attempted_pid", c.pid},
                 {"attempted_hostname", c.hostname}};
    out.push_back(Outbound{ch.producer.identity, std::string(p::kChannelErrorNotify), note.dump()});
    throw p::ProtocolError(p::kSchemaMismatch, "channel '" + name + "' has schema " +
                                                   schema_label(ch.metadata, ch.schema_hash) + ", expected " +
                                                   schema_label(json(), *c.expected_schema_hash));
  }
  // The same consumer again (its token): update it; anything else is a new entry.
  auto existing = std::find_if(ch.consumers.begin(), ch.consumers.end(), [&](const Consumer& x) { return owns(x, token); });
  const bool is_new = existing == ch.consumers.end();
  std::string issued;
  if (is_new) {
    if (config_.max_consumers_per_client > 0) {
      auto n = consumers_per_client_.find(c.client);
      if (n != consumers_per_client_.end() && n->second >= config_.max_consumers_per_client)
        throw p::ProtocolError(p::kLimitExceeded, "this client already has " + std::to_string(n->second) +
                                                      " consumers registered (the broker's limit per client)");
    }
    c.token = new_token();
    c.alias = token.value_or("");
    issued = c.token;
    count(consumers_per_client_, c.client, +1);
    ++consumer_total_;
    ch.consumers.push_back(std::move(c));
  } else {
    rebind(*existing, consumers_per_client_, peer);
    existing->last_seen = now;
    existing->expected_schema_hash = c.expected_schema_hash;
    issued = existing->token;
  }
  // The ACK carries what DISC_ACK carries, so a consumer can attach from it directly.
  json ack = json::parse(ch.disc_prefix + "}");
  ack["consumer_count"] = ch.consumers.size();
  ack["heartbeat_timeout_ms"] = config_.heartbeat_timeout.count();
  ack["token"] = issued;
  reply(peer.routing_id, p::kConsumerRegAck, std::move(ack), req, out);
  if (is_new) {
    const Consumer& added = ch.consumers.back();
    json note = {{"channel", name},
                 {"consumer_pid", added.pid},
                 {"consumer_hostname", added.hostname},
                 {"consumer_count", ch.consumers.size()}};
    out.push_back(Outbound{ch.producer.identity, std::string(p::kConsumerJoinedNotify), note.dump()});
  }
}

std::vector<ChannelRegistry::Consumer>::iterator ChannelRegistry::erase_consumer(Channel& ch,
                                                                                 std::vector<Consumer>::iterator c) {
  count(consumers_per_client_, c->client, -1);
  --consumer_total_;
  return ch.consumers.erase(c);
}

// The consumer of `ch` that `token` proves; else end(), after throwing NOT_OWNER when the
// request names (by pid, and host name when given) a consumer it does not own.
namespace {
template <class Consumers, class Owns>
auto find_consumer(Consumers& consumers, Owns owns, const std::optional<std::string>& token, std::int64_t pid,
                   const std::optional<std::string>& host, const std::string& channel, const std::string& role) {
  auto c = std::find_if(consumers.begin(), consumers.end(), owns);
  if (c != consumers.end()) return c;
  const bool named = std::any_of(consumers.begin(), consumers.end(),
                                 [&](const auto& x) { return x.pid == pid && (!host || x.hostname == *host); });
  if (named)
    throw p::ProtocolError(p::kNotOwner, role + " pid " + std::to_string(pid) + " of channel '" + channel +
                                             "' is another client's registration (" +
                                             (token ? "the registration token does not match" : "no registration token") +
                                             ")");
  throw p::ProtocolError(p::kNotRegistered,
                         role + " pid " + std::to_string(pid) + " is not registered on channel '" + channel + "'");
}
}  // namespace

void ChannelRegistry::on_consumer_dereg(const PeerInfo& peer, const json& req, std::vector<Outbound>& out) {
  const std::string& name = p::require_channel(req);
  const auto pid = p::require_pid(req, "consumer_pid");
  const auto host = p::optional_string(req, "consumer_hostname", 255);
  const auto token = token_of(req);
  auto it = channels_.find(name);
  if (it == channels_.end()) throw p::ProtocolError(p::kChannelNotFound, "channel '" + name + "' not found");
  Channel& ch = it->second;
  auto c = find_consumer(
      ch.consumers, [&](const Consumer& x) { return owns(x, token); }, token, pid, host, name, "consumer");
  json note = {{"channel", name}, {"consumer_pid", c->pid}, {"consumer_hostname", c->hostname}};
  erase_consumer(ch, c);
  note["consumer_count"] = ch.consumers.size();
  reply(peer.routing_id, p::kConsumerDeregAck, {{"status", "ok"}, {"channel", name}}, req, out);
  out.push_back(Outbound{ch.producer.identity, std::string(p::kConsumerLeftNotify), note.dump()});
}

std::optional<ChannelRegistry::Metrics> ChannelRegistry::parse_metrics(const json& req) {
  auto it = req.find("metrics");
  if (it == req.end() || it->is_null()) return std::nullopt;
  if (!it->is_object()) throw p::ProtocolError(p::kInvalidRequest, "field 'metrics' must be an object");
  return Metrics{p::optional_u64(*it, "messages"), p::optional_u64(*it, "bytes"), p::optional_u64(*it, "gaps"),
                 p::optional_u64(*it, "latency_p50_us"), p::optional_u64(*it, "latency_p99_us")};
}

void ChannelRegistry::update_metrics(Peer& peer, const Metrics& sample, SteadyTime now) {
  const std::uint64_t messages = sample.messages.value_or(peer.messages);
  const std::uint64_t bytes = sample.bytes.value_or(peer.bytes);
  const std::uint64_t gaps = sample.gaps.value_or(peer.gaps);
  if (peer.samples > 0) {
    // Totals so far: they never go backwards, and grow no faster than any real stream.
    const char* problem = nullptr;
    if (messages < peer.messages || bytes < peer.bytes || gaps < peer.gaps) {
      problem = "a counter went backwards";
    } else {
      const double dt = std::max(std::chrono::duration<double>(now - peer.last.t).count(), 1e-3);
      if (static_cast<double>(messages - peer.messages) / dt > kMaxMessagesPerSecond ||
          static_cast<double>(bytes - peer.bytes) / dt > kMaxBytesPerSecond)
        problem = "implausible rate";
    }
    if (problem) {
      ++rejected_samples_;
      warn_limited(now, std::string("ignored the metrics of a heartbeat from pid ") + std::to_string(peer.pid) + ": " +
                            problem + " (messages " + std::to_string(peer.messages) + " -> " +
                            std::to_string(messages) + ", bytes " + std::to_string(peer.bytes) + " -> " +
                            std::to_string(bytes) + ")");
      return;
    }
  }
  peer.messages = messages;
  peer.bytes = bytes;
  peer.gaps = gaps;
  if (sample.latency_p50_us) peer.latency_p50_us = sample.latency_p50_us;
  if (sample.latency_p99_us) peer.latency_p99_us = sample.latency_p99_us;
  peer.prev = peer.last;
  peer.last = Sample{now, peer.messages, peer.bytes};
  if (peer.samples < 2) ++peer.samples;
}

void ChannelRegistry::on_heartbeat(const PeerInfo& peer, const json& req, SteadyTime now,
                                   std::vector<Outbound>& /*out*/) {
  const std::string& name = p::require_channel(req);
  const std::string& role = p::require_string(req, "role", 16);
  const auto pid = p::require_pid(req, "pid");
  const auto host = p::optional_string(req, "hostname", 255);
  const auto token = token_of(req);
  const auto metrics = parse_metrics(req);
  if (role != "producer" && role != "consumer")
    throw p::ProtocolError(p::kInvalidRequest, "field 'role' must be \"producer\" or \"consumer\"");
  auto it = channels_.find(name);
  if (it == channels_.end())
    throw p::ProtocolError(p::kNotRegistered,
                           role + " pid " + std::to_string(pid) + " is not registered on channel '" + name + "'");
  Channel& ch = it->second;
  Peer* entry = nullptr;
  if (role == "producer") {
    if (!owns(ch.producer, token))
      throw p::ProtocolError(p::kNotOwner, "not the producer of channel '" + name + "' (" +
                                               (token ? "the registration token does not match" : "no registration token") +
                                               ")");
    entry = &ch.producer;
    rebind(*entry, channels_per_client_, peer);
  } else {
    entry = &*find_consumer(
        ch.consumers, [&](const Consumer& x) { return owns(x, token); }, token, pid, host, name, "consumer");
    rebind(*entry, consumers_per_client_, peer);
  }
  entry->last_seen = now;
  if (metrics) update_metrics(*entry, *metrics, now);
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
  if (ch.producer.latency_p50_us) {
    out += ",\"latency_p50_us\":";
    append_num(out, *ch.producer.latency_p50_us);
  }
  if (ch.producer.latency_p99_us) {
    out += ",\"latency_p99_us\":";
    append_num(out, *ch.producer.latency_p99_us);
  }
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
              {"consumers", consumer_total_},
              {"hostname", config_.hostname},
              {"host_id", config_.host_id},
              {"heartbeat_interval_ms", config_.heartbeat_interval.count()},
              {"heartbeat_timeout_ms", config_.heartbeat_timeout.count()},
              {"time_ns", realtime_ns()}};
  if (config_.broker_info.is_object())
    for (const auto& [k, v] : config_.broker_info.items()) ack[k] = v;
  reply(id, p::kPingAck, std::move(ack), req, out);
}

void ChannelRegistry::on_close(const PeerInfo& peer, const json& req, std::vector<Outbound>& out) {
  if (config_.admin_token) {
    const auto token = p::optional_string(req, "admin_token", 4096);
    if (!token || !same_secret(*token, *config_.admin_token))
      throw p::ProtocolError(p::kUnauthorized, token ? "admin token does not match" : "this broker requires an admin token");
  } else if (!peer.loopback) {
    throw p::ProtocolError(p::kUnauthorized,
                           "this broker has no admin token, so it accepts CLOSE_REQ only from its own machine "
                           "(loopback); start plh-broker with --admin-token-file to close channels from elsewhere");
  }
  const std::string& name = p::require_channel(req);
  auto it = channels_.find(name);
  if (it == channels_.end()) throw p::ProtocolError(p::kChannelNotFound, "channel '" + name + "' not found");
  const auto notified = it->second.consumers.size() + 1;
  reply(peer.routing_id, p::kCloseAck, {{"status", "ok"}, {"channel", name}, {"notified", notified}}, req, out);
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

void ChannelRegistry::close_channel(ChannelMap::iterator it, std::string_view reason, std::string_view detail,
                                    bool tell_producer, std::vector<Outbound>& out, const json& extra) {
  Channel& ch = it->second;
  json note = {{"channel", ch.name}, {"reason", reason}};
  if (!detail.empty()) note["detail"] = detail;
  for (const auto& [k, v] : extra.items()) note[k] = v;
  const std::string body = note.dump();
  for (const auto& c : ch.consumers) {
    out.push_back(Outbound{c.identity, std::string(p::kChannelClosingNotify), body});
    count(consumers_per_client_, c.client, -1);
  }
  consumer_total_ -= ch.consumers.size();
  count(channels_per_client_, ch.producer.client, -1);
  if (tell_producer) out.push_back(Outbound{ch.producer.identity, std::string(p::kChannelClosingNotify), body});
  channels_.erase(it);
}

bool ChannelRegistry::peer_is_dead(const Peer& peer) const {
  // kill(pid, 0) means something only in the broker's own kernel and PID namespace.
  if (!config_.local_pid_alive || config_.host_id.empty() || peer.host_id != config_.host_id) return false;
  return !config_.local_pid_alive(peer.pid);
}

void ChannelRegistry::sweep(SteadyTime now, std::vector<Outbound>& out) {
  roll_warnings(now);
  const auto timeout = config_.heartbeat_timeout;
  for (auto w = watchers_.begin(); w != watchers_.end();) {
    if (now - w->second.last_seen > timeout) {
      spdlog::info("watcher dropped ({} pattern(s)): silent past the heartbeat timeout", w->second.watches.size());
      w = watchers_.erase(w);
    } else {
      ++w;
    }
  }
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
        c = erase_consumer(ch, c);
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
