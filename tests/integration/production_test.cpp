// homd in production (SPEC §2 MQTT 5 and presence, §3 sessions, §5 shutdown): real
// Mosquitto, real HTTP API, real homd processes and real signals.
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "support/harness.hpp"

namespace hom::test {
namespace {

// A Paho MQTT 5 client that records every message it receives, with its properties.
class Mqtt5Client {
 public:
  struct Message {
    std::string topic;
    std::string payload;
    std::string correlation;
    std::string content_type;
    bool retained = false;
    int expiry_s = -1;
  };

  explicit Mqtt5Client(const std::string& uri)
      : client_(uri, unique_name("v5-"), mqtt::create_options(MQTTVERSION_5), nullptr) {
    client_.set_message_callback([this](mqtt::const_message_ptr m) {
      Message out{m->get_topic(), m->get_payload_str(), "", "", m->is_retained(), -1};
      const auto& p = m->get_properties();
      if (p.contains(mqtt::property::CORRELATION_DATA))
        out.correlation = mqtt::get<mqtt::binary>(p, mqtt::property::CORRELATION_DATA);
      if (p.contains(mqtt::property::CONTENT_TYPE))
        out.content_type = mqtt::get<std::string>(p, mqtt::property::CONTENT_TYPE);
      if (p.contains(mqtt::property::MESSAGE_EXPIRY_INTERVAL))
        out.expiry_s =
            static_cast<int>(mqtt::get<std::uint32_t>(p, mqtt::property::MESSAGE_EXPIRY_INTERVAL));
      std::lock_guard<std::mutex> lock(mu_);
      messages_.push_back(std::move(out));
      cv_.notify_all();
    });
    auto opts = mqtt::connect_options_builder().mqtt_version(MQTTVERSION_5).clean_start(true);
    client_.connect(opts.finalize())->wait();
  }
  ~Mqtt5Client() {
    try {
      client_.disconnect()->wait();
    } catch (const std::exception&) {
    }
  }

  void subscribe(const std::string& filter) { client_.subscribe(filter, 2)->wait(); }

  void request(const std::string& topic, const Json& payload, const std::string& response_topic,
               const std::string& correlation, int expiry_s = 0, int qos = 2) {
    auto msg = mqtt::make_message(topic, payload.dump(), qos, false);
    mqtt::properties props;
    if (!response_topic.empty()) props.add({mqtt::property::RESPONSE_TOPIC, response_topic});
    if (!correlation.empty()) props.add({mqtt::property::CORRELATION_DATA, correlation});
    if (expiry_s > 0) props.add({mqtt::property::MESSAGE_EXPIRY_INTERVAL, expiry_s});
    msg->set_properties(props);
    client_.publish(msg)->wait();
  }

  // Messages on `topic`, waiting until there are at least n.
  std::vector<Message> wait(const std::string& topic, std::size_t n,
                            Clock::time_point deadline = deadline_in()) {
    std::unique_lock<std::mutex> lock(mu_);
    std::vector<Message> out;
    cv_.wait_until(lock, deadline, [&] {
      out.clear();
      for (const auto& m : messages_)
        if (m.topic == topic) out.push_back(m);
      return out.size() >= n;
    });
    return out;
  }

 private:
  mqtt::async_client client_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Message> messages_;  // guarded by mu_
};

class ProductionTest : public ::testing::Test {
 protected:
  void start(const Env& env = {}) {
    homd_ = std::make_unique<Homd>(broker_.port(), api_.base_url(), env);
    ASSERT_TRUE(homd_->wait_subscribed()) << homd_->log_tail();
  }
  std::string req(const std::string& rest) const {
    return homd_->topic_start() + "/req/" + homd_->topic_id() + "/" + rest;
  }
  std::string res(const std::string& rest) const {
    return homd_->topic_start() + "/res/" + homd_->topic_id() + "/" + rest;
  }
  std::string status_topic() const { return homd_->topic_start() + "/status/" + homd_->topic_id(); }

