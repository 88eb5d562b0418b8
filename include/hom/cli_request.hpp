// The pure half of `hom`: curl-like options to a request payload, replies to output and exit
// status (SPEC §4). No I/O.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "hom/envelope.hpp"

namespace hom {

// SPEC §4 exit statuses.
namespace exit_code {
constexpr int kOk = 0;
constexpr int kUsage = 2;
constexpr int kBrokerUnreachable = 7;  // as curl's "could not connect"
constexpr int kPartial = 18;           // a streamed body failed its checks (curl: partial file)
constexpr int kHttpError = 22;         // status >= 400, as curl -f
constexpr int kTimeout = 28;
constexpr int kOffline = 69;
constexpr int kUnverified = 60;  // a sealed call's reply is not authentic (curl: peer not verified)
}  // namespace exit_code

// "500ms", "10s", "2m", "1.5s"; a bare number is seconds. nullopt when invalid or <= 0.
std::optional<std::chrono::milliseconds> parse_duration(std::string_view text);

struct RequestOptions {
  std::optional<std::string> data;                   // -d: JSON when it parses, else a string
  std::optional<std::string> data_raw;               // --data-raw: always a string
  std::optional<std::string> data_binary;            // --data-binary: bytes, sent as body_base64
  std::vector<std::string> headers;                  // "Name: value"
  std::vector<std::string> params;                   // "name=value"
  std::optional<std::chrono::milliseconds> timeout;  // sent as timeout_ms
  bool include_headers = false;
};

// Builds the request envelope (without req_id). Throws std::invalid_argument with a clear
// message on a malformed header or parameter.
RequestEnvelope build_request(const RequestOptions& options);
// request_document(build_request(options)).
nlohmann::json build_payload(const RequestOptions& options);

// 0 for 1xx-3xx, 22 for >= 400.
int exit_code_for_status(int status);

// `hom -i`: "HTTP/1.1 <status>", the headers, a blank line (then the caller prints content).
std::string status_and_headers(const ReplyEnvelope& reply);

}  // namespace hom
