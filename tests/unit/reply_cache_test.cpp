// ReplyCache (SPEC §2 "MQTT 5", §5.1 "Reply cache key", "Bounded memory") with a fake clock.
#include "hom/reply_cache.hpp"

#include <map>
#include <optional>
#include <string>

#include <gtest/gtest.h>

#include "hom/config.hpp"
#include "unit/fake_clock.hpp"

namespace {

using hom::reply_cache_key;
using hom::ReplyCache;
using hom::Request;
using hom::test::FakeClock;
using Outcome = ReplyCache::Outcome;
using namespace std::chrono_literals;

const auto kYes = [] { return true; };
const auto kNo = [] { return false; };

std::string key(const std::string& payload, const std::string& correlation = "fixed",
                const std::string& topic = "v1/req/dev/get/a") {
  return reply_cache_key("v1/res/dev/rr", correlation, topic, payload);
}

Request request(const std::string& tag) {
  Request r;
  r.path = tag;
  r.body = std::string(1000, 'b');
  return r;
}

ReplyCache::Lookup begin(ReplyCache& cache, const std::string& k) {
  Request r = request("first");
  return cache.begin(k, r, kYes);
}

// Opens and completes an entry for `k` with `reply`.
void cache_reply(ReplyCache& cache, const std::string& k, const std::string& reply) {
  const auto lookup = begin(cache, k);
  ASSERT_EQ(lookup.outcome, Outcome::kExecute);
  EXPECT_TRUE(cache.complete(k, lookup.ticket, reply).empty());
}

TEST(ReplyCacheKeyTest, SameRequestSameKey) {
  EXPECT_EQ(key("{\"req_id\":1}"), key("{\"req_id\":1}"));
}

TEST(ReplyCacheKeyTest, EveryPartCounts) {
  const std::string base = key("{}");
  EXPECT_NE(base, key("{ }")) << "payload";
  EXPECT_NE(base, key("{}", "other")) << "correlation data";
  EXPECT_NE(base, key("{}", "fixed", "v1/req/dev/get/b")) << "request topic";
  EXPECT_NE(base, reply_cache_key("v1/res/dev/other", "fixed", "v1/req/dev/get/a", "{}"))
      << "response topic";
  // The parts cannot slide into each other.
  EXPECT_NE(reply_cache_key("a", "bc", "t", "p"), reply_cache_key("ab", "c", "t", "p"));
  EXPECT_NE(reply_cache_key("a", "b", "tp", ""), reply_cache_key("a", "b", "t", "p"));
}

TEST(ReplyCacheKeyTest, PayloadIsDigestedNotKept) {
  const std::string big(1 << 20, 'x');
  EXPECT_LT(key(big).size(), 100u);
}

TEST(ReplyCacheTest, SameRequestIsAnsweredFromTheCache) {
  FakeClock clock;
  ReplyCache cache({}, clock.source());
  const auto k = key("{\"req_id\":1}");
  cache_reply(cache, k, "reply-1");
  const auto again = begin(cache, k);
  EXPECT_EQ(again.outcome, Outcome::kCached);
  EXPECT_EQ(again.reply, "reply-1");
}

// Fault 1: mosquitto_rr -D correlation-data fixed reuses Response Topic and Correlation Data
// for every request; each must be executed, not answered with the first one's reply.
TEST(ReplyCacheTest, NewRequestReusingResponseTopicAndCorrelationIsAMiss) {
  FakeClock clock;
  ReplyCache cache({}, clock.source());
  cache_reply(cache, key("{\"body\":\"first\"}"), "reply-first");
  EXPECT_EQ(begin(cache, key("{\"body\":\"second\"}")).outcome, Outcome::kExecute);
  EXPECT_EQ(begin(cache, key("{\"body\":\"first\"}", "fixed", "v1/req/dev/post/a")).outcome,
            Outcome::kExecute);
}

TEST(ReplyCacheTest, EntryExpiresAfterFiveMinutes) {
  FakeClock clock;
  ReplyCache cache({}, clock.source());
  const auto k = key("{}");
  cache_reply(cache, k, "reply");
  clock.advance(5min - 1s);
  EXPECT_EQ(begin(cache, k).outcome, Outcome::kCached);
  clock.advance(1s);
  EXPECT_EQ(begin(cache, k).outcome, Outcome::kExecute);
  EXPECT_EQ(cache.counts().entries, 1u) << "the expired entry was replaced, not kept";
}

TEST(ReplyCacheTest, EvictsOldestByCount) {
  FakeClock clock;
  ReplyCache cache({3, 1 << 20, 5min}, clock.source());
  for (int i = 0; i < 4; ++i) {
    cache_reply(cache, key(std::to_string(i)), "reply-" + std::to_string(i));
    clock.advance(1s);
  }
  EXPECT_EQ(cache.counts().entries, 3u);
  EXPECT_EQ(begin(cache, key("3")).outcome, Outcome::kCached);
  EXPECT_EQ(begin(cache, key("1")).outcome, Outcome::kCached);
  EXPECT_EQ(begin(cache, key("0")).outcome, Outcome::kExecute);
}

TEST(ReplyCacheTest, EvictsOldestByBytes) {
  FakeClock clock;
  const std::size_t max_bytes = 8000;
  ReplyCache cache({10000, max_bytes, 5min}, clock.source());
  const std::string reply(1500, 'r');  // under a quarter: cached
  for (int i = 0; i < 10; ++i) {
    cache_reply(cache, key(std::to_string(i)), reply);
    EXPECT_LE(cache.counts().bytes, max_bytes);
  }
  const auto c = cache.counts();
  EXPECT_GE(c.cached, 4u);
  EXPECT_LE(c.cached, 5u);
  EXPECT_EQ(c.entries, c.cached);
  EXPECT_EQ(begin(cache, key("9")).outcome, Outcome::kCached);
  EXPECT_EQ(begin(cache, key("0")).outcome, Outcome::kExecute);
}

TEST(ReplyCacheTest, EntryOverAQuarterIsNotCachedButItsDuplicatesAreAnswered) {
  FakeClock clock;
  const std::size_t max_bytes = 8000;
  ReplyCache cache({10000, max_bytes, 5min}, clock.source());
  const auto k = key("{}");
  const auto first = begin(cache, k);
  ASSERT_EQ(first.outcome, Outcome::kExecute);
  Request duplicate = request("duplicate");
  ASSERT_EQ(cache.begin(k, duplicate, kYes).outcome, Outcome::kParked);
  const auto parked = cache.complete(k, first.ticket, std::string(max_bytes / 4, 'r'));
  ASSERT_EQ(parked.size(), 1u);
  EXPECT_EQ(parked[0].path, "duplicate");
  EXPECT_EQ(cache.counts().entries, 0u);
  EXPECT_EQ(cache.counts().bytes, 0u);
  EXPECT_EQ(begin(cache, k).outcome, Outcome::kExecute);
}

TEST(ReplyCacheTest, ZeroBytesCachesNothingButStillParks) {
  FakeClock clock;
  ReplyCache cache({10000, 0, 5min}, clock.source());
  const auto k = key("{}");
  const auto first = begin(cache, k);
  ASSERT_EQ(first.outcome, Outcome::kExecute);
  Request duplicate = request("duplicate");
  ASSERT_EQ(cache.begin(k, duplicate, kYes).outcome, Outcome::kParked);
  EXPECT_EQ(cache.complete(k, first.ticket, "r").size(), 1u);
  EXPECT_EQ(cache.counts().entries, 0u);
}

TEST(ReplyCacheTest, DuplicatesOfARunningRequestAreParkedAndHandedBack) {
  FakeClock clock;
  ReplyCache cache({}, clock.source());
  const auto k = key("{}");
  const auto first = begin(cache, k);
  ASSERT_EQ(first.outcome, Outcome::kExecute);
  for (int i = 0; i < 3; ++i) {
    Request d = request("dup" + std::to_string(i));
    ASSERT_EQ(cache.begin(k, d, kYes).outcome, Outcome::kParked);
  }
  const auto parked = cache.complete(k, first.ticket, "reply");
  ASSERT_EQ(parked.size(), 3u);
  EXPECT_EQ(parked[2].path, "dup2");
  const auto again = begin(cache, k);
  EXPECT_EQ(again.outcome, Outcome::kCached);
  EXPECT_EQ(again.reply, "reply");
}

TEST(ReplyCacheTest, RefusedParkLeavesTheRequestAlone) {
  FakeClock clock;
  ReplyCache cache({}, clock.source());
  const auto k = key("{}");
  ASSERT_EQ(begin(cache, k).outcome, Outcome::kExecute);
  Request d = request("dup");
  EXPECT_EQ(cache.begin(k, d, kNo).outcome, Outcome::kRefused);
  EXPECT_EQ(d.path, "dup");
  ASSERT_TRUE(d.body);
  EXPECT_EQ(d.body->size(), 1000u);
}

TEST(ReplyCacheTest, AbandonedEntryRunsAgainAndReturnsItsDuplicates) {
  FakeClock clock;
  ReplyCache cache({}, clock.source());
  const auto k = key("{}");
  const auto first = begin(cache, k);
  Request d = request("dup");
  ASSERT_EQ(cache.begin(k, d, kYes).outcome, Outcome::kParked);
  EXPECT_EQ(cache.abandon(k, first.ticket).size(), 1u);
  EXPECT_EQ(cache.counts().entries, 0u);
  EXPECT_EQ(begin(cache, k).outcome, Outcome::kExecute);
}

TEST(ReplyCacheTest, OnlyTheOpeningTicketCompletes) {
  FakeClock clock;
  ReplyCache cache({}, clock.source());
  const auto k = key("{}");
  const auto first = begin(cache, k);
  cache.complete(k, first.ticket + 1, "wrong");
  EXPECT_EQ(begin(cache, k).outcome, Outcome::kParked);
}

// Fault 9: an entry evicted while its request was still running used to stay in the map
// forever once that request completed.
TEST(ReplyCacheTest, EntryEvictedByCountWhileRunningIsFreedOnCompletion) {
  FakeClock clock;
  ReplyCache cache({1, 1 << 20, 5min}, clock.source());
  const auto a = key("a");
  const auto first = begin(cache, a);
  ASSERT_EQ(first.outcome, Outcome::kExecute);
  Request d = request("dup-of-a");
  ASSERT_EQ(cache.begin(a, d, kYes).outcome, Outcome::kParked);
  cache_reply(cache, key("b"), "reply-b");  // evicts a, still running
  auto c = cache.counts();
  EXPECT_EQ(c.entries, 2u);
  EXPECT_EQ(c.cached, 1u);

  const auto parked = cache.complete(a, first.ticket, "reply-a");
  EXPECT_EQ(parked.size(), 1u) << "its duplicate still gets the reply";
  c = cache.counts();
  EXPECT_EQ(c.entries, 1u) << "freed, not kept outside the bounds";
  EXPECT_EQ(begin(cache, a).outcome, Outcome::kExecute);
}

TEST(ReplyCacheTest, EntryExpiredWhileRunningIsFreedOnCompletion) {
  FakeClock clock;
  ReplyCache cache({}, clock.source());
  const auto a = key("a");
  const auto first = begin(cache, a);
  clock.advance(6min);
  cache_reply(cache, key("b"), "reply-b");  // any later call trims
  EXPECT_EQ(cache.counts().entries, 2u);
  EXPECT_EQ(cache.counts().cached, 1u);
  cache.complete(a, first.ticket, "reply-a");
  EXPECT_EQ(cache.counts().entries, 1u);
}

TEST(ReplyCacheTest, ClearHandsBackEveryParkedDuplicate) {
  FakeClock clock;
  ReplyCache cache({}, clock.source());
  for (const char* p : {"a", "b"}) {
    ASSERT_EQ(begin(cache, key(p)).outcome, Outcome::kExecute);
    Request d = request(p);
    ASSERT_EQ(cache.begin(key(p), d, kYes).outcome, Outcome::kParked);
  }
  EXPECT_EQ(cache.clear().size(), 2u);
  EXPECT_EQ(cache.counts().entries, 0u);
}

hom::Config config_with(const std::map<std::string, std::string>& vars) {
  return hom::load_config([vars](const std::string& name) -> std::optional<std::string> {
    const auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  });
}

TEST(ReplyCacheConfigTest, MqttReplyCacheBytes) {
  EXPECT_EQ(config_with({}).reply_cache_bytes, 8u * 1024 * 1024);
  EXPECT_EQ(config_with({{"MQTT_REPLY_CACHE_BYTES", "65536"}}).reply_cache_bytes, 65536u);
  EXPECT_EQ(config_with({{"MQTT_REPLY_CACHE_BYTES", "0"}}).reply_cache_bytes, 0u);
  EXPECT_THROW(config_with({{"MQTT_REPLY_CACHE_BYTES", "-1"}}), hom::ConfigError);
  EXPECT_THROW(config_with({{"MQTT_REPLY_CACHE_BYTES", "lots"}}), hom::ConfigError);
  bool described = false;
  for (const auto& [name, value] : hom::describe(config_with({})))
    if (name == "MQTT_REPLY_CACHE_BYTES") described = value == "8388608";
  EXPECT_TRUE(described);
}

}  // namespace
