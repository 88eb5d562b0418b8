// load_config() and describe() against SPEC §3, with a fake environment.
#include "hom/config.hpp"

#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

namespace {

using hom::Config;
using hom::ConfigError;
using hom::Env;
using hom::load_config;
using hom::TlsMode;
using Vars = std::map<std::string, std::string>;

Env fake_env(Vars vars) {
  return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

// A file under the system temp dir, created with mkstemp and removed on destruction.
class TempFile {
 public:
  explicit TempFile(const std::string& content) {
    std::string pattern = (std::filesystem::temp_directory_path() / "hom-config-test-XXXXXX");
    int fd = mkstemp(pattern.data());
    if (fd < 0) throw std::runtime_error("mkstemp failed");
    std::size_t done = 0;
    while (done < content.size()) {
      ssize_t n = ::write(fd, content.data() + done, content.size() - done);
      if (n <= 0) break;
      done += static_cast<std::size_t>(n);
    }
    ::close(fd);
    path_ = pattern;
  }
  ~TempFile() { std::filesystem::remove(path_); }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;

  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A path that does not exist: a temp file's name after the file was removed.
std::string missing_path() {
  std::string path;
  {
    TempFile gone("");
    path = gone.path() + "-missing";
  }
  return path;
}

// Runs load_config() and returns the ConfigError's message, or "<no error>".
std::string config_error(const Vars& vars) {
  try {
    load_config(fake_env(vars));
  } catch (const ConfigError& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("<not a ConfigError: ") + e.what() + ">";
  }
  return "<no error>";
}

std::optional<std::string> find(const std::vector<std::pair<std::string, std::string>>& lines,
                                const std::string& name) {
  for (const auto& [key, value] : lines) {
    if (key == name) return value;
  }
  return std::nullopt;
}

TEST(ConfigDefaults, EveryDefaultOfSpecSection3) {
  const Config c = load_config(fake_env({}));

  EXPECT_EQ(c.mqtt.host, "localhost");
  EXPECT_EQ(c.mqtt.port, 8883);
  EXPECT_EQ(c.mqtt.tls_mode, TlsMode::kAuto);
  EXPECT_TRUE(c.mqtt.tls) << "MQTT_TLS=auto on port 8883 means TLS";
  EXPECT_EQ(c.mqtt.server_uri, "ssl://localhost:8883");
  EXPECT_EQ(c.mqtt.ca_file, "");
  EXPECT_EQ(c.mqtt.cert_file, "");
  EXPECT_EQ(c.mqtt.key_file, "");
  EXPECT_FALSE(c.mqtt.tls_insecure);
  EXPECT_FALSE(c.mqtt.user.has_value());
  EXPECT_FALSE(c.mqtt.password.has_value());
  EXPECT_EQ(c.mqtt.client_id, "homd-itsme");
  EXPECT_FALSE(c.mqtt.clean_session);
  EXPECT_EQ(c.mqtt.keepalive_s, 30);
  EXPECT_EQ(c.mqtt.response_qos, 2);
  EXPECT_EQ(c.mqtt.max_payload_bytes, 2097152u);

  EXPECT_EQ(c.topics.start, "v1");
  EXPECT_EQ(c.topics.id, "itsme");

  EXPECT_EQ(c.http.base_url, "http://localhost/");
  EXPECT_FALSE(c.http.user.has_value());
  EXPECT_FALSE(c.http.password.has_value());
  EXPECT_EQ(c.http.timeout, std::chrono::milliseconds(30000));
  EXPECT_EQ(c.http.connect_timeout, std::chrono::milliseconds(5000));
  EXPECT_EQ(c.http.max_body_bytes, 1048576u);
  EXPECT_EQ(c.http.max_response_bytes, 1048576u);
  EXPECT_EQ(c.http.allowed_methods,
            (std::vector<std::string>{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}));
  EXPECT_TRUE(c.http.allowed_paths.empty());
  EXPECT_EQ(c.http.unix_socket, "");
  EXPECT_EQ(c.http.ca_file, "");
  EXPECT_FALSE(c.http.tls_insecure);

  EXPECT_EQ(c.workers, 4);
  EXPECT_EQ(c.queue_max, 1024u);
  EXPECT_EQ(c.shutdown_grace, std::chrono::milliseconds(10000));
  EXPECT_EQ(c.log_level, "info");
}

TEST(ConfigValues, ExplicitValuesAreTaken) {
  const Config c = load_config(fake_env({
      {"MQTT_HOST", "broker.example"},
      {"MQTT_PORT", "1883"},
      {"MQTT_USER", "dev"},
      {"MQTT_PASS", "pw"},
      {"MQTT_KEEPALIVE_S", "45"},
      {"MQTT_CLEAN_SESSION", "1"},
      {"MQTT_RESPONSE_QOS", "1"},
      {"MQTT_MAX_PAYLOAD_BYTES", "4096"},
      {"HTTP_BASE_URL", "http://127.0.0.1:8080/api"},
      {"HTTP_USER", "admin"},
      {"HTTP_PASS", "hpw"},
      {"HTTP_TIMEOUT_MS", "1500"},
      {"HTTP_CONNECT_TIMEOUT_MS", "250"},
      {"HTTP_MAX_BODY_BYTES", "100"},
      {"HTTP_MAX_RESPONSE_BYTES", "200"},
      {"HTTP_ALLOWED_METHODS", "get,POST"},
      {"HTTP_ALLOWED_PATHS", "/gps/**,status"},
      {"HTTP_UNIX_SOCKET", "/run/api.sock"},
      {"WORKERS", "1024"},
      {"QUEUE_MAX", "0"},
      {"SHUTDOWN_GRACE_MS", "2500"},
      {"LOG_LEVEL", "debug"},
  }));
  EXPECT_EQ(c.mqtt.host, "broker.example");
  EXPECT_EQ(c.mqtt.port, 1883);
  EXPECT_FALSE(c.mqtt.tls) << "MQTT_TLS=auto on port 1883 without TLS files means plaintext";
  EXPECT_EQ(c.mqtt.server_uri, "tcp://broker.example:1883");
  EXPECT_EQ(c.mqtt.user, std::optional<std::string>("dev"));
  EXPECT_EQ(c.mqtt.password, std::optional<std::string>("pw"));
  EXPECT_EQ(c.mqtt.keepalive_s, 45);
  EXPECT_TRUE(c.mqtt.clean_session);
  EXPECT_EQ(c.mqtt.response_qos, 1);
  EXPECT_EQ(c.mqtt.max_payload_bytes, 4096u);
  EXPECT_EQ(c.http.base_url, "http://127.0.0.1:8080/api/") << "normalised to end with '/'";
  EXPECT_EQ(c.http.user, std::optional<std::string>("admin"));
  EXPECT_EQ(c.http.password, std::optional<std::string>("hpw"));
  EXPECT_EQ(c.http.timeout, std::chrono::milliseconds(1500));
  EXPECT_EQ(c.http.connect_timeout, std::chrono::milliseconds(250));
  EXPECT_EQ(c.http.max_body_bytes, 100u);
  EXPECT_EQ(c.http.max_response_bytes, 200u);
  EXPECT_EQ(c.http.allowed_methods, (std::vector<std::string>{"GET", "POST"}));
  EXPECT_EQ(c.http.allowed_paths, (std::vector<std::string>{"/gps/**", "/status"}))
      << "a pattern without a leading '/' gets one";
  EXPECT_EQ(c.http.unix_socket, "/run/api.sock");
  EXPECT_EQ(c.workers, 1024);
  EXPECT_EQ(c.queue_max, 0u);
  EXPECT_EQ(c.shutdown_grace, std::chrono::milliseconds(2500));
  EXPECT_EQ(c.log_level, "debug");
}

TEST(ConfigValues, BaseUrlIsNormalisedToEndWithSlash) {
  struct Case {
    std::string in, out;
  };
  const std::vector<Case> cases = {
      {"http://localhost", "http://localhost/"},
      {"http://localhost/", "http://localhost/"},
      {"https://dev.local:8443", "https://dev.local:8443/"},
      {"http://127.0.0.1:8080/api/v2", "http://127.0.0.1:8080/api/v2/"},
      {"http://127.0.0.1:8080/api/v2/", "http://127.0.0.1:8080/api/v2/"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE("HTTP_BASE_URL=" + c.in);
    EXPECT_EQ(load_config(fake_env({{"HTTP_BASE_URL", c.in}})).http.base_url, c.out);
  }
}

TEST(ConfigValues, LogLevelWordsAreAccepted) {
  for (const std::string level : {"trace", "debug", "info", "error", "critical", "off"}) {
    SCOPED_TRACE("LOG_LEVEL=" + level);
    EXPECT_EQ(load_config(fake_env({{"LOG_LEVEL", level}})).log_level, level);
  }
}

TEST(ConfigValues, MqttVersionWordsAreAccepted) {
  for (const std::string version : {"auto", "5", "3.1.1"}) {
    SCOPED_TRACE("MQTT_VERSION=" + version);
    EXPECT_NO_THROW(load_config(fake_env({{"MQTT_VERSION", version}})));
  }
}

TEST(ConfigTopics, TopicPartsAreTrimmedOfSlashes) {
  const Config c = load_config(
      fake_env({{"MQTT_TOPIC_START", "///iot/config/v1////"}, {"MQTT_TOPIC_ID", "/fleet/dev42/"}}));
  EXPECT_EQ(c.topics.start, "iot/config/v1");
  EXPECT_EQ(c.topics.id, "fleet/dev42");
  EXPECT_EQ(c.mqtt.client_id, "homd-fleet-dev42");
}

TEST(ConfigTopics, TrimSlashes) {
  struct Case {
    std::string in, out;
  };
  const std::vector<Case> cases = {
      {"///iot/config/v1////", "iot/config/v1"},
      {"v1", "v1"},
      {"/v1", "v1"},
      {"v1/", "v1"},
      {"a//b", "a//b"},
      {"////", ""},
      {"", ""},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE("trim_slashes(\"" + c.in + "\")");
    EXPECT_EQ(hom::trim_slashes(c.in), c.out);
  }
}

TEST(ConfigClientId, DefaultIsHomdDashIdWithUnsafeCharactersReplaced) {
  struct Case {
    std::string id, client_id;
  };
  const std::vector<Case> cases = {
      {"itsme", "homd-itsme"},
      {"Dev_01-a", "homd-Dev_01-a"},
      {"fleet/dev 1.a", "homd-fleet-dev-1-a"},
      {"a:b@c", "homd-a-b-c"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE("MQTT_TOPIC_ID=" + c.id);
    EXPECT_EQ(load_config(fake_env({{"MQTT_TOPIC_ID", c.id}})).mqtt.client_id, c.client_id);
  }
}

TEST(ConfigClientId, ExplicitClientIdIsKept) {
  EXPECT_EQ(load_config(fake_env({{"MQTT_CLIENT_ID", "my-client"}})).mqtt.client_id, "my-client");
}

TEST(ConfigMqttHost, UrisSetTlsPortAndServerUri) {
  struct Case {
    Vars vars;
    std::string host;
    int port;
    bool tls;
    std::string server_uri;  // exact
  };
  const std::vector<Case> cases = {
      {{{"MQTT_HOST", "mqtt://broker.example"}},
       "broker.example",
       1883,
       false,
       "tcp://broker.example:1883"},
      {{{"MQTT_HOST", "mqtts://broker.example"}},
       "broker.example",
       8883,
       true,
       "ssl://broker.example:8883"},
      {{{"MQTT_HOST", "mqtt://broker.example:1884"}, {"MQTT_PORT", "8883"}},
       "broker.example",
       1884,
       false,
       "tcp://broker.example:1884"},
      {{{"MQTT_HOST", "mqtt://broker.example"}, {"MQTT_PORT", "8883"}},
       "broker.example",
       1883,
       false,
       "tcp://broker.example:1883"},
      {{{"MQTT_HOST", "mqtts://broker.example"}, {"MQTT_PORT", "1883"}},
       "broker.example",
       8883,
       true,
       "ssl://broker.example:8883"},
      {{{"MQTT_HOST", "mqtts://broker.example:9883"}},
       "broker.example",
       9883,
       true,
       "ssl://broker.example:9883"},
      {{{"MQTT_HOST", "ws://broker.example/mqtt"}},
       "broker.example",
       80,
       false,
       "ws://broker.example:80/mqtt"},
      {{{"MQTT_HOST", "wss://broker.example/mqtt"}},
       "broker.example",
       443,
       true,
       "wss://broker.example:443/mqtt"},
      {{{"MQTT_HOST", "ws://broker.example:9001/mqtt"}, {"MQTT_PORT", "1234"}},
       "broker.example",
       9001,
       false,
       "ws://broker.example:9001/mqtt"},
      {{{"MQTT_HOST", "wss://broker.example:8443/a/b"}},
       "broker.example",
       8443,
       true,
       "wss://broker.example:8443/a/b"},
      {{{"MQTT_HOST", "mqtts://broker.example"}, {"MQTT_TLS", "on"}},
       "broker.example",
       8883,
       true,
       "ssl://broker.example:8883"},
      {{{"MQTT_HOST", "mqtt://broker.example"}, {"MQTT_TLS", "off"}},
       "broker.example",
       1883,
       false,
       "tcp://broker.example:1883"},
      {{{"MQTT_HOST", "wss://broker.example/mqtt"}, {"MQTT_TLS", "auto"}},
       "broker.example",
       443,
       true,
       "wss://broker.example:443/mqtt"},
  };
  for (const auto& c : cases) {
    std::string trace;
    for (const auto& [k, v] : c.vars) trace += k + "=" + v + " ";
    SCOPED_TRACE(trace);
    Config config;
    try {
      config = load_config(fake_env(c.vars));
    } catch (const std::exception& e) {
      ADD_FAILURE() << "threw: " << e.what();
      continue;
    }
    EXPECT_EQ(config.mqtt.host, c.host);
    EXPECT_EQ(config.mqtt.port, c.port);
    EXPECT_EQ(config.mqtt.tls, c.tls);
    EXPECT_EQ(config.mqtt.server_uri, c.server_uri);
  }
}

TEST(ConfigMqttHost, WebSocketUriWithoutPathKeepsSchemeHostAndDefaultPort) {
  for (const auto& [uri, prefix, tls] : std::vector<std::tuple<std::string, std::string, bool>>{
           {"ws://broker.example", "ws://broker.example:80", false},
           {"wss://broker.example", "wss://broker.example:443", true}}) {
    SCOPED_TRACE("MQTT_HOST=" + uri);
    const Config c = load_config(fake_env({{"MQTT_HOST", uri}}));
    EXPECT_EQ(c.mqtt.server_uri.rfind(prefix, 0), 0u) << c.mqtt.server_uri;
    EXPECT_EQ(c.mqtt.tls, tls);
  }
}

TEST(ConfigMqttHost, TlsContradictingTheSchemeIsAnError) {
  const std::vector<Vars> cases = {
      {{"MQTT_HOST", "mqtt://broker.example"}, {"MQTT_TLS", "on"}},
      {{"MQTT_HOST", "mqtts://broker.example"}, {"MQTT_TLS", "off"}},
      {{"MQTT_HOST", "ws://broker.example/mqtt"}, {"MQTT_TLS", "on"}},
      {{"MQTT_HOST", "wss://broker.example/mqtt"}, {"MQTT_TLS", "off"}},
  };
  for (const auto& vars : cases) {
    SCOPED_TRACE(vars.at("MQTT_HOST") + " with MQTT_TLS=" + vars.at("MQTT_TLS"));
    const std::string error = config_error(vars);
    EXPECT_NE(error, "<no error>");
    EXPECT_NE(error.find("MQTT_TLS"), std::string::npos) << error;
  }
}

TEST(ConfigTls, ModesOnPlainHosts) {
  TempFile ca("-----BEGIN CERTIFICATE-----\n");
  struct Case {
    Vars vars;
    TlsMode mode;
    bool tls;
    std::string server_uri;
  };
  const std::vector<Case> cases = {
      {{{"MQTT_PORT", "8883"}}, TlsMode::kAuto, true, "ssl://localhost:8883"},
      {{{"MQTT_PORT", "1883"}}, TlsMode::kAuto, false, "tcp://localhost:1883"},
      {{{"MQTT_PORT", "1883"}, {"MQTT_TLS", "auto"}},
       TlsMode::kAuto,
       false,
       "tcp://localhost:1883"},
      {{{"MQTT_PORT", "1883"}, {"MQTT_TLS", "on"}}, TlsMode::kOn, true, "ssl://localhost:1883"},
      {{{"MQTT_PORT", "8883"}, {"MQTT_TLS", "off"}}, TlsMode::kOff, false, "tcp://localhost:8883"},
      {{{"MQTT_PORT", "1883"}, {"MQTT_CA_FILE", ca.path()}},
       TlsMode::kAuto,
       true,
       "ssl://localhost:1883"},
      {{{"MQTT_PORT", "1883"}, {"MQTT_CERT_FILE", ca.path()}, {"MQTT_KEY_FILE", ca.path()}},
       TlsMode::kAuto,
       true,
       "ssl://localhost:1883"},
  };
  for (const auto& c : cases) {
    std::string trace;
    for (const auto& [k, v] : c.vars) trace += k + "=" + v + " ";
    SCOPED_TRACE(trace);
    Config config;
    try {
      config = load_config(fake_env(c.vars));
    } catch (const std::exception& e) {
      ADD_FAILURE() << "threw: " << e.what();
      continue;
    }
    EXPECT_EQ(config.mqtt.tls_mode, c.mode);
    EXPECT_EQ(config.mqtt.tls, c.tls);
    EXPECT_EQ(config.mqtt.server_uri, c.server_uri);
  }
}

TEST(ConfigTls, ReadableFilesAreKept) {
  TempFile ca("ca"), cert("cert"), key("key"), http_ca("http-ca");
  const Config c = load_config(fake_env({{"MQTT_CA_FILE", ca.path()},
                                         {"MQTT_CERT_FILE", cert.path()},
                                         {"MQTT_KEY_FILE", key.path()},
                                         {"MQTT_TLS_INSECURE", "1"},
                                         {"HTTP_BASE_URL", "https://dev.local/"},
                                         {"HTTP_CA_FILE", http_ca.path()},
                                         {"HTTP_TLS_INSECURE", "1"}}));
  EXPECT_EQ(c.mqtt.ca_file, ca.path());
  EXPECT_EQ(c.mqtt.cert_file, cert.path());
  EXPECT_EQ(c.mqtt.key_file, key.path());
  EXPECT_TRUE(c.mqtt.tls_insecure);
  EXPECT_EQ(c.http.ca_file, http_ca.path());
  EXPECT_TRUE(c.http.tls_insecure);
}

TEST(ConfigSecrets, PasswordFileStripsOneTrailingNewline) {
  struct Case {
    std::string content, password;
  };
  const std::vector<Case> cases = {
      {"s3cret\n", "s3cret"},
      {"s3cret", "s3cret"},
      {"s3cret\n\n", "s3cret\n"},
      {"with space \n", "with space "},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE("file content: " + c.content);
    TempFile mqtt_file(c.content), http_file(c.content);
    const Config config = load_config(
        fake_env({{"MQTT_PASS_FILE", mqtt_file.path()}, {"HTTP_PASS_FILE", http_file.path()}}));
    EXPECT_EQ(config.mqtt.password, std::optional<std::string>(c.password));
    EXPECT_EQ(config.mqtt.password_file, mqtt_file.path());
    EXPECT_EQ(config.http.password, std::optional<std::string>(c.password));
    EXPECT_EQ(config.http.password_file, http_file.path());
  }
}

TEST(ConfigSecrets, BothValueAndFileIsAnError) {
  TempFile file("pw\n");
  for (const std::string name : {"MQTT_PASS", "HTTP_PASS"}) {
    SCOPED_TRACE(name + " and " + name + "_FILE");
    const std::string error = config_error({{name, "pw"}, {name + "_FILE", file.path()}});
    EXPECT_NE(error, "<no error>");
    EXPECT_NE(error.find(name), std::string::npos) << error;
  }
}

TEST(ConfigSecrets, UnreadablePasswordFileIsAnError) {
  const std::string missing = missing_path();
  for (const std::string name : {"MQTT_PASS_FILE", "HTTP_PASS_FILE"}) {
    SCOPED_TRACE(name + "=" + missing);
    const std::string error = config_error({{name, missing}});
    EXPECT_NE(error, "<no error>");
    EXPECT_NE(error.find(name), std::string::npos) << error;
  }
}

// A directory opens as an ifstream on Linux but cannot be read.
TEST(ConfigErrors, DirectoryIsNotAReadableFile) {
  const std::string dir = std::filesystem::temp_directory_path().string();
  for (const std::string name :
       {"MQTT_CA_FILE", "MQTT_CERT_FILE", "HTTP_CA_FILE", "MQTT_PASS_FILE", "HTTP_PASS_FILE"}) {
    SCOPED_TRACE(name + "=" + dir);
    Vars vars = {{name, dir}, {"MQTT_TLS", "on"}, {"HTTP_BASE_URL", "https://dev.local/"}};
    const std::string error = config_error(vars);
    EXPECT_NE(error, "<no error>");
    EXPECT_NE(error.find(name), std::string::npos) << error;
  }
}

// "host:port" without a scheme is neither a host name nor a URI: refuse it, or read the port.
TEST(ConfigMqttHost, HostWithPortButNoSchemeIsNotMistakenForIpv6) {
  const std::string error = config_error({{"MQTT_HOST", "broker.example:1883"}});
  if (error != "<no error>") {
    EXPECT_NE(error.find("MQTT_HOST"), std::string::npos) << error;
    return;
  }
  const Config c = load_config(fake_env({{"MQTT_HOST", "broker.example:1883"}}));
  EXPECT_EQ(c.mqtt.host, "broker.example");
  EXPECT_EQ(c.mqtt.port, 1883);
  EXPECT_EQ(c.mqtt.server_uri.find('['), std::string::npos) << c.mqtt.server_uri;
}

TEST(ConfigMqttHost, Ipv6LiteralsAreBracketedInTheServerUri) {
  EXPECT_EQ(load_config(fake_env({{"MQTT_HOST", "::1"}, {"MQTT_PORT", "1883"}})).mqtt.server_uri,
            "tcp://[::1]:1883");
  EXPECT_EQ(load_config(fake_env({{"MQTT_HOST", "mqtts://[::1]:9883"}})).mqtt.server_uri,
            "ssl://[::1]:9883");
}

TEST(ConfigErrors, InvalidValuesThrowConfigErrorNamingTheVariable) {
  TempFile readable("x");
  const std::string missing = missing_path();
  struct Case {
    Vars vars;
    std::vector<std::string> names;  // what() must name one of these
  };
  const std::vector<Case> cases = {
      {{{"MQTT_PORT", "0"}}, {"MQTT_PORT"}},
      {{{"MQTT_PORT", "65536"}}, {"MQTT_PORT"}},
      {{{"MQTT_PORT", "abc"}}, {"MQTT_PORT"}},
      {{{"MQTT_PORT", "-1"}}, {"MQTT_PORT"}},
      {{{"MQTT_PORT", "80x"}}, {"MQTT_PORT"}},
      {{{"MQTT_HOST", "mqtt://broker.example:0"}}, {"MQTT_HOST"}},
      {{{"MQTT_HOST", "mqtt://broker.example:99999"}}, {"MQTT_HOST"}},
      {{{"MQTT_HOST", "http://broker.example"}}, {"MQTT_HOST"}},
      {{{"WORKERS", "0"}}, {"WORKERS"}},
      {{{"WORKERS", "1025"}}, {"WORKERS"}},
      {{{"WORKERS", "-1"}}, {"WORKERS"}},
      {{{"WORKERS", "four"}}, {"WORKERS"}},
      {{{"QUEUE_MAX", "-1"}}, {"QUEUE_MAX"}},
      {{{"QUEUE_MAX", "many"}}, {"QUEUE_MAX"}},
      {{{"MQTT_RESPONSE_QOS", "3"}}, {"MQTT_RESPONSE_QOS"}},
      {{{"MQTT_RESPONSE_QOS", "-1"}}, {"MQTT_RESPONSE_QOS"}},
      {{{"HTTP_TIMEOUT_MS", "0"}}, {"HTTP_TIMEOUT_MS"}},
      {{{"HTTP_TIMEOUT_MS", "-5"}}, {"HTTP_TIMEOUT_MS"}},
      {{{"HTTP_TIMEOUT_MS", "soon"}}, {"HTTP_TIMEOUT_MS"}},
      {{{"HTTP_CONNECT_TIMEOUT_MS", "0"}}, {"HTTP_CONNECT_TIMEOUT_MS"}},
      {{{"SHUTDOWN_GRACE_MS", "-1"}}, {"SHUTDOWN_GRACE_MS"}},
      {{{"MQTT_KEEPALIVE_S", "abc"}}, {"MQTT_KEEPALIVE_S"}},
      {{{"MQTT_MAX_PAYLOAD_BYTES", "abc"}}, {"MQTT_MAX_PAYLOAD_BYTES"}},
      {{{"HTTP_MAX_BODY_BYTES", "-1"}}, {"HTTP_MAX_BODY_BYTES"}},
      {{{"MQTT_TLS", "maybe"}}, {"MQTT_TLS"}},
      {{{"LOG_LEVEL", "verbose"}}, {"LOG_LEVEL"}},
      {{{"MQTT_VERSION", "4"}}, {"MQTT_VERSION"}},
      {{{"HTTP_BASE_URL", "ftp://x"}}, {"HTTP_BASE_URL"}},
      {{{"HTTP_BASE_URL", "not a url"}}, {"HTTP_BASE_URL"}},
      {{{"HTTP_BASE_URL", "localhost:8080"}}, {"HTTP_BASE_URL"}},
      {{{"HTTP_BASE_URL", "http://"}}, {"HTTP_BASE_URL"}},
      {{{"HTTP_BASE_URL", "http:///x"}}, {"HTTP_BASE_URL"}},
      {{{"HTTP_BASE_URL", "https:///x/"}}, {"HTTP_BASE_URL"}},
      {{{"HTTP_BASE_URL", "http:////x"}}, {"HTTP_BASE_URL"}},
      {{{"HTTP_BASE_URL", "http:///"}}, {"HTTP_BASE_URL"}},
      {{{"MQTT_CA_FILE", missing}}, {"MQTT_CA_FILE"}},
      {{{"MQTT_CERT_FILE", missing}, {"MQTT_KEY_FILE", readable.path()}}, {"MQTT_CERT_FILE"}},
      {{{"MQTT_CERT_FILE", readable.path()}, {"MQTT_KEY_FILE", missing}}, {"MQTT_KEY_FILE"}},
      {{{"HTTP_BASE_URL", "https://dev.local/"}, {"HTTP_CA_FILE", missing}}, {"HTTP_CA_FILE"}},
      {{{"MQTT_TLS", "off"}, {"MQTT_CA_FILE", readable.path()}}, {"MQTT_TLS", "MQTT_CA_FILE"}},
      {{{"MQTT_TLS", "off"},
        {"MQTT_CERT_FILE", readable.path()},
        {"MQTT_KEY_FILE", readable.path()}},
       {"MQTT_TLS", "MQTT_CERT_FILE", "MQTT_KEY_FILE"}},
      {{{"MQTT_TOPIC_ID", ""}}, {"MQTT_TOPIC_ID"}},
      {{{"MQTT_TOPIC_ID", "///"}}, {"MQTT_TOPIC_ID"}},
      {{{"MQTT_TOPIC_ID", "a+b"}}, {"MQTT_TOPIC_ID"}},
      {{{"MQTT_TOPIC_ID", "+"}}, {"MQTT_TOPIC_ID"}},
      {{{"MQTT_TOPIC_ID", "dev/#"}}, {"MQTT_TOPIC_ID"}},
      {{{"MQTT_TOPIC_ID", std::string("a\0b", 3)}}, {"MQTT_TOPIC_ID"}},
      {{{"MQTT_TOPIC_START", ""}}, {"MQTT_TOPIC_START"}},
      {{{"MQTT_TOPIC_START", "//"}}, {"MQTT_TOPIC_START"}},
      {{{"MQTT_TOPIC_START", "app/+/v1"}}, {"MQTT_TOPIC_START"}},
      {{{"MQTT_TOPIC_START", "#"}}, {"MQTT_TOPIC_START"}},
      {{{"MQTT_TOPIC_START", std::string("v1\0", 3)}}, {"MQTT_TOPIC_START"}},
  };
  for (const auto& c : cases) {
    std::string trace;
    for (const auto& [k, v] : c.vars) trace += k + "=\"" + v + "\" ";
    SCOPED_TRACE(trace);
    const std::string error = config_error(c.vars);
    if (error == "<no error>") {
      ADD_FAILURE() << "accepted, expected a ConfigError";
      continue;
    }
    EXPECT_EQ(error.rfind("<not a ConfigError", 0), std::string::npos) << error;
    bool named = false;
    for (const auto& name : c.names) named = named || error.find(name) != std::string::npos;
    EXPECT_TRUE(named) << "what() does not name the variable: " << error;
    EXPECT_EQ(error.find('\n'), std::string::npos) << "one line: " << error;
  }
}

TEST(ConfigErrors, BaseUrlWithoutHostNamesValueAndWhatIsAccepted) {
  // curl alone reads "http:///x" as the host "x".
  const std::string error = config_error({{"HTTP_BASE_URL", "http:///x"}});
  EXPECT_NE(error.find("HTTP_BASE_URL='http:///x'"), std::string::npos) << error;
  EXPECT_NE(error.find("with a host"), std::string::npos) << error;
}

TEST(ConfigBaseUrlCredentials, CountAsHttpUserAndPassAndLeaveTheUrl) {
  struct Case {
    std::string in, url, user;
    std::optional<std::string> password;
    std::string shown;
  };
  const std::vector<Case> cases = {
      {"http://alice:s3cret@127.0.0.1:8080/api", "http://127.0.0.1:8080/api/", "alice", "s3cret",
       "http://alice:***@127.0.0.1:8080/api/"},
      {"https://bob:p%40ss%3Aw%2Fd@dev.local/", "https://dev.local/", "bob", "p@ss:w/d",
       "https://bob:***@dev.local/"},
      {"http://us%20er:x@h/", "http://h/", "us er", "x", "http://us%20er:***@h/"},
      {"http://carol@h/", "http://h/", "carol", std::nullopt, "http://carol@h/"},
      {"http://:only-pass@h/", "http://h/", "", "only-pass", "http://:***@h/"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE("HTTP_BASE_URL=" + c.in);
    const Config config = load_config(fake_env({{"HTTP_BASE_URL", c.in}}));
    EXPECT_EQ(config.http.base_url, c.url);
    EXPECT_EQ(config.http.user, std::optional<std::string>(c.user));
    EXPECT_EQ(config.http.password, c.password);
    EXPECT_TRUE(config.http.credentials_in_url);
    EXPECT_EQ(hom::display_base_url(config.http), c.shown);
  }
  const Config plain = load_config(fake_env({{"HTTP_BASE_URL", "http://h/"}}));
  EXPECT_FALSE(plain.http.credentials_in_url);
  EXPECT_EQ(hom::display_base_url(plain.http), "http://h/");
}

TEST(ConfigBaseUrlCredentials, TogetherWithHttpUserOrPassIsAnError) {
  TempFile pass("file-pass\n");
  for (const Vars& extra : std::vector<Vars>{{{"HTTP_USER", "admin"}},
                                             {{"HTTP_PASS", "other"}},
                                             {{"HTTP_PASS_FILE", pass.path()}},
                                             {{"HTTP_USER", "admin"}, {"HTTP_PASS", "other"}}}) {
    Vars vars = extra;
    vars["HTTP_BASE_URL"] = "http://alice:s3cret-pw@h/";
    const std::string error = config_error(vars);
    SCOPED_TRACE(error);
    EXPECT_NE(error.find("HTTP_BASE_URL"), std::string::npos);
    EXPECT_TRUE(error.find("HTTP_USER") != std::string::npos ||
                error.find("HTTP_PASS") != std::string::npos);
    EXPECT_EQ(error.find("s3cret-pw"), std::string::npos) << "the password leaked";
    EXPECT_NE(error.find("alice:***@h"), std::string::npos);
  }
}

TEST(ConfigBaseUrlCredentials, ErrorsNeverShowThePassword) {
  for (const std::string url :
       {"ftp://alice:s3cret-pw@h/", "http://alice:s3cret-pw@h/?q=1", "http://alice:s3cret-pw@/x",
        "http://alice:s3cret/pw@h/", "http://alice:s3cret-pw@h/#f"}) {
    const std::string error = config_error({{"HTTP_BASE_URL", url}});
    SCOPED_TRACE(url + " -> " + error);
    EXPECT_NE(error.find("HTTP_BASE_URL"), std::string::npos);
    EXPECT_EQ(error.find("s3cret"), std::string::npos) << "the password leaked";
  }
}

TEST(ConfigBaseUrlCredentials, MaskUrlPassword) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"http://u:p@h/", "http://u:***@h/"},
      {"http://u@h/", "http://u@h/"},
      {"http://h:80/a@b", "http://h:***@b"},  // too much rather than too little
      {"http://h/", "http://h/"},
      {"not a url", "not a url"},
      {"http://u:p/q@h/x?y=@", "http://u:***@h/x?y=@"},
      {"http://u:p@h?x", "http://u:***@h?x"},
  };
  for (const auto& [in, out] : cases) EXPECT_EQ(hom::mask_url_password(in), out) << in;
}

TEST(ConfigDescribe, BaseUrlCredentialsAreMasked) {
  const auto lines = hom::describe(
      load_config(fake_env({{"HTTP_BASE_URL", "http://alice:s3cret-pw@127.0.0.1:8080/"}})));
  for (const auto& [name, value] : lines)
    EXPECT_EQ(value.find("s3cret-pw"), std::string::npos) << name << "=" << value;
  EXPECT_EQ(find(lines, "HTTP_BASE_URL"),
            std::optional<std::string>("http://alice:***@127.0.0.1:8080/"));
  EXPECT_EQ(find(lines, "HTTP_USER"), std::optional<std::string>("alice (from HTTP_BASE_URL)"));
  EXPECT_EQ(find(lines, "HTTP_PASS"), std::optional<std::string>("*** (from HTTP_BASE_URL)"));
}

TEST(ConfigValues, MaxHeaderBytes) {
  EXPECT_EQ(load_config(fake_env({})).http.max_header_bytes, 65536u);
  EXPECT_EQ(load_config(fake_env({{"HTTP_MAX_HEADER_BYTES", "100"}})).http.max_header_bytes, 100u);
  for (const std::string bad : {"-1", "lots", "1e3"}) {
    const std::string error = config_error({{"HTTP_MAX_HEADER_BYTES", bad}});
    EXPECT_NE(error.find("HTTP_MAX_HEADER_BYTES='" + bad + "'"), std::string::npos) << error;
  }
  EXPECT_EQ(find(hom::describe(load_config(fake_env({}))), "HTTP_MAX_HEADER_BYTES"),
            std::optional<std::string>("65536"));
}

TEST(ConfigProxy, ProxyVariablesAreRemovedFromTheEnvironment) {
  ::setenv("http_proxy", "http://127.0.0.1:9", 1);
  ::setenv("HTTPS_PROXY", "http://127.0.0.1:9", 1);
  ::setenv("ALL_PROXY", "socks5://127.0.0.1:9", 1);
  ::setenv("no_proxy", "", 1);  // set, though empty
  ::unsetenv("https_proxy");
  const auto ignored = hom::ignore_proxy_environment();
  EXPECT_EQ(ignored,
            (std::vector<std::string>{"http_proxy", "HTTPS_PROXY", "ALL_PROXY", "no_proxy"}));
  for (const char* name : {"http_proxy", "HTTPS_PROXY", "ALL_PROXY", "no_proxy"})
    EXPECT_EQ(std::getenv(name), nullptr) << name;
  EXPECT_TRUE(hom::ignore_proxy_environment().empty());
}

TEST(ConfigDescribe, SecretsAreStarredAndFilesShowTheirPath) {
  TempFile http_pass("file-secret-42\n");
  const Config c = load_config(fake_env({{"MQTT_USER", "dev"},
                                         {"MQTT_PASS", "topsecret-17"},
                                         {"HTTP_USER", "admin"},
                                         {"HTTP_PASS_FILE", http_pass.path()}}));
  const auto lines = hom::describe(c);
  ASSERT_FALSE(lines.empty());
  for (const auto& [name, value] : lines) {
    EXPECT_EQ(value.find("topsecret-17"), std::string::npos) << name << "=" << value;
    EXPECT_EQ(value.find("file-secret-42"), std::string::npos) << name << "=" << value;
  }
  EXPECT_EQ(find(lines, "MQTT_PASS"), std::optional<std::string>("***"));
  EXPECT_EQ(find(lines, "HTTP_PASS_FILE"), std::optional<std::string>(http_pass.path()));
  EXPECT_EQ(find(lines, "MQTT_USER"), std::optional<std::string>("dev"));
  EXPECT_EQ(find(lines, "HTTP_USER"), std::optional<std::string>("admin"));
}

TEST(ConfigDescribe, DefaultsAreIncluded) {
  const auto lines = hom::describe(load_config(fake_env({})));
  EXPECT_EQ(find(lines, "MQTT_HOST"), std::optional<std::string>("localhost"));
  EXPECT_EQ(find(lines, "MQTT_PORT"), std::optional<std::string>("8883"));
  EXPECT_EQ(find(lines, "MQTT_TOPIC_ID"), std::optional<std::string>("itsme"));
  EXPECT_EQ(find(lines, "MQTT_TOPIC_START"), std::optional<std::string>("v1"));
  EXPECT_EQ(find(lines, "HTTP_BASE_URL"), std::optional<std::string>("http://localhost/"));
  EXPECT_EQ(find(lines, "WORKERS"), std::optional<std::string>("4"));
  EXPECT_EQ(find(lines, "QUEUE_MAX"), std::optional<std::string>("1024"));
  EXPECT_EQ(find(lines, "HTTP_TIMEOUT_MS"), std::optional<std::string>("30000"));
  EXPECT_EQ(find(lines, "LOG_LEVEL"), std::optional<std::string>("info"));
  EXPECT_EQ(find(lines, "MQTT_CLIENT_ID"), std::optional<std::string>("homd-itsme"));
  // No password configured: nothing to star, and certainly no invented value.
  const auto pass = find(lines, "MQTT_PASS");
  EXPECT_TRUE(!pass || pass->empty() || *pass == "***") << *pass;
}

}  // namespace

// End to end (SPEC §8): HOM_E2E and the files it needs, checked at start-up.
TEST(E2eConfig, OffByDefaultAndShownByCheckConfig) {
  const Config c = load_config(fake_env({}));
  EXPECT_EQ(c.e2e.mode, hom::E2eMode::kOff);
  EXPECT_EQ(c.e2e.skew_s, 300);
  const auto lines = hom::describe(c);
  EXPECT_EQ(find(lines, "HOM_E2E"), "off");
  EXPECT_EQ(find(lines, "HOM_E2E_SKEW_S"), "300");
}

TEST(E2eConfig, RequireNeedsKeysAndAStateDirectory) {
  TempFile key("key"), keys("keys");
  const std::string dir = std::filesystem::temp_directory_path();
  EXPECT_NE(config_error({{"HOM_E2E", "sometimes"}}).find("expected off, accept or require"),
            std::string::npos);
  EXPECT_NE(config_error({{"HOM_E2E", "require"}}).find("needs HOM_DEVICE_KEY_FILE"),
            std::string::npos);
  EXPECT_NE(config_error({{"HOM_E2E", "require"}, {"HOM_DEVICE_KEY_FILE", key.path()}})
                .find("needs HOM_AUTHORIZED_KEYS_FILE"),
            std::string::npos);
  EXPECT_NE(config_error({{"HOM_E2E", "require"},
                          {"HOM_DEVICE_KEY_FILE", key.path()},
                          {"HOM_AUTHORIZED_KEYS_FILE", keys.path()}})
                .find("needs HOM_STATE_DIR or systemd's StateDirectory="),
            std::string::npos);
  EXPECT_NE(config_error({{"HOM_E2E", "accept"},
                          {"HOM_DEVICE_KEY_FILE", key.path()},
                          {"HOM_AUTHORIZED_KEYS_FILE", keys.path()},
                          {"HOM_STATE_DIR", missing_path()}})
                .find("expected a writable directory"),
            std::string::npos);
  EXPECT_NE(config_error({{"HOM_DEVICE_KEY_FILE", missing_path()}}).find("HOM_DEVICE_KEY_FILE"),
            std::string::npos);
  // systemd's $STATE_DIRECTORY (its first entry) is the default.
  const Config c = load_config(fake_env({{"HOM_E2E", "require"},
                                         {"HOM_DEVICE_KEY_FILE", key.path()},
                                         {"HOM_AUTHORIZED_KEYS_FILE", keys.path()},
                                         {"STATE_DIRECTORY", dir + ":/elsewhere"},
                                         {"HOM_E2E_SKEW_S", "60"}}));
  EXPECT_EQ(c.e2e.mode, hom::E2eMode::kRequire);
  EXPECT_EQ(c.e2e.state_dir, dir);
  EXPECT_EQ(c.e2e.skew_s, 60);
}
