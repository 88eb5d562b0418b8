// MQTT 5 duplicates (SPEC §2 "MQTT 5", §5.1 "Reply cache key", "Bounded memory"): only the same
// request is answered from the reply cache; the cache is bounded in bytes
// (MQTT_REPLY_CACHE_BYTES) and duplicates of a running request count against QUEUE_MAX. Real
// Mosquitto, real HTTP API, the real homd (memory read from /proc) and, where installed,
// mosquitto_rr as the requester nobody here wrote.
#include <fstream>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "support/harness.hpp"

namespace hom::test {
namespace {

// Sanitizer builds keep freed memory in quarantine, so memory bounds are only checked in
// normal builds.
#ifdef HOM_SANITIZED
constexpr bool kCheckMemory = false;
// A sanitized homd takes about a second per megabyte payload: the same logic, smaller.
constexpr std::size_t kScale = 10;
#else
constexpr bool kCheckMemory = true;
constexpr std::size_t kScale = 1;
#endif

long status_kb(pid_t pid, const std::string& key) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(key + ":", 0) == 0) return std::stol(line.substr(key.size() + 1));
  return -1;
}

// An MQTT 5 requester that keeps, per reply, only its correlation data, status and size:
// hundreds of megabytes of replies pass through it.
class Mqtt5Caller {
 public:
  struct Got {
    std::string correlation;
    int status = 0;
    std::size_t bytes = 0;
  };

  Mqtt5Caller(const std::string& uri, const std::string& reply_topic)
      : client_(uri, unique_name("rr-"), mqtt::create_options(MQTTVERSION_5), nullptr),
        reply_topic_(reply_topic) {
    client_.set_message_callback([this](mqtt::const_message_ptr m) {
      Got got;
      const auto& p = m->get_properties();
      if (p.contains(mqtt::property::CORRELATION_DATA))
        got.correlation = mqtt::get<mqtt::binary>(p, mqtt::property::CORRELATION_DATA);
      got.bytes = m->get_payload().size();
      const auto doc = Json::parse(m->get_payload_str(), nullptr, false);
      if (doc.is_object() && doc["status"].is_number_integer()) got.status = doc["status"];
      std::lock_guard<std::mutex> lock(mu_);
      got_.push_back(std::move(got));
      cv_.notify_all();
    });
    auto opts = mqtt::connect_options_builder().mqtt_version(MQTTVERSION_5).clean_start(true);
    client_.connect(opts.finalize())->wait();
    client_.subscribe(reply_topic_, 2)->wait();
  }
  ~Mqtt5Caller() {
    try {
      client_.disconnect()->wait();
    } catch (const std::exception&) {
    }
  }

  void request(const std::string& topic, const std::string& payload,
               const std::string& correlation) {
    auto msg = mqtt::make_message(topic, payload, 1, false);
    mqtt::properties props;
    props.add({mqtt::property::RESPONSE_TOPIC, reply_topic_});
    props.add({mqtt::property::CORRELATION_DATA, correlation});
    msg->set_properties(props);
    client_.publish(msg)->wait();
  }

  bool wait_count(std::size_t n, Clock::time_point deadline = deadline_in()) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_until(lock, deadline, [&] { return got_.size() >= n; });
  }
  std::vector<Got> got() const {
    std::lock_guard<std::mutex> lock(mu_);
    return got_;
  }

 private:
  mqtt::async_client client_;
  std::string reply_topic_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Got> got_;  // guarded by mu_
};

class DuplicatesTest : public ::testing::Test {
 protected:
  void start(const Env& env) {
    homd_ = std::make_unique<Homd>(broker_.port(), api_.base_url(), env);
    ASSERT_TRUE(homd_->wait_subscribed()) << homd_->log_tail();
    caller_ = std::make_unique<Mqtt5Caller>(broker_.uri(), res("callers/mem"));
  }
  std::string req(const std::string& rest) const {
    return homd_->topic_start() + "/req/" + homd_->topic_id() + "/" + rest;
  }
  std::string res(const std::string& rest) const {
    return homd_->topic_start() + "/res/" + homd_->topic_id() + "/" + rest;
  }
  long rss_kb() const { return status_kb(homd_->process().pid(), "VmRSS"); }

  Mosquitto broker_;
  ApiServer api_;
  std::unique_ptr<Homd> homd_;
  std::unique_ptr<Mqtt5Caller> caller_;
};

// Fault 1: mosquitto_rr -D PUBLISH correlation-data fixed sends every request with the same
// Response Topic and Correlation Data; the second request used to get the first one's reply.
TEST_F(DuplicatesTest, MosquittoRrWithFixedCorrelationDataGetsEachRequestsOwnReply) {
#ifndef MOSQUITTO_RR_BIN
  GTEST_SKIP() << "mosquitto_rr is not installed";
#else
  ASSERT_NO_FATAL_FAILURE(start({}));
  TempDir dir;
  std::vector<std::string> outputs;
  for (const std::string body : {"first", "second", "first"}) {
    const std::string log = dir.file("rr-" + std::to_string(outputs.size()) + ".log");
    Process rr({MOSQUITTO_RR_BIN,
                "-h",
                "127.0.0.1",
                "-p",
                std::to_string(broker_.port()),
                "-t",
                req("post/echo/rr"),
                "-e",
                res("rr/replies"),
                "-m",
                Json{{"body", body}}.dump(),
                "-D",
                "PUBLISH",
                "correlation-data",
                "fixed",
                "-q",
                "1",
                "-W",
                "20",
                "-N"},
               {}, log);
    ASSERT_EQ(rr.wait_exit(deadline_in()), 0) << rr.log() << homd_->log_tail();
    outputs.push_back(rr.log());
  }
  for (std::size_t i = 0; i < outputs.size(); ++i) {
    const auto doc = Json::parse(outputs[i], nullptr, false);
    ASSERT_TRUE(doc.is_object()) << outputs[i];
    EXPECT_EQ(doc["status"], 200) << outputs[i];
    EXPECT_EQ(doc["content"]["body"], i == 1 ? "second" : "first") << outputs[i];
  }
  // The third repeats the first byte for byte: a duplicate within 5 minutes, answered from
  // the cache.
  EXPECT_EQ(api_.count("/echo/rr"), 2u);
#endif
}

