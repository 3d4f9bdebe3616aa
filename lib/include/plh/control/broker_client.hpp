#pragma once
// BrokerClient: the one way every plh tool talks to plh-broker.
//
// A DEALER socket owned by a background thread. Requests from any thread are handed to
// that thread, correlated by "corr", and waited for with a timeout. The thread also
// sends heartbeats (with metrics counters) for everything registered through this
// client, and delivers notifications to the callback.
//
// Ownership: the broker answers each registration with a token (REG_ACK /
// CONSUMER_REG_ACK "token"); the client keeps it and sends it with every heartbeat,
// re-registration and deregistration, so no other client can act on its entries. Tools
// never see it.
//
// Healing: a registration the broker dropped for silence comes back by itself. The client
// registers again (with its token) after a reconnect, when a heartbeat is answered
// NOT_REGISTERED or NOT_OWNER, and when a CHANNEL_CLOSING_NOTIFY with reason
// heartbeat_timeout names one of its channels; never after an admin CLOSE, the
// producer's DEREG, or its own deregister_*(). (The broker keeps no state on disk, so a
// restarted broker learns its channels again this way too.) If meanwhile another producer
// registered the channel, the client stops heartbeating it, logs a warning, reports
// RegistrationState::taken_over and calls the on_registration_lost callback; what to do
// then is the tool's choice. A consumer whose channel went away keeps trying until it is
// back (or it deregisters).
//
// Errors (all plh::Error, carrying the SPEC exit code):
//   UnreachableError (5)  no reply within the timeout
//   RefusedError (6)      CURVE handshake refused (wrong broker key, client key not
//                         allowed, mechanism mismatch; the message says which),
//                         SCHEMA_MISMATCH, UNAUTHORIZED
//   NotFoundError (4)     CHANNEL_NOT_FOUND
//   BrokerErrorReply (1)  other ERROR replies (error_code() tells which)
//   Error (1)             a malformed reply (validated before use, never trusted)
//
// CURVE: when server_key is set the connection is encrypted. The client keypair is
// PLH_CLIENT_KEY=@PATH (a secret key file written by `plh-ctl keygen`, or its prefix),
// else an ephemeral keypair made for this connection.
//
// Thread safety: all public members may be called from any thread, concurrently.
// Signals: the threads this client starts (its own and libzmq's) block all signals, so
// SIGINT/SIGTERM are delivered to the application's threads.
#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace plh {

struct BrokerClientConfig {
  std::string endpoint;                   // e.g. from cli::resolve_broker_endpoint
  std::optional<std::string> server_key;  // Z85 broker public key -> CURVE
  std::chrono::milliseconds timeout{2000};  // per request
};

// Counters a producer/consumer updates on its hot path; heartbeats carry them.
struct ChannelMetrics {
  std::atomic<std::uint64_t> messages{0}, bytes{0}, gaps{0};
  // Request/reply servers: p50/p99 service time in microseconds (0: none yet, not sent).
  std::atomic<std::uint64_t> latency_p50_us{0}, latency_p99_us{0};
};

struct ChannelRegistration {
  std::string channel, transport = "zmq", pattern = "pubsub", endpoint, shm_name;
  std::uint64_t schema_hash = 0;
  std::string schema_version;
  nlohmann::json metadata = nlohmann::json::object();
  std::optional<std::string> pubkey;  // producer's CURVE public key for the data plane
};

class BrokerClient {
 public:
  // Connects (asynchronously: an absent broker shows up as UnreachableError on the first
  // request) and starts the background thread. Throws UsageError for a bad
  // PLH_CLIENT_KEY, Error for a malformed endpoint.
  explicit BrokerClient(BrokerClientConfig cfg);
  // Deregisters what it registered (best effort, short timeout, only while connected)
  // and stops the thread.
  ~BrokerClient();
  BrokerClient(const BrokerClient&) = delete;
  BrokerClient& operator=(const BrokerClient&) = delete;

  // Any request with a reply ("X_REQ" -> "X_ACK"); returns the validated ACK body
  // (a JSON object with "status":"ok"). Adds "corr" to the body.
  nlohmann::json request(const std::string& type, nlohmann::json body);
  // The same, returning the reply body as text (checked: valid JSON, an object with
  // "status":"ok") without building a tree; for passing large replies through.
  std::string request_raw(const std::string& type, nlohmann::json body);

