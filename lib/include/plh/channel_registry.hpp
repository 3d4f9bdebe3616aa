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
  std::string hostname;                               // the broker's host name
  std::optional<std::string> admin_token;             // CLOSE_REQ must carry it when set
  // The broker's --allow-keys (Z85 public keys), sent to producers in REG_ACK as
  // `allowed_keys` so their data sockets admit the same clients. nullopt = no list.
  std::optional<std::vector<std::string>> allowed_keys;
  // For peers on the broker's own host: returns false when the PID is gone, so a dead
  // process is removed before its heartbeat times out. Empty = no PID checks.
  std::function<bool(std::int64_t pid)> local_pid_alive;
  // Extra fields merged into PING_ACK (version, pid, curve...).
  nlohmann::json broker_info = nlohmann::json::object();
};

// One message to send through the ROUTER: the peer's routing id, then two frames.
struct Outbound {
  std::string identity;
  std::string type;
  std::string body;
};

class ChannelRegistry {
 public:
  explicit ChannelRegistry(RegistryConfig config);

  // Handles one request from `identity`. Appends the reply to the sender (if the
  // request type has one, or it failed) and then any notifications to `out`. Never
  // throws: malformed input becomes an ERROR reply.
  void handle(std::string_view identity, std::string_view type, std::string_view body, SteadyTime now,
              std::vector<Outbound>& out);

  // Appends an ERROR reply (e.g. for a message with the wrong number of frames).
  void reject(std::string_view identity, std::string_view error_code, std::string_view message,
              std::vector<Outbound>& out) const;

  // Removes producers and consumers that were silent longer than the heartbeat timeout
  // (or, on this host, whose PID is gone) and appends the notifications.
  void sweep(SteadyTime now, std::vector<Outbound>& out);

  std::size_t channel_count() const noexcept { return channels_.size(); }
  std::size_t consumer_count() const noexcept;
  const RegistryConfig& config() const noexcept { return config_; }

 private:
  struct Sample {
    SteadyTime t{};
    std::uint64_t messages = 0, bytes = 0;
  };
  struct Peer {
    std::int64_t pid = 0;
    std::string hostname;
    std::string identity;
    SteadyTime last_seen{};
    std::uint64_t messages = 0, bytes = 0, gaps = 0;
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

  void on_reg(std::string_view id, const nlohmann::json& req, SteadyTime now, std::vector<Outbound>& out);
  void on_disc(std::string_view id, const nlohmann::json& req, std::vector<Outbound>& out);
  void on_dereg(std::string_view id, const nlohmann::json& req, std::vector<Outbound>& out);
  void on_consumer_reg(std::string_view id, const nlohmann::json& req, SteadyTime now, std::vector<Outbound>& out);
  void on_consumer_dereg(std::string_view id, const nlohmann::json& req, std::vector<Outbound>& out);
  void on_heartbeat(std::string_view id, const nlohmann::json& req, SteadyTime now, std::vector<Outbound>& out);
  void on_list(std::string_view id, const nlohmann::json& req, SteadyTime now, std::vector<Outbound>& out);
  void on_ping(std::string_view id, const nlohmann::json& req, SteadyTime now, std::vector<Outbound>& out);
  void on_close(std::string_view id, const nlohmann::json& req, std::vector<Outbound>& out);
  void on_checksum_report(std::string_view id, const nlohmann::json& req, std::vector<Outbound>& out);

  void reply(std::string_view id, std::string_view type, nlohmann::json body, const nlohmann::json& req,
             std::vector<Outbound>& out) const;
  // Removes the channel and tells its consumers (and, unless `tell_producer` is false, its producer).
  void close_channel(std::unordered_map<std::string, Channel>::iterator it, std::string_view reason,
                     std::string_view detail, bool tell_producer, std::vector<Outbound>& out,
                     std::optional<std::uint64_t> final_seq = std::nullopt);
  bool peer_is_dead(const Peer& p) const;
  void append_description(std::string& out, const Channel& ch, SteadyTime now) const;
  static void update_metrics(Peer& p, const nlohmann::json& metrics, SteadyTime now);
  static void rebuild_prefixes(Channel& ch, std::chrono::milliseconds interval);

  RegistryConfig config_;
  SteadyTime started_;
  std::unordered_map<std::string, Channel> channels_;
  mutable std::string scratch_;
};

}  // namespace plh
