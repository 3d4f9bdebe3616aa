// Framing throughput: 1,000,000 lines of 42 bytes read by FrameReader and written by
// FrameWriter to /dev/null, from a file and through a pipe fed by a thread; also json
// input (the same lines as `-f json` writes them).
//   bench_framing [LINES]
// Prints one line per case: name, lines, seconds, lines/s, MB/s.
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "plh/core/framing.hpp"

namespace {

std::string make_input(std::size_t lines) {
  std::string s;
  s.reserve(lines * 43);
  char line[64];
  for (std::size_t i = 0; i < lines; ++i) {
    std::snprintf(line, sizeof line, "%012zu temperature=21.5 sensor=lab-", i);
    std::string l(line);
    l.resize(42, 'x');
    s += l;
    s += '\n';
  }
  return s;
}

void report(const char* name, std::size_t lines, std::size_t bytes, std::chrono::steady_clock::duration d) {
  const double sec = std::chrono::duration<double>(d).count();
  std::printf("%-28s %9zu lines %8.3f s %12.0f lines/s %8.1f MB/s\n", name, lines, sec, lines / sec,
              bytes / sec / 1e6);
}

std::size_t pump(int in, plh::Format in_fmt, int out, plh::Format out_fmt) {
  plh::FrameReader reader(in, in_fmt);
  plh::FrameWriter writer(out, out_fmt, false);
  plh::MessageMeta meta;
  meta.channel = "bench.lines";
  std::size_t n = 0;
  while (auto m = reader.next()) {
    meta.seq = ++n;
    writer.write(*m, meta);
  }
  writer.flush();
  return n;
}

}  // namespace

int main(int argc, char** argv) {
  const std::size_t lines = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 1000000;
  const std::string input = make_input(lines);
  char path[] = "/tmp/plh-bench-framing-XXXXXX";
  const int tmp = ::mkstemp(path);
  if (tmp < 0 || ::write(tmp, input.data(), input.size()) != static_cast<ssize_t>(input.size())) return 1;
  ::close(tmp);
  const int devnull = ::open("/dev/null", O_WRONLY);

  // The same lines as json input (what `plh-sub -f json | plh-pub -f json` carries).
  std::string json_input;
  {
    int fds[2];
    if (::pipe(fds) != 0) return 1;
    std::thread drain([&] {
      char buf[65536];
      for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;) json_input.append(buf, static_cast<std::size_t>(n));
    });
    {
      plh::FrameWriter w(fds[1], plh::Format::json, false);
      plh::MessageMeta meta;
      meta.channel = "bench.lines";
      std::size_t pos = 0;
      while (pos < input.size()) {
        const std::size_t nl = input.find('\n', pos);
        meta.seq++;
        w.write(std::string_view(input).substr(pos, nl - pos), meta);
        pos = nl + 1;
      }
    }
    ::close(fds[1]);
    drain.join();
    ::close(fds[0]);
  }

  struct Case {
    const char* name;
    plh::Format in;
    plh::Format out;
    bool pipe;
  };
  for (const Case c : {Case{"file  line -> line", plh::Format::line, plh::Format::line, false},
                       Case{"pipe  line -> line", plh::Format::line, plh::Format::line, true},
                       Case{"pipe  line -> len", plh::Format::line, plh::Format::len, true},
                       Case{"pipe  line -> json", plh::Format::line, plh::Format::json, true},
                       Case{"pipe  json -> line", plh::Format::json, plh::Format::line, true}}) {
    const std::string& data = c.in == plh::Format::json ? json_input : input;
    int in = -1;
    std::thread feeder;
    int fds[2] = {-1, -1};
    if (c.pipe) {
      if (::pipe(fds) != 0) return 1;
      in = fds[0];
    } else {
      in = ::open(path, O_RDONLY);
    }
    const auto t0 = std::chrono::steady_clock::now();
    if (c.pipe) {
      feeder = std::thread([&] {
        const char* p = data.data();
        std::size_t left = data.size();
        while (left > 0) {
          const ssize_t w = ::write(fds[1], p, left);
          if (w <= 0) break;
          p += w;
          left -= static_cast<std::size_t>(w);
        }
        ::close(fds[1]);
      });
    }
    const std::size_t n = pump(in, c.in, devnull, c.out);
    const auto t1 = std::chrono::steady_clock::now();
    if (feeder.joinable()) feeder.join();
    ::close(in);
    if (n != lines) {
      std::fprintf(stderr, "bench_framing: %s: expected %zu lines, got %zu\n", c.name, lines, n);
      return 1;
    }
    report(c.name, n, data.size(), t1 - t0);
  }
  ::unlink(path);
  return 0;
}
