// From an MQTT message to a request for the local API, SPEC §2 "Request payload",
// "Bridge-generated statuses" and "Precise rules". Pure: no I/O.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "hom/config.hpp"
#include "hom/message.hpp"
#include "hom/raw_json.hpp"
#include "hom/response.hpp"
#include "hom/topic.hpp"

namespace hom {

// What parse_request() needs from the configuration.
struct RequestPolicy {
  Topics topics;
  std::string base_url;
  std::vector<std::string> allowed_methods;
  std::vector<std::string> allowed_paths;
  std::size_t max_payload_bytes;
  std::size_t max_body_bytes;
  std::chrono::milliseconds max_timeout;
  bool drop_authorization;                      // the bridge sends its own credentials (HTTP_USER)
  std::size_t max_header_bytes = 64 * 1024;     // names + values of the payload's headers
  std::uint64_t max_upload_bytes = 1ULL << 30;  // a streamed body (HTTP_MAX_UPLOAD_BYTES)

  static RequestPolicy from(const Config& config);
};

struct Request {
  std::string response_topic;  // where the reply goes (the mirrored or MQTT 5 Response Topic)
  std::optional<std::string> correlation_data;  // MQTT 5: echoed on the reply
  std::optional<std::uint32_t> expiry_s;        // MQTT 5: a deadline from `received`
  std::string verb;                             // upper-case when valid
  std::string path;                             // as it arrived in the topic, for logs
  std::string url;                              // full URL under the base
  HeaderList headers;                           // to send, in payload order, names as given
  std::optional<std::string> body;
  RawJson req_id;  // the payload's text, echoed verbatim; null when absent
  std::chrono::milliseconds timeout{0};
  bool include_headers = false;
  bool raw = false;    // the reply's content never parsed as JSON
  bool mqtt5 = false;  // arrived with an MQTT 5 Response Topic: the requester reads properties
  std::optional<StreamRequest> stream;  // v1.1: a streamed reply (and upload) was asked for
  // Set when the bridge answers by itself without calling the API (a 4xx from the checks).
  std::optional<Response> rejection;
  std::chrono::steady_clock::time_point received{};  // set by the bridge, for the log line
};

// Parses one message. nullopt when the topic is not a request topic of this device.
// An MQTT 5 Response Topic is honoured only under {start}/res/{id}/ (else: 400 on the
// mirrored topic).
std::optional<Request> parse_request(const RequestPolicy& policy, std::string_view topic,
                                     std::string_view payload,
                                     const MessageProperties& properties = {});

// True when `name` is an RFC 9110 token (tchar+).
bool is_token(std::string_view name);

// Request header names never taken from a payload (framing, routing, hop-by-hop).
bool is_dropped_header(std::string_view name);

}  // namespace hom
