#include "hom/stream.hpp"

#include <openssl/evp.h>

#include <algorithm>
#include <charconv>
#include <random>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "hom/base64.hpp"
#include "hom/response.hpp"

namespace hom {

namespace {

using nlohmann::json;

constexpr const char* kChunkKey = "chunk";
constexpr const char* kAckKey = "stream_ack";
// The largest seq and total we accept: far beyond any body, and exact in a JSON double.
constexpr std::uint64_t kMaxCounter = (1ULL << 53) - 1;
// Room for the JSON form's keys, the id, seq, total, digest and a short error.
constexpr std::size_t kJsonOverhead = 256 + kMaxStreamIdBytes;
constexpr std::size_t kBinaryOverhead = 128 + kMaxStreamIdBytes;

bool is_hex64(std::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

std::optional<std::uint64_t> parse_counter(std::string_view s) {
  std::uint64_t v = 0;
  if (s.empty() || s.size() > 16) return std::nullopt;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v > kMaxCounter) return std::nullopt;
  return v;
}

std::optional<std::uint64_t> counter_of(const json& v) {
  if (!v.is_number_unsigned()) return std::nullopt;
  const auto n = v.get<std::uint64_t>();
  if (n > kMaxCounter) return std::nullopt;
  return n;
}

StreamMessage invalid(std::string why) {
  StreamMessage m;
  m.kind = StreamMessage::Kind::kInvalid;
  m.error = std::move(why);
  return m;
}

StreamMessage decode_binary(std::string_view payload, const UserProperties& user) {
  const std::string* head = nullptr;
  const std::string* end = nullptr;
  const std::string* error = nullptr;
  for (const auto& [name, value] : user) {
    const std::string** slot = name == kChunkProperty   ? &head
                               : name == kEndProperty   ? &end
                               : name == kErrorProperty ? &error
                                                        : nullptr;
    if (!slot) continue;
    if (*slot) return invalid("repeated user property " + name);
    *slot = &value;
  }
  if (!head) return invalid("hom-end or hom-error without hom-chunk");
  StreamMessage m;
  m.kind = StreamMessage::Kind::kChunk;
  Chunk& c = m.chunk;
  const auto space = head->find(' ');
  if (space == std::string::npos) return invalid("hom-chunk is not \"<id> <seq>\"");
  c.id = head->substr(0, space);
  const auto seq = parse_counter(std::string_view(*head).substr(space + 1));
  if (!is_stream_id(c.id) || !seq) return invalid("hom-chunk is not \"<id> <seq>\"");
  c.seq = *seq;
  c.data.assign(payload.data(), payload.size());
  if (end && error) return invalid("hom-end and hom-error together");
  if (end) {
    const auto sp = end->find(' ');
    const auto total = sp == std::string::npos
                           ? std::nullopt
                           : parse_counter(std::string_view(*end).substr(0, sp));
    if (!total || !is_hex64(std::string_view(*end).substr(sp + 1)))
      return invalid("hom-end is not \"<total> <sha256>\"");
    c.last = true;
    c.total = *total;
    c.sha256 = end->substr(sp + 1);
  }
  if (error) {
    c.last = true;
    c.error = error->empty() ? "the stream failed" : to_valid_utf8(*error);
  }
  return m;
}

StreamMessage decode_json_chunk(const json& v) {
  if (!v.is_object()) return invalid("'chunk' must be an object");
  StreamMessage m;
  m.kind = StreamMessage::Kind::kChunk;
  Chunk& c = m.chunk;
  const auto id = v.find("id");
  const auto seq = v.find("seq");
  if (id == v.end() || !id->is_string() || !is_stream_id(id->get_ref<const std::string&>()))
    return invalid("chunk 'id' must be 1 to 64 characters [A-Za-z0-9_-]");
  c.id = id->get<std::string>();
  const auto n = seq == v.end() ? std::nullopt : counter_of(*seq);
  if (!n) return invalid("chunk 'seq' must be a non-negative integer");
  c.seq = *n;
  if (const auto data = v.find("data_base64"); data != v.end()) {
    if (!data->is_string()) return invalid("chunk 'data_base64' must be a string");
    auto bytes = base64_decode(data->get_ref<const std::string&>());
    if (!bytes) return invalid("chunk 'data_base64' is not base64");
    c.data = std::move(*bytes);
  }
  const auto end = v.find("end");
  const auto error = v.find("error");
  if (end != v.end() && error != v.end()) return invalid("chunk with both 'end' and 'error'");
  if (end != v.end()) {
    if (!end->is_object()) return invalid("chunk 'end' must be an object");
    const auto total = end->find("length");
    const auto sha = end->find("sha256");
    const auto t = total == end->end() ? std::nullopt : counter_of(*total);
    if (!t || sha == end->end() || !sha->is_string() ||
        !is_hex64(sha->get_ref<const std::string&>()))
      return invalid("chunk 'end' must be {\"length\": n, \"sha256\": \"<64 hex>\"}");
    c.last = true;
    c.total = *t;
    c.sha256 = sha->get<std::string>();
  }
  if (error != v.end()) {
    if (!error->is_string()) return invalid("chunk 'error' must be a string");
    c.last = true;
    c.error = error->get<std::string>();
    if (c.error.empty()) c.error = "the stream failed";
  }
  return m;
}

StreamMessage decode_json_ack(const json& v) {
  if (!v.is_object()) return invalid("'stream_ack' must be an object");
  StreamMessage m;
  m.kind = StreamMessage::Kind::kAck;
  StreamAck& a = m.ack;
  const auto id = v.find("id");
  if (id == v.end() || !id->is_string() || !is_stream_id(id->get_ref<const std::string&>()))
    return invalid("stream_ack 'id' must be 1 to 64 characters [A-Za-z0-9_-]");
  a.id = id->get<std::string>();
  const auto next = v.find("next");
  const auto n = next == v.end() ? std::nullopt : counter_of(*next);
  if (!n) return invalid("stream_ack 'next' must be a non-negative integer");
  a.next = *n;
  if (const auto w = v.find("window"); w != v.end()) {
    const auto n2 = counter_of(*w);
    if (!n2 || *n2 < 1 || *n2 > kMaxStreamWindow)
      return invalid("stream_ack 'window' must be 1 to 64");
    a.window = static_cast<std::size_t>(*n2);
  }
  if (const auto cb = v.find("chunk_bytes"); cb != v.end()) {
    const auto n2 = counter_of(*cb);
    if (!n2 || *n2 < kMinChunkBytes || *n2 > (1ULL << 28))
      return invalid("stream_ack 'chunk_bytes' must be 256 to 268435456");
    a.chunk_bytes = static_cast<std::size_t>(*n2);
  }
  return m;
}

}  // namespace

std::string random_id() {
  thread_local std::mt19937_64 rng(std::random_device{}());
  std::uniform_int_distribution<unsigned> nibble(0, 15);
  std::string out;
  for (int i = 0; i < 16; ++i) out += "0123456789abcdef"[nibble(rng)];
  return out;
}

bool is_stream_id(std::string_view id) {
  return !id.empty() && id.size() <= kMaxStreamIdBytes &&
         std::all_of(id.begin(), id.end(), [](char c) {
           return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '-';
         });
}

void encode_chunk(const Chunk& chunk, bool binary, OutboundMessage& out) {
  out.user.clear();
  if (binary) {
    out.binary = true;
    out.payload = chunk.data;
    out.user.emplace_back(kChunkProperty, chunk.id + " " + std::to_string(chunk.seq));
    if (chunk.last && chunk.error.empty())
      out.user.emplace_back(kEndProperty, std::to_string(chunk.total) + " " + chunk.sha256);
    if (chunk.last && !chunk.error.empty()) out.user.emplace_back(kErrorProperty, chunk.error);
    return;
  }
  out.binary = false;
  json c = {{"id", chunk.id}, {"seq", chunk.seq}};
  if (!chunk.data.empty()) c["data_base64"] = base64_encode(chunk.data);
  if (chunk.last && chunk.error.empty())
    c["end"] = {{"length", chunk.total}, {"sha256", chunk.sha256}};
  if (chunk.last && !chunk.error.empty()) c["error"] = to_valid_utf8(chunk.error);
  out.payload = json{{kChunkKey, std::move(c)}}.dump();
}

std::string encode_ack(const StreamAck& ack) {
  json a = {{"id", ack.id}, {"next", ack.next}};
  if (ack.window) a["window"] = ack.window;
  if (ack.chunk_bytes) a["chunk_bytes"] = ack.chunk_bytes;
  return json{{kAckKey, std::move(a)}}.dump();
}

StreamMessage decode_stream_message(std::string_view payload, const UserProperties& user) {
  for (const auto& [name, value] : user) {
    if (name == kChunkProperty || name == kEndProperty || name == kErrorProperty)
      return decode_binary(payload, user);
  }
  // Only a JSON object whose text names one of the two keys can be one: everything else
  // (requests, replies) is not parsed a second time.
  const auto first = payload.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos || payload[first] != '{') return {};
  if (payload.find(kChunkKey) == std::string_view::npos &&
      payload.find(kAckKey) == std::string_view::npos)
    return {};
  const auto doc = parse_json(payload, 8);
  if (!doc || !doc->is_object()) return {};
  if (const auto c = doc->find(kChunkKey); c != doc->end()) return decode_json_chunk(*c);
  if (const auto a = doc->find(kAckKey); a != doc->end()) return decode_json_ack(*a);
  return {};
}

