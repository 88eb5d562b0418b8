// Test support for the integration tests: temporary directories, child processes, a private
// Mosquitto, an in-process HTTP API (cpp-httplib), an MQTT test client (Paho) and a homd
// launcher. Everything listens on 127.0.0.1 only, on ports chosen at run time.
//
// Waiting is always "poll or wait on a condition, with a deadline"; nothing here sleeps as a
// way to synchronise. Unless a class says otherwise it is meant to be used from the test's
// own thread only.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <mqtt/async_client.h>
#include <nlohmann/json.hpp>

namespace httplib {
class Server;
}

namespace hom::test {

using Clock = std::chrono::steady_clock;
using Env = std::map<std::string, std::string>;
using Json = nlohmann::json;

// Generous on purpose: a loaded 2-core CI machine runs brokers, daemons and tests at once.
inline constexpr std::chrono::milliseconds kDefaultWait{20000};

inline Clock::time_point deadline_in(std::chrono::milliseconds d = kDefaultWait) {
  return Clock::now() + d;
}

// A name unique in this run and across concurrent runs: the current test's name, the PID
// and a counter, with characters outside [A-Za-z0-9_-] turned into '-'.
std::string unique_name(std::string_view prefix = "");

// Standard base64 (with padding), written here so that tests do not trust homd's own codec.
std::string base64_encode(std::string_view bytes);

// /blob's bytes: byte i is i % 251. And the SHA-256 (hex) of its first `size` bytes.
std::string pattern_bytes(std::uint64_t offset, std::size_t length);
std::string pattern_sha256(std::uint64_t size);

// The last `lines` lines of `text`, for failure messages.
std::string tail(const std::string& text, std::size_t lines = 60);

// A directory made with mkdtemp, removed recursively on destruction (kept when the
// environment variable HOM_TEST_KEEP is set, to debug a failure).
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string file(std::string_view name) const { return path_ + "/" + std::string(name); }
  void write(std::string_view name, std::string_view contents) const;

 private:
  std::string path_;
};

// A child's environment as "NAME=value" strings: `env`, plus the sanitizer options of the
// test process when it has them (and `env` does not).
std::vector<std::string> child_environment(const Env& env);
// argv/envp for exec: pointers into `strings`, null-terminated.
std::vector<char*> exec_vector(std::vector<std::string>& strings);

// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, read, closed).
int free_port();

// True when a TCP connection to 127.0.0.1:port succeeds right now.
bool port_accepts(int port);

// A child process started with fork/exec and exactly the given environment (plus the
// sanitizer options of the test process, when set). Its stdout and stderr go to a log
// file. It is killed (SIGKILL) if the test process dies, and stop()ped on destruction.
// Signals are only ever sent to pid(), never by name.
class Process {
 public:
  // argv[0] must be an absolute path. The log file is created (truncated).
  Process(std::vector<std::string> argv, const Env& env, std::string log_path);
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  const std::string& log_path() const { return log_path_; }

  // Reaps the child without blocking; false once it has exited.
  bool running();

  // The exit status once the child has exited within the deadline: the exit code, or 128 +
  // the signal number when it was killed by a signal.
  std::optional<int> wait_exit(Clock::time_point deadline);

  // SIGTERM, wait up to `grace`, then SIGKILL. Returns the exit status (see wait_exit).
  std::optional<int> stop(std::chrono::milliseconds grace = std::chrono::seconds(15));

  // SIGKILL and reap.
  void kill9();

  std::string log() const;
  int count_in_log(std::string_view needle) const;
  // Number of log lines containing every one of `parts`.
  int count_lines_with(const std::vector<std::string>& parts) const;

  // Polls the log until `needle` occurs at least `count` times. False on the deadline, or as
  // soon as the process has exited without it.
  bool wait_for_log(std::string_view needle, int count = 1,
                    Clock::time_point deadline = deadline_in());
  // Polls the log until at least `count` lines contain every one of `parts`.
  bool wait_for_log_line(const std::vector<std::string>& parts, int count = 1,
                         Clock::time_point deadline = deadline_in());

 private:
  template <typename Pred>
  bool wait_log(Pred done, Clock::time_point deadline);

  std::string log_path_;
  pid_t pid_ = -1;
  std::optional<int> status_;  // set once reaped
};

// Server files of a TLS listener.
struct TlsFiles {
  std::string ca_file;
  std::string cert_file;
  std::string key_file;
};

