#include "plh/core/curve.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "plh/core/error.hpp"

namespace plh {

namespace {
std::string trim(std::string s) {
  const auto not_space = [](char c) { return c != ' ' && c != '\t' && c != '\r' && c != '\n'; };
  while (!s.empty() && !not_space(s.back())) s.pop_back();
  std::size_t i = 0;
  while (i < s.size() && !not_space(s[i])) ++i;
  return s.substr(i);
}

// The whole content of `path` (`what` names it in messages: "key file", "token file").
// With `require_private`, a regular file that its group or other users may read or write
// is refused (exit 6) with its mode named; checked on the opened file (fstat), so it is
// the file actually read.
std::string read_secret(const std::string& path, const char* what, bool require_private) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) throw UsageError(std::string("cannot read ") + what + " '" + path + "': " + errno_text(errno));
  struct stat st {};
  if (require_private && ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    ::close(fd);
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    throw RefusedError(std::string(what) + " '" + path + "' is accessible by group or other users (mode " + mode +
                       "); make it private with chmod 600");
  }
  std::string content;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      throw UsageError(std::string("cannot read ") + what + " '" + path + "': " + errno_text(err));
    }
    if (n == 0) break;
    content.append(buf, static_cast<std::size_t>(n));
    if (content.size() > (1u << 20)) {
      ::close(fd);
      throw UsageError(std::string(what) + " '" + path + "' is larger than 1 MiB");
    }
  }
  ::close(fd);
  return content;
}

// Meaningful lines of a key file (no comments, no blanks).
std::vector<std::string> key_lines(const std::string& path, bool require_private) {
  std::istringstream in(read_secret(path, "key file", require_private));
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line)) {
    line = trim(line);
    if (line.empty() || line[0] == '#') continue;
    lines.push_back(line);
  }
  return lines;
}

void write_file(const std::string& path, const std::string& content, mode_t mode, bool overwrite) {
  const int flags = O_WRONLY | O_CREAT | O_CLOEXEC | (overwrite ? O_TRUNC : O_EXCL);
  const int fd = ::open(path.c_str(), flags, mode);
  if (fd < 0) {
    if (errno == EEXIST) throw Error(ExitCode::failure, "'" + path + "' exists (use --force to replace it)");
    throw Error(ExitCode::failure, "cannot write '" + path + "': " + errno_text(errno));
  }
  ::fchmod(fd, mode);
  std::size_t done = 0;
  while (done < content.size()) {
    const ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      throw Error(ExitCode::failure, "cannot write '" + path + "': " + errno_text(err));
    }
    done += static_cast<std::size_t>(n);
  }
  if (::close(fd) != 0) throw Error(ExitCode::failure, "cannot write '" + path + "': " + errno_text(errno));
}
}  // namespace

bool is_z85_key(std::string_view key) {
  if (key.size() != 40) return false;
  const std::string copy(key);
  std::uint8_t out[32];
  return zmq_z85_decode(out, copy.c_str()) != nullptr;
}

CurveKeypair generate_curve_keypair() {
  char pub[41] = {}, sec[41] = {};
  if (zmq_curve_keypair(pub, sec) != 0)
    throw Error(ExitCode::failure, std::string("cannot generate a CURVE keypair: ") + zmq_strerror(zmq_errno()));
  return CurveKeypair{pub, sec};
}

std::string curve_public_key(const std::string& secret_key) {
  if (!is_z85_key(secret_key)) throw UsageError("CURVE secret key must be a 40-character Z85 string");
  char pub[41] = {};
  if (zmq_curve_public(pub, secret_key.c_str()) != 0)
    throw Error(ExitCode::failure, std::string("cannot derive the CURVE public key: ") + zmq_strerror(zmq_errno()));
  return pub;
}

std::vector<std::string> write_curve_keypair(const std::string& prefix, const CurveKeypair& kp, bool overwrite) {
  const std::string key_path = prefix + ".key", pub_path = prefix + ".pub";
  if (!overwrite) {
    for (const auto& p : {key_path, pub_path})
      if (::access(p.c_str(), F_OK) == 0) throw Error(ExitCode::failure, "'" + p + "' exists (use --force to replace it)");
  }
  write_file(key_path,
             "# plh CURVE secret key (keep private); line 1 secret, line 2 public\n" + kp.secret_key + "\n" +
                 kp.public_key + "\n",
             0600, overwrite);
  write_file(pub_path, kp.public_key + "\n", 0644, overwrite);
  return {key_path, pub_path};
}

CurveKeypair read_curve_secret_file(const std::string& path_or_prefix, bool require_private) {
  std::string path = path_or_prefix;
  if (::access(path.c_str(), F_OK) != 0 && ::access((path + ".key").c_str(), F_OK) == 0) path += ".key";
  if (path.size() > 4 && path.compare(path.size() - 4, 4, ".pub") == 0)
    throw UsageError("'" + path + "' is a public key file; give the secret key file (PREFIX.key)");
  const auto lines = key_lines(path, require_private);
  if (lines.empty() || !is_z85_key(lines[0]))
    throw UsageError("'" + path + "' does not hold a 40-character Z85 secret key on its first line");
  CurveKeypair kp;
  kp.secret_key = lines[0];
  kp.public_key = curve_public_key(kp.secret_key);
  if (lines.size() > 1 && lines[1] != kp.public_key)
    throw UsageError("'" + path + "': the public key on line 2 does not belong to the secret key");
  return kp;
}

std::vector<std::string> read_allowed_keys(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw UsageError("cannot read allow-list '" + path + "': " + errno_text(errno));
  std::vector<std::string> keys;
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    line = trim(line);
    if (line.empty() || line[0] == '#') continue;
    if (!is_z85_key(line))
      throw UsageError("allow-list '" + path + "' line " + std::to_string(n) + " is not a 40-character Z85 key");
    keys.push_back(line);
  }
  return keys;
}

std::string read_token_file(const std::string& path, bool require_private) {
  std::istringstream in(read_secret(path, "token file", require_private));
  std::string line;
  std::getline(in, line);
  line = trim(line);
  if (line.empty()) throw UsageError("token file '" + path + "' is empty");
  return line;
}

namespace {
std::string& process_client_key_file() {
  static std::string path;
  return path;
}
}  // namespace

void set_client_key_file(const std::string& path) {
  process_client_key_file() = !path.empty() && path[0] == '@' ? path.substr(1) : path;
}

CurveKeypair client_keypair_from_env() {
  if (const std::string& file = process_client_key_file(); !file.empty()) return read_curve_secret_file(file);
  const char* env = std::getenv("PLH_CLIENT_KEY");
  if (!env || !*env) return generate_curve_keypair();
  std::string v = env;
  if (v[0] != '@') throw UsageError("PLH_CLIENT_KEY must be @PATH of a secret key file from 'plh-ctl keygen'");
  return read_curve_secret_file(v.substr(1));
}

}  // namespace plh
