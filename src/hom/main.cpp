// hom: "curl over MQTT" — calls a device's local HTTP API through homd.
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include "hom/cli_request.hpp"
#include "hom/config.hpp"
#include "hom/e2e_requester.hpp"
#include "hom/requester.hpp"

namespace {

constexpr const char* kExamples = R"(
Examples:
  hom get itsme gps/latitude
  hom post itsme food/dessert -d '{"name":"tiramisu"}'
  hom get itsme search -G q=pizza -G page=2 -H 'Accept: application/json'
  hom put itsme firmware --data-binary @fw.bin --timeout 2m
  hom get itsme camera/snapshot -o snapshot.jpg
  hom get itsme logs/follow --stream
  hom -i get itsme status
  hom devices

Broker and topics come from the same variables as homd (MQTT_HOST, MQTT_PORT, MQTT_USER,
MQTT_PASS, MQTT_TLS, MQTT_CA_FILE, MQTT_TOPIC_START, ...); the flags override them.
Exit status: 0 on 2xx/3xx, 22 on a status >= 400, 28 on timeout, 69 when the device is
offline, 7 when the broker cannot be reached, 18 when a streamed body fails its length or
checksum check or breaks off, 60 when a sealed call's reply is not authentic (in clear,
forged, for another requester or request), 2 on usage or configuration errors.

End to end (--identity): the request is signed with the identity, sealed to the device's key
from the known devices file (lines "device-id ssh-ed25519 AAAA..."), published on
{start}/req/{device}/@sealed, and only a reply signed by the device and sealed to the
identity is taken.
)";

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::invalid_argument("cannot read " + path);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Larger --data-binary files are streamed (protocol 1.1): in base64 inside the request they
// would not fit the smallest broker limits people run into (AWS IoT Core: 128 KB).
constexpr std::uintmax_t kInlineUploadMax = 64 * 1024;

// A progress line on stderr, when it is a terminal: at most five updates a second.
class Progress {
 public:
  explicit Progress(bool enabled) : enabled_(enabled) {}
  ~Progress() { done(); }
  void set_total(std::optional<std::uint64_t> total) { total_ = total; }
  void add(std::uint64_t bytes) {
    bytes_ += bytes;
    if (!enabled_) return;
    const auto now = std::chrono::steady_clock::now();
    if (now - shown_ < std::chrono::milliseconds(200)) return;
    shown_ = now;
    show();
  }
  void done() {
    if (!enabled_ || !shown_once_) return;
    show();
    std::cerr << "\n";
    enabled_ = false;
  }

 private:
  static std::string mib(std::uint64_t bytes) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
    return buf;
  }
  void show() {
    shown_once_ = true;
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
    std::string line = "\r  " + mib(bytes_);
    if (total_ && *total_ > 0) {
      line += " / " + mib(*total_) + " (" + std::to_string(bytes_ * 100 / *total_) + " %)";
    }
    if (s > 0)
      line += "  " + mib(static_cast<std::uint64_t>(static_cast<double>(bytes_) / s)) + "/s";
    std::cerr << line << "   " << std::flush;
  }

  bool enabled_;
  bool shown_once_ = false;
  std::uint64_t bytes_ = 0;
  std::optional<std::uint64_t> total_;
  const std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point shown_{};
};

