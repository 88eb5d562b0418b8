#include "hom/topic.hpp"

namespace hom {

Topics::Topics(std::string start, std::string id)
    : start_(std::move(start)),
      id_(std::move(id)),
      req_prefix_(start_ + "/req/" + id_ + "/"),
      res_prefix_(start_ + "/res/" + id_ + "/") {}

std::string Topics::request_filter() const { return req_prefix_ + "+/#"; }

std::string Topics::response_prefix() const { return res_prefix_; }

std::string Topics::status_topic() const { return start_ + "/status/" + id_; }

std::string Topics::status_filter() const { return start_ + "/status/#"; }

std::optional<std::string> Topics::status_device(std::string_view topic) const {
  const std::string prefix = start_ + "/status/";
  if (topic.size() <= prefix.size() || topic.compare(0, prefix.size(), prefix) != 0)
    return std::nullopt;
  return std::string(topic.substr(prefix.size()));
}

std::optional<RequestTopic> Topics::parse(std::string_view topic) const {
  // "{start}/req/{id}/" with an empty verb level matches the subscription too: it gets a
  // 405, not silence.
  if (topic.size() < req_prefix_.size() || topic.compare(0, req_prefix_.size(), req_prefix_) != 0)
    return std::nullopt;
  std::string_view rest = topic.substr(req_prefix_.size());
  RequestTopic out;
  const auto slash = rest.find('/');
  if (slash == std::string_view::npos) {
    out.verb = std::string(rest);
  } else {
    out.verb = std::string(rest.substr(0, slash));
    out.path = std::string(rest.substr(slash + 1));
    out.has_path = true;
  }
  return out;
}

std::string Topics::mirror(const RequestTopic& request) const {
  std::string topic = res_prefix_ + request.verb;
  if (request.has_path) {
    topic += '/';
    topic += request.path;
  }
  return topic;
}

std::string Topics::request_topic(std::string_view verb, std::string_view path) const {
  std::string topic = req_prefix_;
  topic += verb;
  if (!path.empty()) {
    topic += '/';
    topic += path;
  }
  return topic;
}

}  // namespace hom
