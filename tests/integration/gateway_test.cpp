// hom-gateway against real peers (SPEC §6): curl as the HTTP client, the real gateway, a real
// Mosquitto, the real homd and an HTTP API. Each status of the gateway's own, the tokens'
// scopes, and bodies that must come back byte for byte.
#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "hom/gateway.hpp"
#include "support/harness.hpp"

namespace hom::test {
namespace {

struct CurlResult {
  int exit = -1;
  int status = 0;
  std::string headers;  // lower-cased
  std::string body;
};

class GatewayTest : public ::testing::Test {
 protected:
  void SetUp() override {
    homd_ = std::make_unique<Homd>(broker_.port(), api_.base_url());
    ASSERT_TRUE(homd_->wait_subscribed()) << homd_->log_tail();
    dir_.write("tokens", gateway::sha256_hex("ops-token") + " " + homd_->topic_id() +
                             " GET,HEAD /gps/**,/binary,/text ops\n" +
                             gateway::sha256_hex("admin-token") + " * * * admin\n");
    port_ = free_port();
    gateway_ =
        std::make_unique<Process>(std::vector<std::string>{HOM_GATEWAY_BIN},
                                  Env{{"MQTT_HOST", "127.0.0.1"},
                                      {"MQTT_PORT", std::to_string(broker_.port())},
                                      {"MQTT_TLS", "off"},
                                      {"MQTT_TOPIC_START", homd_->topic_start()},
                                      {"GATEWAY_LISTEN", "127.0.0.1:" + std::to_string(port_)},
                                      {"GATEWAY_TOKENS_FILE", dir_.file("tokens")},
                                      {"GATEWAY_TIMEOUT_MS", "10000"},
                                      {"LOG_LEVEL", "info"}},
                                  dir_.file("gateway.log"));
    // Ready once /_hom/health says the broker is connected.
    const auto deadline = deadline_in();
    while (Clock::now() < deadline && curl({"/_hom/health"}).status != 200) {
      ASSERT_TRUE(gateway_->running()) << gateway_->log();
      std::this_thread::sleep_for(std::chrono::milliseconds(50));  // polling, with a deadline
    }
    ASSERT_EQ(curl({"/_hom/health"}).status, 200) << gateway_->log();
  }

  std::string url(const std::string& path) const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }

  // curl PATH [ARGS...]: -s, headers and body to files, the status from -w.
  CurlResult curl(std::vector<std::string> args) {
    const std::string path = args.front();
    args.erase(args.begin());
    const std::string head = dir_.file("head"), body = dir_.file("body");
    std::vector<std::string> argv = {"curl", "-s", "-D",           head,         "-o",
                                     body,   "-w", "%{http_code}", "--max-time", "30"};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.push_back(url(path));
    Process p(argv_with_path(argv), Env{}, dir_.file("curl.log"));
    CurlResult r;
    r.exit = p.wait_exit(deadline_in(std::chrono::seconds(40))).value_or(-1);
    r.status = std::atoi(slurp(dir_.file("curl.log")).c_str());
    r.headers = slurp(head);
    for (auto& c : r.headers) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    r.body = slurp(body);
    return r;
  }

  static std::vector<std::string> argv_with_path(std::vector<std::string> argv) {
    argv[0] = CURL_BIN;
    return argv;
  }

  static std::string slurp(const std::string& file) {
    std::ifstream f(file, std::ios::binary);
    std::ostringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }

  std::string dev(const std::string& path) const { return "/" + homd_->topic_id() + path; }

