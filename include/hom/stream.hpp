// Protocol v1.1 streams (SPEC §7): bodies of any size in numbered chunks, flow-controlled by
// cumulative acknowledgements, checked end to end by length and SHA-256. The wire forms of
// chunks and acknowledgements, the reassembler that puts received chunks back in order, and
// the sender's window. Pure: no I/O (README "Protocol v1.1: streams").
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "hom/message.hpp"

namespace hom {

// Limits of the protocol: a stream id is 1 to 64 characters [A-Za-z0-9_-]; a window is 1 to
// 64 chunks.
constexpr std::size_t kMaxStreamIdBytes = 64;
constexpr std::size_t kMaxStreamWindow = 64;
constexpr std::size_t kDefaultStreamWindow = 8;
// The smallest chunk payload anyone may ask for (MQTT_MAX_MESSAGE_BYTES is at least 1 KiB).
constexpr std::size_t kMinChunkBytes = 256;

bool is_stream_id(std::string_view id);

// 16 random hex digits (stream ids, correlation data, req_id).
std::string random_id();

// The request's `stream` member: the requester takes a reply in chunks, and may send its
// body in chunks (`upload`).
struct StreamRequest {
  std::string id;  // chosen by the requester; empty for `"stream": true` (homd picks one)
  std::size_t window = kDefaultStreamWindow;
  std::size_t max_chunk_bytes = 0;             // 0: no limit of the requester's own
  bool upload = false;                         // the body follows in chunks
  std::optional<std::uint64_t> upload_length;  // declared body length, when known
};

// The head of a streamed reply (its `stream` member): the chunks that follow carry `id`.
struct StreamHead {
  std::string id;
  std::size_t chunk_bytes = 0;  // the largest chunk the sender publishes
  std::size_t window = 0;       // chunks it publishes ahead of the acknowledgements
  // Sealed end to end (SPEC §8): the SHA-256 (64 lowercase hex) of the age header and nonce
  // the chunks begin with. Empty: the chunks carry the body in clear.
  std::string sealed;
};

// One numbered piece of a body. The last one says how long the whole body was and its
// SHA-256, or why the stream failed (`error`, after which the body is incomplete).
struct Chunk {
  std::string id;
  std::uint64_t seq = 0;
  std::string data;
  bool last = false;
  std::uint64_t total = 0;  // last: the body's length
  std::string sha256;       // last: 64 lower-case hex digits of the whole body's SHA-256
  std::string error;        // last: non-empty when the stream failed
};

// "Received everything before `next`": the receiver's cumulative acknowledgement. The first
// one of an upload (next 0) also gives the window and the largest chunk the receiver takes.
struct StreamAck {
  std::string id;
  std::uint64_t next = 0;
  std::size_t window = 0;       // 0: unchanged
  std::size_t chunk_bytes = 0;  // 0: unchanged
};

// The MQTT 5 User Property names of a binary chunk.
inline constexpr std::string_view kChunkProperty = "hom-chunk";  // "<id> <seq>"
inline constexpr std::string_view kEndProperty = "hom-end";      // "<total> <sha256>"
inline constexpr std::string_view kErrorProperty = "hom-error";  // the reason

// Fills `out`'s payload (and user properties): `binary` is the MQTT 5 form (raw bytes, the
// metadata in User Properties), else the JSON form (3.1.1: data in base64).
void encode_chunk(const Chunk& chunk, bool binary, OutboundMessage& out);
// The JSON ack document {"stream_ack": {...}}.
std::string encode_ack(const StreamAck& ack);

// What a message on a request or reply topic is, as far as streams are concerned.
struct StreamMessage {
  enum class Kind { kNone, kChunk, kAck, kInvalid };
  Kind kind = Kind::kNone;  // kNone: not a stream message (a request or a reply)
  Chunk chunk;
  StreamAck ack;
  std::string error;  // kInvalid: why
};
// Never throws; linear in the payload. Both forms are read whatever the session's version.
StreamMessage decode_stream_message(std::string_view payload, const UserProperties& user);

// Bytes of chunk data that fit a packet of `max_packet` bytes, given the encoded size of the
// same message with an empty payload, the metadata of the last chunk included.
// `binary`: raw bytes; else base64 in JSON. 0 when not even a small chunk fits.
std::size_t chunk_capacity(std::size_t max_packet, std::size_t empty_message_bytes, bool binary);

// The most data bytes a chunk of stream `id` published as `message` (its topic, QoS and
// properties) can carry within `publisher`'s packet limit, the last chunk's metadata
// included. 0 when not even a small chunk fits.
std::size_t chunk_room(const Publisher& publisher, OutboundMessage message, const std::string& id,
                       bool binary);

// Incremental SHA-256 (OpenSSL), hex digest.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(std::string_view bytes);
  std::string hex();  // finishes: call once

 private:
  void* ctx_;
};

// Puts received chunks back in order and checks them. Accepts chunks within the window after
// the next expected one, holds early ones (at most `window`), drops duplicates, and releases
// the data in order. The last chunk's data is released only once the whole body's length and
// SHA-256 match: a receiver never passes on the end of a corrupt body. Not thread-safe.
class Reassembler {
 public:
  // `max_total`: a body longer than this is an error (0: no limit).
  Reassembler(std::string id, std::size_t window, std::uint64_t max_total = 0);

  enum class Status { kAccepted, kDuplicate, kFailed };
  // Appends to `ready` the data that is now in order. After kFailed every call fails.
  Status add(Chunk chunk, std::vector<std::string>& ready);

  std::uint64_t next() const { return next_; }  // chunks released so far
  std::uint64_t bytes() const { return bytes_; }
  bool complete() const { return complete_; }
  bool failed() const { return !error_.empty(); }
  const std::string& error() const { return error_; }  // why it failed (or the sender's error)
  std::size_t held() const { return early_.size(); }
  std::uint64_t duplicates() const { return duplicates_; }

 private:
  Status fail(std::string why);
  Status release(Chunk& chunk, std::vector<std::string>& ready);

  const std::string id_;
  const std::size_t window_;
  const std::uint64_t max_total_;
  std::uint64_t next_ = 0;
  std::uint64_t bytes_ = 0;
  std::uint64_t duplicates_ = 0;
  bool complete_ = false;
  std::string error_;
  std::map<std::uint64_t, Chunk> early_;
  std::unique_ptr<Sha256> sha_ = std::make_unique<Sha256>();
};

// The sender's side: how many chunks may be published before more acknowledgements come.
class SendWindow {
 public:
  explicit SendWindow(std::size_t window) : window_(window) {}
  bool open() const { return sent_ - acked_ < window_; }
  void sent() { ++sent_; }
  // True when `next` moved the window (an ack beyond what was sent is capped).
  bool ack(std::uint64_t next);
  void resize(std::size_t window) { window_ = window; }
  std::uint64_t sent_count() const { return sent_; }
  std::uint64_t acked() const { return acked_; }

 private:
  std::size_t window_;
  std::uint64_t sent_ = 0;
  std::uint64_t acked_ = 0;
};

}  // namespace hom
