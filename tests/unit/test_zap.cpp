// plh::ZapHandler / ZapThread over real sockets: a CURVE server in a context with the
// handler admits listed client keys only; the decision function on odd requests; the
// allow-list as the broker sends it in REG_ACK.
#include <catch2/catch.hpp>
#include <zmq.h>

#include <chrono>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>

#include "plh/core/curve.hpp"
#include "plh/data/data_plane.hpp"
#include "plh/core/error.hpp"
#include "plh/core/text.hpp"
#include "plh/data/wire.hpp"
#include "plh/control/zap.hpp"

using namespace plh;
using namespace std::chrono_literals;

namespace {

// What a CURVE client with `client` keys connecting to `endpoint` sees first: true when
// its handshake succeeded, false when it was refused (ZMQ_EVENT_HANDSHAKE_FAILED_AUTH).
// Waits for the monitor event (at most 10 s).
bool handshake(void* ctx, const std::string& endpoint, const std::string& server_key, const CurveKeypair& client,
               int type = ZMQ_SUB) {
  void* s = zmq_socket(ctx, type);
  int zero = 0;
  zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
  zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, server_key.data(), server_key.size());
  zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, client.public_key.data(), 40);
  zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, client.secret_key.data(), 40);
  if (type == ZMQ_SUB) zmq_setsockopt(s, ZMQ_SUBSCRIBE, "", 0);
  const std::string mon = "inproc://zap-test-" + std::to_string(reinterpret_cast<std::uintptr_t>(s));
  zmq_socket_monitor(s, mon.c_str(), ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH);
  void* m = zmq_socket(ctx, ZMQ_PAIR);
  zmq_connect(m, mon.c_str());
  int timeout = 10000;
  zmq_setsockopt(m, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
  zmq_connect(s, endpoint.c_str());
  std::uint16_t event = 0;
  zmq_msg_t msg;
  zmq_msg_init(&msg);
  if (zmq_msg_recv(&msg, m, 0) >= 6) std::memcpy(&event, zmq_msg_data(&msg), 2);
  const bool more = zmq_msg_more(&msg);
  zmq_msg_close(&msg);
  if (more) {
    zmq_msg_init(&msg);
    zmq_msg_recv(&msg, m, 0);
    zmq_msg_close(&msg);
  }
  zmq_socket_monitor(s, nullptr, 0);
  zmq_close(m);
  zmq_close(s);
  REQUIRE(event != 0);  // one of the two events came
  return event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED;
}

}  // namespace

TEST_CASE("zap_decide: listed CURVE keys only, malformed or other mechanisms refused", "[zap]") {
  const CurveKeypair k = generate_curve_keypair(), other = generate_curve_keypair();
  std::string raw(32, '\0');
  REQUIRE(zmq_z85_decode(reinterpret_cast<std::uint8_t*>(raw.data()), k.public_key.c_str()));
  const std::vector<std::string> req{"1.0", "7", "plh", "127.0.0.1", "", "CURVE", raw};
  const KeyPolicy listed = std::unordered_set<std::string>{k.public_key};
  const KeyPolicy not_listed = std::unordered_set<std::string>{other.public_key};
  auto d = zap_decide(req, listed);
  CHECK(d.allowed);
  CHECK(d.status_code == "200");
  CHECK(d.client_key == k.public_key);
  d = zap_decide(req, not_listed);
  CHECK_FALSE(d.allowed);
  CHECK(d.status_code == "400");
  CHECK(zap_decide(req, std::nullopt).allowed);  // no list: any CURVE key
  auto plain = req;
  plain[5] = "NULL";
  plain.pop_back();
  CHECK_FALSE(zap_decide(plain, std::nullopt).allowed);
  CHECK_FALSE(zap_decide({"1.0", "7"}, std::nullopt).allowed);
  auto wrong_version = req;
  wrong_version[0] = "2.0";
  CHECK_FALSE(zap_decide(wrong_version, listed).allowed);
  auto short_key = req;
  short_key[6] = "abc";
  CHECK_FALSE(zap_decide(short_key, std::nullopt).allowed);
}

