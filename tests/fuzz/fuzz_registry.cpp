// Control-plane requests through plh::ChannelRegistry, stateful: one input is a whole
// conversation of up to 8 clients with one broker, on a fake clock.
//
// Input: byte 0 configures the registry (bit 0: an admin token "s3cret" is required;
// bit 1: peers on this host whose pid is a multiple of 4 are dead; bit 2: heartbeat
// timeout 1 s instead of 5 s). Then one request per line:
//   <peer> <type> <clock> <body...>
//   peer   byte % 8 -> client identity "peer-N"
//   type   R REG_REQ, D DISC_REQ, U DEREG_REQ, C CONSUMER_REG_REQ, c CONSUMER_DEREG_REQ,
//          H HEARTBEAT_REQ, L LIST_REQ, P PING_REQ, Z CLOSE_REQ, K CHECKSUM_ERROR_REPORT,
//          W WATCH_REQ, w UNWATCH_REQ,
//          J a message with the wrong number of frames (ChannelRegistry::reject),
//          ? the type is the body up to the first space; any other byte is the type itself
//   clock  '0'..'9': the clock advances 0, 1, 10, 100, 500, 1000, 2000, 5000, 6000 or
//          60000 ms (then sweep()); any other byte: byte * 37 ms
//   body   the JSON body. "@T<d>" is replaced by the d-th token a reply handed out (any
//          string field whose name contains "token"), so ownership checks can be passed;
//          byte 0x01 followed by a 2-byte count and a byte repeats that byte count times
//          (bodies up to the broker's 1 MiB frame limit, e.g. deep nesting).
// Checks after every request: no exception escapes, every message sent is a JSON object
// addressed to a known client, a request with a reply gets exactly one reply (its ACK or
// ERROR) carrying its "corr", ERROR bodies are well formed, and LIST_ACK / PING_ACK /
// channel_count() / consumer_count() agree; a channel just acknowledged by REG_ACK is
// discoverable, one just removed by DEREG_ACK / CLOSE_ACK is not.
#include <nlohmann/json.hpp>

#include <array>
#include <chrono>
#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "fuzz_support.hpp"
#include "plh/control/channel_registry.hpp"
#include "plh/control/protocol.hpp"

using namespace plh;
using nlohmann::json;
namespace p = plh::protocol;

namespace {

constexpr std::size_t kMaxBody = 1 << 20;  // the broker's ZMQ_MAXMSGSIZE
constexpr const char* kProbe = "probe";

// A DOM of text, or discarded when it is not JSON or too deep to handle here.
json shallow_parse(std::string_view text) {
  if (fuzz::json_nesting(text) > 64) return json(json::value_t::discarded);
  return json::parse(text.begin(), text.end(), nullptr, false);
}

std::string_view type_of(char code, std::string_view& body) {
  switch (code) {
    case 'R': return p::kRegReq;
    case 'D': return p::kDiscReq;
    case 'U': return p::kDeregReq;
    case 'C': return p::kConsumerRegReq;
    case 'c': return p::kConsumerDeregReq;
    case 'H': return p::kHeartbeatReq;
    case 'L': return p::kListReq;
    case 'P': return p::kPingReq;
    case 'Z': return p::kCloseReq;
    case 'K': return p::kChecksumErrorReport;
    case 'W': return p::kWatchReq;
    case 'w': return p::kUnwatchReq;
    case '?': {
      const auto sp = body.find(' ');
      std::string_view t = body.substr(0, sp);
      body = sp == std::string_view::npos ? std::string_view() : body.substr(sp + 1);
      return t;
    }
    default: return {};
  }
}

std::chrono::milliseconds advance_of(std::uint8_t b) {
  static constexpr std::array<int, 10> steps = {0, 1, 10, 100, 500, 1000, 2000, 5000, 6000, 60000};
  if (b >= '0' && b <= '9') return std::chrono::milliseconds(steps[b - '0']);
  return std::chrono::milliseconds(b * 37);
}

struct Harness {
  ChannelRegistry reg;
  std::deque<std::string> tokens;
  std::vector<Outbound> out;
  SteadyTime now;

  explicit Harness(RegistryConfig cfg) : reg(std::move(cfg)), now(std::chrono::steady_clock::now()) {}

  std::string expand(std::string_view raw) const {
    std::string body;
    for (std::size_t i = 0; i < raw.size() && body.size() <= kMaxBody; ++i) {
      const char c = raw[i];
      if (c == '\x01' && i + 3 < raw.size()) {
        const std::size_t n = (std::size_t{static_cast<unsigned char>(raw[i + 1])} << 8) |
                              static_cast<unsigned char>(raw[i + 2]);
        body.append(std::min(n, kMaxBody + 1 - body.size()), raw[i + 3]);
        i += 3;
      } else if (c == '@' && i + 2 < raw.size() && raw[i + 1] == 'T' && raw[i + 2] >= '0' && raw[i + 2] <= '9') {
        const std::size_t k = static_cast<std::size_t>(raw[i + 2] - '0');
        if (k < tokens.size()) body += tokens[k];
        i += 2;
      } else {
        body += c;
      }
    }
    return body;
  }

