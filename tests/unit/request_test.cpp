// parse_request() against SPEC §2 "Request payload", "Bridge-generated statuses" and
// "Precise rules", including the order of the checks.
#include "hom/request.hpp"

#include <cctype>
#include <cstdio>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include "unit/show.hpp"

#include "hom/config.hpp"

namespace {

using hom::HeaderList;
using hom::load_config;
using hom::parse_request;
using hom::Request;
using hom::RequestPolicy;
using nlohmann::json;
using Vars = std::map<std::string, std::string>;

constexpr const char* kBase = "http://127.0.0.1:9/base/";

RequestPolicy make_policy(const Vars& extra = {}) {
  Vars vars = {{"HTTP_BASE_URL", kBase}};
  for (const auto& [k, v] : extra) vars[k] = v;
  return RequestPolicy::from(load_config([vars](const std::string& name) {
    auto it = vars.find(name);
    return it == vars.end() ? std::nullopt : std::optional<std::string>(it->second);
  }));
}

const RequestPolicy& policy() {
  static const RequestPolicy p = make_policy();
  return p;
}

using hom::test::show;

std::string lower(std::string s) {
  for (auto& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

// Values of every header named `name`, ignoring case.
std::vector<std::string> header_values(const HeaderList& headers, const std::string& name) {
  std::vector<std::string> out;
  for (const auto& [k, v] : headers) {
    if (lower(k) == lower(name)) out.push_back(v);
  }
  return out;
}

// Upper-cases the hex digits of %XX escapes: RFC 3986 §2.1 makes them case-insensitive.
std::string canonical_escapes(std::string url) {
  for (std::size_t i = 0; i + 2 < url.size(); ++i) {
    if (url[i] != '%') continue;
    url[i + 1] = static_cast<char>(std::toupper(static_cast<unsigned char>(url[i + 1])));
    url[i + 2] = static_cast<char>(std::toupper(static_cast<unsigned char>(url[i + 2])));
  }
  return url;
}

std::string mirrored(const std::string& topic) {
  const std::string req = "v1/req/itsme/";
  return topic.rfind(req, 0) == 0 ? "v1/res/itsme/" + topic.substr(req.size()) : "<not ours>";
}

// Parses and asserts the request was accepted (no rejection).
Request accepted(const RequestPolicy& p, const std::string& topic, const std::string& payload) {
  const auto r = parse_request(p, topic, payload);
  EXPECT_TRUE(r.has_value());
  if (!r) return Request{};
  EXPECT_FALSE(r->rejection.has_value())
      << "rejected with " << r->rejection->status << ": " << r->rejection->error;
  return *r;
}

struct RejectCase {
  std::string topic;
  std::string payload;
  int status;
  json req_id = nullptr;  // expected in the rejection
};

// Runs one rejection case: one reply on the mirrored topic, a bridge error, no body.
void expect_rejected(const RequestPolicy& p, const RejectCase& c) {
  SCOPED_TRACE("topic=" + show(c.topic) + " payload=" + show(c.payload));
  const auto r = parse_request(p, c.topic, c.payload);
  ASSERT_TRUE(r.has_value());
  ASSERT_TRUE(r->rejection.has_value()) << "accepted, expected " << c.status;
  EXPECT_EQ(r->rejection->status, c.status) << r->rejection->error;
  EXPECT_FALSE(r->rejection->error.empty());
  EXPECT_FALSE(r->rejection->body.has_value());
  EXPECT_EQ(r->rejection->req_id.value(), c.req_id) << r->rejection->req_id.text();
  EXPECT_EQ(r->rejection->req_id, r->req_id);
  EXPECT_EQ(r->response_topic, mirrored(c.topic));
}

// The rejection's error text, or "<accepted>" / "<not ours>".
std::string rejection_error(const RequestPolicy& p, const std::string& topic,
                            const std::string& payload) {
  const auto r = parse_request(p, topic, payload);
  if (!r) return "<not ours>";
  if (!r->rejection) return "<accepted>";
  return std::to_string(r->rejection->status) + " " + r->rejection->error;
}

// A payload object nested `depth` levels deep (the object itself is level 1).
std::string nested(int depth) {
  return "{\"x\":" + std::string(depth - 1, '[') + std::string(depth - 1, ']') + "}";
}

// ---------------------------------------------------------------------------------------
// Accepted requests.

TEST(ParseRequest, EmptyPayloadIsAPlainGet) {
  const Request r = accepted(policy(), "v1/req/itsme/get/status", "");
  EXPECT_EQ(r.response_topic, "v1/res/itsme/get/status");
  EXPECT_EQ(r.verb, "GET");
  EXPECT_EQ(r.path, "status");
  EXPECT_EQ(r.url, "http://127.0.0.1:9/base/status");
  EXPECT_TRUE(r.headers.empty());
  EXPECT_FALSE(r.body.has_value());
  EXPECT_TRUE(r.req_id.is_null());
  EXPECT_EQ(r.timeout, std::chrono::milliseconds(30000));
  EXPECT_FALSE(r.include_headers);
}

TEST(ParseRequest, EmptyObjectIsLikeEmptyPayload) {
  const Request r = accepted(policy(), "v1/req/itsme/get/status", "{}");
  EXPECT_EQ(r.url, "http://127.0.0.1:9/base/status");
  EXPECT_FALSE(r.body.has_value());
  EXPECT_TRUE(r.req_id.is_null());
}

TEST(ParseRequest, UnknownKeysAreIgnored) {
  const Request r = accepted(policy(), "v1/req/itsme/get/status", R"({"whatever":[1,{"a":2}]})");
  EXPECT_EQ(r.url, "http://127.0.0.1:9/base/status");
}

TEST(ParseRequest, TopicShapes) {
  struct Case {
    std::string topic, verb, url, response_topic;
  };
  const std::vector<Case> cases = {
      {"v1/req/itsme/get", "GET", "http://127.0.0.1:9/base/", "v1/res/itsme/get"},
      {"v1/req/itsme/get/", "GET", "http://127.0.0.1:9/base/", "v1/res/itsme/get/"},
      {"v1/req/itsme/Post/food/dessert", "POST", "http://127.0.0.1:9/base/food/dessert",
       "v1/res/itsme/Post/food/dessert"},
      {"v1/req/itsme/dElEtE/a/", "DELETE", "http://127.0.0.1:9/base/a/", "v1/res/itsme/dElEtE/a/"},
      {"v1/req/itsme/head/x", "HEAD", "http://127.0.0.1:9/base/x", "v1/res/itsme/head/x"},
      {"v1/req/itsme/options/x", "OPTIONS", "http://127.0.0.1:9/base/x", "v1/res/itsme/options/x"},
      {"v1/req/itsme/put/x", "PUT", "http://127.0.0.1:9/base/x", "v1/res/itsme/put/x"},
      {"v1/req/itsme/patch/x", "PATCH", "http://127.0.0.1:9/base/x", "v1/res/itsme/patch/x"},
      {"v1/req/itsme/get/a b", "GET", "http://127.0.0.1:9/base/a%20b", "v1/res/itsme/get/a b"},
      {"v1/req/itsme/get/items?q=1", "GET", "http://127.0.0.1:9/base/items?q=1",
       "v1/res/itsme/get/items?q=1"},
      {"v1/req/itsme/get/@evil.com", "GET", "http://127.0.0.1:9/base/@evil.com",
       "v1/res/itsme/get/@evil.com"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.topic);
    const Request r = accepted(policy(), c.topic, "");
    EXPECT_EQ(r.verb, c.verb);
    EXPECT_EQ(r.url, c.url);
    EXPECT_EQ(r.response_topic, c.response_topic);
  }
}

TEST(ParseRequest, TopicOfAnotherDeviceOrAppIsNotOurs) {
  for (const std::string topic : {"v1/req/other/get/x", "v1/req/itsme2/get", "v2/req/itsme/get",
                                  "v1/res/itsme/get/x", "v1/status/itsme", ""}) {
    SCOPED_TRACE(topic);
    EXPECT_FALSE(parse_request(policy(), topic, "").has_value());
  }
}

TEST(ParseRequest, Params) {
  struct Case {
    std::string topic, payload, url;
  };
  const std::string t = "v1/req/itsme/get/items";
  const std::string u = "http://127.0.0.1:9/base/items";
  const std::vector<Case> cases = {
      {t, R"({"params":{}})", u},
      {t, R"({"params":{"q":"abc"}})", u + "?q=abc"},
      {t, R"({"params":{"q":"a b"}})", u + "?q=a%20b"},
      {t, R"({"params":{"n":5}})", u + "?n=5"},
      {t, R"({"params":{"n":-3}})", u + "?n=-3"},
      {t, R"({"params":{"x":2.5}})", u + "?x=2.5"},
      {t, R"({"params":{"b":true}})", u + "?b=true"},
      {t, R"({"params":{"b":false}})", u + "?b=false"},
      {t, R"({"params":{"z":null}})", u},
      {t, R"({"params":{"a":"1","z":null}})", u + "?a=1"},
      {t, R"({"params":{"k":[1,"two",true,2.5]}})", u + "?k=1&k=two&k=true&k=2.5"},
      {t, R"({"params":{"k":[]}})", u},
      {t, R"({"params":{"a":"1","k":[]}})", u + "?a=1"},
      {t, R"({"params":{"a":"1","b":"2"}})", u + "?a=1&b=2"},
      {t, R"({"params":{"a&b":"c=d"}})", u + "?a%26b=c%3Dd"},
      {t, R"({"params":{"p":"1+1"}})", u + "?p=1%2B1"},
      {t, R"({"params":{"u":"caf\u00e9"}})", u + "?u=caf%C3%A9"},
      {t, R"({"params":{"e":""}})", u + "?e="},
      {"v1/req/itsme/get/items?q=1", R"({"params":{"a":"x"}})", u + "?q=1&a=x"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.topic + " " + c.payload);
    EXPECT_EQ(canonical_escapes(accepted(policy(), c.topic, c.payload).url), c.url);
  }
}

TEST(ParseRequest, JsonBodiesAreSentAsJson) {
  for (const std::string body : {R"({"a":1,"b":[true,null]})", "[1,\"x\"]", "{}", "[]", "42", "2.5",
                                 "-7", "true", "false"}) {
    SCOPED_TRACE("body=" + body);
    const Request r =
        accepted(policy(), "v1/req/itsme/post/x", "{\"body\":" + body + ",\"req_id\":1}");
    if (!r.body) {
      ADD_FAILURE() << "no body";
      continue;
    }
    EXPECT_EQ(json::parse(*r.body), json::parse(body)) << *r.body;
    EXPECT_EQ(header_values(r.headers, "Content-Type"),
              std::vector<std::string>{"application/json"});
  }
}

TEST(ParseRequest, StringBodyIsSentRawWithoutContentType) {
  struct Case {
    std::string payload, body;
  };
  const std::vector<Case> cases = {
      {R"({"body":"hello"})", "hello"},
      {R"({"body":"{\"not\":\"parsed\"}"})", R"({"not":"parsed"})"},
      {R"({"body":"caf\u00e9"})", "caf\xC3\xA9"},
      {R"({"body":"line1\nline2"})", "line1\nline2"},
      {R"({"body":""})", ""},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.payload);
    const Request r = accepted(policy(), "v1/req/itsme/post/x", c.payload);
    if (!r.body) {
      ADD_FAILURE() << "no body";
      continue;
    }
    EXPECT_EQ(*r.body, c.body);
    EXPECT_TRUE(header_values(r.headers, "Content-Type").empty());
  }
}

TEST(ParseRequest, NullOrAbsentBodyIsNoBody) {
  for (const std::string payload : {R"({"body":null})", "{}", ""}) {
    SCOPED_TRACE(payload);
    const Request r = accepted(policy(), "v1/req/itsme/post/x", payload);
    EXPECT_FALSE(r.body.has_value());
    EXPECT_TRUE(header_values(r.headers, "Content-Type").empty());
  }
}

TEST(ParseRequest, ContentTypeFromHeadersWins) {
  struct Case {
    std::string payload, content_type;
  };
  const std::vector<Case> cases = {
      {R"({"body":{"a":1},"headers":{"content-type":"text/plain"}})", "text/plain"},
      {R"({"body":[1],"headers":{"Content-Type":"application/vnd.x+json"}})",
       "application/vnd.x+json"},
      {R"({"body":"a,b","headers":{"CONTENT-TYPE":"text/csv"}})", "text/csv"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.payload);
    const Request r = accepted(policy(), "v1/req/itsme/post/x", c.payload);
    EXPECT_EQ(header_values(r.headers, "content-type"), std::vector<std::string>{c.content_type});
  }
}

TEST(ParseRequest, BodyBase64IsDecoded) {
  struct Case {
    std::string b64, body;
  };
  const std::vector<Case> cases = {
      {"AAEC/w==", std::string("\x00\x01\x02\xFF", 4)},
      {"aGVsbG8=", "hello"},
      {"", ""},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.b64);
    const Request r =
        accepted(policy(), "v1/req/itsme/put/blob", R"({"body_base64":")" + c.b64 + "\"}");
    if (!r.body) {
      ADD_FAILURE() << "no body";
      continue;
    }
    EXPECT_EQ(*r.body, c.body);
  }
}