TEST_CASE("allowed_keys in REG_ACK: absent = no list, a list of Z85 keys, anything else is an error", "[zap]") {
  const auto k = generate_curve_keypair().public_key;
  CHECK_FALSE(allowed_keys_from_ack(nlohmann::json{{"status", "ok"}}).has_value());
  CHECK_FALSE(allowed_keys_from_ack(nlohmann::json{{"allowed_keys", nullptr}}).has_value());
  const auto p = allowed_keys_from_ack(nlohmann::json{{"allowed_keys", {k}}});
  REQUIRE(p);
  CHECK(p->count(k) == 1);
  const auto empty = allowed_keys_from_ack(nlohmann::json{{"allowed_keys", nlohmann::json::array()}});
  REQUIRE(empty);  // an empty list admits nobody, it is not "everyone"
  CHECK(empty->empty());
  CHECK_THROWS_AS(allowed_keys_from_ack(nlohmann::json{{"allowed_keys", "x"}}), Error);
  CHECK_THROWS_AS(allowed_keys_from_ack(nlohmann::json{{"allowed_keys", {"not a key"}}}), Error);
  CHECK_THROWS_AS(allowed_keys_from_ack(nlohmann::json{{"allowed_keys", {1}}}), Error);
}

TEST_CASE("a publisher with admission: a listed key gets data, an unlisted fresh key pair is refused", "[zap]") {
  PublisherConfig cfg;
  cfg.curve = generate_curve_keypair();
  cfg.admission = true;
  Publisher pub(cfg);
  const CurveKeypair listed = generate_curve_keypair(), stranger = generate_curve_keypair();
  pub.set_allowed_keys(std::unordered_set<std::string>{listed.public_key});
  void* ctx = zmq_ctx_new();
  CHECK_FALSE(handshake(ctx, pub.endpoint(), cfg.curve->public_key, stranger));
  CHECK(handshake(ctx, pub.endpoint(), cfg.curve->public_key, listed));
  zmq_ctx_term(ctx);
}

TEST_CASE("a pipeline publisher with admission refuses an unlisted worker too", "[zap]") {
  PublisherConfig cfg;
  cfg.pattern = Pattern::pipeline;
  cfg.curve = generate_curve_keypair();
  cfg.admission = true;
  Publisher pub(cfg);
  const CurveKeypair listed = generate_curve_keypair(), stranger = generate_curve_keypair();
  pub.set_allowed_keys(std::unordered_set<std::string>{listed.public_key});
  void* ctx = zmq_ctx_new();
  CHECK_FALSE(handshake(ctx, pub.endpoint(), cfg.curve->public_key, stranger, ZMQ_DEALER));
  CHECK(handshake(ctx, pub.endpoint(), cfg.curve->public_key, listed, ZMQ_DEALER));
  zmq_ctx_term(ctx);
}

TEST_CASE("ZapThread: handshakes wait until the policy is known, then follow it", "[zap]") {
  void* ctx = zmq_ctx_new();
  const CurveKeypair server = generate_curve_keypair(), client = generate_curve_keypair();
  void* pub = zmq_socket(ctx, ZMQ_PUB);
  int one = 1, zero = 0;
  zmq_setsockopt(pub, ZMQ_LINGER, &zero, sizeof zero);
  zmq_setsockopt(pub, ZMQ_CURVE_SERVER, &one, sizeof one);
  zmq_setsockopt(pub, ZMQ_CURVE_SECRETKEY, server.secret_key.data(), 40);
  zmq_setsockopt(pub, ZMQ_ZAP_DOMAIN, kZapDomain.data(), kZapDomain.size());
  {
    ZapThread zap(ctx, "test");
    REQUIRE(zmq_bind(pub, "tcp://127.0.0.1:0") == 0);
    char ep[256];
    std::size_t len = sizeof ep;
    zmq_getsockopt(pub, ZMQ_LAST_ENDPOINT, ep, &len);
    zap.set_policy(std::unordered_set<std::string>{});  // nobody
    CHECK_FALSE(handshake(ctx, ep, server.public_key, client));
    zap.set_policy(std::nullopt);  // anybody with CURVE
    CHECK(handshake(ctx, ep, server.public_key, client));
  }
  zmq_close(pub);
  zmq_ctx_term(ctx);
}
