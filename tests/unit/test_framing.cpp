// FrameReader / FrameWriter through real pipes: a writer thread feeds one end while the
// code under test reads the other, so partial reads and EOF behave as in a pipeline.
#include <fcntl.h>
#include <sodium.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <csignal>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "plh/core/error.hpp"
#include "plh/core/framing.hpp"
#include "plh/core/text.hpp"

using namespace std::string_literals;
using plh::Format;
using plh::FrameReader;
using plh::FrameWriter;

namespace {

struct Pipe {
  int r = -1, w = -1;
  Pipe() {
    int fds[2];
    REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
    r = fds[0];
    w = fds[1];
  }
  ~Pipe() {
    close_r();
    close_w();
  }
  void close_r() {
    if (r >= 0) ::close(r);
    r = -1;
  }
  void close_w() {
    if (w >= 0) ::close(w);
    w = -1;
  }
};

void write_fully(int fd, std::string_view data, std::size_t piece) {
  while (!data.empty()) {
    const std::size_t n = std::min(piece, data.size());
    const ssize_t w = ::write(fd, data.data(), n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return;
    }
    data.remove_prefix(static_cast<std::size_t>(w));
  }
}

// Feeds `input` into a pipe from a thread (in writes of at most `piece` bytes) and
// returns every message the reader yields.
std::vector<std::string> read_messages(Format fmt, const std::string& input, std::size_t piece = 1 << 20,
                                       std::size_t chunk = 64 * 1024, std::size_t max_message = 1u << 30) {
  Pipe p;
  std::thread feeder([&] {
    write_fully(p.w, input, piece);
    p.close_w();
  });
  std::vector<std::string> out;
  try {
    FrameReader reader(p.r, fmt, chunk, max_message);
    while (auto m = reader.next()) out.emplace_back(*m);
  } catch (...) {
    p.close_r();  // unblock the feeder
    feeder.join();
    throw;
  }
  feeder.join();
  return out;
}

// Everything a FrameWriter produces for `messages`, read back from a pipe.
std::string written_bytes(Format fmt, const std::vector<std::string>& messages, bool flush_each = false,
                          const plh::MessageMeta& meta = {}) {
  Pipe p;
  std::string got;
  std::thread drain([&] {
    char buf[65536];
    for (;;) {
      const ssize_t n = ::read(p.r, buf, sizeof buf);
      if (n <= 0) break;
      got.append(buf, static_cast<std::size_t>(n));
    }
  });
  {
    FrameWriter writer(p.w, fmt, flush_each);
    for (const auto& m : messages) writer.write(m, meta);
    writer.flush();
  }
  p.close_w();
  drain.join();
  return got;
}

std::string all_bytes() {
  std::string s;
  for (int i = 0; i < 256; ++i) s.push_back(static_cast<char>(i));
  return s;
}

std::string len_frame(std::string_view payload) {
  std::string f;
  const auto n = static_cast<std::uint32_t>(payload.size());
  f.push_back(static_cast<char>(n >> 24));
  f.push_back(static_cast<char>(n >> 16));
  f.push_back(static_cast<char>(n >> 8));
  f.push_back(static_cast<char>(n));
  f.append(payload);
  return f;
}

using Msgs = std::vector<std::string>;

}  // namespace

TEST_CASE("format words parse and print", "[framing]") {
  for (auto f : {Format::line, Format::zero, Format::len, Format::raw, Format::json})
    CHECK(plh::parse_format(plh::format_name(f)) == f);
  CHECK_THROWS_AS(plh::parse_format("lines"), plh::UsageError);
  CHECK_THROWS_AS(plh::parse_format(""), plh::UsageError);
}

TEST_CASE("line framing: newline stripped, empty lines kept, last line without newline", "[framing]") {
  CHECK(read_messages(Format::line, "a\nbb\n") == Msgs{"a", "bb"});
  CHECK(read_messages(Format::line, "a\nbb") == Msgs{"a", "bb"});
  CHECK(read_messages(Format::line, "\n\na\n\n") == Msgs{"", "", "a", ""});
  CHECK(read_messages(Format::line, "") == Msgs{});
  CHECK(read_messages(Format::line, "x\r\ny\r") == Msgs{"x\r", "y\r"});
  CHECK(written_bytes(Format::line, {"a", "", "b\r"}) == "a\n\nb\r\n");
}

