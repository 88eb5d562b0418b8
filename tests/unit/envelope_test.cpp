// The wire format (envelope.hpp): request and reply envelopes both ways, and req_id verbatim
// (SPEC §2, §5.1 "req_id verbatim").
#include "hom/envelope.hpp"

#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "hom/request.hpp"
#include "unit/show.hpp"

namespace hom {
namespace {

using nlohmann::json;
using test::show;

TEST(TopLevelMember, Table) {
  struct Case {
    std::string text, key;
    std::optional<std::string> want;
  };
  const std::vector<Case> cases = {
      {R"({"req_id":1})", "req_id", "1"},
      {R"( { "req_id" :  "a b"  } )", "req_id", R"("a b")"},
      {R"({"a":{"req_id":1},"b":["req_id"],"c":"\"req_id\":2"})", "req_id", std::nullopt},
      {R"({"a":{"req_id":1},"req_id":[1, {"x" : "}"}] ,"z":0})", "req_id", R"([1, {"x" : "}"}])"},
      {R"({"req_id":1,"req_id":2})", "req_id", "2"},  // the last one, as the parser keeps
      {R"({"req\u005fid":7})", "req_id", "7"},
      {R"({"req_idx":1,"xreq_id":2})", "req_id", std::nullopt},
      {R"({"s":"\\","req_id":true})", "req_id", "true"},
      {"\xEF\xBB\xBF{\"req_id\":null}", "req_id", "null"},
      {R"([{"req_id":1}])", "req_id", std::nullopt},
      {R"("req_id")", "req_id", std::nullopt},
      {"{}", "req_id", std::nullopt},
      {R"({"req_id":-0.0e-0})", "req_id", "-0.0e-0"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(show(c.text));
    const auto got = top_level_member(c.text, c.key);
    EXPECT_EQ(got ? std::optional<std::string>(*got) : std::nullopt, c.want);
  }
}

// SPEC §5.1: the reply's req_id is the request's JSON value unchanged, spelling included.
TEST(ReqIdVerbatim, FromRequestPayloadToReplyDocument) {
  const RequestPolicy policy = RequestPolicy::from(
      load_config([](const std::string&) { return std::optional<std::string>(); }));
  for (const std::string id :
       {"123456789012345678901234567890", "-123456789012345678901234567890", "1.50", "1e3", "1E+3",
        "-0", "-0.0", "0.1000", "18446744073709551616", R"("caf\u00e9")", R"("a\/b")", "[1, 2.0]",
        R"({"b":1,"a":2})", "true", "null", R"("")"}) {
    SCOPED_TRACE(id);
    const std::string payload = "{\"body\":\"x\", \"req_id\": " + id + " }";
    const auto r = parse_request(policy, "v1/req/itsme/post/x", payload);
    ASSERT_TRUE(r && !r->rejection);
    EXPECT_EQ(r->req_id.text(), id);

    // On an answer from the API and on a bridge error alike.
    Response answer;
    answer.status = 200;
    answer.body = "ok";
    answer.req_id = r->req_id;
    for (const std::string& text :
         {encode_reply(answer), encode_reply(bridge_error(502, "down", r->req_id))}) {
      EXPECT_NE(text.find("\"req_id\":" + id + ","), std::string::npos) << text;
      const auto back = decode_reply(text);
      ASSERT_TRUE(back) << text;
      EXPECT_EQ(back->req_id.text(), id);
      EXPECT_FALSE(json::parse(text, nullptr, false).is_discarded()) << text;
    }
  }
  // A rejected request echoes it too.
  const auto rejected = parse_request(policy, "v1/req/itsme/get/x", R"({"req_id":1.50,"x":[)");
  ASSERT_TRUE(rejected && rejected->rejection);
  EXPECT_TRUE(rejected->req_id.is_null()) << "an unparsable payload has no req_id";
  const auto wrong_type =
      parse_request(policy, "v1/req/itsme/get/x", R"({"req_id":1.50,"timeout_ms":"x"})");
  ASSERT_TRUE(wrong_type && wrong_type->rejection);
  EXPECT_EQ(wrong_type->rejection->req_id.text(), "1.50");
}

