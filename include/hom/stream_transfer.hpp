// homd's side of one streamed call (SPEC §7): the API's response published as a head and
// numbered chunks within a window of unacknowledged ones, and a streamed upload reassembled
// from the requester's chunks and acknowledged as the API takes it.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "hom/http_executor.hpp"
#include "hom/message.hpp"
#include "hom/request.hpp"
#include "hom/response.hpp"
#include "hom/stream.hpp"
#include "hom/time_source.hpp"

namespace hom {

// Thread-safe: the executor's thread drives the StreamChannel side and finish(); the MQTT
// thread delivers acknowledgements and upload chunks with on_ack() and on_chunk().
class StreamTransfer : public StreamChannel {
 public:
  struct Options {
    std::string id;                     // the stream id (the requester's, or one homd picked)
    std::size_t window = 8;             // chunks published ahead of the acknowledgements
    std::size_t chunk_bytes = 0;        // the most data bytes per chunk (0: from the packet limit)
    bool binary = false;                // MQTT 5 chunks (raw bytes, User Properties)
    std::chrono::milliseconds idle{5};  // a partial chunk waits this long for more bytes
    std::chrono::milliseconds stall{30000};  // no progress for this long: give up
    std::uint64_t max_upload_bytes = 0;      // HTTP_MAX_UPLOAD_BYTES
    std::size_t upload_chunk_bytes = 0;      // the largest upload chunk homd accepts
  };

  // `reply` is the message every publication starts from (topic, correlation, QoS, expiry).
  StreamTransfer(Options options, const Request& request, OutboundMessage reply,
                 Publisher& publisher, TimeSource now = std::chrono::steady_clock::now);

  // For an upload: tells the requester to start sending (ack 0 with window and chunk size).
  void begin_upload();

  // From the MQTT thread.
  void on_ack(const StreamAck& ack);
  void on_chunk(Chunk chunk);

  // False when no chunk can fit the broker's packet limit: the call must not stream.
  bool usable() const { return chunk_bytes_ > 0; }

  // After the call: publishes the rest of the body and the last chunk (waiting for the
  // window, at most `stall`), or the error as the last chunk. Returns false when nothing was
  // streamed yet and `force` is false: the caller then sends an ordinary reply, with
  // buffered() as the body when the call succeeded (or calls again with `force` when that
  // reply does not fit one message).
  bool finish(const HttpResult& result, bool force = false);
  // The body bytes not published yet. Only after the call (the executor is done with it).
  const std::string& buffered() const { return pending_; }
  bool streamed() const;

  struct Stats {
    std::uint64_t chunks = 0;
    std::uint64_t bytes = 0;
    std::uint64_t upload_bytes = 0;
  };
  Stats stats() const;

  // StreamChannel
  void head(int status, HeaderList headers) override;
  bool body(std::string_view bytes) override;
  bool ready_for_body() override;
  void idle() override;
  long read(char* out, std::size_t max) override;
  bool ready_for_read() override;
  void set_waker(std::function<void()> wake) override;
  std::string stop_reason() override;

 private:
  // Messages are queued in outbox_ under mu_ and published after it is released: Paho's
  // thread may hold Paho's lock while it waits for mu_ (on_ack), so publishing under mu_
  // would deadlock. Only the executor's thread publishes, so the order is kept.
  void publish_outbox(std::unique_lock<std::mutex>& lock);
  struct Flush {
    StreamTransfer& transfer;
    std::unique_lock<std::mutex>& lock;
    ~Flush() { transfer.publish_outbox(lock); }
  };
  // Queues full chunks while the window is open. Called with mu_ held, as the three below.
  void pump();
  void send_head();
  void send_chunk(std::string data, bool last, std::string error = {});
  void send_ack(std::uint64_t next, bool first);
  void wake_locked();
  bool stalled_locked(std::chrono::steady_clock::time_point now) const;

  const Options options_;
  const Request& request_;
  const OutboundMessage reply_;
  Publisher& publisher_;
  const TimeSource now_;
  std::size_t chunk_bytes_;
  // Sealed end to end (SPEC §8): the body from the head on is ciphertext. Used under mu_.
  std::unique_ptr<BodyCipher> cipher_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::function<void()> waker_;          // guarded by mu_
  std::vector<OutboundMessage> outbox_;  // guarded by mu_
  // Download, guarded by mu_.
  bool head_known_ = false;
  bool head_sent_ = false;
  bool small_ = false;  // the API's Content-Length fits one chunk: no early head
  int status_ = 0;
  HeaderList headers_;
  // Bytes not yet published (at most a chunk and a callback's worth, and a cipher block);
  // ciphertext once the head of a sealed stream is out.
  std::string pending_;
  SendWindow window_;
  Sha256 sha_;
  std::uint64_t bytes_ = 0;
  std::chrono::steady_clock::time_point progress_;  // the last ack, or the start
  // Upload, guarded by mu_.
  std::optional<Reassembler> upload_;
  std::deque<std::string> ready_;  // reassembled upload bytes the API has not taken yet
  std::size_t ready_offset_ = 0;   // into ready_.front()
  std::uint64_t taken_chunks_ = 0;
  std::uint64_t upload_bytes_ = 0;
  std::chrono::steady_clock::time_point upload_progress_;
};

}  // namespace hom