TEST_CASE("line framing: a 16 MiB line between short ones", "[framing]") {
  std::string big(16u << 20, 'x');
  for (std::size_t i = 0; i < big.size(); i += 4093) big[i] = static_cast<char>('a' + i % 26);
  const auto got = read_messages(Format::line, "first\n" + big + "\nlast", 1 << 16);
  REQUIRE(got.size() == 3);
  CHECK(got[0] == "first");
  CHECK(got[1] == big);
  CHECK(got[2] == "last");
  // and out again, larger than the writer's buffer
  CHECK(written_bytes(Format::line, {"first", big, "last"}) == "first\n" + big + "\nlast\n");
}

TEST_CASE("line framing: a line over max_message is an error after earlier lines", "[framing]") {
  Pipe p;
  std::thread feeder([&] {
    write_fully(p.w, "ok\n" + std::string(100, 'z') + "\nnever\n", 1 << 20);
    p.close_w();
  });
  FrameReader reader(p.r, Format::line, 64 * 1024, 50);
  CHECK(reader.next() == std::optional<std::string_view>("ok"));
  CHECK_THROWS_WITH(reader.next(), Catch::Contains("longer than the maximum of 50"));
  CHECK_THROWS_AS(reader.next(), plh::Error);  // stays failed
  feeder.join();
}

TEST_CASE("zero framing: binary bytes except NUL, last message without NUL", "[framing]") {
  const std::string bytes = all_bytes().substr(1);  // 1..255
  std::string input = bytes + '\0' + std::string() + '\0' + "tail";
  CHECK(read_messages(Format::zero, input) == Msgs{bytes, "", "tail"});
  CHECK(read_messages(Format::zero, "a\nb\0c"s) == Msgs{"a\nb", "c"});
  CHECK(written_bytes(Format::zero, {"a", "b\n"}) == "a\0b\n\0"s);
}

TEST_CASE("len framing: binary-safe round trip", "[framing]") {
  const Msgs msgs{all_bytes(), "", std::string(1, '\0'), "hello\nworld", std::string(300000, '\xff')};
  const std::string wire = written_bytes(Format::len, msgs);
  std::string expect;
  for (const auto& m : msgs) expect += len_frame(m);
  CHECK(wire == expect);
  CHECK(read_messages(Format::len, wire) == msgs);
  CHECK(read_messages(Format::len, wire, 7) == msgs);  // small writes: frames split across reads
}

TEST_CASE("len framing: truncated final frame fails after complete frames", "[framing]") {
  for (const std::string& tail : {len_frame("0123456789").substr(0, 9), std::string("\0\0"s)}) {
    Pipe p;
    std::thread feeder([&] {
      write_fully(p.w, len_frame("a") + len_frame("bb") + tail, 1 << 20);
      p.close_w();
    });
    FrameReader reader(p.r, Format::len);
    CHECK(reader.next() == std::optional<std::string_view>("a"));
    CHECK(reader.next() == std::optional<std::string_view>("bb"));
    CHECK_THROWS_WITH(reader.next(), Catch::Contains("truncated len frame"));
    CHECK_THROWS_AS(reader.next(), plh::Error);
    feeder.join();
  }
}

TEST_CASE("len framing: a length over max_message is an error", "[framing]") {
  const std::string input = len_frame("ok") + len_frame(std::string(1000, 'q'));
  CHECK_THROWS_WITH(read_messages(Format::len, input, 1 << 20, 64 * 1024, 999), Catch::Contains("over the maximum"));
  CHECK(read_messages(Format::len, input, 1 << 20, 64 * 1024, 1000).size() == 2);
}

TEST_CASE("raw framing: chunks of at most chunk_size, concatenated on output", "[framing]") {
  std::string input;
  for (int i = 0; i < 1000; ++i) input += static_cast<char>(i * 7);
  for (std::size_t piece : {std::size_t{1000}, std::size_t{13}}) {
    const auto chunks = read_messages(Format::raw, input, piece, 64);
    std::string joined;
    for (const auto& c : chunks) {
      CHECK(c.size() <= 64);
      CHECK(!c.empty());
      joined += c;
    }
    CHECK(joined == input);
    CHECK(written_bytes(Format::raw, chunks) == input);
  }
}

