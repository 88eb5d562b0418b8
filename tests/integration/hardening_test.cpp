// SPEC §5.1 hardening against the real homd: credentials in HTTP_BASE_URL act as
// HTTP_USER/HTTP_PASS and never show; a base URL without a host is refused.
#include <algorithm>
#include <optional>
#include <string>
#include <tuple>
#include <utility>

#include <gtest/gtest.h>

#include "support/harness.hpp"

namespace hom::test {
namespace {

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

}  // namespace
}  // namespace hom::test