TEST(ParseRequest, HeadersAreForwardedWithNamesAsGiven) {
  const Request r = accepted(policy(), "v1/req/itsme/get/x",
                             R"({"headers":{"Accept":"text/plain","X-Api-Key":"k 1"}})");
  EXPECT_EQ(header_values(r.headers, "accept"), std::vector<std::string>{"text/plain"});
  EXPECT_EQ(header_values(r.headers, "x-api-key"), std::vector<std::string>{"k 1"});
  bool exact = false;
  for (const auto& [k, v] : r.headers) exact = exact || (k == "X-Api-Key" && v == "k 1");
  EXPECT_TRUE(exact) << "header name not kept as given";
}

TEST(ParseRequest, FramingAndRoutingHeadersAreDropped) {
  for (const std::string name :
       {"Host", "host", "Content-Length", "Transfer-Encoding", "Connection", "Upgrade", "Expect",
        "TE", "te", "Trailer", "Keep-Alive", "Proxy-Authorization", "Proxy-Connection",
        "proxy-whatever"}) {
    SCOPED_TRACE(name);
    const Request r = accepted(policy(), "v1/req/itsme/post/x",
                               R"({"body":"x","headers":{")" + name + R"(":"v","X-Keep":"1"}})");
    EXPECT_TRUE(header_values(r.headers, name).empty());
    EXPECT_EQ(header_values(r.headers, "X-Keep"), std::vector<std::string>{"1"});
    EXPECT_TRUE(hom::is_dropped_header(name));
  }
}

