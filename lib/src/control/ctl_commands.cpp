#include "plh/control/ctl_commands.hpp"

#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <simdjson.h>

#include "plh/core/curve.hpp"
#include "plh/core/error.hpp"
#include "plh/control/protocol.hpp"
#include "plh/core/signals.hpp"
#include "plh/core/text.hpp"

namespace plh::ctl {

using nlohmann::json;
using namespace std::chrono;

namespace {

void emit(std::FILE* out, const std::string& text) {
  if (text.empty()) return;
  if (std::fwrite(text.data(), 1, text.size(), out) != text.size() || std::fflush(out) != 0) {
    if (errno == EPIPE) throw BrokenPipe();
    throw Error(ExitCode::failure, "cannot write output: " + errno_text(errno));
  }
}

void emit_json(std::FILE* out, const json& j) { emit(out, j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n"); }

// JSON -> text for tables; never throws on odd values.
std::string str(const json& j, const char* key, const char* dflt = "-") {
  if (!j.is_object()) return dflt;
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  if (it->is_string()) {
    const auto& s = it->get_ref<const std::string&>();
    return s.empty() ? dflt : s;
  }
  return it->dump();
}

// A count from the broker: a non-negative integer, else 0.
std::uint64_t count_of(const json& j, const char* key) {
  auto it = j.find(key);
  return (it != j.end() && it->is_number_unsigned()) ? it->get<std::uint64_t>() : 0;
}

double num(const json& j, const char* key) {
  if (!j.is_object()) return 0;
  auto it = j.find(key);
  return (it != j.end() && it->is_number()) ? it->get<double>() : 0.0;
}

std::string age_text(double ms) {
  char buf[32];
  if (ms < 0) ms = 0;
  const double s = ms / 1000.0;
  if (s < 10) std::snprintf(buf, sizeof buf, "%.1fs", s);
  else if (s < 120) std::snprintf(buf, sizeof buf, "%.0fs", s);
  else if (s < 7200) std::snprintf(buf, sizeof buf, "%dm%02ds", static_cast<int>(s / 60), static_cast<int>(s) % 60);
  else std::snprintf(buf, sizeof buf, "%dh%02dm", static_cast<int>(s / 3600), (static_cast<int>(s) / 60) % 60);
  return buf;
}

std::string si(double v, const char* unit = "") {
  char buf[32];
  const char* suffix[] = {"", "k", "M", "G", "T"};
  int i = 0;
  while (std::fabs(v) >= 1000 && i < 4) {
    v /= 1000;
    ++i;
  }
  if (i == 0 && v == std::floor(v)) std::snprintf(buf, sizeof buf, "%.0f%s", v, unit);
  else std::snprintf(buf, sizeof buf, "%.1f%s%s", v, suffix[i], unit);
  return buf;
}

std::string iec_bytes(double v) {
  char buf[32];
  const char* suffix[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int i = 0;
  while (v >= 1024 && i < 4) {
    v /= 1024;
    ++i;
  }
  if (i == 0) std::snprintf(buf, sizeof buf, "%.0f %s", v, suffix[i]);
  else std::snprintf(buf, sizeof buf, "%.1f %s", v, suffix[i]);
  return buf;
}

std::string schema_text(const json& ch) {
  // The schema ID as the producer gave it (--schema imu@3 -> imu@3), else the version, else the hash.
  if (auto md = ch.find("metadata"); md != ch.end() && md->is_object())
    if (auto s = md->find("schema"); s != md->end() && s->is_string() && !s->get_ref<const std::string&>().empty())
      return printable(s->get_ref<const std::string&>(), 64);
  const std::string version = str(ch, "schema_version", "");
  if (!version.empty()) return version;
  auto it = ch.find("schema_hash");
  if (it == ch.end() || !it->is_number_unsigned() || it->get<std::uint64_t>() == 0) return "-";
  char buf[24];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, it->get<std::uint64_t>());
  return buf;
}

std::string producer_text(const json& ch) {
  auto it = ch.find("producer");
  if (it == ch.end() || !it->is_object()) return "-";
  return str(*it, "pid") + "@" + str(*it, "hostname");
}

const json& channels_of(const json& ack) {
  auto it = ack.find("channels");
  if (it == ack.end() || !it->is_array()) throw Error(ExitCode::failure, "malformed LIST_ACK from the broker: no channels array");
  for (const auto& ch : *it)
    if (!ch.is_object() || !ch.contains("channel") || !ch["channel"].is_string())
      throw Error(ExitCode::failure, "malformed LIST_ACK from the broker: a channel entry without a name");
  return *it;
}

// `plh-ctl list`'s rows from the LIST_ACK text through simdjson's DOM: for 10,000
// channels (4.6 MB) a few ms, where building an nlohmann tree took ~170 ms
// (bench/bench_simdjson.cpp). The cells are the same as str()/num()/schema_text() give.
namespace sj = simdjson::dom;

std::string cell(const sj::element& e) {
  switch (e.type()) {
    case sj::element_type::STRING: {
      const std::string_view v = e.get_string().value_unsafe();
      return v.empty() ? std::string("-") : std::string(v);
    }
    case sj::element_type::INT64: return std::to_string(e.get_int64().value_unsafe());
    case sj::element_type::UINT64: return std::to_string(e.get_uint64().value_unsafe());
    case sj::element_type::NULL_VALUE: return "-";
    default: return simdjson::minify(e);
  }
}

std::string cell(const sj::object& o, std::string_view key) {
  sj::element e;
  return o.at_key(key).get(e) == simdjson::SUCCESS ? cell(e) : std::string("-");
}

double number(const sj::object& o, std::string_view key) {
  sj::element e;
  if (o.at_key(key).get(e) != simdjson::SUCCESS) return 0;
  double d = 0;
  return e.is_number() && e.get_double().get(d) == simdjson::SUCCESS ? d : 0.0;
}

std::string schema_cell(const sj::object& ch) {
  sj::object md;
  std::string_view schema;
  if (ch.at_key("metadata").get_object().get(md) == simdjson::SUCCESS &&
      md.at_key("schema").get_string().get(schema) == simdjson::SUCCESS && !schema.empty())
    return printable(schema, 64);
  if (const std::string version = cell(ch, "schema_version"); version != "-") return version;
  std::uint64_t hash = 0;
  if (ch.at_key("schema_hash").get_uint64().get(hash) != simdjson::SUCCESS || hash == 0) return "-";
  char buf[24];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, hash);
  return buf;
}

std::vector<std::vector<std::string>> list_rows(const std::string& text) {
  sj::parser parser;
  sj::element doc;
  sj::array channels;
  if (parser.parse(text).get(doc) != simdjson::SUCCESS || doc["channels"].get_array().get(channels) != simdjson::SUCCESS)
    throw Error(ExitCode::failure, "malformed LIST_ACK from the broker: no channels array");
  std::vector<std::vector<std::string>> rows;
  rows.reserve(channels.size() + 1);
  // UPTIME: since the channel registered; HEARTBEAT: since the producer was last heard.
  rows.push_back({"CHANNEL", "TRANSPORT", "PATTERN", "PRODUCER", "CONSUMERS", "SCHEMA", "STATE", "UPTIME", "HEARTBEAT"});
  for (sj::element e : channels) {
    sj::object ch;
    std::string_view name;
    if (e.get_object().get(ch) != simdjson::SUCCESS || ch.at_key("channel").get_string().get(name) != simdjson::SUCCESS)
      throw Error(ExitCode::failure, "malformed LIST_ACK from the broker: a channel entry without a name");
    sj::object producer;
    const std::string producer_cell = ch.at_key("producer").get_object().get(producer) == simdjson::SUCCESS
                                          ? cell(producer, "pid") + "@" + cell(producer, "hostname")
                                          : std::string("-");
    const std::string consumers = cell(ch, "consumer_count");
    rows.push_back({name.empty() ? std::string("-") : std::string(name), cell(ch, "transport"), cell(ch, "pattern"),
                    producer_cell, consumers == "-" ? std::string("0") : consumers, schema_cell(ch), cell(ch, "state"),
                    age_text(number(ch, "age_ms")), age_text(number(ch, "last_heartbeat_age_ms"))});
  }
  return rows;
}

bool numeric_cell(const std::string& s) {
  if (s.empty() || s == "-") return false;
  const char c = s[0];
  return (c >= '0' && c <= '9') || (c == '-' && s.size() > 1);
}

// Sleeps up to `d`; returns false when a stop signal arrived.
bool pause_for(nanoseconds d) {
  if (stop_requested()) return false;
  struct pollfd pfd {stop_fd(), POLLIN, 0};
  const int ms = static_cast<int>(std::max<std::int64_t>(1, duration_cast<milliseconds>(d).count()));
  ::poll(&pfd, pfd.fd >= 0 ? 1 : 0, ms);
  return !stop_requested();
}

// Request/reply (plh-rep): each server is its own entry, pattern "reqrep",
// metadata.service naming its service.
std::string service_of(const json& ch) {
  if (str(ch, "pattern") != "reqrep") return {};
  auto md = ch.find("metadata");
  if (md == ch.end() || !md->is_object()) return {};
  auto s = md->find("service");
  return s != md->end() && s->is_string() ? s->get<std::string>() : std::string();
}

std::vector<json> servers_of(const json& channels, const std::string& service) {
  std::vector<json> out;
  for (const auto& ch : channels)
    if (service_of(ch) == service) out.push_back(ch);
  return out;
}

// A service time in microseconds as text ("-" when the server reported none).
std::string latency_text(const json& metrics, const char* key) {
  auto it = metrics.find(key);
  if (it == metrics.end() || !it->is_number_unsigned()) return "-";
  const double us = static_cast<double>(it->get<std::uint64_t>());
  char buf[32];
  if (us < 1000) std::snprintf(buf, sizeof buf, "%.0fus", us);
  else if (us < 1e6) std::snprintf(buf, sizeof buf, "%.1fms", us / 1e3);
  else std::snprintf(buf, sizeof buf, "%.2fs", us / 1e6);
  return buf;
}

// One row per server: requests answered per second, replies (errors included), error
// replies, p50/p99 service time.
std::vector<std::string> server_row(const json& ch) {
  const json m = ch.value("metrics", json::object()), r = ch.value("rates", json::object());
  return {str(ch, "channel"), service_of(ch), si(num(r, "messages_per_s")), str(m, "messages", "0"),
          str(m, "gaps", "0"), latency_text(m, "latency_p50_us"), latency_text(m, "latency_p99_us")};
}
const std::vector<std::string> kServerHeader{"SERVER", "SERVICE", "REQ/S", "REPLIES", "ERRORS", "P50", "P99"};

// `plh-ctl info SERVICE`: the service and its servers.
int service_info(BrokerClient& client, const std::string& service, bool as_json, std::FILE* out) {
  json ack = client.request("LIST_REQ", json::object());
  const auto servers = servers_of(channels_of(ack), service);
  if (servers.empty()) throw NotFoundError("channel '" + service + "' not found");
  std::uint64_t replies = 0, errors = 0;
  double rate = 0;
  for (const auto& ch : servers) {
    const json m = ch.value("metrics", json::object());
    replies += count_of(m, "messages");
    errors += count_of(m, "gaps");
    rate += num(ch.value("rates", json::object()), "messages_per_s");
  }
  if (as_json) {
    emit_json(out, {{"service", service},
                    {"pattern", "reqrep"},
                    {"server_count", servers.size()},
                    {"replies", replies},
                    {"errors", errors},
                    {"replies_per_s", rate},
                    {"servers", servers}});
    return 0;
  }
  std::string text;
  auto add = [&](std::string k, const std::string& v) {
    k += ":";
    k.resize(std::max<std::size_t>(k.size(), 16), ' ');
    text += k + v + "\n";
  };
  add("service", service);
  add("pattern", "reqrep");
  add("servers", std::to_string(servers.size()));
  add("replies", std::to_string(replies) + " (" + si(rate, "/s") + ")");
  add("errors", std::to_string(errors));
  std::vector<std::vector<std::string>> rows{
      {"  SERVER", "ENDPOINT", "PRODUCER", "MODE", "CONCURRENCY", "STATE", "HEARTBEAT", "REQ/S", "REPLIES", "ERRORS",
       "P50", "P99"}};
  for (const auto& ch : servers) {
    const json md = ch.value("metadata", json::object());
    const auto row = server_row(ch);
    rows.push_back({"  " + row[0], str(ch, "endpoint"), producer_text(ch), str(md, "mode"), str(md, "concurrency"),
                    str(ch, "state"), age_text(num(ch, "last_heartbeat_age_ms")), row[2], row[3], row[4], row[5],
                    row[6]});
  }
  text += format_table(rows);
  emit(out, text);
  return 0;
}

}  // namespace

std::string format_table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> width;
  std::vector<bool> right;
  for (std::size_t r = 0; r < rows.size(); ++r)
    for (std::size_t c = 0; c < rows[r].size(); ++c) {
      if (width.size() <= c) {
        width.push_back(0);
        right.push_back(true);
      }
      width[c] = std::max(width[c], rows[r][c].size());
      if (r > 0 && !numeric_cell(rows[r][c]) && rows[r][c] != "-") right[c] = false;
    }
  if (rows.size() <= 1) std::fill(right.begin(), right.end(), false);
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t c = 0; c < row.size(); ++c) {
      const std::size_t pad = width[c] - row[c].size();
      const bool last = c + 1 == row.size();
      if (right[c]) line.append(pad, ' ');
      line += row[c];
      if (!right[c] && !last) line.append(pad, ' ');
      if (!last) line += "  ";
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line;
    out += '\n';
  }
  return out;
}

