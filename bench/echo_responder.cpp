// hom-echo: the MQTT round-trip limit for homd. Subscribes like homd and answers every
// request at once with the fixed reply homd gives for the benchmark's API (fixtures.hpp), on
// the mirrored topic and at the request's QoS. No HTTP, no queue, no thread hand-off.
#include <csignal>
#include <cstdio>
#include <iostream>
#include <string>
#include <string_view>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "fixtures.hpp"
#include "paho_client.hpp"

namespace {

using nlohmann::json;
using namespace hom::bench;

std::string trim_slashes(const std::string& s) {
  const auto b = s.find_first_not_of('/');
  if (b == std::string::npos) return {};
  return s.substr(b, s.find_last_not_of('/') - b + 1);
}

// A reply document up to its req_id value, built once per path: {"content":...,"req_id":
std::string make_reply(const json& content, int status, bool base64) {
  json doc = json::object();
  doc["content"] = content;
  doc["status"] = status;
  if (base64) doc["content_encoding"] = "base64";
  std::string text = doc.dump();
  text.pop_back();  // the closing brace: req_id follows
  return text + ",\"req_id\":";
}

class Echo {
 public:
  Echo(const std::string& start, const std::string& id)
      : req_prefix_(trim_slashes(start) + "/req/" + trim_slashes(id) + "/"),
        res_prefix_(trim_slashes(start) + "/res/" + trim_slashes(id) + "/"),
        latitude_(make_reply(json::parse(kLatitudeJson), 200, false)),
        dessert_(make_reply(kDessertText, kDessertStatus, false)),
        bin_(make_reply(base64(bin_bytes()), 200, true)),
        not_found_(make_reply("not found", 404, false)) {}

  std::string filter() const { return req_prefix_ + "+/#"; }

  void attach(PahoClient* client) { client_ = client; }

  // On Paho's receive thread: build the reply and queue it; Paho sends it.
  void on_request(std::string_view topic, std::string_view payload, int qos, bool retained) {
    if (retained || topic.compare(0, req_prefix_.size(), req_prefix_) != 0) return;
    const std::string_view rest = topic.substr(req_prefix_.size());  // verb[/path]
    const auto slash = rest.find('/');
    const std::string_view verb = rest.substr(0, slash);
    const std::string_view path =
        slash == std::string_view::npos ? std::string_view() : rest.substr(slash + 1);
    const std::string* reply = &not_found_;
    if ((verb == "get" || verb == "GET") && path == kLatitudePath) reply = &latitude_;
    if ((verb == "get" || verb == "GET") && path == kBinPath) reply = &bin_;
    if ((verb == "post" || verb == "POST") && path == kDessertPath) reply = &dessert_;

    std::string out = *reply;
    const json doc = json::parse(payload.begin(), payload.end(), nullptr, false);
    const auto id = doc.is_object() ? doc.find("req_id") : doc.end();
    out += doc.is_object() && id != doc.end() ? id->dump() : "null";
    out += '}';
    response_topic_.assign(res_prefix_).append(rest);
    if (!client_->publish(response_topic_, out, qos)) ++failures_;
  }

  unsigned long failures() const { return failures_; }

 private:
  const std::string req_prefix_, res_prefix_;
  const std::string latitude_, dessert_, bin_, not_found_;
  PahoClient* client_ = nullptr;
  std::string response_topic_;  // only touched on the receive thread
  unsigned long failures_ = 0;  // only touched on the receive thread
};

}  // namespace

int main(int argc, char** argv) {
  std::string host = "127.0.0.1", start = "v1", id = "itsme";
  int port = 1883;
  bool nodelay = true;
  CLI::App app{"hom-echo: answers homd's requests with fixed replies, without HTTP"};
  app.add_option("--host", host, "broker host");
  app.add_option("--port", port, "broker port")->check(CLI::Range(1, 65535));
  app.add_option("--start", start, "MQTT_TOPIC_START to serve");
  app.add_option("--id", id, "MQTT_TOPIC_ID to serve");
  app.add_flag("!--no-nodelay", nodelay, "leave Nagle's algorithm on for the broker link");
  CLI11_PARSE(app, argc, argv);

  // Blocked before Paho starts its threads, so only sigwait() below sees them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  try {
    Echo echo(start, id);
    PahoClient client(host, port, "hom-echo-" + trim_slashes(id),
                      [&echo](std::string_view t, std::string_view p, int qos, bool retained) {
                        echo.on_request(t, p, qos, retained);
                      });
    echo.attach(&client);
    client.connect(nodelay, std::chrono::seconds(10));
    client.subscribe(echo.filter(), 2, std::chrono::seconds(10));
    std::cout << "hom-echo: serving " << echo.filter() << std::endl;
    // Until SIGTERM/SIGINT; a lost broker connection ends the run (no reconnect here).
    const timespec tick{0, 200 * 1000 * 1000};
    while (sigtimedwait(&signals, nullptr, &tick) < 0) {
      if (client.lost()) {
        std::fprintf(stderr, "hom-echo: connection to the broker lost\n");
        return 1;
      }
    }
    client.disconnect(std::chrono::milliseconds(1000));
    if (echo.failures() > 0)
      std::fprintf(stderr, "hom-echo: %lu publishes refused\n", echo.failures());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "hom-echo: %s\n", e.what());
    return 1;
  }
}
