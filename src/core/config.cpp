#include "hom/config.hpp"

#include <curl/curl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>

#include "hom/request.hpp"

namespace hom {

namespace {

constexpr const char* kDefaultMethods = "GET,HEAD,POST,PUT,PATCH,DELETE,OPTIONS";

[[noreturn]] void fail(const std::string& name, const std::string& value,
                       const std::string& accepted) {
  throw ConfigError(name + "='" + value + "' is invalid: " + accepted);
}

std::string trim_spaces(std::string_view s) {
  const auto b = s.find_first_not_of(" \t");
  if (b == std::string_view::npos) return {};
  const auto e = s.find_last_not_of(" \t");
  return std::string(s.substr(b, e - b + 1));
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

std::string upper(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  return s;
}

std::vector<std::string> split_list(std::string_view s) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start <= s.size()) {
    std::size_t end = s.find(',', start);
    if (end == std::string_view::npos) end = s.size();
    std::string item = trim_spaces(s.substr(start, end - start));
    if (!item.empty()) out.push_back(std::move(item));
    start = end + 1;
  }
  return out;
}

// A regular file this process can open (a directory opens fine but is not a file).
bool is_readable_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(path.c_str(), R_OK) == 0;
}

// Reads variables and remembers the defaults it applied, for error messages.
class Reader {
 public:
  explicit Reader(const Env& env) : env_(env) {}

  std::optional<std::string> get(const std::string& name) const {
    auto v = env_(name);
    if (v && v->empty()) return std::nullopt;  // an empty variable counts as unset
    return v;
  }

  std::string str(const std::string& name, const std::string& def) const {
    return get(name).value_or(def);
  }

  long long integer(const std::string& name, long long def, long long min, long long max) const {
    const auto v = get(name);
    if (!v) return def;
    long long out = 0;
    const char* end = v->data() + v->size();
    const auto [ptr, ec] = std::from_chars(v->data(), end, out);
    if (ec != std::errc() || ptr != end || out < min || out > max) {
      fail(name, *v,
           "expected an integer from " + std::to_string(min) + " to " + std::to_string(max));
    }
    return out;
  }

  bool boolean(const std::string& name, bool def) const {
    const auto v = get(name);
    if (!v) return def;
    const std::string s = lower(*v);
    if (s == "1" || s == "true" || s == "yes" || s == "on") return true;
    if (s == "0" || s == "false" || s == "no" || s == "off") return false;
    fail(name, *v, "expected 1/0, true/false, yes/no or on/off");
  }

  std::string readable_file(const std::string& name) const {
    const auto v = get(name);
    if (!v) return {};
    if (!is_readable_file(*v)) fail(name, *v, "expected a readable file");
    return *v;
  }

  // X or X_FILE (one trailing newline stripped); both set is an error.
  std::optional<std::string> secret(const std::string& name, std::string& file_used) const {
    const auto direct = get(name);
    const auto file = get(name + "_FILE");
    if (direct && file)
      throw ConfigError(name + " and " + name + "_FILE are both set: set only one of them");
    if (direct) return direct;
    if (!file) return std::nullopt;
    std::ifstream f(*file, std::ios::binary);
    if (!f || !is_readable_file(*file)) fail(name + "_FILE", *file, "expected a readable file");
    std::ostringstream ss;
    ss << f.rdbuf();
    std::string value = ss.str();
    if (!value.empty() && value.back() == '\n') value.pop_back();
    if (!value.empty() && value.back() == '\r') value.pop_back();
    file_used = *file;
    return value;
  }

 private:
  const Env& env_;
};

std::string topic_part(const Env& env, const std::string& name, const std::string& def) {
  // Unlike other variables, an empty topic part is an error, not the default.
  const std::string raw = env(name).value_or(def);
  std::string part = trim_slashes(raw);
  if (part.empty() || part.find_first_of(std::string("+#\0", 3)) != std::string::npos)
    fail(name, raw, "expected a topic part that is not empty and holds no '+', '#' or NUL");
  return part;
}

struct UrlFree {
  void operator()(CURLU* u) const { curl_url_cleanup(u); }
};