int list(const BrokerClientConfig& cfg, bool as_json, std::FILE* out) {
  BrokerClient client(cfg);
  if (as_json) {
    // Pass the (validated) channel array through: 10,000 channels are several MiB.
    const std::string text = client.request_raw("LIST_REQ", json::object());
    const auto scan = protocol::scan_json(text);
    const std::string_view channels = scan.member("channels"), count = scan.member("count");
    if (channels.empty() || channels.front() != '[' || count.empty())
      throw Error(ExitCode::failure, "malformed LIST_ACK from the broker: no channels array");
    std::string doc;
    doc.reserve(channels.size() + cfg.endpoint.size() + 64);
    doc += "{\"broker\":";
    protocol::append_json_string(doc, cfg.endpoint);
    doc += ",\"count\":";
    doc += count;
    doc += ",\"channels\":";
    doc += channels;
    doc += "}\n";
    emit(out, doc);
    return 0;
  }
  emit(out, format_table(list_rows(client.request_raw("LIST_REQ", json::object()))));
  return 0;
}

int info(const BrokerClientConfig& cfg, const std::string& channel, bool as_json, std::FILE* out) {
  validate_channel_name(channel);
  BrokerClient client(cfg);
  json ack;
  try {
    ack = client.request("LIST_REQ", {{"channel", channel}});
  } catch (const NotFoundError&) {
    return service_info(client, channel, as_json, out);  // not a channel: a request/reply service?
  }
  const json& channels = channels_of(ack);
  if (channels.empty()) throw NotFoundError("channel '" + channel + "' not found");
  const json& ch = channels[0];
  if (as_json) {
    emit_json(out, ch);
    return 0;
  }
  std::vector<std::vector<std::string>> kv;
  auto add = [&](const std::string& k, const std::string& v) { kv.push_back({k + ":", v}); };
  add("channel", str(ch, "channel"));
  add("transport", str(ch, "transport"));
  add("pattern", str(ch, "pattern"));
  if (str(ch, "transport") == "shm")
    add("shm_name", str(ch, "shm_name"));
  else
    add("endpoint", str(ch, "endpoint"));
  add("schema", schema_text(ch));
  auto sh = ch.find("schema_hash");
  if (sh != ch.end() && sh->is_number_unsigned() && sh->get<std::uint64_t>() != 0) add("schema_hash", sh->dump());
  add("producer", producer_text(ch));
  add("state", str(ch, "state"));
  add("last heartbeat", age_text(num(ch, "last_heartbeat_age_ms")) + " ago");
  add("registered", age_text(num(ch, "age_ms")) + " ago");
  const json metrics = ch.value("metrics", json::object());
  const json rates = ch.value("rates", json::object());
  add("messages", str(metrics, "messages", "0") + " (" + si(num(rates, "messages_per_s"), "/s") + ")");
  add("bytes", str(metrics, "bytes", "0") + " (" + iec_bytes(num(rates, "bytes_per_s")) + "/s)");
  add("gaps", str(metrics, "gaps", "0"));
  if (auto pk = ch.find("pubkey"); pk != ch.end() && pk->is_string()) add("pubkey", pk->get<std::string>());
  if (auto md = ch.find("metadata"); md != ch.end() && md->is_object() && !md->empty()) add("metadata", md->dump());
  const json consumers = ch.value("consumers", json::array());
  add("consumers", std::to_string(consumers.is_array() ? consumers.size() : 0));
  std::string text;
  for (const auto& row : kv) {
    std::string k = row[0];
    k.resize(std::max<std::size_t>(k.size(), 16), ' ');
    text += k + row[1] + "\n";
  }
  if (consumers.is_array() && !consumers.empty()) {
    std::vector<std::vector<std::string>> rows{{"  PID", "HOST", "HEARTBEAT", "MESSAGES", "BYTES", "GAPS"}};
    for (const auto& c : consumers)
      rows.push_back({"  " + str(c, "pid"), str(c, "hostname"), age_text(num(c, "last_heartbeat_age_ms")),
                      str(c, "messages", "0"), str(c, "bytes", "0"), str(c, "gaps", "0")});
    text += format_table(rows);
  }
  emit(out, text);
  return 0;
}

