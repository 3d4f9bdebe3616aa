#pragma once
// Helpers of the shared-memory fuzz targets: a per-process segment written from the
// fuzz input, and the check that an error a tool would print is one clear line.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_support.hpp"
#include "plh/core/error.hpp"

namespace plh::fuzz {

// /dev/shm/plh.NAME holding `image` followed by zeros up to `file_size` bytes (or cut
// to it). Replaces any previous object of that name.
inline void write_segment_file(const std::string& name, std::string_view image, std::size_t file_size) {
  const std::string object = "/plh." + name;
  ::shm_unlink(object.c_str());
  const int fd = ::shm_open(object.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  PLH_FUZZ_CHECK(fd >= 0, "shm_open %s", object.c_str());
  PLH_FUZZ_CHECK(::ftruncate(fd, static_cast<off_t>(file_size)) == 0, "ftruncate %zu", file_size);
  std::size_t off = 0;
  const std::size_t n = std::min(image.size(), file_size);
  while (off < n) {
    const ssize_t w = ::pwrite(fd, image.data() + off, n - off, static_cast<off_t>(off));
    PLH_FUZZ_CHECK(w > 0, "pwrite");
    off += static_cast<std::size_t>(w);
  }
  ::close(fd);
}

inline void remove_segment_file(const std::string& name) { ::shm_unlink(("/plh." + name).c_str()); }

// What a tool prints for `e` ("plh-shm: error: <what>") must be one readable line with
// a documented exit code.
inline void check_clear_error(const Error& e) {
  const std::string_view what = e.what();
  PLH_FUZZ_CHECK(!what.empty() && what.size() < 2000, "error message of %zu bytes", what.size());
  for (char c : what)
    PLH_FUZZ_CHECK(static_cast<unsigned char>(c) >= 0x20 && c != 0x7f, "control character 0x%02x in error: %s",
                   static_cast<unsigned>(static_cast<unsigned char>(c)), e.what());
  const int code = static_cast<int>(e.code());
  PLH_FUZZ_CHECK(code == 1 || code == 3 || code == 4 || code == 6, "exit code %d for: %s", code, e.what());
}

// The shm commands print to stdout: send it to /dev/null (libFuzzer reports on stderr).
inline void stdout_to_devnull() {
  const int fd = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  PLH_FUZZ_CHECK(fd >= 0, "open /dev/null");
  ::dup2(fd, STDOUT_FILENO);
  ::close(fd);
}

}  // namespace plh::fuzz