TEST(ParseRequest, AuthorizationIsDroppedOnlyWhenTheBridgeSendsItsOwn) {
  const std::string payload = R"({"headers":{"Authorization":"Bearer t"}})";
  const Request kept = accepted(policy(), "v1/req/itsme/get/x", payload);
  EXPECT_EQ(header_values(kept.headers, "authorization"), std::vector<std::string>{"Bearer t"});

  const RequestPolicy with_user = make_policy({{"HTTP_USER", "admin"}, {"HTTP_PASS", "pw"}});
  EXPECT_TRUE(with_user.drop_authorization);
  const Request dropped = accepted(with_user, "v1/req/itsme/get/x", payload);
  EXPECT_TRUE(header_values(dropped.headers, "authorization").empty());
}

TEST(ParseRequest, ReqIdOfAnyJsonTypeIsEchoedVerbatim) {
  for (const std::string id :
       {R"("abc")", "42", "-1", "2.5", "true", "false", "null", R"([1,"a",null])",
        R"({"k":{"n":[1,2]}})", R"("")", "18446744073709551615"}) {
    SCOPED_TRACE("req_id=" + id);
    const Request r = accepted(policy(), "v1/req/itsme/get/x", "{\"req_id\":" + id + "}");
    EXPECT_EQ(r.req_id.text(), id);
  }
}