TEST_CASE("raw framing: a chunk is returned as soon as read(2) delivers it", "[framing]") {
  Pipe p;
  FrameReader reader(p.r, Format::raw, 1024);
  write_fully(p.w, "abc", 3);  // pipe stays open: the reader must not wait for 1024 bytes
  CHECK(reader.next() == std::optional<std::string_view>("abc"));
  CHECK_FALSE(reader.has_buffered());
  p.close_w();
  CHECK(reader.next() == std::nullopt);
}

TEST_CASE("has_buffered is true only for a complete buffered message", "[framing]") {
  SECTION("line") {
    Pipe p;
    FrameReader reader(p.r, Format::line);
    write_fully(p.w, "a\nb\nc", 1 << 20);
    CHECK_FALSE(reader.has_buffered());  // nothing read yet
    CHECK(reader.next() == std::optional<std::string_view>("a"));
    CHECK(reader.has_buffered());
    CHECK(reader.next() == std::optional<std::string_view>("b"));
    CHECK_FALSE(reader.has_buffered());  // "c" is partial
    write_fully(p.w, "d\n", 1 << 20);
    CHECK(reader.next() == std::optional<std::string_view>("cd"));
    CHECK_FALSE(reader.has_buffered());
    write_fully(p.w, "e", 1 << 20);
    p.close_w();
    CHECK(reader.next() == std::optional<std::string_view>("e"));
    CHECK_FALSE(reader.has_buffered());
    CHECK(reader.next() == std::nullopt);
    CHECK(reader.count() == 4);
  }
  SECTION("len") {
    Pipe p;
    FrameReader reader(p.r, Format::len);
    const std::string third = len_frame("ccc");
    write_fully(p.w, len_frame("a") + len_frame("bb") + third.substr(0, 5), 1 << 20);
    CHECK(reader.next() == std::optional<std::string_view>("a"));
    CHECK(reader.has_buffered());
    CHECK(reader.next() == std::optional<std::string_view>("bb"));
    CHECK_FALSE(reader.has_buffered());
    write_fully(p.w, third.substr(5), 1 << 20);
    p.close_w();
    CHECK(reader.next() == std::optional<std::string_view>("ccc"));
    CHECK(reader.next() == std::nullopt);
  }
  SECTION("json") {
    Pipe p;
    FrameReader reader(p.r, Format::json);
    write_fully(p.w, "{\"data\":\"a\"}\n\n   \n{\"data\":", 1 << 20);
    CHECK(reader.next() == std::optional<std::string_view>("a"));
    CHECK_FALSE(reader.has_buffered());  // blank lines and a partial line
    write_fully(p.w, "\"b\"}\n", 1 << 20);
    CHECK(reader.next() == std::optional<std::string_view>("b"));
    p.close_w();
    CHECK(reader.next() == std::nullopt);
  }
}

TEST_CASE("messages arrive intact when the input trickles in byte by byte", "[framing]") {
  std::mt19937 rng(42);
  Msgs msgs;
  for (int i = 0; i < 40; ++i) {
    std::string m(rng() % 30, ' ');
    for (auto& c : m) c = static_cast<char>('A' + rng() % 26);
    msgs.push_back(m);
  }
  for (auto fmt : {Format::line, Format::zero, Format::len, Format::json}) {
    INFO(plh::format_name(fmt));
    const std::string wire = written_bytes(fmt, msgs);
    CHECK(read_messages(fmt, wire, 1) == msgs);
  }
}

TEST_CASE("round trip through writer and reader for every format", "[framing]") {
  std::mt19937 rng(7);
  Msgs msgs;
  for (int i = 0; i < 2000; ++i) {
    std::string m(rng() % 200, ' ');
    for (auto& c : m) c = static_cast<char>(rng() % 256);
    msgs.push_back(m);
  }
  auto without = [&](char bad) {
    Msgs out = msgs;
    for (auto& m : out) std::replace(m.begin(), m.end(), bad, 'x');
    return out;
  };
  SECTION("line") {
    const Msgs m = without('\n');
    CHECK(read_messages(Format::line, written_bytes(Format::line, m)) == m);
  }
  SECTION("zero") {
    const Msgs m = without('\0');
    CHECK(read_messages(Format::zero, written_bytes(Format::zero, m)) == m);
  }
  SECTION("len") { CHECK(read_messages(Format::len, written_bytes(Format::len, msgs)) == msgs); }
  SECTION("json (text and binary payloads)") {
    Msgs m = msgs;
    m.emplace_back("plain text with \"quotes\" \\ and \t tabs, äöü €");
    CHECK(read_messages(Format::json, written_bytes(Format::json, m)) == m);
  }
  SECTION("raw") {
    std::string all;
    for (const auto& m : msgs) all += m;
    CHECK(written_bytes(Format::raw, read_messages(Format::raw, all, 4096, 1000)) == all);
  }
  SECTION("flush_each writes the same bytes") {
    CHECK(written_bytes(Format::len, msgs, true) == written_bytes(Format::len, msgs, false));
  }
}

