// hom-gateway scales out (SPEC §6 "Scale"): two instances behind a real nginx (round robin),
// one real homd and its HTTP API behind them, a real Mosquitto. Every request is answered
// with its own body, both instances serve, and each instance receives exactly the replies to
// its own requests, which Mosquitto's log shows: every PUBLISH it sent to an instance's
// client id is counted against the requests that client id published.
#include <unistd.h>

#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include <gtest/gtest.h>

#include "support/harness.hpp"

namespace hom::test {
namespace {

constexpr int kRequests = 200;
constexpr int kParallel = 16;

std::string slurp(const std::string& file) {
  std::ifstream f(file, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// One hom-gateway process on its own port, without authentication (nginx is its only client).
class Gateway {
 public:
  Gateway(const TempDir& dir, const std::string& name, int broker_port, const std::string& start)
      : port_(free_port()) {
    process_ =
        std::make_unique<Process>(std::vector<std::string>{HOM_GATEWAY_BIN},
                                  Env{{"MQTT_HOST", "127.0.0.1"},
                                      {"MQTT_PORT", std::to_string(broker_port)},
                                      {"MQTT_TLS", "off"},
                                      {"MQTT_TOPIC_START", start},
                                      {"GATEWAY_LISTEN", "127.0.0.1:" + std::to_string(port_)},
                                      {"GATEWAY_AUTH", "none"},
                                      {"GATEWAY_TIMEOUT_MS", "10000"},
                                      {"LOG_LEVEL", "info"}},
                                  dir.file(name + ".log"));
  }

  int port() const { return port_; }
  Process& process() { return *process_; }

  // The MQTT client id it logged on connecting ("connected to URI as ID (MQTT 5)").
  std::string client_id() const {
    std::smatch m;
    const std::string log = process_->log();
    static const std::regex kConnected(R"(connected to \S+ as (\S+) )");
    return std::regex_search(log, m, kConnected) ? m[1].str() : "";
  }

  // Access-log lines of device requests answered 200.
  int answered(const std::string& device) const {
    return process_->count_lines_with({" " + device + " GET /echo/scale", "-> 200"});
  }

 private:
  int port_;
  std::unique_ptr<Process> process_;
};

class GatewayScaleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    homd_ = std::make_unique<Homd>(broker_.port(), api_.base_url());
    ASSERT_TRUE(homd_->wait_subscribed()) << homd_->log_tail();
    for (const char* name : {"gateway-a", "gateway-b"})
      gateways_.push_back(
          std::make_unique<Gateway>(dir_, name, broker_.port(), homd_->topic_start()));
    for (auto& g : gateways_) {
      // Ready once /_hom/health says it is connected to the broker.
      const auto deadline = deadline_in();
      while (Clock::now() < deadline && curl_status(g->port(), "/_hom/health") != 200) {
        ASSERT_TRUE(g->process().running()) << g->process().log();
        std::this_thread::sleep_for(std::chrono::milliseconds(50));  // polling, with a deadline
      }
      ASSERT_EQ(curl_status(g->port(), "/_hom/health"), 200) << g->process().log();
    }
    start_nginx();
  }

  // nginx in the foreground with its own prefix directory, round robin over the gateways.
  // No retry on the other instance (proxy_next_upstream off): a failure must show as one.
  void start_nginx() {
    nginx_port_ = free_port();
    std::ostringstream conf;
    // As root nginx would switch its worker to `nobody`, which cannot enter the 0700 TempDir.
    if (::geteuid() == 0) conf << "user root;\n";
    conf << "worker_processes 1;\n"
         << "pid " << dir_.file("nginx.pid") << ";\n"
         << "error_log " << dir_.file("nginx-error.log") << " warn;\n"
         << "events { worker_connections 1024; }\n"
         << "http {\n"
         << "  log_format upstream '$request_uri $status $upstream_addr';\n"
         << "  access_log " << dir_.file("nginx-access.log") << " upstream;\n";
    for (const char* temp : {"client_body", "proxy", "fastcgi", "uwsgi", "scgi"})
      conf << "  " << temp << "_temp_path " << dir_.file(std::string("nginx-") + temp) << ";\n";
    conf << "  upstream gateways {\n";
    for (const auto& g : gateways_) conf << "    server 127.0.0.1:" << g->port() << ";\n";
    conf << "    keepalive 16;\n"
         << "  }\n"
         << "  server {\n"
         << "    listen 127.0.0.1:" << nginx_port_ << ";\n"
         << "    location / {\n"
         << "      proxy_pass http://gateways;\n"
         << "      proxy_http_version 1.1;\n"
         << "      proxy_set_header Connection \"\";\n"
         << "      proxy_next_upstream off;\n"
         << "    }\n"
         << "  }\n"
         << "}\n";
    dir_.write("nginx.conf", conf.str());
    nginx_ = std::make_unique<Process>(
        std::vector<std::string>{NGINX_BIN, "-p", dir_.path(), "-e", dir_.file("nginx-error.log"),
                                 "-c", dir_.file("nginx.conf"), "-g", "daemon off;"},
        Env{}, dir_.file("nginx.log"));
    const auto deadline = deadline_in();
    while (Clock::now() < deadline && !port_accepts(nginx_port_)) {
      ASSERT_TRUE(nginx_->running()) << nginx_->log() << slurp(dir_.file("nginx-error.log"));
      std::this_thread::sleep_for(std::chrono::milliseconds(20));  // polling, with a deadline
    }
    ASSERT_TRUE(port_accepts(nginx_port_)) << slurp(dir_.file("nginx-error.log"));
  }

  void TearDown() override {
    if (nginx_) {
      EXPECT_EQ(nginx_->stop(), 0) << slurp(dir_.file("nginx-error.log"));
    }
    for (auto& g : gateways_) EXPECT_EQ(g->process().stop(), 0) << g->process().log();
  }

  int curl_status(int port, const std::string& path) {
    Process p({CURL_BIN, "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
               "http://127.0.0.1:" + std::to_string(port) + path},
              Env{}, dir_.file("curl-status.log"));
    p.wait_exit(deadline_in());
    return std::atoi(slurp(dir_.file("curl-status.log")).c_str());
  }

  // Topics of the PUBLISH packets Mosquitto logged as received from / sent to `client`.
  std::vector<std::string> broker_publishes(const std::string& direction,
                                            const std::string& client) const {
    std::vector<std::string> topics;
    const std::regex line("(Received PUBLISH from|Sending PUBLISH to) (\\S+) \\([^']*'([^']*)'");
    for (const auto& l : lines_of(broker_.log())) {
      std::smatch m;
      if (std::regex_search(l, m, line) && m[1] == direction && m[2] == client)
        topics.push_back(m[3]);
    }
    return topics;
  }

  Mosquitto broker_;
  ApiServer api_;
  TempDir dir_;
  std::unique_ptr<Homd> homd_;
  std::vector<std::unique_ptr<Gateway>> gateways_;
  std::unique_ptr<Process> nginx_;
  int nginx_port_ = 0;
};

TEST_F(GatewayScaleTest, TwoInstancesBehindNginxShareTheLoadAndOnlyTheirOwnReplies) {
  // One curl, kParallel transfers at a time, each request with its own query and body file.
  std::ostringstream config;
  const std::string base =
      "http://127.0.0.1:" + std::to_string(nginx_port_) + "/" + homd_->topic_id();
  for (int i = 0; i < kRequests; ++i) {
    config << "url = \"" << base << "/echo/scale?i=" << i << "\"\n"
           << "output = \"" << dir_.file("body-" + std::to_string(i)) << "\"\n";
  }
  dir_.write("curl.config", config.str());
  Process curl({CURL_BIN, "-s", "--no-progress-meter", "--parallel", "--parallel-max",
                std::to_string(kParallel), "--max-time", "30", "-w", "status %{http_code}\\n", "-K",
                dir_.file("curl.config")},
               Env{}, dir_.file("curl.log"));
  ASSERT_EQ(curl.wait_exit(deadline_in(std::chrono::seconds(120))), 0) << curl.log();

  // Every request answered 200 with the API's echo of exactly that request.
  // curl's log also holds its parallel progress meter: only the -w lines count.
  std::vector<std::string> statuses;
  for (const auto& l : lines_of(curl.log()))
    if (l.rfind("status ", 0) == 0) statuses.push_back(l.substr(7));
  ASSERT_EQ(statuses.size(), static_cast<std::size_t>(kRequests)) << curl.log();
  for (const auto& s : statuses) EXPECT_EQ(s, "200");
  for (int i = 0; i < kRequests; ++i) {
    const Json body = Json::parse(slurp(dir_.file("body-" + std::to_string(i))), nullptr, false);
    ASSERT_TRUE(body.is_object()) << "request " << i;
    EXPECT_EQ(body["target"], "/echo/scale?i=" + std::to_string(i));
  }
  EXPECT_EQ(api_.count("/echo/scale"), static_cast<std::size_t>(kRequests));

  // Both instances served; their access logs and nginx's agree on how many each.
  std::map<std::string, int> by_upstream;
  for (const auto& l : lines_of(slurp(dir_.file("nginx-access.log"))))
    if (l.rfind("/" + homd_->topic_id() + "/echo/scale", 0) == 0)
      ++by_upstream[l.substr(l.rfind(' ') + 1)];
  const std::string device = homd_->topic_id();
  int total = 0;
  std::set<std::string> clients, reply_topics;
  for (auto& g : gateways_) {
    const int n = g->answered(device);
    SCOPED_TRACE("gateway on port " + std::to_string(g->port()));
    EXPECT_GT(n, 0) << "round robin must use both instances";
    EXPECT_EQ(n, by_upstream["127.0.0.1:" + std::to_string(g->port())]);
    total += n;

    // The broker's view: the requests this client published, and the replies it was sent.
    const std::string client = g->client_id();
    ASSERT_FALSE(client.empty()) << g->process().log();
    EXPECT_TRUE(clients.insert(client).second) << "two instances share the client id " << client;
    int requests = 0;
    for (const auto& topic : broker_publishes("Received PUBLISH from", client))
      if (topic.find("/req/") != std::string::npos) ++requests;
    std::set<std::string> own;
    int replies = 0;
    for (const auto& topic : broker_publishes("Sending PUBLISH to", client)) {
      if (topic.find("/res/") == std::string::npos) continue;  // e.g. the retained presence
      ++replies;
      own.insert(topic);
    }
    EXPECT_EQ(requests, n) << "each request to a device is one PUBLISH";
    EXPECT_EQ(replies, requests) << "an instance receives the replies to its requests, no more";
    EXPECT_EQ(own.size(), 1u) << "one reply topic per instance and device";
    for (const auto& topic : own)
      EXPECT_TRUE(reply_topics.insert(topic).second) << "reply topic shared: " << topic;
  }
  EXPECT_EQ(total, kRequests);
}

}  // namespace
}  // namespace hom::test