TEST(ParseRequest, TimeoutMs) {
  struct Case {
    std::string value;
    int ms;
  };
  const std::vector<Case> cases = {
      {"1", 1},         {"500", 500},      {"30000", 30000},
      {"30001", 30000}, {"600000", 30000}, {"18446744073709551615", 30000},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE("timeout_ms=" + c.value);
    const Request r = accepted(policy(), "v1/req/itsme/get/x", "{\"timeout_ms\":" + c.value + "}");
    EXPECT_EQ(r.timeout, std::chrono::milliseconds(c.ms));
  }
}

TEST(ParseRequest, TimeoutIsCappedAtTheConfiguredTimeout) {
  const RequestPolicy p = make_policy({{"HTTP_TIMEOUT_MS", "2000"}});
  EXPECT_EQ(accepted(p, "v1/req/itsme/get/x", "").timeout, std::chrono::milliseconds(2000));
  EXPECT_EQ(accepted(p, "v1/req/itsme/get/x", R"({"timeout_ms":1500})").timeout,
            std::chrono::milliseconds(1500));
  EXPECT_EQ(accepted(p, "v1/req/itsme/get/x", R"({"timeout_ms":2500})").timeout,
            std::chrono::milliseconds(2000));
}

TEST(ParseRequest, IncludeHeaders) {
  EXPECT_TRUE(
      accepted(policy(), "v1/req/itsme/get/x", R"({"include_headers":true})").include_headers);
  EXPECT_FALSE(
      accepted(policy(), "v1/req/itsme/get/x", R"({"include_headers":false})").include_headers);
}

TEST(ParseRequest, Depth100IsAccepted) {
  const Request r = accepted(policy(), "v1/req/itsme/get/x", nested(100));
  (void)r;
  // Brackets inside strings are not nesting.
  accepted(policy(), "v1/req/itsme/get/x", "{\"body\":\"" + std::string(500, '[') + "\"}");
}

TEST(ParseRequest, AllowedPathsLetMatchingPathsThrough) {
  const RequestPolicy p = make_policy({{"HTTP_ALLOWED_PATHS", "/gps/**,/status"}});
  for (const std::string topic :
       {"v1/req/itsme/get/gps", "v1/req/itsme/get/gps/fix", "v1/req/itsme/get/gps/a/b",
        "v1/req/itsme/get/status", "v1/req/itsme/get/status?x=1"}) {
    SCOPED_TRACE(topic);
    accepted(p, topic, "");
  }
  const RequestPolicy root = make_policy({{"HTTP_ALLOWED_PATHS", "/"}});
  accepted(root, "v1/req/itsme/get", "");
}

