// SPEC §5.1 hardening against the real homd: proxy variables in its environment are ignored
// (for the API and for the broker), credentials in HTTP_BASE_URL act as HTTP_USER/HTTP_PASS and
// never show, header limits.
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <utility>

#include <gtest/gtest.h>

#include "support/harness.hpp"

namespace hom::test {
namespace {

// A loopback TCP listener that counts the connections it accepts and closes each at once:
// it stands for an HTTP proxy that nothing should use.
class FakeProxy {
 public:
  FakeProxy() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::listen(fd_, 64) != 0 || ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0)
      throw std::runtime_error("fake proxy: cannot listen");
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] {
      while (!stop_) {
        pollfd p{fd_, POLLIN, 0};
        if (::poll(&p, 1, 50) <= 0) continue;  // wakes up to notice stop_
        const int conn = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (conn < 0) continue;
        ++accepted_;
        ::close(conn);
      }
    });
  }
  ~FakeProxy() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
  }
  FakeProxy(const FakeProxy&) = delete;
  FakeProxy& operator=(const FakeProxy&) = delete;

  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  int accepted() const { return accepted_; }

 private:
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> accepted_{0};
  std::thread thread_;
};

Json field(const Json& doc, const std::string& key) {
  return doc.is_object() && doc.contains(key) ? doc.at(key) : Json();
}

// `homd --check-config` with exactly `env`: exit status and output (stdout and stderr).
std::pair<std::optional<int>, std::string> check_config(const Env& env) {
  TempDir dir;
  Process p({HOMD_BIN, "--check-config"}, env, dir.file("check.log"));
  const auto status = p.wait_exit(deadline_in());
  return {status, p.log()};
}

TEST(HardeningTest, ProxyVariablesAreIgnoredForTheApiAndTheBroker) {
  Mosquitto broker;
  ApiServer api;
  FakeProxy proxy;
  Env env;
  for (const char* name :
       {"http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"})
    env[name] = proxy.url();
  env["no_proxy"] = "example.com";
  env["PAHO_C_CLIENT_USE_HTTP_PROXY"] = "TRUE";  // newer Paho C reads the variables only then
  Homd homd(broker.port(), api.base_url(), env);
  ASSERT_TRUE(homd.wait_subscribed()) << homd.log_tail();

  MqttClient client(broker.uri(), homd.topic_start(), homd.topic_id());
  const auto reply = client.call("get", "gps/latitude");
  ASSERT_TRUE(reply) << homd.log_tail();
  EXPECT_EQ(field(reply->doc, "status"), 200) << reply->payload;
  EXPECT_EQ(api.count("/gps/latitude"), 1u);
  EXPECT_EQ(proxy.accepted(), 0) << "something went through the proxy\n" << homd.log_tail();
  EXPECT_TRUE(homd.process().wait_for_log_line({"info", "ignoring", "http_proxy", "ALL_PROXY"}))
      << homd.log_tail();
}

TEST(HardeningTest, BaseUrlCredentialsAreSentAndWinOverThePayloadsAuthorization) {
  Mosquitto broker;
  ApiServer api;
  const std::string password = "s3cret-pw-" + unique_name();
  std::string url = api.base_url();
  url.insert(url.find("://") + 3, "alice:" + password + "@");
  Homd homd(broker.port(), url);
  ASSERT_TRUE(homd.wait_subscribed()) << homd.log_tail();

  MqttClient client(broker.uri(), homd.topic_start(), homd.topic_id());
  const auto reply =
      client.call("get", "echo/auth", {{"headers", {{"Authorization", "Bearer x"}}}});
  ASSERT_TRUE(reply) << homd.log_tail();
  EXPECT_EQ(field(reply->doc, "status"), 200) << reply->payload;
  ASSERT_EQ(api.count("/echo/auth"), 1u);
  const auto seen = api.requests().back();
  ASSERT_EQ(seen.headers.count("authorization"), 1u);
  EXPECT_EQ(seen.headers.find("authorization")->second,
            "Basic " + base64_encode("alice:" + password));

  EXPECT_EQ(homd.log().find(password), std::string::npos) << homd.log_tail();
  EXPECT_EQ(reply->payload.find(password), std::string::npos);
  EXPECT_NE(homd.log().find("alice:***@127.0.0.1"), std::string::npos) << homd.log_tail();
}

