// homd's end-to-end layer (SPEC §8): between the MQTT session and the bridge.
//
// A message on {start}/req/{id}/@sealed goes through the RequestGate (seal.hpp). Refused: a
// 401 or 403 reply, sealed to the signer once the signer is known and authorized, else in
// clear with the status and reason only. Admitted: the inner request goes on to the bridge
// as if it had arrived in clear, with an internal Response Topic that names it; its reply,
// on the way out, is sealed to the signer, bound to the hash of the sealed request, and
// published on {start}/res/{id}/@sealed (or the signed MQTT 5 Response Topic, with the
// signed Correlation Data): never on a topic that shows the verb or the path.
//
// A sealed request that asks for a stream (protocol v1.1) may get a streamed reply: a sealed
// head (an ordinary sealed reply whose document names the body's age header), then chunks
// of one age file to the signer, in clear only as ciphertext. A streamed upload is refused
// (400): a sealed request carries its body.
//
// A copy of a sealed request seen before (a QoS 1 redelivery, or a replay by the broker)
// gets the first reply again, byte for byte, from a cache keyed by the request's hash, and
// is not executed again; once out of that cache (5 minutes, or after a restart), the replay
// guard refuses it with a 401.
//
// With HOM_E2E=require, a request in clear is not executed: 401.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "hom/config.hpp"
#include "hom/device.hpp"
#include "hom/replay_guard.hpp"
#include "hom/request.hpp"
#include "hom/seal.hpp"

namespace hom {

class E2eDevice : public MessageFilter {
 public:
  // Reads the device key, the authorized keys and the replay guard's state (config.e2e);
  // nullptr with one line saying why (homd then exits with status 2).
  static std::unique_ptr<E2eDevice> create(const Config& config, std::string& error);
  ~E2eDevice() override;

  void set_downstream(Publisher& downstream) override { downstream_ = &downstream; }
  void on_message(InboundMessage&& message, Bridge& next) override;
  void stop() override;

  bool fits(const OutboundMessage& message) const override;
  std::size_t payload_room(const OutboundMessage& message) const override;
  void publish(OutboundMessage message) override;
  std::unique_ptr<BodyCipher> body_cipher(const OutboundMessage& reply) override;

  // For the start-up log line.
  std::string describe() const;

 private:
  struct Pending {
    OpenedRequest opened;
    std::string reply_topic;
    std::optional<std::string> correlation_data;
    std::chrono::steady_clock::time_point at{};  // handed to the bridge, or the last chunk
    bool streaming = false;  // its head is out: its chunks follow (sealed by body_cipher)
  };
  struct Cached {
    bool done = false;
    OutboundMessage reply;  // when done
    std::chrono::steady_clock::time_point at;
  };

  // A sealed request waiting for the gate (decryption, signature, the replay guard's
  // fdatasync): on its own threads, so that the MQTT callback never waits for them and
  // requests admitted together share one fdatasync.
  struct Job {
    InboundMessage message;
    std::string hash;
    Bridge* next = nullptr;
  };

  E2eDevice(const Config& config, SshPrivateKey key, Authorizer authorizer,
            std::unique_ptr<ReplayGuard> guard, std::size_t authorized);
  void on_sealed(InboundMessage&& message, Bridge& next);
  void admit(Job& job);
  void admitter_main();
  void refuse(const InboundMessage& message, int status, const std::string& reason,
              const std::optional<OpenedRequest>& opened);
  void refuse_plain(const InboundMessage& message);
  // The pending reply an internal reply topic names; nullptr when it is not one.
  const Pending* pending_of(const std::string& topic) const;  // requires mu_
  OutboundMessage sealed_shape(const OutboundMessage& message, const Pending& pending) const;
  // A chunk of `pending`'s streamed reply as it goes out (`last` set for the last one);
  // nullopt: not a chunk, dropped.
  std::optional<OutboundMessage> sealed_chunk(OutboundMessage message, const Pending& pending,
                                              bool& last) const;
  bool valid_reply_topic(const std::string& topic) const;
  void remember(const std::string& hash, OutboundMessage reply);  // requires mu_
  void expire();                                                  // requires mu_

  const Config config_;
  const RequestPolicy policy_;
  const std::string sealed_topic_;     // {start}/req/{id}/@sealed
  const std::string reply_topic_;      // {start}/res/{id}/@sealed
  const std::string internal_prefix_;  // {start}/res/{id}/@sealed/ + a token: never published
  const std::size_t authorized_;
  std::unique_ptr<ReplayGuard> guard_;
  const RequestGate gate_;
  Publisher* downstream_ = nullptr;

  mutable std::mutex mu_;
  std::unordered_map<std::string, Pending> pending_;  // token -> request; guarded by mu_
  std::unordered_map<std::string, Cached> replies_;   // request hash -> reply; guarded by mu_
  std::deque<std::string> order_;                     // hashes, oldest first; guarded by mu_
  std::size_t cached_bytes_ = 0;                      // guarded by mu_
  std::deque<Job> jobs_;                              // guarded by mu_
  bool stopping_ = false;                             // guarded by mu_
  std::condition_variable jobs_cv_;
  std::vector<std::thread> admitters_;  // started by the constructor, joined by stop()
};

}  // namespace hom