  // Producer: REG_REQ (producer_pid/hostname filled in). Remembered and re-sent after a
  // broker restart; heartbeats (role producer) at the interval from REG_ACK, carrying
  // `metrics` when given.
  nlohmann::json register_channel(const ChannelRegistration& reg, std::shared_ptr<ChannelMetrics> metrics = nullptr);
  // DEREG_REQ (with the token; `final_seq`, when given, the last sequence number sent:
  // the broker passes it to the consumers in CHANNEL_CLOSING_NOTIFY); forgets the
  // registration. A channel already gone, or now another producer's, is not an error
  // (and is left alone).
  void deregister_channel(const std::string& channel, std::optional<std::uint64_t> final_seq = std::nullopt);
  // DISC_ACK body, validated: channel, transport, pattern, endpoint, shm_name,
  // schema_hash, schema_version, pubkey, metadata, producer_pid, producer_hostname,
  // consumer_count, heartbeat_interval_ms.
  nlohmann::json discover(const std::string& channel);
  // Consumer: CONSUMER_REG_REQ (+ heartbeats role consumer), remembered for
  // re-registration. The ACK carries the DISC_ACK fields.
  nlohmann::json register_consumer(const std::string& channel, std::optional<std::uint64_t> expected_schema_hash = {},
                                   std::shared_ptr<ChannelMetrics> metrics = nullptr);
  // CONSUMER_DEREG_REQ; forgets the registration. A channel already gone is not an error.
  void deregister_consumer(const std::string& channel);

  // WATCH_REQ: the names registered now that match `pattern` (plh(7)); afterwards the
  // broker sends CHANNEL_REGISTERED_NOTIFY {channel, pattern} to the notification callback
  // for each new registration that matches. The watch is renewed with every heartbeat and
  // sent again after a reconnect (a restarted broker): the channels its WATCH_ACK lists
  // then reach the callback as CHANNEL_REGISTERED_NOTIFY too. BrokerErrorReply
  // LIMIT_EXCEEDED beyond the broker's cap per connection.
  std::vector<std::string> watch(const std::string& pattern);
  // UNWATCH_REQ; forgets the watch.
  void unwatch(const std::string& pattern);

  // Notifications: CHANNEL_CLOSING_NOTIFY, CONSUMER_DIED_NOTIFY, CHANNEL_ERROR_NOTIFY,
  // CHANNEL_REGISTERED_NOTIFY (watch()),
  // CONSUMER_JOINED_NOTIFY, CONSUMER_LEFT_NOTIFY, forwarded CHECKSUM_ERROR_REPORT.
  // Called on the background thread: keep it short and thread-safe. After a
  // CHANNEL_CLOSING_NOTIFY the client forgets that channel (no re-registration), except
  // with reason heartbeat_timeout (see Healing above).
  void on_notification(std::function<void(const std::string& type, const nlohmann::json& body)> cb);

  // Where a registration made through this client stands.
  enum class RegistrationState {
    none,        // not registered through this client (or deregistered, or closed)
    active,      // registered, heartbeating
    healing,     // the broker dropped it; registering again
    taken_over,  // producer only: another producer owns the channel now; given up
  };
  RegistrationState producer_state(const std::string& channel) const;
  RegistrationState consumer_state(const std::string& channel) const;
  // Called on the background thread when a producer registration cannot be restored
  // because another producer owns the channel now (`detail`: the broker's message).
  void on_registration_lost(std::function<void(const std::string& channel, const std::string& detail)> cb);

  // Fire-and-forget message (e.g. CHECKSUM_ERROR_REPORT). No reply is awaited.
  void send(const std::string& type, nlohmann::json body);

  // True while the connection to the broker is up (handshake done).
  bool connected() const noexcept;
  const std::string& endpoint() const noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Schema hash of "ID[@VERSION]" as given to --schema: XXH3-64 of the whole text, so a
// different version is a different schema. Never 0 for a non-empty id (0 = no schema).
std::uint64_t schema_hash(std::string_view id);

}  // namespace plh
