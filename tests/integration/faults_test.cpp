// Fault injection against the real homd (SPEC §5): the broker missing at start and
// restarted under it, the local API going away and coming back, hostile payloads.
#include <csignal>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "support/harness.hpp"

namespace hom::test {
namespace {

Json field(const Json& doc, const std::string& key) {
  return doc.is_object() && doc.contains(key) ? doc.at(key) : Json();
}

// Waits long enough for a back-off of a few steps (1 s doubling at start, 8 s after a loss,
// full jitter).
constexpr std::chrono::seconds kReconnectWait{45};

class FaultsTest : public ::testing::Test {
 protected:
  std::string diag() const {
    return "--- homd log (tail) ---\n" + (homd_ ? homd_->log_tail() : std::string("(none)"));
  }

  // GET gps/latitude through a fresh client; the status, or 0 when no reply came.
  int latitude_status(MqttClient& client) {
    auto reply = client.call("get", "gps/latitude");
    if (!reply) {
      ADD_FAILURE() << "no reply\n" << diag();
      return 0;
    }
    return field(reply->doc, "status").is_number_integer() ? reply->doc.at("status").get<int>()
                                                           : -1;
  }

  void check_request_sent_while_stopped(const Env& env);

  std::unique_ptr<Homd> homd_;
};

TEST_F(FaultsTest, BrokerStartedAfterHomd) {
  // The port is chosen but nothing listens on it yet.
  Mosquitto::Options options;
  options.start = false;
  Mosquitto broker(options);
  ApiServer api;
  homd_ = std::make_unique<Homd>(broker.port(), api.base_url());
  ASSERT_TRUE(homd_->process().wait_for_log_line({"connect", "failed"})) << diag();
  EXPECT_TRUE(homd_->process().running()) << "homd must not exit while the broker is down";
  EXPECT_EQ(homd_->process().count_in_log("subscribed to "), 0);

  broker.start();
  ASSERT_TRUE(homd_->wait_subscribed(1, deadline_in(kReconnectWait))) << diag();
  MqttClient client(broker.uri(), homd_->topic_start(), homd_->topic_id());
  EXPECT_EQ(latitude_status(client), 200);
  // A broker that was not up is not one without MQTT 5 (SPEC §5.1 "Version fallback").
  EXPECT_EQ(homd_->process().count_in_log("(MQTT 5)"), 1) << diag();
  EXPECT_EQ(homd_->process().count_in_log("3.1.1 from now on"), 0) << diag();
}

// The same, with the broker coming up right after homd's first attempt, while homd's MQTT 5
// attempt has just failed: the fallback must not take the broker for one without MQTT 5.
TEST_F(FaultsTest, BrokerComingUpDuringTheFirstAttemptKeepsMqtt5) {
  for (int round = 0; round < 5; ++round) {
    Mosquitto::Options options;
    options.start = false;
    Mosquitto broker(options);
    ApiServer api;
    homd_ = std::make_unique<Homd>(broker.port(), api.base_url());
    broker.start();
    ASSERT_TRUE(homd_->wait_subscribed(1, deadline_in(kReconnectWait))) << diag();
    EXPECT_EQ(homd_->process().count_in_log("(MQTT 5)"), 1) << diag();
    EXPECT_EQ(homd_->stop(), 0);
    homd_.reset();
  }
}

TEST_F(FaultsTest, BrokerRestartedWhileHomdRuns) {
  Mosquitto broker;
  ApiServer api;
  homd_ = std::make_unique<Homd>(broker.port(), api.base_url());
  ASSERT_TRUE(homd_->wait_subscribed()) << diag();
  {
    MqttClient client(broker.uri(), homd_->topic_start(), homd_->topic_id());
    EXPECT_EQ(latitude_status(client), 200);
  }

  broker.restart();  // same port; no persistence, so homd's session is gone
  ASSERT_TRUE(homd_->wait_subscribed(2, deadline_in(kReconnectWait)))
      << diag() << "\n--- mosquitto ---\n"
      << tail(broker.log());
  MqttClient client(broker.uri(), homd_->topic_start(), homd_->topic_id());
  EXPECT_EQ(latitude_status(client), 200);
  EXPECT_TRUE(homd_->process().running());
  // A restarting broker refuses TCP for a moment: not a reason to give up MQTT 5.
  EXPECT_EQ(homd_->process().count_in_log("(MQTT 5)"), 2) << diag();
}

TEST_F(FaultsTest, ApiStoppedThenStartedAgain) {
  Mosquitto broker;
  auto api = std::make_unique<ApiServer>();
  const int api_port = api->port();
  homd_ = std::make_unique<Homd>(broker.port(), api->base_url());
  ASSERT_TRUE(homd_->wait_subscribed()) << diag();
  MqttClient client(broker.uri(), homd_->topic_start(), homd_->topic_id());
  EXPECT_EQ(latitude_status(client), 200);

  api->stop();  // closes the listener and every (keep-alive) connection
  auto down = client.call("get", "gps/latitude", {{"req_id", "down"}});
  ASSERT_TRUE(down) << diag();
  EXPECT_EQ(field(down->doc, "status"), 502) << down->payload;
  EXPECT_TRUE(field(down->doc, "content").is_null()) << down->payload;
  EXPECT_TRUE(field(down->doc, "error").is_string()) << down->payload;

  api = std::make_unique<ApiServer>(api_port);
  EXPECT_EQ(latitude_status(client), 200);
}

TEST_F(FaultsTest, MalformedPayloadsAreAnsweredOnceEach) {
  Mosquitto broker;
  ApiServer api;
  homd_ = std::make_unique<Homd>(broker.port(), api.base_url());
  ASSERT_TRUE(homd_->wait_subscribed()) << diag();
  MqttClient client(broker.uri(), homd_->topic_start(), homd_->topic_id());

  constexpr std::size_t kDefaultMaxPayload = 2 * 1024 * 1024;  // MQTT_MAX_PAYLOAD_BYTES
  std::mt19937 rng(20240601);                                  // reproducible
  auto random_bytes = [&](std::size_t n) {
    std::uniform_int_distribution<int> byte(0, 255);
    std::string s(n, '\0');
    for (auto& c : s) c = static_cast<char>(byte(rng));
    s[0] = '\xFF';  // never empty, never whitespace, never valid JSON
    return s;
  };
  std::vector<std::string> payloads;
  // Over the limit but within the headroom homd announces as its MQTT 5 Maximum Packet
  // Size, so the broker still delivers it (larger ones it drops: see the next test).
  const std::string oversize =
      "{\"req_id\":1,\"body\":\"" + std::string(kDefaultMaxPayload + 16 * 1024, 'x') + "\"}";
  for (int i = 0; i < 4; ++i) payloads.push_back(oversize);
  payloads.push_back(std::string(100000, '['));
  payloads.push_back(std::string(100000, '[') + std::string(100000, ']'));
  std::string deep_object;
  for (int i = 0; i < 50000; ++i) deep_object += "{\"a\":";
  payloads.push_back(deep_object);
  payloads.push_back("{\"req_id\":\"\xC3\x28\"}");  // invalid UTF-8 inside a string
  payloads.push_back("{\"req_id\":1,\"body\":\"\xFF\xFE\"}");
  payloads.push_back("{\"headers\":{\"X\":\"a\\u0000b\"}}");  // NUL in a header value
  payloads.push_back("{\"params\":{\"a\":[[1]]}}");
  payloads.push_back("{\"timeout_ms\":-5}");
  payloads.push_back("{\"body_base64\":\"====\"}");
  payloads.push_back("{\"a\":1,}");
  payloads.push_back("{'a':1}");
  payloads.push_back("[]");
  while (payloads.size() < 100) payloads.push_back(random_bytes(1 + rng() % 4096));
  while (payloads.size() < 200) {
    // Random bytes that are not UTF-8, inside otherwise plausible JSON.
    payloads.push_back("{\"req_id\":\"" + random_bytes(1 + rng() % 64) + "\"}");
  }

  std::vector<mqtt::delivery_token_ptr> tokens;
  for (std::size_t i = 0; i < payloads.size(); ++i) {
    tokens.push_back(client.publish_async(client.request_topic("post", "bad/" + std::to_string(i)),
                                          payloads[i]));
  }
  for (auto& token : tokens) ASSERT_TRUE(token->wait_for(std::chrono::seconds(60)));
  ASSERT_TRUE(client.wait_count(payloads.size(), deadline_in(std::chrono::seconds(120))))
      << client.count() << " of " << payloads.size() << " replies\n"
      << diag();
  ASSERT_TRUE(homd_->process().running()) << diag();
  // Still serving; and any duplicate would have been published before this reply.
  auto barrier = client.call("get", "gps/latitude", {{"req_id", "barrier"}});
  ASSERT_TRUE(barrier) << diag();
  EXPECT_EQ(field(barrier->doc, "status"), 200) << barrier->payload;

  std::map<std::string, int> per_topic;
  for (const auto& reply : client.replies()) {
    if (field(reply.doc, "req_id") == "barrier") continue;
    ++per_topic[reply.topic];
    ASSERT_TRUE(reply.doc.is_object()) << reply.topic;
    const std::string prefix = client.reply_topic("post", "bad/");
    ASSERT_EQ(reply.topic.compare(0, prefix.size(), prefix), 0) << reply.topic;
    const std::size_t i = std::stoul(reply.topic.substr(prefix.size()));
    ASSERT_LT(i, payloads.size());
    const int expected = payloads[i].size() > kDefaultMaxPayload ? 413 : 400;
    EXPECT_EQ(field(reply.doc, "status"), expected) << "payload " << i << ": " << reply.payload;
    EXPECT_TRUE(field(reply.doc, "content").is_null()) << reply.payload;
    EXPECT_TRUE(field(reply.doc, "error").is_string()) << reply.payload;
    if (expected == 413) {
      EXPECT_TRUE(field(reply.doc, "req_id").is_null()) << reply.payload;
    }
  }
  EXPECT_EQ(per_topic.size(), payloads.size());
  for (const auto& [topic, n] : per_topic) EXPECT_EQ(n, 1) << topic;
  EXPECT_EQ(api.count("/bad"), 0u);
}

// SPEC §5: SIGTERM finishes what is in flight, answers new arrivals 503, exits 0.
// SPEC §5.1 "Packet limits": over MQTT 5 homd announces MQTT_MAX_PAYLOAD_BYTES plus headroom
// as its Maximum Packet Size, so the broker never delivers a larger request (homd's memory
// is not spent on it) and homd keeps its connection.
TEST_F(FaultsTest, OversizeRequestIsNotDeliveredOverMqtt5) {
  Mosquitto broker;
  ApiServer api;
  homd_ = std::make_unique<Homd>(broker.port(), api.base_url(),
                                 Env{{"MQTT_VERSION", "5"}, {"MQTT_MAX_PAYLOAD_BYTES", "10000"}});
  ASSERT_TRUE(homd_->wait_subscribed()) << diag();
  MqttClient client(broker.uri(), homd_->topic_start(), homd_->topic_id());
  const std::string huge = "{\"req_id\":\"huge\",\"body\":\"" + std::string(1 << 20, 'x') + "\"}";
  client.publish_raw(client.request_topic("post", "echo/huge"), huge);
  // Sent after the huge one on the same connection: once it is answered, the huge one has
  // been dealt with by the broker.
  auto after = client.call("get", "gps/latitude");
  ASSERT_TRUE(after) << diag();
  EXPECT_EQ(after->doc.value("status", 0), 200);
  EXPECT_FALSE(client.wait_reply("huge", deadline_in(std::chrono::milliseconds(500))));
  EXPECT_EQ(api.count("/echo/"), 0u);
  EXPECT_EQ(homd_->process().count_in_log("connection to the broker lost"), 0) << diag();
  EXPECT_EQ(homd_->process().count_in_log("subscribed to "), 1) << diag();
}

TEST_F(FaultsTest, SigtermDrainsInFlightAndRefusesNew) {
  Mosquitto broker;
  ApiServer api;
  homd_ = std::make_unique<Homd>(broker.port(), api.base_url());
  ASSERT_TRUE(homd_->wait_subscribed()) << diag();
  MqttClient client(broker.uri(), homd_->topic_start(), homd_->topic_id());
  client.request("get", "slow", {{"req_id", "in-flight"}});
  ASSERT_TRUE(api.wait_slow_arrivals(1)) << diag();

  ASSERT_EQ(::kill(homd_->process().pid(), SIGTERM), 0);
  ASSERT_TRUE(homd_->process().wait_for_log("SIGTERM")) << diag();
  // homd logs the signal just before it starts draining, so a request may still slip in
  // and be served; but while the slow call is in flight, new ones must soon get 503.
  std::optional<Reply> refused;
  const auto until = deadline_in();
  for (int i = 0; !refused && Clock::now() < until; ++i) {
    auto reply = client.call("get", "gps/latitude", {{"req_id", "late-" + std::to_string(i)}});
    ASSERT_TRUE(reply) << diag();
    if (field(reply->doc, "status") != 200) refused = reply;
  }
  ASSERT_TRUE(refused) << diag();
  EXPECT_EQ(field(refused->doc, "status"), 503) << refused->payload;
  EXPECT_TRUE(field(refused->doc, "content").is_null()) << refused->payload;
  EXPECT_TRUE(field(refused->doc, "error").is_string()) << refused->payload;
  EXPECT_EQ(api.slow_arrivals(), 1u);
  EXPECT_FALSE(client.wait_reply("in-flight", Clock::now())) << "answered before its release";

  api.release_slow();
  auto finished = client.wait_reply("in-flight");
  ASSERT_TRUE(finished) << diag();
  EXPECT_EQ(field(finished->doc, "status"), 200) << finished->payload;
  EXPECT_EQ(homd_->process().wait_exit(deadline_in()), 0) << diag();
}

// SPEC §3/§5: a persistent session (MQTT_CLEAN_SESSION=0, stable client id) and no
// unsubscribe on SIGTERM, so a request sent while homd is stopped is served at the next start.
void FaultsTest::check_request_sent_while_stopped(const Env& env) {
  Mosquitto broker;
  ApiServer api;
  homd_ = std::make_unique<Homd>(broker.port(), api.base_url(), env);
  ASSERT_TRUE(homd_->wait_subscribed()) << diag();
  Env same_device = env;
  same_device["MQTT_TOPIC_START"] = homd_->topic_start();
  same_device["MQTT_TOPIC_ID"] = homd_->topic_id();
  MqttClient client(broker.uri(), homd_->topic_start(), homd_->topic_id());
  ASSERT_EQ(homd_->stop(), 0) << diag();

  client.request("get", "gps/latitude", {{"req_id", "while-stopped"}});
  EXPECT_EQ(api.count("/gps"), 0u);
  homd_ = std::make_unique<Homd>(broker.port(), api.base_url(), same_device);
  ASSERT_TRUE(homd_->wait_subscribed()) << diag();
  auto reply = client.wait_reply("while-stopped");
  ASSERT_TRUE(reply) << diag() << "\n--- mosquitto ---\n" << tail(broker.log(), 30);
  EXPECT_EQ(field(reply->doc, "status"), 200) << reply->payload;
}

TEST_F(FaultsTest, RequestSentWhileStoppedIsServedOnRestart) {
  check_request_sent_while_stopped({});
}

TEST_F(FaultsTest, RequestSentWhileStoppedIsServedOnRestartMqtt311) {
  check_request_sent_while_stopped({{"MQTT_VERSION", "3.1.1"}});
}

TEST_F(FaultsTest, SigtermExitsZero) {
  Mosquitto broker;
  ApiServer api;
  homd_ = std::make_unique<Homd>(broker.port(), api.base_url());
  ASSERT_TRUE(homd_->wait_subscribed()) << diag();
  EXPECT_EQ(homd_->stop(), 0) << diag();
}

}  // namespace
}  // namespace hom::test