  static bool known_identity(const std::string& id) {
    if (id == kProbe) return true;
    return id.size() == 6 && id.compare(0, 5, "peer-") == 0 && id[5] >= '0' && id[5] <= '7';
  }

  // Every message of out[from..] is a JSON object to a known client; returns the
  // replies to `id` of type ack or ERROR.
  std::vector<const Outbound*> check_sent(std::size_t from, const std::string& id, std::string_view ack) {
    std::vector<const Outbound*> replies;
    for (std::size_t i = from; i < out.size(); ++i) {
      const Outbound& m = out[i];
      PLH_FUZZ_CHECK(known_identity(m.identity), "message %s to unknown identity '%s'", m.type.c_str(),
                     m.identity.c_str());
      PLH_FUZZ_CHECK(!m.type.empty(), "message with an empty type");
      // accept() runs nlohmann's iterative SAX parser: safe for deep texts too.
      PLH_FUZZ_CHECK(json::accept(m.body), "%s body is not valid JSON: %s", m.type.c_str(), fuzz::shown(m.body).c_str());
      PLH_FUZZ_CHECK(!m.body.empty() && m.body.front() == '{', "%s body is not an object: %s", m.type.c_str(),
                     fuzz::shown(m.body).c_str());
      if (m.identity == id && (m.type == p::kError || (!ack.empty() && m.type == ack))) replies.push_back(&m);
      if (m.type == p::kError) {
        const json b = shallow_parse(m.body);
        PLH_FUZZ_CHECK(b.is_object() && b.value("status", "") == "error" && b.contains("error_code") &&
                           b["error_code"].is_string() && b.contains("message") && b["message"].is_string(),
                       "malformed ERROR body: %s", fuzz::shown(m.body).c_str());
      }
    }
    return replies;
  }

  void remember_tokens(const json& body) {
    if (!body.is_object()) return;
    for (const auto& [k, v] : body.items()) {
      if (k.find("token") == std::string::npos || !v.is_string()) continue;
      tokens.push_back(v.get<std::string>());
      if (tokens.size() > 10) tokens.pop_front();
    }
  }

  // One request from the probe identity; returns its reply body.
  json probe(std::string_view type, const json& body) {
    const std::size_t from = out.size();
    reg.handle(kProbe, type, body.dump(), now, out);
    const auto replies = check_sent(from, kProbe, p::ack_type_for(type));
    PLH_FUZZ_CHECK(replies.size() == 1, "probe %s got %zu replies", std::string(type).c_str(), replies.size());
    PLH_FUZZ_CHECK(out.size() == from + 1, "probe %s caused %zu messages", std::string(type).c_str(),
                   out.size() - from);
    json b = shallow_parse(replies[0]->body);
    if (!b.is_object()) b = json::object();
    b["__type"] = replies[0]->type;
    out.resize(from);
    return b;
  }

  void check_counts() {
    const json list = probe(p::kListReq, json::object());
    if (list["__type"] == p::kListAck && list.contains("channels")) {
      PLH_FUZZ_CHECK(list["count"] == reg.channel_count() && list["channels"].size() == reg.channel_count(),
                     "LIST_ACK count %s, %zu entries, channel_count() %zu", list["count"].dump().c_str(),
                     list["channels"].size(), reg.channel_count());
      std::size_t consumers = 0;
      for (const auto& ch : list["channels"]) {
        PLH_FUZZ_CHECK(ch["consumers"].size() == ch["consumer_count"], "entry consumer_count %s, %zu consumers",
                       ch["consumer_count"].dump().c_str(), ch["consumers"].size());
        consumers += ch["consumers"].size();
      }
      PLH_FUZZ_CHECK(consumers == reg.consumer_count(), "LIST_ACK shows %zu consumers, consumer_count() %zu",
                     consumers, reg.consumer_count());
    } else {
      PLH_FUZZ_CHECK(list["__type"] == p::kListAck, "LIST_REQ {} failed: %s", list.dump().c_str());
    }
    const json ping = probe(p::kPingReq, json::object());
    PLH_FUZZ_CHECK(ping["__type"] == p::kPingAck, "PING_REQ {} failed");
    PLH_FUZZ_CHECK(ping["channels"] == reg.channel_count() && ping["consumers"] == reg.consumer_count(),
                   "PING_ACK channels %s consumers %s, registry %zu / %zu", ping["channels"].dump().c_str(),
                   ping["consumers"].dump().c_str(), reg.channel_count(), reg.consumer_count());
  }

