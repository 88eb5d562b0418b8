// parse_request(): an MQTT message (topic, payload, MQTT 5 properties) to a request for the
// local API or a 4xx (SPEC §2 "Request payload", "Bridge-generated statuses", "Precise rules").
//
// Input: byte 0 picks the policy (bits below), byte 1 holds flags, byte 2 the Message Expiry
// Interval; then topic 0xFF response topic 0xFF correlation data 0xFF payload.
//   flags bit 0: the topic is relative to the policy's {start}/req/{id}/
//         bit 1: a Response Topic is set; bit 2: relative to {start}/res/{id}/
//         bit 3: Correlation Data is set; bit 4: a Message Expiry Interval is set
#include <cctype>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "fuzz_support.hpp"
#include "hom/envelope.hpp"
#include "hom/path.hpp"
#include "hom/request.hpp"
#include "hom/response.hpp"

namespace {

using hom_fuzz::show;
using nlohmann::json;

constexpr const char* kBases[] = {
    "http://127.0.0.1:9/base/",
    "http://localhost/",
    "https://[::1]:8443/api/v1/",
    "http://u:p@dev.local:8080/a%20b/",
};

// bits 0-1 base URL; bit 2 HTTP_ALLOWED_PATHS set; bit 3 small limits; bit 4 nested topic
// parts; bit 5 HTTP_USER set (Authorization dropped); bit 6 only GET and POST allowed.
hom::RequestPolicy make_policy(std::uint8_t bits) {
  const bool nested = bits & 0x10;
  const bool small = bits & 0x08;
  std::vector<std::string> methods = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"};
  if (bits & 0x40) methods = {"GET", "POST"};
  std::vector<std::string> paths;
  if (bits & 0x04) paths = {"/gps/**", "/status", "/a/*/c", "/x*y/**/z"};
  return hom::RequestPolicy{
      hom::Topics(nested ? "iot/config/v1" : "v1", nested ? "dev/1" : "itsme"),
      kBases[bits & 0x03],
      methods,
      paths,
      small ? std::size_t{512} : std::size_t{2} * 1024 * 1024,
      small ? std::size_t{16} : std::size_t{1024} * 1024,
      std::chrono::milliseconds(small ? 5000 : 30000),
      (bits & 0x20) != 0,
      small ? std::size_t{24} : std::size_t{64} * 1024};
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool is_dropped(const std::string& name) {
  static const char* const kDropped[] = {"host",       "content-length", "transfer-encoding",
                                         "connection", "upgrade",        "expect",
                                         "te",         "trailer",        "keep-alive"};
  const std::string l = lower(name);
  if (l.rfind("proxy-", 0) == 0) return true;
  for (const char* d : kDropped)
    if (l == d) return true;
  return false;
}

// What req_id the reply must echo: the payload's, when the payload was read and parsed as an
// object within the depth limit; null otherwise.
json expected_req_id(const hom::RequestPolicy& policy, std::string_view payload) {
  if (payload.empty() || payload.size() > policy.max_payload_bytes) return nullptr;
  const auto doc = hom_fuzz::parse_strict(payload);
  if (!doc || !doc->is_object() || hom_fuzz::dom_depth(*doc) > 100) return nullptr;
  const auto it = doc->find("req_id");
  return it == doc->end() ? json(nullptr) : *it;
}

void check_rejection(const hom::Request& r, const json& req_id, const std::string& context) {
  const hom::Response& rej = *r.rejection;
  const int s = rej.status;
  HOM_FUZZ_CHECK(s == 400 || s == 403 || s == 405 || s == 413,
                 "status " + std::to_string(s) + ": " + context);
  HOM_FUZZ_CHECK(!rej.error.empty(), "no error text: " + context);
  HOM_FUZZ_CHECK(!rej.body.has_value(), "a bridge error with a body: " + context);
  HOM_FUZZ_CHECK(rej.req_id == r.req_id && r.req_id.value() == req_id,
                 "req_id " + rej.req_id.text() + " expected " + req_id.dump() + ": " + context);
  const std::string text = hom::to_json(rej);
  // The reply carries the request's req_id text, byte for byte.
  const auto decoded = hom::decode_reply(text);
  HOM_FUZZ_CHECK(decoded && decoded->req_id == r.req_id,
                 "req_id in the reply: " + show(text) + " request's " + show(r.req_id.text()));
  const json doc = hom_fuzz::parse_strict(text).value_or(json());
  HOM_FUZZ_CHECK(doc.is_object(), "reply is not a JSON object: " + show(text) + ": " + context);
  HOM_FUZZ_CHECK(doc.contains("content") && doc["content"].is_null(), "content: " + show(text));
  HOM_FUZZ_CHECK(doc.contains("status") && doc["status"] == s, "status: " + show(text));
  HOM_FUZZ_CHECK(doc.contains("req_id") && doc["req_id"] == req_id, "req_id: " + show(text));
  HOM_FUZZ_CHECK(doc.contains("error") && doc["error"].is_string() &&
                     !doc["error"].get_ref<const std::string&>().empty(),
                 "error: " + show(text));
  HOM_FUZZ_CHECK(!doc.contains("content_encoding") && !doc.contains("headers"),
                 "extra keys: " + show(text));
}

void check_accepted(const hom::RequestPolicy& policy, const hom::Request& r,
                    const std::string& context) {
  // The verb: a token, upper-cased, allowed.
  HOM_FUZZ_CHECK(hom::is_token(r.verb), "verb " + show(r.verb) + ": " + context);
  bool allowed = false;
  for (const auto& m : policy.allowed_methods) allowed = allowed || m == r.verb;
  HOM_FUZZ_CHECK(allowed, "verb " + show(r.verb) + " not allowed: " + context);

  // The URL: the base's scheme, host and port, under its path, no dot segment, clean bytes.
  const auto base = hom_fuzz::parse_url(policy.base_url);
  const auto url = hom_fuzz::parse_url(r.url);
  HOM_FUZZ_CHECK(url.has_value(), "URL " + show(r.url) + " does not parse: " + context);
  HOM_FUZZ_CHECK(url->scheme == base->scheme && url->host == base->host &&
                     url->port == base->port && url->user == base->user &&
                     url->password == base->password,
                 "URL " + show(r.url) + " targets another host: " + context);
  HOM_FUZZ_CHECK(url->path.compare(0, base->path.size(), base->path) == 0,
                 "URL " + show(r.url) + " left the base path: " + context);
  HOM_FUZZ_CHECK(r.url.compare(0, policy.base_url.size(), policy.base_url) == 0,
                 "URL " + show(r.url) + " does not start with the base: " + context);
  HOM_FUZZ_CHECK(hom_fuzz::is_url_path_text(std::string_view(r.url).substr(policy.base_url.size())),
                 "URL " + show(r.url) + " holds bytes a URL may not: " + context);
  HOM_FUZZ_CHECK(!hom_fuzz::has_dot_segment(url->path),
                 "URL " + show(r.url) + " has a dot segment: " + context);
  HOM_FUZZ_CHECK(url->fragment.empty(), "URL " + show(r.url) + " has a fragment: " + context);

  // Headers: tokens, values without control characters but HTAB, none of the dropped names,
  // no two equal ignoring case, all of them within HTTP_MAX_HEADER_BYTES.
  std::vector<std::string> seen;
  std::size_t header_bytes = 0;
  for (const auto& [name, value] : r.headers) {
    const std::string where = "header " + show(name) + ": " + show(value) + ": " + context;
    HOM_FUZZ_CHECK(hom::is_token(name), "name is not a token: " + where);
    for (const char ch : value) {
      const auto c = static_cast<unsigned char>(ch);
      HOM_FUZZ_CHECK(c == '\t' || (c >= 0x20 && c != 0x7F), "control character: " + where);
    }
    header_bytes += name.size() + value.size();
    HOM_FUZZ_CHECK(!is_dropped(name), "a dropped header was kept: " + where);
    HOM_FUZZ_CHECK(!policy.drop_authorization || lower(name) != "authorization",
                   "Authorization kept although HTTP_USER is set: " + where);
    for (const auto& other : seen) HOM_FUZZ_CHECK(other != lower(name), "twice: " + where);
    seen.push_back(lower(name));
  }
  // The forwarded headers and a Content-Type the body added.
  HOM_FUZZ_CHECK(header_bytes <= policy.max_header_bytes + 30,
                 "headers of " + std::to_string(header_bytes) + " bytes: " + context);

  HOM_FUZZ_CHECK(!r.body || r.body->size() <= policy.max_body_bytes,
                 "body of " + std::to_string(r.body->size()) + " bytes: " + context);
  HOM_FUZZ_CHECK(r.timeout.count() > 0 && r.timeout <= policy.max_timeout,
                 "timeout " + std::to_string(r.timeout.count()) + " ms: " + context);
  const std::string plain = "/" + hom::percent_decode(r.path.substr(0, r.path.find('?')));
  HOM_FUZZ_CHECK(hom::path_allowed(policy.allowed_paths, plain),
                 "path " + show(plain) + " is not allowed: " + context);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 3) return 0;
  const hom::RequestPolicy policy = make_policy(data[0]);
  const std::uint8_t flags = data[1];
  const auto fields = hom_fuzz::split_fields(
      std::string_view(reinterpret_cast<const char*>(data) + 3, size - 3), 4);

  std::string topic(fields[0]);
  if (flags & 0x01) topic = policy.topics.request_topic("", "").append(topic);
  hom::MessageProperties props;
  if (flags & 0x02) {
    props.response_topic = std::string(fields[1]);
    if (flags & 0x04) props.response_topic->insert(0, policy.topics.response_prefix());
  }
  if (flags & 0x08) props.correlation_data = std::string(fields[2]);
  if (flags & 0x10) props.expiry_s = data[2];
  const std::string_view payload = fields[3];

  const auto r = hom::parse_request(policy, topic, payload, props);
  const auto parsed_topic = policy.topics.parse(topic);
  HOM_FUZZ_CHECK(r.has_value() == parsed_topic.has_value(), "topic " + show(topic));
  if (!r) return 0;

  const std::string context = "topic " + show(topic) + " payload " + show(payload);
  HOM_FUZZ_CHECK(r->correlation_data == props.correlation_data && r->expiry_s == props.expiry_s,
                 "MQTT 5 properties not carried: " + context);
  HOM_FUZZ_CHECK(r->path == parsed_topic->path, "path " + show(r->path) + ": " + context);

  // The reply goes to the mirrored topic, or to a Response Topic strictly under
  // {start}/res/{id}/ without wildcards or NUL; any other Response Topic is a 400.
  const std::string prefix = policy.topics.response_prefix();
  const bool good_rt =
      props.response_topic && props.response_topic->size() > prefix.size() &&
      props.response_topic->compare(0, prefix.size(), prefix) == 0 &&
      props.response_topic->find_first_of(std::string("+#\0", 3)) == std::string::npos;
  const std::string want_topic =
      good_rt ? *props.response_topic : policy.topics.mirror(*parsed_topic);
  HOM_FUZZ_CHECK(r->response_topic == want_topic,
                 "reply topic " + show(r->response_topic) + " expected " + show(want_topic));
  HOM_FUZZ_CHECK(!props.response_topic || good_rt || r->rejection,
                 "Response Topic " + show(*props.response_topic) + " honoured: " + context);

  const json req_id = expected_req_id(policy, payload);
  if (payload.size() > policy.max_payload_bytes) {
    HOM_FUZZ_CHECK(r->rejection && r->rejection->status == 413, "oversized payload: " + context);
  }
  // req_id verbatim: null, or a slice of the payload.
  HOM_FUZZ_CHECK(r->req_id.is_null() || payload.find(r->req_id.text()) != std::string_view::npos,
                 "req_id " + show(r->req_id.text()) + " is not in the payload: " + context);
  if (r->rejection) {
    check_rejection(*r, req_id, context);
  } else {
    HOM_FUZZ_CHECK(r->req_id.value() == req_id,
                   "req_id " + r->req_id.text() + " expected " + req_id.dump() + ": " + context);
    check_accepted(policy, *r, context);
  }
  return 0;
}
