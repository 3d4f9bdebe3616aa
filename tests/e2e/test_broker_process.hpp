#pragma once
// The real plh-broker binary for end-to-end tests: started on an ephemeral port (or a
// given endpoint), ready when its ready line arrives. Also plh-ctl against it, and the
// library client's settings for talking to it.
#include <nlohmann/json.hpp>

#include <csignal>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "plh/control/broker_client.hpp"
#include "process.hpp"

namespace plh::test {

struct BrokerProcess {
  Child child;
  std::string endpoint;
  nlohmann::json ready;

  // `wrapper` goes before the binary (e.g. {"/usr/bin/prlimit", "--nofile=128", "--"}: it must exec it).
  static BrokerProcess start(std::vector<std::string> extra = {}, const std::string& endpoint = "tcp://127.0.0.1:0",
                             std::vector<std::string> wrapper = {}) {
    std::vector<std::string> argv = std::move(wrapper);
    argv.insert(argv.end(), {PLH_BROKER_BIN, "--endpoint", endpoint, "--log-level", "warn"});
    argv.insert(argv.end(), extra.begin(), extra.end());
    Child c = Child::spawn(argv);
    auto line = c.read_line(std::chrono::seconds(10));
    if (!line) throw std::runtime_error("plh-broker printed no ready line: " + c.wait(std::chrono::seconds(2)).err);
    auto j = nlohmann::json::parse(*line);
    return BrokerProcess{std::move(c), j.at("endpoint").get<std::string>(), j};
  }
  // SIGTERM and the exit code.
  int stop() {
    child.kill(SIGTERM);
    return child.wait(std::chrono::seconds(10)).code;
  }
};

inline RunResult ctl(const std::vector<std::string>& args, const std::string& broker,
                     const std::map<std::string, std::string>& env = {}) {
  std::vector<std::string> argv{PLH_CTL_BIN, "--broker", broker};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv, "", std::chrono::seconds(20), env);
}

// plh::BrokerClient settings for the broker at `endpoint` (CURVE when `key` is given).
inline plh::BrokerClientConfig cfg_for(const std::string& endpoint, std::optional<std::string> key = std::nullopt) {
  plh::BrokerClientConfig c;
  c.endpoint = endpoint;
  c.server_key = std::move(key);
  return c;
}

// A channel registration whose data endpoint nobody serves: enough for the control plane.
inline plh::ChannelRegistration reg(const std::string& channel) {
  plh::ChannelRegistration r;
  r.channel = channel;
  r.endpoint = "tcp://127.0.0.1:9";
  return r;
}

}  // namespace plh::test
