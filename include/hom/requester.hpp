// The MQTT half of `hom`: one request, correlated, with a deadline (SPEC §4).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "hom/config.hpp"
#include "hom/presence.hpp"

namespace hom {

struct DeviceStatus {
  std::string id;
  Presence presence;
};

// One short-lived MQTT connection (clean session, random client id). Not thread-safe: use
// from one thread; Paho's callbacks are handled inside.
class Requester {
 public:
  // Connects; throws std::runtime_error when the broker cannot be reached.
  Requester(const MqttConfig& mqtt, std::string start, std::chrono::milliseconds connect_timeout);
  ~Requester();
  Requester(const Requester&) = delete;
  Requester& operator=(const Requester&) = delete;

  struct Call {
    std::string device;
    std::string verb;
    std::string path;        // without a leading '/'
    nlohmann::json payload;  // a req_id in it is used as is; else a random one is set
    int qos = 2;
    std::chrono::milliseconds timeout{30000};
    bool wait_online = false;  // wait for an offline device instead of failing at once
  };
  enum class Outcome { kReply, kTimeout, kOffline };
  struct Result {
    Outcome outcome = Outcome::kTimeout;
    nlohmann::json reply;  // the reply document (kReply)
    std::string request_topic;
    std::string response_topic;
  };

  // Subscribes to the reply topic (and the device's presence) before publishing, ignores
  // replies that are not its own and waits up to `timeout`.
  Result call(Call call);

  // Devices whose retained presence arrives within `wait`, sorted by id.
  std::vector<DeviceStatus> devices(std::chrono::milliseconds wait);

  // Receives progress lines for -v.
  void set_trace(std::function<void(const std::string&)> trace);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// 16 random hex digits.
std::string random_id();

}  // namespace hom
