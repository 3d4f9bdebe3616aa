#pragma once
// The broker's state and rules, without sockets: which channels exist, who produces and
// consumes them, who is still alive. The broker feeds it one request at a time and
// sends what it returns; unit tests drive it directly with strings.
//
// Not thread-safe: one owner (the broker loop) calls everything.
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace plh {

using SteadyTime = std::chrono::steady_clock::time_point;

struct RegistryConfig {
  std::chrono::milliseconds heartbeat_interval{500};  // handed out in the ACKs
  std::chrono::milliseconds heartbeat_timeout{5000};  // silence after which a peer is removed
  std::string hostname;                               // the broker's host name (shown in PING_ACK only)
  // The broker's host_id() (plh/host_identity.hpp). PID checks apply only to peers that
  // registered with this same host_id (same kernel, same PID namespace); host names are
  // never compared. Empty = no PID checks.
  std::string host_id;
  std::optional<std::string> admin_token;             // CLOSE_REQ must carry it when set
  // The broker's --allow-keys (Z85 public keys), sent to producers in REG_ACK as
  // `allowed_keys` so their data sockets admit the same clients. nullopt = no list.
  std::optional<std::vector<std::string>> allowed_keys;
  // For peers on the broker's own host: returns false when the PID is gone, so a dead
  // process is removed before its heartbeat times out. Empty = no PID checks.
  std::function<bool(std::int64_t pid)> local_pid_alive;
  // Per-client caps (PeerInfo::client()); 0 = no cap. Refusals are LIMIT_EXCEEDED.
  std::size_t max_channels_per_client = 1000;
  std::size_t max_consumers_per_client = 1000;
  // Patterns one connection may watch at once (WATCH_REQ); 0 = no cap.
  std::size_t max_watches_per_connection = 64;
  // Extra fields merged into PING_ACK (version, pid, curve...).
  nlohmann::json broker_info = nlohmann::json::object();
};

// Where a request came from, as the broker's socket layer knows it (never from the body).
struct PeerInfo {
  std::string routing_id;  // the ROUTER routing id: replies and notifications go there
  std::string address;     // ZeroMQ "Peer-Address" of the connection ("" when unknown)
  bool loopback = false;   // the peer is on this machine: a loopback address, or ipc://, inproc://
  std::string user_id;     // ZAP "User-Id": the client's CURVE public key (Z85) when CURVE is on
  // Whom the per-client caps count: the CURVE key when known, else the connection.
  const std::string& client() const noexcept { return user_id.empty() ? routing_id : user_id; }
};

// True for 127.0.0.0/8, ::1 and ::ffff:127.x.y.z (text as in ZeroMQ's Peer-Address).
bool is_loopback_address(std::string_view address) noexcept;

// Limits on what a heartbeat's metrics may claim: a sample that makes a counter go
// backwards or implies a higher rate than this is ignored (counted, logged).
inline constexpr double kMaxMessagesPerSecond = 1e9;
inline constexpr double kMaxBytesPerSecond = 1e11;

// One message to send through the ROUTER: the peer's routing id, then two frames.
struct Outbound {
  std::string identity;
  std::string type;
  std::string body;
};

// Ownership: REG_ACK and CONSUMER_REG_ACK hand out a registration token (128 random bits,
// hex). DEREG_REQ, HEARTBEAT_REQ, CONSUMER_DEREG_REQ and a re-registration of a live entry
// must carry it ("token"), else NOT_OWNER (or CHANNEL_EXISTS for a REG_REQ without one). A
// producer without the token (a restarted process) gets a channel only once its owner is
// dead: silent past the heartbeat timeout, or (same host_id) its PID gone.
class ChannelRegistry {
 public:
  explicit ChannelRegistry(RegistryConfig config);

  // Handles one request from `peer`. Appends the reply to the sender (if the request
  // type has one, or it failed) and then any notifications to `out`. Never throws:
  // malformed input becomes an ERROR reply. Refusals (NOT_OWNER, UNAUTHORIZED,
  // LIMIT_EXCEEDED) are logged, at most a few per second.
  void handle(const PeerInfo& peer, std::string_view type, std::string_view body, SteadyTime now,
              std::vector<Outbound>& out);
  // The same for a peer known only by its routing id (not loopback, no CURVE key).
  void handle(std::string_view identity, std::string_view type, std::string_view body, SteadyTime now,
              std::vector<Outbound>& out);

  // Appends an ERROR reply (e.g. for a message with the wrong number of frames).
  void reject(std::string_view identity, std::string_view error_code, std::string_view message,
              std::vector<Outbound>& out) const;

  // Removes producers and consumers that were silent longer than the heartbeat timeout
  // (or, on this host, whose PID is gone) and appends the notifications.
  void sweep(SteadyTime now, std::vector<Outbound>& out);

  // O(1): running counters, kept by every change.
  std::size_t channel_count() const noexcept { return channels_.size(); }
  std::size_t consumer_count() const noexcept { return consumer_total_; }
  std::size_t watch_count() const noexcept;
  // Heartbeat metric samples ignored as implausible (backwards, or too fast).
  std::uint64_t rejected_metric_samples() const noexcept { return rejected_samples_; }
  const RegistryConfig& config() const noexcept { return config_; }

 private:
  struct Sample {
    SteadyTime t{};
    std::uint64_t messages = 0, bytes = 0;
  };
  struct Peer {
    std::int64_t pid = 0;
    std::string hostname, host_id;
    std::string identity;  // routing id for notifications
    std::string client;    // PeerInfo::client() it counts against
    std::string token;     // ownership proof
    // The token the registrant presented when this entry was made (its stale one from
    // before the entry was dropped): it proves the same owner too, so a re-registration
    // whose answer was lost is not mistaken for someone else's.
    std::string alias;
    SteadyTime last_seen{};
    std::uint64_t messages = 0, bytes = 0, gaps = 0;
    std::optional<std::uint64_t> latency_p50_us, latency_p99_us;  // request/reply servers
    Sample prev, last;
    int samples = 0;
  };
  struct Consumer : Peer {
    std::optional<std::uint64_t> expected_schema_hash;
  };
  struct Channel {
    std::string name, transport, pattern, endpoint, shm_name, schema_version;
    std::uint64_t schema_hash = 0;
    nlohmann::json metadata;
    std::optional<std::string> pubkey;
    Peer producer;
    std::vector<Consumer> consumers;
    SteadyTime registered{};
    std::int64_t registered_ns = 0;
    std::string disc_prefix;  // DISC_ACK body without consumer_count/corr and the closing brace
    std::string list_prefix;  // the static fields of a LIST_ACK entry, from '{' up to a trailing ','
  };
  using ChannelMap = std::unordered_map<std::string, Channel>;
  using ClientCounts = std::unordered_map<std::string, std::size_t>;

  void on_reg(const PeerInfo& peer, const nlohmann::json& req, SteadyTime now, std::vector<Outbound>& out);
  void on_disc(std::string_view id, const nlohmann::json& req, std::vector<Outbound>& out);
  void on_dereg(const PeerInfo& peer, const nlohmann::json& req, std::vector<Outbound>& out);
  void on_consumer_reg(const PeerInfo& peer, const nlohmann::json& req, SteadyTime now, std::vector<Outbound>& out);
  void on_consumer_dereg(const PeerInfo& peer, const nlohmann::json& req, std::vector<Outbound>& out);
  void on_heartbeat(const PeerInfo& peer, const nlohmann::json& req, SteadyTime now, std::vector<Outbound>& out);
  void on_list(std::string_view id, const nlohmann::json& req, SteadyTime now, std::vector<Outbound>& out);
  void on_ping(std::string_view id, const nlohmann::json& req, SteadyTime now, std::vector<Outbound>& out);
  void on_close(const PeerInfo& peer, const nlohmann::json& req, std::vector<Outbound>& out);
  void on_checksum_report(std::string_view id, const nlohmann::json& req, std::vector<Outbound>& out);
  void on_watch(const PeerInfo& peer, const nlohmann::json& req, SteadyTime now, std::vector<Outbound>& out);
  void on_unwatch(const PeerInfo& peer, const nlohmann::json& req, std::vector<Outbound>& out);
  // CHANNEL_REGISTERED_NOTIFY to every watcher whose pattern matches `channel`.
  void notify_watchers(const std::string& channel, std::vector<Outbound>& out) const;

  void reply(std::string_view id, std::string_view type, nlohmann::json body, const nlohmann::json& req,
             std::vector<Outbound>& out) const;
  // Removes the channel and tells its consumers (and, unless `tell_producer` is false, its
  // producer). `extra` fields (e.g. final_seq) are added to the notification.
  void close_channel(ChannelMap::iterator it, std::string_view reason, std::string_view detail, bool tell_producer,
                     std::vector<Outbound>& out, const nlohmann::json& extra = nlohmann::json::object());
  std::vector<Consumer>::iterator erase_consumer(Channel& ch, std::vector<Consumer>::iterator c);
  bool peer_is_dead(const Peer& p) const;
  static bool owns(const Peer& p, const std::optional<std::string>& token);
  void append_description(std::string& out, const Channel& ch, SteadyTime now) const;
  struct Metrics {
    std::optional<std::uint64_t> messages, bytes, gaps, latency_p50_us, latency_p99_us;
  };
  static std::optional<Metrics> parse_metrics(const nlohmann::json& req);  // checks the types
  void update_metrics(Peer& p, const Metrics& sample, SteadyTime now);    // checks plausibility
  static void rebuild_prefixes(Channel& ch, std::chrono::milliseconds interval);
  static void count(ClientCounts& counts, const std::string& client, int delta);
  void rebind(Peer& p, ClientCounts& counts, const PeerInfo& peer);
  // At most a few warnings per second (refusals, ignored metrics); the rest are summed up.
  void warn_limited(SteadyTime now, const std::string& line);
  void roll_warnings(SteadyTime now);

  RegistryConfig config_;
  SteadyTime started_;
  ChannelMap channels_;
  // WATCH_REQ patterns by the watcher's routing id. Any message from that connection (a
  // renewal WATCH_REQ, a heartbeat) keeps them; silent past the heartbeat timeout, the
  // sweep drops them.
  struct Watch {
    std::string pattern;
  };
  struct Watcher {
    std::vector<Watch> watches;
    SteadyTime last_seen{};
  };
  std::unordered_map<std::string, Watcher> watchers_;
  std::size_t consumer_total_ = 0;
  ClientCounts channels_per_client_, consumers_per_client_;
  std::uint64_t rejected_samples_ = 0;
  SteadyTime warning_window_{};
  std::uint64_t warnings_in_window_ = 0, warnings_suppressed_ = 0;
};

}  // namespace plh
