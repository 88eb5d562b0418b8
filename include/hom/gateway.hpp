// hom-gateway's pure half (SPEC §6): its configuration, routing an HTTP request to a
// device, bearer tokens with device, method and path scopes, and the mapping between an
// HTTP exchange and a request/reply over MQTT. No I/O here but reading the tokens file.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "hom/config.hpp"
#include "hom/requester.hpp"

namespace hom::gateway {

enum class RouteMode { kPath, kHost };

struct GatewayConfig {
  MqttConfig mqtt;
  TopicConfig topics;  // only `start` is used
  std::string listen_host = "127.0.0.1";
  int listen_port = 8080;
  RouteMode route = RouteMode::kPath;
  std::string host_suffix;  // host routing: "{device}{suffix}"
  std::chrono::milliseconds timeout{30000};
  std::size_t max_inflight = 10000;
  std::size_t max_body_bytes = 1024 * 1024;  // a body held in memory (small, or chunked)
  // A body with a Content-Length over 64 KiB streams to the device (SPEC §7) up to this.
  std::uint64_t max_upload_bytes = 1ULL << 30;
  std::size_t max_header_bytes = 16 * 1024;
  std::size_t max_connections = 20000;
  std::chrono::milliseconds idle_timeout{60000};     // keep-alive without a request
  std::chrono::milliseconds request_timeout{15000};  // receiving one request's head and body
  std::string tokens_file;
  bool auth_none = false;  // GATEWAY_AUTH=none
  std::chrono::milliseconds shutdown_grace{10000};
  std::string log_level = "info";
  // End to end (SPEC §8): GATEWAY_IDENTITY_FILE signs, GATEWAY_KNOWN_DEVICES_FILE names the
  // devices' keys; both or neither. With them every call is sealed (request bodies are not
  // streamed; large replies are, sealed).
  std::string identity_file;
  std::string known_devices_file;
  std::shared_ptr<const CallSealer> sealer;  // made from the two files by hom-gateway's main
};

// Reads GATEWAY_* (and MQTT_*, MQTT_TOPIC_START, SHUTDOWN_GRACE_MS, LOG_LEVEL); throws
// ConfigError with one line naming the variable, the value and what is accepted.
GatewayConfig load_gateway_config(const Env& env);
std::vector<std::pair<std::string, std::string>> describe(const GatewayConfig& config);

// Where an HTTP request goes: the device and the path under its base URL (no leading '/',
// query kept, as it arrived).
struct Route {
  std::string device;
  std::string path;
};
// Path routing: "/{device}/{path}" (a device id with '/' is written %2F). Host routing: the
// Host header "{device}{suffix}[:port]" and the whole target. nullopt: no device named.
std::optional<Route> route(const GatewayConfig& config, std::string_view target,
                           std::string_view host);

// One line of the tokens file: "<sha256 hex> <device glob> <methods> <path globs> <name>".
struct Token {
  std::string sha256_hex;  // lower-case
  std::string device_glob;
  std::vector<std::string> methods;  // upper-case; empty: all
  std::vector<std::string> paths;    // globs with a leading '/'; empty: all
  std::string name;
};

// Parses the tokens file's text ('#' starts a comment); throws ConfigError naming the line.
std::vector<Token> parse_tokens(std::string_view text, const std::string& file_name);

enum class AuthResult { kAllowed, kUnauthenticated, kForbidden };
struct Authorization {
  AuthResult result = AuthResult::kUnauthenticated;
  std::string token_name;  // for the access log, when the token was valid
};
// Checks "Bearer <token>" against the table in constant time (every entry is compared),
// then the token's scopes against the device, method and decoded path (no query).
Authorization authorize(const std::vector<Token>& tokens, std::string_view authorization_header,
                        std::string_view device, std::string_view method, std::string_view path);

// Lower-case hex SHA-256 of `text`.
std::string sha256_hex(std::string_view text);

// Request headers that never leave the gateway: hop-by-hop ones, framing, the gateway's own
// credentials (Authorization) and its own controls (Hom-Timeout).
bool is_gateway_dropped_header(std::string_view name);

// Response headers that never go back to the HTTP client as they came (hop-by-hop, framing).
bool is_hop_by_hop_response_header(std::string_view name);

// "5s", "500ms", "2m": the Hom-Timeout header; nullopt when invalid.
std::optional<std::chrono::milliseconds> parse_hom_timeout(std::string_view text);

}  // namespace hom::gateway