// Fault 9: every reply of an MQTT 5 request was kept for 5 minutes (up to 10 000 of them),
// so 300 replies of 1 MB cost 300 MB.
TEST_F(DuplicatesTest, ReplyCacheIsBoundedInBytes) {
  constexpr std::size_t kReplies = 300 / kScale;
  constexpr std::size_t kWindow = 8;  // requests in flight at a time
  constexpr long kCacheBytes = 8L * 1024 * 1024;
  ASSERT_NO_FATAL_FAILURE(
      start({{"MQTT_REPLY_CACHE_BYTES", std::to_string(kCacheBytes)}, {"LOG_LEVEL", "info"}}));
  const std::string topic = req("get/big?bytes=1000000");
  // Warm-up: curl, Paho and malloc reach their working size before the baseline.
  for (std::size_t i = 0; i < kWindow; ++i)
    caller_->request(topic, "{}", "warm-" + std::to_string(i));
  ASSERT_TRUE(caller_->wait_count(kWindow)) << homd_->log_tail();
  const long before = rss_kb();

  for (std::size_t i = 0; i < kReplies; ++i) {
    if (i >= kWindow) {
      ASSERT_TRUE(caller_->wait_count(i + 1)) << i;  // at most kWindow in flight
    }
    caller_->request(topic, "{}", "big-" + std::to_string(i));
  }
  ASSERT_TRUE(caller_->wait_count(kWindow + kReplies)) << homd_->log_tail();
  const long after = rss_kb();
  const long peak = status_kb(homd_->process().pid(), "VmHWM");

  std::map<std::string, int> statuses;
  for (const auto& g : caller_->got()) {
    EXPECT_GT(g.bytes, 1000000u) << g.correlation;
    statuses[g.correlation] = g.status;
  }
  EXPECT_EQ(statuses.size(), kWindow + kReplies) << "one reply per correlation";
  for (const auto& [correlation, status] : statuses) EXPECT_EQ(status, 200) << correlation;
  EXPECT_EQ(api_.count("/big"), kWindow + kReplies);

  // The cache holds at most MQTT_REPLY_CACHE_BYTES; the rest is a few replies in flight.
  const long bound_kb = (kCacheBytes + 72L * 1024 * 1024) / 1024;  // 80 MB above the start
  std::cout << "homd VmRSS " << before << " kB before, " << after << " kB after, peak " << peak
            << " kB\n";
  if (kCheckMemory) {
    EXPECT_LT(after - before, bound_kb) << "VmRSS grew from " << before << " to " << after;
    EXPECT_LT(peak - before, bound_kb) << "VmHWM " << peak << " kB, start " << before;
  }
}

// Fault 9: duplicates of a running request were parked without limit (200 copies of a
// 1 MB request: +200 MB). They take a slot of WORKERS + QUEUE_MAX like any request.
TEST_F(DuplicatesTest, DuplicatesOfARunningRequestBeyondCapacityGet503) {
  constexpr std::size_t kCopies = 200 / kScale;
  constexpr std::size_t kSlots = 5;  // WORKERS=1 + QUEUE_MAX=4
  ASSERT_NO_FATAL_FAILURE(start({{"WORKERS", "1"}, {"QUEUE_MAX", "4"}, {"LOG_LEVEL", "info"}}));
  caller_->request(req("get/text"), "{}", "warm-up");
  ASSERT_TRUE(caller_->wait_count(1)) << homd_->log_tail();
  const long before = rss_kb();

  const std::string payload =
      Json{{"req_id", "slow"}, {"body", std::string(1000000 / kScale, 'b')}}.dump();
  for (std::size_t i = 0; i < kCopies; ++i) caller_->request(req("post/slow"), payload, "dup");
  ASSERT_TRUE(caller_->wait_count(1 + kCopies - kSlots)) << homd_->log_tail();
  const long parked = rss_kb();
  EXPECT_EQ(api_.slow_arrivals(), 1u);
  api_.release_slow();
  ASSERT_TRUE(caller_->wait_count(1 + kCopies)) << homd_->log_tail();

  std::map<int, std::size_t> by_status;
  for (const auto& g : caller_->got())
    if (g.correlation == "dup") ++by_status[g.status];
  EXPECT_EQ(by_status[503], kCopies - kSlots);
  EXPECT_EQ(by_status[200], kSlots) << "the running one and the parked duplicates";
  EXPECT_EQ(api_.count("/slow"), 1u) << "executed once";
  std::cout << "homd VmRSS " << before << " kB before, " << parked << " kB with " << kSlots - 1
            << " duplicates parked\n";
  if (kCheckMemory) {
    EXPECT_LT(parked - before, 80L * 1024) << "VmRSS " << parked << " kB";
  }
}

}  // namespace
}  // namespace hom::test