std::string url_get(CURLU* u, CURLUPart part) {
  char* value = nullptr;
  if (curl_url_get(u, part, &value, 0) != CURLUE_OK || !value) return {};
  std::string out(value);
  curl_free(value);
  return out;
}

// A part percent-decoded; nullopt when the URL does not have it.
std::optional<std::string> url_get_part(CURLU* u, CURLUPart part) {
  char* value = nullptr;
  if (curl_url_get(u, part, &value, CURLU_URLDECODE) != CURLUE_OK || !value) return std::nullopt;
  std::string out(value);
  curl_free(value);
  return out;
}

// HTTP_BASE_URL into h.base_url; credentials in it become h.user/h.password (never kept in
// the URL, never printed: error messages show the value with its password as ***).
void load_base_url(const Reader& r, HttpConfig& h) {
  const std::string raw = r.str("HTTP_BASE_URL", "http://localhost/");
  const std::string accepted = "expected an http:// or https:// URL with a host, without query";
  const auto invalid = [&raw, &accepted] {
    fail("HTTP_BASE_URL", mask_url_password(raw), accepted);
  };
  std::unique_ptr<CURLU, UrlFree> u(curl_url());
  if (!u || curl_url_set(u.get(), CURLUPART_URL, raw.c_str(), 0) != CURLUE_OK) invalid();
  const std::string scheme = lower(url_get(u.get(), CURLUPART_SCHEME));
  // curl reads "http:///x" as host "x": the authority must follow "://" directly.
  const auto sep = raw.find("://");
  if ((scheme != "http" && scheme != "https") || url_get(u.get(), CURLUPART_HOST).empty() ||
      !url_get(u.get(), CURLUPART_QUERY).empty() || !url_get(u.get(), CURLUPART_FRAGMENT).empty() ||
      sep == std::string::npos || lower(raw.substr(0, sep)) != scheme ||
      raw.find_first_of("/\\", sep + 3) == sep + 3) {
    invalid();
  }
  std::optional<std::string> user = url_get_part(u.get(), CURLUPART_USER);
  std::optional<std::string> password = url_get_part(u.get(), CURLUPART_PASSWORD);
  if (user || password) {
    const bool user_set = r.get("HTTP_USER").has_value();
    if (user_set || r.get("HTTP_PASS") || r.get("HTTP_PASS_FILE"))
      throw ConfigError("HTTP_BASE_URL='" + mask_url_password(raw) + "' holds credentials and " +
                        (user_set ? "HTTP_USER" : "HTTP_PASS") +
                        " is set too: give them in one place only");
    h.user = user.value_or("");
    h.password = std::move(password);
    h.credentials_in_url = true;
    curl_url_set(u.get(), CURLUPART_USER, nullptr, 0);
    curl_url_set(u.get(), CURLUPART_PASSWORD, nullptr, 0);
    curl_url_set(u.get(), CURLUPART_OPTIONS, nullptr, 0);
  }
  std::string path = url_get(u.get(), CURLUPART_PATH);
  if (path.empty() || path.back() != '/') path += '/';
  curl_url_set(u.get(), CURLUPART_PATH, path.c_str(), 0);
  h.base_url = url_get(u.get(), CURLUPART_URL);
}