std::size_t chunk_capacity(std::size_t max_packet, std::size_t empty_message_bytes, bool binary) {
  const std::size_t overhead = empty_message_bytes + (binary ? kBinaryOverhead : kJsonOverhead);
  if (max_packet <= overhead) return 0;
  std::size_t room = max_packet - overhead;
  if (!binary) room = room / 4 * 3;  // base64: 4 characters per 3 bytes
  return room < kMinChunkBytes ? 0 : room;
}

std::size_t chunk_room(const Publisher& publisher, OutboundMessage message, const std::string& id,
                       bool binary) {
  Chunk sample;
  sample.id = id;
  sample.seq = kMaxCounter;
  sample.last = true;
  sample.total = kMaxCounter;
  sample.sha256.assign(64, '0');
  message.payload.clear();
  encode_chunk(sample, binary, message);
  const std::size_t room = publisher.payload_room(message);
  return chunk_capacity(room + message.payload.size(), message.payload.size(), binary);
}

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  if (!ctx_ || EVP_DigestInit_ex(static_cast<EVP_MD_CTX*>(ctx_), EVP_sha256(), nullptr) != 1)
    throw std::runtime_error("SHA-256 is not available");
}

Sha256::~Sha256() { EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_)); }

void Sha256::update(std::string_view bytes) {
  EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(ctx_), bytes.data(), bytes.size());
}