TEST(RequestEnvelope, EncodeDecodeRoundTrip) {
  struct Case {
    std::string name;
    RequestEnvelope e;
  };
  std::vector<Case> cases;
  cases.push_back({"empty", {}});
  {
    RequestEnvelope e;
    e.params = {{"a", "1"}, {"a", "2"}, {"b", "x y"}};
    e.headers = {{"Accept", "text/plain"}, {"X-A", "1"}};
    e.body_kind = RequestEnvelope::Body::kJson;
    e.body = R"({"n":[1,2]})";
    e.req_id = RawJson::from_text("123456789012345678901234567890");
    e.timeout_ms = 1500;
    e.include_headers = true;
    cases.push_back({"everything", e});
  }
  {
    RequestEnvelope e;
    e.body_kind = RequestEnvelope::Body::kText;
    e.body = "plain \"text\"";
    e.req_id = RawJson::of("id-1");
    cases.push_back({"text", e});
  }
  {
    RequestEnvelope e;
    e.body_kind = RequestEnvelope::Body::kBytes;
    e.body = std::string("\x00\xFF\xFE", 3);
    e.req_id = RawJson::from_text("1.50");
    cases.push_back({"bytes", e});
  }
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string text = encode_request(c.e);
    const DecodedRequest d = decode_request(text);
    ASSERT_EQ(d.error, "") << text;
    EXPECT_EQ(d.envelope.params, c.e.params);
    EXPECT_EQ(d.envelope.headers, c.e.headers);
    EXPECT_EQ(d.envelope.body_kind, c.e.body_kind);
    EXPECT_EQ(d.envelope.body, c.e.body);
    EXPECT_EQ(d.envelope.req_id, c.e.req_id) << text;
    EXPECT_EQ(d.envelope.timeout_ms, c.e.timeout_ms);
    EXPECT_EQ(d.envelope.include_headers, c.e.include_headers);
    // The document form carries the same request.
    const DecodedRequest doc = decode_request(request_document(c.e).dump());
    EXPECT_EQ(doc.envelope.body, c.e.body);
    EXPECT_EQ(doc.envelope.params, c.e.params);
  }
}

TEST(RequestEnvelope, DecodeTypes) {
  const auto d = decode_request(
      R"({"params":{"n":5,"f":2.5,"b":true,"z":null,"l":["a",null,1]},"body":[1],"timeout_ms":7,)"
      R"("include_headers":false,"unknown":{"x":1}})");
  ASSERT_EQ(d.error, "");
  EXPECT_EQ(d.envelope.params,
            (std::vector<std::pair<std::string, std::string>>{
                {"b", "true"}, {"f", "2.5"}, {"l", "a"}, {"l", "1"}, {"n", "5"}}));
  EXPECT_EQ(d.envelope.body_kind, RequestEnvelope::Body::kJson);
  EXPECT_EQ(d.envelope.body, "[1]");
  EXPECT_EQ(d.envelope.timeout_ms, std::optional<std::uint64_t>(7));
  EXPECT_TRUE(d.envelope.req_id.is_null());

  for (const std::string bad :
       {"[1]", "\"x\"", "{", R"({"params":[1]})", R"({"headers":{"a":1}})",
        R"({"body_base64":"!"})", R"({"body":"a","body_base64":"YQ=="})", R"({"timeout_ms":1.0})",
        R"({"timeout_ms":0})", R"({"include_headers":"yes"})", R"({"raw":1})",
        R"({"raw":"true"})"}) {
    EXPECT_NE(decode_request(bad).error, "") << bad;
  }
  EXPECT_EQ(decode_request("").error, "");
}

TEST(ReplyEnvelope, EncodeDecodeRoundTrip) {
  struct Case {
    std::string name;
    Response response;
    ContentKind kind;
    std::string content;
  };
  const auto http = [](int status, std::optional<std::string> body) {
    Response r;
    r.status = status;
    r.body = std::move(body);
    r.req_id = RawJson::from_text("1e3");
    return r;
  };
  std::vector<Case> cases = {
      {"json", http(200, R"({"a": 1})"), ContentKind::kJson, R"({"a":1})"},
      {"text", http(201, "created"), ContentKind::kText, "created"},
      {"empty", http(204, ""), ContentKind::kText, ""},
      {"binary", http(200, std::string("\x00\xFF", 2)), ContentKind::kBase64,
       std::string("\x00\xFF", 2)},
      {"bridge", bridge_error(504, "too slow", RawJson::of(7)), ContentKind::kNull, ""},
  };
  Response with_headers = http(200, "h");
  with_headers.include_headers = true;
  with_headers.headers = {{"set-cookie", "a=1"}, {"x-a", "1"}, {"set-cookie", "b=2"}};
  cases.push_back({"headers", with_headers, ContentKind::kText, "h"});
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string text = encode_reply(c.response);
    EXPECT_EQ(text, to_json(c.response));
    const auto back = decode_reply(text);
    ASSERT_TRUE(back) << text;
    EXPECT_EQ(back->status, c.response.status);
    EXPECT_EQ(back->content_kind, c.kind);
    EXPECT_EQ(back->content, c.content);
    EXPECT_EQ(back->req_id, c.response.req_id);
    EXPECT_EQ(back->error, c.response.error);
    EXPECT_EQ(back->has_headers, c.response.include_headers);
  }
  const auto h = decode_reply(encode_reply(with_headers));
  EXPECT_EQ(h->headers, (HeaderList{{"set-cookie", "a=1"}, {"set-cookie", "b=2"}, {"x-a", "1"}}));
}

// Content 100 levels deep is sent parsed; the reply around it is one level more.
TEST(ReplyEnvelope, ContentAtTheDepthLimitDecodes) {
  Response r;
  r.status = 200;
  r.body = std::string(100, '[') + std::string(100, ']');
  const auto back = decode_reply(encode_reply(r));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->content_kind, ContentKind::kJson);
  EXPECT_EQ(back->content, *r.body);
}

