#include "netns.hpp"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>

#include "skip.hpp"

namespace plh::test {

namespace {

constexpr const char* kPrefix = "plhlab-";

std::string find_tool(const std::string& name) {
  for (const char* dir : {"/usr/sbin/", "/sbin/", "/usr/bin/", "/bin/"}) {
    std::string p = std::string(dir) + name;
    if (::access(p.c_str(), X_OK) == 0) return p;
  }
  return {};
}

const std::string& ip_bin() {
  static const std::string p = find_tool("ip");
  return p;
}

RunResult sh(const std::vector<std::string>& argv) { return run(argv, "", std::chrono::seconds(20)); }

void must(const std::vector<std::string>& argv) {
  RunResult r = sh(argv);
  if (r.code != 0) {
    std::string cmd;
    for (const auto& a : argv) cmd += a + " ";
    throw std::runtime_error("lab: `" + cmd + "` failed (" + std::to_string(r.code) + "): " + r.err);
  }
}

// `ip netns exec NS` bind-mounts every file of /etc/netns/NS over the one of the same name
// in /etc: each host gets its own /etc/machine-id, as a machine of its own would have.
std::string etc_dir(const std::string& ns) { return "/etc/netns/" + ns; }

void give_machine_id(const std::string& ns) {
  std::error_code ec;
  if (!std::filesystem::exists("/etc/machine-id", ec)) return;  // nothing to bind over
  std::filesystem::create_directories(etc_dir(ns), ec);
  std::random_device rd;
  std::ostringstream id;
  for (int i = 0; i < 4; ++i) {
    char part[9];
    std::snprintf(part, sizeof part, "%08x", static_cast<unsigned>(rd()));
    id << part;
  }
  std::ofstream(etc_dir(ns) + "/machine-id") << id.str() << "\n";
}

void forget_machine_id(const std::string& ns) {
  std::error_code ec;
  std::filesystem::remove_all(etc_dir(ns), ec);
}

// Namespaces left behind by a test process that was killed: "plhlab-PID..." whose PID is gone.
void sweep_stale() {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/run/netns", ec)) {
    const std::string name = e.path().filename();
    if (name.rfind(kPrefix, 0) != 0) continue;
    const std::string rest = name.substr(std::char_traits<char>::length(kPrefix));
    const pid_t pid = static_cast<pid_t>(std::atol(rest.c_str()));
    if (pid > 0 && ::kill(pid, 0) != 0 && errno == ESRCH) {
      sh({ip_bin(), "netns", "del", name});
      forget_machine_id(name);
    }
  }
}

}  // namespace

Lab Lab::require(const std::vector<std::string>& hosts) {
  std::vector<HostSpec> specs;
  for (const auto& h : hosts) specs.push_back(HostSpec{h, h, false});
  return require_specs(specs);
}

Lab Lab::require_specs(const std::vector<HostSpec>& specs) {
  if (::geteuid() != 0) skip("network namespaces need root");
  if (ip_bin().empty()) skip("iproute2 (ip) is not installed");
  if (find_tool("unshare").empty()) skip("util-linux (unshare) is not installed");
  sweep_stale();

  Lab lab;
  const std::string base = kPrefix + unique_suffix();
  lab.switch_ns_ = base + "-sw";
  {
    RunResult r = sh({ip_bin(), "netns", "add", lab.switch_ns_});
    if (r.code != 0) skip("cannot create a network namespace: " + r.err);
  }
  lab.owned_ = true;
  must({ip_bin(), "-n", lab.switch_ns_, "link", "add", "br0", "type", "bridge"});
  must({ip_bin(), "-n", lab.switch_ns_, "link", "set", "br0", "up"});
  int n = 0;
  for (const auto& spec : specs) {
    ++n;
    Host h;
    h.spec = spec;
    if (h.spec.hostname.empty()) h.spec.hostname = spec.key;
    h.ns = base + "-" + std::to_string(n);
    h.ip = "10.77.0." + std::to_string(n);
    h.port = "v" + std::to_string(n);
    must({ip_bin(), "netns", "add", h.ns});
    lab.hosts_.push_back(h);  // from here the destructor deletes it
    give_machine_id(h.ns);
    must({ip_bin(), "link", "add", "eth0", "netns", h.ns, "type", "veth", "peer", "name", h.port, "netns",
          lab.switch_ns_});
    must({ip_bin(), "-n", lab.switch_ns_, "link", "set", h.port, "master", "br0"});
    must({ip_bin(), "-n", lab.switch_ns_, "link", "set", h.port, "up"});
    must({ip_bin(), "-n", h.ns, "addr", "add", h.ip + "/24", "dev", "eth0"});
    must({ip_bin(), "-n", h.ns, "link", "set", "eth0", "up"});
    must({ip_bin(), "-n", h.ns, "link", "set", "lo", "up"});
  }
  return lab;
}

Lab::Lab(Lab&& o) noexcept
    : switch_ns_(std::move(o.switch_ns_)), hosts_(std::move(o.hosts_)), owned_(o.owned_) {
  o.owned_ = false;
}

