// The MQTT connection of homd: connect, subscribe, reconnect with back-off, publish.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "hom/config.hpp"
#include "hom/message.hpp"

namespace hom {

// Paho async client wrapper. publish() is safe from any thread, including while the broker
// is away (the reply is buffered and sent after the reconnect). The message handler runs on
// Paho's callback thread and must not block.
class MqttLink : public Publisher {
 public:
  using MessageHandler = std::function<void(InboundMessage&&)>;

  MqttLink(const Config& config, MessageHandler on_message);
  ~MqttLink() override;
  MqttLink(const MqttLink&) = delete;
  MqttLink& operator=(const MqttLink&) = delete;

  // Connects, subscribes to the request filter on every connect and reconnects with
  // exponential back-off (1 s doubling to 60 s, with jitter) until `stop` becomes true.
  // Never returns because the broker is away. Call wake() after setting `stop`. `tick`,
  // when given, runs on this thread at least every kTick (status and watchdog).
  static constexpr std::chrono::milliseconds kTick{1000};
  void run(const std::atomic<bool>& stop, const std::function<void()>& tick = {});
  void wake();

  // Flushes what is in flight (up to `timeout`) and disconnects.
  void disconnect(std::chrono::milliseconds timeout);

  // MQTT 5 replies carry Content Type application/json and the given properties.
  void publish(OutboundMessage message) override;
  bool fits(const OutboundMessage& message) const override;
  bool connected() const;
  // True once connected with MQTT 5 (after an `auto` fallback: false).
  bool mqtt5() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace hom
