// homd: serves a device's local HTTP API to requests arriving over MQTT.
#include <systemd/sd-daemon.h>
#if defined(HOM_HAVE_MALLOC_TRIM) || defined(HOM_HAVE_M_ARENA_MAX)
#include <malloc.h>  // glibc's allocator tuning; CMakeLists.txt checks for each call
#endif

#include <csignal>
#include <cstdlib>
#include <iostream>
#include <thread>

#include <spdlog/spdlog.h>

#include "hom/config.hpp"
#include "hom/daemon.hpp"
#include "hom/device.hpp"
#include "hom/e2e_device.hpp"
#include "hom/http_client.hpp"

namespace {

constexpr const char* kUsage = R"(Usage: homd [--check-config | --help | --version]

Serves the local HTTP API at HTTP_BASE_URL to requests published on
{MQTT_TOPIC_START}/req/{MQTT_TOPIC_ID}/{verb}/{path} and answers on the mirrored
{MQTT_TOPIC_START}/res/{MQTT_TOPIC_ID}/... topic. Configured by environment variables
(MQTT_HOST, MQTT_PORT, MQTT_USER, MQTT_PASS, MQTT_TOPIC_ID, MQTT_TOPIC_START,
HTTP_BASE_URL, HTTP_USER, HTTP_PASS, MQTT_TLS, MQTT_CA_FILE, WORKERS, LOG_LEVEL, ...);
see the README for all of them.

  --check-config  validate the configuration, print it (secrets as ***) and exit
  --help          show this help
  --version       show the version
)";

}  // namespace

int main(int argc, char** argv) {
  // Before any thread exists (unsetenv); logged once logging is set up.
  const std::vector<std::string> ignored_proxy_vars = hom::ignore_proxy_environment();
  bool check_only = false;
  if (const auto exit_now = hom::parse_daemon_args(argc, argv, "homd", kUsage, check_only))
    return *exit_now;

  hom::Config config;
  try {
    config = hom::load_config(hom::process_env());
  } catch (const hom::ConfigError& e) {
    std::cerr << "homd: " << e.what() << "\n";
    return 2;
  }
  if (check_only) {
    for (const auto& [name, value] : hom::describe(config))
      std::cout << name << "=" << value << "\n";
    return 0;
  }

  // A device daemon: two malloc arenas instead of one per thread (8 x cores) keep the
  // footprint small; the main loop hands freed memory back after bursts (malloc_trim).
#ifdef HOM_HAVE_M_ARENA_MAX
  mallopt(M_ARENA_MAX, 2);
#endif
  hom::setup_daemon_logging("homd", config.log_level);
  hom::block_stop_signals();  // before any thread starts
  hom::http_global_init();

  std::unique_ptr<hom::E2eDevice> e2e;
  if (config.e2e.mode != hom::E2eMode::kOff) {
    std::string error;
    e2e = hom::E2eDevice::create(config, error);
    if (!e2e) {
      spdlog::critical("{}", error);
      return 2;
    }
    spdlog::info("{}", e2e->describe());
  }
  hom::Device device(config, std::move(e2e));
  if (config.mqtt.tls && config.mqtt.tls_insecure)
    spdlog::warn("MQTT_TLS_INSECURE is set: the broker's certificate is NOT verified");
  spdlog::info("homd {} serving {} on {} ({} workers, queue {})", HOM_VERSION,
               hom::display_base_url(config.http), config.mqtt.server_uri, config.workers,
               config.queue_max);
  if (!ignored_proxy_vars.empty()) {
    std::string names;
    for (const auto& name : ignored_proxy_vars) names += (names.empty() ? "" : ", ") + name;
    spdlog::info("ignoring {}: the API and the broker are always reached directly", names);
  }

  std::atomic<bool> stop{false};
  std::thread signal_thread = hom::start_signal_thread(stop, [&device] { device.wake(); });

  // systemd: READY once configured and started, STATUS kept current, WATCHDOG from the main
  // loop only while the workers make progress.
  std::uint64_t watchdog_usec = 0;
  const bool watchdog = sd_watchdog_enabled(0, &watchdog_usec) > 0;
  auto last_ping = std::chrono::steady_clock::now();
  auto last_trim = last_ping;
  std::uint64_t answered_at_trim = 0;
  std::string last_status;
  const auto tick = [&] {
    const auto stats = device.bridge().stats();
    const std::string status =
        std::string(device.connected() ? "connected to " : "connecting to ") +
        config.mqtt.server_uri + "; " + std::to_string(stats.answered) + " requests answered, " +
        std::to_string(stats.bridge_errors) + " bridge errors";
    if (status != last_status) {
      sd_notifyf(0, "STATUS=%s", status.c_str());
      last_status = status;
    }
    const auto now = std::chrono::steady_clock::now();
    if (now - last_trim >= std::chrono::seconds(10) && stats.answered != answered_at_trim) {
#ifdef HOM_HAVE_MALLOC_TRIM
      malloc_trim(0);  // after a burst, give the pages back instead of keeping the peak
#endif
      last_trim = now;
      answered_at_trim = stats.answered;
    }
    if (watchdog && now - last_ping >= std::chrono::microseconds(watchdog_usec / 4) &&
        !device.bridge().stalled()) {
      sd_notify(0, "WATCHDOG=1");
      last_ping = now;
    }
  };
  sd_notify(0, "READY=1");
  tick();
  device.run(stop, tick);

  sd_notify(0, "STOPPING=1");
  device.stop();
  const auto stats = device.bridge().stats();
  spdlog::info("stopped after {} requests ({} bridge errors)", stats.received, stats.bridge_errors);
  hom::join_signal_thread(signal_thread);
  return 0;
}
