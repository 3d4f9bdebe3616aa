#include "skip.hpp"

#include <cstdio>
#include <cstdlib>

namespace plh::test {

void skip(const std::string& why) {
  std::fprintf(stderr, "SKIPPED: %s\n", why.c_str());
  std::fflush(nullptr);
  // _Exit: no static destructors or Catch2 reporting of a half-run test; ctest maps the
  // code to "skipped" (SKIP_RETURN_CODE in tests/CMakeLists.txt).
  std::_Exit(kSkipExitCode);
}

}  // namespace plh::test
