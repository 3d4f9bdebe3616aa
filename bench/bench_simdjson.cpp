// The hand-written JSON and UTF-8 code of libplh against simdjson 3.0.1 (Debian's
// libsimdjson-dev), on the inputs the tools see, in one run (issue 13: replace them
// where simdjson is at least as fast):
//   1. UTF-8 validation, the scalar loop (plh::detail::is_valid_utf8_scalar; what
//      plh::is_valid_utf8 keeps below 64 bytes) vs simdjson::validate_utf8: once per message
//      as plh-sub -f json and plh-req do (42-byte lines, ASCII and with accents) and on
//      64 KiB blocks (plh-pub -f raw chunks, large payloads);
//   2. plh-pub -f json input: a file of 1,000,000 lines as plh-sub -f json writes them,
//      through plh::FrameReader (the hand scanner with its nlohmann fallback) vs a loop
//      that gives each line to simdjson's On Demand parser and takes "data";
//   3. plh-ctl list --json: the raw "channels" array of a 10,000-channel LIST_ACK, with
//      plh::json_text::scan_json vs simdjson On Demand raw_json(); and the full parse
//      the table needs (nlohmann, what plh-ctl list uses) vs simdjson DOM.
//   bench_simdjson [REPEAT]   (best of REPEAT runs per case, default 5)
#include <simdjson.h>

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "plh/core/framing.hpp"
#include "plh/core/json.hpp"

