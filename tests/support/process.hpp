#pragma once
// Real child processes for tests: spawn with pipes, read stdout lines with a bounded
// timeout (readiness signals instead of sleeps), collect output, wait with a deadline.
#include <sys/types.h>

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace plh::test {

using namespace std::chrono_literals;

struct RunResult {
  int code = -1;        // exit code, or 128+signal
  std::string out;      // stdout
  std::string err;      // stderr
  bool timed_out = false;
};

class Child {
 public:
  // argv[0] is a path. stdin is a pipe unless stdin_file is given ("/dev/null" allowed).
  static Child spawn(const std::vector<std::string>& argv,
                     const std::map<std::string, std::string>& extra_env = {},
                     const std::string& stdin_file = "");
  // bash -c CMD, for pipelines.
  static Child shell(const std::string& cmd, const std::map<std::string, std::string>& extra_env = {});

  Child(Child&& other) noexcept;
  Child& operator=(Child&& other) noexcept;
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child();  // kills (SIGKILL) a child still running, with its process group, and reaps it

  pid_t pid() const { return pid_; }
  // Next line of stdout (without '\n'), or nullopt on EOF or when the timeout passes.
  std::optional<std::string> read_line(std::chrono::milliseconds timeout = 10s);
  // Write to the child's stdin; close_stdin() sends EOF.
  void write_stdin(const std::string& data);
  void close_stdin();
  void kill(int sig);
  // Wait for exit, reading all remaining output. Kills (the process group) on timeout.
  RunResult wait(std::chrono::milliseconds timeout = 30s);
  bool running();

 private:
  friend RunResult run(const std::vector<std::string>&, const std::string&, std::chrono::milliseconds,
                       const std::map<std::string, std::string>&);
  Child() = default;
  void pump(int timeout_ms);  // read what is available on stdout/stderr
  void kill_group();          // SIGKILL to the child's process group (it leads one)
  pid_t pid_ = -1;
  int in_ = -1, out_ = -1, err_ = -1;
  std::string out_buf_, err_buf_;
  bool out_eof_ = false, err_eof_ = false;
  int status_ = -1;
  bool reaped_ = false;
};

// Run to completion with the given stdin bytes.
RunResult run(const std::vector<std::string>& argv, const std::string& stdin_data = "",
              std::chrono::milliseconds timeout = 30s,
              const std::map<std::string, std::string>& extra_env = {});
RunResult run_shell(const std::string& cmd, std::chrono::milliseconds timeout = 60s,
                    const std::map<std::string, std::string>& extra_env = {});

// A fresh directory removed at destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Poll `cond` every millisecond until true or timeout; returns the final value.
template <class F>
bool eventually(F cond, std::chrono::milliseconds timeout = 10s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (cond()) return true;
    struct timespec ts{0, 1'000'000};
    nanosleep(&ts, nullptr);
  }
  return cond();
}

// A unique suffix for names (shm segments, channels) so parallel tests do not collide.
std::string unique_suffix();

}  // namespace plh::test
