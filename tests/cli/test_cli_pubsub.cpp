// plh-pub and plh-sub argument tables: arguments -> exit code and the one stderr line.
#include <catch2/catch.hpp>

#include "cli_cases.hpp"
#include "process.hpp"

#if defined(PLH_PUB_BIN) && defined(PLH_SUB_BIN)

using plh::test::Case;
using plh::test::check_case;
using plh::test::run;

TEST_CASE("plh-pub argument errors and exit codes", "[cli][pubsub]") {
  const std::vector<Case> cases = {
      {{"--help"}, 0, ""},
      {{"--version"}, 0, ""},
      {{}, 2, "plh-pub: error: CHANNEL is required"},
      {{"bad name"}, 2, "plh-pub: error: invalid channel name 'bad name'"},
      {{"lab..temp"}, 2, "plh-pub: error: invalid channel name 'lab..temp'"},
      {{"lab.temp", "-f", "xml"}, 2, "plh-pub: error: "},
      {{"lab.temp", "--pattern", "fanout"}, 2, "plh-pub: error: unknown pattern 'fanout'"},
      {{"lab.temp", "--rate", "-5"}, 2, "plh-pub: error: --rate: must be a positive number"},
      {{"lab.temp", "-w", "many"}, 2, "plh-pub: error: "},
      {{"lab.temp", "-w", "-1"}, 2, "plh-pub: error: --wait-subscribers must not be negative"},
      {{"lab.temp", "-W", "soon"}, 2, "plh-pub: error: "},
      {{"lab.temp", "--schema", "@2"}, 2, "plh-pub: error: invalid --schema '@2'"},
      {{"lab.temp", "--chunk-size", "0"}, 2, "plh-pub: error: --chunk-size must be positive"},
      {{"lab.temp", "--bind", "nonsense"}, 2, "plh-pub: error: invalid bind endpoint 'nonsense'"},
      {{"lab.temp", "--broker-key", "abc"}, 2, "plh-pub: error: broker key must be a 40-character Z85 string"},
      {{"lab.temp", "--bogus"}, 2, "plh-pub: error: "},
      {{"lab.temp", "--hwm", "0"}, 2, "plh-pub: error: --hwm: must be a positive number, not '0'"},
      {{"lab.temp", "--broker-timeout", "200ms"}, 5, "plh-pub: error: cannot connect to the broker"},
      // Direct mode needs no broker: empty stdin is a complete (empty) stream.
      {{"--no-broker"}, 0, ""},
      {{"--no-broker", "-w", "1", "-W", "200ms"}, 3, "plh-pub: error: timed out waiting for 1 consumer(s)"},
      {{"lab.temp", "--advertise", "a b"}, 2, "plh-pub: error: invalid --advertise host 'a b'"},
      {{"--no-broker", "--print-endpoint", "--advertise", "192.0.2.1"}, 0, ""},
  };
  for (const auto& c : cases) check_case(PLH_PUB_BIN, "plh-pub", c);
}

TEST_CASE("plh-sub argument errors and exit codes", "[cli][pubsub]") {
  const std::vector<Case> cases = {
      {{"--help"}, 0, ""},
      {{"--version"}, 0, ""},
      {{}, 2, "plh-sub: error: CHANNEL is required"},
      {{"bad/name"}, 2, "plh-sub: error: invalid channel name 'bad/name'"},
      {{"lab.temp", "-f", "xml"}, 2, "plh-sub: error: "},
      {{"lab.temp", "-n", "x"}, 2, "plh-sub: error: "},
      {{"lab.temp", "-W", "later"}, 2, "plh-sub: error: "},
      {{"lab.temp", "--schema", "@1"}, 2, "plh-sub: error: invalid --schema '@1'"},
      {{"lab.temp", "--hwm", "0"}, 2, "plh-sub: error: --hwm: must be a positive number, not '0'"},
      {{"lab.temp", "--broker-timeout", "200ms"}, 5, "plh-sub: error: cannot connect to the broker"},
      {{"--connect", "nonsense"}, 2, "plh-sub: error: invalid endpoint 'nonsense'"},
      {{"--connect", "tcp://127.0.0.1:1", "--pattern", "fanout"}, 2, "plh-sub: error: unknown pattern 'fanout'"},
      {{"--connect", "tcp://127.0.0.1:1", "-W", "200ms"}, 3, "plh-sub: error: timed out before the end of stream"},
      {{"--connect", "tcp://127.0.0.1:1", "-n", "3", "-W", "200ms"}, 3, "plh-sub: error: timed out: received 0 of 3"},
      {{"--connect", "tcp://127.0.0.1:1", "--connect-timeout", "200ms", "-W", "20s"}, 1,
       "plh-sub: error: cannot connect to the publisher at tcp://127.0.0.1:1 within --connect-timeout 200ms: "
       "connection refused"},
      {{"--connect", "tcp://127.0.0.1:1", "--connect-timeout", "soon"}, 2, "plh-sub: error: "},
      {{"--connect", "tcp://127.0.0.1:1", "--follow"}, 2, "plh-sub: error: --follow needs a broker"},
      {{"--connect", "tcp://127.0.0.1:1", "--max-message-size", "0"}, 2,
       "plh-sub: error: --max-message-size must be positive"},
      {{"--connect", "tcp://127.0.0.1:1", "--max-queue", "0"}, 2, "plh-sub: error: --max-queue must be positive"},
      {{"lab.temp", "--wait", "-W", "1s", "--broker-timeout", "200ms"}, 3,
       "plh-sub: error: timed out waiting for the broker for 'lab.temp'"},
  };
  for (const auto& c : cases) check_case(PLH_SUB_BIN, "plh-sub", c);
}

TEST_CASE("plh-pub and plh-sub --version name libplh and libzmq", "[cli][pubsub]") {
  for (const std::string bin : {PLH_PUB_BIN, PLH_SUB_BIN}) {
    auto r = run({bin, "--version"});
    CHECK(r.code == 0);
    CHECK(r.out.find("libplh") != std::string::npos);
    CHECK(r.out.find("libzmq") != std::string::npos);
  }
}

#endif