namespace {

using clock_type = std::chrono::steady_clock;

double best_of(int repeat, const std::function<void()>& f) {
  double best = 1e300;
  for (int i = 0; i < repeat; ++i) {
    const auto t0 = clock_type::now();
    f();
    best = std::min(best, std::chrono::duration<double>(clock_type::now() - t0).count());
  }
  return best;
}

void row(const char* what, const char* impl, double items, const char* unit, double bytes, double seconds) {
  std::printf("%-44s %-16s %10.2f M%s/s %9.0f MB/s\n", what, impl, items / seconds / 1e6, unit, bytes / seconds / 1e6);
}

volatile std::size_t g_sink = 0;

std::vector<std::string> lines_of(std::size_t n, bool accents) {
  std::vector<std::string> v;
  v.reserve(n);
  char buf[64];
  for (std::size_t i = 0; i < n; ++i) {
    std::snprintf(buf, sizeof buf, accents ? "%012zu température=21.5 capteur=é" : "%012zu temperature=21.5 sensor=lab-",
                  i);
    std::string l(buf);
    l.resize(42, 'x');
    v.push_back(std::move(l));
  }
  return v;
}

void utf8_cases(int repeat) {
  for (bool accents : {false, true}) {
    const auto lines = lines_of(1'000'000, accents);
    const double bytes = 42.0 * static_cast<double>(lines.size());
    const char* what = accents ? "utf8: 1M lines of 42 bytes, with accents" : "utf8: 1M lines of 42 bytes, ASCII";
    double t = best_of(repeat, [&] {
      std::size_t ok = 0;
      for (const auto& l : lines) ok += plh::detail::is_valid_utf8_scalar(l);
      g_sink = g_sink + ok;
    });
    row(what, "plh scalar", static_cast<double>(lines.size()), "lines", bytes, t);
    t = best_of(repeat, [&] {
      std::size_t ok = 0;
      for (const auto& l : lines) ok += simdjson::validate_utf8(l.data(), l.size());
      g_sink = g_sink + ok;
    });
    row(what, "simdjson", static_cast<double>(lines.size()), "lines", bytes, t);
  }
  for (bool accents : {false, true}) {
    std::string block;
    while (block.size() < 64 * 1024) block += accents ? "température été 21.5 ° " : "temperature summer 21.5 deg ";
    block.resize(64 * 1024 - 8);
    const int n = 20'000;
    const double bytes = static_cast<double>(block.size()) * n;
    const char* what = accents ? "utf8: 64 KiB blocks, with accents" : "utf8: 64 KiB blocks, ASCII";
    double t = best_of(repeat, [&] {
      std::size_t ok = 0;
      for (int i = 0; i < n; ++i) ok += plh::detail::is_valid_utf8_scalar(block);
      g_sink = g_sink + ok;
    });
    row(what, "plh scalar", n, "blocks", bytes, t);
    t = best_of(repeat, [&] {
      std::size_t ok = 0;
      for (int i = 0; i < n; ++i) ok += simdjson::validate_utf8(block.data(), block.size());
      g_sink = g_sink + ok;
    });
    row(what, "simdjson", n, "blocks", bytes, t);
  }
}

void json_line_cases(int repeat) {
  // The lines plh-sub -f json writes.
  const auto lines = lines_of(1'000'000, false);
  std::string text;
  std::uint64_t seq = 1;
  for (const auto& l : lines) {
    text += "{\"channel\":\"lab.temp\",\"seq\":" + std::to_string(seq++) +
            ",\"ts_ns\":1796190000000000000,\"size\":42,\"data\":\"" + l + "\"}\n";
  }
  char path[] = "/tmp/bench-simdjson-XXXXXX";
  const int fd = ::mkstemp(path);
  if (fd < 0 || ::write(fd, text.data(), text.size()) != static_cast<ssize_t>(text.size())) std::abort();
  ::close(fd);
  const double n = static_cast<double>(lines.size()), bytes = static_cast<double>(text.size());
  double t = best_of(repeat, [&] {
    const int in = ::open(path, O_RDONLY);
    plh::FrameReader reader(in, plh::Format::json);
    std::size_t total = 0;
    while (auto m = reader.next()) total += m->size();
    ::close(in);
    g_sink = g_sink + total;
  });
  row("json input: 1M lines -> data (plh-pub -f json)", "plh (hand+nl)", n, "lines", bytes, t);
  t = best_of(repeat, [&] {
    // Read the file as plh-pub would (one buffer here: the parser needs padding after each line).
    const int in = ::open(path, O_RDONLY);
    std::string buf(text.size() + simdjson::SIMDJSON_PADDING, '\0');
    std::size_t got = 0;
    for (ssize_t r; (r = ::read(in, buf.data() + got, text.size() - got)) > 0;) got += static_cast<std::size_t>(r);
    ::close(in);
    simdjson::ondemand::parser parser;
    std::size_t total = 0, at = 0;
    while (at < got) {
      std::size_t nl = buf.find('\n', at);
      if (nl == std::string::npos) nl = got;
      // Each line parsed on its own, as the tools must (one bad line is one error).
      simdjson::padded_string_view line(buf.data() + at, nl - at, buf.size() - at);
      auto doc = parser.iterate(line);
      std::string_view data;
      if (doc["data"].get_string().get(data) == simdjson::SUCCESS) total += data.size();
      at = nl + 1;
    }
    g_sink = g_sink + total;
  });
  row("json input: 1M lines -> data (plh-pub -f json)", "simdjson od", n, "lines", bytes, t);
  t = best_of(repeat, [&] {
    // The DOM parser validates the whole line (On Demand skips what it is not asked for).
    const int in = ::open(path, O_RDONLY);
    std::string buf(text.size() + simdjson::SIMDJSON_PADDING, '\0');
    std::size_t got = 0;
    for (ssize_t r; (r = ::read(in, buf.data() + got, text.size() - got)) > 0;) got += static_cast<std::size_t>(r);
    ::close(in);
    simdjson::dom::parser parser;
    std::size_t total = 0, at = 0;
    while (at < got) {
      std::size_t nl = buf.find('\n', at);
      if (nl == std::string::npos) nl = got;
      simdjson::dom::element doc;
      std::string_view data;
      if (parser.parse(buf.data() + at, nl - at, false).get(doc) == simdjson::SUCCESS &&
          doc["data"].get_string().get(data) == simdjson::SUCCESS)
        total += data.size();
      at = nl + 1;
    }
    g_sink = g_sink + total;
  });
  row("json input: 1M lines -> data (plh-pub -f json)", "simdjson dom", n, "lines", bytes, t);
  ::unlink(path);
}

void list_ack_cases(int repeat) {
  // A LIST_ACK with 10,000 channels, as plh-broker sends it (keys sorted).
  nlohmann::json channels = nlohmann::json::array();
  for (int i = 0; i < 10'000; ++i) {
    channels.push_back({{"channel", "lab.rig" + std::to_string(i % 50) + ".sensor" + std::to_string(i)},
                        {"transport", "zmq"},
                        {"pattern", "pubsub"},
                        {"endpoint", "tcp://10.0.0." + std::to_string(i % 250) + ":" + std::to_string(40000 + i)},
                        {"shm_name", ""},
                        {"schema_hash", 12345678901234567ULL},
                        {"schema_hash_hex", "0x002bdc545d6b4b87"},
                        {"schema_version", "3"},
                        {"pubkey", nullptr},
                        {"metadata", {{"format", "line"}, {"plh_stream", 3735928559U}, {"schema", "imu@3"}}},
                        {"producer", {{"pid", 4242 + i}, {"hostname", "rig-host"}}},
                        {"consumer_count", 1},
                        {"consumers", {{{"pid", 99}, {"hostname", "h"}, {"last_heartbeat_age_ms", 120}, {"messages", 1000},
                                        {"bytes", 42000}, {"gaps", 0}}}},
                        {"state", "open"},
                        {"last_heartbeat_age_ms", 300},
                        {"registered_ns", 1796190000000000000LL},
                        {"age_ms", 754000},
                        {"metrics", {{"messages", 1000}, {"bytes", 42000}, {"gaps", 0}}},
                        {"rates", {{"messages_per_s", 10.0}, {"bytes_per_s", 420.0}}}});
  }
  const nlohmann::json ack = {{"status", "ok"}, {"count", 10'000}, {"heartbeat_interval_ms", 1000},
                              {"heartbeat_timeout_ms", 5000}, {"channels", channels}};
  const std::string text = ack.dump();
  const double bytes = static_cast<double>(text.size());
  double t = best_of(repeat, [&] {
    const auto scan = plh::json_text::scan_json(text);
    g_sink = g_sink + scan.member("channels").size();
  });
  row("LIST_ACK 10k channels: raw \"channels\" span", "plh (hand)", 1e-6, "docs", bytes, t);
  std::printf("%-44s %-16s %10.2f ms\n", "", "", t * 1e3);
  simdjson::padded_string padded(text);
  simdjson::ondemand::parser od;
  t = best_of(repeat, [&] {
    auto doc = od.iterate(padded);
    simdjson::ondemand::array arr;
    if (doc["channels"].get_array().get(arr) != simdjson::SUCCESS) std::abort();
    std::string_view raw;
    if (arr.raw_json().get(raw) != simdjson::SUCCESS) std::abort();
    g_sink = g_sink + raw.size();
  });
  row("LIST_ACK 10k channels: raw \"channels\" span", "simdjson od", 1e-6, "docs", bytes, t);
  std::printf("%-44s %-16s %10.2f ms\n", "", "", t * 1e3);
  t = best_of(repeat, [&] {
    const auto j = nlohmann::json::parse(text);
    g_sink = g_sink + j["channels"].size();
  });
  row("LIST_ACK 10k channels: full parse", "nlohmann", 1e-6, "docs", bytes, t);
  std::printf("%-44s %-16s %10.2f ms\n", "", "", t * 1e3);
  simdjson::dom::parser dom;
  t = best_of(repeat, [&] {
    simdjson::dom::element e;
    if (dom.parse(padded).get(e) != simdjson::SUCCESS) std::abort();
    g_sink = g_sink + simdjson::dom::array(e["channels"]).size();
  });
  row("LIST_ACK 10k channels: full parse", "simdjson dom", 1e-6, "docs", bytes, t);
  std::printf("%-44s %-16s %10.2f ms\n", "", "", t * 1e3);
}

}  // namespace

int main(int argc, char** argv) {
  const int repeat = argc > 1 ? std::max(1, std::atoi(argv[1])) : 5;
  std::printf("simdjson %d.%d.%d, runtime implementation %s (On Demand compiled for: %s); best of %d\n",
              simdjson::SIMDJSON_VERSION_MAJOR, simdjson::SIMDJSON_VERSION_MINOR, simdjson::SIMDJSON_VERSION_REVISION,
              simdjson::get_active_implementation()->name().c_str(),
              simdjson::builtin_implementation()->name().c_str(), repeat);
  utf8_cases(repeat);
  json_line_cases(repeat);
  list_ack_cases(repeat);
  return 0;
}
