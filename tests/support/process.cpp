#include "process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>

extern char** environ;

namespace plh::test {

namespace {
int exit_code_of(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}
}  // namespace

Child Child::spawn(const std::vector<std::string>& argv, const std::map<std::string, std::string>& extra_env,
                   const std::string& stdin_file) {
  int in[2] = {-1, -1}, out[2], err[2];
  if (stdin_file.empty() && ::pipe2(in, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
  if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) throw std::runtime_error("pipe");

  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  if (stdin_file.empty())
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  else
    posix_spawn_file_actions_addopen(&fa, 0, stdin_file.c_str(), O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err[1], 2);

  // Children start with default signal dispositions (the test runner may ignore SIGPIPE).
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t def;
  sigemptyset(&def);
  sigaddset(&def, SIGPIPE);
  sigaddset(&def, SIGINT);
  sigaddset(&def, SIGTERM);
  posix_spawnattr_setsigdefault(&attr, &def);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  // Each child leads its own process group, so that ending it also ends what it started
  // (every member of a Child::shell pipeline), never the test runner.
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETPGROUP);

  std::map<std::string, std::string> env;
  for (char** e = environ; *e; ++e) {
    const char* eq = std::strchr(*e, '=');
    if (eq) env[std::string(*e, static_cast<std::size_t>(eq - *e))] = eq + 1;
  }
  for (const auto& [k, v] : extra_env) env[k] = v;
  std::vector<std::string> env_strings;
  for (const auto& [k, v] : env) env_strings.push_back(k + "=" + v);
  std::vector<char*> envp, args;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> argv_copy = argv;
  for (auto& s : argv_copy) args.push_back(s.data());
  args.push_back(nullptr);

  Child c;
  const int rc = posix_spawn(&c.pid_, args[0], &fa, &attr, args.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (in[0] >= 0) ::close(in[0]);
  ::close(out[1]);
  ::close(err[1]);
  if (rc != 0) {
    if (in[1] >= 0) ::close(in[1]);
    ::close(out[0]);
    ::close(err[0]);
    throw std::runtime_error("posix_spawn " + argv[0] + ": " + std::strerror(rc));
  }
  c.in_ = in[1];
  c.out_ = out[0];
  c.err_ = err[0];
  return c;
}

Child Child::shell(const std::string& cmd, const std::map<std::string, std::string>& extra_env) {
  return spawn({"/bin/bash", "-c", cmd}, extra_env);
}

Child::Child(Child&& o) noexcept { *this = std::move(o); }

Child& Child::operator=(Child&& o) noexcept {
  std::swap(pid_, o.pid_);
  std::swap(in_, o.in_);
  std::swap(out_, o.out_);
  std::swap(err_, o.err_);
  std::swap(out_buf_, o.out_buf_);
  std::swap(err_buf_, o.err_buf_);
  std::swap(out_eof_, o.out_eof_);
  std::swap(err_eof_, o.err_eof_);
  std::swap(status_, o.status_);
  std::swap(reaped_, o.reaped_);
  return *this;
}

void Child::kill_group() {
  // Only while the leader is not reaped: its pid (the group id) cannot have been reused.
  if (pid_ > 0 && !reaped_) ::kill(-pid_, SIGKILL);
}

Child::~Child() {
  if (pid_ > 0 && !reaped_) {
    kill_group();
    ::waitpid(pid_, nullptr, 0);
  }
  for (int fd : {in_, out_, err_})
    if (fd >= 0) ::close(fd);
}

void Child::pump(int timeout_ms) {
  pollfd fds[2];
  int n = 0;
  if (!out_eof_) fds[n++] = {out_, POLLIN, 0};
  if (!err_eof_) fds[n++] = {err_, POLLIN, 0};
  if (n == 0) return;
  if (::poll(fds, n, timeout_ms) <= 0) return;
  for (int i = 0; i < n; ++i) {
    if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
    char buf[65536];
    const ssize_t r = ::read(fds[i].fd, buf, sizeof buf);
    const bool is_out = fds[i].fd == out_;
    if (r > 0)
      (is_out ? out_buf_ : err_buf_).append(buf, static_cast<std::size_t>(r));
    else if (r == 0 || (errno != EINTR && errno != EAGAIN))
      (is_out ? out_eof_ : err_eof_) = true;
  }
}

std::optional<std::string> Child::read_line(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    const auto nl = out_buf_.find('\n');
    if (nl != std::string::npos) {
      std::string line = out_buf_.substr(0, nl);
      out_buf_.erase(0, nl + 1);
      return line;
    }
    if (out_eof_) return std::nullopt;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    pump(static_cast<int>(left.count()));
  }
}

void Child::write_stdin(const std::string& data) {
  std::size_t off = 0;
  while (off < data.size()) {
    const ssize_t w = ::write(in_, data.data() + off, data.size() - off);
    if (w < 0) {
      if (errno == EINTR) continue;
      throw std::runtime_error(std::string("write to child stdin: ") + std::strerror(errno));
    }
    off += static_cast<std::size_t>(w);
  }
}

void Child::close_stdin() {
  if (in_ >= 0) ::close(in_);
  in_ = -1;
}

void Child::kill(int sig) {
  if (pid_ > 0 && !reaped_) ::kill(pid_, sig);
}

bool Child::running() {
  if (reaped_) return false;
  int st = 0;
  const pid_t r = ::waitpid(pid_, &st, WNOHANG);
  if (r == pid_) {
    reaped_ = true;
    status_ = st;
    return false;
  }
  return true;
}

RunResult Child::wait(std::chrono::milliseconds timeout) {
  RunResult res;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  close_stdin();
  while (!(out_eof_ && err_eof_) || running()) {
    if (std::chrono::steady_clock::now() >= deadline) {
      res.timed_out = true;
      kill_group();
      break;
    }
    if (out_eof_ && err_eof_) {
      struct timespec ts{0, 1'000'000};
      nanosleep(&ts, nullptr);
    } else {
      pump(20);
    }
  }
  if (!reaped_) {
    int st = 0;
    ::waitpid(pid_, &st, 0);
    reaped_ = true;
    status_ = st;
    // drain whatever is left without blocking forever (grandchildren may hold pipes)
    for (int i = 0; i < 50 && !(out_eof_ && err_eof_); ++i) pump(10);
  }
  res.code = exit_code_of(status_);
  res.out = std::move(out_buf_);
  res.err = std::move(err_buf_);
  out_buf_.clear();
  err_buf_.clear();
  return res;
}

RunResult run(const std::vector<std::string>& argv, const std::string& stdin_data, std::chrono::milliseconds timeout,
              const std::map<std::string, std::string>& extra_env) {
  Child c = Child::spawn(argv, extra_env);
  if (!stdin_data.empty()) {
    // Feed stdin while draining output, so large inputs cannot deadlock.
    ::fcntl(c.in_, F_SETFL, O_NONBLOCK);
    std::size_t off = 0;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (off < stdin_data.size() && std::chrono::steady_clock::now() < deadline) {
      const ssize_t w = ::write(c.in_, stdin_data.data() + off, stdin_data.size() - off);
      if (w > 0) off += static_cast<std::size_t>(w);
      else if (w < 0 && errno != EAGAIN && errno != EINTR) break;
      else c.pump(5);
    }
  }
  return c.wait(timeout);
}

RunResult run_shell(const std::string& cmd, std::chrono::milliseconds timeout,
                    const std::map<std::string, std::string>& extra_env) {
  return Child::shell(cmd, extra_env).wait(timeout);
}

TempDir::TempDir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "plh-test-XXXXXX").string();
  if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string unique_suffix() {
  static std::atomic<int> counter{0};
  return std::to_string(::getpid()) + "x" + std::to_string(counter++);
}

}  // namespace plh::test