void resolve_mqtt_endpoint(const Reader& r, MqttConfig& m) {
  const std::string tls_word = lower(r.str("MQTT_TLS", "auto"));
  if (tls_word == "auto") {
    m.tls_mode = TlsMode::kAuto;
  } else if (tls_word == "on" || tls_word == "1" || tls_word == "true") {
    m.tls_mode = TlsMode::kOn;
  } else if (tls_word == "off" || tls_word == "0" || tls_word == "false") {
    m.tls_mode = TlsMode::kOff;
  } else {
    fail("MQTT_TLS", r.str("MQTT_TLS", ""), "expected auto, on or off");
  }

  const std::string raw = r.str("MQTT_HOST", "localhost");
  std::string ws_path;
  bool websocket = false;
  const auto sep = raw.find("://");
  if (sep != std::string::npos) {
    const std::string scheme = lower(raw.substr(0, sep));
    int default_port = 0;
    if (scheme == "mqtt") {
      m.tls = false, default_port = 1883;
    } else if (scheme == "mqtts") {
      m.tls = true, default_port = 8883;
    } else if (scheme == "ws") {
      m.tls = false, default_port = 80, websocket = true;
    } else if (scheme == "wss") {
      m.tls = true, default_port = 443, websocket = true;
    } else {
      fail("MQTT_HOST", raw, "expected a host name or an mqtt://, mqtts://, ws:// or wss:// URI");
    }
    if ((m.tls && m.tls_mode == TlsMode::kOff) || (!m.tls && m.tls_mode == TlsMode::kOn))
      throw ConfigError("MQTT_TLS='" + tls_word + "' contradicts MQTT_HOST='" + raw +
                        "': the URI scheme decides TLS");
    std::string rest = raw.substr(sep + 3);
    const auto slash = rest.find('/');
    if (slash != std::string::npos) {
      ws_path = rest.substr(slash);
      rest.resize(slash);
      if (!websocket && ws_path != "/")
        fail("MQTT_HOST", raw, "a path is only allowed in a ws:// or wss:// URI");
    }
    std::string port_text;
    if (!rest.empty() && rest.front() == '[') {
      const auto close = rest.find(']');
      if (close == std::string::npos) fail("MQTT_HOST", raw, "expected [IPv6] in brackets");
      m.host = rest.substr(1, close - 1);
      if (close + 1 < rest.size()) {
        if (rest[close + 1] != ':') fail("MQTT_HOST", raw, "expected [IPv6]:port");
        port_text = rest.substr(close + 2);
      }
    } else {
      const auto colon = rest.rfind(':');
      m.host = rest.substr(0, colon);
      if (colon != std::string::npos) port_text = rest.substr(colon + 1);
    }
    m.port = default_port;
    if (!port_text.empty()) {
      int port = 0;
      const auto [p, ec] =
          std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
      if (ec != std::errc() || p != port_text.data() + port_text.size() || port < 1 || port > 65535)
        fail("MQTT_HOST", raw, "expected a port from 1 to 65535 in the URI");
      m.port = port;
    }
  } else {
    // "host:port" is not a host name; more than one ':' is an IPv6 address.
    if (std::count(raw.begin(), raw.end(), ':') == 1)
      fail("MQTT_HOST", raw,
           "expected a host name; give the port in MQTT_PORT or use mqtt://host:port");
    m.host = raw;
    m.port = static_cast<int>(r.integer("MQTT_PORT", 8883, 1, 65535));
    m.tls = m.tls_mode == TlsMode::kOn ||
            (m.tls_mode == TlsMode::kAuto &&
             (m.port == 8883 || r.get("MQTT_CA_FILE") || r.get("MQTT_CERT_FILE")));
  }
  if (m.host.empty() || m.host.find_first_of(" /?#@") != std::string::npos)
    fail("MQTT_HOST", raw, "expected a host name, an IP address or a broker URI");

  const std::string host = m.host.find(':') != std::string::npos ? "[" + m.host + "]" : m.host;
  const char* scheme = websocket ? (m.tls ? "wss://" : "ws://") : (m.tls ? "ssl://" : "tcp://");
  m.server_uri = scheme + host + ":" + std::to_string(m.port) + ws_path;
}

std::string default_client_id(const std::string& id) {
  std::string out = "homd-" + id;
  for (auto& c : out) {
    const auto u = static_cast<unsigned char>(c);
    if (!std::isalnum(u) && c != '_' && c != '-') c = '-';
  }
  return out;
}