TEST_CASE("json output: fields, escaping, base64 for binary", "[framing]") {
  plh::MessageMeta meta;
  meta.channel = "lab.temp";
  meta.seq = 7;
  meta.ts_ns = 1700000000123456789;
  CHECK(written_bytes(Format::json, {"hi"}, false, meta) ==
        "{\"channel\":\"lab.temp\",\"seq\":7,\"ts_ns\":1700000000123456789,\"size\":2,\"data\":\"hi\"}\n");
  CHECK(written_bytes(Format::json, {"q\"b\\n\n\x01\x1f\t\x7f"}, false, meta) ==
        "{\"channel\":\"lab.temp\",\"seq\":7,\"ts_ns\":1700000000123456789,\"size\":10,"
        "\"data\":\"q\\\"b\\\\n\\n\\u0001\\u001f\\t\x7f\"}\n");

  const std::string binary = "ok\xff\xfe";
  const auto j = nlohmann::json::parse(written_bytes(Format::json, {binary}, false, meta));
  CHECK_FALSE(j.contains("data"));
  CHECK(j["data_b64"] == "b2v//g==");
  CHECK(j["size"] == 4);

  meta.has_slot_meta = true;
  meta.type_hash = 99;
  meta.dims = {2, 3, 0, 0};
  const auto s = nlohmann::json::parse(written_bytes(Format::json, {"x"}, false, meta));
  CHECK(s["type_hash"] == 99);
  CHECK(s["type_hash_hex"] == "0x0000000000000063");
  meta.type_hash = 0xfedcba9876543211ull;  // above 2^53: jq would round the number
  CHECK(nlohmann::json::parse(written_bytes(Format::json, {"x"}, false, meta))["type_hash_hex"] == "0xfedcba9876543211");
  CHECK(s["dims"] == nlohmann::json::array({2, 3, 0, 0}));

  // A message bigger than the writer's buffer takes the slow path.
  const std::string big(400000, '"');
  const auto b = nlohmann::json::parse(written_bytes(Format::json, {big}));
  CHECK(b["data"] == big);
}

TEST_CASE("UTF-8 validation", "[framing]") {
  CHECK(plh::is_valid_utf8(""));
  CHECK(plh::is_valid_utf8("plain ascii text that is longer than eight bytes"));
  CHECK(plh::is_valid_utf8("\xc3\xa4\xe2\x82\xac\xf0\x9f\x98\x80"));  // ä € 😀
  CHECK_FALSE(plh::is_valid_utf8("\xc3"));                            // truncated
  CHECK_FALSE(plh::is_valid_utf8("\xc0\xaf"));                        // overlong
  CHECK_FALSE(plh::is_valid_utf8("\xe0\x80\xaf"));                    // overlong
  CHECK_FALSE(plh::is_valid_utf8("\xed\xa0\x80"));                    // surrogate
  CHECK_FALSE(plh::is_valid_utf8("\xf4\x90\x80\x80"));                // > U+10FFFF
  CHECK_FALSE(plh::is_valid_utf8("abcdefgh\x80"));                    // stray continuation
  CHECK_FALSE(plh::is_valid_utf8("\xff"));
  // Inputs of 64 bytes and more take simdjson's validator: the same verdicts, wherever the
  // sequence sits (start, middle, the last bytes, cut off at the end).
  const std::vector<std::pair<std::string, bool>> seqs{
      {"\xc3\xa4\xe2\x82\xac\xf0\x9f\x98\x80", true}, {"\xc3", false}, {"\xc0\xaf", false},
      {"\xe0\x80\xaf", false}, {"\xed\xa0\x80", false}, {"\xf4\x90\x80\x80", false},
      {"\x80", false}, {"\xff", false}, {"\xef\xbf\xbf", true}, {"\xf4\x8f\xbf\xbf", true}};
  for (const auto& [bytes, valid] : seqs)
    for (std::size_t before : {0u, 33u, 64u, 200u, 4096u})
      for (std::size_t after : {0u, 1u, 63u, 100u}) {
        const std::string text = std::string(before, 'a') + bytes + std::string(after, 'z');
        INFO(before << " + sequence + " << after);
        CHECK(plh::is_valid_utf8(text) == valid);
        CHECK(plh::detail::is_valid_utf8_scalar(text) == valid);
      }
  // Differential: random bytes biased towards UTF-8 lead and continuation bytes, both paths.
  std::mt19937 rng(12345);
  for (int i = 0; i < 20000; ++i) {
    std::string text(std::uniform_int_distribution<int>(0, 300)(rng), 'a');
    for (auto& c : text) {
      const int r = std::uniform_int_distribution<int>(0, 9)(rng);
      c = static_cast<char>(r < 5 ? 'a' + r : r < 8 ? 0x80 + (rng() % 64) : 0xC0 + (rng() % 64));
    }
    INFO(i);
    CHECK(plh::is_valid_utf8(text) == plh::detail::is_valid_utf8_scalar(text));
  }
  std::string out;
  plh::append_json_escaped(out, "a\"\\\n\x02");
  CHECK(out == "a\\\"\\\\\\n\\u0002");
}