TEST(ParseRequest, BodyAtTheLimitIsAccepted) {
  const RequestPolicy p = make_policy({{"HTTP_MAX_BODY_BYTES", "10"}});
  const Request r = accepted(p, "v1/req/itsme/post/x", R"({"body":"0123456789"})");
  EXPECT_EQ(r.body, std::optional<std::string>("0123456789"));
}

TEST(ParseRequest, PayloadAtTheLimitIsAccepted) {
  const RequestPolicy p = make_policy({{"MQTT_MAX_PAYLOAD_BYTES", "64"}});
  std::string payload = R"({"req_id":"r","body":")";
  payload += std::string(64 - payload.size() - 2, 'a') + "\"}";
  ASSERT_EQ(payload.size(), 64u);
  EXPECT_EQ(accepted(p, "v1/req/itsme/post/x", payload).req_id.text(), R"("r")");
}

TEST(ParseRequest, CustomAllowedMethods) {
  const RequestPolicy p = make_policy({{"HTTP_ALLOWED_METHODS", "GET,HEAD"}});
  EXPECT_EQ(accepted(p, "v1/req/itsme/head/x", "").verb, "HEAD");
  expect_rejected(p, {"v1/req/itsme/post/x", "", 405});
  expect_rejected(p, {"v1/req/itsme/delete/x", "", 405});
}

// ---------------------------------------------------------------------------------------
// Rejections, one check at a time.

TEST(ParseRequestRejects, PayloadNotAnObjectGets400WithNullReqId) {
  const std::vector<std::string> payloads = {
      "[]",
      "[{\"req_id\":1}]",
      "\"s\"",
      "5",
      "null",
      "true",
      "{",
      "nope",
      "{} x",
      "{\"req_id\":1,}",
      "{\"req_id\":\"\xFF\"}",
      "{\"req_id\":1,\"body\":\"\xC3\x28\"}",
      "{\"req_id\":1,\"\xED\xA0\x80\":1}",
      "\xEF\xBB\xBF{}x",
      // nlohmann's lexer ends the input at a NUL byte: the rest must not be ignored.
      std::string("{\"req_id\":1}\0garbage", 20),
      std::string("{\"req_id\":1}\0", 13),
  };
  for (const auto& payload : payloads) {
    expect_rejected(policy(), {"v1/req/itsme/get/x", payload, 400});
  }
}

TEST(ParseRequestRejects, TooDeep) {
  expect_rejected(policy(), {"v1/req/itsme/get/x", nested(101), 400});
  expect_rejected(policy(), {"v1/req/itsme/get/x", "{\"a\":" + std::string(100000, '['), 400});
  expect_rejected(policy(), {"v1/req/itsme/get/x", std::string(200000, '{'), 400});
}

TEST(ParseRequestRejects, WrongTypesGet400AndEchoReqId) {
  const std::vector<std::string> fields = {
      // params
      R"("params":"a=1")",
      R"("params":[1])",
      R"("params":5)",
      R"("params":{"o":{"x":1}})",
      R"("params":{"o":[{"x":1}]})",
      R"("params":{"o":[[1]]})",
      // body_base64
      R"("body_base64":"!!!!")",
      R"("body_base64":"AAE")",
      R"("body_base64":"AA=A")",
      R"("body_base64":5)",
      R"("body_base64":"aGVsbG8=","body":"hello")",
      R"("body_base64":"aGVsbG8=","body":{"a":1})",
      // headers
      R"("headers":["Accept"])",
      R"("headers":"Accept: x")",
      R"("headers":{"X-N":1})",
      R"("headers":{"X-N":null})",
      R"("headers":{"X-N":["a"]})",
      R"("headers":{"Bad Name":"v"})",
      R"("headers":{"a:b":"v"})",
      R"("headers":{"":"v"})",
      R"J("headers":{"X(1)":"v"})J",
      R"("headers":{"caf\u00e9":"v"})",
      R"("headers":{"X-A":"a\rb"})",
      R"("headers":{"X-A":"a\nb"})",
      R"("headers":{"X-A":"a\r\nHost: evil"})",
      R"("headers":{"X-A":"a\u0000b"})",
      R"("headers":{"X-A":"1","x-a":"2"})",
      R"("headers":{"Accept":"1","ACCEPT":"2"})",
      // timeout_ms
      R"("timeout_ms":500.0)",
      R"("timeout_ms":0)",
      R"("timeout_ms":-1)",
      R"("timeout_ms":"5")",
      R"("timeout_ms":true)",
      R"("timeout_ms":2.5)",
      R"("timeout_ms":1e3)",
      // include_headers
      R"("include_headers":"true")",
      R"("include_headers":1)",
      R"("include_headers":[true])",
  };
  for (const auto& field : fields) {
    expect_rejected(policy(),
                    {"v1/req/itsme/post/x", R"({"req_id":"r-1",)" + field + "}", 400, "r-1"});
  }
}

