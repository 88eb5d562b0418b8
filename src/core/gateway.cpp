#include "hom/gateway.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <fstream>
#include <sstream>

#include "hom/cli_request.hpp"
#include "hom/path.hpp"
#include "hom/request.hpp"

namespace hom::gateway {

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string upper(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

[[noreturn]] void fail(const std::string& name, const std::string& value,
                       const std::string& accepted) {
  throw ConfigError(name + "='" + value + "' is invalid: " + accepted);
}

std::optional<std::string> get(const Env& env, const std::string& name) {
  auto v = env(name);
  if (v && v->empty()) return std::nullopt;  // an empty variable counts as unset
  return v;
}

long long integer(const Env& env, const std::string& name, long long def, long long min,
                  long long max) {
  const auto v = get(env, name);
  if (!v) return def;
  long long out = 0;
  const auto [ptr, ec] = std::from_chars(v->data(), v->data() + v->size(), out);
  if (ec != std::errc() || ptr != v->data() + v->size() || out < min || out > max)
    fail(name, *v,
         "expected an integer from " + std::to_string(min) + " to " + std::to_string(max));
  return out;
}

std::vector<std::string> split(std::string_view s, char sep) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start <= s.size()) {
    auto end = s.find(sep, start);
    if (end == std::string_view::npos) end = s.size();
    if (end > start) out.emplace_back(s.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

void listen_address(const std::string& raw, GatewayConfig& c) {
  const std::string accepted = "expected HOST:PORT, e.g. 127.0.0.1:8080 or [::]:8080";
  std::string host, port;
  if (!raw.empty() && raw.front() == '[') {
    const auto close = raw.find(']');
    if (close == std::string::npos || close + 1 >= raw.size() || raw[close + 1] != ':')
      fail("GATEWAY_LISTEN", raw, accepted);
    host = raw.substr(1, close - 1);
    port = raw.substr(close + 2);
  } else {
    const auto colon = raw.rfind(':');
    if (colon == std::string::npos || raw.find(':') != colon) fail("GATEWAY_LISTEN", raw, accepted);
    host = raw.substr(0, colon);
    port = raw.substr(colon + 1);
  }
  int p = 0;
  const auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
  if (host.empty() || ec != std::errc() || ptr != port.data() + port.size() || p < 0 || p > 65535)
    fail("GATEWAY_LISTEN", raw, accepted);
  c.listen_host = host;
  c.listen_port = p;
}

}  // namespace

GatewayConfig load_gateway_config(const Env& env) {
  GatewayConfig c;
  c.topics = load_topic_config(env);
  c.mqtt = load_mqtt_config(env, c.topics);
  listen_address(get(env, "GATEWAY_LISTEN").value_or("127.0.0.1:8080"), c);
  const std::string route = lower(get(env, "GATEWAY_ROUTE").value_or("path"));
  if (route == "path") {
    c.route = RouteMode::kPath;
  } else if (route == "host") {
    c.route = RouteMode::kHost;
    c.host_suffix = lower(get(env, "GATEWAY_HOST_SUFFIX").value_or(""));
    if (c.host_suffix.empty() || c.host_suffix.front() != '.')
      fail("GATEWAY_HOST_SUFFIX", c.host_suffix,
           "GATEWAY_ROUTE=host needs a suffix starting with '.', e.g. .devices.example.com");
  } else {
    fail("GATEWAY_ROUTE", route, "expected path or host");
  }
  c.timeout = std::chrono::milliseconds(integer(env, "GATEWAY_TIMEOUT_MS", 30000, 1, 3600000));
  c.max_inflight =
      static_cast<std::size_t>(integer(env, "GATEWAY_MAX_INFLIGHT", 10000, 1, 10000000));
  c.max_body_bytes =
      static_cast<std::size_t>(integer(env, "GATEWAY_MAX_BODY_BYTES", 1024 * 1024, 0, 1LL << 32));
  c.max_upload_bytes =
      static_cast<std::uint64_t>(integer(env, "GATEWAY_MAX_UPLOAD_BYTES", 1LL << 30, 0, 1LL << 50));
  c.max_header_bytes = static_cast<std::size_t>(
      integer(env, "GATEWAY_MAX_HEADER_BYTES", 16 * 1024, 1024, 1024 * 1024));
  c.max_connections =
      static_cast<std::size_t>(integer(env, "GATEWAY_MAX_CONNECTIONS", 20000, 1, 1000000));
  c.idle_timeout =
      std::chrono::milliseconds(integer(env, "GATEWAY_IDLE_TIMEOUT_MS", 60000, 1, 3600000));
  c.request_timeout =
      std::chrono::milliseconds(integer(env, "GATEWAY_REQUEST_TIMEOUT_MS", 15000, 1, 3600000));
  c.shutdown_grace =
      std::chrono::milliseconds(integer(env, "SHUTDOWN_GRACE_MS", 10000, 0, 3600000));
  c.tokens_file = get(env, "GATEWAY_TOKENS_FILE").value_or("");
  const std::string auth = lower(get(env, "GATEWAY_AUTH").value_or("tokens"));
  if (auth != "tokens" && auth != "none") fail("GATEWAY_AUTH", auth, "expected tokens or none");
  c.auth_none = auth == "none";
  if (c.auth_none && !c.tokens_file.empty())
    throw ConfigError("GATEWAY_AUTH=none and GATEWAY_TOKENS_FILE are both set: choose one");
  if (!c.auth_none && c.tokens_file.empty())
    throw ConfigError(
        "GATEWAY_TOKENS_FILE is not set: give a tokens file, or set GATEWAY_AUTH=none to serve "
        "without authentication");
  c.identity_file = get(env, "GATEWAY_IDENTITY_FILE").value_or("");
  c.known_devices_file = get(env, "GATEWAY_KNOWN_DEVICES_FILE").value_or("");
  if (c.identity_file.empty() != c.known_devices_file.empty())
    throw ConfigError(
        "GATEWAY_IDENTITY_FILE and GATEWAY_KNOWN_DEVICES_FILE go together: set both to seal "
        "calls end to end, or neither");
  c.log_level = lower(get(env, "LOG_LEVEL").value_or("info"));
  if (c.log_level == "warning") c.log_level = "warn";
  static const char* kLevels[] = {"trace", "debug", "info", "warn", "error", "critical", "off"};
  if (std::find(std::begin(kLevels), std::end(kLevels), c.log_level) == std::end(kLevels))
    fail("LOG_LEVEL", c.log_level, "expected trace, debug, info, warn, error, critical or off");
  return c;
}

std::vector<std::pair<std::string, std::string>> describe(const GatewayConfig& c) {
  const std::string host =
      c.listen_host.find(':') != std::string::npos ? "[" + c.listen_host + "]" : c.listen_host;
  return {
      {"MQTT_SERVER_URI", c.mqtt.server_uri},
      {"MQTT_USER", c.mqtt.user.value_or("")},
      {"MQTT_PASS", c.mqtt.password ? "***" : ""},
      {"MQTT_VERSION", c.mqtt.version == MqttVersion::kAuto ? "auto"
                       : c.mqtt.version == MqttVersion::kV5 ? "5"
                                                            : "3.1.1"},
      {"MQTT_TOPIC_START", c.topics.start},
      {"GATEWAY_LISTEN", host + ":" + std::to_string(c.listen_port)},
      {"GATEWAY_ROUTE", c.route == RouteMode::kPath ? "path" : "host"},
      {"GATEWAY_HOST_SUFFIX", c.host_suffix},
      {"GATEWAY_TIMEOUT_MS", std::to_string(c.timeout.count())},
      {"GATEWAY_MAX_INFLIGHT", std::to_string(c.max_inflight)},
      {"GATEWAY_MAX_BODY_BYTES", std::to_string(c.max_body_bytes)},
      {"GATEWAY_MAX_UPLOAD_BYTES", std::to_string(c.max_upload_bytes)},
      {"GATEWAY_MAX_HEADER_BYTES", std::to_string(c.max_header_bytes)},
      {"GATEWAY_MAX_CONNECTIONS", std::to_string(c.max_connections)},
      {"GATEWAY_IDLE_TIMEOUT_MS", std::to_string(c.idle_timeout.count())},
      {"GATEWAY_REQUEST_TIMEOUT_MS", std::to_string(c.request_timeout.count())},
      {"GATEWAY_AUTH", c.auth_none ? "none" : "tokens"},
      {"GATEWAY_TOKENS_FILE", c.tokens_file},
      {"GATEWAY_IDENTITY_FILE", c.identity_file},
      {"GATEWAY_KNOWN_DEVICES_FILE", c.known_devices_file},
      {"SHUTDOWN_GRACE_MS", std::to_string(c.shutdown_grace.count())},
      {"LOG_LEVEL", c.log_level},
  };
}

std::optional<Route> route(const GatewayConfig& config, std::string_view target,
                           std::string_view host) {
  if (target.empty() || target.front() != '/') return std::nullopt;
  if (config.route == RouteMode::kPath) {
    const auto rest = target.substr(1);
    const auto end = rest.find_first_of("/?");
    const std::string device = percent_decode(rest.substr(0, end));
    if (device.empty()) return std::nullopt;
    std::string path;
    if (end != std::string_view::npos) {
      path = std::string(rest.substr(end));
      if (path.front() == '/') path.erase(0, 1);
    }
    return Route{device, path};
  }
  std::string name = lower(host);
  if (!name.empty() && name.front() != '[') name = name.substr(0, name.find(':'));  // port
  const auto& suffix = config.host_suffix;
  if (name.size() <= suffix.size() ||
      name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
    return std::nullopt;
  return Route{name.substr(0, name.size() - suffix.size()), std::string(target.substr(1))};
}

std::vector<Token> parse_tokens(std::string_view text, const std::string& file_name) {
  std::vector<Token> out;
  std::size_t line_no = 0;
  std::istringstream lines{std::string(text)};
  for (std::string raw_line; std::getline(lines, raw_line);) {
    ++line_no;
    const std::string line = raw_line.substr(0, raw_line.find('#'));
    std::istringstream in(line);
    std::vector<std::string> fields;
    for (std::string f; in >> f;) fields.push_back(f);
    if (fields.empty()) continue;
    const std::string where = file_name + ":" + std::to_string(line_no);
    if (fields.size() != 5)
      throw ConfigError(where +
                        ": expected 5 fields: <sha256 hex> <device glob> <methods> <paths> <name>");
    Token t;
    t.sha256_hex = lower(fields[0]);
    if (t.sha256_hex.size() != 64 ||
        t.sha256_hex.find_first_not_of("0123456789abcdef") != std::string::npos)
      throw ConfigError(where +
                        ": the first field must be the SHA-256 of the token, 64 hex digits");
    t.device_glob = fields[1];
    if (fields[2] != "*") {
      for (const auto& m : split(fields[2], ',')) {
        if (!is_token(m)) throw ConfigError(where + ": '" + m + "' is not a method name");
        t.methods.push_back(upper(m));
      }
    }
    if (fields[3] != "*") {
      for (auto p : split(fields[3], ',')) {
        if (p.front() != '/') p.insert(p.begin(), '/');
        t.paths.push_back(p);
      }
    }
    t.name = fields[4];
    out.push_back(std::move(t));
  }
  return out;
}

std::string sha256_hex(std::string_view text) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(text.data(), text.size(), digest, &len, EVP_sha256(), nullptr);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out += kHex[digest[i] >> 4];
    out += kHex[digest[i] & 0xF];
  }
  return out;
}

Authorization authorize(const std::vector<Token>& tokens, std::string_view header,
                        std::string_view device, std::string_view method, std::string_view path) {
  Authorization out;
  constexpr std::string_view kBearer = "bearer ";
  if (header.size() <= kBearer.size() || lower(header.substr(0, kBearer.size())) != kBearer)
    return out;
  const std::string hash = sha256_hex(header.substr(kBearer.size()));
  // Every entry is compared, in constant time each, so the time taken does not say which
  // entry (or how much of one) matched.
  const Token* match = nullptr;
  for (const auto& t : tokens) {
    if (CRYPTO_memcmp(t.sha256_hex.data(), hash.data(), hash.size()) == 0) match = &t;
  }
  if (!match) return out;
  out.token_name = match->name;
  const std::string m = upper(method);
  const bool method_ok =
      match->methods.empty() ||
      std::find(match->methods.begin(), match->methods.end(), m) != match->methods.end();
  // "*" alone is every device, ids with '/' included; other globs match as paths do.
  const bool device_ok = match->device_glob == "*" || glob_match(match->device_glob, device);
  const bool path_ok = path_allowed(match->paths, path);
  out.result = method_ok && device_ok && path_ok ? AuthResult::kAllowed : AuthResult::kForbidden;
  return out;
}

bool is_gateway_dropped_header(std::string_view name) {
  const std::string n = lower(name);
  return is_dropped_header(n) || n == "authorization" || n == "hom-timeout";
}

bool is_hop_by_hop_response_header(std::string_view name) {
  const std::string n = lower(name);
  return n == "connection" || n == "keep-alive" || n == "transfer-encoding" || n == "te" ||
         n == "trailer" || n == "upgrade" || n == "content-length" || n.rfind("proxy-", 0) == 0;
}

std::optional<std::chrono::milliseconds> parse_hom_timeout(std::string_view text) {
  return parse_duration(text);
}

}  // namespace hom::gateway
