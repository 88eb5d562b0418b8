// The multi-flight requester (hom's and the gateway's MQTT half) against a real Mosquitto
// and homd: many concurrent calls over one session, each matched to its own reply, each
// with its own deadline.
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "hom/config.hpp"
#include "hom/requester.hpp"
#include "support/harness.hpp"

namespace hom::test {
namespace {

MqttConfig broker_config(int port, const std::string& version) {
  const std::map<std::string, std::string> vars = {{"MQTT_HOST", "127.0.0.1"},
                                                   {"MQTT_PORT", std::to_string(port)},
                                                   {"MQTT_TLS", "off"},
                                                   {"MQTT_VERSION", version}};
  const hom::Env env = [&](const std::string& name) -> std::optional<std::string> {
    const auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
  return load_mqtt_config(env, load_topic_config(env));
}

class RequesterTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    homd_ = std::make_unique<Homd>(broker_.port(), api_.base_url(),
                                   Env{{"MQTT_VERSION", GetParam()}, {"WORKERS", "8"}});
    ASSERT_TRUE(homd_->wait_subscribed()) << homd_->log_tail();
    requester_ = std::make_unique<Requester>(broker_config(broker_.port(), GetParam()),
                                             homd_->topic_start());
    const auto error = requester_->connect(std::chrono::seconds(10));
    ASSERT_FALSE(error) << error->reason;
  }

  Requester::Call echo_call(int i, std::chrono::milliseconds timeout) const {
    Requester::Call call;
    call.device = homd_->topic_id();
    call.verb = "post";
    call.path = "echo/" + std::to_string(i);
    call.request.body_kind = RequestEnvelope::Body::kJson;
    call.request.body = Json({{"n", i}}).dump();
    call.timeout = timeout;
    return call;
  }

  Mosquitto broker_;
  ApiServer api_;
  std::unique_ptr<Homd> homd_;
  std::unique_ptr<Requester> requester_;
};

// 200 calls in flight at once over one session: each gets the reply to its own request.
TEST_P(RequesterTest, ConcurrentCallsEachGetTheirOwnReply) {
  constexpr int kCalls = 200;
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::optional<Requester::Result>> results(kCalls);
  int done = 0;
  for (int i = 0; i < kCalls; ++i) {
    requester_->start(echo_call(i, std::chrono::seconds(30)), [&, i](Requester::Result r) {
      std::lock_guard<std::mutex> lock(mu);
      results[static_cast<std::size_t>(i)] = std::move(r);
      ++done;
      cv.notify_all();
    });
  }
  std::unique_lock<std::mutex> lock(mu);
  ASSERT_TRUE(
      cv.wait_until(lock, deadline_in(std::chrono::seconds(60)), [&] { return done == kCalls; }))
      << done << " of " << kCalls << " completed\n"
      << homd_->log_tail();
  for (int i = 0; i < kCalls; ++i) {
    const auto& r = results[static_cast<std::size_t>(i)];
    ASSERT_TRUE(r);
    ASSERT_EQ(r->outcome, Requester::Outcome::kReply) << i;
    EXPECT_EQ(r->reply.status, 200);
    const Json content = Json::parse(r->reply.content);
    EXPECT_EQ(content.value("path", ""), "/echo/" + std::to_string(i)) << r->payload;
    EXPECT_EQ(content.value("body", ""), Json({{"n", i}}).dump()) << r->payload;
  }
  EXPECT_EQ(api_.count("/echo/"), static_cast<std::size_t>(kCalls));
}

// Each call keeps its own deadline: calls to a device nobody serves time out at theirs,
// while calls to the real device in between are answered.
TEST_P(RequesterTest, EachCallHasItsOwnDeadline) {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::pair<std::string, Requester::Outcome>> finished;
  const auto record = [&](std::string name) {
    return [&, name](Requester::Result r) {
      std::lock_guard<std::mutex> lock(mu);
      finished.emplace_back(name, r.outcome);
      cv.notify_all();
    };
  };
  Requester::Call ghost = echo_call(0, std::chrono::milliseconds(1500));
  ghost.device = homd_->topic_id() + "-ghost";
  requester_->start(ghost, record("ghost-long"));
  ghost.timeout = std::chrono::milliseconds(300);
  requester_->start(ghost, record("ghost-short"));
  requester_->start(echo_call(1, std::chrono::seconds(20)), record("real"));
  std::unique_lock<std::mutex> lock(mu);
  ASSERT_TRUE(cv.wait_until(lock, deadline_in(), [&] { return finished.size() == 3; }));
  // The short ghost expires before the long one; the real call is answered, not expired.
  const auto pos = [&](const std::string& name) {
    return std::find_if(finished.begin(), finished.end(),
                        [&](const auto& f) { return f.first == name; }) -
           finished.begin();
  };
  EXPECT_LT(pos("ghost-short"), pos("ghost-long"));
  EXPECT_EQ(finished[static_cast<std::size_t>(pos("real"))].second, Requester::Outcome::kReply);
  EXPECT_EQ(finished[static_cast<std::size_t>(pos("ghost-short"))].second,
            Requester::Outcome::kTimeout);
  EXPECT_EQ(finished[static_cast<std::size_t>(pos("ghost-long"))].second,
            Requester::Outcome::kTimeout);
}

INSTANTIATE_TEST_SUITE_P(Versions, RequesterTest, ::testing::Values("5", "3.1.1"),
                         [](const auto& info) { return info.param == "5" ? "Mqtt5" : "Mqtt311"; });

}  // namespace
}  // namespace hom::test