TEST(ParseRequestRejects, ControlCharactersOtherThanHtabInHeaderValuesGet400) {
  for (int c = 0; c < 0x20; ++c) {
    if (c == '\t') continue;
    char escaped[8];
    std::snprintf(escaped, sizeof escaped, "\\u%04x", c);
    expect_rejected(
        policy(),
        {"v1/req/itsme/get/x",
         R"({"req_id":"c","headers":{"X-A":"a)" + std::string(escaped) + R"(b"}})", 400, "c"});
  }
  expect_rejected(policy(),
                  {"v1/req/itsme/get/x", "{\"req_id\":1,\"headers\":{\"X-A\":\"a\x7F\"}}", 400, 1});
  EXPECT_NE(rejection_error(policy(), "v1/req/itsme/get/x", R"({"headers":{"X-A":"\u001b[31m"}})")
                .find("control character"),
            std::string::npos);
}

TEST(ParseRequest, HtabAndNonAsciiInHeaderValuesAreKept) {
  const Request r = accepted(policy(), "v1/req/itsme/get/x",
                             R"({"headers":{"X-A":"a\tb","X-B":"caf\u00e9 \u0080"}})");
  EXPECT_EQ(header_values(r.headers, "X-A"), std::vector<std::string>{"a\tb"});
  EXPECT_EQ(header_values(r.headers, "X-B"), std::vector<std::string>{"caf\xC3\xA9 \xC2\x80"});
}

TEST(ParseRequestRejects, HeadersOverTheLimitGet413) {
  // Names and values of every header in the payload, dropped ones included.
  const RequestPolicy p = make_policy({{"HTTP_MAX_HEADER_BYTES", "10"}});
  accepted(p, "v1/req/itsme/get/x", R"({"headers":{"X-A":"1234567"}})");  // 3 + 7
  accepted(p, "v1/req/itsme/get/x", R"({"headers":{"X-A":"12","B":"1234"}})");
  expect_rejected(
      p, {"v1/req/itsme/get/x", R"({"req_id":"h","headers":{"X-A":"12345678"}})", 413, "h"});
  expect_rejected(
      p, {"v1/req/itsme/get/x", R"({"req_id":"h","headers":{"X-A":"123","Host":"ab"}})", 413, "h"});
  EXPECT_NE(rejection_error(p, "v1/req/itsme/get/x", R"({"headers":{"X-A":"12345678"}})")
                .find("HTTP_MAX_HEADER_BYTES"),
            std::string::npos);
  EXPECT_EQ(make_policy().max_header_bytes, 65536u);
}

// Linear in the number of headers: a quadratic duplicate check took two minutes on this.
TEST(ParseRequest, HundredsOfThousandsOfHeadersParseInLinearTime) {
  constexpr int kHeaders = 160000;
  std::string payload = R"({"req_id":"many","headers":{)";
  for (int i = 0; i < kHeaders; ++i) {
    payload += (i ? ",\"" : "\"") + std::string("X-") + std::to_string(i) + "\":\"v\"";
  }
  payload += "}}";
  const RequestPolicy p =
      make_policy({{"MQTT_MAX_PAYLOAD_BYTES", "16777216"}, {"HTTP_MAX_HEADER_BYTES", "16777216"}});
  const Request r = accepted(p, "v1/req/itsme/get/x", payload);
  EXPECT_EQ(r.headers.size(), static_cast<std::size_t>(kHeaders));

  // The same with one duplicate at the very end.
  payload.insert(payload.size() - 2, R"(,"x-159999":"w")");
  expect_rejected(p, {"v1/req/itsme/get/x", payload, 400, "many"});
}

TEST(ParseRequestOrder, ForbiddenPathBeatsOversizeHeaders) {
  const RequestPolicy p =
      make_policy({{"HTTP_ALLOWED_PATHS", "/ok/**"}, {"HTTP_MAX_HEADER_BYTES", "4"}});
  expect_rejected(p,
                  {"v1/req/itsme/get/secret", R"({"req_id":6,"headers":{"X-A":"12345"}})", 403, 6});
}

TEST(ParseRequestRejects, VerbNotATokenOrNotAllowedGets405) {
  for (const std::string verb : {"TRACE", "trace", "CONNECT", "PROPFIND", "g@t", "GE T", "get,post",
                                 "{get}", "g\"t", "caf\xC3\xA9", "g(t)", "g:t"}) {
    expect_rejected(policy(), {"v1/req/itsme/" + verb + "/x", "", 405});
    expect_rejected(policy(), {"v1/req/itsme/" + verb, "", 405});
  }
}

// The subscription's `+` matches an empty level, so "v1/req/itsme//x" is delivered; a request
// always gets exactly one response, and an empty verb is not a token: 405.
TEST(ParseRequestRejects, EmptyVerbGets405) {
  expect_rejected(policy(), {"v1/req/itsme//x", R"({"req_id":"e"})", 405, "e"});
  expect_rejected(policy(), {"v1/req/itsme/", "", 405});
}

TEST(ParseRequestRejects, DotSegmentsAndNulInThePathGet400) {
  for (const std::string path : {"..", "a/../b", "a/./b", "%2e%2e/etc", "%2E./x", ".%2e",
                                 "a/..%2fb", "..\\x", "a/..", "a%00b"}) {
    expect_rejected(policy(), {"v1/req/itsme/get/" + path, "", 400});
  }
  expect_rejected(policy(), {std::string("v1/req/itsme/get/a\0b", 20), "", 400});
}

TEST(ParseRequestRejects, PathNotAllowedGets403) {
  const RequestPolicy p = make_policy({{"HTTP_ALLOWED_PATHS", "/gps/**,/status"}});
  for (const std::string topic :
       {"v1/req/itsme/get/admin", "v1/req/itsme/get", "v1/req/itsme/get/", "v1/req/itsme/get/gpsx",
        "v1/req/itsme/get/status/x", "v1/req/itsme/get/x/gps", "v1/req/itsme/get/admin?p=/gps"}) {
    expect_rejected(p, {topic, R"({"req_id":7})", 403, 7});
  }
}

TEST(ParseRequestRejects, BodyOverTheLimitGets413) {
  const RequestPolicy p = make_policy({{"HTTP_MAX_BODY_BYTES", "10"}});
  expect_rejected(p, {"v1/req/itsme/post/x", R"({"req_id":"b","body":"01234567890"})", 413, "b"});
  expect_rejected(
      p, {"v1/req/itsme/post/x", R"({"req_id":"b","body":[1,2,3,4,5,6,7,8,9]})", 413, "b"});
  expect_rejected(
      p, {"v1/req/itsme/post/x", R"({"req_id":"b","body_base64":"AAAAAAAAAAAAAAA="})", 413, "b"});
}

TEST(ParseRequestRejects, PayloadOverTheLimitGets413Unread) {
  const RequestPolicy p = make_policy({{"MQTT_MAX_PAYLOAD_BYTES", "64"}});
  std::string payload = R"({"req_id":"r","body":")";
  payload += std::string(65 - payload.size() - 2, 'a') + "\"}";
  ASSERT_EQ(payload.size(), 65u);
  expect_rejected(p, {"v1/req/itsme/post/x", payload, 413});
  expect_rejected(p, {"v1/req/itsme/post/x", std::string(1000, 'x'), 413});
}

