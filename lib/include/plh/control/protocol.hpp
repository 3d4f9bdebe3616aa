#pragma once
// The control-plane protocol between plh clients and plh-broker (docs/protocol.md).
//
// Every message is two ZeroMQ frames: the message type (ASCII, e.g. "REG_REQ") and a
// JSON object body. A request may carry "corr" (a string or number); the reply echoes
// it. A failed request is answered with type "ERROR" and the body
// {"status":"error","error_code":CODE,"message":TEXT}.
//
// This header holds the vocabulary (types, error codes), the checked field accessors
// used on both sides (nothing from the network is used before its type and bounds are
// checked), and the mapping of an ERROR reply to the suite's exit-code exceptions.
// Everything here is stateless and thread-safe.
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "plh/core/error.hpp"
#include "plh/core/json.hpp"

namespace plh::protocol {

// Requests and their replies.
inline constexpr std::string_view kRegReq = "REG_REQ", kRegAck = "REG_ACK";
inline constexpr std::string_view kDiscReq = "DISC_REQ", kDiscAck = "DISC_ACK";
inline constexpr std::string_view kDeregReq = "DEREG_REQ", kDeregAck = "DEREG_ACK";
inline constexpr std::string_view kConsumerRegReq = "CONSUMER_REG_REQ", kConsumerRegAck = "CONSUMER_REG_ACK";
inline constexpr std::string_view kConsumerDeregReq = "CONSUMER_DEREG_REQ", kConsumerDeregAck = "CONSUMER_DEREG_ACK";
inline constexpr std::string_view kHeartbeatReq = "HEARTBEAT_REQ";
inline constexpr std::string_view kListReq = "LIST_REQ", kListAck = "LIST_ACK";
inline constexpr std::string_view kPingReq = "PING_REQ", kPingAck = "PING_ACK";
inline constexpr std::string_view kCloseReq = "CLOSE_REQ", kCloseAck = "CLOSE_ACK";
inline constexpr std::string_view kWatchReq = "WATCH_REQ", kWatchAck = "WATCH_ACK";
inline constexpr std::string_view kUnwatchReq = "UNWATCH_REQ", kUnwatchAck = "UNWATCH_ACK";
inline constexpr std::string_view kChecksumErrorReport = "CHECKSUM_ERROR_REPORT";
inline constexpr std::string_view kError = "ERROR";

// Broker -> client notifications.
inline constexpr std::string_view kChannelClosingNotify = "CHANNEL_CLOSING_NOTIFY";
inline constexpr std::string_view kConsumerDiedNotify = "CONSUMER_DIED_NOTIFY";
inline constexpr std::string_view kChannelErrorNotify = "CHANNEL_ERROR_NOTIFY";
// Sent to a producer when a consumer joins or leaves in an orderly way (body: channel,
// consumer_pid, consumer_hostname, consumer_count). Lets `plh-pub -w N` wait without polling.
inline constexpr std::string_view kConsumerJoinedNotify = "CONSUMER_JOINED_NOTIFY";
inline constexpr std::string_view kConsumerLeftNotify = "CONSUMER_LEFT_NOTIFY";
// Sent to a watcher (WATCH_REQ) when a channel matching its pattern is registered (body:
// channel, pattern).
inline constexpr std::string_view kChannelRegisteredNotify = "CHANNEL_REGISTERED_NOTIFY";

// Error codes.
inline constexpr std::string_view kInvalidRequest = "INVALID_REQUEST";
inline constexpr std::string_view kUnknownMsgType = "UNKNOWN_MSG_TYPE";
inline constexpr std::string_view kChannelNotFound = "CHANNEL_NOT_FOUND";
inline constexpr std::string_view kSchemaMismatch = "SCHEMA_MISMATCH";
inline constexpr std::string_view kNotRegistered = "NOT_REGISTERED";
inline constexpr std::string_view kChannelExists = "CHANNEL_EXISTS";
inline constexpr std::string_view kUnauthorized = "UNAUTHORIZED";
// The request acts on a registration the sender does not own (no or wrong "token").
inline constexpr std::string_view kNotOwner = "NOT_OWNER";
// A per-client cap (channels, consumers) is reached.
inline constexpr std::string_view kLimitExceeded = "LIMIT_EXCEEDED";

// Closing reasons.
inline constexpr std::string_view kReasonProducerDeregistered = "producer_deregistered";
inline constexpr std::string_view kReasonHeartbeatTimeout = "heartbeat_timeout";
inline constexpr std::string_view kReasonAdminRequested = "admin_requested";
inline constexpr std::string_view kReasonProcessExited = "process_exited";

// The broker refuses (libzmq drops, ZMQ_MAXMSGSIZE) any inbound frame larger than this.
inline constexpr std::int64_t kMaxInboundMessage = 1 << 20;
// A request body nested deeper than this (objects and arrays), or holding more JSON
// values than this, is INVALID_REQUEST; nothing deeper is ever built, copied or sent.
inline constexpr int kMaxRequestDepth = 32;
inline constexpr std::size_t kMaxRequestValues = 16384;
// Longest string field the broker accepts (endpoints, host names, versions...).
inline constexpr std::size_t kMaxStringField = 1024;

// "REG_REQ" -> "REG_ACK"; empty for types without a reply.
std::string_view ack_type_for(std::string_view request_type) noexcept;

// A request that cannot be served; carries the protocol error code.
class ProtocolError : public std::runtime_error {
 public:
  ProtocolError(std::string_view code, const std::string& message) : std::runtime_error(message), code_(code) {}
  std::string_view code() const noexcept { return code_; }

