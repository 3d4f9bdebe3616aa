#pragma once
// Skipping a test whose prerequisite is missing (not root, no network namespaces, no
// second user). Catch2 v2 has no SKIP, so the test process prints the reason and exits
// with 77, which tests/CMakeLists.txt declares as ctest's SKIP_RETURN_CODE: ctest then
// reports the test as skipped ("Not Run ... Skipped"), never as passed.
#include <string>

namespace plh::test {

inline constexpr int kSkipExitCode = 77;

// Prints "SKIPPED: <why>" on stderr and ends the test process with kSkipExitCode.
[[noreturn]] void skip(const std::string& why);

}  // namespace plh::test

// Spelled like Catch2 v3's SKIP so that tests read the same after an upgrade.
#define PLH_SKIP(why) ::plh::test::skip(why)