// SPEC §6 "Mapping": `raw` is a bool, carried through encode and decode; null is absent.
TEST(RequestEnvelope, RawKey) {
  EXPECT_FALSE(decode_request("{}").envelope.raw);
  EXPECT_FALSE(decode_request(R"({"raw":null})").envelope.raw);
  EXPECT_FALSE(decode_request(R"({"raw":false})").envelope.raw);
  const auto d = decode_request(R"({"raw":true})");
  ASSERT_EQ(d.error, "");
  EXPECT_TRUE(d.envelope.raw);
  EXPECT_EQ(decode_request(R"({"raw":"yes"})").error, "'raw' must be true or false");
  RequestEnvelope e;
  e.raw = true;
  EXPECT_EQ(encode_request(e), R"({"raw":true})");
  EXPECT_TRUE(decode_request(encode_request(e)).envelope.raw);
  EXPECT_EQ(encode_request(RequestEnvelope{}), "{}");
}

// With `raw`, content is never parsed: JSON keeps its bytes (spacing, key order, number
// spellings), text stays text, bytes that are not UTF-8 go as base64.
TEST(ReplyEnvelope, RawContentIsNeverParsed) {
  struct Case {
    std::string body;
    ContentKind kind;
  };
  const std::vector<Case> cases = {
      {R"({ "a" :1 })", ContentKind::kText},
      {"{\n  \"b\": 1.50, \"a\": [ ]\n}\n", ContentKind::kText},
      {"12345678901234567890123", ContentKind::kText},
      {"\"quoted\"", ContentKind::kText},
      {"plain text", ContentKind::kText},
      {"", ContentKind::kText},
      {std::string("{\"a\":\"\xFF\"}"), ContentKind::kBase64},
      {std::string("\x00\x01\xFE", 3), ContentKind::kBase64},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(show(c.body));
    Response r;
    r.status = 200;
    r.body = c.body;
    r.raw = true;
    const std::string text = encode_reply(r);
    const auto back = decode_reply(text);
    ASSERT_TRUE(back) << text;
    EXPECT_EQ(back->content_kind, c.kind) << text;
    EXPECT_EQ(back->content, c.body) << text;
    EXPECT_EQ(text.find("content_encoding") != std::string::npos, c.kind == ContentKind::kBase64);
  }
  // Without raw the same JSON is parsed (and so re-serialised).
  Response parsed;
  parsed.status = 200;
  parsed.body = R"({ "a" :1 })";
  EXPECT_EQ(decode_reply(encode_reply(parsed))->content_kind, ContentKind::kJson);
}

// homd: a request's `raw` reaches its Request; a wrong type is a 400 with the reason.
TEST(RequestEnvelope, RawReachesTheRequest) {
  const auto policy =
      RequestPolicy::from(load_config([](const std::string& name) -> std::optional<std::string> {
        if (name == "HTTP_BASE_URL") return "http://127.0.0.1:9/";
        if (name == "MQTT_TOPIC_ID") return "dev";
        return std::nullopt;
      }));
  const auto ok = parse_request(policy, "v1/req/dev/get/x", R"({"raw":true})");
  ASSERT_TRUE(ok);
  EXPECT_FALSE(ok->rejection) << ok->rejection->error;
  EXPECT_TRUE(ok->raw);
  const auto bad = parse_request(policy, "v1/req/dev/get/x", R"({"raw":1,"req_id":4})");
  ASSERT_TRUE(bad && bad->rejection);
  EXPECT_EQ(bad->rejection->status, 400);
  EXPECT_EQ(bad->rejection->error, "'raw' must be true or false");
}

TEST(ReplyEnvelope, DecodeIsForgiving) {
  EXPECT_FALSE(decode_reply("not json"));
  EXPECT_FALSE(decode_reply("[1]"));
  const auto odd = decode_reply(
      R"({"content":"AP8=","content_encoding":1,"status":"200","error":5,"headers":[1]})");
  ASSERT_TRUE(odd);
  EXPECT_EQ(odd->status, 0);
  EXPECT_EQ(odd->content_kind, ContentKind::kText);
  EXPECT_EQ(odd->content, "AP8=");
  EXPECT_EQ(odd->error, "");
  EXPECT_FALSE(odd->has_headers);
  EXPECT_TRUE(odd->req_id.is_null());
  const auto bad_base64 = decode_reply(R"({"content":"!!","content_encoding":"base64"})");
  ASSERT_TRUE(bad_base64);
  EXPECT_EQ(bad_base64->content, "");
}

TEST(RawJson, Basics) {
  EXPECT_TRUE(RawJson().is_null());
  EXPECT_EQ(RawJson().text(), "null");
  EXPECT_EQ(RawJson::of("a\"b").text(), R"("a\"b")");
  EXPECT_EQ(RawJson::from_text("1.50").value(), json(1.5));
  EXPECT_NE(RawJson::from_text("1.50"), RawJson::from_text("1.5"));
}

}  // namespace
}  // namespace hom