// HOM_E2E and the files it needs (SPEC §8). Only the presence and readability of the files
// is checked here; their content is read by homd at start-up (e2e_device.hpp).
void load_e2e(const Reader& r, E2eConfig& e) {
  const std::string mode = lower(r.str("HOM_E2E", "off"));
  if (mode == "off") {
    e.mode = E2eMode::kOff;
  } else if (mode == "accept") {
    e.mode = E2eMode::kAccept;
  } else if (mode == "require") {
    e.mode = E2eMode::kRequire;
  } else {
    fail("HOM_E2E", r.str("HOM_E2E", ""), "expected off, accept or require");
  }
  e.device_key_file = r.readable_file("HOM_DEVICE_KEY_FILE");
  e.authorized_keys_file = r.readable_file("HOM_AUTHORIZED_KEYS_FILE");
  e.skew_s = r.integer("HOM_E2E_SKEW_S", 300, 1, 86400);
  if (const auto dir = r.get("HOM_STATE_DIR")) {
    e.state_dir = *dir;
  } else if (const auto systemd = r.get("STATE_DIRECTORY")) {
    // systemd lists one directory per StateDirectory= entry, separated by ':'.
    e.state_dir = systemd->substr(0, systemd->find(':'));
  }
  if (e.mode == E2eMode::kOff) return;
  if (e.device_key_file.empty())
    throw ConfigError("HOM_E2E=" + mode +
                      " needs HOM_DEVICE_KEY_FILE (the device's OpenSSH Ed25519 private key)");
  if (e.authorized_keys_file.empty())
    throw ConfigError("HOM_E2E=" + mode +
                      " needs HOM_AUTHORIZED_KEYS_FILE (the requesters' public keys)");
  if (e.state_dir.empty())
    throw ConfigError("HOM_E2E=" + mode +
                      " needs HOM_STATE_DIR or systemd's StateDirectory= (the replay cache "
                      "must survive a restart)");
  struct stat st {};
  if (::stat(e.state_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) ||
      ::access(e.state_dir.c_str(), W_OK) != 0)
    fail("HOM_STATE_DIR", e.state_dir, "expected a writable directory");
}

}  // namespace

Env process_env() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (!v) return std::nullopt;
    return std::string(v);
  };
}

std::string trim_slashes(std::string_view part) {
  const auto b = part.find_first_not_of('/');
  if (b == std::string_view::npos) return {};
  const auto e = part.find_last_not_of('/');
  return std::string(part.substr(b, e - b + 1));
}

TopicConfig load_topic_config(const Env& env) {
  TopicConfig t;
  t.start = topic_part(env, "MQTT_TOPIC_START", "v1");
  t.id = topic_part(env, "MQTT_TOPIC_ID", "itsme");
  return t;
}

MqttConfig load_mqtt_config(const Env& env, const TopicConfig& topics) {
  const Reader r(env);
  MqttConfig m;
  resolve_mqtt_endpoint(r, m);
  m.ca_file = r.readable_file("MQTT_CA_FILE");
  m.cert_file = r.readable_file("MQTT_CERT_FILE");
  m.key_file = r.readable_file("MQTT_KEY_FILE");
  if (!m.tls && (!m.ca_file.empty() || !m.cert_file.empty() || !m.key_file.empty()))
    throw ConfigError(
        "MQTT_CA_FILE/MQTT_CERT_FILE/MQTT_KEY_FILE are set but TLS is off (MQTT_TLS or "
        "the MQTT_HOST scheme): enable TLS or unset them");
  if (!m.key_file.empty() && m.cert_file.empty())
    throw ConfigError("MQTT_KEY_FILE is set without MQTT_CERT_FILE: set both for mutual TLS");
  m.tls_insecure = r.boolean("MQTT_TLS_INSECURE", false);
  m.user = r.get("MQTT_USER");
  m.password = r.secret("MQTT_PASS", m.password_file);
  m.client_id = r.str("MQTT_CLIENT_ID", default_client_id(topics.id));
  m.clean_session = r.boolean("MQTT_CLEAN_SESSION", false);
  const std::string version = lower(r.str("MQTT_VERSION", "auto"));
  if (version == "auto") {
    m.version = MqttVersion::kAuto;
  } else if (version == "5" || version == "5.0") {
    m.version = MqttVersion::kV5;
  } else if (version == "3.1.1" || version == "311") {
    m.version = MqttVersion::kV311;
  } else {
    fail("MQTT_VERSION", r.str("MQTT_VERSION", ""), "expected 5, 3.1.1 or auto");
  }
  m.keepalive_s = static_cast<int>(r.integer("MQTT_KEEPALIVE_S", 30, 1, 65535));
  m.reconnect_min = std::chrono::milliseconds(r.integer("MQTT_RECONNECT_MIN_MS", 1000, 1, 3600000));
  m.reconnect_max = std::chrono::milliseconds(
      r.integer("MQTT_RECONNECT_MAX_MS", std::max<long long>(60000, m.reconnect_min.count()),
                m.reconnect_min.count(), 3600000));
  m.response_qos = static_cast<int>(r.integer("MQTT_RESPONSE_QOS", 2, 0, 2));
  m.max_payload_bytes = static_cast<std::size_t>(
      r.integer("MQTT_MAX_PAYLOAD_BYTES", 2 * 1024 * 1024, 1, 256LL * 1024 * 1024));
  m.max_message_bytes_set = r.get("MQTT_MAX_MESSAGE_BYTES").has_value();
  m.max_message_bytes =
      static_cast<std::size_t>(r.integer("MQTT_MAX_MESSAGE_BYTES", 256 * 1024, 1024, 268435455));
  return m;
}