int ping(const BrokerClientConfig& cfg, bool as_json, std::FILE* out) {
  BrokerClient client(cfg);
  const auto t0 = steady_clock::now();
  json ack = client.request("PING_REQ", json::object());
  const double rtt_ms = duration<double, std::milli>(steady_clock::now() - t0).count();
  ack.erase("corr");
  ack.erase("status");
  ack["rtt_ms"] = rtt_ms;
  if (as_json) {
    ack["broker"] = cfg.endpoint;
    emit_json(out, ack);
    return 0;
  }
  char rtt[32];
  std::snprintf(rtt, sizeof rtt, "%.2f ms", rtt_ms);
  emit(out, "broker " + cfg.endpoint + ": ok (plh-broker " + str(ack, "version", "?") + ", up " +
                age_text(num(ack, "uptime_s") * 1000) + ", " + str(ack, "channels", "0") + " channels, " +
                str(ack, "consumers", "0") + " consumers, rtt " + rtt + ")\n");
  return 0;
}

int wait(const BrokerClientConfig& cfg, const std::string& channel, std::optional<nanoseconds> timeout, bool as_json,
         std::FILE* out) {
  validate_channel_name(channel);
  install_stop_handlers();
  BrokerClient client(cfg);
  const auto deadline = timeout ? std::optional(steady_clock::now() + *timeout) : std::nullopt;
  for (;;) {
    try {
      json ack = client.discover(channel);
      if (as_json) {
        ack.erase("corr");
        ack.erase("status");
        emit_json(out, ack);
      }
      return 0;
    } catch (const NotFoundError&) {
    }
    if (deadline && steady_clock::now() >= *deadline) {
      const double secs = duration<double>(*timeout).count();
      char buf[32];
      std::snprintf(buf, sizeof buf, "%g", secs);
      throw TimeoutError("channel '" + channel + "' did not appear within " + buf + "s");
    }
    nanoseconds step = milliseconds(25);
    if (deadline) step = std::min<nanoseconds>(step, *deadline - steady_clock::now());
    if (!pause_for(std::max<nanoseconds>(step, milliseconds(1)))) return exit_code_for_stop();
  }
}

