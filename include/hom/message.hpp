// What travels between the MQTT session and the roles on top of it (homd's bridge, the
// requester, the gateway): one message in, one message out, and the small interface through
// which messages leave. Plain values: no Paho type crosses this line.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace hom {

// MQTT 5 User Properties, in order (a name may repeat).
using UserProperties = std::vector<std::pair<std::string, std::string>>;

// MQTT 5 properties of a received message (all absent over 3.1.1).
struct MessageProperties {
  std::optional<std::string> response_topic;
  std::optional<std::string> correlation_data;
  std::optional<std::uint32_t> expiry_s;  // Message Expiry Interval as received (time left)
  UserProperties user;                    // the stream chunks' metadata (SPEC §7)
};

struct InboundMessage {
  std::string topic;
  std::string payload;            // empty when over the session's inbound limit (see payload_bytes)
  std::size_t payload_bytes = 0;  // the size as received, also when `payload` was not kept
  bool retained = false;
  int qos = 0;  // the QoS it was delivered with
  MessageProperties properties;
  // Set by a layer that relays the reply (end-to-end mode) when the request itself came over
  // MQTT 3.1.1: its streamed reply takes the JSON form, whatever `properties` say.
  bool json_chunks = false;
};

struct OutboundMessage {
  std::string topic;
  std::string payload;
  int qos = 2;  // asked for; the session may lower it to what the broker granted
  std::optional<std::string> correlation_data;  // MQTT 5 only
  std::optional<std::uint32_t> expiry_s;        // MQTT 5 only
  std::optional<std::string> response_topic;    // MQTT 5 only (requests)
  UserProperties user;                          // MQTT 5 only
  bool binary = false;  // MQTT 5: no Content Type "application/json" (raw stream chunks)
  bool retained = false;
};

// A streamed body sealed end to end (SPEC §8): its chunks carry ciphertext, one continuous
// file across them, which the receiver authenticates piece by piece and as a whole at its end.
// Not thread-safe; one object per body.
class BodyCipher {
 public:
  virtual ~BodyCipher() = default;
  // What the signed head names, so that the receiver takes no other ciphertext for this body.
  virtual const std::string& binding() const = 0;
  // The ciphertext that `plaintext` completes (the first call starts with the file's header);
  // it may be less than `plaintext` while a block waits to be filled.
  virtual std::string update(std::string_view plaintext) = 0;
  // The rest, marked as the end. Called once, after the last update().
  virtual std::string finish() = 0;
};

// Where messages go. Implementations are thread-safe and never block the caller for long.
class Publisher {
 public:
  virtual ~Publisher() = default;
  // True when `message`, encoded as a PUBLISH packet with everything the publisher adds,
  // fits the broker's packet limit as known now. A message that does not fit must not be
  // published: the broker would drop the connection.
  virtual bool fits(const OutboundMessage& message) const = 0;
  // How many payload bytes `message` (its topic and properties; its payload is ignored) can
  // carry within the broker's packet limit as known now.
  virtual std::size_t payload_room(const OutboundMessage& message) const = 0;
  virtual void publish(OutboundMessage message) = 0;
  // A streamed reply published on `reply`'s topic is sealed with this cipher (the end-to-end
  // layer gives one for a sealed request's reply), or goes in clear (nullptr).
  virtual std::unique_ptr<BodyCipher> body_cipher(const OutboundMessage& reply) {
    (void)reply;
    return nullptr;
  }
};

}  // namespace hom