Config load_config(const Env& env) {
  const Reader r(env);
  Config c;
  c.topics = load_topic_config(env);
  c.mqtt = load_mqtt_config(env, c.topics);

  HttpConfig& h = c.http;
  load_base_url(r, h);
  if (!h.credentials_in_url) {
    h.user = r.get("HTTP_USER");
    h.password = r.secret("HTTP_PASS", h.password_file);
  }
  h.timeout = std::chrono::milliseconds(r.integer("HTTP_TIMEOUT_MS", 30000, 1, 86400000));
  h.connect_timeout =
      std::chrono::milliseconds(r.integer("HTTP_CONNECT_TIMEOUT_MS", 5000, 1, 86400000));
  h.max_body_bytes =
      static_cast<std::size_t>(r.integer("HTTP_MAX_BODY_BYTES", 1048576, 0, 1LL << 32));
  h.max_response_bytes =
      static_cast<std::size_t>(r.integer("HTTP_MAX_RESPONSE_BYTES", 1048576, 0, 1LL << 32));
  h.max_header_bytes =
      static_cast<std::size_t>(r.integer("HTTP_MAX_HEADER_BYTES", 65536, 0, 1LL << 32));
  h.max_upload_bytes =
      static_cast<std::uint64_t>(r.integer("HTTP_MAX_UPLOAD_BYTES", 1LL << 30, 0, 1LL << 50));
  const std::string methods = r.str("HTTP_ALLOWED_METHODS", kDefaultMethods);
  for (const auto& method : split_list(methods)) {
    if (!is_token(method))
      fail("HTTP_ALLOWED_METHODS", methods, "expected comma-separated method names");
    h.allowed_methods.push_back(upper(method));
  }
  if (h.allowed_methods.empty())
    fail("HTTP_ALLOWED_METHODS", methods, "expected at least one method name");
  if (const auto paths = r.get("HTTP_ALLOWED_PATHS")) {
    for (auto& glob : split_list(*paths)) {
      if (glob.front() != '/') glob.insert(glob.begin(), '/');
      h.allowed_paths.push_back(std::move(glob));
    }
    if (h.allowed_paths.empty())
      fail("HTTP_ALLOWED_PATHS", *paths, "expected comma-separated path globs such as /gps/**");
  }
  h.unix_socket = r.str("HTTP_UNIX_SOCKET", "");
  h.ca_file = r.readable_file("HTTP_CA_FILE");
  h.tls_insecure = r.boolean("HTTP_TLS_INSECURE", false);

  c.workers = static_cast<int>(r.integer("WORKERS", 4, 1, 1024));
  c.queue_max = static_cast<std::size_t>(r.integer("QUEUE_MAX", 1024, 0, 1000000));
  c.reply_cache_bytes = static_cast<std::size_t>(
      r.integer("MQTT_REPLY_CACHE_BYTES", 8 * 1024 * 1024, 0, 1024LL * 1024 * 1024));
  c.shutdown_grace = std::chrono::milliseconds(r.integer("SHUTDOWN_GRACE_MS", 10000, 0, 3600000));
  c.log_level = lower(r.str("LOG_LEVEL", "info"));
  static const char* kLevels[] = {"trace",   "debug", "info",     "warn",
                                  "warning", "error", "critical", "off"};
  if (std::find(std::begin(kLevels), std::end(kLevels), c.log_level) == std::end(kLevels))
    fail("LOG_LEVEL", r.str("LOG_LEVEL", ""),
         "expected trace, debug, info, warn, error, critical or off");
  if (c.log_level == "warning") c.log_level = "warn";
  load_e2e(r, c.e2e);
  return c;
}