TEST_CASE("json input: data and data_b64, other fields ignored", "[framing]") {
  const std::string input =
      "{\"data\":\"hello \\\"w\\\"\\n\"}\n"
      "{\"channel\":\"x\",\"seq\":3,\"data_b64\":\"AAEC/w==\"}\n"
      "{\"data_b64\":\"AAEC/w\"}\n"
      "\n"
      "  {\"data\":\"\"}  \r\n"
      "{\"data\":\"no newline\"}";
  CHECK(read_messages(Format::json, input) ==
        Msgs{"hello \"w\"\n", "\x00\x01\x02\xff"s, "\x00\x01\x02\xff"s, "", "no newline"});
}

TEST_CASE("json input: anything but an object with data is an error naming the line", "[framing]") {
  for (const char* bad : {"not json", "[1,2]", "{\"x\":1}", "{\"data\":5}", "{\"data_b64\":\"@@@\"}",
                          "{\"data\":\"unterminated}", "{\"data\":\"x\",}", "{\"a\":01,\"data\":\"x\"}",
                          "{\"data\":\"x\"} x", "{\"data\":\"\\ud800\"}", "{\"data\":\"\xff\"}",
                          "{\"data\":\"tab\there\"}"}) {
    INFO(bad);
    Pipe p;
    std::thread feeder([&] {
      write_fully(p.w, "{\"data\":\"first\"}\n\n" + std::string(bad) + "\n{\"data\":\"never\"}\n", 1 << 20);
      p.close_w();
    });
    FrameReader reader(p.r, Format::json);
    CHECK(reader.next() == std::optional<std::string_view>("first"));
    CHECK_THROWS_WITH(reader.next(), Catch::Contains("json input line 3"));
    CHECK_THROWS_AS(reader.next(), plh::Error);
    feeder.join();
  }
}

TEST_CASE("json input: a NUL, bytes after one, a backslash before one, lone surrogates anywhere are errors",
          "[framing][json]") {
  const std::string deep = std::string(300, '[') + std::string(300, ']');
  for (const std::string& bad :
       {"{\"data\":\"x\"}\0garbage"s, "{\"data\":\"x\"}\0"s, "{\"data\":\"x\\\0\"}"s, "{\"data\":\"x\0\"}"s,
        "\0{\"data\":\"x\"}"s, "{\"x\":\"\\ud800\",\"data\":\"y\"}"s, "{\"x\":\"\\udc00\",\"data\":\"y\"}"s,
        "{\"x\":\"\\ud800\\u0041\",\"data\":\"y\"}"s, "{\"x\":" + deep + ",\"data\":\"y\"}",
        "\xEF\xBB\xBF{\"data\":\"bom\"}"s}) {
    INFO(plh::printable(bad, 80));
    Pipe p;
    std::thread feeder([&] {
      write_fully(p.w, "{\"data\":\"first\"}\n" + bad + "\n{\"data\":\"never\"}\n", 1 << 20);
      p.close_w();
    });
    FrameReader reader(p.r, Format::json);
    CHECK(reader.next() == std::optional<std::string_view>("first"));
    CHECK_THROWS_WITH(reader.next(), Catch::Contains("json input line 2: not valid JSON") ||
                                         Catch::Contains("json input line 2: expected a JSON object"));
    feeder.join();
  }
  // A surrogate pair in another field is fine.
  CHECK(read_messages(Format::json, "{\"x\":\"\\ud83d\\ude00\",\"data\":\"y\"}\n") == Msgs{"y"});
}

