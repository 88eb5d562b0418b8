// One MQTT session, used by every role (homd's device role, hom's requester, the gateway):
// connect options, TLS, the MQTT 5 -> 3.1.1 fallback, back-off, resubscription, bounded
// waits, granted QoS and the broker's packet limit. It knows nothing of requests or replies.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "hom/config.hpp"
#include "hom/message.hpp"

namespace hom {

struct SessionOptions {
  MqttConfig mqtt;        // broker, TLS, credentials, version, keep-alive
  std::string client_id;  // stable for a device (the broker keeps its session)
  bool clean_start = false;
  // The Last Will (retained, QoS 1 when set).
  std::optional<std::pair<std::string, std::string>> will;  // topic, payload
  // Inbound messages larger than this are delivered without their payload (`payload_bytes`
  // says how large they were); over MQTT 5 the session also announces it (plus headroom for
  // topic and properties) as its Maximum Packet Size, so the broker does not send them.
  // 0: no limit.
  std::size_t max_inbound_bytes = 0;
};

struct Subscription {
  std::string filter;
  int qos = 2;
  bool no_retained = false;  // MQTT 5 Retain Handling 2: stored retained messages not sent
};

// Why one connect attempt failed, in words for a log line or an error message.
struct ConnectError {
  std::string reason;
  bool refused = false;  // the broker answered and refused (credentials, ACL, ...)
};

// Thread-safe: publish(), fits(), subscribe() and the accessors may be called from any
// thread, including Paho's callback thread (publish() and fits() never block there).
// run() and connect_once() are called from one thread (the owner's).
class MqttSession : public Publisher {
 public:
  using MessageHandler = std::function<void(InboundMessage&&)>;  // on Paho's thread: no blocking
  using ConnectedHandler = std::function<void()>;  // on the owner's thread, after subscribing

  MqttSession(SessionOptions options, MessageHandler on_message,
              ConnectedHandler on_connected = {});
  ~MqttSession() override;
  MqttSession(const MqttSession&) = delete;
  MqttSession& operator=(const MqttSession&) = delete;

  // One connection attempt (with the MQTT 5 -> 3.1.1 fallback within it) and the standing
  // subscriptions, bounded by `timeout`. nullopt on success.
  std::optional<ConnectError> connect_once(const std::atomic<bool>& stop,
                                           std::chrono::milliseconds timeout);

  // Connects, resubscribes on every connect and reconnects with the back-off of
  // hom/backoff.hpp (full jitter, MQTT_RECONNECT_MIN_MS/MAX_MS; the first retry after a loss
  // is jittered too) until `stop` becomes true; a lost connection, whatever its cause, is
  // logged and reconnected. Call wake() after setting `stop`. `tick`, when
  // given, runs on this thread at least every kTick.
  static constexpr std::chrono::milliseconds kTick{1000};
  void run(const std::atomic<bool>& stop, const std::function<void()>& tick = {});
  void wake();

  // Adds a standing subscription (kept across reconnects). When connected, subscribes now
  // and waits for the SUBACK up to `timeout`: the granted QoS, or nullopt (refused, or no
  // answer in time; the reason is logged).
  std::optional<int> subscribe(const Subscription& subscription,
                               std::chrono::milliseconds timeout = std::chrono::seconds(15));
  // The same without waiting: `done` runs exactly once, on Paho's thread when the SUBACK
  // arrives (the granted QoS), or at once when not connected (nullopt; the subscription
  // still stands and is made at the next connect). Messages the broker sends after its
  // SUBACK (the retained ones) reach the message handler after `done` has run.
  void subscribe_async(const Subscription& subscription,
                       std::function<void(std::optional<int>)> done);
  // The QoS the broker granted for `filter` on the current connection.
  std::optional<int> granted_qos(const std::string& filter) const;

  // Publishes at min(message.qos, the broker's Maximum QoS). MQTT 5 messages carry the
  // properties of the message. Buffered while disconnected and sent after the reconnect.
  void publish(OutboundMessage message) override;
  bool fits(const OutboundMessage& message) const override;
  std::size_t payload_room(const OutboundMessage& message) const override;
  // Largest PUBLISH packet the broker accepts (CONNACK Maximum Packet Size, else
  // MQTT_MAX_MESSAGE_BYTES).
  std::size_t max_packet_bytes() const;

  // Waits until every publish handed over so far is complete (acknowledged at its QoS),
  // up to `timeout`. False when some are still pending.
  bool flush(std::chrono::milliseconds timeout);
  // Publishes `last` (retained, QoS 1) when given, flushes and disconnects, all within
  // `timeout`. Idempotent.
  void disconnect(std::chrono::milliseconds timeout,
                  std::optional<std::pair<std::string, std::string>> last = std::nullopt);

  bool connected() const;
  // True while connected (or last connected) with MQTT 5.
  bool mqtt5() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The size of the PUBLISH packet for `message` over MQTT 5 (`v5`, with the properties it
// carries and `content_type`) or 3.1.1: fixed header, topic, packet id, properties, payload.
std::size_t publish_packet_size(const OutboundMessage& message, bool v5,
                                std::size_t content_type_bytes);

// Sets TCP_NODELAY on this process's TCP sockets connected to `port` (the broker's). MQTT
// is request/response with small packets: with Nagle's algorithm each one waits for the
// peer's delayed ACK. Paho C offers no hook to reach its socket, so it is found by peer port.
void set_tcp_nodelay_to_port(int port);

// Connects to host:port with TLS as configured and returns why the handshake or the
// certificate check fails ("certificate has expired", "Hostname mismatch", ...), or an
// empty string when it succeeds. Bounded by `timeout`. For error messages only.
std::string diagnose_tls(const MqttConfig& mqtt, std::chrono::milliseconds timeout);

}  // namespace hom