const char* to_string(E2eMode mode) {
  switch (mode) {
    case E2eMode::kAccept:
      return "accept";
    case E2eMode::kRequire:
      return "require";
    case E2eMode::kOff:
      break;
  }
  return "off";
}

std::string display_base_url(const HttpConfig& http) {
  if (!http.credentials_in_url) return http.base_url;
  std::unique_ptr<CURLU, UrlFree> u(curl_url());
  if (!u || curl_url_set(u.get(), CURLUPART_URL, http.base_url.c_str(), 0) != CURLUE_OK)
    return http.base_url;
  curl_url_set(u.get(), CURLUPART_USER, http.user.value_or("").c_str(), CURLU_URLENCODE);
  if (http.password) curl_url_set(u.get(), CURLUPART_PASSWORD, "***", 0);
  return url_get(u.get(), CURLUPART_URL);
}

std::string mask_url_password(std::string_view url) {
  const auto sep = url.find("://");
  if (sep == std::string_view::npos) return std::string(url);
  const auto authority = sep + 3;
  // Up to the query, not the path: a password with an unencoded '/' must not leak either
  // (masking too much in an error message is the lesser harm).
  auto end = url.find_first_of("?#", authority);
  if (end == std::string_view::npos) end = url.size();
  const auto at = url.rfind('@', end);
  if (at == std::string_view::npos || at < authority) return std::string(url);
  const auto colon = url.find(':', authority);
  if (colon == std::string_view::npos || colon > at) return std::string(url);
  return std::string(url.substr(0, colon + 1)) + "***" + std::string(url.substr(at));
}

std::vector<std::string> ignore_proxy_environment() {
  // libcurl reads the lower-case and (except http_proxy's) upper-case spellings; Paho C 1.3
  // reads http_proxy and https_proxy on every connect, newer ones only with
  // PAHO_C_CLIENT_USE_HTTP_PROXY=TRUE and honouring no_proxy.
  static const char* const kNames[] = {"http_proxy",  "HTTP_PROXY", "https_proxy",
                                       "HTTPS_PROXY", "all_proxy",  "ALL_PROXY",
                                       "no_proxy",    "NO_PROXY",   "PAHO_C_CLIENT_USE_HTTP_PROXY"};
  std::vector<std::string> ignored;
  for (const char* name : kNames) {
    if (std::getenv(name)) {
      ignored.emplace_back(name);
      ::unsetenv(name);
    }
  }
  return ignored;
}

