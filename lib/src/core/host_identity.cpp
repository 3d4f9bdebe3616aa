#include "plh/core/host_identity.hpp"

#include <sodium.h>
#include <sys/stat.h>

#include <fstream>

namespace plh {

namespace {

std::string first_line(const char* path) {
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line)) return {};
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r' || line.back() == ' ' || line.back() == '\t'))
    line.pop_back();
  if (line.size() > 256) line.resize(256);
  return line;
}

}  // namespace

std::string make_host_id(const std::string& machine_id, const std::string& boot_id, unsigned long long pid_ns_inode) {
  if (sodium_init() < 0) return std::string(32, '0');  // cannot happen on Linux
  const std::string input = machine_id + "\n" + boot_id + "\n" + std::to_string(pid_ns_inode);
  unsigned char digest[crypto_hash_sha256_BYTES];
  crypto_hash_sha256(digest, reinterpret_cast<const unsigned char*>(input.data()), input.size());
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (int i = 0; i < 16; ++i) {
    out += hex[digest[i] >> 4];
    out += hex[digest[i] & 15];
  }
  return out;
}

const std::string& host_id() {
  static const std::string id = [] {
    std::string machine = first_line("/etc/machine-id");
    if (machine.empty()) machine = first_line("/var/lib/dbus/machine-id");
    const std::string boot = first_line("/proc/sys/kernel/random/boot_id");
    struct stat st {};
    const unsigned long long ino = ::stat("/proc/self/ns/pid", &st) == 0 ? static_cast<unsigned long long>(st.st_ino) : 0;
    return make_host_id(machine, boot, ino);
  }();
  return id;
}

}  // namespace plh
