// The requester role (hom, and the gateway): many concurrent calls over one MQTT session,
// correlated by MQTT 5 Correlation Data or by req_id, each with its own deadline.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "hom/config.hpp"
#include "hom/envelope.hpp"
#include "hom/presence.hpp"
#include "hom/session.hpp"
#include "hom/stream.hpp"

namespace hom {

struct DeviceStatus {
  std::string id;
  Presence presence;
};

// The receiving end of BodyCipher (message.hpp): a sealed streamed body's ciphertext in, its
// plaintext out once authenticated. Not thread-safe; one object per body.
class BodyOpener {
 public:
  virtual ~BodyOpener() = default;
  // The next ciphertext; appends what it completes and authenticates to `out`. False once
  // anything is wrong (then error() says what).
  virtual bool update(std::string_view ciphertext, std::string& out) = 0;
  // The end of the ciphertext: the rest of the plaintext. False when the body was cut short.
  virtual bool finish(std::string& out) = 0;
  virtual const std::string& error() const = 0;
};

// End-to-end security (SPEC §8): seals a call's request to the device and opens its reply.
// Implemented by E2eRequester (e2e_requester.hpp); immutable, shared between calls.
class CallSealer {
 public:
  struct Input {
    std::string device;
    std::string start;
    std::string verb;
    std::string path;
    std::string response_topic;    // the MQTT 5 Response Topic, empty over 3.1.1
    std::string correlation_data;  // the MQTT 5 Correlation Data, empty over 3.1.1
    std::string payload;           // the v1 request payload
  };
  virtual ~CallSealer() = default;
  // The MQTT payload of the sealed request; nullopt with a reason.
  virtual std::optional<std::string> seal(const Input& input, std::string& error) const = 0;
  // The reply payload of a sealed reply to `sealed_request` (as published) from `device`;
  // nullopt with a reason when it does not decrypt, verify or answer that request.
  virtual std::optional<std::string> open(std::string_view sealed_reply,
                                          std::string_view sealed_request,
                                          const std::string& device, std::string& error) const = 0;
  // The body of a streamed sealed reply whose head (opened and verified by open()) names
  // `binding` (StreamHead::sealed).
  virtual std::unique_ptr<BodyOpener> open_body(const std::string& binding) const = 0;
};

// Thread-safe: start() and call() may be used from many threads at once. Completion
// callbacks run on Paho's callback thread or the requester's timer thread: they must not
// block. Destroying the requester completes what is still waiting with kTimeout.
class Requester {
 public:
  // A clean session with a random client id; not connected until connect().
  Requester(const MqttConfig& mqtt, std::string start);
  ~Requester();
  Requester(const Requester&) = delete;
  Requester& operator=(const Requester&) = delete;

  // One connection attempt, bounded by `timeout`; the error names the reason (TLS included).
  std::optional<ConnectError> connect(std::chrono::milliseconds timeout);
  // For a long-lived requester (the gateway): reconnects until `stop` (MqttSession::run).
  MqttSession& session();

  struct Call {
    std::string device;
    std::string verb;
    std::string path;         // without a leading '/'
    RequestEnvelope request;  // its req_id is used as is; when null a random one is set
    int qos = 2;
    std::chrono::milliseconds timeout{30000};
    bool wait_online = false;  // wait for an offline device instead of failing at once
    // Also listen on the mirrored reply topic (a homd that answers only there, over 3.1.1).
    // Over MQTT 5 a long-lived requester sets this false: one subscription per device.
    bool listen_mirrored = true;
    // A streamed call (protocol v1.1, SPEC §7). The device may still answer with one
    // ordinary reply (a small body, an error): then `done` gets it with the body in
    // reply.content, and neither on_head nor on_data runs. After a streamed head, `timeout`
    // bounds each wait for progress rather than the whole transfer.
    struct Stream {
      std::size_t window = kDefaultStreamWindow;
      // The head of a streamed reply (status, headers), before its body.
      std::function<void(const ReplyEnvelope& head)> on_head;
      // The body in order. `consumed` acknowledges the bytes once they are taken (written
      // to a file or a socket): until then the device sends at most a window more.
      std::function<void(std::string data, std::function<void()> consumed)> on_data;
      // An upload: asked for the next piece of the request body (at most `max` bytes) when the
      // window has room; answers through `give` (once per ask, from any thread; `last` with
      // the final piece, which may be empty). A non-empty `error` instead says the body cannot
      // be given (its source broke off, or it is over a limit): the device aborts the call.
      using Give = std::function<void(std::string data, bool last, std::string error)>;
      std::function<void(std::size_t max, Give give)> next_upload;
      std::optional<std::uint64_t> upload_length;  // declared when known
    };
    std::optional<Stream> stream;
    // Sealed (SPEC §8): published on {start}/req/{device}/@sealed, and only a reply that
    // opens and verifies is taken (else kUnverified). With `stream` a large reply streams,
    // each piece authenticated before on_data gets it, the whole at its end (a cut stream is
    // kUnverified); not with an upload (next_upload): a sealed request carries its body.
    std::shared_ptr<const CallSealer> sealer;
  };
  enum class Outcome {
    kReply,        // an ordinary reply, or a streamed one complete and checked
    kTimeout,      // no reply in time (or a stream stalled: `error` says so)
    kOffline,      // the device's presence says offline
    kStreamError,  // a streamed reply or upload failed (`error`): the body is incomplete
    kUnverified,   // a sealed call: not sealed, or its reply (or streamed body) is not
                   // authentic (`error`)
    kTooLarge,     // the request does not fit one message the broker takes: not published
  };
  struct Result {
    Outcome outcome = Outcome::kTimeout;
    std::string payload;  // the reply as it arrived (kReply; a streamed reply's head)
    ReplyEnvelope reply;  // the reply decoded (kReply); reply.stream set when it streamed
    std::string request_topic;
    std::string response_topic;
    std::string error;               // kStreamError, or a stalled stream's kTimeout
    std::uint64_t stream_bytes = 0;  // body bytes received in chunks
    std::uint64_t upload_bytes = 0;  // body bytes sent in chunks
  };
  using Done = std::function<void(Result)>;

  // Never blocks: subscribes to the reply topics and the device's presence (once per
  // session) without waiting, and publishes once the broker has acknowledged them; `done`
  // runs exactly once: the reply, the deadline, or offline (by the retained presence).
  void start(Call call, Done done);
  // start() and wait for it.
  Result call(Call call);

  // Devices whose retained presence arrives within `wait`, sorted by id (wildcard
  // subscription to {start}/status/#).
  std::vector<DeviceStatus> devices(std::chrono::milliseconds wait);
  // The presence of the named devices, from their exact status topics (brokers such as
  // RabbitMQ do not deliver retained messages to wildcard subscriptions). Waits until all
  // have answered or `wait` has passed; devices without a status are left out.
  std::vector<DeviceStatus> devices(const std::vector<std::string>& ids,
                                    std::chrono::milliseconds wait);

  struct Stats {
    std::uint64_t replies = 0;           // replies matched to one of our calls
    std::uint64_t unmatched = 0;         // other messages on our reply topics (late or not ours)
    std::uint64_t duplicate_chunks = 0;  // chunks received twice (dropped)
  };
  Stats stats() const;

  // Receives progress lines for -v.
  void set_trace(std::function<void(const std::string&)> trace);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace hom
