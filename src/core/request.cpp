#include "hom/request.hpp"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <unordered_set>

#include "hom/envelope.hpp"
#include "hom/path.hpp"

namespace hom {

namespace {

constexpr int kMaxDepth = 100;

std::string to_upper(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

std::string to_lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

// Any control character but HTAB: CR, LF and NUL break framing, the others confuse servers.
bool has_control_character(std::string_view text) {
  return std::any_of(text.begin(), text.end(), [](char ch) {
    const auto c = static_cast<unsigned char>(ch);
    return (c < 0x20 && c != '\t') || c == 0x7F;
  });
}

// Checks the payload's headers into `out` and adds their names' and values' sizes to `bytes`
// (all of them, dropped ones included: what the requester sent); returns an error text or "".
// Linear in the number of headers: a payload may hold hundreds of thousands.
std::string collect_headers(const HeaderList& headers, bool drop_authorization, HeaderList& out,
                            std::size_t& bytes) {
  std::unordered_set<std::string> seen;  // lower-case names
  seen.reserve(headers.size());
  for (const auto& [name, text] : headers) {
    if (!is_token(name)) return "header name '" + name + "' is not a valid token";
    if (has_control_character(text))
      return "header '" + name + "' contains a control character (only HTAB is allowed)";
    if (!seen.insert(to_lower(name)).second) return "header '" + name + "' is given twice";
    bytes += name.size() + text.size();
    if (is_dropped_header(name) || (drop_authorization && iequals(name, "authorization"))) continue;
    out.emplace_back(name, text);
  }
  return {};
}

bool has_header(const HeaderList& headers, std::string_view name) {
  return std::any_of(headers.begin(), headers.end(),
                     [&](const auto& h) { return iequals(h.first, name); });
}

}  // namespace

bool is_token(std::string_view name) {
  if (name.empty()) return false;
  return std::all_of(name.begin(), name.end(), [](char ch) {
    const auto c = static_cast<unsigned char>(ch);
    if (std::isalnum(c)) return true;
    switch (c) {
      case '!':
      case '#':
      case '$':
      case '%':
      case '&':
      case '\'':
      case '*':
      case '+':
      case '-':
      case '.':
      case '^':
      case '_':
      case '`':
      case '|':
      case '~':
        return true;
      default:
        return false;
    }
  });
}

bool is_dropped_header(std::string_view name) {
  static constexpr std::string_view kDropped[] = {
      "host", "content-length", "transfer-encoding", "connection", "upgrade", "expect",
      "te",   "trailer",        "keep-alive"};
  if (name.size() >= 6 && iequals(name.substr(0, 6), "proxy-")) return true;
  return std::any_of(std::begin(kDropped), std::end(kDropped),
                     [&](std::string_view d) { return iequals(d, name); });
}

RequestPolicy RequestPolicy::from(const Config& config) {
  return RequestPolicy{Topics(config.topics.start, config.topics.id),
                       config.http.base_url,
                       config.http.allowed_methods,
                       config.http.allowed_paths,
                       config.mqtt.max_payload_bytes,
                       config.http.max_body_bytes,
                       config.http.timeout,
                       config.http.user.has_value(),
                       config.http.max_header_bytes,
                       config.http.max_upload_bytes};
}

std::optional<Request> parse_request(const RequestPolicy& policy, std::string_view topic,
                                     std::string_view payload,
                                     const MessageProperties& properties) {
  const auto parsed_topic = policy.topics.parse(topic);
  if (!parsed_topic) return std::nullopt;

  Request r;
  r.response_topic = policy.topics.mirror(*parsed_topic);
  r.verb = parsed_topic->verb;
  r.path = parsed_topic->path;
  r.timeout = policy.max_timeout;
  r.correlation_data = properties.correlation_data;
  r.expiry_s = properties.expiry_s;
  // An MQTT 5 Response Topic outside the device's reply space would let a request make the
  // device publish anywhere its ACL allows: refuse it, answering on the mirrored topic.
  bool bad_response_topic = false;
  if (properties.response_topic) {
    const std::string& rt = *properties.response_topic;
    const std::string prefix = policy.topics.response_prefix();
    if (rt.size() > prefix.size() && rt.compare(0, prefix.size(), prefix) == 0 &&
        rt.find_first_of(std::string("+#\0", 3)) == std::string::npos) {
      r.response_topic = rt;
      r.mqtt5 = true;
    } else {
      bad_response_topic = true;
    }
  }
  const auto reject = [&r](int status, std::string error) {
    r.rejection = bridge_error(status, std::move(error), r.req_id);
    return r;
  };

  // 1. Payload size: not read at all, so req_id stays null.
  if (payload.size() > policy.max_payload_bytes) {
    return reject(413, "payload of " + std::to_string(payload.size()) +
                           " bytes exceeds MQTT_MAX_PAYLOAD_BYTES (" +
                           std::to_string(policy.max_payload_bytes) + ")");
  }

  // Decode first so that every later rejection can echo req_id; report in the SPEC's order.
  const DecodedRequest decoded = decode_request(payload, kMaxDepth);
  const RequestEnvelope& envelope = decoded.envelope;
  r.req_id = envelope.req_id;

  // 2. Verb.
  if (!is_token(r.verb)) return reject(405, "verb '" + r.verb + "' is not an HTTP method");
  r.verb = to_upper(r.verb);
  if (std::find(policy.allowed_methods.begin(), policy.allowed_methods.end(), r.verb) ==
      policy.allowed_methods.end())
    return reject(405, "method " + r.verb + " is not allowed (HTTP_ALLOWED_METHODS)");

  // 3. Path syntax.
  std::string path_error;
  const auto path = normalise_path(r.path, path_error);
  if (!path) return reject(400, path_error);

  // 4. Payload syntax and types (and the MQTT 5 Response Topic).
  if (bad_response_topic) {
    return reject(400, "Response Topic '" + *properties.response_topic + "' is not under " +
                           policy.topics.response_prefix());
  }
  if (!decoded.error.empty()) return reject(400, decoded.error);
  std::string query;
  for (const auto& [name, value] : envelope.params) {
    if (!query.empty()) query += '&';
    query += percent_encode(name);
    query += '=';
    query += percent_encode(value);
  }
  std::size_t header_bytes = 0;
  if (auto error =
          collect_headers(envelope.headers, policy.drop_authorization, r.headers, header_bytes);
      !error.empty())
    return reject(400, error);
  if (envelope.body_kind != RequestEnvelope::Body::kNone) r.body = envelope.body;
  if (envelope.body_kind == RequestEnvelope::Body::kJson && !has_header(r.headers, "content-type"))
    r.headers.emplace_back("Content-Type", "application/json");
  if (envelope.timeout_ms &&
      *envelope.timeout_ms < static_cast<std::uint64_t>(policy.max_timeout.count()))
    r.timeout = std::chrono::milliseconds(*envelope.timeout_ms);
  r.include_headers = envelope.include_headers;
  r.raw = envelope.raw;
  r.stream = envelope.stream;

  // 5. HTTP_ALLOWED_PATHS, against the decoded path without its query.
  const std::string plain = "/" + percent_decode(path->substr(0, path->find('?')));
  if (!path_allowed(policy.allowed_paths, plain))
    return reject(403, "path " + plain + " is not allowed (HTTP_ALLOWED_PATHS)");

  // 6. Body size, and the size of the headers with it.
  if (r.body && r.body->size() > policy.max_body_bytes) {
    return reject(413, "request body of " + std::to_string(r.body->size()) +
                           " bytes exceeds HTTP_MAX_BODY_BYTES (" +
                           std::to_string(policy.max_body_bytes) + ")");
  }
  if (r.stream && r.stream->upload_length && *r.stream->upload_length > policy.max_upload_bytes) {
    return reject(413, "request body of " + std::to_string(*r.stream->upload_length) +
                           " bytes exceeds HTTP_MAX_UPLOAD_BYTES (" +
                           std::to_string(policy.max_upload_bytes) + ")");
  }
  if (header_bytes > policy.max_header_bytes) {
    return reject(413, "request headers of " + std::to_string(header_bytes) +
                           " bytes exceed HTTP_MAX_HEADER_BYTES (" +
                           std::to_string(policy.max_header_bytes) + ")");
  }

  std::string url_error;
  auto url = build_url(policy.base_url, *path, query, url_error);
  if (!url) return reject(400, url_error);
  r.url = std::move(*url);
  return r;
}

}  // namespace hom