Lab::~Lab() {
  if (!owned_) return;
  std::vector<std::string> all;
  for (const auto& h : hosts_) all.push_back(h.ns);
  all.push_back(switch_ns_);
  for (const auto& ns : all) {
    RunResult pids = sh({ip_bin(), "netns", "pids", ns});
    std::istringstream in(pids.out);
    for (long pid; in >> pid;)
      if (pid > 1) ::kill(static_cast<pid_t>(pid), SIGKILL);
  }
  for (const auto& ns : all) {
    sh({ip_bin(), "netns", "del", ns});
    forget_machine_id(ns);
  }
}

const Lab::Host& Lab::host(const std::string& key) const {
  for (const auto& h : hosts_)
    if (h.spec.key == key) return h;
  throw std::invalid_argument("lab: no host '" + key + "'");
}

const std::string& Lab::ip(const std::string& key) const { return host(key).ip; }
const std::string& Lab::netns(const std::string& key) const { return host(key).ns; }

std::vector<std::string> Lab::wrap(const std::string& key, const std::vector<std::string>& argv) const {
  const Host& h = host(key);
  static const std::string unshare = find_tool("unshare");
  std::vector<std::string> out{ip_bin(), "netns", "exec", h.ns, unshare, "--uts"};
  if (h.spec.own_pid_ns) {
    // --kill-child: the tool dies with the unshare process the test holds the pid of.
    for (const char* a : {"--pid", "--fork", "--mount-proc", "--kill-child"}) out.emplace_back(a);
  }
  out.insert(out.end(), {"--", "/bin/sh", "-c", "echo \"$0\" > /proc/sys/kernel/hostname && exec \"$@\"",
                         h.spec.hostname});
  out.insert(out.end(), argv.begin(), argv.end());
  return out;
}

Child Lab::spawn(const std::string& key, const std::vector<std::string>& argv,
                 const std::map<std::string, std::string>& env) const {
  return Child::spawn(wrap(key, argv), env);
}

Child Lab::shell(const std::string& key, const std::string& cmd, const std::map<std::string, std::string>& env) const {
  return spawn(key, {"/bin/bash", "-c", cmd}, env);
}

RunResult Lab::run(const std::string& key, const std::vector<std::string>& argv, const std::string& stdin_data,
                   std::chrono::milliseconds timeout, const std::map<std::string, std::string>& env) const {
  return plh::test::run(wrap(key, argv), stdin_data, timeout, env);
}

void Lab::link_down(const std::string& key) const {
  must({ip_bin(), "-n", switch_ns_, "link", "set", host(key).port, "down"});
}

void Lab::link_up(const std::string& key) const {
  must({ip_bin(), "-n", switch_ns_, "link", "set", host(key).port, "up"});
}

void Lab::shape(const std::string& key, const std::string& qdisc) const {
  static const std::string tc = find_tool("tc");
  if (tc.empty()) skip("tc (iproute2) is not installed");
  std::vector<std::string> argv{ip_bin(), "netns", "exec", host(key).ns, tc, "qdisc", "replace", "dev", "eth0", "root"};
  std::istringstream in(qdisc);
  for (std::string w; in >> w;) argv.push_back(w);
  RunResult r = sh(argv);
  if (r.code != 0 && r.err.find("unknown") != std::string::npos) skip("this kernel lacks the qdisc: " + qdisc);
  if (r.code != 0) throw std::runtime_error("lab: tc qdisc " + qdisc + ": " + r.err);
}

void Lab::unshape(const std::string& key) const {
  static const std::string tc = find_tool("tc");
  must({ip_bin(), "netns", "exec", host(key).ns, tc, "qdisc", "del", "dev", "eth0", "root"});
}

namespace {
std::vector<std::vector<std::string>> drop_rules(const std::string& op, const std::string& peer_ip) {
  return {{"-" + op, "INPUT", "-s", peer_ip, "-j", "DROP"}, {"-" + op, "OUTPUT", "-d", peer_ip, "-j", "DROP"}};
}
}  // namespace

void Lab::block(const std::string& a, const std::string& b) const {
  static const std::string iptables = find_tool("iptables");
  if (iptables.empty()) skip("iptables is not installed");
  for (auto& rule : drop_rules("I", ip(b))) {
    std::vector<std::string> argv{ip_bin(), "netns", "exec", host(a).ns, iptables, "-w"};
    argv.insert(argv.end(), rule.begin(), rule.end());
    RunResult r = sh(argv);
    if (r.code != 0) {
      if (r.err.find("Table does not exist") != std::string::npos || r.err.find("not supported") != std::string::npos)
        skip("this kernel has no netfilter for iptables: " + r.err);
      throw std::runtime_error("lab: iptables: " + r.err);
    }
  }
}

void Lab::unblock(const std::string& a, const std::string& b) const {
  static const std::string iptables = find_tool("iptables");
  for (auto& rule : drop_rules("D", ip(b))) {
    std::vector<std::string> argv{ip_bin(), "netns", "exec", host(a).ns, iptables, "-w"};
    argv.insert(argv.end(), rule.begin(), rule.end());
    must(argv);
  }
}

}  // namespace plh::test
