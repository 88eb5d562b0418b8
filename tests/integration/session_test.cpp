// The MQTT session against a real Mosquitto that limits what clients may do (SPEC §5.1):
// the QoS the broker grants, its Maximum Packet Size, and a broker that drops the
// connection. Each ends in an answered request and a homd that is still connected.
#include <atomic>
#include <memory>
#include <string>

#include <gtest/gtest.h>

#include "hom/session.hpp"
#include "support/harness.hpp"

namespace hom::test {
namespace {

int status_of(const Reply& reply) { return reply.doc.value("status", 0); }

class SessionTest : public ::testing::Test {
 protected:
  void start(const std::vector<std::string>& broker_config, const Env& env) {
    Mosquitto::Options options;
    options.extra_config = broker_config;
    broker_ = std::make_unique<Mosquitto>(options);
    homd_ = std::make_unique<Homd>(broker_->port(), api_.base_url(), env);
    ASSERT_TRUE(homd_->wait_subscribed()) << diag();
    client_ = std::make_unique<MqttClient>(broker_->uri(), homd_->topic_start(), homd_->topic_id());
  }

  // A request published at `qos`; its reply on the mirrored topic.
  std::optional<Reply> request(const std::string& path, int qos, const Json& req_id) {
    const Json payload = {{"req_id", req_id}};
    client_->publish_raw(client_->request_topic("get", path), payload.dump(), qos);
    return client_->wait_reply(req_id);
  }

  std::string diag() const {
    return "--- homd log (tail) ---\n" + (homd_ ? homd_->log_tail() : std::string("(none)")) +
           "\n--- broker log (tail) ---\n" + (broker_ ? tail(broker_->log(), 20) : "");
  }

  int losses() const { return homd_->process().count_in_log("connection to the broker lost"); }

