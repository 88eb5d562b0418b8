// homd's role on the MQTT session: the request subscription, presence and the Last Will,
// the bridge that serves requests, and replies at the QoS the broker granted.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>

#include "hom/bridge.hpp"
#include "hom/config.hpp"
#include "hom/message.hpp"
#include "hom/session.hpp"

namespace hom {

// A layer between the session and the bridge (end-to-end security, e2e_device.hpp): it sees
// every request message first and every reply on its way out. Thread-safe.
class MessageFilter : public Publisher {
 public:
  // Where its own answers and the replies it passes on go (the device, the session).
  virtual void set_downstream(Publisher& downstream) = 0;
  // A message from the session; what the bridge is to serve goes on to `next`.
  virtual void on_message(InboundMessage&& message, Bridge& next) = 0;
  // Hands what it holds on to the bridge and stops taking messages (before the bridge stops).
  virtual void stop() {}
};

// Owns the session and the bridge. run() and stop() are called from one thread (main);
// the rest is thread-safe.
class Device : public Publisher {
 public:
  // With a `filter`, requests reach the bridge through it and replies leave through it.
  explicit Device(const Config& config, std::unique_ptr<MessageFilter> filter = nullptr);
  ~Device() override;
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;

  // Serves until `stop` becomes true (see MqttSession::run); call wake() after setting it.
  void run(const std::atomic<bool>& stop, const std::function<void()>& tick = {});
  void wake();

  // Graceful stop (SPEC §5, §5.1 "Shutdown"): the bridge drains within the grace; every
  // request homd acknowledged has its reply handed to the session, and those replies are
  // delivered before the offline presence and the disconnect.
  void stop();

  // Replies go out at min(MQTT_RESPONSE_QOS, the QoS granted for the request filter); the
  // session lowers that further to the broker's Maximum QoS.
  void publish(OutboundMessage message) override;
  bool fits(const OutboundMessage& message) const override;
  std::size_t payload_room(const OutboundMessage& message) const override;

  bool connected() const { return session_.connected(); }
  const Bridge& bridge() const { return *bridge_; }

 private:
  void on_connected();

  const Config config_;
  const std::string filter_;
  const std::string status_topic_;
  std::mutex deliver_mu_;    // held by the session's message callback
  Bridge* ready_ = nullptr;  // guarded by deliver_mu_; set once the bridge exists
  std::atomic<int> reply_qos_;
  std::atomic<bool> downgrade_logged_{false};
  std::unique_ptr<MessageFilter> gate_;  // before the session: its callback uses it
  MqttSession session_;
  std::unique_ptr<Bridge> bridge_;
};

}  // namespace hom