TEST(ParseRequestRejects, ReqIdIsEchoedOnEveryRejectionOfAParsedPayload) {
  const RequestPolicy p =
      make_policy({{"HTTP_ALLOWED_PATHS", "/ok/**"}, {"HTTP_MAX_BODY_BYTES", "4"}});
  const std::vector<RejectCase> cases = {
      {"v1/req/itsme/trace/ok", R"({"req_id":{"a":[1]}})", 405, {{"a", {1}}}},
      {"v1/req/itsme/get/ok/../x", R"({"req_id":[1,"x"]})", 400, {1, "x"}},
      {"v1/req/itsme/get/ok", R"({"req_id":2.5,"timeout_ms":0})", 400, 2.5},
      {"v1/req/itsme/get/no", R"({"req_id":false})", 403, false},
      {"v1/req/itsme/post/ok", R"({"req_id":"s","body":"12345"})", 413, "s"},
  };
  for (const auto& c : cases) expect_rejected(p, c);
}

TEST(ParseRequestRejects, EveryRejectionEncodesToJson) {
  // Decoded paths and header names end up in error texts; they may not be UTF-8.
  const RequestPolicy p = make_policy({{"HTTP_ALLOWED_PATHS", "/ok/**"}});
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"v1/req/itsme/get/%FF%FE", ""},
      {"v1/req/itsme/get/caf%E9", R"({"req_id":"x"})"},
      {"v1/req/itsme/get/%C0%AE%C0%AE", ""},
      {"v1/req/itsme/trace/%FF", ""},
      {"v1/req/itsme/get/ok", "{\"req_id\":\"\xFF\"}"},
      {"v1/req/itsme/get/ok", R"({"headers":{"X\u00ff":"v"}})"},
  };
  for (const auto& [topic, payload] : cases) {
    SCOPED_TRACE(show(topic) + " " + show(payload));
    const auto r = parse_request(p, topic, payload);
    if (!r || !r->rejection) {
      ADD_FAILURE() << "expected a rejection";
      continue;
    }
    std::string text;
    try {
      text = hom::to_json(*r->rejection);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "to_json threw: " << e.what();
      continue;
    }
    const json doc = json::parse(text, nullptr, false);
    EXPECT_FALSE(doc.is_discarded()) << show(text);
  }
}