TEST_CASE("non-blocking input is polled, not spun on", "[framing]") {
  Pipe p;
  REQUIRE(::fcntl(p.r, F_SETFL, ::fcntl(p.r, F_GETFL) | O_NONBLOCK) == 0);
  std::thread feeder([&] {
    for (int i = 0; i < 100; ++i) write_fully(p.w, std::to_string(i) + "\n", 1 << 20);
    p.close_w();
  });
  FrameReader reader(p.r, Format::line);
  int n = 0;
  while (auto m = reader.next()) CHECK(*m == std::to_string(n++));
  CHECK(n == 100);
  feeder.join();
}

TEST_CASE("writing to a closed pipe throws BrokenPipe", "[framing]") {
  std::signal(SIGPIPE, SIG_IGN);
  Pipe p;
  p.close_r();
  FrameWriter writer(p.w, Format::line, false);
  writer.write("lost");
  CHECK_THROWS_AS(writer.flush(), plh::BrokenPipe);
  CHECK(writer.buffered() == 0);
  FrameWriter eager(p.w, Format::line, true);
  CHECK_THROWS_AS(eager.write("lost"), plh::BrokenPipe);
}

TEST_CASE("non-blocking output waits for the reader instead of failing", "[framing]") {
  Pipe p;
  REQUIRE(::fcntl(p.w, F_SETFL, ::fcntl(p.w, F_GETFL) | O_NONBLOCK) == 0);
  const Msgs msgs(20000, std::string(50, 'n'));  // ~1 MiB, far more than the pipe holds
  std::string got;
  std::thread drain([&] {
    char buf[4096];
    for (;;) {
      const ssize_t n = ::read(p.r, buf, sizeof buf);
      if (n <= 0) break;
      got.append(buf, static_cast<std::size_t>(n));
    }
  });
  {
    FrameWriter writer(p.w, Format::line, false);
    for (const auto& m : msgs) writer.write(m);
  }  // the destructor flushes the rest
  p.close_w();
  drain.join();
  CHECK(got.size() == msgs.size() * 51);
}

TEST_CASE("json input: the fast scanner agrees with a full JSON parser", "[framing]") {
  const std::vector<std::string> lines{
      R"({"data":"\u00e4\ud83d\ude00 \/ \b\f\n\r\t \" \\"})",
      R"({"channel":"a.b","seq":12,"ts_ns":-5,"size":3,"data":"xyz","dims":[1,2,[3,{"k":null}]],"ok":true,"no":false,"f":1.5e-3})",
      R"({"x":"\"}","data":"after"})",
      "{\"data\":\"\xc3\xa4\xe2\x82\xac\"}",
      R"( { "data_b64" : "AAEC/w==" , "extra" : { } } )",
      R"({"data":5,"data_b64":"AA=="})",
      R"({"data":"a","data":"b"})",
      R"({"d\u0061ta":"escaped key"})",
      R"({"data":"","e":[],"n":-0.5E+2})",
  };
  std::string input;
  Msgs expect;
  for (const auto& l : lines) {
    input += l + "\n";
    const auto j = nlohmann::json::parse(l);
    if (j.contains("data") && j["data"].is_string()) {
      expect.push_back(j["data"].get<std::string>());
    } else {
      const auto b64 = j["data_b64"].get<std::string>();
      std::string bin(b64.size(), '\0');
      std::size_t n = 0;
      REQUIRE(sodium_base642bin(reinterpret_cast<unsigned char*>(bin.data()), bin.size(), b64.data(), b64.size(),
                                nullptr, &n, nullptr, sodium_base64_VARIANT_ORIGINAL) == 0);
      bin.resize(n);
      expect.push_back(bin);
    }
  }
  CHECK(read_messages(Format::json, input) == expect);
}
