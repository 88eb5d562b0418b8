// Request topics and their mirrored response topics, SPEC §2 "Topics".
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace hom {

// A request topic split at its verb: {start}/req/{id}/{verb}[/{path}].
struct RequestTopic {
  std::string verb;       // exactly as it arrived (not yet validated or upper-cased)
  std::string path;       // everything after "{verb}/", may be empty or contain slashes
  bool has_path = false;  // the topic had a '/' after the verb
};

class Topics {
 public:
  // `start` and `id` must already be trimmed and valid (see load_config()).
  Topics(std::string start, std::string id);

  const std::string& start() const { return start_; }
  const std::string& id() const { return id_; }

  // {start}/req/{id}/+/#
  std::string request_filter() const;
  // {start}/res/{id}/
  std::string response_prefix() const;
  // {start}/status/{id}: the retained presence of the device
  std::string status_topic() const;
  // {start}/status/#: the presence of every device of the application (ids may hold '/')
  std::string status_filter() const;
  // The device id of a status topic; nullopt when it is not one.
  std::optional<std::string> status_device(std::string_view topic) const;

  // Splits a topic under {start}/req/{id}/; nullopt when it is not one.
  std::optional<RequestTopic> parse(std::string_view topic) const;
  // The mirrored response topic: the `req` level replaced by `res`, the rest exactly as it was.
  std::string mirror(const RequestTopic& request) const;
  // The request topic for a verb and path (used by requesters).
  std::string request_topic(std::string_view verb, std::string_view path) const;

 private:
  std::string start_;
  std::string id_;
  std::string req_prefix_;  // "{start}/req/{id}/"
  std::string res_prefix_;  // "{start}/res/{id}/"
};

}  // namespace hom