 private:
  std::string_view code_;  // always one of the constants above
};

// Checked accessors: throw ProtocolError(INVALID_REQUEST, "field 'x' ...") when the
// field is missing (required variants) or has the wrong type or is out of bounds.
const std::string& require_string(const nlohmann::json& obj, const char* key, std::size_t max_len = kMaxStringField);
std::optional<std::string> optional_string(const nlohmann::json& obj, const char* key,
                                           std::size_t max_len = kMaxStringField);
std::int64_t require_pid(const nlohmann::json& obj, const char* key);
std::optional<std::uint64_t> optional_u64(const nlohmann::json& obj, const char* key);
// A channel name valid by the SPEC grammar.
const std::string& require_channel(const nlohmann::json& obj, const char* key = "channel");
// A channel pattern (plh(7): names with "*" and a final ">").
const std::string& require_pattern(const nlohmann::json& obj, const char* key = "pattern");

// The strict JSON parser (core/json.hpp) under the names the control plane has used.
using json_text::append_json_string;
using json_text::JsonLimits;
using json_text::JsonScan;
using json_text::parse_json;
using json_text::scan_json;
inline constexpr JsonLimits kRequestLimits{kMaxRequestDepth, kMaxRequestValues};

// {"status":"error","error_code":code,"message":message}
nlohmann::json error_body(std::string_view code, std::string_view message);

// Client side: maps an ERROR reply body to the suite's exception (CHANNEL_NOT_FOUND ->
// NotFoundError, SCHEMA_MISMATCH/UNAUTHORIZED -> RefusedError, NOT_OWNER/LIMIT_EXCEEDED ->
// BrokerErrorReply with exit code 6, others -> BrokerErrorReply with exit code 1).
// A body that is not a well-formed error gets Error(failure, "malformed ERROR reply").
[[noreturn]] void throw_error_reply(std::string_view request_type, const nlohmann::json& body);

}  // namespace plh::protocol

namespace plh {
// An ERROR reply whose code has no exception of its own (exit 1, or 6 for NOT_OWNER and
// LIMIT_EXCEEDED); error_code() tells which.
class BrokerErrorReply : public Error {
 public:
  BrokerErrorReply(std::string code, const std::string& message, ExitCode exit = ExitCode::failure)
      : Error(exit, message), code_(std::move(code)) {}
  const std::string& error_code() const noexcept { return code_; }

 private:
  std::string code_;
};
}  // namespace plh
