// Topics::parse / mirror / request_topic (SPEC §2 "Topics").
// Input: start 0xFF id 0xFF topic 0xFF verb 0xFF path. A start or id that load_config()
// would refuse (empty after trimming slashes, or holding '+', '#' or NUL) is replaced by the
// default, as the daemon would never run with it.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_support.hpp"
#include "hom/topic.hpp"

namespace {

using hom_fuzz::show;

std::string topic_part(std::string_view raw, const char* fallback) {
  const std::size_t first = raw.find_first_not_of('/');
  if (first == std::string_view::npos) return fallback;
  raw = raw.substr(first, raw.find_last_not_of('/') - first + 1);
  if (raw.find_first_of(std::string_view("+#\0", 3)) != std::string_view::npos) return fallback;
  return std::string(raw);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto fields =
      hom_fuzz::split_fields(std::string_view(reinterpret_cast<const char*>(data), size), 5);
  const hom::Topics topics(topic_part(fields[0], "v1"), topic_part(fields[1], "itsme"));
  const std::string req_prefix = topics.start() + "/req/" + topics.id() + "/";
  const std::string res_prefix = topics.response_prefix();
  HOM_FUZZ_CHECK(res_prefix == topics.start() + "/res/" + topics.id() + "/", show(res_prefix));
  HOM_FUZZ_CHECK(topics.request_filter() == req_prefix + "+/#", show(topics.request_filter()));

  // Any topic: parsed exactly when it is under {start}/req/{id}/, split at the first '/' after
  // the verb, and mirrored with `req` replaced by `res` and the rest unchanged.
  const std::string_view topic = fields[2];
  const auto parsed = topics.parse(topic);
  const bool under = topic.substr(0, req_prefix.size()) == req_prefix;
  HOM_FUZZ_CHECK(parsed.has_value() == under, "topic " + show(topic));
  if (parsed) {
    const std::string_view rest = topic.substr(req_prefix.size());
    HOM_FUZZ_CHECK(parsed->verb.find('/') == std::string::npos, "verb " + show(parsed->verb));
    HOM_FUZZ_CHECK(parsed->has_path == (rest.find('/') != std::string_view::npos),
                   "topic " + show(topic));
    HOM_FUZZ_CHECK(parsed->has_path || parsed->path.empty(), "path " + show(parsed->path));
    const std::string rebuilt = parsed->verb + (parsed->has_path ? "/" + parsed->path : "");
    HOM_FUZZ_CHECK(rebuilt == rest, "topic " + show(topic) + " rebuilt as " + show(rebuilt));
    const std::string mirrored = topics.mirror(*parsed);
    HOM_FUZZ_CHECK(mirrored == res_prefix + std::string(rest),
                   "topic " + show(topic) + " mirrored to " + show(mirrored));
  }

  // A verb (one level) and a path round-trip through request_topic() and parse().
  const std::string_view verb = fields[3];
  const std::string_view path = fields[4];
  if (verb.find('/') == std::string_view::npos) {
    const std::string request = topics.request_topic(verb, path);
    const auto back = topics.parse(request);
    HOM_FUZZ_CHECK(back.has_value(), "request_topic " + show(request) + " does not parse");
    HOM_FUZZ_CHECK(back->verb == verb && back->path == path && back->has_path == !path.empty(),
                   "verb " + show(verb) + " path " + show(path) + " came back as verb " +
                       show(back->verb) + " path " + show(back->path));
    const std::string mirrored = topics.mirror(*back);
    const std::string expected =
        res_prefix + std::string(verb) + (path.empty() ? "" : "/" + std::string(path));
    HOM_FUZZ_CHECK(mirrored == expected, show(mirrored) + " != " + show(expected));
  }

  // Presence topics: {start}/status/{id} names the device back.
  const auto device = topics.status_device(topics.status_topic());
  HOM_FUZZ_CHECK(device && *device == topics.id(), show(topics.status_topic()));
  if (const auto other = topics.status_device(topic)) {
    const std::string prefix = topics.start() + "/status/";
    HOM_FUZZ_CHECK(!other->empty() && std::string(topic) == prefix + *other,
                   "status topic " + show(topic) + " gave device " + show(*other));
  }
  return 0;
}