  void request(std::uint8_t peer, char code, std::uint8_t clock, std::string_view raw) {
    now += advance_of(clock);
    reg.sweep(now, out);
    check_sent(0, "", "");
    out.clear();

    const std::string id = "peer-" + std::to_string(peer % 8);
    std::string_view rest = raw;
    std::string_view type = type_of(code, rest);
    std::string own_type;
    if (type.empty() && code != '?') {
      own_type.assign(1, code);
      type = own_type;
    }
    const std::string body = expand(rest);

    if (code == 'J') {
      reg.reject(id, p::kInvalidRequest, "a message must have exactly two frames", out);
      const auto r = check_sent(0, id, "");
      PLH_FUZZ_CHECK(r.size() == 1 && out.size() == 1, "reject() sent %zu messages", out.size());
      out.clear();
      return;
    }
    reg.handle(id, type, body, now, out);
    const std::string_view ack = p::ack_type_for(type);
    const auto replies = check_sent(0, id, ack);
    // What is not exactly one JSON value (trailing bytes, NUL, bad escapes) is refused.
    // (nlohmann's accept() stops at a NUL byte; a raw NUL is never valid JSON.)
    if (!json::accept(body) || body.find('\0') != std::string::npos)
      PLH_FUZZ_CHECK(replies.size() == 1 && replies[0]->type == p::kError, "%s with an invalid JSON body accepted: %s",
                     std::string(type).c_str(), fuzz::shown(body).c_str());
    // Requests with an ACK get exactly one reply; HEARTBEAT_REQ and CHECKSUM_ERROR_REPORT
    // one only when refused; an unknown type exactly one ERROR.
    if (!ack.empty())
      PLH_FUZZ_CHECK(replies.size() == 1, "%s got %zu replies", std::string(type).c_str(), replies.size());
    else if (type == p::kHeartbeatReq || type == p::kChecksumErrorReport)
      PLH_FUZZ_CHECK(replies.size() <= 1 && (replies.empty() || replies[0]->type == p::kError), "%s got %zu replies",
                     std::string(type).c_str(), replies.size());
    else
      PLH_FUZZ_CHECK(replies.size() == 1 && replies[0]->type == p::kError, "unknown type '%s' not refused",
                     std::string(type).c_str());
    if (!replies.empty()) {
      const Outbound reply = *replies[0];  // probes below append to `out`
      // The request as the registry reads it (strict: `{"corr":1}\0garbage` is refused and
      // its corr cannot be known); the reply leniently, to check what it holds.
      const json req = p::parse_json(body, p::kRequestLimits);
      const json rep = shallow_parse(reply.body);
      if (req.is_object() && rep.is_object()) {
        if (auto c = req.find("corr"); c != req.end() && (c->is_string() || c->is_number()))
          PLH_FUZZ_CHECK(rep.contains("corr") && rep["corr"] == *c, "%s reply lost corr %s", reply.type.c_str(),
                         c->dump().c_str());
      }
      if (reply.type != p::kError) {
        PLH_FUZZ_CHECK(rep.is_discarded() || rep.value("status", "") == "ok", "%s without status ok",
                       reply.type.c_str());
        remember_tokens(rep);
        // State follows the acknowledgement.
        if (rep.is_object() && rep.contains("channel") && rep["channel"].is_string()) {
          const json disc = probe(p::kDiscReq, {{"channel", rep["channel"]}});
          if (reply.type == p::kRegAck || reply.type == p::kConsumerRegAck)
            PLH_FUZZ_CHECK(disc["__type"] == p::kDiscAck, "channel acknowledged by %s is not discoverable",
                           reply.type.c_str());
          if (reply.type == p::kDeregAck || reply.type == p::kCloseAck)
            PLH_FUZZ_CHECK(disc["__type"] == p::kError, "channel removed by %s is still discoverable",
                           reply.type.c_str());
        }
      }
    }
    out.clear();
    check_counts();
  }
};

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logging();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::Bytes in(data, size);
  const std::uint8_t flags = in.u8();
  RegistryConfig cfg;
  cfg.hostname = "fuzzhost";
  cfg.heartbeat_interval = std::chrono::milliseconds(200);
  cfg.heartbeat_timeout = std::chrono::milliseconds((flags & 4) ? 1000 : 5000);
  if (flags & 1) cfg.admin_token = "s3cret";
  if (flags & 2) cfg.local_pid_alive = [](std::int64_t pid) { return pid % 4 != 0; };
  cfg.broker_info = {{"version", "fuzz"}};
  Harness h(std::move(cfg));
  in.until('\n');  // the rest of the first line is a comment
  while (!in.empty()) {
    std::string_view line = in.until('\n');
    if (line.size() < 3) continue;
    h.request(static_cast<std::uint8_t>(line[0]), line[1], static_cast<std::uint8_t>(line[2]), line.substr(3));
  }
  return 0;
}
