// Configuration of homd (and later hom) from environment variables, SPEC §3.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace hom {

// Raised by load_config() with one line naming the variable, the value and what is accepted.
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Looks up one environment variable; std::nullopt when unset.
using Env = std::function<std::optional<std::string>(const std::string& name)>;

// The process environment.
Env process_env();

enum class TlsMode { kAuto, kOn, kOff };
enum class MqttVersion { kAuto, kV5, kV311 };  // auto: 5, falling back to 3.1.1

struct MqttConfig {
  std::string server_uri;  // for Paho: tcp://, ssl://, ws://, wss:// host:port[/path]
  std::string host;
  int port = 8883;
  bool tls = false;  // resolved from MQTT_TLS, the URI scheme and the port
  TlsMode tls_mode = TlsMode::kAuto;
  std::string ca_file;  // empty: the system's CAs
  std::string cert_file;
  std::string key_file;
  bool tls_insecure = false;
  std::optional<std::string> user;
  std::optional<std::string> password;
  std::string password_file;  // where the password came from, for --check-config
  std::string client_id;
  bool clean_session = false;
  MqttVersion version = MqttVersion::kAuto;
  int keepalive_s = 30;
  // Reconnect back-off (hom/backoff.hpp): the first window and the cap, milliseconds.
  std::chrono::milliseconds reconnect_min{1000};
  std::chrono::milliseconds reconnect_max{60000};
  int response_qos = 2;
  std::size_t max_payload_bytes = 2 * 1024 * 1024;
  // Largest packet homd publishes: MQTT_MAX_MESSAGE_BYTES when set (`max_message_bytes_set`);
  // else the broker's CONNACK Maximum Packet Size over MQTT 5, and 256 KiB over 3.1.1.
  std::size_t max_message_bytes = 256 * 1024;
  bool max_message_bytes_set = false;
};

struct TopicConfig {
  std::string start = "v1";  // trimmed application name
  std::string id = "itsme";  // trimmed device id
};

struct HttpConfig {
  // Normalised to end with '/', never with credentials: "http://user:pass@host/" gives
  // base_url "http://host/" and user/password, as if HTTP_USER/HTTP_PASS were set.
  std::string base_url = "http://localhost/";
  std::optional<std::string> user;
  std::optional<std::string> password;
  std::string password_file;
  bool credentials_in_url = false;  // user/password came from HTTP_BASE_URL
  std::chrono::milliseconds timeout{30000};
  std::chrono::milliseconds connect_timeout{5000};
  std::size_t max_body_bytes = 1024 * 1024;
  std::size_t max_response_bytes = 1024 * 1024;
  std::uint64_t max_upload_bytes = 1ULL << 30;  // a streamed request body (SPEC §7)
  std::size_t max_header_bytes = 64 * 1024;     // names + values of all request headers
  std::vector<std::string> allowed_methods;     // upper-case
  std::vector<std::string> allowed_paths;       // globs, each with a leading '/'; empty: all
  std::string unix_socket;
  std::string ca_file;
  bool tls_insecure = false;
};

// End-to-end security (SPEC §8).
enum class E2eMode { kOff, kAccept, kRequire };

struct E2eConfig {
  E2eMode mode = E2eMode::kOff;      // HOM_E2E
  std::string device_key_file;       // HOM_DEVICE_KEY_FILE: OpenSSH Ed25519 private key
  std::string authorized_keys_file;  // HOM_AUTHORIZED_KEYS_FILE
  std::string state_dir;             // HOM_STATE_DIR, else $STATE_DIRECTORY (its first entry)
  std::int64_t skew_s = 300;         // HOM_E2E_SKEW_S
};

// "off", "accept" or "require".
const char* to_string(E2eMode mode);

struct Config {
  MqttConfig mqtt;
  TopicConfig topics;
  HttpConfig http;
  int workers = 4;
  std::size_t queue_max = 1024;
  // MQTT_REPLY_CACHE_BYTES: the MQTT 5 reply cache's bound; a reply over a quarter of it is
  // not cached.
  std::size_t reply_cache_bytes = 8 * 1024 * 1024;
  std::chrono::milliseconds shutdown_grace{10000};
  std::string log_level = "info";
  E2eConfig e2e;
};

// Reads and validates every variable; throws ConfigError on the first invalid one.
Config load_config(const Env& env);

// The parts a requester (hom) shares with homd: MQTT_TOPIC_* and MQTT_* variables.
TopicConfig load_topic_config(const Env& env);
MqttConfig load_mqtt_config(const Env& env, const TopicConfig& topics);

// The effective configuration as NAME=value lines (defaults included, secrets as ***),
// for `homd --check-config`.
std::vector<std::pair<std::string, std::string>> describe(const Config& config);

// The base URL for humans (logs, --check-config): credentials taken from HTTP_BASE_URL are
// shown as "user:***@", so the password never appears.
std::string display_base_url(const HttpConfig& http);

// `url` with the password of its userinfo (if any) replaced by "***"; for error messages about
// URLs that may not even parse.
std::string mask_url_password(std::string_view url);

// SPEC §5.1 "No proxy": unsets the proxy variables that libcurl and Paho C read on their own
// (http_proxy, https_proxy, all_proxy, no_proxy in either case, PAHO_C_CLIENT_USE_HTTP_PROXY),
// so the local API and the broker are always reached directly. Returns the names that were
// set. Not thread-safe (unsetenv while another thread may call getenv): call it first thing in
// main(), before any thread starts.
std::vector<std::string> ignore_proxy_environment();

// Trims leading and trailing '/' from a topic part.
std::string trim_slashes(std::string_view part);

}  // namespace hom