TEST(HardeningTest, CheckConfigNeverShowsTheBaseUrlPassword) {
  const Env base = {{"MQTT_HOST", "127.0.0.1"},
                    {"MQTT_TLS", "off"},
                    {"HTTP_BASE_URL", "http://alice:s3cret-pw@127.0.0.1:8080/api"}};
  auto [status, out] = check_config(base);
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("HTTP_BASE_URL=http://alice:***@127.0.0.1:8080/api/\n"), std::string::npos)
      << out;
  EXPECT_EQ(out.find("s3cret-pw"), std::string::npos) << out;

  // Credentials in two places: a configuration error, still without the password.
  Env both = base;
  both["HTTP_USER"] = "bob";
  std::tie(status, out) = check_config(both);
  EXPECT_EQ(status, 2) << out;
  EXPECT_NE(out.find("HTTP_BASE_URL"), std::string::npos) << out;
  EXPECT_EQ(out.find("s3cret-pw"), std::string::npos) << out;

  Env invalid = base;
  invalid["HTTP_BASE_URL"] = "ftp://alice:s3cret-pw@127.0.0.1/";
  std::tie(status, out) = check_config(invalid);
  EXPECT_EQ(status, 2) << out;
  EXPECT_EQ(out.find("s3cret-pw"), std::string::npos) << out;
}

TEST(HardeningTest, BaseUrlWithoutHostIsAConfigurationError) {
  const auto [status, out] = check_config(
      {{"MQTT_HOST", "127.0.0.1"}, {"MQTT_TLS", "off"}, {"HTTP_BASE_URL", "http:///x"}});
  EXPECT_EQ(status, 2) << out;
  EXPECT_NE(out.find("HTTP_BASE_URL='http:///x'"), std::string::npos) << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << "one line: " << out;
}

TEST(HardeningTest, HeaderLimitsAndControlCharacters) {
  Mosquitto broker;
  ApiServer api;
  Homd homd(broker.port(), api.base_url(), {{"HTTP_MAX_HEADER_BYTES", "64"}});
  ASSERT_TRUE(homd.wait_subscribed()) << homd.log_tail();
  MqttClient client(broker.uri(), homd.topic_start(), homd.topic_id());

  auto reply = client.call("get", "echo/h", {{"headers", {{"X-A", std::string(61, 'a')}}}});
  ASSERT_TRUE(reply) << homd.log_tail();
  EXPECT_EQ(field(reply->doc, "status"), 200) << reply->payload;
  reply = client.call("get", "echo/h", {{"headers", {{"X-A", std::string(62, 'a')}}}});
  ASSERT_TRUE(reply) << homd.log_tail();
  EXPECT_EQ(field(reply->doc, "status"), 413) << reply->payload;
  reply = client.call("get", "echo/h", {{"headers", {{"X-A", "a\x1b[31m"}}}});
  ASSERT_TRUE(reply) << homd.log_tail();
  EXPECT_EQ(field(reply->doc, "status"), 400) << reply->payload;
  EXPECT_EQ(api.count("/echo/h"), 1u);
}

// SPEC §5.1: the reply's req_id is the request's JSON text, whatever its spelling.
TEST(HardeningTest, ReqIdIsEchoedByteForByte) {
  Mosquitto broker;
  ApiServer api;
  Homd homd(broker.port(), api.base_url());
  ASSERT_TRUE(homd.wait_subscribed()) << homd.log_tail();
  MqttClient client(broker.uri(), homd.topic_start(), homd.topic_id());
  int n = 0;
  for (const std::string id : {"123456789012345678901234567890", "1.50", "1e3", "-0"}) {
    for (const std::string path : {"gps/latitude", "a/../b"}) {  // an answer and a bridge error
      const std::string topic = "p" + std::to_string(n++);
      client.publish_raw(client.request_topic("get", path + "?" + topic),
                         "{\"req_id\": " + id + "}");
      const auto reply = client.wait_topic(client.reply_topic("get", path + "?" + topic));
      ASSERT_TRUE(reply) << homd.log_tail();
      EXPECT_NE(reply->payload.find("\"req_id\":" + id + ","), std::string::npos) << reply->payload;
    }
  }
}

}  // namespace
}  // namespace hom::test
