// The MQTT connection of homd: connect, subscribe, reconnect with back-off, publish.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "hom/config.hpp"

namespace hom {

struct InboundMessage {
  std::string topic;
  std::string payload;
  bool retained = false;
};

// Where replies go. Implementations are thread-safe and never block the caller for long.
class Publisher {
 public:
  virtual ~Publisher() = default;
  virtual void publish(const std::string& topic, std::string payload, int qos) = 0;
};

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
  // Never returns because the broker is away. Call wake() after setting `stop`.
  void run(const std::atomic<bool>& stop);
  void wake();

  // Flushes what is in flight (up to `timeout`) and disconnects.
  void disconnect(std::chrono::milliseconds timeout);

  void publish(const std::string& topic, std::string payload, int qos) override;
  bool connected() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace hom
