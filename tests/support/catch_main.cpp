// The test binaries' main: Catch2's, after making the tools that tests spawn independent
// of the machine's defaults files (~/.config/plh/config, /etc/plh/config) and of a
// profile chosen in the caller's environment. Tests of the defaults files set these
// variables for their own children.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdlib>

int main(int argc, char** argv) {
  ::setenv("XDG_CONFIG_HOME", "/nonexistent/plh-tests/config-home", 1);
  ::setenv("PLH_SYSTEM_CONFIG", "/nonexistent/plh-tests/etc-plh-config", 1);
  ::unsetenv("PLH_PROFILE");
  return Catch::Session().run(argc, argv);
}
