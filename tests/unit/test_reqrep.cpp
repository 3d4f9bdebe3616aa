// Request/reply headers (docs/protocol.md "Request/reply"): exact sizes, magic, round trip.
#include <catch2/catch.hpp>

#include "plh/data/reqrep.hpp"

namespace rr = plh::reqrep;

TEST_CASE("reqrep headers round-trip and reject anything else", "[unit][reqrep]") {
  rr::RequestHeader q{rr::kFlagRetry, 0x0102030405060708ull};
  const std::string qb = rr::encode_request_header(q);
  REQUIRE(qb.size() == rr::kRequestHeaderSize);
  CHECK(qb.substr(0, 4) == "PLHQ");
  CHECK(static_cast<unsigned char>(qb[8]) == 0x08);  // little endian id
  rr::RequestHeader q2;
  REQUIRE(rr::decode_request_header(qb, q2));
  CHECK(q2.flags == rr::kFlagRetry);
  CHECK(q2.id == q.id);
  CHECK_FALSE(rr::decode_request_header(qb.substr(0, 15), q2));
  CHECK_FALSE(rr::decode_request_header(qb + "x", q2));
  std::string bad = qb;
  bad[0] = 'X';
  CHECK_FALSE(rr::decode_request_header(bad, q2));

  rr::ReplyHeader a{1000, 77, 4};
  const std::string ab = rr::encode_reply_header(a);
  REQUIRE(ab.size() == rr::kReplyHeaderSize);
  rr::ReplyHeader a2;
  REQUIRE(rr::decode_reply_header(ab, a2));
  CHECK(a2.status == 1000);
  CHECK(a2.id == 77);
  CHECK(a2.capacity == 4);
  std::string reserved = ab;
  reserved[23] = 1;  // the reserved word must be 0
  CHECK_FALSE(rr::decode_reply_header(reserved, a2));
  CHECK_FALSE(rr::decode_reply_header(qb, a2));  // a request header is not a reply
  CHECK(rr::status_text(3) == "exit status 3");
  CHECK(rr::status_text(256 + 9) == "killed by signal 9");
  CHECK(rr::status_text(rr::kStatusTimeout).find("timed out") != std::string::npos);
}