// ---------------------------------------------------------------------------------------
// The order of the checks: 413 payload, 405 verb, 400 path, 400 payload, 403, 413 body.

TEST(ParseRequestOrder, OversizePayloadBeatsBadVerb) {
  const RequestPolicy p = make_policy({{"MQTT_MAX_PAYLOAD_BYTES", "64"}});
  expect_rejected(p, {"v1/req/itsme/g@t/x", std::string(100, 'x'), 413});
  expect_rejected(p, {"v1/req/itsme/trace/../x", std::string(100, 'x'), 413});
}

TEST(ParseRequestOrder, BadVerbBeatsBadPath) {
  expect_rejected(policy(), {"v1/req/itsme/g@t/../x", "", 405});
  expect_rejected(policy(), {"v1/req/itsme/trace/%2e%2e", "", 405});
}

TEST(ParseRequestOrder, BadVerbBeatsBadPayload) {
  expect_rejected(policy(), {"v1/req/itsme/trace/x", "[1]", 405});
  expect_rejected(policy(), {"v1/req/itsme/g@t/x", nested(101), 405});
}

TEST(ParseRequestOrder, BadPathBeatsBadPayload) {
  const std::string path_only = rejection_error(policy(), "v1/req/itsme/get/../x", "");
  const std::string payload_only = rejection_error(policy(), "v1/req/itsme/get/x", "[1]");
  ASSERT_EQ(path_only.rfind("400 ", 0), 0u) << path_only;
  ASSERT_EQ(payload_only.rfind("400 ", 0), 0u) << payload_only;
  ASSERT_NE(path_only, payload_only) << "cannot tell the two 400s apart";
  EXPECT_EQ(rejection_error(policy(), "v1/req/itsme/get/../x", "[1]"), path_only);
  EXPECT_EQ(rejection_error(policy(), "v1/req/itsme/get/../x", R"({"timeout_ms":"x"})"), path_only);
}

TEST(ParseRequestOrder, BadPayloadBeatsForbiddenPath) {
  const RequestPolicy p = make_policy({{"HTTP_ALLOWED_PATHS", "/ok/**"}});
  expect_rejected(p, {"v1/req/itsme/get/secret", "[1]", 400});
  expect_rejected(p, {"v1/req/itsme/get/secret", R"({"req_id":3,"timeout_ms":"5"})", 400, 3});
}

TEST(ParseRequestOrder, ForbiddenPathBeatsOversizeBody) {
  const RequestPolicy p =
      make_policy({{"HTTP_ALLOWED_PATHS", "/ok/**"}, {"HTTP_MAX_BODY_BYTES", "10"}});
  expect_rejected(p,
                  {"v1/req/itsme/post/secret", R"({"req_id":4,"body":"01234567890123"})", 403, 4});
}

TEST(ParseRequestOrder, BadPayloadBeatsOversizeBody) {
  const RequestPolicy p = make_policy({{"HTTP_MAX_BODY_BYTES", "10"}});
  expect_rejected(
      p, {"v1/req/itsme/post/x", R"({"req_id":5,"body":"01234567890123","timeout_ms":0})", 400, 5});
}

TEST(IsToken, Table) {
  for (const std::string name : {"X-Custom", "a", "!#$%&'*+-.^_`|~09azAZ", "Content-Type"}) {
    EXPECT_TRUE(hom::is_token(name)) << name;
  }
  for (const std::string name :
       {"", "a b", "a:b", "a\"b", "caf\xC3\xA9", "a(b)", "a,b", "a/b", "a;b", "a=b", "a{b}", "a\tb",
        "a@b", "a[b]", "a?b", "a\\b", "a\x7F"}) {
    EXPECT_FALSE(hom::is_token(name)) << show(name);
  }
}

TEST(IsDroppedHeader, OrdinaryHeadersAreKept) {
  for (const std::string name :
       {"Accept", "Content-Type", "X-Host", "Hosts", "X-Proxy", "Tea", "Cookie", "User-Agent"}) {
    EXPECT_FALSE(hom::is_dropped_header(name)) << name;
  }
}

}  // namespace
