// hom-gateway: plain HTTP in, device out (SPEC §6).
#include <systemd/sd-daemon.h>

#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>

#include <spdlog/spdlog.h>

#include "hom/daemon.hpp"
#include "hom/e2e_requester.hpp"
#include "hom/gateway.hpp"
#include "hom/gateway_server.hpp"
#include "hom/requester.hpp"

namespace {

constexpr const char* kUsage = R"(Usage: hom-gateway [--check-config | --help | --version]

Serves HTTP on GATEWAY_LISTEN and turns each request into a request to a device over MQTT:
/{device}/{path} (GATEWAY_ROUTE=path) or {device}GATEWAY_HOST_SUFFIX (GATEWAY_ROUTE=host).
Configured by environment variables: the MQTT_* variables of homd, MQTT_TOPIC_START,
GATEWAY_LISTEN, GATEWAY_ROUTE, GATEWAY_HOST_SUFFIX, GATEWAY_TIMEOUT_MS,
GATEWAY_TOKENS_FILE (or GATEWAY_AUTH=none), GATEWAY_MAX_INFLIGHT, GATEWAY_MAX_BODY_BYTES,
GATEWAY_MAX_HEADER_BYTES, GATEWAY_MAX_CONNECTIONS, GATEWAY_REQUEST_TIMEOUT_MS,
GATEWAY_IDLE_TIMEOUT_MS, SHUTDOWN_GRACE_MS, LOG_LEVEL; see the README for all of them.

  --check-config  validate the configuration, print it (secrets as ***) and exit
  --help          show this help
  --version       show the version
)";

std::vector<hom::gateway::Token> load_tokens(const hom::gateway::GatewayConfig& config) {
  if (config.auth_none) return {};
  std::ifstream f(config.tokens_file, std::ios::binary);
  if (!f)
    throw hom::ConfigError("GATEWAY_TOKENS_FILE='" + config.tokens_file +
                           "' is invalid: expected a readable file");
  std::ostringstream ss;
  ss << f.rdbuf();
  return hom::gateway::parse_tokens(ss.str(), config.tokens_file);
}

}  // namespace

int main(int argc, char** argv) {
  // Before any thread exists (unsetenv): the broker is reached directly, never by a proxy.
  const std::vector<std::string> ignored_proxy_vars = hom::ignore_proxy_environment();
  bool check_only = false;
  if (const auto exit_now = hom::parse_daemon_args(argc, argv, "hom-gateway", kUsage, check_only))
    return *exit_now;

  hom::gateway::GatewayConfig config;
  std::vector<hom::gateway::Token> tokens;
  try {
    config = hom::gateway::load_gateway_config(hom::process_env());
    tokens = load_tokens(config);
    if (!config.identity_file.empty()) {
      std::string error;
      config.sealer =
          hom::E2eRequester::load(config.identity_file, config.known_devices_file, error);
      if (!config.sealer) throw hom::ConfigError(error);
    }
  } catch (const hom::ConfigError& e) {
    std::cerr << "hom-gateway: " << e.what() << "\n";
    return 2;
  }
  if (check_only) {
    for (const auto& [name, value] : hom::gateway::describe(config))
      std::cout << name << "=" << value << "\n";
    std::cout << "tokens=" << tokens.size() << "\n";
    return 0;
  }

  hom::setup_daemon_logging("hom-gateway", config.log_level);
  hom::block_stop_signals();  // before any thread starts
  for (const auto& name : ignored_proxy_vars) spdlog::info("ignoring {}: no proxy is used", name);
  if (config.auth_none)
    spdlog::warn("GATEWAY_AUTH=none: every client that reaches {} may call every device",
                 config.listen_host);

  auto requester = std::make_unique<hom::Requester>(config.mqtt, config.topics.start);
  hom::gateway::Server server(config, std::move(tokens), *requester);
  try {
    server.start();
  } catch (const std::exception& e) {
    spdlog::critical("{}", e.what());
    return 1;
  }
  spdlog::info("hom-gateway {} listening on {}:{}, devices under {} on {}", HOM_VERSION,
               config.listen_host, server.port(), config.topics.start, config.mqtt.server_uri);

  std::atomic<bool> stop{false};
  std::thread signal_thread =
      hom::start_signal_thread(stop, [&requester] { requester->session().wake(); });
  sd_notify(0, "READY=1");
  requester->session().run(stop);

  sd_notify(0, "STOPPING=1");
  // The signal thread's handler uses the requester: it is gone before the requester is.
  hom::join_signal_thread(signal_thread);
  server.drain(config.shutdown_grace);
  // Calls still waiting complete now (504), before the server is gone: its destructor then
  // runs their completions, so nothing is left holding a connection.
  requester.reset();
  spdlog::info("stopped");
  return 0;
}