std::optional<std::uint64_t> content_length(const hom::HeaderList& headers) {
  for (const auto& [name, value] : headers) {
    if (name.size() != 14) continue;
    std::string lower = name;
    std::transform(lower.begin(), lower.end(), lower.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (lower != "content-length") continue;
    try {
      return std::stoull(value);
    } catch (const std::exception&) {
      return std::nullopt;
    }
  }
  return std::nullopt;
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
  app.add_option("-o,--output", output,
                 "write the content to FILE (streamed: any size; replaced only when complete)");
  bool stream = false, silent = false;
  app.add_flag("-N,--stream", stream, "print the body as it arrives (streamed, protocol 1.1)");
  app.add_flag("-s,--silent", silent, "no progress bar");
  app.add_flag("-v,--verbose", verbose, "print topics and timings on stderr");
  app.add_flag("--wait-online", wait_online, "wait for an offline device instead of failing");
  std::string identity, known_devices;
  app.add_option("--identity", identity,
                 "sign and seal end to end with this OpenSSH Ed25519 key (HOM_IDENTITY_FILE)")
      ->group("End to end");
  app.add_option("--known-devices", known_devices,
                 "the devices' public keys (HOM_KNOWN_DEVICES_FILE, default "
                 "~/.config/hom/known_devices)")
      ->group("End to end");

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
  if (identity.empty()) identity = env("HOM_IDENTITY_FILE").value_or("");
  hom::RequestEnvelope request_envelope;
  std::string upload_path;
  std::uint64_t upload_size = 0;
  try {
    if (request.data && !request.data->empty() && request.data->front() == '@')
      request.data = read_file(request.data->substr(1));
    if (!data_binary.empty()) {
      if (data_binary.front() != '@') throw std::invalid_argument("--data-binary takes @FILE");
      upload_path = data_binary.substr(1);
      std::error_code ec;
      const auto size = std::filesystem::file_size(upload_path, ec);
      if (ec) throw std::invalid_argument("cannot read " + upload_path + ": " + ec.message());
      upload_size = size;
      // Small bodies go in the request itself (any homd takes them); larger ones stream,
      // unless sealed: a sealed request carries its body.
      if ((size <= kInlineUploadMax && !stream) || !identity.empty()) {
        request.data_binary = read_file(upload_path);
        upload_path.clear();
      }
    }
    request.include_headers = include;
    hom::RequestEnvelope envelope = hom::build_request(request);
    if (!req_id.empty()) envelope.req_id = hom::RawJson::of(req_id);
    request_envelope = std::move(envelope);
  } catch (const std::invalid_argument& e) {
    return fail(hom::exit_code::kUsage, e.what());
  }

  std::shared_ptr<hom::E2eRequester> sealer;
  if (!identity.empty()) {
    if (known_devices.empty()) known_devices = env("HOM_KNOWN_DEVICES_FILE").value_or("");
    if (known_devices.empty()) {
      const auto home = env("HOME");
      if (!home) return fail(hom::exit_code::kUsage, "--known-devices is needed (HOME is unset)");
      known_devices = *home + "/.config/hom/known_devices";
    }
    std::string error;
    sealer = hom::E2eRequester::load(identity, known_devices, error);
    if (!sealer) return fail(hom::exit_code::kUsage, error);
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
    call.sealer = sealer;

    // Streamed (protocol 1.1) with -o, --stream or a large upload: the body goes to its file
    // or stdout as it arrives, so memory stays flat whatever its size. A file is written
    // beside its final name and renamed only once length and SHA-256 have been checked.
    // Sealed, the chunks are one age file whose header the signed head names: each piece
    // is authenticated before it is written, the whole at its end.
    const bool streamed = !whole_json && (!output.empty() || stream || !upload_path.empty());
    Progress progress(!silent && !verbose && isatty(STDERR_FILENO) && !output.empty());
    std::FILE* sink = nullptr;
    const std::string partial = output.empty() ? "" : output + ".part";
    std::ifstream upload;
    bool write_failed = false;
    if (streamed) {
      if (!partial.empty()) {
        sink = std::fopen(partial.c_str(), "wb");
        if (!sink) return fail(hom::exit_code::kUsage, "cannot write " + partial);
      }
      hom::Requester::Call::Stream s;
      s.on_head = [&](const hom::ReplyEnvelope& head) {
        if (include) std::cout << hom::status_and_headers(head) << std::flush;
        progress.set_total(content_length(head.headers));
      };
      s.on_data = [&](std::string data, std::function<void()> consumed) {
        std::FILE* out = sink ? sink : stdout;
        if (std::fwrite(data.data(), 1, data.size(), out) != data.size()) write_failed = true;
        if (!sink) std::fflush(stdout);
        progress.add(data.size());
        consumed();
      };
      if (!upload_path.empty()) {
        upload.open(upload_path, std::ios::binary);
        if (!upload) return fail(hom::exit_code::kUsage, "cannot read " + upload_path);
        s.upload_length = upload_size;
        s.next_upload = [&](std::size_t max, hom::Requester::Call::Stream::Give give) {
          std::string piece(max, '\0');
          upload.read(piece.data(), static_cast<std::streamsize>(max));
          piece.resize(static_cast<std::size_t>(upload.gcount()));
          give(std::move(piece), upload.peek() == std::char_traits<char>::eof(), {});
        };
      }
      call.request.include_headers = true;  // Content-Length for the progress bar
      call.request.raw = true;              // the body's bytes as the API sent them
      call.stream = std::move(s);
    }
    const auto discard = [&] {
      if (sink) std::fclose(sink), sink = nullptr;
      if (!partial.empty()) std::remove(partial.c_str());
    };
    const auto result = requester.call(std::move(call));
    progress.done();
    switch (result.outcome) {
      case hom::Requester::Outcome::kOffline:
        discard();
        return fail(hom::exit_code::kOffline,
                    "device " + device_id + " is offline (use --wait-online to wait for it)");
      case hom::Requester::Outcome::kTimeout:
        discard();
        if (!result.error.empty()) return fail(hom::exit_code::kPartial, result.error);
        return fail(hom::exit_code::kTimeout, "no reply from " + device_id + " within " +
                                                  timeout_text + " on " + result.response_topic);
      case hom::Requester::Outcome::kStreamError:
        discard();
        return fail(hom::exit_code::kPartial, "the streamed body is incomplete: " + result.error);
      case hom::Requester::Outcome::kUnverified:
        discard();
        return fail(hom::exit_code::kUnverified, result.error);
      case hom::Requester::Outcome::kTooLarge:
        discard();
        return fail(hom::exit_code::kUsage,
                    result.error + " (a file given as --data-binary @FILE is streamed)");
      case hom::Requester::Outcome::kReply:
        break;
    }
    const std::string& text = result.payload;
    const hom::ReplyEnvelope& reply = result.reply;
    const int status = reply.status;
    if (whole_json) {
      std::cout << text << "\n";
    } else if (reply.stream) {
      // Already written as it arrived.
      if (sink) {
        if (std::fclose(sink) != 0) write_failed = true;
        sink = nullptr;
        if (write_failed || std::rename(partial.c_str(), output.c_str()) != 0) {
          discard();
          return fail(hom::exit_code::kUsage, "cannot write " + output);
        }
      }
      if (write_failed) return fail(hom::exit_code::kUsage, "cannot write the body");
      if (verbose)
        std::cerr << "* " << result.stream_bytes << " bytes streamed, "
                  << (sealer ? "sealed end to end and authenticated\n"
                             : "length and SHA-256 checked\n");
    } else {
      if (include) std::cout << hom::status_and_headers(reply);
      if (!output.empty()) {
        if (sink) std::fclose(sink), sink = nullptr;
        std::ofstream f(partial, std::ios::binary);
        if (!(f << reply.content) || !f.flush() ||
            std::rename(partial.c_str(), output.c_str()) != 0) {
          discard();
          return fail(hom::exit_code::kUsage, "cannot write " + output);
        }
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
