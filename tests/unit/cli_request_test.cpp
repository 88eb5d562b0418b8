// The pure half of hom: durations, payloads from curl-like options, output helpers.
#include "hom/cli_request.hpp"

#include <gtest/gtest.h>

namespace hom {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;

TEST(ParseDuration, AcceptsUnitsAndBareSeconds) {
  const std::pair<const char*, long long> cases[] = {
      {"500ms", 500}, {"10s", 10000}, {"2m", 120000}, {"1.5s", 1500}, {"3", 3000}, {"1h", 3600000}};
  for (const auto& [text, ms] : cases) {
    const auto d = parse_duration(text);
    ASSERT_TRUE(d) << text;
    EXPECT_EQ(d->count(), ms) << text;
  }
}

TEST(ParseDuration, RejectsGarbage) {
  for (const char* text : {"", "s", "10x", "-1s", "0", "0ms", ".5s", "5.", "1e3", "abc", "10 s"})
    EXPECT_FALSE(parse_duration(text)) << text;
}

TEST(BuildPayload, DataIsJsonWhenItParsesElseText) {
  RequestOptions o;
  o.data = R"({"name":"tiramisu"})";
  EXPECT_EQ(build_payload(o)["body"], json({{"name", "tiramisu"}}));
  o.data = "5";
  EXPECT_EQ(build_payload(o)["body"], 5);
  o.data = "plain text";
  EXPECT_EQ(build_payload(o)["body"], "plain text");
  o.data.reset();
  o.data_raw = "[1]";
  EXPECT_EQ(build_payload(o)["body"], "[1]");
}

TEST(BuildPayload, BinaryGoesAsBase64) {
  RequestOptions o;
  o.data_binary = std::string("\x00\xff", 2);
  const auto p = build_payload(o);
  EXPECT_EQ(p["body_base64"], "AP8=");
  EXPECT_FALSE(p.contains("body"));
}

TEST(BuildPayload, OnlyOneBody) {
  RequestOptions o;
  o.data = "a";
  o.data_raw = "b";
  EXPECT_THROW(build_payload(o), std::invalid_argument);
}

TEST(BuildPayload, HeadersParamsTimeoutIncludeHeaders) {
  RequestOptions o;
  o.headers = {"X-A: 1", "Accept:text/plain", "X-Empty:"};
  o.params = {"q=x", "q=y", "n=5", "e="};
  o.timeout = milliseconds(1500);
  o.include_headers = true;
  const auto p = build_payload(o);
  EXPECT_EQ(p["headers"], json({{"X-A", "1"}, {"Accept", "text/plain"}, {"X-Empty", ""}}));
  EXPECT_EQ(p["params"], json({{"q", {"x", "y"}}, {"n", "5"}, {"e", ""}}));
  EXPECT_EQ(p["timeout_ms"], 1500);
  EXPECT_EQ(p["include_headers"], true);
}

TEST(BuildPayload, MalformedHeaderOrParamThrows) {
  RequestOptions o;
  o.headers = {"no colon"};
  EXPECT_THROW(build_payload(o), std::invalid_argument);
  o.headers = {": v"};
  EXPECT_THROW(build_payload(o), std::invalid_argument);
  o.headers.clear();
  o.params = {"novalue"};
  EXPECT_THROW(build_payload(o), std::invalid_argument);
}

TEST(ExitCode, FollowsCurlF) {
  EXPECT_EQ(exit_code_for_status(200), 0);
  EXPECT_EQ(exit_code_for_status(302), 0);
  EXPECT_EQ(exit_code_for_status(399), 0);
  EXPECT_EQ(exit_code_for_status(400), 22);
  EXPECT_EQ(exit_code_for_status(503), 22);
}

TEST(StatusAndHeaders, CurlIStyle) {
  const auto reply = decode_reply(
      R"({"status":201,"headers":{"content-type":"text/plain","set-cookie":["a=1","b=2"]}})");
  ASSERT_TRUE(reply);
  EXPECT_EQ(
      status_and_headers(*reply),
      "HTTP/1.1 201\r\ncontent-type: text/plain\r\nset-cookie: a=1\r\nset-cookie: b=2\r\n\r\n");
}

}  // namespace
}  // namespace hom

namespace hom {
namespace {

using nlohmann::json;

// Found by fuzz_cli: bytes that are not UTF-8 made json::dump() throw inside hom.
TEST(BuildPayload, DataThatIsNotUtf8GoesAsBase64AndHeadersMustBeUtf8) {
  RequestOptions o;
  o.data = "\xFE";
  const auto p = build_payload(o);
  EXPECT_EQ(p["body_base64"], "/g==");
  EXPECT_NO_THROW((void)p.dump());
  o.data.reset();
  o.headers = {"X-A: \xFE"};
  EXPECT_THROW(build_payload(o), std::invalid_argument);
  o.headers.clear();
  o.params = {"q=\xFE"};
  EXPECT_THROW(build_payload(o), std::invalid_argument);
}

// Found by fuzz_cli: a reply is untrusted; odd types must not throw or overflow.
TEST(DecodeReplyStatus, OnlyIntegersInRange) {
  const auto status = [](const char* text) { return decode_reply(text).value().status; };
  EXPECT_EQ(status(R"({"status":201})"), 201);
  EXPECT_EQ(status(R"({"status":"200"})"), 0);
  EXPECT_EQ(status(R"({"status":1e10})"), 0);
  EXPECT_EQ(status(R"({"status":99999999999})"), 0);
  EXPECT_EQ(status(R"({"status":-1})"), 0);
  EXPECT_EQ(status(R"({})"), 0);
  const auto odd = decode_reply(R"({"status":200,"headers":{"x-a":[1],"x-b":2,"x-c":"c"}})");
  ASSERT_TRUE(odd);
  EXPECT_EQ(status_and_headers(*odd), "HTTP/1.1 200\r\nx-c: c\r\n\r\n");
}

}  // namespace
}  // namespace hom
