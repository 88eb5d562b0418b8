#include "hom/request.hpp"

#include <algorithm>
#include <cctype>
#include <unordered_set>

#include "hom/base64.hpp"
#include "hom/path.hpp"

namespace hom {

using nlohmann::json;

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

bool is_scalar(const json& v) { return v.is_string() || v.is_number() || v.is_boolean(); }

std::string scalar_text(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  return v.dump();  // numbers and bools in their JSON spelling
}

// Builds the query string from `params`; returns an error text or "".
std::string encode_params(const json& params, std::string& query) {
  if (!params.is_object()) return "'params' must be an object";
  for (const auto& [name, value] : params.items()) {
    const std::string key = percent_encode(name);
    const auto add = [&](const json& v) {
      if (!query.empty()) query += '&';
      query += key;
      query += '=';
      query += percent_encode(scalar_text(v));
    };
    if (value.is_null()) continue;
    if (is_scalar(value)) {
      add(value);
    } else if (value.is_array()) {
      for (const auto& item : value) {
        if (item.is_null()) continue;
        if (!is_scalar(item))
          return "'params." + name + "' must be a scalar or an array of scalars";
        add(item);
      }
    } else {
      return "'params." + name + "' must be a scalar or an array of scalars";
    }
  }
  return {};
}

// Any control character but HTAB: CR, LF and NUL break framing, the others confuse servers.
bool has_control_character(std::string_view text) {
  return std::any_of(text.begin(), text.end(), [](char ch) {
    const auto c = static_cast<unsigned char>(ch);
    return (c < 0x20 && c != '\t') || c == 0x7F;
  });
}

// Validates `headers` into `out` and adds their names' and values' sizes to `bytes` (all of
// them, dropped ones included: what the requester sent); returns an error text or "".
// Linear in the number of headers: a payload may hold hundreds of thousands.
std::string collect_headers(const json& headers, bool drop_authorization, HeaderList& out,
                            std::size_t& bytes) {
  if (!headers.is_object()) return "'headers' must be an object of strings";
  std::unordered_set<std::string> seen;  // lower-case names
  seen.reserve(headers.size());
  for (const auto& [name, value] : headers.items()) {
    if (!value.is_string()) return "header '" + name + "' must have a string value";
    if (!is_token(name)) return "header name '" + name + "' is not a valid token";
    const auto& text = value.get_ref<const std::string&>();
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
                       config.http.max_header_bytes};
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

  // Parse first so that every later rejection can echo req_id; report in the SPEC's order.
  json doc = json::object();
  std::string payload_error;
  if (!payload.empty()) {
    auto parsed = parse_json(payload, kMaxDepth);
    if (!parsed) {
      payload_error = json_depth(payload, kMaxDepth) > kMaxDepth
                          ? "payload JSON is nested deeper than 100 levels"
                          : "payload is not valid JSON (UTF-8, no NUL bytes)";
    } else {
      doc = std::move(*parsed);
      if (!doc.is_object()) {
        payload_error = "payload must be a JSON object";
      } else if (const auto it = doc.find("req_id"); it != doc.end()) {
        r.req_id = *it;
      }
    }
  }

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
  if (!payload_error.empty()) return reject(400, payload_error);
  std::string query;
  if (const auto it = doc.find("params"); it != doc.end() && !it->is_null()) {
    if (auto error = encode_params(*it, query); !error.empty()) return reject(400, error);
  }
  std::size_t header_bytes = 0;
  if (const auto it = doc.find("headers"); it != doc.end() && !it->is_null()) {
    if (auto error = collect_headers(*it, policy.drop_authorization, r.headers, header_bytes);
        !error.empty())
      return reject(400, error);
  }
  const auto body = doc.find("body");
  const auto body64 = doc.find("body_base64");
  const bool has_body = body != doc.end() && !body->is_null();
  const bool has_body64 = body64 != doc.end() && !body64->is_null();
  if (has_body && has_body64) return reject(400, "'body' and 'body_base64' are both set");
  if (has_body64) {
    if (!body64->is_string()) return reject(400, "'body_base64' must be a string");
    r.body = base64_decode(body64->get_ref<const std::string&>());
    if (!r.body) return reject(400, "'body_base64' is not valid base64");
  } else if (has_body) {
    if (body->is_string()) {
      r.body = body->get<std::string>();
    } else {
      r.body = body->dump();
      if (!has_header(r.headers, "content-type"))
        r.headers.emplace_back("Content-Type", "application/json");
    }
  }
  if (const auto it = doc.find("timeout_ms"); it != doc.end() && !it->is_null()) {
    const bool positive = it->is_number_unsigned()  ? it->get<unsigned long long>() > 0
                          : it->is_number_integer() ? it->get<long long>() > 0
                                                    : false;
    if (!positive) return reject(400, "'timeout_ms' must be a positive integer");
    const auto ms = it->get<unsigned long long>();
    if (ms < static_cast<unsigned long long>(policy.max_timeout.count()))
      r.timeout = std::chrono::milliseconds(ms);
  }
  if (const auto it = doc.find("include_headers"); it != doc.end() && !it->is_null()) {
    if (!it->is_boolean()) return reject(400, "'include_headers' must be true or false");
    r.include_headers = it->get<bool>();
  }

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