// A private Mosquitto: its own config and log in a TempDir, a plain listener on
// 127.0.0.1:port() and optionally a TLS listener on 127.0.0.1:tls_port().
class Mosquitto {
 public:
  struct Options {
    int port = 0;  // 0: pick a free port (and retry with another if the start fails)
    std::optional<TlsFiles> tls;
    bool start = true;  // false: only reserve the port(s); call start() later
    // Sessions and queued messages saved in the broker's TempDir on a clean stop and
    // loaded at the next start (restart() keeps them).
    bool persistence = false;
    // Extra lines for mosquitto.conf (global options such as "max_packet_size 131072").
    std::vector<std::string> extra_config;
  };

  Mosquitto() : Mosquitto(Options{}) {}
  explicit Mosquitto(Options options);
  ~Mosquitto();
  Mosquitto(const Mosquitto&) = delete;
  Mosquitto& operator=(const Mosquitto&) = delete;

  int port() const { return port_; }
  int tls_port() const { return tls_port_; }
  std::string uri() const { return "tcp://127.0.0.1:" + std::to_string(port_); }
  std::string tls_uri() const { return "ssl://127.0.0.1:" + std::to_string(tls_port_); }

  // Starts the broker and waits until its listeners accept connections. Throws when it
  // cannot (after a few fresh ports when the port was not fixed by the caller).
  void start();
  // SIGTERM by PID, waits for the exit.
  void stop();
  // stop() then start() on the same port(s).
  void restart();
  bool running() const { return process_ != nullptr; }
  std::string log() const;

 private:
  bool try_start();
  void write_config() const;

  Options options_;
  TempDir dir_;
  int port_ = 0;
  int tls_port_ = 0;
  int starts_ = 0;
  std::unique_ptr<Process> process_;
};

// One request as the API saw it.
struct SeenRequest {
  std::string method;
  std::string path;    // decoded path, without the query
  std::string target;  // the raw request target, query included
  std::multimap<std::string, std::string> params;
  std::multimap<std::string, std::string> headers;  // lower-case names
  std::string body;
};

// The local HTTP API that homd calls: a cpp-httplib server on its own thread, bound to
// 127.0.0.1. Thread-safe: the accessors may be called while requests are being served.
//
// Routes:
//   GET  /gps/latitude        {"latitude": 48.85}, application/json
//   POST /food/dessert        {"name": N} -> 201 "Dessert N created", text/plain
//   ANY  /echo/...            JSON: method, path, target, params (name -> [values]),
//                             headers (lower-case name -> value), body, body_base64
//   ANY  /status/<n>          status n
//   ANY  /slow[?ms=N]         blocks until release_slow() or N ms (default 60 s)
//   GET  /binary              bytes 0..255, application/octet-stream
//   GET  /latin1              "caf\xE9" (not UTF-8), text/plain
//   GET  /empty               200, empty body
//   GET  /text                "hello", text/plain
//   GET  /redirect            302, Location: /text
//   GET  /cookies             two Set-Cookie and two X-Multi header fields, "ok"
//   GET  /big?bytes=N         N bytes of 'x', text/plain
//   GET  /not-json            "{not json", application/json
//   GET  /odd-json            { "a" :1 } (spacing kept), application/json
//   ANY  /no-content          204, X-Done: yes
//   GET  /not-modified        304, ETag: "v1"
//   GET  /blob?size=N         N bytes made as they are sent, byte i being i % 251
//   GET  /follow?lines=N&interval_ms=M   a line every M ms (default 10 lines, 100 ms), chunked
//   PUT  /upload              (also POST) any body as it arrives: {"length", "sha256"}
class ApiServer {
 public:
  // port 0: any free port.
  explicit ApiServer(int port = 0);
  ~ApiServer();  // release_slow(), stop()
  ApiServer(const ApiServer&) = delete;
  ApiServer& operator=(const ApiServer&) = delete;

  int port() const { return port_; }
  std::string base_url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/"; }

  // release_slow(), then stops listening and closes every connection; returns once the
  // server thread is gone, so nothing answers on port() any more.
  void stop();

  std::vector<SeenRequest> requests() const;
  // Requests whose path starts with `path_prefix` (e.g. "/echo/").
  std::size_t count(std::string_view path_prefix) const;
  bool wait_requests(std::string_view path_prefix, std::size_t n,
                     Clock::time_point deadline = deadline_in());

  // /slow: number of arrivals so far, waiting for them, and letting all of them (and all
  // later ones) return.
  std::size_t slow_arrivals() const;
  bool wait_slow_arrivals(std::size_t n, Clock::time_point deadline = deadline_in());
  void release_slow();
  // /follow: whether its last line was written.
  bool follow_done() const;

