// The reply document (SPEC §2 "Response payload"), UTF-8 validation, JSON depth and base64.
#include "hom/response.hpp"

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include "unit/show.hpp"

#include "hom/base64.hpp"

namespace {

using hom::base64_decode;
using hom::base64_encode;
using hom::bridge_error;
using hom::is_valid_utf8;
using hom::json_depth;
using hom::RawJson;
using hom::Response;
using hom::to_json;
using hom::to_valid_utf8;
using nlohmann::json;

using hom::test::show;

Response http_response(int status, std::string body) {
  Response r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

// to_json() parsed back; fails the test when the output is not JSON.
json reply(const Response& r) {
  const std::string text = to_json(r);
  json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
  EXPECT_FALSE(doc.is_discarded()) << "not JSON: " << show(text);
  EXPECT_TRUE(doc.is_object()) << show(text);
  return doc;
}

TEST(ToJson, ContentByKindOfBody) {
  struct Case {
    std::string body;
    json content;
    bool base64;
  };
  const std::vector<Case> cases = {
      {R"({"a":[1,2],"b":null})", {{"a", {1, 2}}, {"b", nullptr}}, false},
      {"[1,\"x\"]", {1, "x"}, false},
      {"42", 42, false},
      {"2.5", 2.5, false},
      {"true", true, false},
      {"\"quoted\"", "quoted", false},
      {"  {\"a\":1}\n", {{"a", 1}}, false},
      {"hello", "hello", false},
      {"{broken", "{broken", false},
      {"{\"a\":1} trailing", "{\"a\":1} trailing", false},
      {"caf\xC3\xA9 \xE2\x82\xAC", "caf\xC3\xA9 \xE2\x82\xAC", false},
      {std::string("a\0b", 3), std::string("a\0b", 3), false},
      {"line1\r\nline2\t\"q\"\\", "line1\r\nline2\t\"q\"\\", false},
      {"", "", false},
      {std::string("\xFF\xFE\x00", 3), "//4A", true},
      {std::string("\x89PNG\r\n\x1A\n", 8), "iVBORw0KGgo=", true},
      {"caf\xE9", "Y2Fm6Q==", true},
      {"\xED\xA0\x80", "7aCA", true},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE("body=" + show(c.body));
    const json doc = reply(http_response(200, c.body));
    EXPECT_EQ(doc.at("content"), c.content);
    EXPECT_EQ(doc.at("status"), 200);
    EXPECT_TRUE(doc.at("req_id").is_null());
    EXPECT_FALSE(doc.contains("error"));
    EXPECT_FALSE(doc.contains("headers"));
    if (c.base64) {
      EXPECT_EQ(doc.value("content_encoding", ""), "base64");
    } else {
      EXPECT_FALSE(doc.contains("content_encoding"));
    }
  }
}

TEST(ToJson, StatusIsAnInteger) {
  for (int status : {200, 204, 301, 404, 500, 599}) {
    const json doc = reply(http_response(status, ""));
    EXPECT_TRUE(doc.at("status").is_number_integer());
    EXPECT_EQ(doc.at("status"), status);
  }
}

TEST(ToJson, BridgeErrorHasNullContentAndAReason) {
  const Response r = bridge_error(504, "the local API did not answer in time", RawJson::of("r-9"));
  EXPECT_EQ(r.status, 504);
  EXPECT_FALSE(r.body.has_value());
  EXPECT_EQ(r.error, "the local API did not answer in time");
  EXPECT_EQ(r.req_id.text(), R"("r-9")");

  const json doc = reply(r);
  EXPECT_TRUE(doc.contains("content"));
  EXPECT_TRUE(doc.at("content").is_null());
  EXPECT_EQ(doc.at("status"), 504);
  EXPECT_EQ(doc.at("req_id"), "r-9");
  EXPECT_EQ(doc.at("error"), "the local API did not answer in time");
  EXPECT_FALSE(doc.contains("content_encoding"));
}

TEST(ToJson, BridgeErrorWithoutReqIdHasNull) {
  const json doc = reply(bridge_error(503, "shutting down"));
  EXPECT_TRUE(doc.contains("req_id"));
  EXPECT_TRUE(doc.at("req_id").is_null());
  EXPECT_TRUE(doc.at("content").is_null());
  EXPECT_EQ(doc.at("status"), 503);
}

TEST(ToJson, ReqIdIsEchoedVerbatim) {
  for (const json& id : {json("abc"), json(42), json(-1), json(2.5), json(true), json(nullptr),
                         json::array({1, "a"}), json({{"k", {{"n", 1}}}}), json("")}) {
    SCOPED_TRACE(id.dump());
    Response r = http_response(200, "ok");
    r.req_id = RawJson::of(id);
    EXPECT_EQ(reply(r).at("req_id"), id);
    EXPECT_EQ(reply(bridge_error(400, "bad", RawJson::of(id))).at("req_id"), id);
  }
}

TEST(ToJson, HeadersOnlyWhenAsked) {
  Response r = http_response(200, "x");
  r.headers = {{"content-type", "text/plain"}};
  r.include_headers = false;
  EXPECT_FALSE(reply(r).contains("headers"));
  r.include_headers = true;
  const json doc = reply(r);
  ASSERT_TRUE(doc.contains("headers"));
  EXPECT_EQ(doc.at("headers"), json({{"content-type", "text/plain"}}));
}

TEST(ToJson, RepeatedHeadersAreJoinedAndSetCookieIsAnArray) {
  Response r = http_response(200, "x");
  r.include_headers = true;
  r.headers = {{"content-type", "text/plain"}, {"x-a", "1"}, {"set-cookie", "a=1"}, {"x-a", "2"},
               {"set-cookie", "b=2"},          {"x-a", "3"}};
  const json headers = reply(r).at("headers");
  EXPECT_EQ(headers.at("content-type"), "text/plain");
  EXPECT_EQ(headers.at("x-a"), "1, 2, 3");
  EXPECT_EQ(headers.at("set-cookie"), json::array({"a=1", "b=2"}));
  EXPECT_EQ(headers.size(), 3u);
}

TEST(ToJson, SingleSetCookieIsStillAnArray) {
  Response r = http_response(200, "x");
  r.include_headers = true;
  r.headers = {{"set-cookie", "a=1; Path=/"}};
  EXPECT_EQ(reply(r).at("headers").at("set-cookie"), json::array({"a=1; Path=/"}));
}

TEST(ToJson, HugeNumbersAreNotTurnedIntoNull) {
  // Valid JSON grammar that a double cannot hold: content must not read as a bridge error.
  for (const std::string body : {"1e400", "-1e400", "[1e400]"}) {
    SCOPED_TRACE(body);
    const json doc = reply(http_response(200, body));
    EXPECT_FALSE(doc.at("content").is_null()) << to_json(http_response(200, body));
    EXPECT_NE(doc.at("content"), json::array({nullptr})) << to_json(http_response(200, body));
  }
}

TEST(ToJson, NonUtf8HeaderValuesStillGiveJson) {
  Response r = http_response(200, "x");
  r.include_headers = true;
  r.headers = {{"x-latin1", "caf\xE9"}, {"set-cookie", "v=\xFF"}};
  std::string text;
  ASSERT_NO_THROW(text = to_json(r));
  const json doc = json::parse(text, nullptr, false);
  EXPECT_FALSE(doc.is_discarded()) << show(text);
  EXPECT_TRUE(doc.contains("headers"));
}

TEST(ToJson, HeaderNamesThatDifferOnlyInBadBytesAreOneHeader) {
  // Found by fuzz_response: "\xFEa" and "\uFFFDa" once gave two identical keys in one object.
  const std::string replacement = "\xEF\xBF\xBD";  // U+FFFD
  Response r = http_response(200, "x");
  r.include_headers = true;
  r.headers = {{replacement + "a", "1"},
               {"\xFF" + std::string("a"), "2"},
               {"\xFE" + std::string("a"), "3\xFF"}};
  const std::string text = to_json(r);
  const std::string key = '"' + replacement + "a\"";
  EXPECT_EQ(text.find(key), text.rfind(key)) << show(text);
  EXPECT_EQ(reply(r).at("headers"), json({{replacement + "a", "1, 2, 3" + replacement}}))
      << show(text);
}

TEST(ToValidUtf8, ReplacesEachBadByteAndKeepsTheRest) {
  struct Case {
    std::string in;
    std::string out;
  };
  const std::vector<Case> cases = {
      {"", ""},
      {"plain", "plain"},
      {"caf\xC3\xA9 \xF0\x9F\x98\x80", "caf\xC3\xA9 \xF0\x9F\x98\x80"},
      {"caf\xE9", "caf\xEF\xBF\xBD"},
      {"\xC0\xAF", "\xEF\xBF\xBD\xEF\xBF\xBD"},                  // overlong '/'
      {"\xED\xA0\x80", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"},  // surrogate
      {"a\xE2\x82", "a\xEF\xBF\xBD\xEF\xBF\xBD"},                // truncated
      {std::string("n\0ul", 4), std::string("n\0ul", 4)},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(to_valid_utf8(c.in), c.out) << show(c.in);
    EXPECT_TRUE(is_valid_utf8(to_valid_utf8(c.in))) << show(c.in);
  }
}

TEST(ToJson, AlwaysValidJson) {
  std::vector<std::string> bodies = {
      std::string(300000, '['), "[" + std::string(5000, '[') + std::string(5001, ']'),
      std::string("\0\0\0", 3), "\xC0\x80",
      "\"unterminated",         "\xF4\x90\x80\x80",
  };
  std::mt19937 rng(42);
  for (int i = 0; i < 50; ++i) {
    std::string random(static_cast<std::size_t>(rng() % 64), '\0');
    for (auto& ch : random) ch = static_cast<char>(rng());
    bodies.push_back(random);
  }
  for (const auto& body : bodies) {
    SCOPED_TRACE("body=" + show(body));
    std::string text;
    try {
      text = to_json(http_response(200, body));
    } catch (const std::exception& e) {
      ADD_FAILURE() << "threw: " << e.what();
      continue;
    }
    const json doc = json::parse(text, nullptr, false);
    if (doc.is_discarded()) {
      ADD_FAILURE() << "not JSON: " << show(text);
      continue;
    }
    EXPECT_TRUE(doc.contains("content"));
    EXPECT_EQ(doc.at("status"), 200);
    if (!is_valid_utf8(body)) {
      EXPECT_EQ(doc.value("content_encoding", ""), "base64");
      EXPECT_EQ(base64_decode(doc.at("content").get<std::string>()),
                std::optional<std::string>(body));
    }
  }
}

// A valid JSON body nested far deeper than any parser's recursion should stand: to_json()
// must neither crash nor throw (the local API may return garbage, SPEC §5). Run in a child
// process so a stack overflow fails this test only.
TEST(ToJsonDeathTest, DeeplyNestedJsonBodyDoesNotCrash) {
  const std::string body = std::string(200000, '[') + std::string(200000, ']');
  EXPECT_EXIT(
      {
        const std::string text = to_json(http_response(200, body));
        std::exit(json::parse(text, nullptr, false).is_discarded() ? 1 : 0);
      },
      ::testing::ExitedWithCode(0), "");
}

TEST(IsValidUtf8, Table) {
  struct Case {
    std::string bytes;
    bool valid;
  };
  const std::vector<Case> cases = {
      {"", true},
      {"abc", true},
      {std::string("\0", 1), true},
      {"\x7F", true},
      {"\xC2\x80", true},                // U+0080
      {"\xC3\xA9", true},                // é
      {"\xDF\xBF", true},                // U+07FF
      {"\xE0\xA0\x80", true},            // U+0800
      {"\xE2\x82\xAC", true},            // €
      {"\xED\x9F\xBF", true},            // U+D7FF
      {"\xEE\x80\x80", true},            // U+E000
      {"\xEF\xBF\xBF", true},            // U+FFFF
      {"\xF0\x90\x80\x80", true},        // U+10000
      {"\xF0\x9F\x98\x80", true},        // 😀
      {"\xF4\x8F\xBF\xBF", true},        // U+10FFFF
      {"a\xC3\xA9z\xE2\x82\xAC", true},  // mixed
      // Overlong.
      {"\xC0\x80", false},
      {"\xC0\xAF", false},
      {"\xC1\xBF", false},
      {"\xE0\x80\xAF", false},
      {"\xE0\x9F\xBF", false},
      {"\xF0\x80\x80\xAF", false},
      {"\xF0\x8F\xBF\xBF", false},
      // Surrogates.
      {"\xED\xA0\x80", false},
      {"\xED\xAF\xBF", false},
      {"\xED\xB0\x80", false},
      {"\xED\xBF\xBF", false},
      {"\xED\xA0\xBD\xED\xB8\x80", false},  // CESU-8 pair
      // Beyond U+10FFFF and never-valid bytes.
      {"\xF4\x90\x80\x80", false},
      {"\xF5\x80\x80\x80", false},
      {"\xF8\x88\x80\x80\x80", false},
      {"\xFE", false},
      {"\xFF", false},
      // Lone or extra continuation bytes.
      {"\x80", false},
      {"\xBF", false},
      {"a\x80z", false},
      {"\xC3\xA9\xA9", false},
      // Truncated.
      {"\xC3", false},
      {"a\xC3", false},
      {"\xE2\x82", false},
      {"\xF0\x9F\x98", false},
      {"\xF0\x9F", false},
      // Bad continuation.
      {"\xC3\x28", false},
      {"\xE2\x28\xA1", false},
      {"\xE2\x82\x28", false},
      {"\xF0\x28\x8C\xBC", false},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(is_valid_utf8(c.bytes), c.valid) << show(c.bytes);
  }
}

TEST(JsonDepth, Table) {
  struct Case {
    std::string text;
    int limit;
    int depth;
  };
  const std::vector<Case> cases = {
      {"", 100, 0},
      {"5", 100, 0},
      {"\"[[[{{{\"", 100, 0},
      {"{}", 100, 1},
      {"[]", 100, 1},
      {R"({"a":1,"b":"x"})", 100, 1},
      {R"({"a":{}})", 100, 2},
      {"[[[]]]", 100, 3},
      {"[{},{}]", 100, 2},
      {"[[],[[]],[]]", 100, 3},
      {R"({"a":"[[[{{{"})", 100, 1},
      {R"({"a":"\"[[","b":[]})", 100, 2},
      {R"({"a\\":[]})", 100, 2},
      {R"({"a\\\"[":[]})", 100, 2},
      {R"({"a":"]]]}}}","b":{"c":[1]}})", 100, 3},
      {"[[[[[]]]]]", 5, 5},
      {"[[[[[]]]]]", 4, 5},
      {"[[[[[]]]]]", 3, 4},
      {"[[[[[[[[[[", 3, 4},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(json_depth(c.text, c.limit), c.depth) << c.text << " limit " << c.limit;
  }
}

TEST(JsonDepth, HugeNestingStopsAtTheLimit) {
  EXPECT_EQ(json_depth(std::string(1000000, '['), 100), 101);
  EXPECT_EQ(json_depth("{\"a\":" + std::string(100, '[') + std::string(100, ']') + "}", 100), 101);
  EXPECT_EQ(json_depth("{\"a\":" + std::string(99, '[') + std::string(99, ']') + "}", 100), 100);
}

TEST(Base64, Rfc4648Vectors) {
  struct Case {
    std::string bytes, text;
  };
  const std::vector<Case> cases = {
      {"", ""},
      {"f", "Zg=="},
      {"fo", "Zm8="},
      {"foo", "Zm9v"},
      {"foob", "Zm9vYg=="},
      {"fooba", "Zm9vYmE="},
      {"foobar", "Zm9vYmFy"},
      {"\xFF\xFF\xFF", "////"},
      {"\xFB\xFF", "+/8="},
      {std::string("\0", 1), "AA=="},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(show(c.bytes));
    EXPECT_EQ(base64_encode(c.bytes), c.text);
    EXPECT_EQ(base64_decode(c.text), std::optional<std::string>(c.bytes));
  }
}

TEST(Base64, RoundTripsAllByteValues) {
  std::string all;
  for (int i = 0; i < 256; ++i) all.push_back(static_cast<char>(i));
  for (std::size_t offset = 0; offset < 3; ++offset) {
    const std::string bytes = all.substr(offset);
    const std::string text = base64_encode(bytes);
    EXPECT_EQ(text.size() % 4, 0u);
    EXPECT_EQ(base64_decode(text), std::optional<std::string>(bytes));
  }
  std::mt19937 rng(7);
  for (std::size_t len = 0; len < 300; ++len) {
    std::string bytes(len, '\0');
    for (auto& ch : bytes) ch = static_cast<char>(rng());
    EXPECT_EQ(base64_decode(base64_encode(bytes)), std::optional<std::string>(bytes)) << len;
  }
}

TEST(Base64, StrictRejects) {
  for (const std::string text :
       {"Z", "Zg", "Zg=", "Zm9vY", "Zm8==", "Zg==Zg==", "Z===", "====", "=Zg=", "Zg=a", "Zm9v YmFy",
        "Zm9v\n", " Zm9v", "Zm9-", "Zm9_", "Zm9v!"}) {
    EXPECT_FALSE(base64_decode(text).has_value()) << show(text);
  }
  EXPECT_FALSE(base64_decode(std::string("Zm\0v", 4)).has_value());
}

}  // namespace