  Mosquitto broker_;
  ApiServer api_;
  TempDir dir_;
  std::unique_ptr<Homd> homd_;
  std::unique_ptr<Process> gateway_;
  int port_ = 0;
};

const std::string kOps = "Authorization: Bearer ops-token";
const std::string kAdmin = "Authorization: Bearer admin-token";

TEST_F(GatewayTest, GetThroughTheGateway) {
  auto r = curl({dev("/gps/latitude"), "-H", kOps});
  EXPECT_EQ(r.status, 200) << gateway_->log();
  EXPECT_EQ(Json::parse(r.body), Json({{"latitude", 48.85}}));
  EXPECT_NE(r.headers.find("content-type: application/json"), std::string::npos) << r.headers;
}

TEST_F(GatewayTest, BinaryBodyComesBackByteForByte) {
  auto r = curl({dev("/binary"), "-H", kOps});
  ASSERT_EQ(r.status, 200);
  std::string expected;
  for (int i = 0; i < 256; ++i) expected += static_cast<char>(i);
  EXPECT_EQ(r.body, expected);
}

// SPEC §6 "Mapping": the gateway asks homd for `raw` content, so a body comes back as the
// API sent it, whatever it looks like; statuses without a body keep their headers.
TEST_F(GatewayTest, BodiesComeBackByteForByte) {
  auto odd = curl({dev("/odd-json"), "-H", kAdmin});
  ASSERT_EQ(odd.status, 200) << gateway_->log();
  EXPECT_EQ(odd.body, R"({ "a" :1 })");
  EXPECT_NE(odd.headers.find("content-type: application/json"), std::string::npos) << odd.headers;
  EXPECT_NE(odd.headers.find("content-length: 10\r\n"), std::string::npos) << odd.headers;

  auto latin1 = curl({dev("/latin1"), "-H", kAdmin});
  EXPECT_EQ(latin1.body, std::string("caf\xE9"));
  EXPECT_NE(latin1.headers.find("content-type: text/plain"), std::string::npos);

  auto text = curl({dev("/text"), "-H", kOps});
  EXPECT_EQ(text.body, "hello");
  EXPECT_NE(text.headers.find("content-type: text/plain"), std::string::npos) << text.headers;

  auto empty = curl({dev("/empty"), "-H", kAdmin});
  EXPECT_EQ(empty.status, 200);
  EXPECT_EQ(empty.body, "");
  EXPECT_NE(empty.headers.find("content-length: 0\r\n"), std::string::npos) << empty.headers;
}

TEST_F(GatewayTest, HeadAndStatusesWithoutABody) {
  auto head = curl({dev("/text"), "-H", kOps, "-I"});
  EXPECT_EQ(head.exit, 0);
  EXPECT_EQ(head.status, 200) << gateway_->log();
  EXPECT_NE(head.headers.find("content-length: 5\r\n"), std::string::npos) << head.headers;
  EXPECT_NE(head.headers.find("content-type: text/plain"), std::string::npos) << head.headers;
  EXPECT_EQ(api_.requests().back().method, "HEAD");

  auto none = curl({dev("/no-content"), "-H", kAdmin, "-X", "DELETE"});
  EXPECT_EQ(none.exit, 0);
  EXPECT_EQ(none.status, 204);
  EXPECT_EQ(none.body, "");
  EXPECT_NE(none.headers.find("x-done: yes"), std::string::npos) << none.headers;
  EXPECT_EQ(none.headers.find("content-length"), std::string::npos) << none.headers;

  auto same = curl({dev("/not-modified"), "-H", kAdmin});
  EXPECT_EQ(same.exit, 0);
  EXPECT_EQ(same.status, 304);
  EXPECT_EQ(same.body, "");
  EXPECT_NE(same.headers.find("etag: \"v1\""), std::string::npos) << same.headers;
}

TEST_F(GatewayTest, SetCookieTwiceAndRepeatedHeaders) {
  auto r = curl({dev("/cookies"), "-H", kAdmin});
  ASSERT_EQ(r.status, 200);
  EXPECT_NE(r.headers.find("set-cookie: a=1; path=/\r\n"), std::string::npos) << r.headers;
  EXPECT_NE(r.headers.find("set-cookie: b=2; path=/\r\n"), std::string::npos) << r.headers;
  EXPECT_NE(r.headers.find("x-multi: one, two"), std::string::npos) << r.headers;
  EXPECT_EQ(r.body, "ok");
}

TEST_F(GatewayTest, RequestHeadersAndBodyReachTheApiButNotTheToken) {
  dir_.write("upload", std::string("\x00\x01\xFF binary", 10));
  auto r = curl({dev("/echo/up?x=1"), "-H", kAdmin, "-H", "X-Custom: yes", "--data-binary",
                 "@" + dir_.file("upload"), "-H", "Content-Type: application/octet-stream"});
  ASSERT_EQ(r.status, 200) << r.body;
  const auto seen = api_.requests().back();
  EXPECT_EQ(seen.method, "POST");
  EXPECT_EQ(seen.target, "/echo/up?x=1");
  EXPECT_EQ(seen.body, std::string("\x00\x01\xFF binary", 10));
  EXPECT_EQ(seen.headers.count("x-custom"), 1u);
  EXPECT_EQ(seen.headers.count("authorization"), 0u) << "the gateway's token must not leave it";
}

TEST_F(GatewayTest, TokensAreCheckedAndScoped) {
  EXPECT_EQ(curl({dev("/gps/latitude")}).status, 401);
  auto wrong = curl({dev("/gps/latitude"), "-H", "Authorization: Bearer nope"});
  EXPECT_EQ(wrong.status, 401);
  EXPECT_NE(wrong.headers.find("www-authenticate: bearer"), std::string::npos);
  EXPECT_EQ(curl({dev("/gps/latitude"), "-H", kOps, "-X", "POST"}).status, 403);
  EXPECT_EQ(curl({dev("/echo/x"), "-H", kOps}).status, 403);
  EXPECT_EQ(curl({"/other-device/gps", "-H", kOps}).status, 403);
  EXPECT_EQ(api_.count("/"), 0u) << "nothing refused may reach the device";
}

TEST_F(GatewayTest, StatusesOfItsOwn) {
  // Nobody serves this device and it has no presence: 504 after Hom-Timeout.
  auto timeout = curl({"/nobody-here/x", "-H", kAdmin, "-H", "Hom-Timeout: 500ms"});
  EXPECT_EQ(timeout.status, 504);
  EXPECT_NE(timeout.headers.find("hom-error:"), std::string::npos);
  // A status homd made itself passes through with its reason.
  auto bad = curl({dev("/%2e%2e/etc"), "-H", kAdmin});
  EXPECT_EQ(bad.status, 400);
  EXPECT_NE(bad.headers.find("hom-error:"), std::string::npos) << bad.headers;
  // The device goes offline (its presence says so): 503 with Retry-After.
  ASSERT_EQ(homd_->stop(), 0);
  auto offline = curl({dev("/gps/latitude"), "-H", kOps});
  EXPECT_EQ(offline.status, 503);
  EXPECT_NE(offline.headers.find("retry-after:"), std::string::npos) << offline.headers;
  auto metrics = curl({"/_hom/metrics"});
  EXPECT_NE(metrics.body.find("hom_gateway_requests_total{status=\"504\"} 1"), std::string::npos)
      << metrics.body;
  EXPECT_NE(metrics.body.find("hom_gateway_broker_connected 1"), std::string::npos);
}

TEST_F(GatewayTest, SigtermExitsZero) {
  EXPECT_EQ(curl({dev("/text"), "-H", kOps}).status, 200);
  EXPECT_EQ(gateway_->stop(), 0) << gateway_->log();
}

}  // namespace
}  // namespace hom::test