 private:
  void record(const SeenRequest& seen);
  void routes();

  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<SeenRequest> seen_;  // guarded by mu_
  std::size_t slow_arrivals_ = 0;  // guarded by mu_
  bool slow_released_ = false;     // guarded by mu_
  bool follow_done_ = false;       // guarded by mu_
};

// A reply received by the test client.
struct Reply {
  std::string topic;
  std::string payload;
  Json doc;  // the parsed payload; discarded (is_discarded()) when it is not JSON
  int qos = 0;
  bool retained = false;
};

// A Paho async test client (MQTT 3.1.1, clean session, no persistence) connected to the test
// broker and subscribed (QoS 2) to `{start}/res/{id}/#`, recording every reply.
// Thread-safe: replies arrive on Paho's callback thread.
class MqttClient {
 public:
  // `ca_file` non-empty: TLS (the URI must be ssl://...), verifying the broker with it.
  // Throws when it cannot connect or subscribe within kDefaultWait.
  MqttClient(const std::string& server_uri, std::string topic_start, std::string topic_id,
             const std::string& ca_file = "");
  ~MqttClient();
  MqttClient(const MqttClient&) = delete;
  MqttClient& operator=(const MqttClient&) = delete;

  std::string request_topic(std::string_view verb, std::string_view path) const;
  std::string reply_topic(std::string_view verb, std::string_view path) const;

  // Publishes `payload` (dumped) at QoS 2 to {start}/req/{id}/{verb}[/{path}] and waits for
  // the broker's PUBCOMP. An empty path gives the topic without a path level.
  void request(std::string_view verb, std::string_view path, const Json& payload);
  // Publishes raw bytes to any topic without waiting; wait_for() on the token.
  mqtt::delivery_token_ptr publish_async(const std::string& topic, const std::string& bytes,
                                         int qos = 2, bool retained = false);
  // Publishes raw bytes to any topic and waits for the broker's acknowledgement (if any).
  void publish_raw(const std::string& topic, const std::string& bytes, int qos = 2,
                   bool retained = false);
  // request() with a fresh unique req_id (unless the payload has one), then wait_reply().
  std::optional<Reply> call(std::string_view verb, std::string_view path, Json payload = {},
                            Clock::time_point deadline = deadline_in());

  // The first reply whose req_id equals `req_id`.
  std::optional<Reply> wait_reply(const Json& req_id, Clock::time_point deadline = deadline_in());
  // The first reply on exactly this topic.
  std::optional<Reply> wait_topic(const std::string& topic,
                                  Clock::time_point deadline = deadline_in());
  // Until at least n replies were received.
  bool wait_count(std::size_t n, Clock::time_point deadline = deadline_in());

  std::vector<Reply> replies() const;
  std::size_t count() const;
  bool connected() const;

 private:
  void on_message(mqtt::const_message_ptr msg);

  std::string start_;
  std::string id_;
  std::unique_ptr<mqtt::async_client> client_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Reply> replies_;  // guarded by mu_
};

// homd started against a test broker and API, with a unique topic start and id.
class Homd {
 public:
  // Env: MQTT_HOST=127.0.0.1, MQTT_PORT=mqtt_port, MQTT_TLS=off, MQTT_TOPIC_START/ID
  // unique, HTTP_BASE_URL=http_base_url, LOG_LEVEL=debug; `overrides` replace or add.
  // Does not wait: call wait_subscribed().
  Homd(int mqtt_port, const std::string& http_base_url, const Env& overrides = {});
  // When still running: SIGTERM, and a test failure unless it exits 0.
  ~Homd();
  Homd(const Homd&) = delete;
  Homd& operator=(const Homd&) = delete;

  const std::string& topic_start() const { return start_; }
  const std::string& topic_id() const { return id_; }
  const Env& env() const { return env_; }

  // Until homd logged "subscribed to " `count` times (once per successful (re)subscribe).
  bool wait_subscribed(int count = 1, Clock::time_point deadline = deadline_in());

  Process& process() { return *process_; }
  std::string log() const { return process_->log(); }
  // The end of the log, and the exit status when homd is no longer running.
  std::string log_tail(std::size_t lines = 60) const;
  // SIGTERM and wait; the exit status.
  std::optional<int> stop();

 private:
  TempDir dir_;
  std::string start_;
  std::string id_;
  Env env_;
  std::unique_ptr<Process> process_;
};

}  // namespace hom::test
