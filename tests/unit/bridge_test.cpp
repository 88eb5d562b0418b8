// The Bridge with a fake executor, a fake publisher and a fake clock: admission, the reply
// cache, statuses made from HTTP results, packet limits, shutdown and stall detection.
#include "hom/bridge.hpp"

#include <chrono>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "hom/config.hpp"
#include "unit/bridge_fakes.hpp"
#include "unit/fake_clock.hpp"

namespace hom::test {
namespace {

using nlohmann::json;
using Outcome = HttpResult::Outcome;
using Vars = std::map<std::string, std::string>;
using namespace std::chrono_literals;

constexpr const char* kRequestPrefix = "v1/req/dev/";
constexpr const char* kReplyTopic = "v1/res/dev/callers/1";  // an MQTT 5 Response Topic

Config config_with(Vars vars) {
  vars.emplace("MQTT_TOPIC_ID", "dev");
  vars.emplace("HTTP_BASE_URL", "http://127.0.0.1:9/");
  return load_config([vars](const std::string& name) -> std::optional<std::string> {
    const auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  });
}

InboundMessage message(const std::string& rest, const json& payload = json::object()) {
  InboundMessage m;
  m.topic = kRequestPrefix + rest;
  m.payload = payload.dump();
  m.payload_bytes = m.payload.size();
  m.qos = 2;
  return m;
}

// An MQTT 5 request with a Response Topic and Correlation Data.
InboundMessage message5(const std::string& rest, const json& payload,
                        const std::string& correlation,
                        std::optional<std::uint32_t> expiry_s = std::nullopt) {
  InboundMessage m = message(rest, payload);
  m.properties.response_topic = kReplyTopic;
  m.properties.correlation_data = correlation;
  m.properties.expiry_s = expiry_s;
  return m;
}

HttpResult result(Outcome outcome, std::string reason = "") {
  HttpResult r;
  r.outcome = outcome;
  r.reason = std::move(reason);
  return r;
}

// Statuses of the published replies, by req_id.
std::multimap<json, int> statuses(const FakePublisher& publisher) {
  std::multimap<json, int> out;
  for (const auto& s : publisher.sent()) out.emplace(s.doc["req_id"], s.doc["status"].get<int>());
  return out;
}

class BridgeTest : public ::testing::Test {
 protected:
  void start(const Vars& vars = {}) {
    config_ = config_with(vars);
    bridge_ = std::make_unique<Bridge>(config_, publisher_, http_.factory(), clock_.source());
  }
  void TearDown() override {
    http_.release();
    bridge_.reset();
  }