std::string Sha256::hex() {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_DigestFinal_ex(static_cast<EVP_MD_CTX*>(ctx_), digest, &n);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < n; ++i) {
    out += kHex[digest[i] >> 4];
    out += kHex[digest[i] & 0xF];
  }
  return out;
}

Reassembler::Reassembler(std::string id, std::size_t window, std::uint64_t max_total)
    : id_(std::move(id)),
      window_(std::clamp<std::size_t>(window, 1, kMaxStreamWindow)),
      max_total_(max_total) {}

Reassembler::Status Reassembler::fail(std::string why) {
  if (error_.empty()) error_ = std::move(why);
  early_.clear();
  return Status::kFailed;
}

Reassembler::Status Reassembler::add(Chunk chunk, std::vector<std::string>& ready) {
  if (failed()) return Status::kFailed;
  if (chunk.id != id_) return fail("a chunk of another stream");
  if (complete_ || chunk.seq < next_ || early_.count(chunk.seq)) {
    ++duplicates_;
    return Status::kDuplicate;
  }
  if (chunk.seq >= next_ + window_)
    return fail("chunk " + std::to_string(chunk.seq) + " is beyond the window (next " +
                std::to_string(next_) + ", window " + std::to_string(window_) + ")");
  if (chunk.last && !chunk.error.empty())
    return fail("the sender reported an error: " + chunk.error);
  if (chunk.seq != next_) {
    // An early chunk: kept until the gap is filled. A second `last`, or one before a chunk
    // already held, is a contradiction.
    const bool after_last =
        !early_.empty() && early_.rbegin()->second.last && chunk.seq > early_.rbegin()->first;
    if (after_last || (chunk.last && !early_.empty() && early_.rbegin()->first > chunk.seq))
      return fail("chunk " + std::to_string(chunk.seq) + " after the last chunk");
    if (chunk.last && chunk.total < bytes_)
      return fail("length mismatch: the sender declared " + std::to_string(chunk.total) +
                  " bytes, " + std::to_string(bytes_) + " arrived");
    early_.emplace(chunk.seq, std::move(chunk));
    return Status::kAccepted;
  }
  if (release(chunk, ready) == Status::kFailed) return Status::kFailed;
  for (auto it = early_.begin(); it != early_.end() && it->first == next_;) {
    Chunk held = std::move(it->second);
    it = early_.erase(it);
    if (release(held, ready) == Status::kFailed) return Status::kFailed;
  }
  return Status::kAccepted;
}

Reassembler::Status Reassembler::release(Chunk& chunk, std::vector<std::string>& ready) {
  if (chunk.last && !chunk.error.empty())
    return fail("the sender reported an error: " + chunk.error);
  if (max_total_ && chunk.data.size() > max_total_ - std::min(max_total_, bytes_))
    return fail("the body exceeds its limit of " + std::to_string(max_total_) + " bytes");
  // Once the last chunk is known (held early), nothing beyond its total is released.
  const Chunk* end = chunk.last                                        ? &chunk
                     : !early_.empty() && early_.rbegin()->second.last ? &early_.rbegin()->second
                                                                       : nullptr;
  if (end && chunk.data.size() > end->total - std::min(end->total, bytes_))
    return fail("length mismatch: more than the " + std::to_string(end->total) +
                " bytes the sender declared");
  if (chunk.last && !early_.empty()) return fail("chunks after the last chunk");
  sha_->update(chunk.data);
  bytes_ += chunk.data.size();
  ++next_;
  if (chunk.last) {
    if (chunk.total != bytes_)
      return fail("length mismatch: the sender declared " + std::to_string(chunk.total) +
                  " bytes, " + std::to_string(bytes_) + " arrived");
    if (sha_->hex() != chunk.sha256) return fail("SHA-256 mismatch: the body is corrupt");
    complete_ = true;
  }
  if (!chunk.data.empty()) ready.push_back(std::move(chunk.data));
  return Status::kAccepted;
}

bool SendWindow::ack(std::uint64_t next) {
  next = std::min(next, sent_);
  if (next <= acked_) return false;
  acked_ = next;
  return true;
}

}  // namespace hom
