#include <catch2/catch.hpp>

#include "plh/core/error.hpp"
#include "plh/core/text.hpp"

using namespace std::chrono_literals;

TEST_CASE("durations parse with units", "[text]") {
  CHECK(plh::parse_duration("500ms") == 500ms);
  CHECK(plh::parse_duration("5s") == 5s);
  CHECK(plh::parse_duration("2") == 2s);
  CHECK(plh::parse_duration("1.5s") == 1500ms);
  CHECK(plh::parse_duration("100us") == 100us);
  CHECK_THROWS_AS(plh::parse_duration("abc"), plh::UsageError);
  CHECK_THROWS_AS(plh::parse_duration("5 parsecs"), plh::UsageError);
  CHECK_THROWS_AS(plh::parse_duration("-1s"), plh::UsageError);
}

TEST_CASE("sizes parse with binary suffixes", "[text]") {
  CHECK(plh::parse_size("65536") == 65536);
  CHECK(plh::parse_size("64K") == 65536);
  CHECK(plh::parse_size("1MiB") == 1048576);
  CHECK_THROWS_AS(plh::parse_size("1.5"), plh::UsageError);
  CHECK_THROWS_AS(plh::parse_size("lots"), plh::UsageError);
}

TEST_CASE("channel names follow the SPEC grammar", "[text]") {
  for (const char* good : {"lab.temp", "a", "A1.b_2.c-3", "x.y.z", "sensor.0", "cam.1", "1abc", "lab.température",
                           "実験.温度", "e\xcc\x81" "t\xcc\x81" "e"}) {
    INFO(good);
    CHECK(plh::channel_name_problem(good).empty());
  }
  for (const char* bad : {"", ".", "a.", ".a", "_a", "-a", "a..b", "a b", "lab/temp", "a.*", "a\xff", "a\xc3", "a.\xcc\x81",
                          "a\xc2\xa0" "b", "a\xe2\x80\xae" "b"}) {
    INFO(bad);
    CHECK_FALSE(plh::channel_name_problem(bad).empty());
    CHECK_THROWS_AS(plh::validate_channel_name(bad), plh::UsageError);
  }
  CHECK(plh::channel_name_problem(std::string(255, 'a')).empty());
  CHECK_FALSE(plh::channel_name_problem(std::string(256, 'a')).empty());
}

TEST_CASE("user input echoed in an error keeps valid UTF-8 and escapes the rest", "[text]") {
  CHECK(plh::echo_input("lab.température") == "lab.température");
  CHECK(plh::echo_input("a\x01" "b\x7f") == "a\\x01b\\x7f");
  CHECK(plh::echo_input("t\xffx\xc3") == "t\\xffx\\xc3");
  CHECK(plh::echo_input("a\xe2\x80\xae" "b") == "a\\xe2\\x80\\xaeb");  // a bidi override is shown as bytes
  CHECK(plh::echo_input(std::string(65, 'x')) == std::string(64, 'x') + "...");
  CHECK_THROWS_WITH(plh::validate_channel_name("lab.temp érature"),
                    Catch::Contains("'lab.temp érature'"));
}

TEST_CASE("untrusted text is made printable and short for one-line messages", "[text]") {
  CHECK(plh::printable("DISC_ACK") == "DISC_ACK");
  CHECK(plh::printable(std::string("a\nb\0c\x7f\xc3\xa9", 8)) == "a?b?c???");
  CHECK(plh::printable(std::string(41, 'x')) == std::string(40, 'x') + "...");
  CHECK(plh::printable(std::string(40, 'x')) == std::string(40, 'x'));
  CHECK(plh::printable("abcdef", 3) == "abc...");
  CHECK(plh::printable("").empty());
}

TEST_CASE("channel patterns: '*' is one component, '>' at the end one or more", "[text][pattern]") {
  using plh::channel_matches;
  CHECK(plh::channel_pattern_problem("lab.rig2.*").empty());
  CHECK(plh::channel_pattern_problem("lab.>").empty());
  CHECK(plh::channel_pattern_problem("*.temp").empty());
  CHECK(plh::channel_pattern_problem(">").empty());
  CHECK(plh::channel_pattern_problem("lab.temp").empty());  // no wildcard: an exact channel
  CHECK(plh::channel_pattern_problem("lab.>.x") == "'>' may only be the last component");
  CHECK(plh::channel_pattern_problem("lab.rig*") == "a wildcard ('*', '>') must be a whole component");
  CHECK(plh::channel_pattern_problem("lab..*") == "empty component");
  CHECK(plh::channel_pattern_problem("lab.*.") == "empty component");
  CHECK(plh::channel_pattern_problem("") == "empty pattern");
  CHECK(plh::channel_pattern_problem("lab.$.*") == "each component must start with a letter or a digit");
  CHECK_THROWS_AS(plh::validate_channel_pattern("a.>.b"), plh::UsageError);
  CHECK_NOTHROW(plh::validate_channel_pattern("a.*.b"));

  CHECK(plh::is_channel_pattern("lab.*"));
  CHECK(plh::is_channel_pattern(">"));
  CHECK(plh::is_channel_pattern("a.*.b"));
  CHECK_FALSE(plh::is_channel_pattern("lab.temp"));
  CHECK_FALSE(plh::is_channel_pattern("lab.t-x"));

  CHECK(channel_matches("lab.rig2.*", "lab.rig2.temp"));
  CHECK_FALSE(channel_matches("lab.rig2.*", "lab.rig2"));
  CHECK_FALSE(channel_matches("lab.rig2.*", "lab.rig2.temp.raw"));
  CHECK_FALSE(channel_matches("lab.rig2.*", "lab.rig3.temp"));
  CHECK(channel_matches("*.temp", "rig.temp"));
  CHECK_FALSE(channel_matches("*.temp", "temp"));
  CHECK(channel_matches("lab.*.temp", "lab.r1.temp"));
  CHECK_FALSE(channel_matches("lab.*.temp", "lab.r1.hum"));
  CHECK(channel_matches("lab.>", "lab.a"));
  CHECK(channel_matches("lab.>", "lab.a.b.c"));
  CHECK_FALSE(channel_matches("lab.>", "lab"));
  CHECK_FALSE(channel_matches("lab.>", "labx.a"));
  CHECK(channel_matches(">", "x"));
  CHECK(channel_matches(">", "x.y"));
  CHECK(channel_matches("lab.temp", "lab.temp"));
  CHECK_FALSE(channel_matches("lab.temp", "lab.temperature"));
  CHECK_FALSE(channel_matches("lab.tem", "lab.temp"));
  CHECK(channel_matches("sensor.*", "sensor.0"));
  CHECK(channel_matches("lab.*", "lab.température"));
}