  FakeClock clock_;
  FakeHttp http_;
  FakePublisher publisher_;
  Config config_;
  std::unique_ptr<Bridge> bridge_;
};

TEST_F(BridgeTest, ExecutesAndPublishesOnTheMirroredTopic) {
  start();
  http_.set_result([](const Request& r) {
    HttpResult out;
    out.status = 201;
    out.body = "{\"path\":\"" + r.path + "\"}";
    out.headers = {{"x-a", "1"}};
    return out;
  });
  bridge_->on_message(message("post/food/dessert", {{"req_id", "r1"}, {"include_headers", true}}));
  ASSERT_TRUE(publisher_.wait_count(1));
  const auto sent = publisher_.sent();
  EXPECT_EQ(sent[0].message.topic, "v1/res/dev/post/food/dessert");
  EXPECT_EQ(sent[0].message.qos, 2);
  EXPECT_FALSE(sent[0].message.correlation_data);
  EXPECT_EQ(sent[0].doc["status"], 201);
  EXPECT_EQ(sent[0].doc["req_id"], "r1");
  EXPECT_EQ(sent[0].doc["content"]["path"], "food/dessert");
  EXPECT_EQ(sent[0].doc["headers"]["x-a"], "1");
  EXPECT_EQ(http_.calls().at(0).verb, "POST");
  const auto stats = bridge_->stats();
  EXPECT_EQ(stats.received, 1u);
  EXPECT_EQ(stats.answered, 1u);
  EXPECT_EQ(stats.bridge_errors, 0u);
}

TEST_F(BridgeTest, HttpResultsBecomeBridgeStatusesWithReqId) {
  struct Case {
    HttpResult result;
    int status;
    std::string error_part;
  };
  const Case cases[] = {
      {result(Outcome::kUnreachable, "Connection refused"), 502,
       "could not be reached: Connection refused"},
      {result(Outcome::kTimeout, "Operation timed out"), 504, "did not answer within"},
      {result(Outcome::kTooLarge), 502, "HTTP_MAX_RESPONSE_BYTES (1048576)"},
      {result(Outcome::kAborted), 503, "shutting down"},
  };
  start();
  int n = 0;
  for (const auto& c : cases) {
    SCOPED_TRACE(c.error_part);
    http_.set_result([r = c.result](const Request&) { return r; });
    bridge_->on_message(message("get/x", {{"req_id", n}}));
    ASSERT_TRUE(publisher_.wait_count(static_cast<std::size_t>(n) + 1));
    const auto doc = publisher_.sent().back().doc;
    EXPECT_EQ(doc["status"], c.status);
    EXPECT_EQ(doc["req_id"], n);
    EXPECT_TRUE(doc["content"].is_null());
    EXPECT_NE(doc["error"].get<std::string>().find(c.error_part), std::string::npos) << doc;
    ++n;
  }
  EXPECT_EQ(bridge_->stats().bridge_errors, 4u);
}

TEST_F(BridgeTest, RetainedRequestsAreIgnored) {
  start();
  auto m = message("get/x");
  m.retained = true;
  bridge_->on_message(std::move(m));
  bridge_->on_message(message("get/y"));
  ASSERT_TRUE(publisher_.wait_count(1));
  bridge_->stop(20s);
  EXPECT_EQ(publisher_.count(), 1u);
  EXPECT_EQ(http_.calls().size(), 1u);
  EXPECT_EQ(http_.calls()[0].path, "y");
}

TEST_F(BridgeTest, RejectionsAreAnsweredWithoutExecuting) {
  start();
  bridge_->on_message(message("brew/x", {{"req_id", 7}}));
  ASSERT_TRUE(publisher_.wait_count(1));
  EXPECT_EQ(publisher_.sent()[0].doc["status"], 405);
  EXPECT_EQ(publisher_.sent()[0].doc["req_id"], 7);
  EXPECT_TRUE(http_.calls().empty());
}

TEST_F(BridgeTest, OversizeInboundIs413WithoutParsing) {
  start({{"MQTT_MAX_PAYLOAD_BYTES", "1000"}});
  InboundMessage m = message5("brew/x", json::object(), "c1");  // a bad verb too: 413 first
  m.payload.clear();                                            // the session did not keep it
  m.payload_bytes = 5000;
  bridge_->on_message(std::move(m));
  ASSERT_TRUE(publisher_.wait_count(1));
  const auto sent = publisher_.sent()[0];
  EXPECT_EQ(sent.doc["status"], 413);
  EXPECT_TRUE(sent.doc["req_id"].is_null());
  EXPECT_NE(sent.doc["error"].get<std::string>().find("5000 bytes exceeds MQTT_MAX_PAYLOAD_BYTES"),
            std::string::npos);
  EXPECT_EQ(sent.message.topic, kReplyTopic);
  EXPECT_EQ(sent.message.correlation_data, "c1");
  EXPECT_TRUE(http_.calls().empty());
}

TEST_F(BridgeTest, OversizeReplyBecomes502WithReqId) {
  start();
  publisher_.set_limit(600);
  http_.set_result([](const Request&) {
    HttpResult r;
    r.status = 200;
    r.body = std::string(5000, 'x');
    return r;
  });
  bridge_->on_message(message("get/big", {{"req_id", "big-1"}}));
  ASSERT_TRUE(publisher_.wait_count(1));
  const auto doc = publisher_.sent()[0].doc;
  EXPECT_EQ(doc["status"], 502);
  EXPECT_EQ(doc["req_id"], "big-1");
  EXPECT_EQ(doc["error"], "reply too large for the broker");
  EXPECT_EQ(publisher_.oversize(), 0u);
  EXPECT_EQ(bridge_->stats().bridge_errors, 1u);
}

TEST_F(BridgeTest, OversizeReplyWithHugeReqIdBecomes502WithNullReqId) {
  start();
  publisher_.set_limit(600);
  bridge_->on_message(message("get/x", {{"req_id", std::string(2000, 'i')}}));
  ASSERT_TRUE(publisher_.wait_count(1));
  const auto doc = publisher_.sent()[0].doc;
  EXPECT_EQ(doc["status"], 502);
  EXPECT_TRUE(doc["req_id"].is_null());
  EXPECT_NE(doc["error"].get<std::string>().find("req_id"), std::string::npos);
  EXPECT_EQ(publisher_.oversize(), 0u);
}

TEST_F(BridgeTest, NothingThatDoesNotFitIsPublished) {
  start();
  publisher_.set_limit(10);  // not even the 502
  bridge_->on_message(message("get/x"));
  bridge_->stop(20s);  // returns once the request was handled
  EXPECT_EQ(publisher_.count(), 0u);
  EXPECT_EQ(http_.calls().size(), 1u);
}

TEST_F(BridgeTest, DuplicateIsAnsweredFromTheCache) {
  start();
  const json payload = {{"req_id", 1}, {"body", "x"}};
  bridge_->on_message(message5("post/echo", payload, "same"));
  ASSERT_TRUE(publisher_.wait_count(1));
  bridge_->on_message(message5("post/echo", payload, "same"));
  ASSERT_TRUE(publisher_.wait_count(2));
  const auto sent = publisher_.sent();
  EXPECT_EQ(http_.calls().size(), 1u);
  EXPECT_EQ(sent[1].message.payload, sent[0].message.payload);
  EXPECT_EQ(sent[1].message.topic, kReplyTopic);
  EXPECT_EQ(sent[1].message.correlation_data, "same");
}

// Fault 1: `mosquitto_rr -D correlation-data fixed` sends every request with the same Response
// Topic and Correlation Data; each one must be executed and get its own reply.
TEST_F(BridgeTest, SameCorrelationDataWithAnotherPayloadOrTopicIsExecuted) {
  start();
  http_.set_result([](const Request& r) {
    HttpResult out;
    out.status = 200;
    out.body = r.path + ":" + r.body.value_or("");
    return out;
  });
  bridge_->on_message(message5("post/a", {{"body", "one"}}, "fixed"));
  ASSERT_TRUE(publisher_.wait_count(1));
  bridge_->on_message(message5("post/a", {{"body", "two"}}, "fixed"));
  ASSERT_TRUE(publisher_.wait_count(2));
  bridge_->on_message(message5("post/b", {{"body", "one"}}, "fixed"));
  ASSERT_TRUE(publisher_.wait_count(3));
  const auto sent = publisher_.sent();
  EXPECT_EQ(http_.calls().size(), 3u);
  EXPECT_EQ(sent[0].doc["content"], "a:one");
  EXPECT_EQ(sent[1].doc["content"], "a:two");
  EXPECT_EQ(sent[2].doc["content"], "b:one");
}

TEST_F(BridgeTest, CachedReplyExpiresAfterFiveMinutes) {
  start();
  const json payload = {{"req_id", 1}};
  bridge_->on_message(message5("get/x", payload, "c"));
  ASSERT_TRUE(publisher_.wait_count(1));
  clock_.advance(5min);
  bridge_->on_message(message5("get/x", payload, "c"));
  ASSERT_TRUE(publisher_.wait_count(2));
  EXPECT_EQ(http_.calls().size(), 2u);
}

TEST_F(BridgeTest, ZeroReplyCacheBytesCachesNothing) {
  start({{"MQTT_REPLY_CACHE_BYTES", "0"}});  // nothing cached: each one runs
  for (int i = 0; i < 3; ++i) {
    bridge_->on_message(message5("get/x", {{"req_id", 1}}, "c"));
    ASSERT_TRUE(publisher_.wait_count(static_cast<std::size_t>(i) + 1));
  }
  EXPECT_EQ(http_.calls().size(), 3u);
}

TEST_F(BridgeTest, FullQueueAnswers503AtOnce) {
  start({{"WORKERS", "1"}, {"QUEUE_MAX", "1"}});
  http_.hold();
  bridge_->on_message(message("get/a", {{"req_id", "a"}}));
  ASSERT_TRUE(http_.wait_running(1));
  bridge_->on_message(message("get/b", {{"req_id", "b"}}));  // queued
  bridge_->on_message(message("get/c", {{"req_id", "c"}}));  // over WORKERS + QUEUE_MAX
  ASSERT_TRUE(publisher_.wait_count(1));
  const auto first = publisher_.sent()[0].doc;
  EXPECT_EQ(first["req_id"], "c");
  EXPECT_EQ(first["status"], 503);
  EXPECT_NE(first["error"].get<std::string>().find("QUEUE_MAX"), std::string::npos);
  http_.release();
  ASSERT_TRUE(publisher_.wait_count(3));
  const auto s = statuses(publisher_);
  EXPECT_EQ(s.find("a")->second, 200);
  EXPECT_EQ(s.find("b")->second, 200);
}

// Fault 9: duplicates parked behind a running request used to bypass QUEUE_MAX.
TEST_F(BridgeTest, DuplicatesInFlightCountAgainstCapacityAndGetTheReplyOnCompletion) {
  start({{"WORKERS", "1"}, {"QUEUE_MAX", "2"}});  // 3 slots
  http_.hold();
  const json payload = {{"req_id", "slow"}, {"body", std::string(10000, 'b')}};
  bridge_->on_message(message5("post/slow", payload, "dup"));
  ASSERT_TRUE(http_.wait_running(1));
  for (int i = 0; i < 5; ++i) bridge_->on_message(message5("post/slow", payload, "dup"));
  // Two parked (slots 2 and 3), three refused at once.
  ASSERT_TRUE(publisher_.wait_count(3));
  for (const auto& s : publisher_.sent()) {
    EXPECT_EQ(s.doc["status"], 503);
    EXPECT_EQ(s.doc["req_id"], "slow");
    EXPECT_EQ(s.message.correlation_data, "dup");
  }
  bridge_->on_message(message("get/other", {{"req_id", "other"}}));  // full, too
  ASSERT_TRUE(publisher_.wait_count(4));
  EXPECT_EQ(publisher_.sent()[3].doc["req_id"], "other");
  EXPECT_EQ(publisher_.sent()[3].doc["status"], 503);

  http_.release();
  ASSERT_TRUE(publisher_.wait_count(7));
  int ok = 0;
  for (const auto& s : publisher_.sent()) ok += s.doc["status"] == 200;
  EXPECT_EQ(ok, 3);
  EXPECT_EQ(http_.calls().size(), 1u);

  // The slots are free again.
  bridge_->on_message(message("get/after", {{"req_id", "after"}}));
  ASSERT_TRUE(publisher_.wait_count(8));
  EXPECT_EQ(publisher_.sent()[7].doc["status"], 200);
}

TEST_F(BridgeTest, ExpiredBeforeExecutionIs504AndTimeoutIsCappedByExpiry) {
  start({{"WORKERS", "1"}});
  http_.hold();
  bridge_->on_message(message("get/hold", {{"req_id", "hold"}}));
  ASSERT_TRUE(http_.wait_running(1));
  bridge_->on_message(message5("get/late", {{"req_id", "late"}}, "late", 1));
  bridge_->on_message(message5("get/soon", {{"req_id", "soon"}}, "soon", 10));
  clock_.advance(2s);
  http_.release();
  ASSERT_TRUE(publisher_.wait_count(3));
  const auto calls = http_.calls();
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_EQ(calls[1].path, "soon");
  EXPECT_EQ(calls[1].timeout, 8s);
  for (const auto& s : publisher_.sent()) {
    if (s.doc["req_id"] == "late") {
      EXPECT_EQ(s.doc["status"], 504);
      EXPECT_EQ(s.doc["error"], "expired before execution");
    }
    if (s.doc["req_id"] == "soon") {
      EXPECT_EQ(s.doc["status"], 200);
      EXPECT_EQ(s.message.expiry_s, 8u);
    }
  }
}

TEST_F(BridgeTest, StopDrainsQueuedAndRunningAndRefusesArrivals) {
  start({{"WORKERS", "1"}, {"QUEUE_MAX", "1000"}});
  http_.hold();
  bridge_->on_message(message("get/a", {{"req_id", "a"}}));
  ASSERT_TRUE(http_.wait_running(1));
  bridge_->on_message(message("get/b", {{"req_id", "b"}}));
  std::thread stopper([this] { bridge_->stop(60s); });
  // Arrivals during the drain get 503; poll until the drain has begun.
  const auto deadline = deadline_in();
  std::size_t probes = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    bridge_->on_message(message("get/probe", {{"req_id", "probe"}}));
    ++probes;
    if (publisher_.wait_count(1, std::chrono::steady_clock::now() + 10ms)) break;
  }
  ASSERT_EQ(publisher_.count(), 1u);
  EXPECT_EQ(publisher_.sent()[0].doc["status"], 503);
  EXPECT_EQ(publisher_.sent()[0].doc["error"], "shutting down");
  http_.release();
  stopper.join();
  // a and b finished; each probe was either refused at once or (before the drain) executed.
  const auto s = statuses(publisher_);
  EXPECT_EQ(s.find("a")->second, 200);
  EXPECT_EQ(s.find("b")->second, 200);
  EXPECT_EQ(s.count("probe"), probes);
  EXPECT_EQ(publisher_.count(), 2 + probes);
  EXPECT_EQ(http_.aborted_calls(), 0u);
}

TEST_F(BridgeTest, EndOfGraceAbortsRunningAndAnswersEverythingOnce) {
  start({{"WORKERS", "2"}, {"QUEUE_MAX", "10"}});
  http_.hold();
  bridge_->on_message(message5("get/a", {{"req_id", "a"}}, "a"));
  bridge_->on_message(message("get/b", {{"req_id", "b"}}));
  ASSERT_TRUE(http_.wait_running(2));
  bridge_->on_message(message5("get/a", {{"req_id", "a"}}, "a"));  // parked behind a
  bridge_->on_message(message("get/c", {{"req_id", "c"}}));        // queued
  bridge_->on_message(message("get/d", {{"req_id", "d"}}));        // queued
  bridge_->stop(50ms);  // the held calls never finish by themselves
  const auto s = statuses(publisher_);
  EXPECT_EQ(publisher_.count(), 5u);
  EXPECT_EQ(s.count("a"), 2u);
  for (const char* id : {"b", "c", "d"}) EXPECT_EQ(s.count(id), 1u) << id;
  for (const auto& [id, status] : s) EXPECT_EQ(status, 503) << id;
  EXPECT_EQ(http_.aborted_calls(), 2u);
  EXPECT_EQ(http_.calls().size(), 2u) << "queued requests are not started after the grace";

  bridge_->on_message(message("get/late", {{"req_id", "late"}}));
  ASSERT_EQ(publisher_.count(), 6u);
  EXPECT_EQ(publisher_.sent()[5].doc["status"], 503);
  bridge_->stop(0ms);  // idempotent
  EXPECT_EQ(publisher_.count(), 6u);
}

TEST_F(BridgeTest, RefusedRequestIsNotCachedSoARetryRuns) {
  start({{"WORKERS", "1"}, {"QUEUE_MAX", "0"}});
  http_.hold();
  bridge_->on_message(message("get/hold", {{"req_id", "hold"}}));
  ASSERT_TRUE(http_.wait_running(1));
  bridge_->on_message(message5("post/x", {{"req_id", 1}}, "c"));
  ASSERT_TRUE(publisher_.wait_count(1));
  EXPECT_EQ(publisher_.sent()[0].doc["status"], 503);
  http_.release();
  ASSERT_TRUE(publisher_.wait_count(2));
  // The slot of "hold" may be freed just after its reply: retry until it is, with a deadline.
  const auto deadline = deadline_in();
  while (std::chrono::steady_clock::now() < deadline) {
    const auto before = publisher_.count();
    bridge_->on_message(message5("post/x", {{"req_id", 1}}, "c"));
    ASSERT_TRUE(publisher_.wait_count(before + 1));
    if (publisher_.sent().back().doc["status"] == 200) break;
  }
  EXPECT_EQ(publisher_.sent().back().doc["status"], 200);
  EXPECT_EQ(http_.calls().size(), 2u);
}

TEST_F(BridgeTest, StalledWhenWorkMakesNoProgressForTooLong) {
  start({{"WORKERS", "1"}, {"HTTP_TIMEOUT_MS", "1000"}, {"HTTP_CONNECT_TIMEOUT_MS", "1000"}});
  EXPECT_FALSE(bridge_->stalled());
  clock_.advance(10min);
  EXPECT_FALSE(bridge_->stalled()) << "idle is not stalled";
  http_.hold();
  bridge_->on_message(message("get/a"));
  ASSERT_TRUE(http_.wait_running(1));
  clock_.advance(31s);
  EXPECT_FALSE(bridge_->stalled());
  clock_.advance(2s);  // past timeout + connect timeout + 30 s
  EXPECT_TRUE(bridge_->stalled());
  http_.release();
  ASSERT_TRUE(publisher_.wait_count(1));
  bridge_->stop(20s);
  EXPECT_FALSE(bridge_->stalled());
}

}  // namespace
}  // namespace hom::test
