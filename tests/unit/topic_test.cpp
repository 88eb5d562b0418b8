// Topics: the request filter, parsing request topics and mirroring them, SPEC §2 "Topics".
#include "hom/topic.hpp"
#include "hom/presence.hpp"

#include <algorithm>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>

namespace {

using hom::RequestTopic;
using hom::Topics;

TEST(Topics, FilterAndPrefixes) {
  struct Case {
    std::string start, id, filter, response_prefix;
  };
  const std::vector<Case> cases = {
      {"v1", "itsme", "v1/req/itsme/+/#", "v1/res/itsme/"},
      {"iot/config/v1", "fleet/dev42", "iot/config/v1/req/fleet/dev42/+/#",
       "iot/config/v1/res/fleet/dev42/"},
      {"a/req/b", "req", "a/req/b/req/req/+/#", "a/req/b/res/req/"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE("start=" + c.start + " id=" + c.id);
    const Topics topics(c.start, c.id);
    EXPECT_EQ(topics.start(), c.start);
    EXPECT_EQ(topics.id(), c.id);
    EXPECT_EQ(topics.request_filter(), c.filter);
    EXPECT_EQ(topics.response_prefix(), c.response_prefix);
  }
}

struct ParseCase {
  std::string start, id, topic;
  std::optional<RequestTopic> expected;  // nullopt: not a request topic of this device
  std::string mirrored;                  // when expected
};

RequestTopic rt(std::string verb, std::string path, bool has_path) {
  return RequestTopic{std::move(verb), std::move(path), has_path};
}

const std::vector<ParseCase>& parse_cases() {
  static const std::vector<ParseCase> cases = {
      // The plain shapes.
      {"v1", "itsme", "v1/req/itsme/get", rt("get", "", false), "v1/res/itsme/get"},
      {"v1", "itsme", "v1/req/itsme/get/", rt("get", "", true), "v1/res/itsme/get/"},
      {"v1", "itsme", "v1/req/itsme/post/food/dessert", rt("post", "food/dessert", true),
       "v1/res/itsme/post/food/dessert"},
      {"v1", "itsme", "v1/req/itsme/GeT/status", rt("GeT", "status", true),
       "v1/res/itsme/GeT/status"},
      {"v1", "itsme", "v1/req/itsme/get/a/", rt("get", "a/", true), "v1/res/itsme/get/a/"},
      {"v1", "itsme", "v1/req/itsme/get/a//b///c/", rt("get", "a//b///c/", true),
       "v1/res/itsme/get/a//b///c/"},
      {"v1", "itsme", "v1/req/itsme/get//", rt("get", "/", true), "v1/res/itsme/get//"},
      {"v1", "itsme", "v1/req/itsme/get/a/b/c/d/e/f/g", rt("get", "a/b/c/d/e/f/g", true),
       "v1/res/itsme/get/a/b/c/d/e/f/g"},
      {"v1", "itsme", "v1/req/itsme/get/items?q=1&r=2", rt("get", "items?q=1&r=2", true),
       "v1/res/itsme/get/items?q=1&r=2"},
      {"v1", "itsme", "v1/req/itsme/get/req/itsme/get", rt("get", "req/itsme/get", true),
       "v1/res/itsme/get/req/itsme/get"},
      {"v1", "itsme", "v1/req/itsme/g@t/x", rt("g@t", "x", true), "v1/res/itsme/g@t/x"},
      // Starts and ids with inner slashes and the word `req`.
      {"a/req/b", "c", "a/req/b/req/c/get/x", rt("get", "x", true), "a/req/b/res/c/get/x"},
      {"a/req/b", "c", "a/req/b/req/c/get/req/c/get", rt("get", "req/c/get", true),
       "a/req/b/res/c/get/req/c/get"},
      {"a/req/b", "req", "a/req/b/req/req/get/req", rt("get", "req", true),
       "a/req/b/res/req/get/req"},
      {"iot/config/v1", "fleet/dev42", "iot/config/v1/req/fleet/dev42/delete/x/y",
       rt("delete", "x/y", true), "iot/config/v1/res/fleet/dev42/delete/x/y"},
      // Not ours.
      {"v1", "itsme", "v1/req/other/get", std::nullopt, ""},
      {"v1", "itsme", "v1/req/itsme2/get", std::nullopt, ""},
      {"v1", "itsme", "v1/req/its/get", std::nullopt, ""},
      {"v1", "itsme", "v1/req/itsm/get/e", std::nullopt, ""},
      {"v1", "itsme", "v2/req/itsme/get", std::nullopt, ""},
      {"v1", "itsme", "v10/req/itsme/get", std::nullopt, ""},
      {"v1", "itsme", "x/v1/req/itsme/get", std::nullopt, ""},
      {"v1", "itsme", "v1/res/itsme/get", std::nullopt, ""},
      {"v1", "itsme", "v1/res/itsme/get/a", std::nullopt, ""},
      {"v1", "itsme", "v1/status/itsme", std::nullopt, ""},
      {"v1", "itsme", "v1/req/itsme", std::nullopt, ""},
      {"v1", "itsme", "v1/req", std::nullopt, ""},
      {"v1", "itsme", "", std::nullopt, ""},
      {"a/req/b", "c", "a/req/c/get", std::nullopt, ""},
      {"a/req/b", "c", "a/res/b/req/c/get", std::nullopt, ""},
      {"a/req/b", "c", "a/req/b/res/c/get", std::nullopt, ""},
      {"iot/config/v1", "fleet/dev42", "iot/config/v1/req/fleet/get/x", std::nullopt, ""},
      {"iot/config/v1", "fleet/dev42", "iot/config/v1/req/fleet/dev42x/get", std::nullopt, ""},
  };
  return cases;
}

// MQTT topic matching (MQTT 3.1.1 §4.7), to check filters against the topics they must catch.
bool mqtt_match(std::string_view filter, std::string_view topic) {
  std::size_t f = 0, t = 0;
  while (true) {
    const std::size_t f_end = std::min(filter.find('/', f), filter.size());
    const std::string_view level = filter.substr(f, f_end - f);
    if (level == "#") return true;
    const std::size_t t_end = std::min(topic.find('/', t), topic.size());
    if (t > topic.size()) return false;
    if (level != "+" && level != topic.substr(t, t_end - t)) return false;
    const bool filter_done = f_end == filter.size();
    const bool topic_done = t_end == topic.size();
    if (filter_done || topic_done) {
      if (filter_done && topic_done) return true;
      // "a/#" also matches "a".
      return topic_done && filter.substr(f_end) == "/#";
    }
    f = f_end + 1;
    t = t_end + 1;
  }
}

TEST(MqttMatch, SelfCheck) {
  EXPECT_TRUE(mqtt_match("v1/req/itsme/+/#", "v1/req/itsme/get"));
  EXPECT_TRUE(mqtt_match("v1/req/itsme/+/#", "v1/req/itsme/get/a/b"));
  EXPECT_TRUE(mqtt_match("v1/req/itsme/+/#", "v1/req/itsme//x"));
  EXPECT_FALSE(mqtt_match("v1/req/itsme/+/#", "v1/req/itsme"));
  EXPECT_FALSE(mqtt_match("v1/req/itsme/+/#", "v1/req/other/get"));
  EXPECT_TRUE(mqtt_match("v1/status/+", "v1/status/dev"));
  EXPECT_FALSE(mqtt_match("v1/status/+", "v1/status/a/b"));
}

TEST(Topics, RequestFilterCatchesEveryRequestTopic) {
  for (const auto& c : parse_cases()) {
    SCOPED_TRACE("start=" + c.start + " id=" + c.id + " topic=" + c.topic);
    const Topics topics(c.start, c.id);
    if (!c.expected) continue;
    EXPECT_TRUE(mqtt_match(topics.request_filter(), c.topic));
  }
}

TEST(Topics, StatusTopics) {
  struct Case {
    std::string start, id, status_topic;
  };
  const std::vector<Case> cases = {
      {"v1", "itsme", "v1/status/itsme"},
      {"iot/config/v1", "dev42", "iot/config/v1/status/dev42"},
      {"v1", "fleet/dev42", "v1/status/fleet/dev42"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE("start=" + c.start + " id=" + c.id);
    const Topics topics(c.start, c.id);
    EXPECT_EQ(topics.status_topic(), c.status_topic);
    // Device ids may hold inner slashes (SPEC §2): `hom devices` must still see them.
    EXPECT_TRUE(mqtt_match(topics.status_filter(), topics.status_topic()))
        << "filter " << topics.status_filter();
    EXPECT_EQ(topics.status_device(topics.status_topic()), std::optional<std::string>(c.id));
  }
  const Topics topics("v1", "itsme");
  EXPECT_FALSE(topics.status_device("v2/status/itsme").has_value());
  EXPECT_FALSE(topics.status_device("v1/status/").has_value());
  EXPECT_FALSE(topics.status_device("v1/req/itsme/get").has_value());
}

TEST(Topics, ParseTable) {
  for (const auto& c : parse_cases()) {
    SCOPED_TRACE("start=" + c.start + " id=" + c.id + " topic=" + c.topic);
    const Topics topics(c.start, c.id);
    const auto parsed = topics.parse(c.topic);
    EXPECT_EQ(parsed.has_value(), c.expected.has_value());
    if (!parsed || !c.expected) continue;
    EXPECT_EQ(parsed->verb, c.expected->verb);
    EXPECT_EQ(parsed->path, c.expected->path);
    EXPECT_EQ(parsed->has_path, c.expected->has_path);
  }
}

TEST(Topics, MirrorKeepsVerbAndPathExactly) {
  for (const auto& c : parse_cases()) {
    if (!c.expected) continue;
    SCOPED_TRACE("start=" + c.start + " id=" + c.id + " topic=" + c.topic);
    const Topics topics(c.start, c.id);
    EXPECT_EQ(topics.mirror(*c.expected), c.mirrored);
    const auto parsed = topics.parse(c.topic);
    if (!parsed) {
      ADD_FAILURE() << "not parsed";
      continue;
    }
    EXPECT_EQ(topics.mirror(*parsed), c.mirrored);
  }
}

TEST(Topics, MirrorOfAHandBuiltRequest) {
  const Topics topics("v1", "itsme");
  EXPECT_EQ(topics.mirror(rt("get", "", false)), "v1/res/itsme/get");
  EXPECT_EQ(topics.mirror(rt("get", "", true)), "v1/res/itsme/get/");
  EXPECT_EQ(topics.mirror(rt("PUT", "a/b/", true)), "v1/res/itsme/PUT/a/b/");
}

TEST(Topics, RequestTopicRoundTrips) {
  struct Case {
    std::string verb, path, topic;
  };
  const std::vector<Case> cases = {
      {"get", "status", "v1/req/itsme/get/status"},
      {"POST", "food/dessert", "v1/req/itsme/POST/food/dessert"},
      {"get", "a/", "v1/req/itsme/get/a/"},
  };
  const Topics topics("v1", "itsme");
  for (const auto& c : cases) {
    SCOPED_TRACE(c.verb + " " + c.path);
    EXPECT_EQ(topics.request_topic(c.verb, c.path), c.topic);
    const auto parsed = topics.parse(topics.request_topic(c.verb, c.path));
    if (!parsed) {
      ADD_FAILURE() << "not parsed";
      continue;
    }
    EXPECT_EQ(parsed->verb, c.verb);
    EXPECT_EQ(parsed->path, c.path);
  }
}

}  // namespace

namespace {
// Found by fuzz_cli: an unsigned "since" above INT64_MAX wrapped to a negative time.
TEST(Presence, SinceOutOfRangeIsIgnored) {
  const auto p = hom::parse_presence(R"({"online":true,"since":9223372036854775808})");
  ASSERT_TRUE(p);
  EXPECT_FALSE(p->since.has_value());
  EXPECT_EQ(hom::parse_presence(R"({"online":true,"since":1700000000})")->since, 1700000000);
  EXPECT_FALSE(hom::parse_presence(std::string("{\"online\":true}\0x", 17)));
}
}  // namespace