int close(const BrokerClientConfig& cfg, const std::string& channel, const std::optional<std::string>& admin_token,
          bool as_json, std::FILE* out) {
  validate_channel_name(channel);
  BrokerClient client(cfg);
  json body = {{"channel", channel}};
  if (admin_token) body["admin_token"] = *admin_token;
  json ack = client.request("CLOSE_REQ", body);
  if (as_json) {
    ack.erase("corr");
    ack.erase("status");
    emit_json(out, ack);
  }
  return 0;
}

int keygen(const std::optional<std::string>& prefix, bool force, bool as_json, std::FILE* out) {
  const CurveKeypair kp = generate_curve_keypair();
  if (prefix) {
    if (prefix->empty()) throw UsageError("--out needs a file prefix");
    const auto paths = write_curve_keypair(*prefix, kp, force);
    if (as_json)
      emit_json(out, {{"public_key", kp.public_key}, {"secret_key_file", paths[0]}, {"public_key_file", paths[1]}});
    else
      emit(out, kp.public_key + "\n");
    return 0;
  }
  if (as_json)
    emit_json(out, {{"public_key", kp.public_key}, {"secret_key", kp.secret_key}});
  else
    emit(out, "public_key " + kp.public_key + "\nsecret_key " + kp.secret_key + "\n");
  return 0;
}

