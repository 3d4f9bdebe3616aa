#include "plh/control/protocol.hpp"

#include <cstring>

#include "plh/core/text.hpp"

namespace plh::protocol {

using nlohmann::json;

std::string_view ack_type_for(std::string_view t) noexcept {
  if (t == kRegReq) return kRegAck;
  if (t == kDiscReq) return kDiscAck;
  if (t == kDeregReq) return kDeregAck;
  if (t == kConsumerRegReq) return kConsumerRegAck;
  if (t == kConsumerDeregReq) return kConsumerDeregAck;
  if (t == kListReq) return kListAck;
  if (t == kPingReq) return kPingAck;
  if (t == kCloseReq) return kCloseAck;
  if (t == kWatchReq) return kWatchAck;
  if (t == kUnwatchReq) return kUnwatchAck;
  return {};
}

namespace {
[[noreturn]] void bad_field(const char* key, const char* what) {
  throw ProtocolError(kInvalidRequest, std::string("field '") + key + "' " + what);
}
}  // namespace

const std::string& require_string(const json& obj, const char* key, std::size_t max_len) {
  auto it = obj.find(key);
  if (it == obj.end()) bad_field(key, "is missing");
  if (!it->is_string()) bad_field(key, "must be a string");
  const auto& s = it->get_ref<const std::string&>();
  if (s.size() > max_len) bad_field(key, "is too long");
  return s;
}

std::optional<std::string> optional_string(const json& obj, const char* key, std::size_t max_len) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::nullopt;
  if (!it->is_string()) bad_field(key, "must be a string");
  const auto& s = it->get_ref<const std::string&>();
  if (s.size() > max_len) bad_field(key, "is too long");
  return s;
}

std::int64_t require_pid(const json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end()) bad_field(key, "is missing");
  if (!it->is_number_integer()) bad_field(key, "must be an integer");
  std::int64_t v = 0;
  if (it->is_number_unsigned()) {
    const auto u = it->get<std::uint64_t>();
    if (u > 0x7fffffffu) bad_field(key, "is out of range");
    v = static_cast<std::int64_t>(u);
  } else {
    v = it->get<std::int64_t>();
  }
  if (v <= 0 || v > 0x7fffffff) bad_field(key, "is out of range");
  return v;
}

std::optional<std::uint64_t> optional_u64(const json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::nullopt;
  if (it->is_number_unsigned()) return it->get<std::uint64_t>();
  if (it->is_number_integer()) {
    const auto v = it->get<std::int64_t>();
    if (v < 0) bad_field(key, "must not be negative");
    return static_cast<std::uint64_t>(v);
  }
  bad_field(key, "must be a non-negative integer");
}

const std::string& require_channel(const json& obj, const char* key) {
  const std::string& name = require_string(obj, key, 255);
  if (const std::string problem = channel_name_problem(name); !problem.empty())
    throw ProtocolError(kInvalidRequest, "invalid channel name: " + problem);
  return name;
}

const std::string& require_pattern(const json& obj, const char* key) {
  const std::string& pattern = require_string(obj, key, 255);
  if (const std::string problem = channel_pattern_problem(pattern); !problem.empty())
    throw ProtocolError(kInvalidRequest, "invalid channel pattern: " + problem);
  return pattern;
}

json error_body(std::string_view code, std::string_view message) {
  return json{{"status", "error"}, {"error_code", code}, {"message", message}};
}

void throw_error_reply(std::string_view request_type, const json& body) {
  const std::string req(request_type);
  if (!body.is_object()) throw Error(ExitCode::failure, "malformed ERROR reply to " + req);
  auto code_it = body.find("error_code");
  auto msg_it = body.find("message");
  if (code_it == body.end() || !code_it->is_string())
    throw Error(ExitCode::failure, "malformed ERROR reply to " + req + ": no error_code");
  const std::string code = code_it->get<std::string>();
  std::string message = (msg_it != body.end() && msg_it->is_string()) ? msg_it->get<std::string>() : code;
  if (message.size() > 512) message.resize(512);
  if (code == kChannelNotFound) throw NotFoundError(message);
  if (code == kSchemaMismatch || code == kUnauthorized) throw RefusedError(message);
  const bool refused = code == kNotOwner || code == kLimitExceeded;
  // The broker's message says it in the user's words ("channel 'x' is already published by
  // pid 123 on hostB"); the protocol names (request, error code) stay out of it.
  throw BrokerErrorReply(code, message,
                         refused ? ExitCode::refused : ExitCode::failure);
}

}  // namespace plh::protocol
