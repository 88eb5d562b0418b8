// What travels between the MQTT session and the roles on top of it (homd's bridge, the
// requester, the gateway): one message in, one message out, and the small interface through
// which messages leave. Plain values: no Paho type crosses this line.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace hom {

// MQTT 5 properties of a received message (all absent over 3.1.1).
struct MessageProperties {
  std::optional<std::string> response_topic;
  std::optional<std::string> correlation_data;
  std::optional<std::uint32_t> expiry_s;  // Message Expiry Interval as received (time left)
};

struct InboundMessage {
  std::string topic;
  std::string payload;            // empty when over the session's inbound limit (see payload_bytes)
  std::size_t payload_bytes = 0;  // the size as received, also when `payload` was not kept
  bool retained = false;
  int qos = 0;  // the QoS it was delivered with
  MessageProperties properties;
};

struct OutboundMessage {
  std::string topic;
  std::string payload;
  int qos = 2;  // asked for; the session may lower it to what the broker granted
  std::optional<std::string> correlation_data;  // MQTT 5 only
  std::optional<std::uint32_t> expiry_s;        // MQTT 5 only
  std::optional<std::string> response_topic;    // MQTT 5 only (requests)
  bool retained = false;
};

// Where messages go. Implementations are thread-safe and never block the caller for long.
class Publisher {
 public:
  virtual ~Publisher() = default;
  // True when `message`, encoded as a PUBLISH packet with everything the publisher adds,
  // fits the broker's packet limit as known now. A message that does not fit must not be
  // published: the broker would drop the connection.
  virtual bool fits(const OutboundMessage& message) const = 0;
  virtual void publish(OutboundMessage message) = 0;
};

}  // namespace hom
