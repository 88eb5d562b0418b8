// hom: "curl over MQTT" — calls a device's local HTTP API through homd.
#include <algorithm>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include "hom/cli_request.hpp"
#include "hom/config.hpp"
#include "hom/requester.hpp"

namespace {

constexpr const char* kExamples = R"(
Examples:
  hom get itsme gps/latitude
  hom post itsme food/dessert -d '{"name":"tiramisu"}'
  hom get itsme search -G q=pizza -G page=2 -H 'Accept: application/json'
  hom put itsme firmware --data-binary @fw.bin --timeout 2m
  hom get itsme camera/snapshot -o snapshot.jpg
  hom -i get itsme status
  hom devices

Broker and topics come from the same variables as homd (MQTT_HOST, MQTT_PORT, MQTT_USER,
MQTT_PASS, MQTT_TLS, MQTT_CA_FILE, MQTT_TOPIC_START, ...); the flags override them.
Exit status: 0 on 2xx/3xx, 22 on a status >= 400, 28 on timeout, 69 when the device is
offline, 7 when the broker cannot be reached, 2 on usage or configuration errors.
)";

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::invalid_argument("cannot read " + path);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string iso8601(std::int64_t unix_s) {
  const std::time_t t = static_cast<std::time_t>(unix_s);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

int fail(int code, const std::string& message) {
  std::cerr << "hom: " << message << "\n";
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  // Before any thread exists (unsetenv): the broker is reached directly, as homd does.
  const std::vector<std::string> ignored_proxy_vars = hom::ignore_proxy_environment();
  CLI::App app{"hom: call a device's local HTTP API over MQTT (through homd)", "hom"};
  app.footer(kExamples);
  app.set_version_flag("--version", std::string("hom ") + HOM_VERSION);

  // Broker options: each overrides the environment variable of the same meaning.
  std::map<std::string, std::string> overrides;
  const auto env_flag = [&](const std::string& flag, const std::string& var,
                            const std::string& help) {
    app.add_option_function<std::string>(
           flag, [&overrides, var](const std::string& v) { overrides[var] = v; }, help)
        ->group("Broker");
  };
  env_flag("--host", "MQTT_HOST", "broker host or URI (MQTT_HOST)");
  env_flag("--port", "MQTT_PORT", "broker port (MQTT_PORT)");
  env_flag("--user", "MQTT_USER", "broker user (MQTT_USER; password from MQTT_PASS[_FILE])");
  env_flag("--tls", "MQTT_TLS", "auto, on or off (MQTT_TLS)");
  env_flag("--ca-file", "MQTT_CA_FILE", "CA file for the broker (MQTT_CA_FILE)");
  env_flag("--cert", "MQTT_CERT_FILE", "client certificate (MQTT_CERT_FILE)");
  env_flag("--key", "MQTT_KEY_FILE", "client key (MQTT_KEY_FILE)");
  env_flag("--app", "MQTT_TOPIC_START", "application topic prefix (MQTT_TOPIC_START)");
  app.add_flag_callback(
         "--insecure", [&] { overrides["MQTT_TLS_INSECURE"] = "1"; },
         "do not verify the broker's certificate")
      ->group("Broker");

  std::string verb, device, path;
  hom::RequestOptions request;
  std::string data_binary, req_id, timeout_text = "30s", output;
  bool include = false, whole_json = false, verbose = false, wait_online = false;
  int qos = 2;
  app.add_option("VERB", verb, "HTTP method: get, post, put, patch, delete, head, options");
  app.add_option("DEVICE", device, "device id (MQTT_TOPIC_ID of its homd)");
  auto* path_opt =
      app.add_option("PATH", path, "path under the device's HTTP_BASE_URL (the root is /)");
  app.add_option("-d,--data", request.data, "body: JSON when it parses, else text; @FILE reads it");
  app.add_option("--data-raw", request.data_raw, "body sent as text, as it is");
  app.add_option("--data-binary", data_binary, "@FILE: body sent as bytes (body_base64)");
  app.add_option("-H,--header", request.headers, "request header 'Name: value' (repeatable)");
  app.add_option("-G,--param", request.params, "query parameter name=value (repeatable)");
  app.add_option("--req-id", req_id, "request id (default: random)");
  app.add_option("--timeout", timeout_text, "how long to wait: 500ms, 10s, 2m (default 30s)");
  app.add_option("--qos", qos, "QoS of the request (default 2)")->check(CLI::Range(0, 2));
  app.add_flag("-i,--include", include, "print the status line and response headers");
  app.add_flag("--json", whole_json, "print the whole reply document");
  app.add_option("-o,--output", output, "write the content to FILE (base64 decoded)");
  app.add_flag("-v,--verbose", verbose, "print topics and timings on stderr");
  app.add_flag("--wait-online", wait_online, "wait for an offline device instead of failing");

  auto* devices_cmd = app.add_subcommand("devices", "list the devices whose status is online");
  bool devices_json = false;
  std::string wait_text = "1s";
  std::vector<std::string> device_ids;
  devices_cmd->add_option("DEVICE", device_ids,
                          "only these devices, from their exact status topics (needed on brokers "
                          "such as RabbitMQ that do not deliver retained messages to wildcards)");
  devices_cmd->add_flag("--json", devices_json, "print a JSON array");
  devices_cmd->add_option("--wait", wait_text, "how long to collect statuses (default 1s)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return hom::exit_code::kUsage;
  }

  // The session's log lines go to stderr: with -v as "* " trace lines, else only errors.
  auto logger = spdlog::stderr_logger_st("hom");
  logger->set_pattern(verbose ? "* %v" : "hom: %v");
  logger->set_level(verbose ? spdlog::level::info : spdlog::level::err);
  spdlog::set_default_logger(logger);

  const hom::Env base_env = hom::process_env();
  const hom::Env env = [&](const std::string& name) -> std::optional<std::string> {
    if (const auto it = overrides.find(name); it != overrides.end()) return it->second;
    return base_env(name);
  };
  hom::TopicConfig topics;
  hom::MqttConfig mqtt;
  try {
    topics = hom::load_topic_config(env);
    mqtt = hom::load_mqtt_config(env, topics);
  } catch (const hom::ConfigError& e) {
    return fail(hom::exit_code::kUsage, e.what());
  }

  if (devices_cmd->parsed()) {
    const auto wait = hom::parse_duration(wait_text);
    if (!wait) return fail(hom::exit_code::kUsage, "--wait '" + wait_text + "' is not a duration");
    try {
      hom::Requester requester(mqtt, topics.start);
      if (const auto error = requester.connect(std::chrono::seconds(10)))
        return fail(hom::exit_code::kBrokerUnreachable,
                    "cannot connect to the broker at " + mqtt.server_uri + ": " + error->reason);
      for (auto& id : device_ids) id = hom::trim_slashes(id);
      const auto devices =
          device_ids.empty() ? requester.devices(*wait) : requester.devices(device_ids, *wait);
      if (devices.empty() && device_ids.empty())
        std::cerr << "hom: no device status arrived within " << wait_text
                  << " (some brokers, such as RabbitMQ, do not deliver retained messages to a "
                     "wildcard subscription: name the devices, hom devices DEVICE...)\n";
      nlohmann::json list = nlohmann::json::array();
      for (const auto& d : devices) {
        if (!d.presence.online) continue;
        const std::string since = d.presence.since ? iso8601(*d.presence.since) : "";
        if (devices_json) {
          list.push_back(
              {{"id", d.id}, {"online", true}, {"version", d.presence.version}, {"since", since}});
        } else {
          std::cout << d.id << "\t" << d.presence.version << "\t" << since << "\n";
        }
      }
      if (devices_json) std::cout << list.dump() << "\n";
    } catch (const std::runtime_error& e) {
      return fail(hom::exit_code::kBrokerUnreachable, e.what());
    }
    return hom::exit_code::kOk;
  }

  if (verb.empty() || device.empty())
    return fail(hom::exit_code::kUsage, "usage: hom VERB DEVICE PATH (see hom --help)");
  // A forgotten PATH must not quietly call the root: the root is asked for as "/".
  if (path_opt->count() == 0)
    return fail(hom::exit_code::kUsage,
                "missing PATH: usage: hom VERB DEVICE PATH (the root is /; see hom --help)");
  if (verb.find_first_of("/+#") != std::string::npos)
    return fail(hom::exit_code::kUsage, "VERB '" + verb + "' must be one word");
  const std::string device_id = hom::trim_slashes(device);
  if (device_id.empty() || device_id.find_first_of("+#") != std::string::npos)
    return fail(hom::exit_code::kUsage, "DEVICE '" + device + "' is not a valid device id");
  if (!path.empty() && path.front() == '/') path.erase(0, 1);  // curl habit: /gps/latitude

  const auto timeout = hom::parse_duration(timeout_text);
  if (!timeout)
    return fail(hom::exit_code::kUsage, "--timeout '" + timeout_text + "' is not a duration");
  hom::RequestEnvelope request_envelope;
  try {
    if (request.data && !request.data->empty() && request.data->front() == '@')
      request.data = read_file(request.data->substr(1));
    if (!data_binary.empty()) {
      if (data_binary.front() != '@') throw std::invalid_argument("--data-binary takes @FILE");
      request.data_binary = read_file(data_binary.substr(1));
    }
    request.include_headers = include;
    hom::RequestEnvelope envelope = hom::build_request(request);
    if (!req_id.empty()) envelope.req_id = hom::RawJson::of(req_id);
    request_envelope = std::move(envelope);
  } catch (const std::invalid_argument& e) {
    return fail(hom::exit_code::kUsage, e.what());
  }

  const auto started = std::chrono::steady_clock::now();
  const auto elapsed_ms = [&] {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started)
        .count();
  };
  try {
    const auto connect_timeout =
        std::clamp(*timeout, std::chrono::milliseconds(1000), std::chrono::milliseconds(10000));
    hom::Requester requester(mqtt, topics.start);
    if (const auto error = requester.connect(connect_timeout))
      return fail(hom::exit_code::kBrokerUnreachable,
                  "cannot connect to the broker at " + mqtt.server_uri + ": " + error->reason);
    if (verbose) {
      for (const auto& name : ignored_proxy_vars) std::cerr << "* ignored " << name << "\n";
      std::cerr << "* connected to " << mqtt.server_uri << " (" << elapsed_ms() << " ms)\n";
      requester.set_trace([&](const std::string& line) {
        std::cerr << "* " << line << " (" << elapsed_ms() << " ms)\n";
      });
    }
    hom::Requester::Call call;
    call.device = device_id;
    call.verb = verb;
    call.path = path;
    call.request = std::move(request_envelope);
    call.qos = qos;
    call.timeout = *timeout;
    call.wait_online = wait_online;
    const auto result = requester.call(std::move(call));
    switch (result.outcome) {
      case hom::Requester::Outcome::kOffline:
        return fail(hom::exit_code::kOffline,
                    "device " + device_id + " is offline (use --wait-online to wait for it)");
      case hom::Requester::Outcome::kTimeout:
        return fail(hom::exit_code::kTimeout, "no reply from " + device_id + " within " +
                                                  timeout_text + " on " + result.response_topic);
      case hom::Requester::Outcome::kReply:
        break;
    }
    const std::string& text = result.payload;
    const hom::ReplyEnvelope& reply = result.reply;
    const int status = reply.status;
    if (whole_json) {
      std::cout << text << "\n";
    } else {
      if (include) std::cout << hom::status_and_headers(reply);
      if (!output.empty()) {
        std::ofstream f(output, std::ios::binary);
        if (!(f << reply.content)) return fail(hom::exit_code::kUsage, "cannot write " + output);
      } else {
        std::cout << reply.content;
        if (reply.content_kind == hom::ContentKind::kJson) std::cout << "\n";
      }
    }
    std::cout.flush();
    const int code = hom::exit_code_for_status(status);
    if (code != hom::exit_code::kOk) {
      const std::string reason = reply.error.empty() ? "returned by the device's API" : reply.error;
      std::cerr << "hom: " << status << ": " << reason << "\n";
    }
    if (verbose) std::cerr << "* status " << status << " after " << elapsed_ms() << " ms\n";
    return code;
  } catch (const std::runtime_error& e) {
    return fail(hom::exit_code::kBrokerUnreachable, e.what());
  }
}