int stats(const BrokerClientConfig& cfg, const std::optional<std::string>& channel, bool watch, nanoseconds interval,
          bool as_json, std::FILE* out) {
  if (channel) validate_channel_name(*channel);
  if (watch) install_stop_handlers();
  BrokerClient client(cfg);
  const bool tty = ::isatty(::fileno(out)) == 1;
  // A name that is not a channel may be a request/reply service: its servers.
  bool service = false;
  for (bool first = true;; first = false) {
    json ack;
    if (channel && !service) {
      try {
        ack = client.request("LIST_REQ", json{{"channel", *channel}});
      } catch (const NotFoundError&) {
        service = true;
      }
    }
    if (!channel || service) ack = client.request("LIST_REQ", json::object());
    json selected = json::array();
    if (service) {
      for (auto& ch : servers_of(channels_of(ack), *channel)) selected.push_back(std::move(ch));
      if (selected.empty() && first) throw NotFoundError("channel '" + *channel + "' not found");
    }
    const json& channels = service ? selected : channels_of(ack);
    if (as_json) {
      json doc = {{"time_ns", realtime_ns()}, {"channels", json::array()}};
      for (const auto& ch : channels) {
        json e = {{"channel", ch["channel"]},
                  {"consumer_count", count_of(ch, "consumer_count")},
                  {"metrics", ch.value("metrics", json::object())},
                  {"rates", ch.value("rates", json::object())}};
        if (const std::string svc = service_of(ch); !svc.empty()) e["service"] = svc;
        doc["channels"].push_back(std::move(e));
      }
      emit_json(out, doc);
    } else {
      std::vector<std::vector<std::string>> rows{
          {"CHANNEL", "MSG/S", "BYTES/S", "MESSAGES", "BYTES", "GAPS", "CONSUMERS"}};
      std::vector<std::vector<std::string>> servers{kServerHeader};
      for (const auto& ch : channels) {
        if (!service_of(ch).empty()) {
          servers.push_back(server_row(ch));
          continue;
        }
        const json m = ch.value("metrics", json::object()), r = ch.value("rates", json::object());
        rows.push_back({str(ch, "channel"), si(num(r, "messages_per_s")), iec_bytes(num(r, "bytes_per_s")),
                        str(m, "messages", "0"), iec_bytes(num(m, "bytes")), str(m, "gaps", "0"),
                        str(ch, "consumer_count", "0")});
      }
      // Request/reply servers get their own table (requests, errors, service times).
      std::string text = rows.size() > 1 || servers.size() == 1 ? format_table(rows) : std::string();
      if (servers.size() > 1) text += (text.empty() ? "" : "\n") + format_table(servers);
      if (watch) text = (tty ? std::string("\033[H\033[2J") : std::string(first ? "" : "\n")) + text;
      emit(out, text);
    }
    if (!watch) return 0;
    if (!pause_for(interval)) return exit_code_for_stop();
  }
}

}  // namespace plh::ctl