  Mosquitto broker_;
  ApiServer api_;
  std::unique_ptr<Homd> homd_;
};

TEST_F(ProductionTest, Mqtt5ResponseTopicAndCorrelationData) {
  start();
  EXPECT_NE(homd_->log().find("(MQTT 5)"), std::string::npos) << homd_->log_tail();
  Mqtt5Client c(broker_.uri());
  const std::string mine = res("callers/42");
  c.subscribe(mine);
  c.request(req("get/gps/latitude"), Json{{"req_id", 1}}, mine, std::string("\x01\x02corr", 6));
  const auto got = c.wait(mine, 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].correlation, std::string("\x01\x02corr", 6));
  EXPECT_EQ(got[0].content_type, "application/json");
  const auto doc = Json::parse(got[0].payload);
  EXPECT_EQ(doc["status"], 200);
  EXPECT_EQ(doc["req_id"], 1);
}

TEST_F(ProductionTest, Mqtt5ResponseTopicOutsideTheDeviceGets400OnMirroredTopic) {
  start();
  Mqtt5Client c(broker_.uri());
  c.subscribe(res("#"));
  c.subscribe("elsewhere/#");
  c.request(req("get/gps/latitude"), Json{{"req_id", "x"}}, "elsewhere/steal", "c1");
  const auto got = c.wait(res("get/gps/latitude"), 1);
  ASSERT_EQ(got.size(), 1u);
  const auto doc = Json::parse(got[0].payload);
  EXPECT_EQ(doc["status"], 400);
  EXPECT_NE(doc["error"].get<std::string>().find("Response Topic"), std::string::npos);
  EXPECT_TRUE(c.wait("elsewhere/steal", 1, deadline_in(std::chrono::milliseconds(0))).empty());
  EXPECT_EQ(api_.count("/gps/"), 0u);
}

TEST_F(ProductionTest, Mqtt5DuplicateCorrelationIsExecutedOnce) {
  start();
  Mqtt5Client c(broker_.uri());
  const std::string mine = res("callers/dup");
  c.subscribe(mine);
  for (int i = 0; i < 3; ++i) c.request(req("post/echo/once"), Json{{"body", "x"}}, mine, "same");
  const auto got = c.wait(mine, 3);
  ASSERT_EQ(got.size(), 3u);
  for (const auto& m : got) EXPECT_EQ(Json::parse(m.payload)["status"], 200);
  EXPECT_EQ(api_.count("/echo/once"), 1u);
}

TEST_F(ProductionTest, Mqtt5ExpiredWhileQueuedIsNotExecuted) {
  start({{"WORKERS", "1"}});
  Mqtt5Client c(broker_.uri());
  const std::string mine = res("callers/exp");
  c.subscribe(mine);
  c.request(req("get/slow"), Json::object(), mine, "hold");
  ASSERT_TRUE(api_.wait_slow_arrivals(1));  // the only worker is busy
  c.request(req("get/echo/late"), Json::object(), mine, "late", /*expiry_s=*/1);
  // The expiry itself is what is tested: let the queued request's second run out.
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  api_.release_slow();
  const auto got = c.wait(mine, 2);
  ASSERT_EQ(got.size(), 2u);
  bool saw_expired = false;
  for (const auto& m : got) {
    const auto doc = Json::parse(m.payload);
    if (m.correlation == "late") {
      EXPECT_EQ(doc["status"], 504);
      EXPECT_NE(doc["error"].get<std::string>().find("expired"), std::string::npos);
      saw_expired = true;
    }
  }
  EXPECT_TRUE(saw_expired);
  EXPECT_EQ(api_.count("/echo/late"), 0u);
}

TEST_F(ProductionTest, RetainedOnlineStatusAfterConnect) {
  start();
  MqttClient c(broker_.uri(), homd_->topic_start(), homd_->topic_id());
  Mqtt5Client v5(broker_.uri());
  v5.subscribe(status_topic());
  const auto got = v5.wait(status_topic(), 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_TRUE(got[0].retained);
  const auto doc = Json::parse(got[0].payload);
  EXPECT_EQ(doc["online"], true);
  EXPECT_TRUE(doc["version"].is_string());
  EXPECT_TRUE(doc["since"].is_number_integer());
}

TEST_F(ProductionTest, OfflineStatusAfterKill9OnceKeepaliveLapses) {
  start({{"MQTT_KEEPALIVE_S", "1"}});
  Mqtt5Client v5(broker_.uri());
  v5.subscribe(status_topic());
  ASSERT_EQ(v5.wait(status_topic(), 1).size(), 1u);
  homd_->process().kill9();
  const auto got = v5.wait(status_topic(), 2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(Json::parse(got[1].payload)["online"], false);
}

TEST_F(ProductionTest, CleanStopPublishesOfflineAndExitsZero) {
  start();
  Mqtt5Client v5(broker_.uri());
  v5.subscribe(status_topic());
  ASSERT_EQ(v5.wait(status_topic(), 1).size(), 1u);
  EXPECT_EQ(homd_->stop(), 0);
  const auto got = v5.wait(status_topic(), 2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(Json::parse(got[1].payload)["online"], false);
}

TEST_F(ProductionTest, SigtermAnswersTheRequestInFlightThenExitsZero) {
  start();
  MqttClient c(broker_.uri(), homd_->topic_start(), homd_->topic_id());
  c.request("get", "slow", Json{{"req_id", "inflight"}});
  ASSERT_TRUE(api_.wait_slow_arrivals(1));
  ASSERT_EQ(::kill(homd_->process().pid(), SIGTERM), 0);
  ASSERT_TRUE(homd_->process().wait_for_log("stopping"));
  c.request("get", "gps/latitude", Json{{"req_id", "during-drain"}});
  const auto drained = c.wait_reply("during-drain");
  ASSERT_TRUE(drained);
  EXPECT_EQ(drained->doc["status"], 503);
  api_.release_slow();
  const auto reply = c.wait_reply("inflight");
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->doc["status"], 200);
  EXPECT_EQ(homd_->process().wait_exit(deadline_in()), 0);
}

// Requests published while homd is stopped wait in the broker (persistent session, stable
// client id, no UNSUBSCRIBE at shutdown) and are served at the next start.
TEST_F(ProductionTest, OfflineDeliveryAcrossHomdRestart) {
  for (const char* version : {"5", "3.1.1"}) {
    SCOPED_TRACE(version);
    start({{"MQTT_VERSION", version}});
    const Env env = homd_->env();
    ASSERT_EQ(homd_->stop(), 0);
    MqttClient c(broker_.uri(), homd_->topic_start(), homd_->topic_id());
    c.request("get", "gps/latitude", Json{{"req_id", std::string("while-away-") + version}});
    homd_ = std::make_unique<Homd>(broker_.port(), api_.base_url(), env);
    const auto reply = c.wait_reply(std::string("while-away-") + version);
    ASSERT_TRUE(reply) << homd_->log_tail();
    EXPECT_EQ(reply->doc["status"], 200);
    ASSERT_EQ(homd_->stop(), 0);
  }
}

// The broker restarts (persistence on) while homd is stopped: homd's session, with the
// request queued in it, survives in the broker and is served at homd's next start.
TEST(ProductionBrokerTest, OfflineDeliveryAcrossBrokerRestart) {
  Mosquitto::Options options;
  options.persistence = true;
  Mosquitto broker(options);
  ApiServer api;
  for (const char* version : {"5", "3.1.1"}) {
    SCOPED_TRACE(version);
    auto homd =
        std::make_unique<Homd>(broker.port(), api.base_url(), Env{{"MQTT_VERSION", version}});
    ASSERT_TRUE(homd->wait_subscribed()) << homd->log_tail();
    const Env env = homd->env();
    ASSERT_EQ(homd->stop(), 0);
    broker.restart();  // SIGTERM: Mosquitto saves its sessions; the start loads them
    const std::string req_id = std::string("across-broker-restart-") + version;
    {
      MqttClient c(broker.uri(), env.at("MQTT_TOPIC_START"), env.at("MQTT_TOPIC_ID"));
      c.request("get", "gps/latitude", Json{{"req_id", req_id}});
      homd = std::make_unique<Homd>(broker.port(), api.base_url(), env);
      const auto reply = c.wait_reply(req_id);
      ASSERT_TRUE(reply) << homd->log_tail() << "\n--- broker ---\n" << tail(broker.log());
      EXPECT_EQ(reply->doc["status"], 200);
    }
    ASSERT_EQ(homd->stop(), 0);
  }
}

// Under load, the broker is restarted three times (SIGTERM, persistence on). A requester
// with a persistent session keeps publishing at QoS 2 (Paho buffers while the broker is
// away). Every request is answered: homd buffers replies produced while the broker is away
// and sends them after its reconnect.
//
// Each request names itself in its topic (get/echo/<n>), so a reply identifies its request
// even when homd could not read the payload. That happens: Paho C, resending a buffered
// QoS 2 PUBLISH after an automatic reconnect of a persistent session, now and then sends
// garbage for the payload (eclipse-paho/paho.mqtt.c#1592; seen here about once in 40 runs
// under TSan). homd answers such a request with one 400 ("payload is not valid JSON"),
// which is the right answer and still exactly one.
TEST(ProductionBrokerTest, BrokerRestartsUnderLoadEveryQos2RequestAnsweredOnce) {
  Mosquitto::Options options;
  options.persistence = true;
  Mosquitto broker(options);
  ApiServer api;
  // Short back-off windows (2 s after a loss, doubling at each failed attempt): three restarts
  // in a row grow them, and the default ones (8 s, 16 s, ...) could take most of the wait.
  Homd homd(broker.port(), api.base_url(), Env{{"MQTT_RECONNECT_MIN_MS", "250"}});
  ASSERT_TRUE(homd.wait_subscribed()) << homd.log_tail();
  const std::string start = homd.topic_start(), id = homd.topic_id();
  const std::string request_prefix = start + "/req/" + id + "/get/echo/";
  const std::string reply_prefix = start + "/res/" + id + "/get/echo/";

  std::mutex mu;
  std::condition_variable cv;
  std::map<std::string, std::vector<int>> answers;  // request name -> statuses; guarded by mu
  std::vector<std::string> unreadable;              // requests homd answered 400 "not valid JSON"
  mqtt::create_options create(MQTTVERSION_3_1_1, 10000);
  create.set_send_while_disconnected(true, true);
  mqtt::async_client client(broker.uri(), unique_name("persistent-"), create, nullptr);
  client.set_message_callback([&](mqtt::const_message_ptr m) {
    const std::string& topic = m->get_topic();
    if (topic.rfind(reply_prefix, 0) != 0) return;
    const std::string name = topic.substr(reply_prefix.size());
    const auto doc = Json::parse(m->get_payload_str(), nullptr, false);
    const int status =
        doc.is_object() && doc["status"].is_number_integer() ? doc["status"].get<int>() : -1;
    std::lock_guard<std::mutex> lock(mu);
    answers[name].push_back(status);
    if (status == 400 && m->get_payload_str().find("not valid JSON") != std::string::npos) {
      unreadable.push_back(name);
    }
    cv.notify_all();
  });
  const std::string filter = start + "/res/" + id + "/#";
  client.set_connected_handler([&](const std::string&) { client.subscribe(filter, 2); });
  auto opts = mqtt::connect_options_builder()
                  .clean_session(false)
                  .automatic_reconnect(std::chrono::milliseconds(100), std::chrono::seconds(1))
                  .finalize();
  client.connect(opts)->wait();
  client.subscribe(filter, 2)->wait();

  const int kCycles = 3, kPerCycle = 20;
  for (int cycle = 0; cycle < kCycles; ++cycle) {
    for (int i = 0; i < kPerCycle; ++i) {
      const std::string name = "r" + std::to_string(cycle) + "-" + std::to_string(i);
      client.publish(request_prefix + name, Json{{"req_id", name}}.dump(), 2, false);
    }
    broker.restart();
  }
  std::unique_lock<std::mutex> lock(mu);
  const bool all = cv.wait_until(lock, deadline_in(std::chrono::seconds(60)), [&] {
    return answers.size() == static_cast<std::size_t>(kCycles * kPerCycle);
  });
  EXPECT_TRUE(all) << answers.size() << " of " << kCycles * kPerCycle << " answered\n"
                   << homd.log_tail();
  // The broker's log shows where the payload went bad: its size as the requester sent it
  // ("Received PUBLISH from persistent-…") against the size of the request as written.
  const std::string broker_log = broker.log();
  for (const auto& name : unreadable) {
    std::printf(
        "unreadable: %s (%zu bytes as written) arrived at homd with a corrupt payload, "
        "answered 400\n",
        name.c_str(), Json{{"req_id", name}}.dump().size());
    std::istringstream lines(broker_log);
    for (std::string line; std::getline(lines, line);) {
      if (line.find("/get/echo/" + name + "'") != std::string::npos)
        std::printf("broker: %s\n", line.c_str());
    }
  }
  // Exactly once is what QoS 2 promises. Mosquitto 2.0.11 with persistence breaks it across
  // a restart: a QoS 2 exchange caught after the PUBREC (the broker's PUBREL already sent)
  // is resent after the restart as a whole PUBLISH with the DUP flag. Paho has completed
  // that exchange and, for QoS 2, does not pass the DUP flag on, so homd gets it as a new
  // request: executed and answered twice (seen in the broker's log, printed below; about
  // 1 run in 60, more under load). A 3.1.1 requester like this one cannot be protected;
  // an MQTT 5 one with Correlation Data is answered from the reply cache instead. So each
  // duplicate must be explained by such a redelivery from the broker, to homd or to this
  // client: homd must never duplicate on its own.
  int duplicates = 0;
  for (const auto& [name, statuses] : answers) {
    for (const int status : statuses) {
      const bool unread = std::find(unreadable.begin(), unreadable.end(), name) != unreadable.end();
      EXPECT_TRUE(status == 200 || (status == 400 && unread)) << name << ": " << status;
    }
    if (statuses.size() > 1) {
      duplicates += static_cast<int>(statuses.size()) - 1;
      std::printf("duplicate: %s answered %zux; homd executed %d calls, API saw %zu\n",
                  name.c_str(), statuses.size(), homd.process().count_in_log("GET echo/"),
                  api.count("/echo/"));
    }
  }
  int redeliveries = 0;  // PUBLISH packets the broker sent again, DUP flag set
  std::istringstream log(broker_log);
  for (std::string line; std::getline(log, line);) {
    if (line.find("Sending PUBLISH to ") == std::string::npos ||
        line.find("(d1, q2") == std::string::npos)
      continue;
    ++redeliveries;
    if (duplicates > 0) std::printf("broker: %s\n", line.c_str());
  }
  EXPECT_LE(duplicates, redeliveries) << "a duplicate reply the broker did not cause";
  lock.unlock();
  client.disconnect()->wait();
}

// sd_notify(3) through a NOTIFY_SOCKET the test binds.
TEST_F(ProductionTest, NotifiesSystemd) {
  TempDir dir;
  const std::string path = dir.file("notify.sock");
  const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  timeval tv{0, 200000};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);

  start({{"NOTIFY_SOCKET", path}, {"WATCHDOG_USEC", "2000000"}});
  std::vector<std::string> seen;
  const auto collect_until = [&](const std::string& needle) {
    const auto deadline = deadline_in();
    while (Clock::now() < deadline) {
      for (const auto& s : seen)
        if (s.find(needle) != std::string::npos) return true;
      char buf[4096];
      const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n > 0) seen.emplace_back(buf, static_cast<std::size_t>(n));
    }
    return false;
  };
  EXPECT_TRUE(collect_until("READY=1"));
  EXPECT_TRUE(collect_until("STATUS=connected to "));
  EXPECT_TRUE(collect_until("WATCHDOG=1"));
  ASSERT_EQ(homd_->stop(), 0);
  EXPECT_TRUE(collect_until("STOPPING=1"));
  ::close(fd);
  for (const auto& s : seen) std::printf("notify: %s\n", s.c_str());
}

}  // namespace
}  // namespace hom::test