  ApiServer api_;
  std::unique_ptr<Mosquitto> broker_;
  std::unique_ptr<Homd> homd_;
  std::unique_ptr<MqttClient> client_;
};

// A broker that allows QoS 1 at most disconnects a client that publishes at QoS 2: replies
// must go out at the QoS granted for the request subscription (3.1.1: SUBACK) or the
// CONNACK's Maximum QoS (MQTT 5).
TEST_F(SessionTest, RepliesFollowTheGrantedQos) {
  for (const char* version : {"3.1.1", "5"}) {
    SCOPED_TRACE(version);
    ASSERT_NO_FATAL_FAILURE(start({"max_qos 1"}, {{"MQTT_VERSION", version}}));
    for (int i = 0; i < 5; ++i) {
      auto reply = request("gps/latitude", 1, "q" + std::to_string(i));
      ASSERT_TRUE(reply) << diag();
      EXPECT_EQ(status_of(*reply), 200);
      EXPECT_LE(reply->qos, 1);
    }
    EXPECT_EQ(losses(), 0) << diag();
    EXPECT_EQ(homd_->process().count_in_log("subscribed to "), 1) << diag();
    EXPECT_EQ(homd_->stop(), 0);
    homd_.reset();
  }
}

// MQTT 5: the broker's CONNACK Maximum Packet Size bounds every reply; one that would not
// fit becomes a 502 instead of a publish that makes the broker drop the connection.
TEST_F(SessionTest, ReplyOverTheBrokersPacketLimitIs502) {
  ASSERT_NO_FATAL_FAILURE(start({"max_packet_size 131072"}, {{"MQTT_VERSION", "5"}}));
  auto big = request("big?bytes=200000", 1, "big");
  ASSERT_TRUE(big) << diag();
  EXPECT_EQ(status_of(*big), 502);
  EXPECT_NE(big->doc.value("error", "").find("too large for the broker"), std::string::npos)
      << big->payload;
  // A control byte becomes six bytes of JSON: 25 000 of them, sent as 33 KB of base64 and
  // echoed by the API, make a reply over the limit.
  const Json escaped = {{"req_id", "escaped"},
                        {"body_base64", base64_encode(std::string(25000, '\x01'))}};
  client_->publish_raw(client_->request_topic("post", "echo/escaped"), escaped.dump(), 1);
  auto echo = client_->wait_reply("escaped");
  ASSERT_TRUE(echo) << diag();
  EXPECT_EQ(status_of(*echo), 502) << echo->payload.substr(0, 200);
  auto fine = request("text", 1, "fine");
  ASSERT_TRUE(fine) << diag();
  EXPECT_EQ(status_of(*fine), 200);
  EXPECT_EQ(losses(), 0) << diag();
}

// 3.1.1 has no CONNACK limit: with MQTT_MAX_MESSAGE_BYTES set above what the broker takes,
// the broker drops the connection on an oversize reply. homd must notice, say so and
// reconnect, and keep serving.
TEST_F(SessionTest, ConnectionDroppedByTheBrokerIsNoticedAndReconnected) {
  ASSERT_NO_FATAL_FAILURE(start({"max_packet_size 131072"}, {{"MQTT_VERSION", "3.1.1"},
                                                             {"MQTT_MAX_MESSAGE_BYTES", "1048576"},
                                                             {"MQTT_RESPONSE_QOS", "0"}}));
  client_->publish_raw(client_->request_topic("get", "big?bytes=200000"), R"({"req_id":"big"})", 1);
  ASSERT_TRUE(homd_->process().wait_for_log("connection to the broker lost")) << diag();
  ASSERT_TRUE(homd_->wait_subscribed(2, deadline_in(std::chrono::seconds(45)))) << diag();
  auto fine = request("text", 1, "after");
  ASSERT_TRUE(fine) << diag();
  EXPECT_EQ(status_of(*fine), 200);
}

// Another client logs in with homd's client id and takes its session over (a broker may end
// the connection with a DISCONNECT packet, which Paho reports through a handler of its own,
// or just close it): homd must notice, say so, and reconnect once the impostor is gone.
TEST_F(SessionTest, SessionTakenOverIsNoticedAndReconnected) {
  ASSERT_NO_FATAL_FAILURE(start({}, {{"MQTT_VERSION", "5"}}));
  {
    mqtt::async_client impostor(broker_->uri(), "homd-" + homd_->topic_id(),
                                mqtt::create_options(MQTTVERSION_5));
    auto options = mqtt::connect_options_builder().mqtt_version(MQTTVERSION_5).finalize();
    ASSERT_TRUE(impostor.connect(options)->wait_for(std::chrono::seconds(20)));
    ASSERT_TRUE(homd_->process().wait_for_log("connection to the broker lost")) << diag();
    impostor.disconnect()->wait_for(std::chrono::seconds(5));
  }
  ASSERT_TRUE(homd_->wait_subscribed(2, deadline_in(std::chrono::seconds(45)))) << diag();
  auto fine = request("text", 1, "after-takeover");
  ASSERT_TRUE(fine) << diag();
  EXPECT_EQ(status_of(*fine), 200);
}

std::atomic<int> g_paho_traces_below_error{0};

void count_paho_trace(enum MQTTASYNC_TRACE_LEVELS level, char*) {
  if (level < MQTTASYNC_TRACE_ERROR) ++g_paho_traces_below_error;
}

// Paho C records every step of its threads in a trace buffer, which it frees under them when
// its last client is destroyed: a session keeps it to errors, so that nothing is written
// there. (A connect to a port nobody listens on makes Paho trace plenty below that.)
TEST(PahoTrace, ASessionKeepsPahoToRecordingErrorsOnly) {
  SessionOptions options;
  options.mqtt.host = "127.0.0.1";
  options.mqtt.port = free_port();
  options.mqtt.server_uri = "tcp://127.0.0.1:" + std::to_string(options.mqtt.port);
  options.mqtt.tls = false;
  options.client_id = "hom-trace-test";
  MqttSession session(
      options, [](InboundMessage&&) {}, [] {});
  MQTTAsync_setTraceCallback(&count_paho_trace);
  const std::atomic<bool> stop{false};
  const auto error = session.connect_once(stop, std::chrono::seconds(5));
  MQTTAsync_setTraceCallback(nullptr);
  EXPECT_TRUE(error.has_value()) << "nothing listens on port " << options.mqtt.port;
  EXPECT_EQ(g_paho_traces_below_error.load(), 0);
}

}  // namespace
}  // namespace hom::test