std::vector<std::pair<std::string, std::string>> describe(const Config& c) {
  const auto secret = [](const std::optional<std::string>& v) -> std::string {
    return v ? "***" : "";
  };
  const auto join = [](const std::vector<std::string>& v) {
    std::string out;
    for (const auto& s : v) out += (out.empty() ? "" : ",") + s;
    return out;
  };
  const auto flag = [](bool b) { return std::string(b ? "1" : "0"); };
  const std::string from_url = c.http.credentials_in_url ? " (from HTTP_BASE_URL)" : "";
  const char* tls_mode = c.mqtt.tls_mode == TlsMode::kAuto ? "auto"
                         : c.mqtt.tls_mode == TlsMode::kOn ? "on"
                                                           : "off";
  std::vector<std::pair<std::string, std::string>> out = {
      {"MQTT_HOST", c.mqtt.host},
      {"MQTT_PORT", std::to_string(c.mqtt.port)},
      {"MQTT_TLS", std::string(tls_mode) + " (" + (c.mqtt.tls ? "on" : "off") + ")"},
      {"MQTT_SERVER_URI", c.mqtt.server_uri},
      {"MQTT_CA_FILE", c.mqtt.ca_file.empty() ? "(system CAs)" : c.mqtt.ca_file},
      {"MQTT_CERT_FILE", c.mqtt.cert_file},
      {"MQTT_KEY_FILE", c.mqtt.key_file},
      {"MQTT_TLS_INSECURE", flag(c.mqtt.tls_insecure)},
      {"MQTT_USER", c.mqtt.user.value_or("")},
      {c.mqtt.password_file.empty() ? "MQTT_PASS" : "MQTT_PASS_FILE",
       c.mqtt.password_file.empty() ? secret(c.mqtt.password) : c.mqtt.password_file},
      {"MQTT_CLIENT_ID", c.mqtt.client_id},
      {"MQTT_CLEAN_SESSION", flag(c.mqtt.clean_session)},
      {"MQTT_VERSION", c.mqtt.version == MqttVersion::kAuto ? "auto"
                       : c.mqtt.version == MqttVersion::kV5 ? "5"
                                                            : "3.1.1"},
      {"MQTT_KEEPALIVE_S", std::to_string(c.mqtt.keepalive_s)},
      {"MQTT_RECONNECT_MIN_MS", std::to_string(c.mqtt.reconnect_min.count())},
      {"MQTT_RECONNECT_MAX_MS", std::to_string(c.mqtt.reconnect_max.count())},
      {"MQTT_RESPONSE_QOS", std::to_string(c.mqtt.response_qos)},
      {"MQTT_MAX_PAYLOAD_BYTES", std::to_string(c.mqtt.max_payload_bytes)},
      {"MQTT_MAX_MESSAGE_BYTES", c.mqtt.max_message_bytes_set
                                     ? std::to_string(c.mqtt.max_message_bytes)
                                     : "(MQTT 5: the broker's limit; 3.1.1: 262144)"},
      {"MQTT_TOPIC_START", c.topics.start},
      {"MQTT_TOPIC_ID", c.topics.id},
      {"HTTP_BASE_URL", display_base_url(c.http)},
      {"HTTP_USER", c.http.user.value_or("") + from_url},
      {c.http.password_file.empty() ? "HTTP_PASS" : "HTTP_PASS_FILE",
       c.http.password_file.empty() ? secret(c.http.password) + (c.http.password ? from_url : "")
                                    : c.http.password_file},
      {"HTTP_TIMEOUT_MS", std::to_string(c.http.timeout.count())},
      {"HTTP_CONNECT_TIMEOUT_MS", std::to_string(c.http.connect_timeout.count())},
      {"HTTP_MAX_BODY_BYTES", std::to_string(c.http.max_body_bytes)},
      {"HTTP_MAX_RESPONSE_BYTES", std::to_string(c.http.max_response_bytes)},
      {"HTTP_MAX_HEADER_BYTES", std::to_string(c.http.max_header_bytes)},
      {"HTTP_MAX_UPLOAD_BYTES", std::to_string(c.http.max_upload_bytes)},
      {"HTTP_ALLOWED_METHODS", join(c.http.allowed_methods)},
      {"HTTP_ALLOWED_PATHS", c.http.allowed_paths.empty() ? "(all)" : join(c.http.allowed_paths)},
      {"HTTP_UNIX_SOCKET", c.http.unix_socket},
      {"HTTP_CA_FILE", c.http.ca_file.empty() ? "(system CAs)" : c.http.ca_file},
      {"HTTP_TLS_INSECURE", flag(c.http.tls_insecure)},
      {"WORKERS", std::to_string(c.workers)},
      {"QUEUE_MAX", std::to_string(c.queue_max)},
      {"MQTT_REPLY_CACHE_BYTES", std::to_string(c.reply_cache_bytes)},
      {"SHUTDOWN_GRACE_MS", std::to_string(c.shutdown_grace.count())},
      {"LOG_LEVEL", c.log_level},
      {"HOM_E2E", to_string(c.e2e.mode)},
      {"HOM_DEVICE_KEY_FILE", c.e2e.device_key_file},
      {"HOM_AUTHORIZED_KEYS_FILE", c.e2e.authorized_keys_file},
      {"HOM_STATE_DIR", c.e2e.state_dir},
      {"HOM_E2E_SKEW_S", std::to_string(c.e2e.skew_s)},
  };
  return out;
}

}  // namespace hom
