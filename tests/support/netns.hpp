#pragma once
// A simulated lab LAN for multi-host tests, made of Linux network namespaces.
//
//   Lab lab = Lab::require({"hosta", "hostb", "hostc"});   // skips the test if impossible
//   auto broker = lab.spawn("hosta", {PLH_BROKER_BIN, "--endpoint", "tcp://0.0.0.0:0"});
//   auto sub = lab.spawn("hostc", {PLH_SUB_BIN, "--broker", "tcp://" + lab.ip("hosta") + ":PORT", "ch"});
//
// Each host is a network namespace with its own loopback and one interface `eth0` with
// address 10.77.0.N/24 (N = 1, 2, ... in the order given); every eth0 is one end of a
// veth pair whose other end (`vN`) sits on a bridge `br0` in a separate "switch"
// namespace. Nothing touches the machine's own network: no address leaves the lab and
// there is no default route, so a host can reach only the other hosts. Each lab has its
// own namespaces (unique names), so labs in parallel tests never see each other, and the
// same addresses can be used in every lab.
//
// Processes started through a Lab run inside the host's network namespace and in a new
// UTS namespace whose host name is the host's name (so two hosts may even share a name:
// pass the same name twice with distinct keys through `HostSpec` and require_specs). With `own_pid_ns`
// they also get a new PID namespace (they see themselves as PID 1, like a container).
// Each host also has its own /etc/machine-id (random; bind-mounted by `ip netns exec` from
// /etc/netns/NS/), so a tool that tells machines apart by machine id sees distinct machines.
//
// Link faults: link_down/link_up (carrier off/on, as a pulled cable), shape (a tc qdisc
// on the host's eth0, e.g. "tbf rate 10mbit burst 32kbit latency 400ms"), block/unblock
// (iptables DROP between two hosts, both directions, so a partition of exactly that pair).
// This kernel has no netem; use tbf for slow links and iptables' statistic match for loss.
//
// Requires root, iproute2 (ip, tc), util-linux (unshare) and, for block(), iptables.
// Lab::require() calls plh::test::skip() (reported by ctest as skipped) when namespaces
// cannot be created; block()/shape() skip the same way when the kernel lacks the feature.
#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "process.hpp"

namespace plh::test {

struct HostSpec {
  std::string key;       // how the test names the host (unique within the lab)
  std::string hostname;  // what `hostname` says inside it (defaults to key)
  bool own_pid_ns = false;
};

class Lab {
 public:
  // Builds the lab or skips the test (plh::test::skip) saying why it cannot.
  static Lab require(const std::vector<std::string>& hosts);
  static Lab require_specs(const std::vector<HostSpec>& hosts);

  Lab(Lab&&) noexcept;
  Lab& operator=(Lab&&) = delete;
  Lab(const Lab&) = delete;
  Lab& operator=(const Lab&) = delete;
  ~Lab();  // kills every process left in the lab's namespaces and deletes them

  // The host's address on the lab LAN, e.g. "10.77.0.2".
  const std::string& ip(const std::string& host) const;
  // The network namespace's name (for `ip netns exec`).
  const std::string& netns(const std::string& host) const;

  // argv wrapped so that it runs inside `host` (network + UTS [+ PID] namespace).
  std::vector<std::string> wrap(const std::string& host, const std::vector<std::string>& argv) const;
  Child spawn(const std::string& host, const std::vector<std::string>& argv,
              const std::map<std::string, std::string>& env = {}) const;
  // bash -c CMD inside the host.
  Child shell(const std::string& host, const std::string& cmd,
              const std::map<std::string, std::string>& env = {}) const;
  RunResult run(const std::string& host, const std::vector<std::string>& argv, const std::string& stdin_data = "",
                std::chrono::milliseconds timeout = std::chrono::seconds(30),
                const std::map<std::string, std::string>& env = {}) const;

  // Faults. Each throws std::runtime_error when the command fails (after a skip check).
  void link_down(const std::string& host) const;
  void link_up(const std::string& host) const;
  void shape(const std::string& host, const std::string& qdisc) const;  // tc qdisc replace dev eth0 root QDISC
  void unshape(const std::string& host) const;
  void block(const std::string& a, const std::string& b) const;    // drop all packets between a and b
  void unblock(const std::string& a, const std::string& b) const;

 private:
  struct Host {
    HostSpec spec;
    std::string ns, ip, port;  // port: the bridge-side veth in the switch namespace
  };
  Lab() = default;
  const Host& host(const std::string& key) const;
  std::string switch_ns_;
  std::vector<Host> hosts_;
  bool owned_ = false;
};

}  // namespace plh::test
